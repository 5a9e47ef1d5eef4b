"""Which run a page offers first (Try it's model, Compare's first runs)."""

from __future__ import annotations

from medcls.runs.choice import comparable_default, preferred_run, state_words
from medcls.runs.summary import RunSummary


def summary(run_id: str, data: str, state: str = "finished", f1: float | None = 0.8,
            classes: tuple[str, ...] = ("benign", "malignant", "normal")) -> RunSummary:
    return RunSummary(run_id=run_id, name=run_id, state=state, created="", model="small_cnn", dataset=data,
                      data_fingerprint=data, classes=classes, epochs_done=3, epochs=20, error="", best_score=None,
                      test_macro_f1=f1, focus_class="malignant", focus_recall=None, has_weights=True,
                      tested=f1 is not None, stopped=state == "cancelled")


def test_try_it_starts_at_the_best_finished_run_on_the_sidebars_data():
    runs = [summary("new-other", "phantoms", f1=0.99), summary("busi-a", "busi", f1=0.70),
            summary("busi-b", "busi", f1=0.80)]
    assert preferred_run(runs, "busi") == "busi-b"
    assert preferred_run(runs, "") == "new-other"           # no data chosen: the best finished run anywhere
    assert preferred_run(runs, "digits") == "new-other"     # none on this data: the same


def test_a_stopped_run_on_the_sidebars_data_comes_before_a_model_of_other_data():
    # The images Try it offers come from the sidebar's data: a model of other classes cannot even be judged on them.
    runs = [summary("phantoms", "phantoms", f1=0.99), summary("busi-stopped", "busi", state="cancelled", f1=0.6)]
    assert preferred_run(runs, "busi") == "busi-stopped"
    runs.append(summary("busi-done", "busi", f1=0.5))
    assert preferred_run(runs, "busi") == "busi-done"       # a finished run on the data still comes first
    assert preferred_run([summary("queued", "busi", state="failed", f1=None)], "busi") == "queued"  # else the newest


def test_compare_starts_at_the_newest_tested_run_on_the_sidebars_data_and_its_like():
    runs = [summary("phantoms-new", "phantoms"), summary("busi-new", "busi", state="cancelled"),
            summary("phantoms-old", "phantoms"), summary("busi-two-classes", "busi", classes=("benign", "malignant")),
            summary("busi-old", "busi")]
    assert comparable_default(runs, data_fingerprint="busi") == ["busi-new", "busi-old"]
    assert comparable_default(runs) == ["phantoms-new", "phantoms-old"]
    assert comparable_default(runs, data_fingerprint="digits") == ["phantoms-new", "phantoms-old"]
    assert comparable_default([summary("untested", "busi", f1=None)], data_fingerprint="busi") == []


def test_a_picker_says_how_a_run_ended():
    assert state_words(summary("a", "busi")) == "finished"
    assert state_words(summary("b", "busi", state="cancelled")) == "stopped at epoch 3 of 20"
