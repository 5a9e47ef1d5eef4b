"""The run store's part about a run's life: heartbeat patience, stop requests, ownership, resume files."""

from __future__ import annotations

import os
import time

import pytest
import torch

from medcls.runs import lifecycle
from medcls.runs.lifecycle import HEARTBEAT_STALE_S, STARTUP_GRACE_S
from medcls.runs.records import Progress
from medcls.runs.store import CheckpointError


@pytest.fixture
def run(store, synth):
    return store.create(synth.config(""), run_id="r1")


def _age(store, run_id: str, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(store.file(run_id, "heartbeat"), (old, old))


def test_before_its_first_beat_a_run_has_the_startup_grace_then_the_normal_patience(store, run):
    store.set_status(run, "running", pid=None)
    assert store.heartbeat_patience(run) == STARTUP_GRACE_S
    assert store.silent(run) is None and store.status(run).state == "running"
    store.beat(run)
    assert store.heartbeat_patience(run) == STARTUP_GRACE_S  # still preparing (no progress yet)
    store.write_progress(run, Progress(phase="train", epoch=1))  # the loop trains
    assert store.heartbeat_patience(run) == HEARTBEAT_STALE_S
    _age(store, run, HEARTBEAT_STALE_S + 5)
    assert store.silent(run) >= HEARTBEAT_STALE_S
    assert store.status(run).state == "interrupted"
    store.write_progress(run, Progress(phase="preparing"))  # one long preparation step (a bf16 probe)
    assert store.heartbeat_patience(run) == STARTUP_GRACE_S and store.silent(run) is None
    store.write_progress(run, Progress(phase="train"))
    store.clear_heartbeat(run)  # a run about to start again: its patience counts from its (new) start
    store.set_status(run, "running", pid=None, started="")
    assert store.silent(run) is None


def test_a_live_process_that_does_not_beat_is_not_alive(store, run):
    """No one beats for a worker: this very process exists, but its loop has been silent too long."""
    store.set_status(run, "running")  # pid: this process, alive
    store.beat(run)
    store.write_progress(run, Progress(phase="train", epoch=1))
    _age(store, run, HEARTBEAT_STALE_S + 1)
    assert not store.process_gone(store.raw_status(run))
    assert not store.worker_alive(run)


def test_stop_requests_have_an_age_and_can_be_cleared(store, run):
    assert store.stop_age(run) is None
    store.request_stop(run)
    assert 0 <= store.stop_age(run) < 5
    store.clear_stop(run)
    assert store.stop_age(run) is None and not store.stop_requested(run)


def test_only_the_process_named_in_a_running_status_owns_the_run(store, run):
    assert not store.owns(run, os.getpid())  # queued
    store.set_status(run, "running")
    assert store.owns(run, os.getpid()) and not store.owns(run, os.getpid() + 1)
    store.set_status(run, "interrupted")
    assert not store.owns(run, os.getpid())


@pytest.mark.parametrize("pid", [0, -1, "abc", 1e400, 2**40])
def test_impossible_pids_read_as_none_so_no_process_group_is_ever_signalled(store, run, pid):
    store.file(run, "status.json").write_text(
        '{"state": "running", "pid": %s}' % (f'"{pid}"' if isinstance(pid, str) else repr(pid).replace("inf", "1e400")))
    assert store.raw_status(run).pid is None
    assert not store.process_gone(store.raw_status(run))


def test_the_resume_file_round_trips_tensors_and_refuses_anything_else(store, run, tmp_path):
    state = {"epoch": 2, "model": {"w": torch.ones(3)}, "history": [{"epoch": 1}], "rng": torch.get_rng_state()}
    store.save_resume(run, state)
    loaded = store.load_resume(run)
    assert loaded["epoch"] == 2 and torch.equal(loaded["model"]["w"], torch.ones(3))

    class Evil:
        def __reduce__(self):
            return open, (str(tmp_path / "pwned"), "w")

    torch.save({"epoch": 1, "x": Evil()}, store.file(run, "resume.pt"))
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        store.load_resume(run)
    assert not (tmp_path / "pwned").exists()
    torch.save([1, 2], store.file(run, "resume.pt"))
    with pytest.raises(CheckpointError, match="does not hold a training state"):
        store.load_resume(run)
    store.delete_resume(run)
    assert store.load_resume(run) is None and not store.has_resume(run)


def test_resumable_means_interrupted_and_readable(store, run):
    store.set_status(run, "finished")
    assert not store.resumable(run)
    store.set_status(run, "interrupted")
    assert store.resumable(run)  # from its checkpoint, or (without one) from its first epoch again
    store.file(run, "status.json").write_text('{"state": "interrupted"')
    assert not store.resumable(run)


def test_sources_in_use_are_those_of_queued_running_and_resumable_runs(store, synth, tmp_path):
    def make(run_id, source, state):
        store.create(synth.config(tmp_path / source), run_id=run_id)
        store.set_status(run_id, state)
        return run_id

    make("a", "queued-data", "queued")
    make("b", "running-data", "running")
    make("c", "done-data", "finished")
    make("d", "resumable-data", "interrupted")
    store.save_resume("d", {"epoch": 1})
    make("e", "lost-data", "interrupted")
    assert store.sources_in_use() == {str(tmp_path / n) for n in ("queued-data", "running-data", "resumable-data")}


def test_the_lifecycle_is_part_of_the_store():
    from medcls.runs.store import RunStore

    assert issubclass(RunStore, lifecycle.RunLifecycle)
