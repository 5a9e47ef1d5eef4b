"""Typed records of what a run measured: metrics.json, cv.json and predictions.csv.

Like :mod:`medcls.runs.records` (whose readers these share): ``to_dict`` for writing, a forgiving ``from_dict``
for reading, and :class:`~medcls.runs.records.RecordError` where a file cannot be read. No torch or
scikit-learn at import.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from .records import RecordError, _float, _int, _known, _object, _str

if TYPE_CHECKING:
    import numpy as np

    from ..analysis.metrics import SplitMetrics

__all__ = ["RunMetrics", "FoldScore", "CrossValidation", "Predictions"]


# --- metrics.json ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RunMetrics:
    """The tested checkpoint's metrics (metrics.json): per split, with 95% intervals and calibration."""

    splits: dict[str, "SplitMetrics"]      # 'val', 'test'
    best_epoch: int
    best_val_score: float | None
    precision: str                         # the number format training used: fp32 or bf16
    focus_class: str
    intervals: dict[str, dict] = field(default_factory=dict)   # split -> 95% intervals (analysis.uncertainty)
    ece: dict[str, float | None] = field(default_factory=dict)  # split -> expected calibration error
    stopped: bool = False                  # the run was stopped; these are its best checkpoint's results so far
    test_copies: tuple[str, ...] | None = None  # test images with a near copy in train/val (None: not checked)

    @property
    def test(self) -> "SplitMetrics | None":
        return self.splits.get("test")

    def to_dict(self) -> dict[str, Any]:
        return {**{s: m.to_dict() for s, m in self.splits.items()}, "best_epoch": self.best_epoch,
                "best_val_score": self.best_val_score, "precision": self.precision, "focus_class": self.focus_class,
                "intervals": self.intervals, "calibration": {s: {"ece": v} for s, v in self.ece.items()},
                "stopped": self.stopped,
                "test_copies": None if self.test_copies is None else list(self.test_copies)}

    @classmethod
    def from_dict(cls, data: Any) -> "RunMetrics":
        from ..analysis.metrics import SplitMetrics

        data = _object(data, "metrics.json")
        try:
            splits = {s: SplitMetrics.from_dict(data[s]) for s in ("val", "test") if isinstance(data.get(s), Mapping)}
        except (TypeError, ValueError) as exc:
            raise RecordError(f"metrics.json cannot be read ({exc}).") from None
        calibration = data.get("calibration") if isinstance(data.get("calibration"), Mapping) else {}
        intervals = data.get("intervals") if isinstance(data.get("intervals"), Mapping) else {}
        return cls(splits=splits, best_epoch=_int(data.get("best_epoch")) or 0,
                   best_val_score=_float(data.get("best_val_score")), precision=_str(data.get("precision"), "fp32"),
                   focus_class=_str(data.get("focus_class")),
                   intervals={str(s): v for s, v in intervals.items() if isinstance(v, Mapping)},
                   ece={str(s): _float(v.get("ece")) for s, v in calibration.items() if isinstance(v, Mapping)},
                   stopped=data.get("stopped") is True,
                   test_copies=tuple(str(p) for p in data["test_copies"])
                   if isinstance(data.get("test_copies"), list) else None)


# --- cv.json -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FoldScore:
    """One fold's model, judged on the images it held out."""

    fold: int                     # 1..k
    images: int
    macro_f1: float
    accuracy: float
    balanced_accuracy: float
    focus_recall: float | None
    best_epoch: int
    epochs: int


@dataclass(frozen=True)
class CrossValidation:
    """A cross-validation run's folds (cv.json): each fold's score and their mean ± standard deviation."""

    folds: int                    # planned
    grouped: bool                 # near-duplicates kept in one fold
    scores: tuple[FoldScore, ...]
    completed: int                # folds trained to their end (a stop can leave fewer)
    by_subfolder: bool = False    # each subfolder's images (a patient's) kept in one fold
    patient_column: str = ""      # ... or each patient's, as a manifest's column (patient_id) names them

    def kept_together_words(self) -> str:
        """'near-duplicates and each subfolder's images' (what the folds kept whole; '' for nothing)."""
        whose = f"each {self.patient_column}'s images" if self.patient_column else "each subfolder's images"
        return " and ".join(["near-duplicates"] * self.grouped + [whose] * self.by_subfolder)

    def mean_sd(self, metric: str) -> tuple[float | None, float | None]:
        """(mean, sample standard deviation) of a FoldScore field over the folds (sd None for one fold)."""
        values = [getattr(s, metric) for s in self.scores if getattr(s, metric) is not None]
        if not values:
            return None, None
        mean = sum(values) / len(values)
        if len(values) < 2:
            return mean, None
        return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))

    def mean_sd_words(self, metric: str) -> str | None:
        """'0.806 ± 0.035' (the mean alone for one fold; None when no fold has the metric)."""
        mean, sd = self.mean_sd(metric)
        if mean is None:
            return None
        return f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")

    def epochs_words(self, planned: int) -> str:
        """'5 fold models: 16, 18, 30, 15 and 27 of 30 epochs' (each fold model stopped early on its own)."""
        counts = [str(s.epochs) for s in self.scores]
        listed = counts[0] if len(counts) == 1 else ", ".join(counts[:-1]) + " and " + counts[-1]
        models = "1 fold model" if len(counts) == 1 else f"{len(counts)} fold models"
        return f"{models}: {listed} of {planned} epochs"

    def to_dict(self) -> dict[str, Any]:
        return {"folds": self.folds, "grouped": self.grouped, "by_subfolder": self.by_subfolder,
                "patient_column": self.patient_column, "completed": self.completed, "scores": [asdict(s) for s in self.scores]}

    @classmethod
    def from_dict(cls, data: Any) -> "CrossValidation":
        data = _object(data, "cv.json")
        try:
            scores = tuple(FoldScore(**_known(FoldScore, s)) for s in data.get("scores", []))
            return cls(int(data["folds"]), data.get("grouped") is True, scores, _int(data.get("completed")) or
                       len(scores), by_subfolder=data.get("by_subfolder") is True,
                       patient_column=str(data.get("patient_column") or ""))
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordError(f"cv.json cannot be read ({exc}).") from None


# --- predictions.csv ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Predictions:
    """One split's predictions of the tested checkpoint (from predictions.csv)."""

    split: str
    paths: list[str]
    y_true: "np.ndarray"     # (N,) class indices into ``classes``
    probs: "np.ndarray"      # (N, K) class probabilities
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)
