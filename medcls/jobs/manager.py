"""Background execution of runs: a queue, at most N concurrent workers, stop, resume, liveness.

The run store on disk is the single source of truth; this manager only starts
worker processes, asks them to stop and ends those that stopped responding. It is
therefore safe to lose (an app restart): on start it marks runs whose worker is
gone as interrupted, resumes the runs its predecessor left behind from their last
epoch, and picks up queued runs again. Scheduling happens under a file lock in the
store, so two managers (two app servers on one store, or two clicks at the same
instant) never start more runs than allowed.

Liveness comes from the run's own training loop only (its heartbeat, see
:meth:`medcls.runs.store.RunStore.beat`): the manager never beats for a worker. Every
manager watches every running run of the store, not only the ones it started: a
run whose loop has been silent too long, or that ignored a stop request for
``STOP_GRACE_S``, is ended (its process killed when it is on this machine) and
marked with why. A stop is a file in the run folder, so a stop asked in any
process that shares the store is honoured.

Queued runs start round-robin across the people who queued them (:func:`medcls.runs.permissions.fair_order`), one
person may have at most ``MEDCLS_QUEUE_LIMIT`` runs waiting, and stop, rename and delete check who asks
(:func:`medcls.runs.permissions.require_manage`; the default, :data:`medcls.runs.permissions.OPERATOR`, is the command line).

Backends: ``local`` (one worker process per run, the default) and ``ray``
(see :mod:`medcls.jobs.ray_backend`), chosen by name.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, Protocol, Sequence

from ..atomic import exclusive_lock
from ..config import TrainConfig
from ..runs.lifecycle import this_process
from ..runs.permissions import OPERATOR, Identity, QueuedRun, check_queue_room, fair_order, require_manage
from ..runs.records import GroupMembership, Progress, RecordError, RunMeta, RunStatus
from ..runs.store import RunNotFoundError, RunStore
from ..settings import backend_name, max_concurrent, standby_worker, worker_threads

__all__ = ["Backend", "JobManager", "WorkerHandle", "scheduler_lock", "requeue", "claim", "cancel_queued",
           "ResumeError", "STOP_GRACE_S", "MAX_AUTO_RESUMES", "RunActiveError"]

log = logging.getLogger(__name__)
WARM_POLL_S = 0.25     # how long await_warm_worker holds the backend's lock at a time
STOP_GRACE_S = 30.0    # after a stop request, a worker that has not ended by then is killed
MAX_AUTO_RESUMES = 3   # a run interrupted by server restarts resumes by itself this often, then waits for a click
STOPPED_BY_FORCE = "Stopped on request (the worker did not stop by itself within {grace:.0f} s and was ended)."
SILENT = ("The training process stopped responding: its training loop has not reported for {age:.0f} s (hung, "
          "frozen or starved of CPU). It was ended; its history and checkpoint are kept. Resume it from its "
          "last finished epoch, or start it again.")


class ResumeError(ValueError):
    """The run cannot be resumed; the message says why."""


class RunActiveError(ValueError):
    """The run is training, so this cannot be done to it now; the message says what to do first."""


class WorkerHandle(Protocol):
    def is_alive(self) -> bool: ...
    def kill(self) -> None: ...
    def exit_description(self) -> str: ...


class Backend(Protocol):
    """Starts one run's worker. ``schedules_itself``: the backend queues runs itself (a cluster scheduler); the
    worker marks its run running when it starts. Such a backend may also have ``capacity() -> int``, the runs
    it can train at once: the manager then hands it only that many, and the rest wait in the manager's fair
    (round-robin) queue; without it, the manager hands it every queued run at once."""

    name: str
    schedules_itself: bool

    def start(self, store: RunStore, run_id: str) -> tuple[WorkerHandle, int | None]: ...


class JobManager:
    def __init__(self, store: RunStore, max_concurrent: int = 1, backend: Backend | None = None,
                 poll_s: float = 0.5, start: bool = True):
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1.")
        self.store = store
        self.max_concurrent = max_concurrent
        if backend is None:
            from .local import LocalBackend

            backend = LocalBackend()
        self.backend = backend
        self.poll_s = poll_s
        self._handles: dict[str, WorkerHandle] = {}
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self.reconcile()
        if start:
            self._thread = threading.Thread(target=self._loop, name="medcls-scheduler", daemon=True)
            self._thread.start()

    @classmethod
    def from_settings(cls, store: RunStore) -> "JobManager":
        """The manager the app uses, as the environment configures it (MEDCLS_BACKEND, MEDCLS_MAX_CONCURRENT,
        MEDCLS_WORKER_THREADS, MEDCLS_RAY_*; see medcls.settings and docs/scaling.md)."""
        if backend_name() == "ray":  # runs go to a Ray cluster
            try:
                from .ray_backend import RayBackend
            except ImportError as exc:
                raise RuntimeError(f"MEDCLS_BACKEND=ray needs Ray ({exc}): install it with "
                                   "`pip install -r requirements-ray.txt`, or unset MEDCLS_BACKEND.") from exc
            return cls(store, backend=RayBackend.from_settings())
        from .local import LocalBackend

        return cls(store, max_concurrent=max_concurrent(),
                   backend=LocalBackend(threads=worker_threads(), standby=standby_worker()))

    # --- public API -------------------------------------------------------------
    def submit(self, config: TrainConfig, *, meta: RunMeta | None = None,
               group: GroupMembership | None = None, notes: Sequence[str] = (),
               name_from: TrainConfig | None = None) -> str:
        """Queue a run (with its name and owner, its place in a sweep or lesson, and notes on what was adjusted
        for it); returns its id. Without a name it is named after ``name_from``'s settings when given (the
        settings as the run will choose them for its data), else ``config``'s.

        It starts when a slot is free and its owner's turn comes (round-robin across people). Raises
        :class:`medcls.runs.permissions.QueueLimitError` when its owner already has ``MEDCLS_QUEUE_LIMIT`` runs waiting.
        """
        meta = meta or RunMeta()
        with self._lock, self._file_lock():
            self.check_queue_room(Identity(meta.owner))
            run_id = self.store.create(config, meta=meta, notes=notes, name_from=name_from)
        if group is not None:
            self.store.write_group(run_id, group)
        self._wake.set()
        return run_id

    def check_queue_room(self, identity: Identity, adding: int = 1) -> None:
        """Raise :class:`medcls.runs.permissions.QueueLimitError` unless ``identity`` may queue ``adding`` more runs (a sweep
        asks for all of its runs before it queues the first)."""
        check_queue_room(identity, [owner for _, owner in self._queued_with_owners()], adding)

    def stop(self, run_id: str, by: Identity = OPERATOR) -> None:
        """Cancel a queued run, or ask a running one to stop after its current batch.

        Only its owner or an instructor may (:class:`medcls.runs.permissions.PermissionDenied` says why). The request is
        a file in the run folder: the worker honours it whichever process asked, and every manager sharing the
        store ends a worker that ignores it for ``STOP_GRACE_S``."""
        self._require(run_id, by, "stop")
        with self._lock, self._file_lock():
            if cancel_queued(self.store, run_id):
                handle = self._handles.get(run_id)  # already handed to a self-scheduling backend
                if handle is not None:
                    handle.kill()
                return
            if self.store.raw_status(run_id).state == "running":
                self.store.request_stop(run_id)
        self._wake.set()

    def rename(self, run_id: str, name: str, by: Identity = OPERATOR) -> str:
        """Give a run a new readable name (its id stays its key); returns the name as stored."""
        self._require(run_id, by, "rename")
        return self.store.rename(run_id, name)

    def delete(self, run_id: str, by: Identity = OPERATOR) -> None:
        """Delete a run's folder. A queued run is cancelled first; a training run is refused (stop it first, so
        its worker does not write into a folder that is gone)."""
        self._require(run_id, by, "delete")
        with self._lock, self._file_lock():
            state = self.store.raw_status(run_id).state
            if state == "running":
                raise RunActiveError("This run is training: stop it first (⏹ Stop this run), then delete it once "
                                     "it has stopped.")
            handle = self._handles.pop(run_id, None)  # queued in a self-scheduling backend: take it back
            if handle is not None and handle.is_alive():
                handle.kill()
            self.store.delete(run_id)
        log.info("run %s deleted by %s", run_id, by.words())

    def _require(self, run_id: str, by: Identity, action: str) -> None:
        meta = self.store.meta(run_id)
        require_manage(by, meta.owner, meta.owner_name, action)

    def resume(self, run_id: str, *, automatic: bool = False, by: Identity = OPERATOR) -> None:
        """Queue an interrupted run again; its worker continues from the last finished epoch. On request, only
        its owner or an instructor may (a resumed run takes a training slot in the owner's name)."""
        if not automatic:
            self._require(run_id, by, "resume")
        with self._lock, self._file_lock():
            self._requeue(run_id, automatic)
        self._wake.set()

    def _requeue(self, run_id: str, automatic: bool) -> None:
        requeue(self.store, run_id)
        log.info("run %s queued again to resume (%s)", run_id, "automatically" if automatic else "on request")

    def queue_position(self, run_id: str) -> int | None:
        """1 for the next run to start; None when the run is not queued."""
        queued = self._queued()
        return queued.index(run_id) + 1 if run_id in queued else None

    def worker_ready(self, timeout: float = 0.0) -> bool:
        """Whether the next run to start goes to a training process that has already warmed up (the local
        backend's standby process; see :mod:`medcls.jobs.local`), waiting up to ``timeout`` seconds for it."""
        ready = getattr(self.backend, "standby_ready", None)
        return bool(ready is not None and ready(timeout))

    def await_warm_worker(self, timeout: float, should_stop: Callable[[], bool] = lambda: False) -> bool:
        """Wait until a training process that is warming up is ready (True), at most ``timeout`` seconds or until
        ``should_stop()``; at once False when none is warming up (a run holds the slot, or there is no standby).

        A timing probe waits for this: a process warming up keeps a core busy for a few seconds, so a probe beside
        it would choose one thread and time every step at one thread, while the run gets both cores. Waits in
        short steps, so the scheduler can still hand the process a run meanwhile."""
        warming = getattr(self.backend, "standby_warming", None)
        deadline = time.monotonic() + timeout
        while True:
            if self.worker_ready(WARM_POLL_S):
                return True
            if warming is None or not warming() or should_stop() or time.monotonic() >= deadline:
                return False

    def running(self) -> list[str]:
        return [r for r in self.store.list_ids() if self.store.status(r).state == "running"]

    def tick(self) -> None:
        """One scheduling step (the background thread calls this every poll interval)."""
        with self._lock, self._file_lock():
            self._reap()
            self._watch()
            self._auto_resume()
            free = 0
            if self.backend.schedules_itself:  # the backend queues them: hand over runs not yet handed
                pending = [r for r in self._queued() if r not in self._handles]
                capacity = getattr(self.backend, "capacity", None)
                if capacity is not None:  # only what it can start now, so later runs keep their fair turn here
                    pending = pending[:max(0, capacity() - len(self._handles))]
            else:
                free = self.max_concurrent - len(self.running())
                pending = self._queued()[:max(0, free)]
            for run_id in pending:
                self._start(run_id)
            keep_ready = getattr(self.backend, "keep_ready", None)  # a process warmed up for the next run
            if keep_ready is not None and free > len(pending):
                keep_ready(self.store)  # only with a free slot: its warm-up must not slow a training run

    def reconcile(self) -> None:
        """Persist 'interrupted' for runs whose worker is gone (after a crash or restart).

        Server and worker died together (a machine restart, a killed app): such a run is resumed by itself
        (at the next scheduling step), as a run whose server stopped."""
        with self._lock, self._file_lock():
            for run_id in self.store.list_ids():
                try:
                    raw = self.store.raw_status(run_id)
                    if raw.state == "running" and run_id not in self._handles \
                            and not self.store.worker_alive(run_id, raw):
                        self._end(run_id, raw, "interrupted", self.store.status(run_id).error, auto_resume=True)
                except (RunNotFoundError, FileNotFoundError):
                    continue

    def shutdown(self, kill: bool = True) -> None:
        """Stop scheduling; with ``kill`` also end running workers (their runs become interrupted)."""
        self._closed.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)
        with self._lock, self._file_lock():
            for run_id, handle in list(self._handles.items()):
                if kill and handle.is_alive():
                    handle.kill()
                    self._mark_if_running(run_id, "interrupted", "The app shut down while this run was training; "
                                          "it continues from its last finished epoch when the app starts again.",
                                          auto_resume=True)
                elif self._state(run_id) == "queued" and handle.is_alive():
                    handle.kill()  # waiting in a cluster's queue: the next manager submits it again
            self._handles.clear()
            close = getattr(self.backend, "close", None)  # a standby process holds no run: always ended
            if close is not None:
                close()

    # --- internals -------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                self.tick()
            except Exception:  # the scheduler must survive odd states on disk
                log.exception("scheduler tick failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _queued_with_owners(self) -> list[tuple[str, str]]:
        """(run id, owner) of every queued run, in the order they will start."""
        queued, running_owners, owners, last_started = [], [], {}, {}
        for run_id in self.store.list_ids():
            try:
                status = self.store.raw_status(run_id)
                owner = self.store.meta(run_id).owner
            except (RunNotFoundError, FileNotFoundError):
                continue  # deleted meanwhile
            if status.started:  # who was served when: the person served longest ago goes first
                last_started[owner] = max(last_started.get(owner, ""), status.started)
            if status.state == "running":
                running_owners.append(owner)
            elif status.state == "queued" and not self.store.held(status):  # a held run waits for its holder
                owners[run_id] = owner
                queued.append(QueuedRun(run_id, owner, (status.created, status.created_ns, run_id)))
        return [(run_id, owners[run_id]) for run_id in fair_order(queued, running_owners, last_started)]

    def _queued(self) -> list[str]:
        """Queued runs in the order they start: round-robin across their owners (see medcls.runs.permissions)."""
        return [run_id for run_id, _ in self._queued_with_owners()]

    def _start(self, run_id: str) -> None:
        if self.backend.schedules_itself:
            # It stays queued (now in the backend's queue); its worker marks it running when it starts.
            self.store.set_status(run_id, "queued", backend=self.backend.name)
        else:
            # Mark it running *before* the worker exists, so no other tick or manager starts it twice. No beat:
            # only the training loop beats; until its first beat the run has STARTUP_GRACE_S to start.
            self.store.clear_heartbeat(run_id)
            self.store.set_status(run_id, "running", pid=None, backend=self.backend.name)
            self.store.write_progress(run_id, Progress(message="Starting a training process"))
        try:
            handle, pid = self.backend.start(self.store, run_id)
        except Exception as exc:
            self.store.set_status(run_id, "failed", error=f"Could not start the training process: {exc}")
            return
        self._handles[run_id] = handle
        if pid is not None:
            self.store.set_status(run_id, "running", pid=pid, backend=self.backend.name)
        log.info("started run %s (pid %s)", run_id, pid)

    def _reap(self) -> None:
        """Forget workers that ended; a run they left 'running' is interrupted, with the worker's exit."""
        for run_id, handle in list(self._handles.items()):
            if handle.is_alive():
                continue
            self._handles.pop(run_id)
            if self._state(run_id) == "queued":  # a self-scheduling backend lost it before it started
                self.store.set_status(run_id, "failed", error=f"The run never started: {handle.exit_description()}")
            else:
                self._mark_if_running(run_id, "interrupted", handle.exit_description())

    def _watch(self) -> None:
        """End running runs (of any manager) that ignore a stop request or whose training loop went silent."""
        for run_id in self.store.list_ids():
            try:
                status = self.store.raw_status(run_id)
                if status.state != "running":
                    continue
                stop_age = self.store.stop_age(run_id)
                if stop_age is not None and stop_age > STOP_GRACE_S:
                    self._end(run_id, status, "cancelled", STOPPED_BY_FORCE.format(grace=STOP_GRACE_S))
                    continue
                silent = self.store.silent(run_id, status)
                if silent is not None:
                    self._end(run_id, status, "interrupted", SILENT.format(age=silent))
            except (RunNotFoundError, FileNotFoundError):
                continue  # deleted meanwhile

    def _end(self, run_id: str, status: RunStatus, state: str, error: str, *, auto_resume: bool = False) -> None:
        """End a run's worker (ours through its handle; another manager's by its pid on this machine)."""
        handle = self._handles.get(run_id)
        if handle is not None:
            if handle.is_alive():
                handle.kill()
        elif status.pid:
            from .local import end_worker_process

            end_worker_process(self.store, run_id, status)
        self._mark_if_running(run_id, state, error, auto_resume=auto_resume)
        log.warning("run %s ended as %s: %s", run_id, state, error)

    def _auto_resume(self) -> None:
        """Queue again the runs that were interrupted because their server stopped (a few times at most)."""
        for run_id in self.store.list_ids():
            try:
                status = self.store.raw_status(run_id)
                if status.state == "interrupted" and status.auto_resume:
                    if status.resumes < MAX_AUTO_RESUMES and self.store.resumable(run_id, status):
                        self._requeue(run_id, automatic=True)
                    else:  # resumed often enough: from now on it waits for a person
                        self.store.set_status(run_id, "interrupted", auto_resume=False)
            except (RunNotFoundError, FileNotFoundError, ResumeError, RecordError):
                continue

    def _state(self, run_id: str) -> str | None:
        try:
            return self.store.raw_status(run_id).state
        except (RunNotFoundError, FileNotFoundError):
            return None

    def _mark_if_running(self, run_id: str, state: str, error: str, *, auto_resume: bool = False) -> None:
        try:
            if self.store.raw_status(run_id).state == "running":
                self.store.set_status(run_id, state, error=error, auto_resume=auto_resume)
        except (RunNotFoundError, FileNotFoundError):
            pass  # the run folder was deleted

    def _file_lock(self):
        return scheduler_lock(self.store)


def requeue(store: RunStore, run_id: str, held: bool = False) -> None:
    """Make an interrupted run queued again, to continue from its resume checkpoint (call under the lock);
    ``held``: this process trains it itself (:meth:`RunStore.held`), no job manager does."""
    status = store.status(run_id)
    if status.state != "interrupted":
        raise ResumeError(f"Run {run_id} is {status.state}; only an interrupted run can be resumed.")
    if not store.resumable(run_id, status):
        raise ResumeError(f"Run {run_id}'s files are damaged ({status.damaged}); start a new run with the same "
                          "settings instead.")
    store.clear_stop(run_id)
    store.clear_heartbeat(run_id)
    holder = this_process() if held else {"pid": None}
    store.set_status(run_id, "queued", started="", ended="", error="", auto_resume=False,
                     resumes=status.resumes + 1, **holder)


def cancel_queued(store: RunStore, run_id: str, error: str = "Cancelled before it started.") -> bool:
    """Cancel the run if it is still queued (call under the lock); False when it is not, or is gone."""
    try:
        if store.raw_status(run_id).state != "queued":
            return False
    except (RunNotFoundError, FileNotFoundError):
        return False
    store.set_status(run_id, "cancelled", error=error)
    return True


def claim(store: RunStore, run_id: str) -> str:
    """Mark a queued run as training in this process, which trains it now (a command-line run). Returns "" when
    it may start, else why not: cancelled or deleted meanwhile, or taken by another process."""
    with scheduler_lock(store):
        try:
            status = store.raw_status(run_id)
        except (RunNotFoundError, FileNotFoundError):
            return "it was deleted before it started"
        if status.state != "queued":
            return f"it is {status.state}" + (f" ({status.error})" if status.error else "")
        if status.pid not in (None, os.getpid()) and store.held(status):
            return f"process {status.pid} holds it to train it"
        store.clear_heartbeat(run_id)
        store.set_status(run_id, "running")  # set_status names this process (runs.lifecycle.this_process)
    return ""


@contextmanager
def scheduler_lock(store: RunStore) -> Iterator[None]:
    """The store-wide lock under which runs change between queued, running and cancelled."""
    with exclusive_lock(store.root / ".scheduler.lock"):
        yield
