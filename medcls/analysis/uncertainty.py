"""How sure are the test numbers? 95% confidence intervals and small-sample warnings.

A test set with 18 cancer images gives a cancer recall that moves by 5.6
percentage points per image. Accuracy and each class's recall are shares of
images (k of n), so their interval is the Wilson score interval, the one
recommended for proportions (Brown, Cai and DasGupta 2001). The percentile
bootstrap would say "100% to 100%" for 20 of 20 found: no resample of those 20
images can miss one, yet new patients can. Macro-F1 and average precision have
no such formula, so the percentile bootstrap gives theirs: draw the test set
again with replacement 1,000 times, recompute the metric, and report the middle
95% of the results. That is vectorised with numpy (resampling counts times
per-image indicators), so it takes milliseconds. Results are plain dicts, ready
for JSON.

Two runs judged on the same test images are compared more sharply image by
image: see ``paired.py``.
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Callable, Mapping, Sequence

import numpy as np

from ..data.spec import class_word
from ..runs.lifecycle import RunNotFoundError
from ..runs.records import RecordError
from ..runs.results import RunMetrics
from ..runs.store import RunStore
from .metrics import macro_over_present

__all__ = ["metric_intervals", "proportion_interval", "resample_counts", "weighted_average_precision",
           "small_class_warnings", "format_interval", "interval_rows", "run_intervals", "has_flat_interval",
           "FLAT_INTERVAL_NOTE",
           "score_headline", "test_size_note", "MIN_RELIABLE", "N_BOOT", "METHOD"]

MIN_RELIABLE = 30   # fewer test images of a class than this earns a warning
N_BOOT = 1000
# Stored with every run's intervals; runs stored with another method get theirs computed again when read.
METHOD = ("Wilson score interval (accuracy, recall); percentile bootstrap (macro-F1 over the classes present, "
          "average precision)")
# Said wherever a score shows "(no interval)": the Wilson interval always has a width, the bootstrap's not always.
FLAT_INTERVAL_NOTE = ("A score marked 'no interval' came out the same in every resample of the test images, as "
                      "happens when every image is answered right, so the bootstrap cannot give it a range; that "
                      "does not mean that new images would score the same.")


def resample_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) counts: how often each image appears in each bootstrap resample."""
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = (idx + np.arange(n_boot)[:, None] * n).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def weighted_average_precision(scores: np.ndarray, positive: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision for each row of ``weights`` (B, N): scikit-learn's definition with sample weights.

    AP = sum over thresholds of (recall gain) x precision; tied scores form one threshold. NaN where a
    row has no positive weight.
    """
    scores = np.asarray(scores, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, pos = scores[order], np.asarray(positive, dtype=bool)[order]
    w = np.atleast_2d(weights)[:, order]
    ends = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # last image of each group of tied scores
    tp = np.cumsum(w * pos, axis=1)[:, ends]
    fp = np.cumsum(w, axis=1)[:, ends] - tp
    total = tp[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall = tp / total
        gain = np.diff(recall, axis=1, prepend=0.0)
        ap = (gain * precision).sum(axis=1)
    return np.where(total[:, 0] > 0, ap, np.nan)


def proportion_interval(successes: int, n: int, level: float = 0.95) -> dict | None:
    """Wilson score interval of the share ``successes / n`` (None when ``n`` is 0).

    The same numbers as ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")`` (the tests check it),
    written out because importing scipy.stats would add a second to every training process's start."""
    if n <= 0:
        return None
    z = NormalDist().inv_cdf(0.5 + level / 2)
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return {"estimate": share, "low": float(max(0.0, centre - half)), "high": float(min(1.0, centre + half))}


def test_size_note(test_counts: Mapping[str, int], name: Callable[[str], str] = str) -> str | None:
    """Before any run: what the test split's size per class allows a recall to say, when a class has fewer than
    :data:`MIN_RELIABLE` test images (None otherwise). ``name`` writes class names (the app escapes them)."""
    few = {c: n for c, n in test_counts.items() if 0 < n < MIN_RELIABLE}
    if not few or not sum(test_counts.values()):
        return None
    smallest = min(few.values())
    listed = _and([f"{n} {name(class_word(c))}" for c, n in few.items()])
    steps = sorted({round(100 / n) for n in few.values()})
    moves = f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}–{steps[-1]}"
    low = proportion_interval(smallest, smallest)["low"]
    found = {1: "with 1 test image, even finding it", 2: "with 2 test images, even both found"}.get(
        smallest, f"with {smallest} test images, even all {smallest} found")
    return (f"The test split holds only {listed} image{'s' if len(few) > 1 or smallest > 1 else ''}. Each one moves "
            f"its class's recall by {moves} percentage points, and {found} gives a 95% interval from {low:.0%} to "
            "100%. Read a run's recall of "
            f"{'these classes' if len(few) > 1 else 'this class'} as rough; cross-validation ('Cross-validation "
            "folds' on the Train page) tests every train + val image once instead.")


def _interval(estimate: float | None, samples: np.ndarray, level: float) -> dict | None:
    if estimate is None or np.isnan(estimate):
        return None
    samples = samples[~np.isnan(samples)]
    if not len(samples):
        return {"estimate": float(estimate), "low": None, "high": None}
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return {"estimate": float(estimate), "low": float(low), "high": float(high)}


def metric_intervals(y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str], n_boot: int = N_BOOT,
                     level: float = 0.95, seed: int = 0) -> dict:
    """Intervals for accuracy, macro-F1, and each class's recall and AP (see the module's docstring).

    The estimates are the usual metrics on all images (the same numbers as
    :func:`medcls.metrics.classification_metrics`). Accuracy and recall: Wilson score intervals. Macro-F1 and
    AP: ``low``/``high`` bound the middle ``level`` share of the bootstrap resamples' values. A metric that is
    undefined (a class without test images) is None.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n, k = len(y_true), len(classes)
    result: dict = {"method": METHOD, "n_boot": int(n_boot), "level": float(level), "seed": seed,
                    "n": int(n), "accuracy": None, "macro_f1": None, "per_class": {}}
    if n == 0:
        return result
    y_pred = probs.argmax(axis=1)
    ones = np.ones((1, n))
    weights = np.vstack([ones, resample_counts(n, n_boot, np.random.default_rng(seed))])  # row 0: the data
    is_true = (y_true[:, None] == np.arange(k)).astype(np.float64)   # (N, K)
    is_pred = (y_pred[:, None] == np.arange(k)).astype(np.float64)
    tp = weights @ (is_true * is_pred)          # (B+1, K)
    support = weights @ is_true
    predicted = weights @ is_pred
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), 0.0)
    macro_f1 = macro_over_present(f1, support, predicted)   # (B+1,): a class a resample lacks is not a 0
    result["accuracy"] = proportion_interval(int(tp[0].sum()), n, level)
    result["macro_f1"] = _interval(macro_f1[0], macro_f1[1:], level)
    for i, name in enumerate(classes):
        positive = y_true == i
        defined = bool(positive.any()) and not bool(positive.all())
        ap = weighted_average_precision(probs[:, i], positive, weights) if defined else None
        result["per_class"][name] = {
            "support": int(positive.sum()),
            "recall": proportion_interval(int(tp[0, i]), int(positive.sum()), level),
            "average_precision": _interval(ap[0], ap[1:], level) if ap is not None else None,
        }
    return result


def format_interval(ci: Mapping | None, percent: bool = False) -> str:
    """'0.85 (0.78–0.91)' or '85% (78–91%)'; '–' when undefined; '1.00 (no interval)' for a bootstrap range of
    no width (see :data:`FLAT_INTERVAL_NOTE`), which would otherwise read as certainty."""
    if not ci:
        return "–"
    fmt = (lambda v: f"{v * 100:.0f}") if percent else (lambda v: f"{v:.2f}")
    unit = "%" if percent else ""
    if ci.get("low") is None:
        return f"{fmt(ci['estimate'])}{unit}"
    if _flat(ci):
        return f"{fmt(ci['estimate'])}{unit} (no interval)"
    return f"{fmt(ci['estimate'])}{unit} ({fmt(ci['low'])}–{fmt(ci['high'])}{unit})"


def score_headline(intervals: Mapping, focus_class: str = "") -> str:
    """One sentence for a tested run: accuracy, macro-F1 and the focus class's recall on the test images, each with
    its 95% interval, and the focus class's images as 'k of n found' (3 test images of a class read very
    differently from 300). '' when there were no test images."""
    n = intervals.get("n") or 0
    if not n:
        return ""
    parts = [f"accuracy {format_interval(intervals.get('accuracy'))}",
             f"macro-F1 {format_interval(intervals.get('macro_f1'))}"]
    focus = (intervals.get("per_class") or {}).get(focus_class) if focus_class else None
    if focus and focus.get("recall"):
        support = focus.get("support", 0)
        found = round(focus["recall"]["estimate"] * support)
        parts.append(f"{class_word(focus_class)} recall {format_interval(focus['recall'])}, {found:,} of its "
                     f"{support:,} image{'' if support == 1 else 's'} found")
    flat = f" {FLAT_INTERVAL_NOTE}" if _flat(intervals.get("macro_f1")) else ""  # the one bootstrap score shown here
    return (f"On its {n:,} test image{'' if n == 1 else 's'}: " + ", ".join(parts)
            + ". In brackets: the 95% interval, where the score on new images of the same kind could lie." + flat)


def interval_rows(intervals: Mapping[str, Mapping], focus_class: str = "") -> list[dict[str, str]]:
    """One table row per run: every metric as 'estimate (low–high)', the focus class's first; '–' where a run
    has no such class (runs with different class lists share one table)."""
    rows = []
    for run_id, ci in intervals.items():
        row = {"run": run_id, "accuracy": format_interval(ci.get("accuracy")),
               "macro-F1": format_interval(ci.get("macro_f1"))}
        per_class = sorted(ci.get("per_class", {}).items(), key=lambda item: item[0] != focus_class)
        for name, c in per_class:
            row[f"{name} recall"] = format_interval(c.get("recall"))
            row[f"{name} AP"] = format_interval(c.get("average_precision"))
        rows.append(row)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    focus = [c for c in columns if focus_class and c.startswith(f"{focus_class} ")]
    ordered = ["run"] + focus + [c for c in columns if c != "run" and c not in focus]
    return [{c: row.get(c, "–") for c in ordered} for row in rows]


def small_class_warnings(intervals_by_run: Mapping[str, Mapping], minimum: int = MIN_RELIABLE,
                         split: str = "test") -> list[str]:
    """Plain-language warnings for classes with fewer than ``minimum`` images in the split.

    ``intervals_by_run`` maps run ids to :func:`metric_intervals` results; runs that share a test set
    share one warning, which lists each run's recall interval. Classes with the same number of images share one
    warning too (fifteen classes of 6 test images each are one box, not fifteen).
    """
    by_size: dict[int, dict[str, list[tuple[str, Mapping | None]]]] = {}
    for run_id, intervals in intervals_by_run.items():
        for name, c in intervals.get("per_class", {}).items():
            if c.get("support", 0) < minimum:
                by_size.setdefault(c.get("support", 0), {}).setdefault(name, []).append((run_id, c.get("recall")))
    return [_small_classes_warning(n, classes, split) for n, classes in by_size.items()]


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _small_classes_warning(n: int, classes: Mapping[str, list[tuple[str, Mapping | None]]], split: str) -> str:
    """One warning for the classes that have ``n`` images in the split; ``classes`` maps each to its
    (run id, recall interval) per run."""
    names = list(classes)
    listed = _and([class_word(name) for name in names])
    if n == 0 and len(names) == 1:
        return f"There are no {listed} {split} images, so nothing can be said about how well the model finds {listed}."
    if n == 0:
        return f"There are no {split} images of {listed}, so nothing can be said about how well the model finds them."

    def spans(runs: list[tuple[str, Mapping | None]]) -> str:
        ranges = [(run_id, ci) for run_id, ci in runs if ci and ci.get("low") is not None]
        return ", ".join(f"{ci['low']:.0%} to {ci['high']:.0%}" + (f" ({run_id})" if len(runs) > 1 else "")
                         for run_id, ci in ranges)

    by_class = {name: spans(runs) for name, runs in classes.items()}
    images = f"{n} {split} image{'s' if n != 1 else ''}"
    if len(names) == 1:
        text = (f"Only {n} {listed} {split} image{'s' if n != 1 else ''}: each one moves {listed} recall by "
                f"{100 / n:.0f} percentage points.")
    else:
        text = (f"Only {images} of each of {listed}: each one moves that class's recall by {100 / n:.0f} "
                "percentage points.")
    known = {name: span for name, span in by_class.items() if span}
    if len(set(known.values())) == 1 and len(known) == len(names):
        subject = f"{listed} recall" if len(names) == 1 else "each one's recall"
        text += (f" The 95% interval for {subject} runs from {next(iter(known.values()))}: on new images of the "
                 "same kind it could be anywhere in that range.")
    elif known:
        alike: dict[str, list[str]] = {}
        for name, span in known.items():
            alike.setdefault(span, []).append(name)
        text += (" The 95% intervals for their recall: " + "; ".join(f"{span} for {_and(list(map(class_word, group)))}"
                                                                    for span, group in alike.items())
                 + ". On new images of the same kind each could be anywhere in its range.")
    return text + " Differences of a few percent between runs may be chance."


def _flat(ci: Mapping | None) -> bool:
    return bool(ci) and ci.get("low") is not None and ci["low"] == ci["high"]


def has_flat_interval(intervals: Mapping[str, Mapping]) -> bool:
    """Whether a bootstrap interval (macro-F1, AP) of any run has no width: every resample gave the same value,
    as for a perfect score, which says nothing about new images (:data:`FLAT_INTERVAL_NOTE`)."""
    return any(_flat(ci.get("macro_f1")) or any(_flat(c.get("average_precision"))
                                                for c in ci.get("per_class", {}).values())
               for ci in intervals.values())


def run_intervals(store: RunStore, run_id: str, split: str = "test", metrics: RunMetrics | None = None) -> dict:
    """The intervals stored with a run, or computed now from its predictions (runs from before intervals were
    stored, or stored by another method: the bootstrap's "100% to 100%" for a recall of 20 of 20). ``metrics``: the
    run's metrics when already read."""
    metrics = metrics if metrics is not None else store.metrics(run_id)
    stored = metrics.intervals.get(split) if metrics else None
    if stored and stored.get("method") == METHOD:
        return stored
    try:
        p = store.predictions(run_id, split)
    except (RunNotFoundError, RecordError):
        if stored:
            return stored
        raise
    return metric_intervals(p.y_true, p.probs, p.classes)
