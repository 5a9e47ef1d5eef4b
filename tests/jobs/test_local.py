"""The local backend's standby process: a training process warmed up before the run it will train.

The hand-over logic is tested with a stand-in worker (a few lines of Python that say "ready" and write down
the run id they are given); one slow test trains a real run in a real standby process.
"""

from __future__ import annotations

import logging
import os
import sys
import time

import pytest
from polling import wait_for

from medcls.jobs import local
from medcls.jobs.local import LocalBackend, end_worker_process, process_arguments
from medcls.jobs.manager import JobManager

# argv: store [run_id] [--standby] ...; writes "<how> <run id>" into the run's folder.
STAND_IN = """
import pathlib, sys, time
store, rest = pathlib.Path(sys.argv[1]), sys.argv[2:]
if rest[0] == "--standby":
    time.sleep(float({warmup!r}))
    print("ready", flush=True)
    run_id, how = sys.stdin.readline().strip(), "standby"
else:
    run_id, how = rest[0], "fresh"
if run_id:
    (store / run_id / "got.txt").write_text(how + " " + run_id)
    time.sleep(float({linger!r}))
"""


class StandInBackend(LocalBackend):
    """LocalBackend whose processes are the stand-in worker."""

    def __init__(self, linger: float = 0.0, warmup: float = 0.0, **kwargs):
        super().__init__(standby=True, **kwargs)
        self.linger, self.warmup = linger, warmup

    def _command(self, store, *target):
        code = STAND_IN.format(linger=self.linger, warmup=self.warmup)
        return [sys.executable, "-c", code, str(store.root.resolve()), *target]


def got(store, run_id):
    path = store.path(run_id) / "got.txt"
    return path.read_text() if path.exists() else ""


def test_a_run_goes_to_the_warm_standby_process_which_is_recorded_before_it_hears_of_it(store, synth):
    backend = StandInBackend()
    backend.keep_ready(store)
    assert backend.standby_ready(10)
    pid = backend.standby_pid
    run_id = store.create(synth.config(""))
    handle, started = backend.start(store, run_id)
    assert started == pid and backend.standby_pid is None  # handed over, not kept for the next run
    # The status names the process before the run id reaches it: the worker's ownership check cannot race.
    assert store.raw_status(run_id).pid == pid
    wait_for(lambda: got(store, run_id), 10, what="the run id to reach the standby process")
    assert got(store, run_id) == f"standby {run_id}"
    handle.process.wait(10)


def test_without_a_standby_process_or_when_the_environment_changed_a_fresh_process_starts(store, synth,
                                                                                           monkeypatch):
    backend = StandInBackend()
    first = store.create(synth.config(""))
    backend.start(store, first)[0].process.wait(10)  # none started yet
    assert got(store, first) == f"fresh {first}"

    backend.keep_ready(store)
    standby = backend._standby.process
    monkeypatch.setenv("MEDCLS_SOME_SETTING", "changed")  # e.g. the server became exposed since it started
    second = store.create(synth.config(""))
    backend.start(store, second)[0].process.wait(10)
    assert got(store, second) == f"fresh {second}"
    assert standby.wait(10) is not None  # the stale standby process was ended, not left waiting


def test_a_standby_process_that_dies_by_itself_is_not_restarted_in_a_loop(store, synth, monkeypatch, caplog):
    backend = StandInBackend()
    backend.keep_ready(store)
    dead = backend._standby.process
    dead.kill()
    dead.wait(10)
    with caplog.at_level(logging.WARNING, logger="medcls.jobs.local"):
        backend.keep_ready(store)
    assert backend.standby_pid is None and "ended by itself" in caplog.text
    backend.keep_ready(store)
    assert backend.standby_pid is None  # still within the retry pause
    run_id = store.create(synth.config(""))
    backend.start(store, run_id)[0].process.wait(10)
    assert got(store, run_id) == f"fresh {run_id}"  # runs still start, in fresh processes
    monkeypatch.setattr(local, "STANDBY_RETRY_S", 0.0)
    backend.keep_ready(store)
    assert backend.standby_pid not in (None, dead.pid)
    backend.close()


def test_the_manager_starts_a_standby_process_only_with_a_free_slot_and_ends_it_on_shutdown(store, synth):
    backend = StandInBackend(linger=60)
    manager = JobManager(store, backend=backend, start=False)
    try:
        manager.tick()
        waiting = backend.standby_pid
        assert waiting is not None and backend.standby_ready(10)
        run_id = manager.submit(synth.config(""))
        manager.tick()
        assert store.raw_status(run_id).pid == waiting
        # The run holds the only slot: no new standby process competes with it for the CPU.
        assert backend.standby_pid is None
        store.set_status(run_id, "finished")
        manager.tick()
        assert backend.standby_pid not in (None, waiting)
        spare = backend._standby.process
    finally:
        manager.shutdown()
    assert spare.wait(10) is not None and backend.standby_pid is None


def test_a_timing_probe_waits_for_a_standby_process_warming_up_and_only_for_that(store, synth):
    backend = StandInBackend(warmup=1.5)
    manager = JobManager(store, backend=backend, start=False)
    try:
        start = time.monotonic()
        assert not manager.await_warm_worker(10)  # none to wait for: at once
        assert time.monotonic() - start < 0.5
        backend.keep_ready(store)
        assert backend.standby_warming()
        start = time.monotonic()
        assert manager.await_warm_worker(10)
        assert 1.0 < time.monotonic() - start < 8.0 and not backend.standby_warming()
        start = time.monotonic()
        assert manager.await_warm_worker(10) and time.monotonic() - start < 0.5  # warm already
        backend.close()
        backend.keep_ready(store)
        start = time.monotonic()
        assert not manager.await_warm_worker(10, should_stop=lambda: True)  # Start was pressed: stop waiting
        assert not manager.await_warm_worker(0.3)                           # not warm within the time allowed
        assert time.monotonic() - start < 1.0
    finally:
        manager.shutdown()


@pytest.mark.parametrize("command, ends", [
    ((), False),                                                      # not a medcls worker at all
    (("medcls.jobs.worker", "{store}", "{run}"), True),                # this store's worker for this run
    (("medcls.jobs.worker", "{store}", "--standby"), True),            # a standby process it was handed to
    (("medcls.jobs.worker", "/elsewhere", "--standby"), False),        # another store's standby process
])
def test_end_worker_process_kills_only_a_worker_of_this_store_for_this_run(store, synth, command, ends):
    import subprocess

    run_id = store.create(synth.config(""))
    args = [a.format(store=store.root.resolve(), run=run_id) for a in command]
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])
    # Popen returns once the child's exec has begun; its /proc cmdline reads empty until the kernel has laid out
    # the new argv (a race a busy CI machine lost once). A real stuck worker is killed long after its start.
    wait_for(lambda: "import time; time.sleep(60)" in (process_arguments(process.pid) or []), 10,
             what="the child's command line")
    try:
        store.set_status(run_id, "running", pid=process.pid)  # the run's status names this pid
        assert end_worker_process(store, run_id, store.raw_status(run_id)) is ends
        if ends:
            assert process.wait(10) == -9
        else:
            assert process.poll() is None
    finally:
        process.kill()
        process.wait(10)


def test_the_worker_takes_either_a_run_id_or_standby(capsys):
    from medcls.jobs.worker import main

    for argv in (["store"], ["store", "run", "--standby"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "either a run id or --standby" in capsys.readouterr().err


@pytest.mark.slow
def test_a_real_standby_process_warms_up_then_trains_the_run_it_is_given(store, synth, class_dataset):
    backend = LocalBackend(threads=1, nice=0, standby=True)
    manager = JobManager(store, backend=backend, poll_s=0.2)
    try:
        wait_for(lambda: backend.standby_ready(0.2), 90, what="the standby process to warm up")
        pid = backend.standby_pid
        started = time.monotonic()
        run_id = manager.submit(synth.config(class_dataset, epochs=1))
        wait_for(lambda: store.status(run_id).state in ("finished", "failed", "interrupted"), 90, what="the run")
        took = time.monotonic() - started
        status = store.status(run_id)
        assert status.state == "finished", status
        assert store.raw_status(run_id).pid == pid
        assert "training with 1 thread(s)" in (store.path(run_id) / "log.txt").read_text()
        assert (store.path(run_id) / "worker.log").is_file()  # its output moved beside the run
        assert store.metrics(run_id).test.n > 0
        wait_for(lambda: backend.standby_pid not in (None, pid), 10, what="the next standby process")
        spare = backend.standby_pid
        assert took < 60
    finally:
        manager.shutdown()
    wait_for(lambda: not os.path.exists(f"/proc/{spare}") or _zombie(spare), 10, what="the standby process to end")


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ")[1].startswith("Z")
    except OSError:
        return True
