"""Classification metrics: pure functions over arrays, computed with scikit-learn.

Conventions: ``y_true`` holds class indices (N,), ``probs`` class probabilities
(N, K). Confusion matrices have **true classes in rows and predicted classes in
columns** (scikit-learn's convention; the seed notebook mixed this up).
:func:`classification_metrics` returns a typed :class:`SplitMetrics` (saved with every run
as JSON); a value that cannot be computed (a class missing from the test set) is ``None``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["probability_percent", "macro_over_present", "epoch_metrics", "classification_metrics", "pr_curve", "select_score", "softmax", "ClassMetrics",
           "SplitMetrics"]


def probability_percent(p: float) -> str:
    """A probability as a percentage that never rounds onto certainty: 0.997 is '99.7%', not '100%' (a wrong answer
    at '100% confidence' teaches that the model was sure beyond doubt); '>99.9%' and '<0.1%' at the ends."""
    if p >= 1.0 or p <= 0.0:
        return f"{p:.0%}"
    if p > 0.999:
        return ">99.9%"
    if p < 0.001:
        return "<0.1%"
    return f"{p:.1%}" if p >= 0.995 or p < 0.005 else f"{p:.0%}"


def macro_over_present(per_class: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """The mean of a per-class score over the classes that occur in the truth or the predictions, along the last
    axis ((..., K) -> (...); 0 where none occurs), as scikit-learn averages when it is not given the labels.

    A class with no image and no prediction made no error and has no score: counting it as 0 would give two
    right answers among fifteen classes a macro-F1 of 0.13, and a validation split without one of three classes
    could never score above 0.67. A class predicted but absent still counts, with its F1 of 0 (false alarms)."""
    present = (np.asarray(support) + np.asarray(predicted)) > 0
    count = present.sum(axis=-1)
    total = np.where(present, per_class, 0.0).sum(axis=-1)
    return np.where(count > 0, total / np.maximum(count, 1), 0.0)


@dataclass(frozen=True)
class ClassMetrics:
    precision: float | None         # None: no image was called this class, so no call of it to be right or wrong
    recall: float | None            # None: no image of this class in the split
    f1: float | None                # None: neither (no image of the class, none called it): nothing to score
    support: int                    # images of this class in the split
    average_precision: float | None
    roc_auc: float | None


@dataclass(frozen=True)
class SplitMetrics:
    """Everything the Compare page and the run card show about one set of predictions."""

    n: int
    accuracy: float | None
    balanced_accuracy: float | None
    macro_f1: float
    macro_average_precision: float | None
    macro_roc_auc: float | None
    confusion_matrix: list[list[int]]  # rows: true class, columns: predicted class
    classes: list[str]
    per_class: dict[str, ClassMetrics] = field(default_factory=dict)

    def recall(self, name: str) -> float | None:
        """Recall of one class; None when the class is absent here or has no image in the split."""
        c = self.per_class.get(name)
        return c.recall if c else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SplitMetrics":
        per_class = {str(k): ClassMetrics(**{f: v.get(f) for f in ClassMetrics.__dataclass_fields__})
                     for k, v in (data.get("per_class") or {}).items()}
        confusion = [list(map(int, row)) for row in data.get("confusion_matrix", [])]
        classes = [str(c) for c in data.get("classes", [])]
        return cls(n=int(data.get("n", 0)), accuracy=data.get("accuracy"),
                   balanced_accuracy=data.get("balanced_accuracy"), macro_f1=float(data.get("macro_f1", 0.0)),
                   macro_average_precision=data.get("macro_average_precision"),
                   macro_roc_auc=data.get("macro_roc_auc"), confusion_matrix=confusion, classes=classes,
                   per_class=_blank_uncalled(per_class, confusion, classes))


def _blank_uncalled(per_class: dict[str, ClassMetrics], confusion: list[list[int]],
                    classes: list[str]) -> dict[str, ClassMetrics]:
    """Runs saved before 2026-12-08 kept a precision of 0 for a class no image was called (and an F1 of 0 for one
    neither in the split nor called), which :func:`classification_metrics` now leaves blank: read them as it would
    write them, from their confusion matrix."""
    if len(confusion) != len(classes) or any(len(row) != len(classes) for row in confusion):
        return per_class
    called, support = np.asarray(confusion).sum(axis=0), np.asarray(confusion).sum(axis=1)
    out = dict(per_class)
    for i, name in enumerate(classes):
        if name in out and not called[i]:
            out[name] = replace(out[name], precision=None, f1=out[name].f1 if support[i] else None)
    return out


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _sklearn_metrics():
    """scikit-learn's metrics, imported on first use (see :func:`epoch_metrics`)."""
    import sklearn.metrics

    return sklearn.metrics


def _clean(value: float) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def epoch_metrics(y_true: np.ndarray, y_pred: np.ndarray, classes: Sequence[str]) -> dict:
    """The cheap per-epoch validation summary: accuracy, macro-F1, balanced accuracy, recall per class.

    The same values as scikit-learn's functions (zero_division=0; macro-F1 and balanced accuracy over the classes
    present),
    read off the confusion matrix with numpy: the training loop needs them when its first epoch ends, and
    importing scikit-learn would hold a new training worker's first epoch up by more than a second.
    """
    k = len(classes)
    y_true, y_pred = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    if not len(y_true):
        return {"accuracy": 0.0, "macro_f1": 0.0, "balanced_accuracy": 0.0, "recall": {c: None for c in classes}}
    confusion = np.bincount(y_true * k + y_pred, minlength=k * k).reshape(k, k)  # rows: true, columns: predicted
    hits, support, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    recall = hits / np.maximum(support, 1)
    f1 = 2 * hits / np.maximum(support + predicted, 1)  # 2PR / (P + R), 0 where nothing was there to find
    return {
        "accuracy": float(hits.sum() / len(y_true)),
        "macro_f1": float(macro_over_present(f1, support, predicted)),
        "balanced_accuracy": float(recall[support > 0].mean()),
        "recall": {c: (float(r) if s else None) for c, r, s in zip(classes, recall, support)},
    }


def select_score(metrics: dict, select_metric: str, focus_class: str) -> float:
    """The number that picks the best epoch (higher is better)."""
    if select_metric == "focus_recall":
        value = metrics["recall"].get(focus_class)
        return -1.0 if value is None else value
    return float(metrics[select_metric])


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> SplitMetrics:
    """Everything the compare page and the run card show, for one set of predictions."""
    y_true = np.asarray(y_true)
    probs = np.asarray(probs, dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    k = len(classes)
    labels = list(range(k))
    sk = _sklearn_metrics()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (UserWarning, RuntimeWarning))  # UndefinedMetricWarning is a UserWarning
        precision, recall, f1, support = sk.precision_recall_fscore_support(
            y_true, y_pred, labels=labels, zero_division=0)
        per_class = {}
        called = np.bincount(y_pred, minlength=k)
        for i, name in enumerate(classes):
            positives = y_true == i
            has = bool(positives.any()) and not bool(positives.all())
            per_class[name] = ClassMetrics(
                precision=float(precision[i]) if called[i] else None,
                recall=float(recall[i]) if support[i] else None,
                f1=float(f1[i]) if support[i] or called[i] else None,
                support=int(support[i]),
                average_precision=_clean(sk.average_precision_score(positives, probs[:, i])) if has else None,
                roc_auc=_clean(sk.roc_auc_score(positives, probs[:, i])) if has else None,
            )
        aps = [c.average_precision for c in per_class.values() if c.average_precision is not None]
        aucs = [c.roc_auc for c in per_class.values() if c.roc_auc is not None]
        return SplitMetrics(
            n=int(len(y_true)),
            accuracy=float(sk.accuracy_score(y_true, y_pred)) if len(y_true) else None,
            balanced_accuracy=float(sk.balanced_accuracy_score(y_true, y_pred)) if len(y_true) else None,
            macro_f1=float(macro_over_present(f1, support, called)),
            macro_average_precision=float(np.mean(aps)) if aps else None,
            macro_roc_auc=float(np.mean(aucs)) if aucs else None,
            confusion_matrix=sk.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
            classes=list(classes),
            per_class=per_class,
        )


def pr_curve(y_true: np.ndarray, probs: np.ndarray, class_index: int) -> dict:
    """One-vs-rest precision-recall curve of one class, with AP and the chance level (prevalence)."""
    positives = np.asarray(y_true) == class_index
    if not positives.any():
        return {"precision": [], "recall": [], "thresholds": [], "average_precision": None, "prevalence": 0.0}
    sk = _sklearn_metrics()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (UserWarning, RuntimeWarning))  # UndefinedMetricWarning is a UserWarning
        precision, recall, thresholds = sk.precision_recall_curve(positives, probs[:, class_index])
        ap = sk.average_precision_score(positives, probs[:, class_index])
    return {
        "precision": precision.tolist(),
        "recall": recall.tolist(),
        "thresholds": thresholds.tolist(),
        "average_precision": _clean(ap),
        "prevalence": float(positives.mean()),
    }
