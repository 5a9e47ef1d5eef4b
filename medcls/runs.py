"""The run store: one folder per run, the single source of truth for the CLI, the app and workers.

Layout of ``<root>/<run_id>/``::

    config.json         TrainConfig
    status.json         state, timestamps, error, worker pid/host
    heartbeat           touched every few seconds by a live worker
    progress.json       the latest batch-level progress (throttled)
    history.jsonl       one line per finished epoch (appended)
    best.pt             best weights (state dict, loaded with weights_only=True)
    model.json          what is needed to rebuild the model: name, options, classes, size, channels
    metrics.json        test metrics of the best checkpoint
    predictions.csv     val + test predictions: split, path, true, pred, prob per class
    split.csv           the exact split used: path, label, split
    data_report.json    skipped files and notes
    env.json            library versions, machine
    stop                present when a stop was requested
    sweep.json          only in runs queued by a sweep: the sweep id and this run's values (medcls.sweeps)

``<root>/sweeps/<sweep_id>.json`` describes each sweep; it is not a run folder.

Every file except the append-only history is written atomically. Run ids are
validated so no id can reach outside the store.
"""

from __future__ import annotations

import csv
import io
import os
import re
import secrets
import shutil
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .atomic import append_jsonl, atomic_write_json, atomic_write_text, atomic_write_with, read_json, read_jsonl
from .config import TrainConfig
from .settings import runs_dir

__all__ = ["RunStore", "RunInfo", "RunNotFoundError", "InvalidRunIdError", "CheckpointError", "STATES",
           "ACTIVE_STATES", "HEARTBEAT_STALE_S"]

STATES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
ACTIVE_STATES = ("queued", "running")
HEARTBEAT_STALE_S = 45.0  # a running run whose worker has not beaten for this long is interrupted
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")


class InvalidRunIdError(ValueError):
    pass


class RunNotFoundError(FileNotFoundError):
    pass


class CheckpointError(ValueError):
    """A run's checkpoint cannot be loaded safely (damaged, not plain weights, or a link out of the store)."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class RunInfo:
    run_id: str
    state: str
    created: str
    model: str
    source: str
    epochs_done: int
    epochs: int
    error: str
    best_score: float | None
    test_macro_f1: float | None


class RunStore:
    def __init__(self, root: Path | str | None = None):
        self.root = Path(root) if root is not None else runs_dir()
        self.root.mkdir(parents=True, exist_ok=True)

    # --- ids and paths --------------------------------------------------------
    def path(self, run_id: str, must_exist: bool = True) -> Path:
        """The run's folder; refuses ids that could escape the store."""
        if not isinstance(run_id, str) or not _RUN_ID.match(run_id) or ".." in run_id:
            raise InvalidRunIdError(f"Invalid run id {run_id!r}: use letters, digits, '-', '_' and '.' only.")
        folder = self.root / run_id
        if folder.resolve().parent != self.root.resolve():
            raise InvalidRunIdError(f"Run id {run_id!r} points outside the run store.")
        if must_exist and not (folder / "config.json").is_file():
            raise RunNotFoundError(f"Run {run_id!r} does not exist (or was deleted) in {self.root}.")
        return folder

    def file(self, run_id: str, name: str) -> Path:
        """A file inside a run folder; ``name`` must be a plain file name."""
        if "/" in name or "\\" in name or name in ("", ".", "..") or name.startswith("."):
            raise InvalidRunIdError(f"Invalid file name {name!r}.")
        return self.path(run_id) / name

    def new_id(self, config: TrainConfig) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        return f"{stamp}-{config.model.name}-{secrets.token_hex(2)}"

    # --- creation and status -----------------------------------------------------
    def create(self, config: TrainConfig, run_id: str | None = None, state: str = "queued") -> str:
        run_id = run_id or self.new_id(config)
        folder = self.path(run_id, must_exist=False)
        folder.mkdir(parents=True, exist_ok=False)
        # status first: a folder with config.json is a run, and must always have a status.
        # created_ns orders runs made within the same second (the queue is first come, first served).
        atomic_write_json(folder / "status.json", {"state": state, "created": _now(), "updated": _now(),
                                                   "created_ns": time.time_ns()})
        atomic_write_text(folder / "config.json", config.to_json())
        return run_id

    def config(self, run_id: str) -> TrainConfig:
        return TrainConfig.load(self.file(run_id, "config.json"))

    def raw_status(self, run_id: str) -> dict[str, Any]:
        return read_json(self.file(run_id, "status.json"), {}) or {"state": "failed", "error": "status missing"}

    def status(self, run_id: str) -> dict[str, Any]:
        """The status with liveness applied: a 'running' run whose worker is gone reads as 'interrupted'."""
        status = self.raw_status(run_id)
        if status.get("state") == "running" and not self.worker_alive(run_id, status):
            status = dict(status, state="interrupted",
                          error=status.get("error") or "The training process stopped unexpectedly (killed, or the "
                                                       "server restarted). Its history and best checkpoint are kept.")
        return status

    def set_status(self, run_id: str, state: str, **fields: Any) -> dict[str, Any]:
        if state not in STATES:
            raise ValueError(f"Unknown run state {state!r}.")
        status = self.raw_status(run_id)
        status.update(fields, state=state, updated=_now())
        if state == "running":
            status.setdefault("started", _now())
            status.update(pid=fields.get("pid", os.getpid()), host=socket.gethostname())
        if state in ("finished", "failed", "cancelled", "interrupted"):
            status["ended"] = _now()
        atomic_write_json(self.file(run_id, "status.json"), status)
        return status

    def beat(self, run_id: str) -> None:
        """Mark the worker alive (an mtime touch, cheap enough to call every few seconds)."""
        path = self.file(run_id, "heartbeat")
        path.touch()
        os.utime(path)

    def worker_alive(self, run_id: str, status: dict[str, Any] | None = None) -> bool:
        status = status or self.raw_status(run_id)
        pid, host = status.get("pid"), status.get("host")
        if pid and host == socket.gethostname():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass  # exists, owned by someone else
            if _is_zombie(int(pid)):
                return False
        try:
            age = time.time() - self.file(run_id, "heartbeat").stat().st_mtime
        except FileNotFoundError:
            started = status.get("started") or status.get("updated") or _now()
            age = time.time() - datetime.fromisoformat(started).timestamp()
        return age < HEARTBEAT_STALE_S

    # --- stop requests ------------------------------------------------------------
    def request_stop(self, run_id: str) -> None:
        atomic_write_text(self.file(run_id, "stop"), _now())

    def stop_requested(self, run_id: str) -> bool:
        return (self.root / run_id / "stop").exists()

    # --- progress and history ---------------------------------------------------
    def write_progress(self, run_id: str, progress: dict[str, Any]) -> None:
        atomic_write_json(self.file(run_id, "progress.json"), progress)

    def progress(self, run_id: str) -> dict[str, Any]:
        return read_json(self.file(run_id, "progress.json"), {}) or {}

    def append_history(self, run_id: str, record: dict[str, Any]) -> None:
        append_jsonl(self.file(run_id, "history.jsonl"), record)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        return read_jsonl(self.file(run_id, "history.jsonl"))

    # --- artefacts ----------------------------------------------------------------
    def write_json(self, run_id: str, name: str, obj: Any) -> None:
        atomic_write_json(self.file(run_id, name), obj)

    def read_json(self, run_id: str, name: str, default: Any = None) -> Any:
        return read_json(self.file(run_id, name), default)

    def save_weights(self, run_id: str, state_dict: dict) -> None:
        import torch  # keep the store importable without torch for light readers

        atomic_write_with(self.file(run_id, "best.pt"), lambda handle: torch.save(state_dict, handle))

    def load_weights(self, run_id: str) -> dict:
        import torch

        path = self.file(run_id, "best.pt")
        if not path.is_file():
            raise RunNotFoundError(f"Run {run_id!r} has no saved weights yet (it has not finished an epoch).")
        if not path.resolve().is_relative_to(self.path(run_id).resolve()):
            raise CheckpointError(f"Run {run_id!r}: best.pt links to a file outside the run store; refused.")
        try:
            # weights_only: a checkpoint can never run code, even if someone swapped the file.
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # damaged, truncated, or a pickle that is more than plain tensors
            detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"Run {run_id!r}: its checkpoint best.pt cannot be loaded safely ({detail}). "
                                  "Train the run again.") from None
        if not isinstance(state, dict):
            raise CheckpointError(f"Run {run_id!r}: best.pt does not hold model weights (a state dict).")
        return state

    def has_weights(self, run_id: str) -> bool:
        return (self.root / run_id / "best.pt").is_file()

    def write_split(self, run_id: str, rows: Iterable[tuple[str, str, str]]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
        atomic_write_text(self.file(run_id, "split.csv"), buf.getvalue())

    def write_predictions(self, run_id: str, split_names: list[str], paths: list[str], y_true: np.ndarray,
                          probs: np.ndarray, classes: list[str]) -> None:
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(["split", "path", "true", "pred"] + [f"p_{c}" for c in classes])
        for split, path, t, p in zip(split_names, paths, y_true, probs):
            writer.writerow([split, path, classes[int(t)], classes[int(np.argmax(p))]] + [f"{v:.6f}" for v in p])
        atomic_write_text(self.file(run_id, "predictions.csv"), buf.getvalue())

    def predictions(self, run_id: str, split: str = "test") -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
        """(paths, true labels as indices, probabilities (N, K), classes) of one split."""
        path = self.file(run_id, "predictions.csv")
        if not path.is_file():
            raise RunNotFoundError(f"Run {run_id!r} has no predictions (it did not finish).")
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader)
            classes = [h[2:] for h in header[4:]]
            rows = [r for r in reader if r and r[0] == split]
        index = {c: i for i, c in enumerate(classes)}
        paths = [r[1] for r in rows]
        y_true = np.array([index[r[2]] for r in rows], dtype=np.int64)
        probs = np.array([[float(v) for v in r[4:]] for r in rows], dtype=np.float64).reshape(len(rows), len(classes))
        return paths, y_true, probs, classes

    # --- listing and deletion -------------------------------------------------------
    def list_ids(self) -> list[str]:
        """All run ids, newest first."""
        # A linked folder is never a run: it would lead outside the store (and path() refuses it).
        ids = [p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink() and _RUN_ID.match(p.name)
               and (p / "config.json").is_file()]
        def order(run_id: str) -> tuple:
            status = self.raw_status(run_id)
            return status.get("created", ""), status.get("created_ns", 0), run_id

        return sorted(ids, key=order, reverse=True)

    def info(self, run_id: str) -> RunInfo:
        status = self.status(run_id)
        cfg = read_json(self.file(run_id, "config.json"), {}) or {}
        history = self.history(run_id)
        best = [h["score"] for h in history if h.get("best")]
        metrics = self.read_json(run_id, "metrics.json", {}) or {}
        return RunInfo(run_id=run_id, state=status.get("state", "?"), created=status.get("created", ""),
                       model=(cfg.get("model") or {}).get("name", "?"),
                       source=(cfg.get("data") or {}).get("source", "") or "built-in synthetic",
                       epochs_done=len(history), epochs=int(cfg.get("epochs", 0) or 0),
                       error=status.get("error", "") or "", best_score=best[-1] if best else None,
                       test_macro_f1=(metrics.get("test") or {}).get("macro_f1"))

    def list(self) -> list[RunInfo]:
        out = []
        for run_id in self.list_ids():
            try:
                out.append(self.info(run_id))
            except (RunNotFoundError, FileNotFoundError):
                continue  # deleted while listing
        return out

    def delete(self, run_id: str) -> None:
        shutil.rmtree(self.path(run_id))


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().split(b")")[-1].split()[0] == b"Z"
    except (OSError, IndexError):
        return False
