"""A hung worker never blocks the queue, and a stop works from any process that shares the run store.

Liveness comes from the training loop only: these tests freeze real worker processes with SIGSTOP (the
process exists, its loop is silent) and check that a job manager ends them and says why. The patience is
shortened to a few seconds so the tests stay quick.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from polling import wait_for
from reliability_corpus import assert_fault_message, good_classes
from reliability_helpers import ROOT, alive, slow_config

import medcls.jobs.manager as jobs
import medcls.runs.lifecycle as lifecycle
from medcls.config import TrainConfig
from medcls.jobs.local import LocalBackend
from medcls.jobs.manager import JobManager

pytestmark = pytest.mark.slow


def backend() -> LocalBackend:
    return LocalBackend(threads=1, nice=0)


def beating(store, run_id):
    """The run's loop has beaten and finished an epoch (its worker is past imports and decoding)."""
    return store.file(run_id, "heartbeat").exists() and len(store.history(run_id)) >= 1 and store.has_resume(run_id)


def test_a_hung_worker_is_ended_with_the_reason_and_the_queue_moves_on(store, slow_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(lifecycle, "HEARTBEAT_STALE_S", 5.0)
    manager = JobManager(store, max_concurrent=1, backend=backend(), poll_s=0.2)
    pid = None
    try:
        hung = manager.submit(slow_config(slow_dataset))
        waiting = manager.submit(TrainConfig(image_size=32, epochs=1, batch_size=8, precision="fp32").with_options(
            source=str(good_classes(tmp_path / "small"))))
        wait_for(lambda: beating(store, hung), timeout=120, what="the first epoch")
        pid = store.raw_status(hung).pid
        os.kill(pid, signal.SIGSTOP)  # the process stays; its training loop stops beating
        wait_for(lambda: store.raw_status(hung).state != "running", timeout=30, what="the hung run to be ended")
        status = store.raw_status(hung)
        assert status.state == "interrupted", status
        assert_fault_message(status.error, "hung-worker")
        wait_for(lambda: not alive(pid), timeout=10, what="the frozen worker to be killed")
        # Its slot went to the queued run, which trains to the end.
        wait_for(lambda: store.raw_status(waiting).state in ("finished", "failed", "interrupted"), timeout=120,
                 what="the queued run")
        assert store.raw_status(waiting).state == "finished"
        assert store.resumable(hung)  # one click continues it from its last finished epoch
    finally:
        manager.shutdown(kill=True)
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


STOP_SCRIPT = """
import sys
from medcls.jobs.manager import JobManager
from medcls.runs.store import RunStore

JobManager(RunStore(sys.argv[1]), start=False).stop(sys.argv[2])
"""


def test_a_stop_asked_in_another_process_stops_the_run(store, slow_dataset):
    manager = JobManager(store, backend=backend(), poll_s=0.2)
    try:
        run_id = manager.submit(slow_config(slow_dataset))
        wait_for(lambda: beating(store, run_id), timeout=120, what="the first epoch")
        subprocess.run([sys.executable, "-c", STOP_SCRIPT, str(store.root), run_id], cwd=ROOT, check=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
        wait_for(lambda: store.raw_status(run_id).state == "cancelled", timeout=30, what="the run to stop")
        assert_fault_message(store.raw_status(run_id).error, "stop-from-another-process")
        assert store.has_weights(run_id) and store.metrics(run_id).stopped
    finally:
        manager.shutdown(kill=True)


def test_a_hung_worker_asked_to_stop_is_ended_by_a_manager_that_did_not_start_it(store, slow_dataset, monkeypatch):
    owner = JobManager(store, backend=backend(), poll_s=0.2)
    pid = None
    try:
        run_id = owner.submit(slow_config(slow_dataset))
        wait_for(lambda: beating(store, run_id), timeout=120, what="the first epoch")
        pid = store.raw_status(run_id).pid
        os.kill(pid, signal.SIGSTOP)
        owner.shutdown(kill=False)  # its server goes away; the frozen worker stays
        other = JobManager(store, backend=backend(), start=False)  # another app server on the same store
        monkeypatch.setattr(jobs, "STOP_GRACE_S", 1.0)
        other.stop(run_id)
        wait_for(lambda: other.tick() or store.raw_status(run_id).state != "running", timeout=15, interval=0.3,
                 what="the stop to be enforced")
        status = store.raw_status(run_id)
        assert status.state == "cancelled", status
        assert_fault_message(status.error, "stop-ignored-by-a-hung-worker")
        wait_for(lambda: not alive(pid), timeout=10, what="the frozen worker to be killed")
    finally:
        owner.shutdown(kill=True)
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)
