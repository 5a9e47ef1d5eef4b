"""Two runs judged on the same test images, compared image by image.

Only the images that one run got right and the other wrong say anything about
which of the two is better; the images both got right (or both wrong) say
nothing. McNemar's exact test asks how likely so uneven a split of those images
is if neither run were better, and p < 0.05 is called a clear difference on
these test images. That is much sharper than asking whether the two runs' 95%
intervals overlap: each interval also carries the luck of which images ended up
in the test split, and two runs tested on the same images share that luck.
(BUSI's rare-classes lesson: the fixes found 6-7 malignant images that no fix
missed and missed none it found, p = 0.02-0.03, while the intervals overlapped.)

Neither test sees what another seed or other test images would give: a clear
difference is one of these runs, on these images. Accuracy and one class's
recall count images, so they can be compared this way; macro-F1 and average
precision count none and keep their intervals (``uncertainty.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..data.spec import class_word
from ..runs.results import Predictions

__all__ = ["PairedDifference", "PairedFinding", "paired_difference", "right_per_image", "change_phrase",
           "describe_paired", "image_by_image", "count_words", "MEASURES", "CLEAR_P"]

# The measures that count images, so that two runs can be compared image by image (macro-F1 counts none).
MEASURES = ("accuracy", "focus_recall")
CLEAR_P = 0.05   # the conventional line; the page says that with many comparisons some will cross it by chance
_SAME = 1e-9


@dataclass(frozen=True)
class PairedDifference:
    """Two runs on the same images: the images only the first got right, only the second, and McNemar's exact
    two-sided p-value for so uneven a split of them (1.0 when none differ)."""

    only_first: int
    only_second: int
    p_value: float

    @property
    def clear(self) -> bool:
        return self.p_value < CLEAR_P


def paired_difference(first: Sequence[bool], second: Sequence[bool]) -> PairedDifference:
    """McNemar's exact test: ``first[i]`` and ``second[i]`` say whether each run got image i right."""
    from scipy.stats import binomtest

    a, b = np.asarray(first, bool), np.asarray(second, bool)
    if a.shape != b.shape:
        raise ValueError(f"Both runs must be judged on the same images ({a.size} against {b.size}).")
    only_first, only_second = int((a & ~b).sum()), int((b & ~a).sum())
    differ = only_first + only_second
    p = binomtest(only_first, differ, 0.5).pvalue if differ else 1.0
    return PairedDifference(only_first, only_second, float(p))


def right_per_image(predictions: Predictions, measure: str, focus_class: str = "") -> dict[str, bool] | None:
    """Per test image the measure counts (by path), whether the run's answer (its most probable class) was right:
    every image for ``accuracy``, the focus class's images for ``focus_recall``; None for a measure that counts no
    images (macro-F1) or a focus class the run does not have."""
    if measure not in MEASURES:
        return None
    answers = predictions.probs.argmax(1)
    if measure == "accuracy":
        return {path: bool(a == t) for path, a, t in zip(predictions.paths, answers, predictions.y_true)}
    if focus_class not in predictions.classes:
        return None
    focus = predictions.classes.index(focus_class)
    return {path: bool(a == focus) for path, a, t in zip(predictions.paths, answers, predictions.y_true)
            if t == focus}


def count_words(n: int, unit: str) -> str:
    """'1 test image', '3 test images'."""
    return f"{n} {unit}{'' if n == 1 else 's'}"


def change_phrase(first_label: str, first_value: float, second_label: str, second_value: float, words: str) -> str:
    """'B raised accuracy from 0.80 (A) to 0.85' ('' when both gave the same value)."""
    diff = second_value - first_value
    if abs(diff) < _SAME:
        return ""
    verb = "raised" if diff > 0 else "lowered"
    return f"{second_label} {verb} {words} from {first_value:.2f} ({first_label}) to {second_value:.2f}"


def _second_against_first(first_right: Mapping[str, bool], second_right: Mapping[str, bool]) -> PairedDifference:
    images = sorted(first_right)
    return paired_difference([second_right[i] for i in images], [first_right[i] for i in images])


def describe_paired(change: str, first_label: str, first_right: Mapping[str, bool], second_label: str,
                    second_right: Mapping[str, bool], unit: str, found: bool) -> tuple[str, PairedDifference]:
    """The change (from :func:`change_phrase`) judged image by image: the sentence and the test. ``found``: the
    images are one class's, and right means found. Both mappings must hold the same images."""
    test = _second_against_first(first_right, second_right)
    images = first_right
    right, wrong = ("found", "missed") if found else ("got right", "got wrong")
    split = (f"image by image, {second_label} {right} {count_words(test.only_first, unit)} that {first_label} {wrong}, "
             f"and {wrong} {test.only_second} that it {right}")
    if not test.clear:
        return (f"{change}, but {split}: a split that chance gives easily (exact McNemar test, "
                f"p = {test.p_value:.2f}), so this difference could be chance.", test)
    return (f"{change}: {split}. Chance gives so uneven a split with probability {test.p_value:.3f} (exact McNemar "
            f"test), so this is a clear difference on these {count_words(len(images), unit)}.", test)


@dataclass(frozen=True)
class PairedFinding:
    """One measure of one run against the reference run, on the images both were tested on."""

    reference: str
    other: str
    measure: str          # 'accuracy' or 'focus_recall'
    sentence: str
    test: PairedDifference


def _truth(predictions: Predictions) -> dict[str, str]:
    return {path: predictions.classes[t] for path, t in zip(predictions.paths, predictions.y_true)}


def image_by_image(predictions: Mapping[str, Predictions], focus_class: str = "") -> tuple[list[PairedFinding],
                                                                                            list[str]]:
    """Each run against the first (the reference), on accuracy and the focus class's recall, where both were tested
    on the same images with the same labels; and a note for each run that was not (it can be compared by its
    intervals only). ``predictions`` maps a run's display name to its test predictions."""
    labels = list(predictions)
    if len(labels) < 2:
        return [], []
    reference = labels[0]
    truth = _truth(predictions[reference])
    words_of = {"accuracy": ("accuracy", "test image"),
                "focus_recall": (f"{class_word(focus_class)} recall", f"{class_word(focus_class)} test image")}
    ref_right = {measure: right_per_image(predictions[reference], measure, focus_class) for measure in MEASURES}
    findings, notes = [], []
    for other in labels[1:]:
        if _truth(predictions[other]) != truth:
            notes.append(f"{other} was not tested on the same images as {reference} (or they are labelled "
                         "differently), so the two can only be compared by their intervals.")
            continue
        for measure in MEASURES:
            words, unit = words_of[measure]
            first = ref_right[measure]
            second = right_per_image(predictions[other], measure, focus_class)
            if not first or second is None:
                continue
            first_value, second_value = float(np.mean(list(first.values()))), float(np.mean(list(second.values())))
            found = measure == "focus_recall"
            change = change_phrase(reference, first_value, other, second_value, words)
            if change:
                sentence, test = describe_paired(change, reference, first, other, second, unit, found)
            else:
                test = _second_against_first(first, second)
                right = "found" if found else "got right"
                sentence = (f"{other} gave the same {words} as {reference} ({first_value:.2f}) on these "
                            f"{count_words(len(first), unit)}" + (
                                f"; image by image, each {right} {test.only_first} that the other did not."
                                if test.only_first else f", and {right} the very same ones."))
            findings.append(PairedFinding(reference, other, measure, sentence, test))
    return findings, notes
