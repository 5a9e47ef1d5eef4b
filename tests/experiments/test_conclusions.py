"""A lesson's conclusion: computed from results and intervals, never claiming more than they support."""

from __future__ import annotations

import pytest

from medcls.experiments.conclusions import RunResult, conclude, metric_words, outcome_counts


def test_a_clear_difference_is_called_clear():
    results = [RunResult("no fix", "finished", 0.20, 0.10, 0.30, 60),
               RunResult("oversampling", "finished", 0.80, 0.70, 0.90, 60)]
    c = conclude(results, "focus_recall", "malignant")
    assert c.complete and c.status == "All 2 runs finished."
    text = c.text()
    assert "oversampling raised malignant recall from 0.20 (no fix) to 0.80" in text
    assert "do not overlap" in text and "a clear difference on these 60 malignant test images" in text
    assert "could be chance" not in text
    assert c.summary.startswith("In short: oversampling gave clearly higher malignant recall than no fix")


def test_overlapping_intervals_could_be_chance():
    results = [RunResult("no fix", "finished", 1 / 3, 0.0, 2 / 3, 3),
               RunResult("oversampling", "finished", 2 / 3, 1 / 3, 1.0, 3)]
    c = conclude(results, "focus_recall", "malignant")
    assert ("oversampling raised malignant recall from 0.33 (no fix) to 0.67, but with 3 malignant test images "
            "the 95% intervals overlap") in c.text()
    assert "this difference could be chance" in c.text()
    assert "do not show a real difference" in c.summary and "clearly" not in c.summary


def _right(found: int, of: int, offset: int = 0) -> dict[str, bool]:
    """Per image (by name) whether the run got it right: images offset .. offset + found - 1 of 0 .. of - 1."""
    return {f"img{i:02d}": offset <= i < offset + found for i in range(of)}


def test_the_same_images_are_compared_image_by_image_which_sees_what_overlapping_intervals_hide():
    # BUSI's rare-classes lesson: no fix found 15 of 32 malignant test images, weighted loss those and 7 more.
    results = [RunResult("no fix", "finished", 15 / 32, 0.31, 0.64, 32, right=_right(15, 32)),
               RunResult("weighted loss", "finished", 22 / 32, 0.51, 0.82, 32, right=_right(22, 32))]
    c = conclude(results, "focus_recall", "malignant")
    text = c.text()
    assert ("weighted loss raised malignant recall from 0.47 (no fix) to 0.69: image by image, weighted loss found "
            "7 malignant test images that no fix missed, and missed 0 that it found") in text
    assert "probability 0.016 (exact McNemar test), so this is a clear difference on these 32 malignant" in text
    assert "intervals in the chart overlap where these sentences call a difference clear" in text
    assert c.summary.startswith("In short: weighted loss gave clearly higher malignant recall than no fix")
    tied = conclude([*results, RunResult("weighted sampler", "finished", 22 / 32, 0.51, 0.82, 32,
                                         right=_right(22, 32))], "focus_recall", "malignant")
    assert tied.summary.startswith("In short: weighted loss and weighted sampler gave clearly higher malignant "
                                   "recall than no fix (0.69 against 0.47)")


def test_a_paired_split_that_chance_gives_easily_could_be_chance():
    # 3 more found and 1 lost: 4 images differ, 3 against 1 (p = 0.62)
    results = [RunResult("64 px", "finished", 0.50, 0.4, 0.6, 40, right=_right(20, 40)),
               RunResult("128 px", "finished", 0.55, 0.45, 0.65, 40, right=_right(22, 40, offset=1))]
    text = conclude(results, "accuracy").text()
    assert ("image by image, 128 px got right 3 test images that 64 px got wrong, and got wrong 1 that it got "
            "right: a split that chance gives easily (exact McNemar test, p = 0.62), so this difference could be "
            "chance") in text
    assert "do not show a real difference" in text and "chart overlap" not in text


def test_runs_judged_on_different_images_fall_back_to_their_intervals():
    results = [RunResult("a", "finished", 0.2, 0.1, 0.3, 60, right=_right(12, 60)),
               RunResult("b", "finished", 0.8, 0.7, 0.9, 50, right=_right(40, 50))]
    text = conclude(results, "accuracy").text()
    assert "McNemar" not in text and "the 95% intervals do not overlap" in text


def test_a_clear_drop_is_reported_as_worse():
    results = [RunResult("64 px", "finished", 0.9, 0.85, 0.95, 100),
               RunResult("128 px", "finished", 0.5, 0.4, 0.6, 100)]
    c = conclude(results, "macro_f1")
    assert "128 px lowered macro-F1 from 0.90 (64 px) to 0.50" in c.text()
    assert "128 px did clearly worse" in c.summary


def test_equal_results_say_there_is_no_difference():
    results = [RunResult("off", "finished", 0.5, 0.3, 0.7, 20), RunResult("on", "finished", 0.5, 0.3, 0.7, 20)]
    assert "on gave the same accuracy as off (0.50)" in conclude(results, "accuracy").text()


def test_failed_and_missing_runs_are_counted_and_left_out():
    results = [RunResult("no fix", "failed"), RunResult("oversampling", "finished", 0.5, 0.2, 0.8, 10),
               RunResult("weighted loss", "finished", 0.6, 0.3, 0.9, 10), RunResult("weighted sampler", "missing"),
               RunResult("extra", "pending"), RunResult("stopped one", "stopped")]
    c = conclude(results, "focus_recall", "malignant")
    assert c.status == ("2 of 6 runs finished; 1 still waiting or training, 1 stopped before the end, 1 failed, "
                        "1 deleted.")
    assert not c.complete
    text = c.text()
    assert "no fix did not finish, so the runs are compared with oversampling" in text
    assert "weighted loss raised malignant recall from 0.50 (oversampling) to 0.60" in text
    assert "no fix" not in " ".join(c.sentences[1:]) and "weighted sampler" not in text.split("deleted.")[1]
    assert "partial result" in c.summary
    assert outcome_counts(results) == {"finished": 2, "pending": 1, "stopped": 1, "failed": 1, "missing": 1}


def test_a_lesson_with_one_finished_run_concludes_nothing():
    results = [RunResult("a", "finished", 0.7, 0.5, 0.9, 30), RunResult("b", "failed")]
    c = conclude(results, "accuracy")
    assert c.summary == ""
    assert "Nothing to compare yet" in c.text() and "a reached accuracy 0.70 (0.50–0.90)" in c.text()
    assert "In short" not in c.text()


def test_a_finished_run_without_the_metric_is_named_and_skipped():
    results = [RunResult("a", "finished", None, None, None, 0), RunResult("b", "finished", 0.5, 0.4, 0.6, 9),
               RunResult("c", "finished", 0.55, 0.45, 0.65, 9)]
    c = conclude(results, "focus_recall", "malignant")
    assert "a finished without a malignant recall on the test images" in c.text()
    assert "c raised malignant recall from 0.50 (b) to 0.55" in c.text()


def test_costs_come_from_the_runs():
    results = [RunResult("seed_cnn", "finished", 0.7, 0.6, 0.8, 60, 40.0, 1_000_000),
               RunResult("small_cnn", "finished", 0.72, 0.62, 0.82, 60, 10.0, 50_000)]
    text = conclude(results, "accuracy", show=("parameters", "time")).text()
    assert "seed_cnn 1,000,000 weights and 40 s of training" in text
    assert "seed_cnn took 4.0 times as long as small_cnn" in text
    # A fold ensemble (a small dataset's default): weights per model, time for all of them.
    results = [RunResult("seed_cnn", "finished", 0.7, 0.6, 0.8, 60, 200.0, 1_000_000, models=5),
               RunResult("small_cnn", "finished", 0.72, 0.62, 0.82, 60, 50.0, 50_000, models=5)]
    text = conclude(results, "accuracy", show=("parameters", "time")).text()
    assert "seed_cnn 1,000,000 weights in each of 5 fold models and 3.3 min of training for all 5" in text
    # Bagged models (a small dataset of large images, with 'Image size' 0) are named as such.
    results = [RunResult("a", "finished", 0.7, 0.6, 0.8, 60, 200.0, 1_000_000, models=3, bagged=True),
               RunResult("b", "finished", 0.72, 0.62, 0.82, 60, 50.0, 50_000, models=3, bagged=True)]
    text = conclude(results, "accuracy", show=("parameters", "time")).text()
    assert "a 1,000,000 weights in each of 3 bagged models and 3.3 min of training for all 3" in text


def test_metric_words():
    assert metric_words("focus_recall", "malignant") == "malignant recall"
    assert metric_words("macro_f1") == "macro-F1"
    with pytest.raises(ValueError, match="Unknown lesson metric"):
        metric_words("auc")
