"""Test images that are copies of images a run learned from: how many, and the score without them.

A test score measures a model on new images only when the test images are new. Public datasets hold the same scan
more than once (re-exported, cropped a little, with or without calipers), and a split made image by image puts
copies on both sides: BUSI's fixed ``split.csv`` has 45 of its 118 test images with a copy among its train and
validation images. A right answer on such an image shows what the model remembers. So every run records which of
its test images have a copy among the images it learned from (train, and validation when fold models train on
it or a best epoch is chosen by it: :func:`learning_splits`), by the Data explorer's rule for a copy
(:mod:`medcls.data.health`: near-duplicate groups whose hashes or pixels are closer than chance), and the pages
show the score on the other test images beside the whole split's.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from ..data.spec import class_word
from ..runs.lifecycle import RunNotFoundError
from ..runs.records import RecordError
from ..runs.results import Predictions, RunMetrics
from ..runs.store import RunStore
from .metrics import SplitMetrics, classification_metrics

__all__ = ["MAX_CHECKED_IMAGES", "LEARNING_SPLITS", "learning_splits", "copied_test_images", "metrics_without",
           "copies_sentence", "run_copies_sentence"]

log = logging.getLogger(__name__)

MAX_CHECKED_IMAGES = 20_000   # hashing more at the end of a run would take minutes (about 1.6 ms an image)
LEARNING_SPLITS = ("train", "val")  # fold models train on validation images, and a best epoch is chosen by them


def learning_splits(folds: int, keeps_last: bool) -> tuple[str, ...]:
    """The splits a run learned from: one model that keeps its last epoch learns from its training images only
    (its validation images only draw its curves); fold models train on the validation images, and a run that
    keeps its best epoch chooses it by them."""
    return ("train",) if keeps_last and not folds else LEARNING_SPLITS


def copied_test_images(items: Sequence[tuple[str, str]],
                       learning: Sequence[str] = LEARNING_SPLITS) -> tuple[str, ...] | None:
    """The test items (path, split) with a near copy among the items of the ``learning`` splits (the run's
    :func:`learning_splits`).

    None when it cannot be checked: no test split, or more than ``MAX_CHECKED_IMAGES`` images. Fingerprints
    are cached by file contents, so a dataset the Data explorer or a duplicate-grouped split has seen costs
    no decoding.
    """
    if not any(split == "test" for _, split in items):
        return None
    if len(items) > MAX_CHECKED_IMAGES:
        log.info("%d images: test images not checked for copies (more than %d)", len(items), MAX_CHECKED_IMAGES)
        return None
    from ..data.health import duplicate_pairs, group_ids, image_hashes  # scipy: only when a run has ended

    paths = [path for path, _ in items]
    pairs = duplicate_pairs(image_hashes(paths))
    groups = group_ids(len(paths), pairs.first, pairs.second)
    learned = {group for group, (_, split) in zip(groups, items) if split in learning}
    return tuple(path for group, (path, split) in zip(groups, items) if split == "test" and group in learned)


def metrics_without(paths: Sequence[str], y_true: np.ndarray, probs: np.ndarray, classes: Sequence[str],
                    copies: Sequence[str]) -> SplitMetrics | None:
    """The metrics of the predictions whose path is not among ``copies``; None when no image is left."""
    drop = set(copies)
    keep = np.array([path not in drop for path in paths], dtype=bool)
    if not keep.any():
        return None
    return classification_metrics(np.asarray(y_true)[keep], np.asarray(probs)[keep], classes)


def _score(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def copies_sentence(test_images: int, copies: Sequence[str], whole: SplitMetrics, without: SplitMetrics | None,
                    focus: str = "") -> str:
    """What the copies do to the test score, in plain words (Markdown-free); '' when there are none."""
    if not copies:
        return ""
    k = len(copies)
    have = "has" if k == 1 else "have"
    text = (f"{k:,} of the {test_images:,} test images ({k / max(test_images, 1):.0%}) {have} a near copy among the "
            "images this run learned from: a right answer on a copy shows what the model remembers, not how it does "
            "on new images, so the whole split's score mixes the two.")
    if without is None:
        return text + " Every test image has a copy: this test split says nothing about new images."
    focus_words = ""
    if focus and whole.recall(focus) is not None and without.recall(focus) is not None:
        focus_words = (f", {class_word(focus)} recall {_score(without.recall(focus))} "
                       f"(against {_score(whole.recall(focus))})")
    return (text + f" On the {without.n:,} test images without a copy: macro-F1 {_score(without.macro_f1)} (against "
            f"{_score(whole.macro_f1)} on all {whole.n:,}){focus_words}." + _copies_scored_lower(whole, without, focus))


def _copies_scored_lower(whole: SplitMetrics, without: SplitMetrics, focus: str) -> str:
    """People expect copies to raise a score; when they lowered it (as BUSI's hard malignant copies can), say so,
    judged on the figures as shown (3 decimals)."""
    def lower(a: float | None, b: float | None) -> bool:
        return a is not None and b is not None and round(a, 3) < round(b, 3)

    f1_lower = lower(whole.macro_f1, without.macro_f1)
    recall_lower = bool(focus) and lower(whole.recall(focus), without.recall(focus))
    if f1_lower and recall_lower:
        what = f"macro-F1 and {class_word(focus)} recall are"
    elif f1_lower or recall_lower:
        what = "macro-F1 is" if f1_lower else f"{class_word(focus)} recall is"
    else:
        return ""
    return (f" Here {what} higher without the copies: the model answered the copies worse than the new images, so "
            "it did not simply remember them.")


def run_copies_sentence(store: RunStore, run_id: str, metrics: RunMetrics | None = None,
                        test: Predictions | None = None) -> str:
    """:func:`copies_sentence` for a run's recorded copies and test predictions (pass them when already read);
    '' when it has none (or runs from before they were recorded, or whose predictions are gone)."""
    metrics = metrics if metrics is not None else store.metrics(run_id)
    if metrics is None or not metrics.test_copies or metrics.test is None:
        return ""
    if test is None:
        try:
            test = store.predictions(run_id, "test")
        except (RunNotFoundError, RecordError, FileNotFoundError):
            return ""
    without = metrics_without(test.paths, test.y_true, test.probs, test.classes, metrics.test_copies)
    return copies_sentence(metrics.test.n, metrics.test_copies, metrics.test, without, metrics.focus_class)
