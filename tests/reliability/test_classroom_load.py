"""A classroom: 30 people on one 2-core server, each starting a tiny run, watching it and browsing Compare.

Not part of the ordinary suite (marker ``classroom``; ``make classroom``): it takes several minutes and both
cores. Its figures are in docs/scaling.md ("Classroom load (30 sessions)").

Each person is one WebSocket session to a real ``streamlit run`` (see live_server.Session). They arrive within
``ARRIVAL_S`` of each other. Each queues one tiny run under their own identity through the job manager (what the
Train page's Start button calls; pressing the button over the protocol would also need every form widget's
state, which this test does not model), then watches the Train page as a tab does: the live panel's timer
while a run is shown active, a full page render every few seconds, until their run has ended; then opens
Compare runs twice. The server trains one run at a time (MEDCLS_MAX_CONCURRENT=1).

With ``CLASSROOM_BUDGET_S`` set, people stop watching after that many seconds (on a machine shared with other
work the whole class can take far longer than a lesson); runs still queued then are reported as waiting at
least that long, and none may have been lost or failed.

Reported (printed, and as JUnit properties): page-render p95 (full renders of Train and Compare, and live
panel refreshes), and the slowest person's wait in the queue (from queuing to the start of training).
Checked: every run finishes (none lost or left queued), every render shows the shown run in a state the
store had during that render, and no page shows an error.
"""

from __future__ import annotations

import os
import random
import time

import numpy as np
import pytest
from live_server import Session, start_live_app
from test_load import in_threads

from medcls.config import TrainConfig
from medcls.jobs.manager import JobManager
from medcls.runs.naming import display_names
from medcls.runs.records import ACTIVE_STATES, RunMeta
from medcls.runs.store import RunStore

SESSIONS = 30
ARRIVAL_S = 5.0          # everyone arrives within this long
FULL_EVERY = 3           # a full page render after this many live-panel refreshes
BUDGET_S = float(os.environ.get("CLASSROOM_BUDGET_S", "0")) or None  # stop watching after this long (see below)
TIMEOUT_S = 3600.0       # the whole class must be served within this long


def _datetime(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


@pytest.fixture
def classroom_app(tmp_path_factory):
    app = start_live_app(tmp_path_factory.mktemp("classroom"), long_run=False)
    try:
        yield app
    finally:
        app.close()


@pytest.mark.classroom
def test_thirty_people_start_watch_and_compare_runs(classroom_app, record_testsuite_property):
    app = classroom_app
    store = RunStore(app.store.root)
    data = app.store.root.parent / "data-in"
    tiny = TrainConfig(image_size=32, epochs=2, batch_size=16, precision="fp32").with_options(source=str(data))
    submitter = JobManager(store, start=False)  # queues as the Start button does; the server's manager trains
    sessions = [Session(app) for _ in range(SESSIONS)]
    started_at = time.monotonic()
    try:
        sessions[0].render("train")  # the first render starts the server's job manager (not measured)

        def person(i: int, session: Session) -> dict:
            rng = random.Random(i)
            time.sleep(rng.uniform(0, ARRIVAL_S))
            run_id = submitter.submit(tiny, meta=RunMeta(owner=f"browser:student{i:02d}", owner_name=f"student {i}"))
            renders, shown = [], None

            def timed(kind: str, render, page: str) -> None:
                nonlocal shown
                before = store.raw_status(shown).state if shown else None
                seconds, view = render(page)
                if kind == "page" and page == "train":  # the picker shows a name: which run is it?
                    by_name = {name: r for r, name in display_names(store.list()).items()}
                    shown = by_name[view.run_id]
                after = store.raw_status(shown).state if shown and page == "train" else None
                renders.append((kind, page, seconds, view, before, after))

            refreshes = 0
            while store.raw_status(run_id).state in ACTIVE_STATES:
                assert time.monotonic() - started_at < TIMEOUT_S, "the class was not served in time"
                if BUDGET_S and time.monotonic() - started_at > BUDGET_S:
                    break
                if session.auto_rerun and refreshes % FULL_EVERY:
                    time.sleep(session.auto_rerun[0])  # the browser's timer
                    timed("fragment", session.rerun_fragment, "train")
                else:
                    time.sleep(rng.uniform(1.0, 3.0))  # someone clicking about
                    timed("page", session.render, "train")
                refreshes += 1
            for _ in range(2):
                timed("page", session.render, "compare")
            return {"run_id": run_id, "renders": renders}

        people = in_threads(sessions, person)
    finally:
        for session in sessions:
            session.close()

    # No run lost: every run of the class finished (or, past the budget, is still queued or training).
    ids = [p["run_id"] for p in people]
    ended_at = time.time()
    states = {r: store.status(r).state for r in ids}
    allowed = ("finished",) if not BUDGET_S else ("finished", "queued", "running")
    assert all(s in allowed for s in states.values()), states
    waits, still_waiting = [], 0
    for r in ids:
        status = store.status(r)
        start = _datetime(status.started) if status.started else ended_at
        still_waiting += not status.started
        waits.append(start - _datetime(status.created))
    finished = sum(s == "finished" for s in states.values())
    # No render showed an error or a state the run did not have during it.
    page_times, fragment_times, compare_times, wrong = [], [], [], []
    for p in people:
        for kind, page, seconds, view, before, after in p["renders"]:
            assert not view.exceptions and not view.errors, (view.exceptions, view.errors)
            if page == "compare":
                compare_times.append(seconds)
                continue
            (page_times if kind == "page" else fragment_times).append(seconds)
            if view.state is not None and before is not None and view.state not in (before, after):
                wrong.append((view.summary(), before, after))
    assert not wrong, wrong[:5]

    full = page_times + compare_times
    figures = {"render_p95_s": float(np.percentile(full, 95)), "render_median_s": float(np.median(full)),
               "train_p95_s": float(np.percentile(page_times, 95)),
               "compare_p95_s": float(np.percentile(compare_times, 95)),
               "fragment_p95_s": float(np.percentile(fragment_times, 95)),
               "slowest_queue_wait_s": max(waits), "median_queue_wait_s": float(np.median(waits)),
               "renders": len(full) + len(fragment_times), "runs": len(ids), "runs_finished": finished,
               "runs_never_started": still_waiting,
               "class_served_s": time.monotonic() - started_at}
    for name, value in figures.items():
        record_testsuite_property(name, round(value, 3))
    print(f"\n{SESSIONS} sessions, one tiny run each, one training slot: full page renders p95 "
          f"{figures['render_p95_s']:.2f} s (median {figures['render_median_s']:.2f} s; Train "
          f"{figures['train_p95_s']:.2f} s, Compare {figures['compare_p95_s']:.2f} s), live-panel refresh p95 "
          f"{figures['fragment_p95_s']:.2f} s, {figures['renders']} renders; queue wait: slowest "
          f"{figures['slowest_queue_wait_s']:.0f} s" + (" or more" if still_waiting else "") +
          f", median {figures['median_queue_wait_s']:.0f} s; {finished} of {len(ids)} runs finished and "
          f"{still_waiting} had not started after {figures['class_served_s']:.0f} s.")
