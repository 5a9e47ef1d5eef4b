"""Load: five browser sessions on a real server while a run trains in a worker process.

Each session is its own WebSocket connection to ``streamlit run`` and behaves like a browser tab on the
Train page: it asks for the page (a full script run), then re-runs the live panel whenever the server's
auto-rerun timer says so (every two seconds while the run is active), and asks for the full page again after
two such refreshes, as someone clicking every few seconds would. The five arrive within a second of each
other. A render's time is from the request to the end of its script run: what a user waits for.

The test reports the 95th percentile of full page renders (printed, and as the JUnit test-suite property
``render_p95_s``; live-panel refreshes as ``fragment_p95_s``) and checks both stay under one second.
Every render must show the one run, in the state the run store has, with an epoch count the store had
during that render. When the run ends, all five, rendering at the same instant, must show the same thing.
"""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest
from live_server import Session
from polling import wait_for

from medcls.bench.measure import machine_gflops

SESSIONS = 5
CYCLES = 5             # per session: a full page render, then two live-panel refreshes
REFRESHES = 2
ARRIVAL_S = 1.0        # the sessions start within this long of each other
P95_LIMIT_S = 1.0       # on this project's reference machine (2 cores at REFERENCE_GFLOPS)
# fp32 matrix-multiply speed of the 2-core CI machine when its host is quiet. The machine is a shared virtual
# CPU whose speed drifts by a third within an hour; when it measures slower, the budget grows in proportion
# (never shrinks), so the test judges the app rather than the host.
REFERENCE_GFLOPS = 230.0


def in_threads(sessions: list[Session], work) -> list:
    """Run ``work(i, session)`` for every session at the same moment; the results in session order."""
    barrier = threading.Barrier(len(sessions))
    results: list = [None] * len(sessions)

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i, sessions[i])
        except Exception as exc:  # reported by the assertion below
            results[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    failures = [r for r in results if isinstance(r, Exception) or r is None]
    assert not failures, failures
    return results


@pytest.mark.slow
def test_five_sessions_render_fast_and_see_the_same_run_while_it_trains(live_app, record_testsuite_property):
    store, run_id = live_app.store, live_app.run_id
    # Measured before the run starts training, so the training does not slow the yardstick down.
    limit = P95_LIMIT_S * max(1.0, REFERENCE_GFLOPS / machine_gflops(n=2048, repeats=5))
    sessions = [Session(live_app) for _ in range(SESSIONS)]
    try:
        # Warm-up, not measured. The first render of any page starts the job manager, which picks up the
        # queued run and spawns its worker; Compare does that first thing, so the worker starts while the
        # cold Train render imports everything and times a few training steps for its estimate.
        sessions[0].render("compare")
        cold, _ = sessions[0].render("train")
        for session in sessions[1:]:
            session.render("train")
        wait_for(lambda: store.status(run_id).state == "running" and len(store.history(run_id)) >= 1,
                 timeout=120, what="the run to train its first epoch")

        def user(i: int, session: Session) -> list:
            time.sleep(random.Random(i).uniform(0, ARRIVAL_S))
            renders = []

            def timed(kind: str, render) -> None:
                before = len(store.history(run_id))
                seconds, view = render("train")
                renders.append((kind, seconds, view, before, len(store.history(run_id))))

            for _ in range(CYCLES):
                timed("page", session.render)
                for _ in range(REFRESHES):
                    assert session.auto_rerun, "the live panel stopped refreshing while the run trains"
                    time.sleep(session.auto_rerun[0])  # the browser's timer
                    timed("fragment", session.rerun_fragment)
            return renders

        renders = [r for per_user in in_threads(sessions, user) for r in per_user]
        assert store.status(run_id).state == "running"
        epochs_seen = []
        for kind, seconds, view, before, after in renders:
            assert not view.exceptions and not view.errors, (view.exceptions, view.errors)
            assert view.state == "running" and view.run_id == (run_id if kind == "page" else None), view.summary()
            done = int(view.epochs_done.split("/")[0])
            assert before <= done <= after, (kind, view.summary(), before, after)
            epochs_seen.append(done)
        assert max(epochs_seen) > min(epochs_seen), "the run did not train while the pages were rendered"
        times = [seconds for kind, seconds, *_ in renders if kind == "page"]
        refresh_times = [seconds for kind, seconds, *_ in renders if kind == "fragment"]

        # The run ends (what the Stop button asks for); then five renders at one instant agree exactly.
        store.request_stop(run_id)
        wait_for(lambda: store.raw_status(run_id).state == "cancelled", timeout=60, what="the run to stop")
        final = in_threads(sessions, lambda i, session: session.render("train"))
        expected = (run_id, "cancelled", f"{len(store.history(run_id))}/{store.config(run_id).epochs}")
        assert [view.summary() for _, view in final] == [expected] * SESSIONS
    finally:
        for session in sessions:
            session.close()

    p95 = float(np.percentile(times, 95))
    fragment_p95 = float(np.percentile(refresh_times, 95))
    record_testsuite_property("render_p95_s", round(p95, 3))
    record_testsuite_property("render_median_s", round(float(np.median(times)), 3))
    record_testsuite_property("fragment_p95_s", round(fragment_p95, 3))
    record_testsuite_property("renders", len(times) + len(refresh_times))
    burst = max(seconds for seconds, _ in final)
    print(f"\nTrain page with {SESSIONS} sessions while a run trains: full page p95 {p95:.3f} s (median "
          f"{np.median(times):.3f} s, max {max(times):.3f} s, {len(times)} renders); live-panel refresh p95 "
          f"{fragment_p95:.3f} s ({len(refresh_times)} refreshes). Not counted: the cold first render "
          f"{cold:.1f} s, and the final five-at-once burst, slowest {burst:.3f} s.")
    record_testsuite_property("render_limit_s", round(limit, 3))
    assert p95 < limit, f"p95 page render {p95:.3f} s is over {limit:.2f} s"
    assert fragment_p95 < limit, f"p95 live-panel refresh {fragment_p95:.3f} s is over {limit:.2f} s"
