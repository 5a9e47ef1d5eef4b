"""The local backend: each run trains in its own fresh Python process on this machine."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass

from ..runs.records import RunStatus
from ..runs.store import RunStore
from ..training.hardware import worker_environment
from .manager import WorkerHandle

__all__ = ["LocalBackend", "end_worker_process"]

log = logging.getLogger(__name__)
WORKER_MODULE = "medcls.jobs.worker"


@dataclass
class _LocalHandle:
    process: subprocess.Popen

    def is_alive(self) -> bool:
        return self.process.poll() is None  # poll() also reaps the finished child

    def kill(self) -> None:
        self.process.kill()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            pass

    def exit_description(self) -> str:
        code = self.process.returncode
        if code is not None and code < 0:
            return f"The training process was killed by signal {-code}."
        return f"The training process exited unexpectedly (exit code {code})."


class LocalBackend:
    """Each run in its own fresh Python process on this machine (``python -m medcls.jobs.worker``).

    A plain subprocess rather than multiprocessing's spawn: spawn would re-import the parent's
    ``__main__`` in the child, which under ``streamlit run`` is the app script itself.
    """

    name = "local"
    schedules_itself = False  # the manager enforces max_concurrent

    def __init__(self, threads: int = 0, nice: int = 10):
        self.threads = threads
        self.nice = nice

    def start(self, store: RunStore, run_id: str) -> tuple[WorkerHandle, int | None]:
        cmd = [sys.executable, "-m", WORKER_MODULE, str(store.root.resolve()), run_id,
               "--threads", str(self.threads), "--parent-pid", str(os.getpid()), "--nice", str(self.nice)]
        env = worker_environment()  # medcls importable from anywhere; OpenMP's waits as a worker's
        # Anything the worker prints outside its log (an import error, a crash) lands next to its run.
        with open(store.path(run_id) / "worker.log", "ab") as output:
            process = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=output,
                                       stderr=subprocess.STDOUT, close_fds=True)
        return _LocalHandle(process), process.pid


def end_worker_process(store: RunStore, run_id: str, status: RunStatus) -> bool:
    """Kill the worker process of a run that another manager started (it hung, or ignored a stop).

    Only a process on this machine whose command line is this store's worker for this run is killed, so a
    recycled pid never takes an unrelated process with it. A stopped (SIGSTOP) process dies too."""
    pid = status.pid
    if not pid or status.host != socket.gethostname():
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = [a.decode("utf-8", "replace") for a in handle.read().split(b"\0")]
    except OSError:
        return False
    if WORKER_MODULE not in args or run_id not in args:
        return False
    try:
        root = str(store.root.resolve())
        if not any(a == root for a in args):
            return False
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return False
    log.warning("killed the worker process %d of run %s", pid, run_id)
    return True
