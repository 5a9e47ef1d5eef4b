"""Operating points: thresholds, sensitivity/specificity/PPV/NPV, the grouped binary view."""

from __future__ import annotations

import numpy as np
import pytest

from medcls.analysis.metrics import softmax
from medcls.analysis.operating_point import (
    BinaryView,
    confusion_at,
    default_positive_group,
    describe_most_probable_class,
    describe_operating_point,
    most_probable_class_point,
    operating_point,
    threshold_for_sensitivity,
    threshold_sweep,
)

CLASSES = ["benign", "malignant", "normal"]


@pytest.fixture
def predictions():
    rng = np.random.default_rng(3)
    y_true = rng.integers(0, 3, 300)
    probs = softmax(rng.normal(size=(300, 3)) + np.eye(3)[y_true] * 1.2)
    return y_true, probs


def test_operating_point_counts_and_rates_by_hand():
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.4, 0.1, 0.7, 0.3, 0.2, 0.2, 0.1, 0.0])
    op = operating_point(truth, scores, 0.35)
    assert (op["tp"], op["fn"], op["fp"], op["tn"]) == (3, 1, 1, 5)
    assert op["sensitivity"] == pytest.approx(3 / 4)
    assert op["specificity"] == pytest.approx(5 / 6)
    assert op["ppv"] == pytest.approx(3 / 4)
    assert op["npv"] == pytest.approx(5 / 6)
    assert op["matrix"] == [[5, 1], [1, 3]]  # rows true (neg, pos), columns predicted (neg, pos)
    # score == threshold counts as flagged
    assert confusion_at(truth, scores, 0.4)["tp"] == 3
    # nothing flagged: PPV undefined, not a made-up number
    assert operating_point(truth, scores, 1.5)["ppv"] is None


def test_lower_threshold_never_lowers_sensitivity(predictions):
    y_true, probs = predictions
    view = BinaryView.of(CLASSES, ["malignant"])
    sweep = threshold_sweep(view.truth(y_true), view.scores(probs))
    sens = sweep["sensitivity"]
    assert sens[0] == 1.0 and np.all(np.diff(sens) <= 1e-12)
    spec = sweep["specificity"]
    assert np.all(np.diff(spec) >= -1e-12)
    # the vectorised sweep agrees with the one-threshold function
    for i in (0, 37, 100, 150):
        op = operating_point(view.truth(y_true), view.scores(probs), sweep["threshold"][i])
        assert sweep["sensitivity"][i] == pytest.approx(op["sensitivity"])
        assert sweep["specificity"][i] == pytest.approx(op["specificity"])


@pytest.mark.parametrize("target", [0.8, 0.9, 0.95, 1.0])
def test_threshold_for_sensitivity_reaches_the_target_and_is_the_highest(predictions, target):
    y_true, probs = predictions
    view = BinaryView.of(CLASSES, ["malignant"])
    truth, scores = view.truth(y_true), view.scores(probs)
    t = threshold_for_sensitivity(truth, scores, target)
    assert operating_point(truth, scores, t)["sensitivity"] >= target
    # any higher threshold (the next distinct score up) misses the target
    higher = scores[scores > t]
    if len(higher):
        assert operating_point(truth, scores, higher.min())["sensitivity"] < target
    # rounded down to a slider step, it still reaches the target
    snapped = threshold_for_sensitivity(truth, scores, target, resolution=0.001)
    assert snapped <= t and t - snapped < 0.001 + 1e-12
    assert abs(snapped * 1000 - round(snapped * 1000)) < 1e-6
    assert operating_point(truth, scores, snapped)["sensitivity"] >= target


def test_threshold_for_sensitivity_explains_impossible_requests():
    with pytest.raises(ValueError, match="no positive"):
        threshold_for_sensitivity(np.zeros(5, bool), np.linspace(0, 1, 5), 0.95)
    with pytest.raises(ValueError, match="between 0 and 1"):
        threshold_for_sensitivity(np.ones(5, bool), np.linspace(0, 1, 5), 95)


def test_grouped_view_merges_classes_and_sums_probabilities(predictions):
    y_true, probs = predictions
    view = BinaryView.of(CLASSES, ["malignant", "benign"])
    assert view.positive == ("benign", "malignant")  # run order
    assert view.positive_label == "benign + malignant" and view.negative_label == "normal"
    np.testing.assert_allclose(view.scores(probs), 1 - probs[:, 2])
    np.testing.assert_array_equal(view.truth(y_true), y_true != 2)
    single = BinaryView.of(CLASSES, ["malignant"])
    assert single.negative_label == "not malignant"


def test_binary_view_refuses_empty_full_or_unknown_groups():
    with pytest.raises(ValueError, match="at least one"):
        BinaryView.of(CLASSES, [])
    with pytest.raises(ValueError, match="every class"):
        BinaryView.of(CLASSES, CLASSES)
    with pytest.raises(ValueError, match="cancer"):
        BinaryView.of(CLASSES, ["cancer"])


@pytest.mark.parametrize("classes, expected", [
    (["benign", "malignant", "normal"], ["benign", "malignant"]),
    (["Normal", "abnormal"], ["abnormal"]),
    (["benign", "cancer"], ["cancer"]),
    (["healthy", "pneumonia", "covid"], ["pneumonia", "covid"]),
])
def test_default_positive_group(classes, expected):
    assert default_positive_group(classes) == expected


def test_description_names_the_counts():
    truth = np.array([1, 1, 0, 0, 0], bool)
    op = operating_point(truth, np.array([0.9, 0.2, 0.6, 0.1, 0.0]), 0.5)
    text = describe_operating_point(op, BinaryView.of(CLASSES, ["malignant"]))
    assert "1 of 2" in text and "1 of 3" in text and "0.500" in text
    many = operating_point(np.repeat(truth, 1000), np.repeat([0.9, 0.2, 0.6, 0.1, 0.0], 1000), 0.5)
    text = describe_operating_point(many, BinaryView.of(CLASSES, ["malignant"]))
    assert "**1,000 of 2,000**" in text and "**1,000 of 3,000**" in text, text


def test_the_runs_own_answers_are_the_most_probable_class_not_a_threshold_of_one_half():
    # Image 0: malignant is most probable at 0.45, under 0.5. Image 2: benign + malignant sum to 0.6, but normal
    # is the most probable class.
    y_true = np.array([1, 1, 2, 0])
    probs = np.array([[0.35, 0.45, 0.20], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4], [0.7, 0.2, 0.1]])
    malignant = BinaryView.of(CLASSES, ["malignant"])
    own = most_probable_class_point(y_true, probs, malignant)
    assert (own["tp"], own["fn"], own["fp"], own["tn"]) == (2, 0, 0, 2) and own["sensitivity"] == 1.0
    at_half = operating_point(malignant.truth(y_true), malignant.scores(probs), 0.5)
    assert at_half["tp"] == 1  # the 0.45 image is missed by the threshold
    text = describe_most_probable_class(own, at_half, malignant)
    assert "flag 2 of 2 malignant test images" in text and "threshold 0.500 flags 1 and 0" in text
    assert "under 0.5" in text

    lesion = BinaryView.of(CLASSES, ["benign", "malignant"])
    own = most_probable_class_point(y_true, probs, lesion)
    assert (own["tp"], own["fp"]) == (3, 0)  # image 2 is answered 'normal'
    assert operating_point(lesion.truth(y_true), lesion.scores(probs), 0.5)["fp"] == 1

    same = operating_point(malignant.truth(y_true), malignant.scores(probs), 0.45)
    assert describe_most_probable_class(most_probable_class_point(y_true, probs, malignant), same,
                                        malignant).endswith("the same as threshold 0.450.")
