"""The job manager: a queue with at most N workers, stop, and recovery after a restart.

Scheduling is tested with an in-process fake backend; a few tests spawn real worker processes
(each costs a few seconds of imports), so they are marked slow and kept to three spawns in total.
"""

from __future__ import annotations

import os
import time

import pytest
from polling import wait_for

from medcls.jobs.local import LocalBackend
from medcls.jobs.manager import JobManager
from medcls.runs.store import RunStore


@pytest.fixture
def managers():
    """Make JobManagers that are always shut down, even when a test fails."""
    made: list[JobManager] = []

    def make(store: RunStore, **kwargs) -> JobManager:
        kwargs.setdefault("max_concurrent", 1)
        kwargs.setdefault("poll_s", 0.2)
        manager = JobManager(store, **kwargs)
        made.append(manager)
        return manager

    yield make
    for manager in made:
        manager.shutdown()


class FakeHandle:
    def __init__(self):
        self.alive = True
        self.killed = False

    def is_alive(self):
        return self.alive

    def kill(self):
        self.killed = True
        self.alive = False

    def exit_description(self):
        return "fake worker ended (exit code 1)"


class FakeBackend:
    """Starts nothing; records which runs it was asked to start."""

    name = "fake"
    schedules_itself = False

    def __init__(self, fail=False):
        self.started: dict[str, FakeHandle] = {}
        self.fail = fail

    def start(self, store, run_id):
        if self.fail:
            raise OSError("no processes left")
        self.started[run_id] = FakeHandle()
        return self.started[run_id], None


def state(store, run_id):
    return store.status(run_id).state


# --- scheduling, without processes ----------------------------------------------------

def test_at_most_max_concurrent_runs_start_in_submission_order(store, synth, managers):
    backend = FakeBackend()
    manager = managers(store, max_concurrent=2, backend=backend, start=False)
    ids = [manager.submit(synth.config("", seed=i)) for i in range(3)]
    manager.tick()
    assert list(backend.started) == ids[:2]
    assert [state(store, r) for r in ids] == ["running", "running", "queued"]
    assert manager.queue_position(ids[2]) == 1 and manager.queue_position(ids[0]) is None
    assert sorted(manager.running()) == sorted(ids[:2])
    manager.tick()
    assert list(backend.started) == ids[:2]  # still full
    # The first worker ends without finishing its run: the run is interrupted and the slot freed.
    backend.started[ids[0]].alive = False
    manager.tick()
    status = store.status(ids[0])
    assert status.state == "interrupted" and "fake worker ended" in status.error
    assert list(backend.started) == ids
    assert state(store, ids[2]) == "running"


def test_a_backend_that_cannot_start_fails_the_run(store, synth, managers):
    manager = managers(store, backend=FakeBackend(fail=True), start=False)
    run_id = manager.submit(synth.config(""))
    manager.tick()
    status = store.status(run_id)
    assert status.state == "failed" and "no processes left" in status.error


def test_stopping_a_queued_run_cancels_it_without_starting_it(store, synth, managers):
    backend = FakeBackend()
    manager = managers(store, backend=backend, start=False)
    first, second = manager.submit(synth.config("")), manager.submit(synth.config("", seed=1))
    manager.tick()
    manager.stop(second)
    assert state(store, second) == "cancelled" and manager.queue_position(second) is None
    backend.started[first].alive = False
    manager.tick()
    assert second not in backend.started


def test_a_worker_that_ignores_a_stop_is_killed_after_the_grace_period(store, synth, managers, monkeypatch):
    import medcls.jobs.manager as jobs

    monkeypatch.setattr(jobs, "STOP_GRACE_S", 0.0)
    backend = FakeBackend()
    manager = managers(store, backend=backend, start=False)
    run_id = manager.submit(synth.config(""))
    manager.tick()
    manager.stop(run_id)
    assert store.stop_requested(run_id)
    time.sleep(0.01)
    manager.tick()
    assert backend.started[run_id].killed
    assert state(store, run_id) == "cancelled"


def test_a_new_manager_marks_stale_running_runs_interrupted(store, synth, managers):
    stale = store.create(synth.config(""), run_id="stale")
    store.set_status(stale, "running", pid=synth.dead_pid())
    store.beat(stale)
    alive = store.create(synth.config(""), run_id="alive")
    store.set_status(alive, "running")  # this very process: alive
    store.beat(alive)
    managers(store, backend=FakeBackend(), start=False)
    assert store.raw_status(stale).state == "interrupted"  # persisted, not just read that way
    assert store.raw_status(alive).state == "running"


def test_max_concurrent_must_be_positive(store):
    with pytest.raises(ValueError, match="at least 1"):
        JobManager(store, max_concurrent=0, start=False)


def test_shutdown_kills_workers_and_marks_their_runs_interrupted(store, synth):
    backend = FakeBackend()
    manager = JobManager(store, backend=backend, start=False)
    run_id = manager.submit(synth.config(""))
    manager.tick()
    manager.shutdown()
    assert backend.started[run_id].killed
    assert store.raw_status(run_id).state == "interrupted"


# --- real worker processes ---------------------------------------------------------------
# The default backend lowers the workers' priority (nice 10) so the app stays responsive; on a busy
# test machine that only starves them, so these tests run the same backend at normal priority.

def real_backend() -> LocalBackend:
    return LocalBackend(threads=1, nice=0)


@pytest.mark.slow
def test_two_runs_queue_and_both_finish_in_worker_processes(store, synth, class_dataset, managers):
    manager = managers(store, backend=real_backend())
    first = manager.submit(synth.config(class_dataset, epochs=1))
    second = manager.submit(synth.config(class_dataset, epochs=1, seed=1))
    wait_for(lambda: state(store, first) == "running", 10, what="the first run to start")
    assert state(store, second) == "queued" and manager.queue_position(second) == 1
    wait_for(lambda: state(store, first) in ("finished", "failed", "interrupted"), 90, what="the first run")
    wait_for(lambda: state(store, second) in ("finished", "failed", "interrupted"), 90, what="the second run")
    for run_id in (first, second):
        status = store.status(run_id)
        assert status.state == "finished", status
        assert store.metrics(run_id).test.n > 0
        assert (store.path(run_id) / "log.txt").is_file()
    assert store.raw_status(first).ended <= store.raw_status(second).started


@pytest.mark.slow
def test_stopping_a_running_worker_cancels_it_and_keeps_the_checkpoint(store, synth, class_dataset, managers):
    manager = managers(store, backend=real_backend())
    long_run = manager.submit(synth.config(class_dataset, epochs=500, scheduler="none"))
    queued = manager.submit(synth.config(class_dataset, epochs=1, seed=1))
    wait_for(lambda: state(store, long_run) == "running", 10, what="the long run to start")
    manager.stop(queued)
    assert state(store, queued) == "cancelled"
    wait_for(lambda: len(store.history(long_run)) >= 1, 90, what="the first epoch")
    asked = time.monotonic()
    manager.stop(long_run)
    wait_for(lambda: state(store, long_run) == "cancelled", 15, interval=0.05, what="the run to be cancelled")
    assert time.monotonic() - asked < 10
    assert store.has_weights(long_run)
    assert len(store.history(long_run)) < 500
    status = store.status(long_run)
    assert "best checkpoint" in status.error
    pid = store.raw_status(long_run).pid
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 15, what="the worker to exit and be reaped")
    time.sleep(3 * 0.2)  # a few more scheduler ticks with a free slot
    assert state(store, queued) == "cancelled" and store.raw_status(queued).pid is None
