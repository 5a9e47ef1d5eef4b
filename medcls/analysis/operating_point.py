"""Operating points: turning class probabilities into a yes/no decision at a chosen threshold.

A classifier's "predicted class" is the most probable one, but a clinic may prefer
to flag an image as soon as the probability of cancer passes, say, 0.2: more
cancers caught (higher sensitivity), more false alarms (lower specificity). This
module answers "what happens at threshold t?" for any **positive group** of
classes against the rest:

- one class against the rest (malignant vs benign + normal), or
- a merged group (the seed notebook's binary view: lesion = benign + malignant vs normal).

The score of an image is the summed probability of the positive classes; the image
is called positive when ``score >= threshold``. All functions are pure numpy.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..data import default_focus_class

__all__ = ["BinaryView", "NORMAL_PATTERN", "default_positive_group", "confusion_at", "operating_point",
           "most_probable_class_point", "threshold_sweep", "threshold_for_sensitivity", "describe_operating_point",
           "describe_most_probable_class", "NO_THRESHOLD_WITHOUT_HELD_OUT"]

# Why a run of bagged models has no threshold (the run card and Compare's *Choose a threshold* say it alike).
NO_THRESHOLD_WITHOUT_HELD_OUT = (
    "the bagged models learned from every training and validation image, so no image is left to choose a "
    "threshold on (choosing it on the test images would make their score no test). Train with cross-validation "
    "folds for a threshold chosen out of fold.")

# Names of a "nothing found" class ("abnormal" is not one of them).
NORMAL_PATTERN = re.compile(r"(?<!ab)normal|healthy|negative|no[ _-]?(finding|lesion|tumou?r|cancer)|control",
                            re.IGNORECASE)


@dataclass(frozen=True)
class BinaryView:
    """The classes of a run split into a positive group and the rest."""

    classes: tuple[str, ...]
    positive: tuple[str, ...]

    def __post_init__(self) -> None:
        unknown = [c for c in self.positive if c not in self.classes]
        if unknown:
            raise ValueError(f"Unknown class(es) {', '.join(unknown)}; the run's classes are "
                             f"{', '.join(self.classes)}.")
        if not self.positive:
            raise ValueError("Pick at least one class for the positive group.")
        if len(set(self.positive)) == len(self.classes):
            raise ValueError("The positive group cannot hold every class: leave at least one class out.")

    @classmethod
    def of(cls, classes: Sequence[str], positive: Sequence[str]) -> "BinaryView":
        """A view with the positive classes kept in the run's class order."""
        chosen = set(positive)
        return cls(tuple(classes), tuple(c for c in classes if c in chosen) + tuple(
            c for c in positive if c not in classes))

    @property
    def indices(self) -> list[int]:
        return [self.classes.index(c) for c in self.positive]

    @property
    def negative(self) -> tuple[str, ...]:
        return tuple(c for c in self.classes if c not in self.positive)

    @property
    def positive_label(self) -> str:
        return " + ".join(self.positive)

    @property
    def negative_label(self) -> str:
        if len(self.positive) == 1 and len(self.negative) > 1:
            return f"not {self.positive[0]}"
        return " + ".join(self.negative)

    def truth(self, y_true: np.ndarray) -> np.ndarray:
        """True where the image's real class is in the positive group."""
        return np.isin(np.asarray(y_true), self.indices)

    def scores(self, probs: np.ndarray) -> np.ndarray:
        """The summed probability of the positive classes, per image."""
        return np.asarray(probs, dtype=np.float64)[:, self.indices].sum(axis=1)


def default_positive_group(classes: Sequence[str]) -> list[str]:
    """Every class except a "normal"-like one when there is one (lesion vs normal); else the focus class."""
    normal = [c for c in classes if NORMAL_PATTERN.search(c)]
    if normal and len(normal) < len(classes):
        return [c for c in classes if c not in normal]
    return [default_focus_class(list(classes))]


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def confusion_at(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, int]:
    """True/false positives and negatives when ``score >= threshold`` means positive."""
    return _confusion(truth, np.asarray(scores) >= threshold)


def _confusion(truth: np.ndarray, flagged: np.ndarray) -> dict[str, int]:
    truth, flagged = np.asarray(truth, dtype=bool), np.asarray(flagged, dtype=bool)
    return {"tp": int((flagged & truth).sum()), "fn": int((~flagged & truth).sum()),
            "fp": int((flagged & ~truth).sum()), "tn": int((~flagged & ~truth).sum())}


def operating_point(truth: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Counts plus sensitivity, specificity, PPV, NPV and accuracy at one threshold (None when undefined)."""
    return _rates(confusion_at(truth, scores, threshold)) | {"threshold": float(threshold)}


def most_probable_class_point(y_true: np.ndarray, probs: np.ndarray, view: BinaryView) -> dict:
    """What the run's own answers give in ``view``: an image is flagged when its most probable class is in the
    positive group (the decision behind the test metrics). The same counts and rates as :func:`operating_point`,
    with no threshold: with more than two classes the most probable class can have a probability under 0.5, and
    a positive group's summed probability can pass 0.5 while another class is the most probable."""
    flagged = view.truth(np.asarray(probs).argmax(axis=1))
    return _rates(_confusion(view.truth(y_true), flagged)) | {"threshold": None}


def _rates(c: dict[str, int]) -> dict:
    tp, fn, fp, tn = c["tp"], c["fn"], c["fp"], c["tn"]
    return {**c, "positives": tp + fn, "negatives": fp + tn,
            "sensitivity": _ratio(tp, tp + fn), "specificity": _ratio(tn, tn + fp),
            "ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn), "accuracy": _ratio(tp + tn, tp + tn + fp + fn),
            # rows = true (negative, positive), columns = predicted (negative, positive)
            "matrix": [[tn, fp], [fn, tp]]}


def threshold_sweep(truth: np.ndarray, scores: np.ndarray, thresholds: np.ndarray | None = None) -> dict:
    """Sensitivity, specificity, PPV and NPV at many thresholds at once (NaN where undefined)."""
    truth = np.asarray(truth, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    t = np.linspace(0.0, 1.0, 201) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
    pos, neg = np.sort(scores[truth]), np.sort(scores[~truth])
    tp = len(pos) - np.searchsorted(pos, t, side="left")   # positives with score >= t
    fp = len(neg) - np.searchsorted(neg, t, side="left")
    fn, tn = len(pos) - tp, len(neg) - fp
    with np.errstate(divide="ignore", invalid="ignore"):
        div = lambda a, b: np.where(b > 0, a / np.maximum(b, 1), np.nan)  # noqa: E731
        return {"threshold": t, "sensitivity": div(tp, tp + fn), "specificity": div(tn, tn + fp),
                "ppv": div(tp, tp + fp), "npv": div(tn, tn + fn)}


def threshold_for_sensitivity(truth: np.ndarray, scores: np.ndarray, target: float,
                              resolution: float | None = None) -> float:
    """The highest threshold whose sensitivity on these images is at least ``target`` (0-1).

    ``resolution`` rounds the threshold *down* to a multiple of it (a slider's step), which can only
    flag more images, so the target is still reached.
    """
    if not 0.0 < target <= 1.0:
        raise ValueError(f"Target sensitivity must be between 0 and 1 (got {target}); e.g. 0.95 for 95%.")
    truth = np.asarray(truth, dtype=bool)
    positive_scores = np.sort(np.asarray(scores, dtype=np.float64)[truth])[::-1]
    if not len(positive_scores):
        raise ValueError("These images contain no positive cases, so no threshold can reach a sensitivity. "
                         "Check the positive group, or use a split with positive images.")
    needed = max(1, math.ceil(target * len(positive_scores) - 1e-9))  # positives that must be flagged
    threshold = float(positive_scores[needed - 1])
    if resolution:
        snapped = round(math.floor(threshold / resolution) * resolution, 10)
        while snapped > threshold:
            snapped = round(snapped - resolution, 10)
        threshold = max(0.0, snapped)
    return threshold


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"


def describe_operating_point(op: dict, view: BinaryView, split: str = "test",
                             name: Callable[[str], str] = str) -> str:
    """One paragraph, in plain words (Markdown), of what the threshold does on a split. ``name`` writes the class
    names (the app escapes them, so a class name cannot add Markdown of its own)."""
    pos, neg = name(view.positive_label), name(view.negative_label)
    parts = [f"At threshold {op['threshold']:.3f} the model flags **{op['tp']:,} of {op['positives']:,}** {pos} "
             f"{split} images (sensitivity {_pct(op['sensitivity'])}) and wrongly flags **{op['fp']:,} of "
             f"{op['negatives']:,}** {neg} images (specificity {_pct(op['specificity'])})."]
    if op["ppv"] is not None:
        parts.append(f"Of the images it flags, {_pct(op['ppv'])} really are {pos} (PPV).")
    if op["npv"] is not None:
        parts.append(f"Of the images it clears, {_pct(op['npv'])} really are {neg} (NPV).")
    parts.append("PPV and NPV depend on how common the condition is in this data set; in a screening "
                 "population with fewer cancers the PPV would be lower.")
    return " ".join(parts)


def describe_most_probable_class(own: dict, at_threshold: dict, view: BinaryView, split: str = "test",
                                 name: Callable[[str], str] = str) -> str:
    """One sentence (Markdown) comparing the run's own answers (:func:`most_probable_class_point`) with a
    threshold's (:func:`operating_point`) on the same images, so that the slider's figures and the test
    metrics, which use the most probable class, can be read side by side."""
    pos, neg = name(view.positive_label), name(view.negative_label)
    words = (f"The run's own answers (the most probable class, as in the test metrics) flag {own['tp']:,} of "
             f"{own['positives']:,} {pos} {split} images (sensitivity {_pct(own['sensitivity'])}) and "
             f"{own['fp']:,} of {own['negatives']:,} {neg} images (specificity {_pct(own['specificity'])})")
    if (own["tp"], own["fp"]) == (at_threshold["tp"], at_threshold["fp"]):
        return words + f": the same as threshold {at_threshold['threshold']:.3f}."
    words += (f"; threshold {at_threshold['threshold']:.3f} flags {at_threshold['tp']:,} and {at_threshold['fp']:,}.")
    if len(view.classes) > 2:
        words += (f" The two decide differently: the threshold reads P({pos}) alone, while the run's answer is "
                  f"whichever of the {len(view.classes)} classes is most probable, even at a probability under 0.5.")
    return words
