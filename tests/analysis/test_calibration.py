"""Calibration: reliability bins and the expected calibration error."""

from __future__ import annotations

import numpy as np
import pytest

from medcls.analysis.calibration import (
    calibration_sentence,
    expected_calibration_error,
    reliability,
)


def _top_label_data(n: int, confidence: np.ndarray, accuracy: np.ndarray, seed: int = 0, k: int = 3):
    """Probabilities whose top class has ``confidence``; it is the true class with probability ``accuracy``."""
    rng = np.random.default_rng(seed)
    top = rng.integers(0, k, n)
    probs = np.repeat(((1 - confidence) / (k - 1))[:, None], k, axis=1)
    probs[np.arange(n), top] = confidence
    right = rng.random(n) < accuracy
    y_true = np.where(right, top, (top + rng.integers(1, k, n)) % k)
    return y_true, probs


def test_perfectly_calibrated_data_has_ece_near_zero():
    n = 20000
    conf = np.random.default_rng(1).uniform(0.4, 1.0, n)
    y_true, probs = _top_label_data(n, conf, conf)
    assert expected_calibration_error(y_true, probs) < 0.02
    rel = reliability(y_true, probs)
    for c, o in zip(rel["confidence"], rel["observed"]):
        if c is not None:
            assert o == pytest.approx(c, abs=0.05)
    assert "well calibrated" in calibration_sentence(rel)
    assert "mostly judges" not in calibration_sentence(rel)  # spread over bins: no crowded-bin caveat


def test_overconfident_data_has_large_ece():
    n = 5000
    y_true, probs = _top_label_data(n, np.full(n, 0.99), np.full(n, 0.6))
    ece = expected_calibration_error(y_true, probs)
    assert ece == pytest.approx(0.39, abs=0.03)
    text = calibration_sentence(reliability(y_true, probs))
    assert "overconfident" in text and "poorly" in text


def test_bins_count_every_image_once_including_confidence_one():
    probs = np.array([[1.0, 0.0], [0.55, 0.45], [0.05, 0.95], [0.5, 0.5]])
    y_true = np.array([0, 1, 1, 0])
    rel = reliability(y_true, probs, n_bins=10)
    assert sum(rel["count"]) == 4 and rel["n"] == 4
    assert rel["count"][9] == 2       # 1.0 and 0.95 both in the top bin
    assert rel["count"][5] == 2       # 0.55 and 0.5
    assert rel["observed"][5] == pytest.approx(0.5)
    assert rel["confidence"][0] is None  # empty bins are None, not zero


def test_class_calibration_uses_that_class_probability():
    # malignant probability 0.3 on 1,000 images of which 300 are malignant: perfect for that class
    y_true = np.array([1] * 300 + [0] * 700)
    probs = np.tile([0.7, 0.3], (1000, 1))
    rel = reliability(y_true, probs, class_index=1)
    assert rel["kind"] == "class" and rel["ece"] == pytest.approx(0.0, abs=1e-9)
    assert reliability(y_true, probs)["ece"] == pytest.approx(0.0, abs=1e-9)  # top label 0.7, right 70%
    with pytest.raises(ValueError, match="bin"):
        reliability(y_true, probs, n_bins=0)


def test_sentence_says_when_one_bin_holds_most_images():
    # a rare class: 332 easy negatives the model is sure of, 8 uncertain images; the ECE is tiny but says
    # little about the uncertain ones, and the sentence must say so
    y_true = np.array([0] * 332 + [1] * 4 + [0] * 4)
    probs = np.vstack([np.tile([0.999, 0.001], (332, 1)), np.tile([0.4, 0.6], (8, 1))])
    rel = reliability(y_true, probs)
    text = calibration_sentence(rel)
    assert rel["ece"] < 0.05 and "well calibrated" in text
    assert "332 of 340 images got 90%–100%" in text and "other 8" in text and "that class's probability" in text
    class_text = calibration_sentence(reliability(y_true, probs, class_index=1))
    assert "332 of 340 images got 0%–10%" in class_text and "that class's" not in class_text


def test_crowded_bin_sentence_counts_the_images_outside_it():
    # 58 sure images and one unsure: "the other one is", not "the other 1 are"
    probs = np.array([[0.99, 0.01]] * 58 + [[0.55, 0.45]])
    y_true = np.zeros(59, dtype=int)
    text = calibration_sentence(reliability(y_true, probs))
    assert "58 of 59 images" in text and "the other one is in the diagram's other bins" in text
    probs = np.array([[0.99, 0.01]] * 58 + [[0.55, 0.45], [0.65, 0.35]])
    text = calibration_sentence(reliability(np.zeros(60, dtype=int), probs))
    assert "the other 2 are in the diagram's other bins" in text


def test_counts_in_the_sentence_are_written_with_thousands_separated():
    probs = np.array([[0.99, 0.01]] * 1441 + [[0.55, 0.45]] * 59)
    text = calibration_sentence(reliability(np.zeros(1500, dtype=int), probs))
    assert "1,500 images)" in text and "1,441 of 1,500 images got 90%–100%" in text, text
