"""The local backend: each run trains in its own fresh Python process on this machine.

With ``standby`` (the app's setting), one such process is started before it is needed and warms up (imports,
first optimizer step; about 5 s on a 2-core CPU, at low priority): the next run is handed to it, so its first
epoch is not held up by them. A new standby process is started only when a training slot is free, so that its
warm-up never competes with a run for the CPU.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..runs.records import RunStatus
from ..runs.store import RunStore
from ..training.hardware import worker_environment
from .manager import WorkerHandle
from .worker import READY, STANDBY_FLAG

__all__ = ["LocalBackend", "end_worker_process", "process_arguments"]

log = logging.getLogger(__name__)
WORKER_MODULE = "medcls.jobs.worker"
STANDBY_LOG = ".standby-worker.log"  # in the store: what a standby process prints before it has a run
STANDBY_RETRY_S = 60.0  # a standby process that ended by itself (a broken install) is not restarted in a loop


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


@dataclass
class _Standby:
    process: subprocess.Popen
    store_root: Path
    env: dict[str, str]  # a run's process must see the environment as it is when the run starts
    ready: bool = False  # it said it has warmed up

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None and not pipe.closed:
                pipe.close()


class LocalBackend:
    """Each run in its own fresh Python process on this machine (``python -m medcls.jobs.worker``).

    A plain subprocess rather than multiprocessing's spawn: spawn would re-import the parent's
    ``__main__`` in the child, which under ``streamlit run`` is the app script itself.
    """

    name = "local"
    schedules_itself = False  # the manager enforces max_concurrent

    def __init__(self, threads: int = 0, nice: int = 10, standby: bool = False):
        self.threads = threads
        self.nice = nice
        self.standby = standby
        self._standby: _Standby | None = None
        self._standby_died_at = -float("inf")  # one that dies while warming up is not restarted at once
        self._lock = threading.RLock()  # the scheduler hands the standby process over while pages ask about it

    def _command(self, store: RunStore, *target: str) -> list[str]:
        return [sys.executable, "-m", WORKER_MODULE, str(store.root.resolve()), *target,
                "--threads", str(self.threads), "--parent-pid", str(os.getpid()), "--nice", str(self.nice)]

    def start(self, store: RunStore, run_id: str) -> tuple[WorkerHandle, int | None]:
        with self._lock:
            process = self._hand_to_standby(store, run_id)
        if process is None:
            env = worker_environment()  # medcls importable from anywhere; OpenMP's waits as a worker's
            # Anything the worker prints outside its log (an import error, a crash) lands next to its run.
            with open(store.path(run_id) / "worker.log", "ab") as output:
                process = subprocess.Popen(self._command(store, run_id), env=env, stdin=subprocess.DEVNULL,
                                           stdout=output, stderr=subprocess.STDOUT, close_fds=True)
        return _LocalHandle(process), process.pid

    # --- the standby process ---------------------------------------------------------------------
    def keep_ready(self, store: RunStore) -> None:
        """Start a standby process for ``store`` unless one is alive (the manager calls this when a slot is free)."""
        with self._lock:
            self._keep_ready(store)

    def _keep_ready(self, store: RunStore) -> None:
        if not self.standby or (self._standby is not None and self._usable(self._standby, store)):
            return
        if self._standby is not None and self._standby.process.poll() is not None:
            log.warning("the standby training process ended by itself (exit code %s; see %s); the next is started "
                        "in %.0f s at the earliest", self._standby.process.returncode, store.root / STANDBY_LOG,
                        STANDBY_RETRY_S)
            self._standby_died_at = time.monotonic()
        self.close()  # a dead one, or one for another store or environment
        if time.monotonic() - self._standby_died_at < STANDBY_RETRY_S:
            return
        env = worker_environment()
        with open(store.root / STANDBY_LOG, "ab") as output:
            process = subprocess.Popen(self._command(store, STANDBY_FLAG), env=env, stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, stderr=output, close_fds=True)
        self._standby = _Standby(process, store.root.resolve(), env)
        log.info("started a standby training process (pid %d)", process.pid)

    def standby_ready(self, timeout: float = 0.0) -> bool:
        """Whether the standby process has warmed up (waiting up to ``timeout`` seconds for it to say so)."""
        with self._lock:
            standby = self._standby
            if standby is None or standby.process.stdout is None:
                return False
            deadline = time.monotonic() + timeout
            while not standby.ready:
                wait = max(0.0, deadline - time.monotonic())
                readable, _, _ = select.select([standby.process.stdout], [], [], wait)
                if not readable:
                    return False
                line = standby.process.stdout.readline()
                if not line:  # it ended
                    return False
                standby.ready = line.strip() == READY.encode()
            return True

    def standby_warming(self) -> bool:
        """Whether a standby process is alive and still warming up."""
        standby = self._standby
        return standby is not None and not standby.ready and standby.process.poll() is None

    @property
    def standby_pid(self) -> int | None:
        """The standby process's pid (the next run's, if it is still alive then)."""
        standby = self._standby
        return standby.process.pid if standby is not None else None

    def close(self) -> None:
        """End the standby process (it holds no run)."""
        with self._lock:
            standby, self._standby = self._standby, None
            if standby is not None:
                standby.end()

    def _usable(self, standby: _Standby, store: RunStore) -> bool:
        return (standby.process.poll() is None and standby.store_root == store.root.resolve()
                and standby.env == worker_environment())

    def _hand_to_standby(self, store: RunStore, run_id: str) -> subprocess.Popen | None:
        """The standby process, now training ``run_id``; None when there is none fit to take it."""
        standby, self._standby = self._standby, None
        if standby is None:
            return None
        if not self._usable(standby, store):
            standby.end()
            return None
        # The run records its process before the process hears of it: its first check that it still owns the
        # run (before any write) must not race the manager's own record of the pid.
        store.set_status(run_id, "running", pid=standby.process.pid, backend=self.name)
        try:
            standby.process.stdin.write(f"{run_id}\n".encode())
            standby.process.stdin.close()
        except OSError:  # it died since the check (a broken pipe)
            standby.end()
            return None
        log.info("run %s handed to the standby training process (pid %d)", run_id, standby.process.pid)
        return standby.process


def process_arguments(pid: int) -> list[str] | None:
    """The command line of process ``pid`` on this machine; None when it cannot be read (gone, or no /proc)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [a.decode("utf-8", "replace") for a in handle.read().split(b"\0")]
    except OSError:
        return None


def end_worker_process(store: RunStore, run_id: str, status: RunStatus) -> bool:
    """Kill the worker process of a run that another manager started (it hung, or ignored a stop).

    Only a process on this machine whose command line is this store's worker (for this run, or a standby) is
    killed, so a recycled pid never takes an unrelated process with it. A stopped (SIGSTOP) process dies too."""
    pid = status.pid
    if not pid or status.host != socket.gethostname():
        return False
    args = process_arguments(pid)
    # A standby process's command line names no run (it was handed one later); the run's status names its pid,
    # and at worst a recycled pid is another idle standby process of this store, which holds nothing.
    if args is None or WORKER_MODULE not in args or (run_id not in args and STANDBY_FLAG not in args):
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
