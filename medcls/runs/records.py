"""Typed records: what each file of a run folder holds.

Every file a run writes has one class here (what a run measured, in
:mod:`medcls.runs.results`), with ``to_dict`` for writing and a
forgiving ``from_dict`` for reading: a record written by an earlier version, or
damaged by hand, reads back with defaults where it can and raises
:class:`RecordError` (saying which file and what is wrong) where it cannot. The
run store (:mod:`medcls.runs.store`) is the only code that reads and writes these
files; everything else uses the typed objects.

This module imports neither torch nor scikit-learn, so listing runs stays fast.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence

__all__ = ["FINGERPRINT_FORMAT", "RecordError", "STATES", "ACTIVE_STATES", "ENDED_STATES", "RunStatus", "RunMeta",
           "EpochRecord", "best_record", "member_word", "latest_fold", "fold_histories", "Progress", "ModelRecord",
           "DataRecord", "GroupMembership"]

STATES = ("queued", "running", "finished", "failed", "cancelled", "interrupted")
ACTIVE_STATES = ("queued", "running")
ENDED_STATES = ("finished", "failed", "cancelled", "interrupted")


class RecordError(ValueError):
    """A run file cannot be read as what it should hold."""


def _object(data: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise RecordError(f"{what} holds {type(data).__name__} instead of a JSON object.")
    return data


def _int(value: Any, default: int | None = 0) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else default
    except (TypeError, ValueError, OverflowError):
        return default


def _pid(value: Any) -> int | None:
    """A process id, or None: never 0 or negative (os.kill would then signal a whole process group)."""
    pid = _int(value, None)
    return pid if pid is not None and 0 < pid < 2**31 else None


def _float(value: Any, default: float | None = None) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _str(value: Any, default: str = "") -> str:
    return value if isinstance(value, str) else default


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


# --- status.json -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunStatus:
    """Where a run is in its life (status.json), written by the job manager and the worker."""

    state: str
    created: str = ""
    created_ns: int = 0           # orders runs made within the same second
    updated: str = ""
    started: str = ""
    ended: str = ""
    error: str = ""               # why it failed, was cancelled or interrupted
    pid: int | None = None        # the worker process while running; queued: the process holding it (held)
    host: str = ""
    backend: str = ""
    best_epoch: int | None = None
    stopped_early: bool = False
    notes: tuple[str, ...] = ()   # things the run adjusted and why (e.g. a smaller batch for a tiny dataset)
    resumes: int = 0              # how often it continued from its last epoch after an interruption
    auto_resume: bool = False     # interrupted because its server stopped: the next job manager resumes it
    damaged: str = ""             # not saved: why the status file could not be read

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("damaged")
        out["notes"] = list(self.notes)
        return out

    @classmethod
    def from_dict(cls, data: Any) -> "RunStatus":
        if not isinstance(data, Mapping):
            return cls.damaged_status(f"status.json holds {type(data).__name__} instead of a JSON object")
        state = data.get("state")
        if state not in STATES:
            return cls.damaged_status(f"status.json has an unknown state {state!r}")
        notes = data.get("notes")
        return cls(state=state, created=_str(data.get("created")), created_ns=_int(data.get("created_ns")) or 0,
                   updated=_str(data.get("updated")), started=_str(data.get("started")),
                   ended=_str(data.get("ended")), error=_str(data.get("error")), pid=_pid(data.get("pid")),
                   host=_str(data.get("host")), backend=_str(data.get("backend")),
                   best_epoch=_int(data.get("best_epoch"), None), stopped_early=data.get("stopped_early") is True,
                   notes=tuple(n for n in notes if isinstance(n, str)) if isinstance(notes, list) else (),
                   resumes=max(0, _int(data.get("resumes")) or 0), auto_resume=data.get("auto_resume") is True)

    @classmethod
    def damaged_status(cls, why: str) -> "RunStatus":
        return cls(state="failed", error=f"This run's files are damaged: {why}.", damaged=why)


# --- meta.json ---------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunMeta:
    """What people call a run and who started it (meta.json); changed by people, never by the worker."""

    name: str = ""        # a readable name; empty: made from the settings
    owner: str = ""       # the identity that started the run ("" = the local operator)
    owner_name: str = ""  # that person's display name when the run was started

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "RunMeta":
        if not isinstance(data, Mapping):
            return cls()
        return cls(name=_str(data.get("name")), owner=_str(data.get("owner")),
                   owner_name=_str(data.get("owner_name")))


# --- history.jsonl -------------------------------------------------------------------------------------------------

@dataclass
class EpochRecord:
    """One finished epoch (a line of history.jsonl)."""

    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    val_balanced_accuracy: float
    val_recall: dict[str, float | None]
    lr: float
    seconds: float        # the whole epoch: training steps and validation
    images_per_s: float   # training images per second in the training phase
    score: float          # the select_metric value on validation
    best: bool = False    # the best score so far: these weights are the kept checkpoint
    fold: int = 0         # an ensemble: which fold's (or bagged) model (1..k); 0 for an ordinary run
    validated: bool = True  # False: no validation images, so the val_* fields and the score mean nothing

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "EpochRecord":
        data = _object(data, "A history line")
        try:
            recall = data.get("val_recall") or {}
            return cls(epoch=int(data["epoch"]), train_loss=_float(data.get("train_loss"), math.nan),
                       train_accuracy=_float(data.get("train_accuracy"), 0.0),
                       val_loss=_float(data.get("val_loss"), math.nan),
                       val_accuracy=_float(data.get("val_accuracy"), 0.0),
                       val_macro_f1=_float(data.get("val_macro_f1"), 0.0),
                       val_balanced_accuracy=_float(data.get("val_balanced_accuracy"), 0.0),
                       val_recall={str(k): _float(v) for k, v in recall.items()} if isinstance(recall, Mapping)
                       else {}, lr=_float(data.get("lr"), 0.0), seconds=_float(data.get("seconds"), 0.0),
                       images_per_s=_float(data.get("images_per_s"), 0.0), score=_float(data.get("score"), -1.0),
                       best=data.get("best") is True, fold=_int(data.get("fold")) or 0,
                       validated=data.get("validated") is not False)
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"A history line cannot be read ({exc}).") from None


def latest_fold(history: Sequence[EpochRecord]) -> tuple[list[EpochRecord], int]:
    """The epochs to draw as one training curve, and their fold: a cross-validation run's history holds every
    fold's epochs one after another (each fold's model starts again at epoch 1), so its latest fold's; any
    other run's whole history, with fold 0."""
    fold, epochs = list(fold_histories(history).items())[-1]
    return epochs, fold


def fold_histories(history: Sequence[EpochRecord]) -> dict[int, list[EpochRecord]]:
    """Each fold's epochs (one training curve each), by fold in order; a run of one model: ``{0: history}``."""
    folds: dict[int, list[EpochRecord]] = {}
    for record in history:
        folds.setdefault(record.fold, []).append(record)
    return dict(sorted(folds.items())) if folds else {0: []}


def member_word(bagged: bool, plural: bool = False) -> str:
    """What one model of an ensemble is called ('fold 2 of 3', 'bagged model 2 of 3'), or, ``plural``, its
    models ('3 fold models', '3 bagged models'). Epoch records and progress number either kind alike."""
    if plural:
        return "bagged models" if bagged else "fold models"
    return "bagged model" if bagged else "fold"


def best_record(history: Sequence[EpochRecord]) -> EpochRecord | None:
    """The epoch whose weights are the run's checkpoint: the last one marked best (None before any).

    In a cross-validation run this is the latest fold's best epoch.
    """
    return next((h for h in reversed(history) if h.best), None)


# --- progress.json -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Progress:
    """The latest batch-level progress of a running run (progress.json, throttled)."""

    phase: str = "preparing"       # preparing, train or val
    message: str = ""              # what is being prepared
    prepare_fraction: float = 0.0
    epoch: int = 0
    epochs: int = 0
    batch: int = 0
    batches: int = 0
    fraction: float = 0.0          # of the whole run
    loss: float | None = None
    images_per_s: float | None = None
    elapsed_s: float | None = None
    eta_s: float | None = None     # seconds left when it was written
    time: float | None = None      # when it was written (Unix time)
    fold: int = 0                  # an ensemble: the fold (or bagged model) being trained (1..folds)
    folds: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Progress":
        if not isinstance(data, Mapping):
            return cls()
        return cls(phase=_str(data.get("phase"), "preparing"), message=_str(data.get("message")),
                   prepare_fraction=_float(data.get("prepare_fraction"), 0.0), epoch=_int(data.get("epoch")) or 0,
                   epochs=_int(data.get("epochs")) or 0, batch=_int(data.get("batch")) or 0,
                   batches=_int(data.get("batches")) or 0, fraction=_float(data.get("fraction"), 0.0),
                   loss=_float(data.get("loss")), images_per_s=_float(data.get("images_per_s")),
                   elapsed_s=_float(data.get("elapsed_s")), eta_s=_float(data.get("eta_s")),
                   time=_float(data.get("time")), fold=_int(data.get("fold")) or 0, folds=_int(data.get("folds")) or 0)


# --- model.json / data.json ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelRecord:
    """What a trained model needs besides its config to predict (model.json): classes and input format."""

    classes: tuple[str, ...]
    image_size: int
    in_channels: int
    color: str                    # 'gray' or 'rgb', as the images were decoded
    focus_class: str = ""
    parameters: int = 0
    tta: bool = False             # predictions average the image and its mirror
    folds: int = 0                # an ensemble of this many models: fold models, or bagged ones
    bagged: bool = False          # the ensemble's models each learned from every train + val image (no folds)

    @property
    def models(self) -> int:
        """The models that predict together: the fold (or bagged) models of an ensemble, else one."""
        return max(1, self.folds)

    @property
    def parameters_per_model(self) -> int:
        """The weights of one model (``parameters`` counts every fold model's)."""
        return self.parameters // self.models

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: Any) -> "ModelRecord":
        data = _object(data, "model.json")
        try:
            classes = tuple(str(c) for c in data["classes"])
            record = cls(classes=classes, image_size=int(data["image_size"]), in_channels=int(data["in_channels"]),
                         color=_str(data.get("color"), "gray"), focus_class=_str(data.get("focus_class")),
                         parameters=_int(data.get("parameters")) or 0, tta=data.get("tta") is True,
                         folds=_int(data.get("folds")) or 0, bagged=data.get("bagged") is True)
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"model.json cannot be read ({type(exc).__name__}: {exc}).") from None
        if len(classes) < 2 or record.in_channels not in (1, 3) or not 8 <= record.image_size <= 4096:
            raise RecordError("model.json describes an impossible model (classes, channels or image size).")
        return record


FINGERPRINT_FORMAT = 2   # what DataRecord.fingerprint hashes in runs this medcls writes (see the field)


@dataclass(frozen=True)
class DataRecord:
    """The data a run trained on (data.json)."""

    root: str
    layout: str
    synthetic: bool
    fingerprint: str
    classes: tuple[str, ...]
    counts: dict[str, dict[str, int]]   # split -> class -> images
    color: str
    focus_class: str = ""               # the class whose recall the run tracks (known before any model exists)
    # 1: ``fingerprint`` hashes the images' paths (runs written until 2026-12-07); 2: their contents
    # (:meth:`medcls.data.spec.DatasetSpec.fingerprint`). The store upgrades a 1 when it reads it (medcls.runs.upgrade).
    fingerprint_format: int = FINGERPRINT_FORMAT
    typical_side: int = 0               # the images' typical shorter side in px, from a sample (0: not recorded)

    @property
    def label(self) -> str:
        """How people should read the data's name: the built-in phantoms are named as such."""
        if self.synthetic:
            return "built-in synthetic phantoms"
        from .naming import dataset_name

        return dataset_name(self.root)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "classes": list(self.classes)}

    @classmethod
    def from_dict(cls, data: Any) -> "DataRecord":
        data = _object(data, "data.json")
        counts = data.get("counts") if isinstance(data.get("counts"), Mapping) else {}
        return cls(root=_str(data.get("root")), layout=_str(data.get("layout")),
                   synthetic=data.get("synthetic") is True, fingerprint=_str(data.get("fingerprint")),
                   classes=tuple(str(c) for c in data.get("classes") or ()),
                   counts={str(s): {str(c): _int(n) or 0 for c, n in per.items()}
                           for s, per in counts.items() if isinstance(per, Mapping)},
                   color=_str(data.get("color"), "gray"), focus_class=_str(data.get("focus_class")),
                   fingerprint_format=_int(data.get("fingerprint_format")) or 1,
                   typical_side=max(_int(data.get("typical_side")) or 0, 0))


# --- group.json: runs that belong together ---------------------------------------------------------------------------

@dataclass(frozen=True)
class GroupMembership:
    """A run's place in a sweep, a lesson or a cross-validation (group.json; sweep.json in older runs)."""

    kind: str                     # 'sweep', 'lesson' or 'cv'
    group_id: str
    values: dict[str, Any] = field(default_factory=dict)   # what sets this run apart in its group

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any, legacy_kind: str = "") -> "GroupMembership | None":
        if not isinstance(data, Mapping):
            return None
        group_id = data.get("group_id") or data.get("sweep_id")
        if not isinstance(group_id, str):
            return None
        values = data.get("values") if isinstance(data.get("values"), Mapping) else {}
        return cls(kind=_str(data.get("kind"), legacy_kind or "sweep"), group_id=group_id, values=dict(values))
