"""The images behind a confusion-matrix cell: the error browser's and the clickable matrix's data.

A cell is (true class, predicted class). ``order="worst"`` sorts its cases by the
probability the model gave the *true* class, lowest first, so the most
confidently wrong images come up first (for a diagonal cell: the least sure
correct ones). ``order="confident"`` sorts them by the probability of the
*predicted* class, highest first: the answers the model was surest of first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Literal, Sequence

import numpy as np

from ..data.spec import item_name
from .metrics import probability_percent

__all__ = ["Case", "COPY_MARK", "copies_caption", "cell_counts", "cell_cases", "cell_options", "default_cell",
           "cell_of_point"]

Order = Literal["worst", "confident"]

# How a case whose near copy the run learned from is marked: a right answer on it may be memory.
COPY_MARK = "copy learned"


def copies_caption(cases: Sequence["Case"]) -> str:
    """What the mark means for the cases shown, all of one cell ('' when none is marked): on the diagonal a right
    answer may be memory; off it, the run got an image wrong although it learned from a copy of it."""
    marked = [case for case in cases if case.copied]
    if not marked:
        return ""
    what = (f"'{COPY_MARK}': a near copy of the image is among the images this run learned from (its training and "
            "validation images)")
    k = len(marked)
    if marked[0].true == marked[0].predicted:
        return f"{what}, so a right answer on it may be memory. It marks {k} image{'s' if k != 1 else ''} here."
    them = "it" if k == 1 else "them"
    return (f"{what}. It marks {k} image{'s' if k != 1 else ''} here: the run got {them} wrong although it learned "
            f"from {'a copy' if k == 1 else 'copies'}.")


@dataclass(frozen=True)
class Case:
    path: str
    true: str
    predicted: str
    p_true: float
    p_predicted: float
    probabilities: dict[str, float]
    copied: bool = False  # a near copy of it is among the images the run learned from (train + val)

    @property
    def mark(self) -> str:
        """' · copy learned' after the image's name when a near copy of it is among the run's images, else ''."""
        return f" · {COPY_MARK}" if self.copied else ""

    @property
    def caption(self) -> str:
        name = item_name(self.path) + self.mark
        if self.true == self.predicted:
            return f"{name} · P({self.true}) {probability_percent(self.p_true)}"
        return (f"{name} · P({self.true}) {probability_percent(self.p_true)} · P({self.predicted}) "
                f"{probability_percent(self.p_predicted)}")

    @property
    def name(self) -> str:
        """The image's short name (a file name, or "test #12" for an item of an .npz file)."""
        return item_name(self.path)

    @property
    def probability_line(self) -> str:
        """Every class's probability in the run's class order, e.g. "benign 0.71 · malignant 0.22 · normal 0.07"."""
        return " · ".join(f"{c} {v:.2f}" for c, v in self.probabilities.items())


def cell_counts(y_true: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted (argmax) class."""
    y_pred = np.asarray(probs).argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    return np.bincount(np.asarray(y_true) * k + y_pred, minlength=k * k).reshape(k, k)


def cell_cases(paths: Sequence[str], y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
               true_class: str, predicted_class: str, order: Order = "worst",
               copies: Collection[str] = ()) -> list[Case]:
    """The images whose true class is ``true_class`` and predicted class ``predicted_class``.

    ``order``: "worst" (lowest probability for the true class first) or "confident" (highest probability for
    the predicted class first); ties go by path, so the order is the same on every call. ``copies``: the run's
    test images with a near copy among the images it learned from (``RunMetrics.test_copies``); they are marked.
    """
    if order not in ("worst", "confident"):
        raise ValueError(f"Unknown order {order!r}; use 'worst' or 'confident'.")
    for name in (true_class, predicted_class):
        if name not in classes:
            raise ValueError(f"Unknown class {name!r}; the run's classes are {', '.join(classes)}.")
    t, p = list(classes).index(true_class), list(classes).index(predicted_class)
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true)
    chosen = np.flatnonzero((y_true == t) & (probs.argmax(axis=1) == p)) if len(probs) else np.zeros(0, int)
    if order == "worst":
        chosen = sorted(chosen, key=lambda i: (probs[i, t], paths[i]))
    else:
        chosen = sorted(chosen, key=lambda i: (-probs[i, p], paths[i]))
    copies = set(copies)
    return [Case(paths[i], true_class, predicted_class, float(probs[i, t]), float(probs[i, p]),
                 {c: float(v) for c, v in zip(classes, probs[i])}, paths[i] in copies) for i in chosen]


def cell_options(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> list[tuple[str, str, int]]:
    """Every non-empty cell as (true, predicted, count): errors first (most images first), then correct ones."""
    counts = cell_counts(y_true, probs, len(classes))
    cells = [(classes[t], classes[p], int(counts[t, p])) for t in range(len(classes)) for p in range(len(classes))
             if counts[t, p]]
    return sorted(cells, key=lambda c: (c[0] == c[1], -c[2]))


def default_cell(options: Sequence[tuple[str, str, int]], focus_class: str) -> int:
    """Index of the cell to show first: the focus class's biggest miss, else the biggest error, else the first."""
    for i, (true, predicted, _) in enumerate(options):
        if true == focus_class and predicted != focus_class:
            return i
    return 0


def cell_of_point(point: object, classes: Sequence[str]) -> tuple[str, str] | None:
    """(true, predicted) class names of a clicked matrix point, from its ``customdata`` = [true index,
    predicted index]; None when the point does not name a cell of these classes (e.g. a stale click on a
    matrix whose classes changed)."""
    data = point.get("customdata") if isinstance(point, dict) else None
    if not isinstance(data, (list, tuple)) or len(data) != 2:
        return None
    try:
        t, p = (int(v) for v in data)
    except (TypeError, ValueError):
        return None
    if not (0 <= t < len(classes) and 0 <= p < len(classes)):
        return None
    return classes[t], classes[p]
