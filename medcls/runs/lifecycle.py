"""The run store's part about a run's life: liveness, stop requests and the resume checkpoint.

:class:`RunLifecycle` is a base of :class:`medcls.runs.store.RunStore` (it reads and writes the run
folder's ``heartbeat``, ``stop`` and ``resume.pt`` files, and nothing else does):

- liveness comes from the training loop only (:meth:`beat`); a run whose loop is silent beyond its
  patience, or whose process is gone, is not alive;
- a stop request is a file, so any process that shares the store can ask;
- the resume checkpoint holds the whole training state after the last finished epoch.
"""

from __future__ import annotations

import math
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from ..atomic import atomic_write_text, atomic_write_with
from .records import RecordError, RunStatus, member_word

__all__ = ["RunLifecycle", "this_process", "utc_now", "FROM_THE_START", "HEARTBEAT_STALE_S", "STARTUP_GRACE_S",
           "CheckpointError", "InvalidRunIdError", "RunNotFoundError"]

HEARTBEAT_STALE_S = 45.0  # a running run whose training loop has not beaten for this long is interrupted
STARTUP_GRACE_S = 120.0   # before its first beat: a new process imports torch, on a busy machine slowly


class InvalidRunIdError(ValueError):
    pass


class RunNotFoundError(FileNotFoundError):
    pass


class CheckpointError(ValueError):
    """A run's checkpoint cannot be loaded safely (damaged, not plain weights, or a link out of the store)."""


def utc_now() -> str:
    """Now, as the ISO text the run records hold (UTC, whole seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _timestamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text).timestamp()
    except (TypeError, ValueError):
        return None


def this_process() -> dict[str, int | str]:
    """The status fields that name this process as a run's worker, or as the holder of a queued run."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


# Where a run without a resume checkpoint continues (RunLifecycle.resume_point): it trains again from the start.
FROM_THE_START = "the first epoch"


class RunLifecycle:
    """Liveness, stop and resume; the store provides ``path``, ``file``, ``raw_status``, ``status``,
    ``history``, ``config``, ``trained_config``, ``model_record`` and ``list_ids``."""

    root: Path

    def owns(self, run_id: str, pid: int) -> bool:
        """True while the run is running in process ``pid`` (a worker that lost its run must stop writing)."""
        status = self.raw_status(run_id)
        return status.state == "running" and status.pid == pid

    # --- liveness: only the training loop beats -----------------------------------------
    def beat(self, run_id: str) -> None:
        """Mark the training loop alive (an mtime touch, cheap enough to call every batch).

        Only the process that trains calls this: a job manager never beats on a worker's behalf, so a
        hung or frozen worker stops beating and is noticed."""
        path = self.file(run_id, "heartbeat")
        path.touch()
        os.utime(path)

    def clear_heartbeat(self, run_id: str) -> None:
        """Forget the last beat (a run about to start: its patience counts from the start, not an old beat)."""
        try:
            self.file(run_id, "heartbeat").unlink()
        except FileNotFoundError:
            pass

    def heartbeat_age(self, run_id: str, status: RunStatus | None = None) -> float:
        """Seconds since the run's training loop last beat (since it started, before its first beat)."""
        try:
            return time.time() - self.file(run_id, "heartbeat").stat().st_mtime
        except FileNotFoundError:
            status = status or self.raw_status(run_id)
            started = _timestamp(status.started or status.updated)
            return math.inf if started is None else time.time() - started

    def heartbeat_patience(self, run_id: str) -> float:
        """How long the loop may stay silent: longer before its first beat (a process still starting) and while
        it prepares (one step there, such as measuring the number formats of a large model, can take a while)."""
        try:
            self.file(run_id, "heartbeat").stat()
        except FileNotFoundError:
            return STARTUP_GRACE_S
        if self.progress(run_id).phase == "preparing":
            return STARTUP_GRACE_S
        return HEARTBEAT_STALE_S

    def silent(self, run_id: str, status: RunStatus | None = None) -> float | None:
        """Seconds the running run's loop has been silent beyond its patience; None while it beats in time."""
        age = self.heartbeat_age(run_id, status)
        return age if age >= self.heartbeat_patience(run_id) else None

    def process_gone(self, status: RunStatus) -> bool:
        """True when the status names a process on this machine that no longer runs (or is a zombie)."""
        if not status.pid or status.host != socket.gethostname():
            return False
        try:
            os.kill(status.pid, 0)
        except ProcessLookupError:
            return True
        except (PermissionError, OverflowError):
            return False  # exists, owned by someone else (or a pid no process can have)
        return _is_zombie(status.pid)

    def held(self, status: RunStatus) -> bool:
        """True for a queued run that a live process on this machine holds to train itself (a command-line
        ``train``, ``lesson run`` or ``resume``): no job manager starts it. The run of a holder that is gone is
        an ordinary queued run again. (A holder on another machine cannot be checked: it holds its run.)"""
        return status.state == "queued" and bool(status.pid) and not self.process_gone(status)

    def worker_alive(self, run_id: str, status: RunStatus | None = None) -> bool:
        status = status or self.raw_status(run_id)
        if self.process_gone(status):
            return False
        return self.silent(run_id, status) is None

    # --- stop requests ------------------------------------------------------------
    def request_stop(self, run_id: str) -> None:
        """Ask the run to stop; any process sharing the store may ask, and any job manager enforces it."""
        atomic_write_text(self.file(run_id, "stop"), utc_now())

    def stop_requested(self, run_id: str) -> bool:
        return (self.path(run_id, must_exist=False) / "stop").exists()

    def stop_age(self, run_id: str) -> float | None:
        """Seconds since a stop was requested; None when none was."""
        try:
            return time.time() - (self.path(run_id, must_exist=False) / "stop").stat().st_mtime
        except FileNotFoundError:
            return None

    def clear_stop(self, run_id: str) -> None:
        try:
            self.file(run_id, "stop").unlink()
        except FileNotFoundError:
            pass

    # --- resuming -----------------------------------------------------------------------
    def save_resume(self, run_id: str, state: dict) -> None:
        """The fit's state after its last finished epoch (model, optimizer, schedule, averages, sampler,
        random streams and history): enough to continue after the process is killed."""
        import torch

        atomic_write_with(self.file(run_id, "resume.pt"), lambda handle: torch.save(state, handle))

    def has_resume(self, run_id: str) -> bool:
        try:
            return self.file(run_id, "resume.pt").is_file()
        except RunNotFoundError:
            return False

    def load_resume(self, run_id: str, mmap: bool = False) -> dict | None:
        """The resume state, None when there is none; CheckpointError when it cannot be loaded safely. ``mmap``:
        its tensors are mapped from the file, not read (to look at its plain values)."""
        import torch

        path = self.file(run_id, "resume.pt")
        if not path.is_file():
            return None
        if not path.resolve().is_relative_to(self.path(run_id).resolve()):
            raise CheckpointError(f"Run {run_id!r}: resume.pt links to a file outside the run store; refused.")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except Exception as exc:
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"Run {run_id!r}: its resume checkpoint cannot be loaded safely ({detail}).") \
                from None
        # One model's training state after an epoch, or an ensemble's finished models (training.members).
        if not isinstance(state, dict) or not (isinstance(state.get("epoch"), int)
                                               or isinstance(state.get("members"), list)):
            raise CheckpointError(f"Run {run_id!r}: resume.pt does not hold a training state.")
        return state

    def delete_resume(self, run_id: str) -> None:
        try:
            self.file(run_id, "resume.pt").unlink()
        except (FileNotFoundError, RunNotFoundError):
            pass

    def resume_point(self, run_id: str) -> str:
        """Where an interrupted run continues, in words: 'epoch 4', 'bagged model 2 of 3', 'epoch 5 of fold 3 of 5',
        'the test of its 3 fold models' (each model had finished), or 'the first epoch' (no resume checkpoint)."""
        if not self.has_resume(run_id):
            return FROM_THE_START
        cfg = self.trained_config(run_id)
        if members := cfg.folds or cfg.bagged_models:  # an ensemble's resume checkpoint follows its finished models
            record = self.model_record(run_id)
            kept = record.folds if record is not None else 0
            bagged = bool(cfg.bagged_models)
            if kept >= members:
                return f"the test of its {members} {member_word(bagged, plural=True)}"
            model = f"{member_word(bagged)} {kept + 1} of {members}"
            try:  # the model it was training continues after its last saved epoch (training.members)
                current = (self.load_resume(run_id, mmap=True) or {}).get("current")
            except CheckpointError:
                current = None
            return f"epoch {current['epoch'] + 1} of {model}" if current else model
        return f"epoch {len(self.history(run_id)) + 1}"

    def resumable(self, run_id: str, status: RunStatus | None = None) -> bool:
        """An interrupted run can continue: from its resume checkpoint, or (without one: it stopped before its
        first checkpoint, or an older medcls made it) from its first epoch again."""
        status = status or self.status(run_id)
        return status.state == "interrupted" and not status.damaged

    def sources_in_use(self) -> set[str]:
        """The data sources of runs that still need their data: queued, running, or interrupted and resumable."""
        used = set()
        for run_id in self.list_ids():
            try:
                status = self.raw_status(run_id)
                if status.active or (status.state == "interrupted" and self.has_resume(run_id)):
                    used.add(self.config(run_id).data.source)
            except (RunNotFoundError, FileNotFoundError, RecordError):
                continue
        return used



def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().split(b")")[-1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False
