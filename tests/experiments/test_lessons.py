"""Lessons: defined as data, checked by TrainConfig, queued as a group, concluded from the stored results."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medcls.analysis.metrics import classification_metrics
from medcls.analysis.uncertainty import metric_intervals
from medcls.config import DataConfig
from medcls.experiments.lessons import (
    LessonError,
    get_lesson,
    lesson_conclusion,
    lesson_configs,
    lesson_data_note,
    list_queued,
    load_lessons,
    load_queued,
    parse_lessons,
    submit_lesson,
)
from medcls.jobs.manager import JobManager
from medcls.runs.records import GroupMembership, ModelRecord, RunMeta
from medcls.runs.results import RunMetrics
from medcls.runs.store import RunStore

LESSON = """
[[lesson]]
name = "demo"
title = "Demo: a vs b"
question = "Does b help?"
metric = "{metric}"
base = {{ image_size = 64, epochs = 3 }}
[[lesson.run]]
label = "a"
settings = {a}
[[lesson.run]]
label = "b"
settings = {b}
"""


def _toml(a: str = '{ imbalance = "none" }', b: str = '{ imbalance = "oversample" }', metric: str = "accuracy"):
    return LESSON.format(a=a, b=b, metric=metric)


def test_the_built_in_lessons_load_and_differ_in_what_they_teach():
    lessons = {lesson.name: lesson for lesson in load_lessons()}
    assert set(lessons) == {"rare-classes", "networks", "resolution", "augmentation"}
    rare = lesson_configs(lessons["rare-classes"], DataConfig(source="/data/busi"))
    assert [c.imbalance for c in rare] == ["none", "oversample", "weighted_loss", "weighted_sampler"]
    assert all(c.data.source == "/data/busi" and c.image_size == 64 for c in rare)
    assert lessons["rare-classes"].metric == "focus_recall"
    assert [c.model for c in lesson_configs(lessons["networks"], DataConfig())] == ["seed_cnn", "seed_cnn_bn",
                                                                                     "small_cnn"]
    assert [c.image_size for c in lesson_configs(lessons["resolution"], DataConfig())] == [64, 128]
    assert [c.augment.augment for c in lesson_configs(lessons["augmentation"], DataConfig())] == [False, True]
    assert get_lesson("resolution").title.startswith("Resolution")
    with pytest.raises(LessonError, match="There is no lesson 'nope'"):
        get_lesson("nope")


@pytest.mark.parametrize("text, message", [
    (_toml(a='{ imbalnce = "none" }'), "Lesson 'demo', run 'a': Unknown option"),
    (_toml(a='{ imbalance = "sometimes" }'), "Lesson 'demo', run 'a':.*Imbalance strategy"),
    (_toml(a='{ momentum = 0.5 }'), "Lesson 'demo', run 'a': Momentum has no effect here"),
    (_toml(a='{ source = "/etc" }'), "is a data option"),
    (_toml(a='{ imbalance = "none" }', b='{ imbalance = "none" }'), "have the same settings"),
    (_toml(metric="auc"), "metric 'auc' is unknown"),
    ("[[lesson]]\nname = 'x'\n", "'title' must be a non-empty text|at least two runs"),
    ("not toml ===", "is not valid TOML"),
    ("", "defines no lessons"),
])
def test_bad_lessons_are_refused_with_a_clear_message(text, message):
    with pytest.raises(LessonError, match=message):
        parse_lessons(text)


def test_a_teacher_can_add_a_lesson_in_a_file(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(_toml(a='{ lr = 0.001 }', b='{ lr = 0.01 }'))
    (lesson,) = load_lessons(path)
    assert [c.lr for c in lesson_configs(lesson, DataConfig())] == [0.001, 0.01]


def _finish(store: RunStore, run_id: str, y_true, probs, classes=("benign", "malignant", "normal")):
    test = classification_metrics(np.array(y_true), np.array(probs), list(classes))
    intervals = metric_intervals(np.array(y_true), np.array(probs), list(classes))
    store.write_metrics(run_id, RunMetrics({"test": test}, best_epoch=1, best_val_score=0.5, precision="fp32",
                                           focus_class="malignant", intervals={"test": intervals}))
    store.set_status(run_id, "finished")


def test_a_lessons_runs_train_alike_on_data_the_ensemble_takes_at_one_size_only(tmp_path):
    store = RunStore(tmp_path / "runs")
    lesson = get_lesson("resolution")  # 64 px against 128 px
    # 2,700 images: at 64 px a quarter of the work of 128 px, so the ensemble would take only the 64 px run.
    queued = submit_lesson(store, JobManager(store, start=False).submit, lesson, DataConfig(source="/data/x"),
                           pool_counts=[900, 900, 900])
    assert [store.config(r["run_id"]).small_data_ensemble for r in queued.runs] == [False, False]
    assert all("must train alike" in store.raw_status(r["run_id"]).notes[0] for r in queued.runs)


def test_a_queued_lesson_is_grouped_named_and_concluded_from_stored_results(tmp_path):
    store = RunStore(tmp_path / "runs")
    lesson = get_lesson("rare-classes")
    queued = submit_lesson(store, JobManager(store, start=False).submit, lesson, DataConfig(source="/data/x"),
                           owner=RunMeta(owner="browser:ana", owner_name="Ana"))
    ids = [r["run_id"] for r in queued.runs]
    assert [r["label"] for r in queued.runs] == ["no fix", "oversampling", "weighted loss", "weighted sampler"]
    for entry in queued.runs:
        run_id = entry["run_id"]
        assert store.group(run_id) == GroupMembership("lesson", queued.lesson_id,
                                                      {"lesson": "rare-classes", "label": entry["label"]})
        assert store.meta(run_id).name == f"Lesson Rare classes · {entry['label']}"
        assert (store.meta(run_id).owner, store.meta(run_id).owner_name) == ("browser:ana", "Ana")  # hers to stop
        assert store.config(run_id).data.source == "/data/x"
    saved = json.loads((store.root / "lessons" / f"{queued.lesson_id}.json").read_text())
    assert [r["run_id"] for r in saved["runs"]] == ids
    assert load_queued(store, queued.lesson_id).to_dict() == queued.to_dict()
    assert [q.lesson_id for q in list_queued(store, "rare-classes")] == [queued.lesson_id]
    assert list_queued(store, "networks") == []

    results, conclusion = lesson_conclusion(store, queued, lesson)
    assert [r.outcome for r in results] == ["pending"] * 4 and conclusion.summary == ""
    assert conclusion.status.startswith("0 of 4 runs finished; 4 still waiting")

    # 3 malignant test images: no fix finds 1, oversampling finds all 3.
    y = [1, 1, 1, 0, 0, 2, 2]
    miss = [[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05],
            [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]]
    hit = [[0.1, 0.8, 0.1]] * 3 + miss[3:]
    _finish(store, ids[0], y, miss)
    _finish(store, ids[1], y, hit)
    store.set_status(ids[2], "failed", error="boom")
    store.delete(ids[3])
    results, conclusion = lesson_conclusion(store, queued, lesson)
    assert [r.outcome for r in results] == ["finished", "finished", "failed", "missing"]
    assert results[0].estimate == pytest.approx(1 / 3) and results[1].estimate == 1.0
    assert results[0].images == 3
    # A fold ensemble's record counts the weights of all its models; the lesson speaks of one model's.
    store.write_model_record(ids[0], ModelRecord(classes=("benign", "malignant", "normal"), image_size=64,
                                                 in_channels=1, color="gray", parameters=5_000, folds=5))
    results, _ = lesson_conclusion(store, queued, lesson)
    assert (results[0].parameters, results[0].models) == (1_000, 5)
    assert results[1].models == 1
    assert conclusion.status == "2 of 4 runs finished; 1 failed, 1 deleted."
    text = conclusion.text()
    assert "oversampling raised malignant recall from 0.33 (no fix) to 1.00" in text
    assert "with 3 malignant test images the 95% intervals overlap" in text and "could be chance" in text


def test_a_lessons_runs_are_compared_image_by_image_from_their_test_predictions(tmp_path):
    store = RunStore(tmp_path / "runs")
    lesson = get_lesson("rare-classes")
    queued = submit_lesson(store, JobManager(store, start=False).submit, lesson, DataConfig(source="/data/x"))
    ids = [r["run_id"] for r in queued.runs]
    # 8 malignant test images (and 2 benign): no fix finds images 0-1, oversampling images 0-7.
    y = [1] * 8 + [0, 0]
    paths = [f"/data/x/img{i}.png" for i in range(10)]
    found, lost, benign = [0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [[0.9, 0.05, 0.05]] * 2
    for run_id, probs in ((ids[0], [found] * 2 + [lost] * 6 + benign), (ids[1], [found] * 8 + benign)):
        _finish(store, run_id, y, probs)
        store.write_predictions(run_id, ["test"] * 10, paths, np.array(y), np.array(probs),
                                ["benign", "malignant", "normal"])
    results, conclusion = lesson_conclusion(store, queued, lesson)
    assert results[0].right == {p: i < 2 for i, p in enumerate(paths[:8])}  # the malignant images only
    assert sum(results[1].right.values()) == 8 and results[0].estimate == pytest.approx(2 / 8)
    assert ("oversampling found 6 malignant test images that no fix missed, and missed 0 that it found. Chance "
            "gives so uneven a split with probability 0.031") in conclusion.text()


def test_an_invalid_lesson_queues_nothing(tmp_path):
    store = RunStore(tmp_path / "runs")
    (lesson,) = parse_lessons(_toml())
    bad = DataConfig(source="/data/x")
    lesson = type(lesson)(lesson.name, lesson.title, lesson.question, lesson.metric, {"epochs": 0}, lesson.runs)
    with pytest.raises(LessonError, match="run 'a'"):
        submit_lesson(store, JobManager(store, start=False).submit, lesson, bad)
    assert store.list_ids() == [] and list_queued(store) == []
    with pytest.raises(LessonError, match="Invalid lesson id"):
        load_queued(store, "../x")


def _spec(train_counts: dict[str, int]):
    from medcls.data.spec import DatasetSpec, Item

    classes = list(train_counts)
    items = [Item(f"/d/{c}/{i}.png", k, "train") for k, c in enumerate(classes) for i in range(train_counts[c])]
    return DatasetSpec("/d", "class_folders", classes, items)


def test_the_imbalance_lesson_says_when_the_classes_are_about_equally_common():
    """On balanced classes the fixes have nothing to correct: the lesson says so before anyone queues it."""
    rare = get_lesson("rare-classes")
    note = lesson_data_note(rare, _spec({"blue": 106, "brown": 106, "pink": 100, "purple": 106}))
    assert note is not None and "about equally common" in note and "1.1 times" in note
    assert "differ by chance alone" in note and "phantoms (normal, benign, malignant: 70% / 16% / 14%)" in note
    assert "(each has as many training images as the others)" in lesson_data_note(rare, _spec({"a": 9, "b": 9}))
    assert lesson_data_note(rare, _spec({"normal": 244, "benign": 20, "malignant": 16})) is None  # imbalanced
    assert lesson_data_note(get_lesson("resolution"), _spec({"a": 50, "b": 50})) is None        # not about it


def test_the_resolution_lesson_says_what_images_smaller_than_its_sizes_can_show():
    resolution, spec = get_lesson("resolution"), _spec({"a": 50, "b": 50})
    tiny = lesson_data_note(resolution, spec, side=28)  # a MedMNIST file
    assert "every run enlarges them (2.3 times at 64 px and 4.6 times at 128 px)" in tiny
    assert "not what more detail buys" in tiny and "built-in phantoms (128 px)" in tiny
    between = lesson_data_note(resolution, spec, side=100)
    assert "the 128 px run enlarges them (1.3 times at 128 px)" in between and "detail up to 100 px" in between
    assert lesson_data_note(resolution, spec, side=256) is None   # BUSI: both sizes hold real detail
    assert lesson_data_note(resolution, spec) is None             # the side is not known
