"""95% intervals (Wilson for shares, bootstrap for macro-F1 and AP): right estimates, sensible widths, honest at
100%, fast, seeded; small-class warnings."""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from medcls.analysis.metrics import classification_metrics, softmax
from medcls.analysis.uncertainty import (
    FLAT_INTERVAL_NOTE,
    METHOD,
    format_interval,
    has_flat_interval,
    interval_rows,
    metric_intervals,
    proportion_interval,
    resample_counts,
    run_intervals,
    score_headline,
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
    ci = metric_intervals(y_true, probs, CLASSES, n_boot=500, seed=seed)
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
    small = metric_intervals(*_predictions(60), CLASSES, n_boot=500)
    large = metric_intervals(*_predictions(2000), CLASSES, n_boot=500)
    width = lambda ci: ci["high"] - ci["low"]  # noqa: E731
    assert width(large["accuracy"]) < width(small["accuracy"]) / 3
    # the textbook standard error of a proportion: with 2,000 images the Wilson interval should be close to it
    p, n = large["accuracy"]["estimate"], 2000
    assert width(large["accuracy"]) == pytest.approx(2 * 1.96 * np.sqrt(p * (1 - p) / n), rel=0.2)


def test_rare_class_gets_a_wide_recall_interval():
    ci = metric_intervals(*_predictions(0, counts=(200, 18, 200)), CLASSES, n_boot=500)
    rare = ci["per_class"]["malignant"]["recall"]
    common = ci["per_class"]["benign"]["recall"]
    assert rare["high"] - rare["low"] > 2 * (common["high"] - common["low"])


def test_a_class_found_every_time_still_gets_an_honest_range():
    """20 of 20 found: the percentile bootstrap said '100% to 100%' (no resample can miss one), which told a
    teacher that new patients would all be found. The Wilson score interval says how far down it could be."""
    y_true = np.repeat(np.arange(3), (40, 30, 20))
    probs = np.full((90, 3), 0.1)
    probs[np.arange(90), y_true] = 0.8
    probs[:6, 1] = 0.85  # six benign images called malignant; every normal image found
    ci = metric_intervals(y_true, probs, CLASSES, n_boot=300)
    normal = ci["per_class"]["normal"]["recall"]
    assert normal["estimate"] == 1.0 and normal["high"] == 1.0
    assert normal["low"] == pytest.approx(0.839, abs=0.001)  # Wilson, 20 of 20 (Clopper-Pearson: 0.832)
    benign = ci["per_class"]["benign"]["recall"]
    assert benign["estimate"] == pytest.approx(34 / 40) and benign["low"] < 0.85 < benign["high"] < 1.0
    assert ci["accuracy"]["estimate"] == pytest.approx(84 / 90) and ci["method"] == METHOD
    text = " ".join(small_class_warnings({"run-a": ci}))
    assert "Only 20 normal test images" in text and "84% to 100%" in text and "100% to 100%" not in text


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (20, 20), (0, 20), (34, 40), (3, 118), (117, 118), (500, 1000)])
def test_the_wilson_interval_is_scipys(k, n):
    from scipy.stats import binomtest

    ours = proportion_interval(k, n)
    theirs = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert ours["estimate"] == k / n
    assert ours["low"] == pytest.approx(theirs.low, abs=1e-9) and ours["high"] == pytest.approx(theirs.high, abs=1e-9)
    assert proportion_interval(0, 0) is None


def test_a_perfect_score_is_flagged_where_resampling_cannot_bound_it():
    y_true = np.repeat(np.arange(3), 10)
    perfect = np.eye(3)[y_true] * 0.7 + 0.1
    ci = metric_intervals(y_true, perfect, CLASSES, n_boot=100)
    assert ci["macro_f1"]["low"] == ci["macro_f1"]["high"] == 1.0  # every resample is perfect too
    assert ci["per_class"]["benign"]["recall"]["low"] < 0.75  # 10 of 10: still a wide range
    assert has_flat_interval({"run-a": ci})
    assert not has_flat_interval({"run-a": metric_intervals(*_predictions(150), CLASSES, n_boot=100)})


def test_a_range_of_no_width_is_not_shown_as_certainty():
    y_true = np.repeat(np.arange(3), 5)
    ci = metric_intervals(y_true, np.eye(3)[y_true] * 0.7 + 0.1, CLASSES, n_boot=100)
    assert format_interval(ci["macro_f1"]) == "1.00 (no interval)"  # not "1.00 (1.00–1.00)"
    assert format_interval(ci["per_class"]["benign"]["average_precision"], percent=True) == "100% (no interval)"
    assert format_interval(ci["accuracy"]).startswith("1.00 (0.")  # 15 of 15: Wilson still gives a range
    headline = score_headline(ci, "malignant")
    assert "macro-F1 1.00 (no interval)" in headline and FLAT_INTERVAL_NOTE in headline
    rows = interval_rows({"run-a": ci}, "malignant")
    assert rows[0]["macro-F1"] == "1.00 (no interval)"
    assert FLAT_INTERVAL_NOTE not in score_headline(metric_intervals(*_predictions(150), CLASSES, n_boot=100))
    # benign ranked perfectly (its AP has no range), but one benign image answered malignant: the headline shows
    # no AP, and its macro-F1 has a range, so it has nothing marked to explain
    probs = np.eye(3)[y_true] * 0.7 + 0.1
    probs[0] = [0.4, 0.6, 0.0]
    ci = metric_intervals(y_true, probs, CLASSES, n_boot=100)
    assert format_interval(ci["per_class"]["benign"]["average_precision"]) == "1.00 (no interval)"
    assert "no interval" not in score_headline(ci, "malignant")


def test_bootstrap_is_seeded_and_fast():
    y_true, probs = _predictions(400)
    start = time.perf_counter()
    a = metric_intervals(y_true, probs, CLASSES, n_boot=1000, seed=7)
    assert time.perf_counter() - start < 2.0  # vectorised: well under a second on an idle core
    assert a == metric_intervals(y_true, probs, CLASSES, n_boot=1000, seed=7)
    assert a != metric_intervals(y_true, probs, CLASSES, n_boot=1000, seed=8)


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
    ci = metric_intervals(y_true, probs, CLASSES, n_boot=100)
    assert ci["per_class"]["malignant"]["recall"] is None
    assert ci["per_class"]["malignant"]["average_precision"] is None
    assert ci["per_class"]["malignant"]["support"] == 0
    assert metric_intervals(np.zeros(0, int), np.zeros((0, 3)), CLASSES)["accuracy"] is None


def test_small_class_warnings_speak_plainly():
    ci = metric_intervals(*_predictions(0, counts=(40, 18, 40)), CLASSES, n_boot=200)
    warnings = small_class_warnings({"run-a": ci})
    assert len(warnings) == 1
    text = warnings[0]
    assert "Only 18 malignant test images" in text and "6 percentage points" in text and "95%" in text
    low, high = ci["per_class"]["malignant"]["recall"]["low"], ci["per_class"]["malignant"]["recall"]["high"]
    assert f"{low:.0%} to {high:.0%}" in text and "run-a" not in text
    assert not small_class_warnings({"run-a": ci}, minimum=10)
    # two runs on the same test set: one warning naming both runs' intervals
    other = metric_intervals(*_predictions(0, seed=5, counts=(40, 18, 40)), CLASSES, n_boot=200)
    both = small_class_warnings({"run-a": ci, "run-b": other})
    assert len(both) == 1 and "(run-a)" in both[0] and "(run-b)" in both[0]


def test_formatting_and_rows():
    ci = {"estimate": 0.8523, "low": 0.78, "high": 0.91}
    assert format_interval(ci) == "0.85 (0.78–0.91)"
    assert format_interval(ci, percent=True) == "85% (78–91%)"
    assert format_interval(None) == "–"
    ci_all = metric_intervals(*_predictions(60), CLASSES, n_boot=100)
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
    # a run whose recall intervals came from the bootstrap (which says "100% to 100%" for 20 of 20): computed again
    old = {**stored, "method": "percentile bootstrap",
           "accuracy": {**stored["accuracy"], "low": stored["accuracy"]["estimate"]}}
    store.write_metrics(run_id, dataclasses.replace(metrics, intervals={"test": old}))
    assert run_intervals(store, run_id) == stored


def test_the_headline_gives_each_score_its_interval_and_the_focus_class_as_found_of_its_images():
    y_true = np.array([0] * 40 + [1] * 3 + [2] * 16)
    probs = np.eye(3)[np.r_[[0] * 40, [1, 0, 0], [2] * 16]] * 0.9 + 0.1 / 3
    intervals = metric_intervals(y_true, probs, CLASSES)
    line = score_headline(intervals, "malignant")
    assert line.startswith(f"On its 59 test images: accuracy {format_interval(intervals['accuracy'])}, macro-F1 ")
    assert "malignant recall 0.33 (0.06–0.79), 1 of its 3 images found." in line
    assert "malignant" not in score_headline(intervals, "cancer")   # not a class of this run: no recall
    assert score_headline(metric_intervals(y_true[:0], probs[:0], CLASSES), "malignant") == ""

    many = np.repeat(y_true, 25)  # 1,475 images, 75 of them malignant
    line = score_headline(metric_intervals(many, np.repeat(probs, 25, axis=0), CLASSES, n_boot=50), "malignant")
    assert line.startswith("On its 1,475 test images:") and "25 of its 75 images found" in line, line


def test_macro_f1_resamples_leave_out_a_class_they_lack():
    """A resample without the one image of a rare class (and no prediction of it) scores its other classes, as
    the estimate does: perfect answers give 1.0 at both ends, not a low end dragged to 0.5 by a counted 0."""
    y_true = np.array([0] * 20 + [2])            # benign never occurs
    perfect = np.eye(3)[y_true] * 0.7 + 0.1
    ci = metric_intervals(y_true, perfect, CLASSES, n_boot=200)
    assert ci["macro_f1"] == {"estimate": 1.0, "low": 1.0, "high": 1.0}


def test_classes_of_the_same_size_share_one_small_class_warning():
    """Fifteen classes of 6 test images each were fifteen boxes on Compare; they are one sentence now."""
    classes = [f"shape{i:02d}" for i in range(15)]
    y_true = np.repeat(np.arange(15), 6)
    perfect = metric_intervals(y_true, np.eye(15)[y_true], classes, n_boot=50)
    warnings = small_class_warnings({"run-a": perfect})
    assert len(warnings) == 1
    assert warnings[0].startswith("Only 6 test images of each of shape00, shape01,")
    assert "shape13 and shape14: each one moves that class's recall by 17 percentage points" in warnings[0]
    assert "The 95% interval for each one's recall runs from 61% to 100%" in warnings[0]
    # different intervals: each class is named with its own
    y_pred = y_true.copy()
    y_pred[0] = 1  # one shape00 image missed
    mixed = small_class_warnings({"run-a": metric_intervals(y_true, np.eye(15)[y_pred], classes, n_boot=50)})
    assert len(mixed) == 1 and "intervals for their recall: 44% to 97% for shape00; 61% to 100% for shape01, " in mixed[0]
    # a class of another size gets its own warning
    y_small = np.concatenate([y_true, [0]])
    split = small_class_warnings({"run-a": metric_intervals(y_small, np.eye(15)[y_small], classes, n_boot=50)})
    assert len(split) == 2 and split[0].startswith("Only 7 shape00 test images: each one moves shape00 recall")


def test_a_focus_class_named_by_a_number_is_quoted_in_sentences():
    y_true = np.repeat(np.arange(3), 10)
    ci = metric_intervals(y_true, np.eye(3)[y_true] * 0.7 + 0.1, ["0", "1", "2"], n_boot=50)
    assert "'2' recall 1.00 (" in score_headline(ci, "2") and "10 of its 10 images found" in score_headline(ci, "2")
    warning = " ".join(small_class_warnings({"run-a": ci}))
    assert "Only 10 test images of each of '0', '1' and '2':" in warning
    # Said of any data, the built-in synthetic phantoms too: not "on new patients".
    assert "on new images of the same kind it could be anywhere in that range" in warning


def test_a_small_test_split_is_read_before_any_run():
    from medcls.analysis.uncertainty import test_size_note

    note = test_size_note({"normal": 42, "benign": 9, "malignant": 8})
    assert note.startswith("The test split holds only 9 benign and 8 malignant images. Each one moves its class's "
                           "recall by 11–12 percentage points")
    assert "with 8 test images, even all 8 found gives a 95% interval from 68% to 100%" in note
    assert "these classes" in note
    assert proportion_interval(8, 8)["low"] == pytest.approx(0.676, abs=0.001)
    one = test_size_note({"0": 1, "1": 40})
    assert "only 1 '0' image. Each one moves its class's recall by 100 percentage points, and with 1 test " \
           "image, even finding it gives a 95% interval from 21% to 100%" in one
    assert test_size_note({"benign": 66, "malignant": 32}) is None
    assert test_size_note({"benign": 0, "malignant": 0}) is None  # no test split: nothing to read
