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
from medcls.jobs.manager import JobManager, RunActiveError
from medcls.runs.permissions import PermissionDenied, QueueLimitError, browser_identity
from medcls.runs.records import RunMeta
from medcls.runs.store import RunNotFoundError, RunStore


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


ALICE = browser_identity("alice-browser-token-0123456789", "Alice")
BOB = browser_identity("bob-browser-token-0123456789ab", "Bob")
TEACHER = browser_identity("teacher-browser-token-01234567", "Ms T", instructor=True)


def by(person) -> RunMeta:
    return RunMeta(owner=person.key, owner_name=person.name)


def test_a_twelve_run_sweep_does_not_hold_back_another_persons_run(store, synth, managers):
    backend = FakeBackend()
    manager = managers(store, backend=backend, start=False)
    sweep = [manager.submit(synth.config("", seed=i), meta=by(ALICE)) for i in range(12)]
    manager.tick()  # Alice's first run starts at once
    single = manager.submit(synth.config("", seed=99), meta=by(BOB))
    assert manager.queue_position(single) == 1
    started = []
    for _ in range(13):
        manager.tick()
        for run_id, handle in backend.started.items():
            if run_id not in started:
                started.append(run_id)
                handle.alive = False  # it ends: the next tick starts the next run
    assert started.index(single) == 1, started  # second, not thirteenth
    assert [r for r in started if r != single] == sweep  # Alice's runs keep their own order


class ClusterBackend(FakeBackend):
    """A backend that queues runs itself (like Ray), with room for ``slots`` runs at once."""

    schedules_itself = True

    def __init__(self, slots: int):
        super().__init__()
        self.slots = slots

    def capacity(self) -> int:
        return self.slots


def test_a_cluster_gets_only_the_runs_it_can_start_so_the_queue_stays_fair(store, synth, managers):
    """Ray starts tasks in the order it receives them: handing it Alice's whole sweep first would put Bob's run
    thirteenth. Handed only what it can start, the rest keep their round-robin turn in the manager's queue."""
    backend = ClusterBackend(slots=2)
    manager = managers(store, backend=backend, start=False)
    sweep = [manager.submit(synth.config("", seed=i), meta=by(ALICE)) for i in range(12)]
    manager.tick()
    assert list(backend.started) == sweep[:2]  # two slots: two runs handed, ten still waiting here
    single = manager.submit(synth.config("", seed=99), meta=by(BOB))
    backend.started[sweep[0]].alive = False  # one ends (its task is gone): the next tick hands over one more
    manager.tick()
    assert list(backend.started)[2] == single, list(backend.started)
    assert len(backend.started) == 3


def test_a_person_may_queue_only_so_many_runs_and_is_told_why(store, synth, managers, monkeypatch):
    monkeypatch.setenv("MEDCLS_QUEUE_LIMIT", "2")
    manager = managers(store, backend=FakeBackend(), start=False)
    manager.submit(synth.config("", seed=1), meta=by(ALICE))
    manager.submit(synth.config("", seed=2), meta=by(ALICE))
    with pytest.raises(QueueLimitError, match="2 run\\(s\\) waiting.*at most 2"):
        manager.submit(synth.config("", seed=3), meta=by(ALICE))
    assert len(store.list_ids()) == 2  # nothing was created for the refused run
    manager.submit(synth.config("", seed=4), meta=by(BOB))  # others are not affected
    manager.submit(synth.config("", seed=5))  # nor the local operator (the command line)
    with pytest.raises(QueueLimitError, match="these 3 runs"):
        manager.check_queue_room(BOB, 3)  # a sweep asks before it queues anything


def test_only_the_owner_or_an_instructor_may_stop_resume_rename_or_delete(store, synth, managers):
    manager = managers(store, backend=FakeBackend(), start=False)
    run_id = manager.submit(synth.config(""), meta=by(ALICE))
    for action, call in [("stop", lambda who: manager.stop(run_id, by=who)),
                         ("resume", lambda who: manager.resume(run_id, by=who)),
                         ("rename", lambda who: manager.rename(run_id, "mine now", by=who)),
                         ("delete", lambda who: manager.delete(run_id, by=who))]:
        with pytest.raises(PermissionDenied, match=f"cannot {action} this run: it was started by Alice"):
            call(BOB)
    assert state(store, run_id) == "queued" and store.meta(run_id).name != "mine now"
    assert manager.rename(run_id, "  Alice's   baseline ", by=ALICE) == "Alice's baseline"
    assert store.summary(run_id).name == "Alice's baseline" and store.meta(run_id).owner == ALICE.key
    assert manager.rename(run_id, "checked by the teacher", by=TEACHER) == "checked by the teacher"
    with pytest.raises(ValueError, match="needs a name"):
        manager.rename(run_id, "   ", by=ALICE)


def test_a_queued_run_is_cancelled_and_deleted_a_training_one_must_be_stopped_first(store, synth, managers):
    backend = FakeBackend()
    manager = managers(store, backend=backend, start=False)
    training = manager.submit(synth.config(""), meta=by(ALICE))
    waiting = manager.submit(synth.config("", seed=1), meta=by(ALICE))
    manager.tick()
    with pytest.raises(RunActiveError, match="stop it first"):
        manager.delete(training, by=ALICE)
    assert state(store, training) == "running"
    manager.delete(waiting, by=ALICE)
    with pytest.raises(RunNotFoundError):
        store.status(waiting)
    backend.started[training].alive = False
    manager.tick()
    assert waiting not in backend.started
    manager.delete(training)  # the local operator (the command line) may delete anyone's ended run
    assert store.list_ids() == []


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
    assert status.error.startswith("Stopped on request after ") and "It keeps the weights of its" in status.error
    pid = store.raw_status(long_run).pid
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), 15, what="the worker to exit and be reaped")
    time.sleep(3 * 0.2)  # a few more scheduler ticks with a free slot
    assert state(store, queued) == "cancelled" and store.raw_status(queued).pid is None


# --- liveness: only the training loop beats; every manager watches every running run ------------------------

def _silence(store, run_id, seconds):
    """The run's loop trained, then beat last ``seconds`` ago."""
    from medcls.runs.records import Progress

    store.write_progress(run_id, Progress(phase="train", epoch=1))
    old = time.time() - seconds
    store.beat(run_id)
    os.utime(store.file(run_id, "heartbeat"), (old, old))


def test_the_manager_never_beats_for_a_live_worker_and_ends_one_whose_loop_went_silent(store, synth, managers):
    from medcls.runs.store import HEARTBEAT_STALE_S

    backend = FakeBackend()
    manager = managers(store, backend=backend, start=False)
    run_id = manager.submit(synth.config(""))
    manager.tick()
    assert not store.file(run_id, "heartbeat").exists()  # starting a worker is not a beat
    store.beat(run_id)  # the worker's loop beat once...
    manager.tick()
    assert state(store, run_id) == "running" and not backend.started[run_id].killed
    _silence(store, run_id, HEARTBEAT_STALE_S + 1)  # ...and then hung, its process still alive
    manager.tick()
    assert backend.started[run_id].killed
    status = store.raw_status(run_id)
    assert status.state == "interrupted" and "stopped responding" in status.error and not status.auto_resume
    assert "has not reported for" in status.error


def test_a_hung_run_frees_its_slot_for_the_queue(store, synth, managers):
    from medcls.runs.store import HEARTBEAT_STALE_S

    backend = FakeBackend()
    manager = managers(store, backend=backend, start=False)
    first, second = manager.submit(synth.config("")), manager.submit(synth.config("", seed=1))
    manager.tick()
    _silence(store, first, HEARTBEAT_STALE_S + 1)
    manager.tick()
    assert state(store, first) == "interrupted" and state(store, second) == "running"


def test_a_stop_asked_by_another_manager_is_enforced_by_the_one_holding_the_worker(store, synth, managers,
                                                                                   monkeypatch):
    import medcls.jobs.manager as jobs

    owner_backend = FakeBackend()
    owner = managers(store, backend=owner_backend, start=False)
    other = managers(store, backend=FakeBackend(), start=False)  # another app server on the same store
    run_id = owner.submit(synth.config(""))
    owner.tick()
    store.beat(run_id)
    other.stop(run_id)
    assert store.stop_requested(run_id)
    owner.tick()
    assert not owner_backend.started[run_id].killed  # the worker gets its grace period to stop by itself
    monkeypatch.setattr(jobs, "STOP_GRACE_S", 0.0)
    time.sleep(0.01)
    owner.tick()
    assert owner_backend.started[run_id].killed
    status = store.raw_status(run_id)
    assert status.state == "cancelled" and "did not stop by itself" in status.error


def test_a_manager_without_the_worker_ends_a_run_that_ignores_a_stop(store, synth, managers, monkeypatch):
    """The manager that started the worker is gone; any other one enforces the stop (by pid on this machine)."""
    import medcls.jobs.manager as jobs

    killed = []
    monkeypatch.setattr("medcls.jobs.local.end_worker_process",
                        lambda store_, run_id, status: killed.append((run_id, status.pid)) or True)
    run_id = store.create(synth.config(""))
    store.set_status(run_id, "running", pid=os.getpid())
    store.beat(run_id)
    manager = managers(store, backend=FakeBackend(), start=False)
    manager.stop(run_id)
    monkeypatch.setattr(jobs, "STOP_GRACE_S", 0.0)
    time.sleep(0.01)
    manager.tick()
    assert killed == [(run_id, os.getpid())]
    assert state(store, run_id) == "cancelled"


# --- resuming -----------------------------------------------------------------------------------------------

def test_runs_interrupted_by_a_server_stop_resume_by_themselves_a_few_times(store, synth, managers):
    from medcls.jobs.manager import MAX_AUTO_RESUMES

    run_id = store.create(synth.config(""))
    store.set_status(run_id, "interrupted", auto_resume=True, error="The app server that started this run stopped")
    backend = FakeBackend()
    manager = managers(store, backend=backend, start=False)
    for attempt in range(1, MAX_AUTO_RESUMES + 1):
        manager.tick()
        assert list(backend.started).count(run_id) == 1 and state(store, run_id) == "running"
        assert store.raw_status(run_id).resumes == attempt
        backend.started.pop(run_id)
        store.set_status(run_id, "interrupted", auto_resume=True)  # the server stopped again
    manager.tick()
    assert run_id not in backend.started  # enough: now it waits for a click
    status = store.raw_status(run_id)
    assert status.state == "interrupted" and not status.auto_resume


def test_a_killed_worker_is_not_resumed_by_itself_but_on_request(store, synth, managers):
    from medcls.jobs.manager import ResumeError

    backend = FakeBackend()
    manager = managers(store, backend=backend, start=False)
    run_id = manager.submit(synth.config(""))
    manager.tick()
    backend.started[run_id].alive = False  # killed (OOM, a signal): not a server restart
    manager.tick()
    assert state(store, run_id) == "interrupted"
    manager.tick()
    assert state(store, run_id) == "interrupted"  # no automatic retry of a run that may die again
    store.request_stop(run_id)
    manager.resume(run_id)
    assert state(store, run_id) == "queued" and not store.stop_requested(run_id)  # an old stop is forgotten
    manager.tick()
    assert state(store, run_id) == "running" and store.raw_status(run_id).resumes == 1
    with pytest.raises(ResumeError, match="only an interrupted run can be resumed"):
        manager.resume(run_id)


def test_a_run_with_damaged_files_is_not_resumed(store, synth, managers):
    from medcls.jobs.manager import ResumeError

    run_id = store.create(synth.config(""))
    store.file(run_id, "status.json").write_text("123")
    manager = managers(store, backend=FakeBackend(), start=False)
    with pytest.raises(ResumeError, match="only an interrupted run can be resumed"):
        manager.resume(run_id)


# --- runs a command-line process trains itself ----------------------------------------

def test_a_run_held_by_a_live_process_is_left_to_it_until_the_holder_is_gone(store, synth, managers):
    import subprocess
    import sys

    from medcls.jobs.manager import claim

    backend = FakeBackend()
    manager = managers(store, max_concurrent=2, backend=backend, start=False)
    held = store.create(synth.config("", seed=1), held=True)   # as `python -m medcls lesson run` queues its runs
    free = manager.submit(synth.config("", seed=2))
    manager.tick()
    assert list(backend.started) == [free] and state(store, held) == "queued"  # a free slot, yet not started
    assert store.held(store.status(held)) and manager.queue_position(held) is None
    # Its holder takes it when its turn comes; a run that is no longer queued cannot be taken.
    assert claim(store, held) == ""
    status = store.status(held)
    assert status.state == "running" and status.pid == os.getpid()
    assert claim(store, free) == "it is running"
    backend.started[free].alive = False  # its worker ends: a slot is free again
    cancelled = store.create(synth.config("", seed=3), held=True)
    manager.stop(cancelled)
    assert claim(store, cancelled) == "it is cancelled (Cancelled before it started.)"
    # A holder that died (killed before its turn): its run is an ordinary queued run again.
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = store.create(synth.config("", seed=4), held=True)
    store.set_status(orphan, "queued", pid=int(gone.stdout))
    assert not store.held(store.status(orphan))
    manager.tick()
    assert orphan in backend.started
    assert claim(store, orphan) == "it is running"
