"""The images behind a confusion-matrix cell, worst first: the error browser's data.

A cell is (true class, predicted class). Its cases are sorted by the probability
the model gave the *true* class, lowest first, so the most confidently wrong
images come up first (for a diagonal cell: the least sure correct ones).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data.spec import item_name

__all__ = ["Case", "cell_counts", "cell_cases", "cell_options", "default_cell"]


@dataclass(frozen=True)
class Case:
    path: str
    true: str
    predicted: str
    p_true: float
    p_predicted: float
    probabilities: dict[str, float]

    @property
    def caption(self) -> str:
        name = item_name(self.path)
        if self.true == self.predicted:
            return f"{name} · P({self.true}) {self.p_true:.0%}"
        return f"{name} · P({self.true}) {self.p_true:.0%} · P({self.predicted}) {self.p_predicted:.0%}"


def cell_counts(y_true: np.ndarray, probs: np.ndarray, k: int) -> np.ndarray:
    """(K, K) counts, rows = true class, columns = predicted (argmax) class."""
    y_pred = np.asarray(probs).argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
    return np.bincount(np.asarray(y_true) * k + y_pred, minlength=k * k).reshape(k, k)


def cell_cases(paths: Sequence[str], y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
               true_class: str, predicted_class: str) -> list[Case]:
    """The images whose true class is ``true_class`` and predicted class ``predicted_class``, worst first."""
    for name in (true_class, predicted_class):
        if name not in classes:
            raise ValueError(f"Unknown class {name!r}; the run's classes are {', '.join(classes)}.")
    t, p = list(classes).index(true_class), list(classes).index(predicted_class)
    probs = np.asarray(probs, dtype=np.float64)
    y_true = np.asarray(y_true)
    chosen = np.flatnonzero((y_true == t) & (probs.argmax(axis=1) == p)) if len(probs) else np.zeros(0, int)
    chosen = sorted(chosen, key=lambda i: (probs[i, t], paths[i]))
    return [Case(paths[i], true_class, predicted_class, float(probs[i, t]), float(probs[i, p]),
                 {c: float(v) for c, v in zip(classes, probs[i])}) for i in chosen]


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
