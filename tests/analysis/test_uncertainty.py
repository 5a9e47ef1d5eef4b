"""Bootstrap confidence intervals: right estimates, sensible widths, fast, seeded; small-class warnings."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from medcls.analysis.metrics import classification_metrics, softmax
from medcls.analysis.uncertainty import (
    bootstrap_intervals,
    format_interval,
    interval_rows,
    resample_counts,
    run_intervals,
    small_class_warnings,
    weighted_average_precision,
)

CLASSES = ["benign", "malignant", "normal"]


def _predictions(n: int, seed: int = 0, counts: tuple[int, ...] | None = None):
    rng = np.random.default_rng(seed)
    y_true = np.repeat(np.arange(3), counts) if counts else rng.integers(0, 3, n)
    logits = rng.normal(size=(len(y_true), 3)) + np.eye(3)[y_true] * 1.3
    return y_true, softmax(logits)


def _all_intervals(ci):
    yield ci["accuracy"]
    yield ci["macro_f1"]
    for c in ci["per_class"].values():
        yield c["recall"]
        yield c["average_precision"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intervals_contain_the_point_estimate_which_matches_the_metrics(seed):
    y_true, probs = _predictions(150, seed)
    ci = bootstrap_intervals(y_true, probs, CLASSES, n_boot=500, seed=seed)
    m = classification_metrics(y_true, probs, CLASSES)
    assert ci["accuracy"]["estimate"] == pytest.approx(m.accuracy)
    assert ci["macro_f1"]["estimate"] == pytest.approx(m.macro_f1)
    for name in CLASSES:
        assert ci["per_class"][name]["recall"]["estimate"] == pytest.approx(m.per_class[name].recall)
        assert ci["per_class"][name]["average_precision"]["estimate"] == pytest.approx(
            m.per_class[name].average_precision)
    for interval in _all_intervals(ci):
        assert 0.0 <= interval["low"] <= interval["estimate"] <= interval["high"] <= 1.0
        assert interval["high"] - interval["low"] > 0.01


def test_intervals_shrink_with_more_images():
    small = bootstrap_intervals(*_predictions(60), CLASSES, n_boot=500)
    large = bootstrap_intervals(*_predictions(2000), CLASSES, n_boot=500)
    width = lambda ci: ci["high"] - ci["low"]  # noqa: E731
    assert width(large["accuracy"]) < width(small["accuracy"]) / 3
    # the textbook standard error of a proportion: the bootstrap should be close to it
    p, n = large["accuracy"]["estimate"], 2000
    assert width(large["accuracy"]) == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.2)


def test_rare_class_gets_a_wide_recall_interval():
    ci = bootstrap_intervals(*_predictions(0, counts=(200, 18, 200)), CLASSES, n_boot=500)
    rare = ci["per_class"]["malignant"]["recall"]
    common = ci["per_class"]["benign"]["recall"]
    assert rare["high"] - rare["low"] > 2 * (common["high"] - common["low"])


def test_bootstrap_is_seeded_and_fast():
    y_true, probs = _predictions(400)
    start = time.perf_counter()
    a = bootstrap_intervals(y_true, probs, CLASSES, n_boot=1000, seed=7)
    assert time.perf_counter() - start < 2.0  # vectorised: well under a second on an idle core
    assert a == bootstrap_intervals(y_true, probs, CLASSES, n_boot=1000, seed=7)
    assert a != bootstrap_intervals(y_true, probs, CLASSES, n_boot=1000, seed=8)


def test_resample_counts_are_resamples_with_replacement():
    counts = resample_counts(50, 200, np.random.default_rng(0))
    assert counts.shape == (200, 50)
    assert np.all(counts.sum(axis=1) == 50)
    assert (counts > 1).any() and (counts == 0).any()


def test_weighted_average_precision_matches_scikit_learn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(80), 1)  # many ties
    positive = rng.random(80) < 0.3
    weights = rng.integers(0, 3, size=(6, 80)).astype(float)
    ours = weighted_average_precision(scores, positive, weights)
    expected = [average_precision_score(positive, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(ours, expected, atol=1e-12)


def test_missing_class_is_none_not_a_number():
    y_true = np.array([0, 0, 2, 2, 0, 2])
    probs = softmax(np.random.default_rng(0).normal(size=(6, 3)))
    ci = bootstrap_intervals(y_true, probs, CLASSES, n_boot=100)
    assert ci["per_class"]["malignant"]["recall"] is None
    assert ci["per_class"]["malignant"]["average_precision"] is None
    assert ci["per_class"]["malignant"]["support"] == 0
    assert bootstrap_intervals(np.zeros(0, int), np.zeros((0, 3)), CLASSES)["accuracy"] is None


def test_small_class_warnings_speak_plainly():
    ci = bootstrap_intervals(*_predictions(0, counts=(40, 18, 40)), CLASSES, n_boot=200)
    warnings = small_class_warnings({"run-a": ci})
    assert len(warnings) == 1
    text = warnings[0]
    assert "Only 18 malignant test images" in text and "6 percentage points" in text and "95%" in text
    low, high = ci["per_class"]["malignant"]["recall"]["low"], ci["per_class"]["malignant"]["recall"]["high"]
    assert f"{low:.0%} to {high:.0%}" in text and "run-a" not in text
    assert not small_class_warnings({"run-a": ci}, minimum=10)
    # two runs on the same test set: one warning naming both runs' intervals
    other = bootstrap_intervals(*_predictions(0, seed=5, counts=(40, 18, 40)), CLASSES, n_boot=200)
    both = small_class_warnings({"run-a": ci, "run-b": other})
    assert len(both) == 1 and "(run-a)" in both[0] and "(run-b)" in both[0]


def test_formatting_and_rows():
    ci = {"estimate": 0.8523, "low": 0.78, "high": 0.91}
    assert format_interval(ci) == "0.85 (0.78–0.91)"
    assert format_interval(ci, percent=True) == "85% (78–91%)"
    assert format_interval(None) == "–"
    ci_all = bootstrap_intervals(*_predictions(60), CLASSES, n_boot=100)
    row = interval_rows({"run-a": ci_all})[0]
    assert row["run"] == "run-a" and "malignant recall" in row and "(" in row["accuracy"]


def test_finished_runs_store_intervals_and_old_runs_compute_them(finished_run):
    store, run_id = finished_run
    metrics = store.metrics(run_id)
    stored = metrics.intervals["test"]
    assert set(metrics.intervals) == {"val", "test"}
    assert stored["accuracy"]["estimate"] == pytest.approx(metrics.test.accuracy)
    assert metrics.ece["test"] >= 0.0
    # a run from before this feature: intervals come from its predictions, with the same numbers
    store.write_metrics(run_id, dataclasses.replace(metrics, intervals={}))
    assert run_intervals(store, run_id) == stored
