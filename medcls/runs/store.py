"""The run store: one folder per run, the single source of truth for the CLI, the app and workers.

Layout of ``<root>/<run_id>/`` (each file's record type in :mod:`medcls.runs.records`)::

    config.json         TrainConfig, as asked (Image size 0 and the automatic ensemble left to the data)
    plan.json           what the run chose for its data when it started: image size, folds, bagged models
    status.json         RunStatus: state, timestamps, error, worker pid/host, notes
    meta.json           RunMeta: the run's readable name and who started it
    heartbeat           touched by the training loop (only by it) while it runs (see lifecycle.py)
    resume.pt           the fit's state after its last finished epoch, to continue after an interruption
    progress.json       Progress: the latest batch-level progress (throttled)
    history.jsonl       EpochRecord, one line per finished epoch (appended)
    best.pt             best weights (state dict, loaded with weights_only=True)
    model.json          ModelRecord: classes, input size, channels, colour
    data.json           DataRecord: the data's root, fingerprint, classes and counts
    metrics.json        RunMetrics of the tested checkpoint
    cv.json             CrossValidation: each fold's score (cross-validation runs only)
    predictions.csv     val + test predictions: split, path, true, pred, prob per class
    split.csv           the exact split used: path, label, split
    data_report.json    skipped files and notes
    env.json            library versions, machine
    group.json          GroupMembership: the sweep, lesson or cross-validation the run belongs to
    novelty.npz         FeatureReference: the training images' features, for the "unlike the training data" check
    stop                present when a stop was requested

This module (with :mod:`.lifecycle`, the part of the store about liveness, stop
requests and resuming, and :mod:`.artefacts`, about weights, split and predictions) is the only code that reads
or writes these files. Every file except
the append-only history is written atomically. Run ids are validated so no id can
reach outside the store.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import time
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..atomic import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    exclusive_lock,
    read_json,
    read_jsonl,
)
from ..config import ConfigError, TrainConfig
from ..settings import runs_dir
from .artefacts import RunArtefacts
from .lifecycle import (
    HEARTBEAT_STALE_S,
    STARTUP_GRACE_S,
    CheckpointError,
    InvalidRunIdError,
    RunLifecycle,
    RunNotFoundError,
    _is_zombie,  # noqa: F401  (kept importable from the store)
    this_process,
    utc_now,
)
from .naming import claim_id, clean_run_name, dataset_name, default_run_name, unique_name
from .records import (
    ENDED_STATES,
    STATES,
    DataRecord,
    EpochRecord,
    GroupMembership,
    ModelRecord,
    Progress,
    RecordError,
    RunMeta,
    RunStatus,
    best_record,
    latest_fold,
)
from .reference import FeatureReference
from .results import CrossValidation, RunMetrics
from .summary import RunSummary
from .upgrade import upgraded_data_record

__all__ = ["RunStore", "RunNotFoundError", "InvalidRunIdError", "CheckpointError", "HEARTBEAT_STALE_S",
           "STARTUP_GRACE_S"]
# What a run chooses for its data when it starts, recorded in plan.json (config.json keeps what was asked).
PLAN_OPTIONS = ("image_size", "folds", "bagged_models")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}\Z")
INTERRUPTED = ("The training process stopped unexpectedly (killed, or the server restarted). Its history and best "
               "checkpoint are kept.")


class RunStore(RunLifecycle, RunArtefacts):
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

    def claim_folder(self, run_id: str) -> bool:
        """Create the run's empty folder; False when another run has that id (creating it is what claims it).

        An empty folder is not listed as a run (a run's folder has its config); its claimer fills it."""
        try:
            self.path(run_id, must_exist=False).mkdir(parents=True, exist_ok=False)
            return True
        except FileExistsError:
            return False

    def _read(self, run_id: str, name: str, default: Any = None) -> Any:
        return read_json(self.file(run_id, name), default)

    def _write(self, run_id: str, name: str, obj: Any) -> None:
        atomic_write_json(self.file(run_id, name), obj)

    # --- creation, config and meta -------------------------------------------------
    def create(self, config: TrainConfig, run_id: str | None = None, state: str = "queued",
               meta: RunMeta | None = None, notes: Sequence[str] = (), name_from: TrainConfig | None = None,
               held: bool = False) -> str:
        """A new run folder; without a name the run is named after its settings ("busi · small_cnn · ...",
        with " (2)" added when another run has that name already): ``name_from``'s when given (the settings as
        chosen for the data, e.g. *Image size* 0 as 192 px), else ``config``'s. ``notes`` start its notes (what was
        adjusted for it when it was queued). ``held``: this process trains it itself (:meth:`held`), so a job
        manager sharing the store does not start it too."""
        meta = meta or RunMeta()
        if run_id and not self.claim_folder(run_id):  # the caller's id: taken is an error
            raise FileExistsError(f"A run with id {run_id!r} exists already in {self.root}.")
        run_id = run_id or claim_id(f"{datetime.now():%Y%m%d-%H%M%S}-{config.model}", self.claim_folder)
        folder = self.path(run_id, must_exist=False)
        with self._naming():  # until it is listed with its name, so that runs created at once get different names
            if not meta.name:
                meta = dataclasses.replace(meta, name=self._unique_default_name(name_from or config))
            # status first: a folder with config.json is a run, and must always have a status.
            now = utc_now()
            holder = this_process() if held else {}
            atomic_write_json(folder / "status.json", RunStatus(state, created=now, updated=now,
                                                                created_ns=time.time_ns(), notes=tuple(notes),
                                                                **holder).to_dict())
            atomic_write_json(folder / "meta.json", meta.to_dict())
            atomic_write_text(folder / "config.json", config.to_json())  # now listed, with its name taken
        return run_id

    def config(self, run_id: str) -> TrainConfig:
        try:
            return TrainConfig.load(self.file(run_id, "config.json"))
        except ConfigError as exc:
            raise RecordError(f"Run {run_id!r}: config.json cannot be read ({exc}).") from None

    def write_plan(self, run_id: str, trained: TrainConfig) -> None:
        """Record what the run chose for its data when it starts (*Image size* 0, the automatic ensemble), so that
        every page reads what it trains (:meth:`trained_config`) while config.json keeps what was asked."""
        self._write(run_id, "plan.json", {name: getattr(trained, name) for name in PLAN_OPTIONS})

    def trained_config(self, run_id: str, cfg: TrainConfig | None = None) -> TrainConfig:
        """The run's config (``cfg``, if already read) as it trains: with its image size and its fold or bagged
        models as chosen for the data once it has started (plan.json); as asked before that, and for runs
        recorded before plans were (``comparison.as_trained`` reads those from their model record)."""
        cfg = cfg if cfg is not None else self.config(run_id)
        plan = self._read(run_id, "plan.json", None)
        if not isinstance(plan, dict):
            return cfg
        chosen = {name: plan[name] for name in PLAN_OPTIONS if isinstance(plan.get(name), int)}
        try:
            return cfg.with_options(strict=False, **chosen)
        except ConfigError as exc:
            raise RecordError(f"Run {run_id!r}: plan.json cannot be read ({exc}).") from None

    def meta(self, run_id: str) -> RunMeta:
        return RunMeta.from_dict(self._read(run_id, "meta.json", {}))

    def set_meta(self, run_id: str, meta: RunMeta) -> None:
        self._write(run_id, "meta.json", meta.to_dict())

    def rename(self, run_id: str, name: str) -> str:
        """Give the run a new readable name (written atomically; the id stays the run's key); returns the name
        as stored. An empty name is refused: every run keeps a name people can read."""
        cleaned = clean_run_name(name)
        if not cleaned:
            raise ValueError("A run needs a name: type a few words that tell it apart (e.g. 'lr 1e-3, no "
                             "oversampling').")
        self.set_meta(run_id, dataclasses.replace(self.meta(run_id), name=cleaned))
        return cleaned

    def name_chosen_size(self, run_id: str, queued: TrainConfig, chosen: TrainConfig) -> str:
        """When a run starts and its *Image size* 0 has been chosen for the data, a run still named after its
        settings as queued ("busi · small_cnn · oversample · auto size", maybe with " (2)") is named after the size
        it trains at ("… · 192 px"), so that runs on one list tell their sizes apart. A name someone typed stays.
        Returns the name as stored."""
        with self._naming():
            meta = self.meta(run_id)
            before, after = default_run_name(queued), default_run_name(chosen)
            if before == after or not re.fullmatch(re.escape(before) + r"( \(\d+\))?", meta.name):
                return meta.name
            name = self._unique_default_name(chosen, but=run_id)
            self.set_meta(run_id, dataclasses.replace(meta, name=name))
            return name

    def _naming(self) -> AbstractContextManager[None]:
        """Held while a default name is chosen and written: two processes that name runs at the same moment (two
        runs started together from the command line) would otherwise both take the same free " (4)"."""
        return exclusive_lock(self.root / ".naming.lock")

    def _unique_default_name(self, config: TrainConfig, but: str | None = None) -> str:
        """The name made from ``config``'s settings, with " (2)", " (3)", ... when runs other than ``but`` have it."""
        taken = {self.meta(other).name for other in self.list_ids() if other != but}
        return unique_name(default_run_name(config), taken)

    # --- status -----------------------------------------------------------------
    def raw_status(self, run_id: str) -> RunStatus:
        """The status as written, without liveness (a damaged file reads as a failed, damaged run)."""
        data = self._read(run_id, "status.json", None)
        if data is None:
            return RunStatus.damaged_status("status.json is missing or not valid JSON")
        return RunStatus.from_dict(data)

    def status(self, run_id: str) -> RunStatus:
        """The status with liveness applied: a 'running' run whose worker is gone reads as 'interrupted'."""
        status = self.raw_status(run_id)
        if status.state == "running" and not self.worker_alive(run_id, status):
            return dataclasses.replace(status, state="interrupted", error=status.error or INTERRUPTED)
        return status

    def set_status(self, run_id: str, state: str, **fields: Any) -> RunStatus:
        if state not in STATES:
            raise ValueError(f"Unknown run state {state!r}.")
        current = self.raw_status(run_id)
        status = {**current.to_dict(), **fields, "state": state, "updated": utc_now()}
        if current.damaged:  # rewrite a damaged file with what can be kept
            status["error"] = fields.get("error", "")
        if state == "running":
            status["started"] = status.get("started") or utc_now()
            status.update(this_process())
            if "pid" in fields:  # the worker the job manager started for it (None until it has its pid)
                status["pid"] = fields["pid"]
        if state in ENDED_STATES:
            status["ended"] = utc_now()
        record = RunStatus.from_dict(status)
        self._write(run_id, "status.json", record.to_dict())
        return record

    def add_note(self, run_id: str, note: str) -> None:
        status = self.raw_status(run_id)
        if note not in status.notes:  # a resumed run meets the same adjustments again
            self.set_status(run_id, status.state, notes=[*status.notes, note])

    # --- progress and history ---------------------------------------------------
    def write_progress(self, run_id: str, progress: Progress) -> None:
        self._write(run_id, "progress.json", progress.to_dict())

    def progress(self, run_id: str) -> Progress:
        return Progress.from_dict(self._read(run_id, "progress.json", {}))

    def append_history(self, run_id: str, record: EpochRecord) -> None:
        append_jsonl(self.file(run_id, "history.jsonl"), record.to_dict())

    def write_history(self, run_id: str, records: Iterable[EpochRecord]) -> None:
        """Replace the whole history (a resumed run continues the history of its checkpoint, without gaps)."""
        text = "".join(json.dumps(r.to_dict()) + "\n" for r in records)
        atomic_write_text(self.file(run_id, "history.jsonl"), text)

    def history(self, run_id: str) -> list[EpochRecord]:
        out = []
        for line in read_jsonl(self.file(run_id, "history.jsonl")):
            try:
                out.append(EpochRecord.from_dict(line))
            except RecordError:
                continue  # a damaged line does not hide the others
        return out

    # --- what training records ----------------------------------------------------
    def write_model_record(self, run_id: str, record: ModelRecord) -> None:
        self._write(run_id, "model.json", record.to_dict())

    def model_record(self, run_id: str) -> ModelRecord | None:
        data = self._read(run_id, "model.json", None)
        return None if data is None else ModelRecord.from_dict(data)

    def focus_class(self, run_id: str, model_record: ModelRecord | None = None) -> str:
        """The class whose recall the run tracks: from its model record (``model_record``, if already read), or,
        before a model is saved (all through a cross-validation run's first fold), from its data record."""
        if model_record is not None and model_record.focus_class:
            return model_record.focus_class
        data = self.data_record(run_id)
        return data.focus_class if data else ""

    def write_data_record(self, run_id: str, record: DataRecord) -> None:
        self._write(run_id, "data.json", record.to_dict())

    def data_record(self, run_id: str) -> DataRecord | None:
        data = self._read(run_id, "data.json", None)
        try:
            record = None if data is None else DataRecord.from_dict(data)
        except RecordError:
            return None
        return None if record is None else upgraded_data_record(self, run_id, record)

    def write_data_report(self, run_id: str, report: dict[str, Any]) -> None:
        self._write(run_id, "data_report.json", report)

    def data_report(self, run_id: str):
        """The files the run's data loading skipped, and why (a :class:`medcls.data.spec.DataReport`)."""
        from ..data.spec import DataReport

        data = self._read(run_id, "data_report.json", {})
        try:
            return DataReport.from_dict(data if isinstance(data, dict) else {})
        except (KeyError, TypeError, ValueError):
            return DataReport()

    def write_env(self, run_id: str, env: dict[str, Any]) -> None:
        self._write(run_id, "env.json", env)

    def env(self, run_id: str) -> dict[str, str]:
        """Library versions and the machine, as text."""
        data = self._read(run_id, "env.json", {})
        return {str(k): str(v) for k, v in data.items() if not isinstance(v, (dict, list))} \
            if isinstance(data, dict) else {}

    def write_metrics(self, run_id: str, metrics: RunMetrics) -> None:
        self._write(run_id, "metrics.json", metrics.to_dict())

    def metrics(self, run_id: str) -> RunMetrics | None:
        """The tested checkpoint's metrics; None before the run was tested (or when the file is damaged)."""
        data = self._read(run_id, "metrics.json", None)
        try:
            return None if data is None else RunMetrics.from_dict(data)
        except RecordError:
            return None

    def test_copies(self, run_id: str) -> tuple[str, ...]:
        """The run's test images with a near copy among the images it learned from (none when not tested or not
        checked)."""
        metrics = self.metrics(run_id)
        return (metrics.test_copies or ()) if metrics is not None else ()

    def write_cross_validation(self, run_id: str, cv: CrossValidation) -> None:
        self._write(run_id, "cv.json", cv.to_dict())

    def cross_validation(self, run_id: str) -> CrossValidation | None:
        """Each fold's score, for a cross-validation run (None for an ordinary run)."""
        data = self._read(run_id, "cv.json", None)
        try:
            return None if data is None else CrossValidation.from_dict(data)
        except RecordError:
            return None

    def write_group(self, run_id: str, membership: GroupMembership) -> None:
        self._write(run_id, "group.json", membership.to_dict())

    def group(self, run_id: str) -> GroupMembership | None:
        membership = GroupMembership.from_dict(self._read(run_id, "group.json", None))
        return membership or GroupMembership.from_dict(self._read(run_id, "sweep.json", None), "sweep")

    def write_feature_reference(self, run_id: str, reference: FeatureReference) -> None:
        import numpy as np

        arrays = reference.to_arrays()
        atomic_write_with(self.file(run_id, "novelty.npz"), lambda handle: np.savez(handle, **arrays))

    def feature_reference(self, run_id: str) -> FeatureReference | None:
        """The training images' features of the tested checkpoint; None for runs from before the check (or damaged)."""
        import numpy as np

        path = self.file(run_id, "novelty.npz")
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return FeatureReference.from_arrays({key: data[key] for key in data.files})
        except (OSError, ValueError, RecordError):
            return None

    # --- listing and deletion -------------------------------------------------------
    def list_ids(self) -> list[str]:
        """All run ids, newest first."""
        # A linked folder is never a run: it would lead outside the store (and path() refuses it).
        ids = [p.name for p in self.root.iterdir() if p.is_dir() and not p.is_symlink() and _RUN_ID.match(p.name)
               and (p / "config.json").is_file()]

        def order(run_id: str) -> tuple:
            status = self.raw_status(run_id)
            return status.created, status.created_ns, run_id

        return sorted(ids, key=order, reverse=True)

    def summary(self, run_id: str) -> RunSummary:
        status = self.status(run_id)
        meta = self.meta(run_id)
        history = self.history(run_id)
        metrics = self.metrics(run_id)
        data = self.data_record(run_id)
        model_record = None
        try:
            model_record = self.model_record(run_id)
        except RecordError:
            pass
        damaged = status.damaged
        try:
            cfg: TrainConfig | None = self.trained_config(run_id)
        except RecordError as exc:
            cfg, damaged = None, damaged or str(exc)
        latest, fold = latest_fold(history)  # a cross-validation run: its latest fold's epochs
        best = best_record(history)
        test = metrics.test if metrics else None
        focus = (metrics.focus_class if metrics else "") or (model_record.focus_class if model_record else "") \
            or (data.focus_class if data else "")
        name = meta.name or (default_run_name(cfg, data) if cfg is not None else run_id)
        return RunSummary(
            run_id=run_id, name=name, state=status.state, created=status.created,
            model=cfg.model if cfg else "?", dataset=data.label if data else _dataset_label(cfg),
            data_fingerprint=data.fingerprint if data else "",
            classes=data.classes if data else (model_record.classes if model_record else ()),
            epochs_done=len(latest), epochs=cfg.epochs if cfg else 0, error=status.error,
            best_score=best.score if best and best.validated else None, test_macro_f1=test.macro_f1 if test else None,
            focus_class=focus, focus_recall=test.recall(focus) if test and focus else None,
            has_weights=self.has_weights(run_id), tested=test is not None,
            stopped=bool(metrics and metrics.stopped), owner=meta.owner, owner_name=meta.owner_name,
            damaged=damaged, fold=fold, folds=self.planned_folds(run_id, fold, model_record, cfg),
            bagged=bool(cfg and cfg.bagged_models))

    def planned_folds(self, run_id: str, fold: int, model_record: ModelRecord | None, cfg: TrainConfig | None) -> int:
        """How many folds a cross-validation run set out to train (0 for one model), given its latest fold and
        model record: cv.json once it ended (a stopped run keeps its plan), else its progress while it trains
        (the saved ensemble holds only the folds done), else the saved ensemble's size. Bagged models: as many
        as its config (``cfg``, already read by the caller; None when unreadable) asks for."""
        saved = model_record.folds if model_record else 0
        if not (fold or saved):
            return 0  # one model: no fold files to read
        if cfg is not None and cfg.bagged_models:  # bagged models: no cross-validation to read
            return max(cfg.bagged_models, fold)
        cv = self.cross_validation(run_id)
        try:
            planned = (cv.folds if cv else 0) or self.progress(run_id).folds
        except RecordError:
            planned = 0
        return max(planned or saved, fold)

    def list(self) -> list[RunSummary]:
        out = []
        for run_id in self.list_ids():
            try:
                out.append(self.summary(run_id))
            except (RunNotFoundError, FileNotFoundError):
                continue  # deleted while listing
        return out

    def delete(self, run_id: str) -> None:
        shutil.rmtree(self.path(run_id))


def _dataset_label(cfg: TrainConfig | None) -> str:
    if cfg is None:
        return "?"
    return dataset_name(cfg.data.source) if cfg.data.source else "built-in synthetic phantoms"
