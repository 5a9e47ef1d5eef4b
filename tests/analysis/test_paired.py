"""Runs judged on the same test images, compared image by image (McNemar's exact test)."""

from __future__ import annotations

import numpy as np
import pytest

from medcls.analysis.paired import image_by_image, paired_difference, right_per_image
from medcls.runs.results import Predictions

CLASSES = ["benign", "malignant", "normal"]


def _predictions(truth: list[int], answers: list[int], classes: list[str] = CLASSES,
                 paths: list[str] | None = None) -> Predictions:
    probs = np.full((len(truth), len(classes)), 0.1)
    probs[np.arange(len(truth)), answers] = 0.8
    paths = paths or [f"img{i:03d}.png" for i in range(len(truth))]
    return Predictions("test", paths, np.asarray(truth), probs, classes)


def test_paired_difference_is_mcnemars_exact_test_on_the_images_only_one_run_got_right():
    from scipy.stats import binomtest

    no_fix = [True] * 15 + [False] * 17
    fix = [True] * 15 + [True] * 7 + [False] * 10  # 7 more found, none lost
    test = paired_difference(fix, no_fix)
    assert (test.only_first, test.only_second) == (7, 0)
    assert test.p_value == pytest.approx(2 * 0.5 ** 7) == pytest.approx(binomtest(7, 7).pvalue)  # 0.016
    mixed = paired_difference([True, False, True, False], [False, True, True, False])  # one each way
    assert (mixed.only_first, mixed.only_second, mixed.p_value) == (1, 1, 1.0)
    assert paired_difference([True, False], [True, False]).p_value == 1.0  # no image differs
    with pytest.raises(ValueError, match="same images"):
        paired_difference([True], [True, False])


def test_right_per_image_counts_every_image_for_accuracy_and_the_focus_class_for_its_recall():
    p = _predictions([1, 1, 0, 2], [1, 0, 0, 1])
    assert right_per_image(p, "accuracy") == {"img000.png": True, "img001.png": False, "img002.png": True,
                                              "img003.png": False}
    assert right_per_image(p, "focus_recall", "malignant") == {"img000.png": True, "img001.png": False}
    assert right_per_image(p, "focus_recall", "cancer") is None   # not a class of this run
    assert right_per_image(p, "macro_f1", "malignant") is None    # counts no images


def _lesson_like() -> tuple[Predictions, Predictions]:
    """32 malignant test images: no fix finds 15, the fix finds those and 7 more; 40 benign both get right."""
    truth = [1] * 32 + [0] * 40
    no_fix = [1] * 15 + [0] * 17 + [0] * 40
    fix = [1] * 22 + [0] * 10 + [0] * 40
    return _predictions(truth, no_fix), _predictions(truth, fix)


def test_image_by_image_calls_seven_found_and_none_lost_a_clear_difference_where_intervals_overlap():
    no_fix, fix = _lesson_like()
    findings, notes = image_by_image({"no fix": no_fix, "oversampling": fix}, "malignant")
    assert notes == []
    by_measure = {f.measure: f for f in findings}
    recall = by_measure["focus_recall"]
    assert (recall.reference, recall.other) == ("no fix", "oversampling")
    assert (recall.test.only_first, recall.test.only_second) == (7, 0) and recall.test.clear
    assert recall.sentence.startswith("oversampling raised malignant recall from 0.47 (no fix) to 0.69: image by "
                                      "image, oversampling found 7 malignant test images that no fix missed, and "
                                      "missed 0 that it found.")
    assert "clear difference on these 32 malignant test images" in recall.sentence
    accuracy = by_measure["accuracy"]
    assert accuracy.test.clear and "72 test images" in accuracy.sentence


def test_image_by_image_says_could_be_chance_for_an_even_split():
    truth = [1] * 10 + [0] * 10
    first = _predictions(truth, [1] * 5 + [0] * 5 + [0] * 10)
    second = _predictions(truth, [0] * 3 + [1] * 6 + [0] + [0] * 10)   # finds 6: 4 new, 3 lost
    findings, _ = image_by_image({"A": first, "B": second}, "malignant")
    recall = next(f for f in findings if f.measure == "focus_recall")
    assert (recall.test.only_first, recall.test.only_second) == (4, 3)
    assert not recall.test.clear
    assert "B raised malignant recall from 0.50 (A) to 0.60, but image by image" in recall.sentence
    assert recall.sentence.endswith("so this difference could be chance.")


def test_the_same_score_on_other_images_is_said_and_not_called_no_difference():
    truth = [1] * 10
    first = _predictions(truth, [1] * 6 + [0] * 4)
    second = _predictions(truth, [0] * 2 + [1] * 6 + [0] * 2)   # also 6 of 10, two of them others
    findings, _ = image_by_image({"A": first, "B": second}, "malignant")
    recall = next(f for f in findings if f.measure == "focus_recall")
    assert recall.sentence == ("B gave the same malignant recall as A (0.60) on these 10 malignant test images; "
                               "image by image, each found 2 that the other did not.")
    same, _ = image_by_image({"A": first, "B": first}, "malignant")
    assert same[0].sentence.endswith("and got right the very same ones.")


def test_runs_tested_on_other_images_or_labels_are_not_paired():
    no_fix, fix = _lesson_like()
    other_split = _predictions(list(fix.y_true), list(fix.probs.argmax(1)),
                               paths=[f"other{i}.png" for i in range(len(fix))])
    relabelled = _predictions([0] + list(fix.y_true[1:]), list(fix.probs.argmax(1)))
    findings, notes = image_by_image({"A": no_fix, "B": other_split, "C": relabelled, "D": fix}, "malignant")
    assert {f.other for f in findings} == {"D"}
    assert len(notes) == 2 and notes[0].startswith("B was not tested on the same images as A")
    assert image_by_image({"A": no_fix}, "malignant") == ([], [])


def test_a_focus_class_one_run_lacks_leaves_accuracy_only():
    truth = [0, 1, 0, 1]
    first = _predictions(truth, [0, 1, 0, 0], classes=["benign", "malignant"])
    second = _predictions(truth, [0, 1, 1, 1], classes=["benign", "malignant"])
    findings, _ = image_by_image({"A": first, "B": second}, "cancer")
    assert [f.measure for f in findings] == ["accuracy"]
