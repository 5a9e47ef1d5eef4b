"""Sweeps: grid expansion checked by TrainConfig, queuing with membership records, live ranking."""

from __future__ import annotations

import json

import pytest

from medcls.analysis.metrics import classification_metrics
from medcls.config import TrainConfig, differences, format_value
from medcls.experiments.sweeps import (
    RANK_METRICS,
    SweepError,
    expand_grid,
    list_sweeps,
    load_sweep,
    parse_values,
    rank_rows,
    starting_values,
    submit_sweep,
    sweep_rows,
    sweepable_options,
    unranked_note,
    value_choices,
)
from medcls.figures.training import sweep_figure
from medcls.jobs.manager import JobManager
from medcls.runs.records import EpochRecord, GroupMembership
from medcls.runs.results import CrossValidation, FoldScore, RunMetrics
from medcls.runs.store import RunStore


@pytest.fixture
def base() -> TrainConfig:
    return TrainConfig().with_options(source="/data/x", epochs=3, lr=2e-3)


def test_two_settings_expand_to_every_combination(base):
    points = expand_grid(base, {"imbalance": ["none", "oversample"], "lr": ["1e-3", 0.003]})
    assert [p.values for p in points] == [
        {"imbalance": "none", "lr": 0.001}, {"imbalance": "none", "lr": 0.003},
        {"imbalance": "oversample", "lr": 0.001}, {"imbalance": "oversample", "lr": 0.003}]
    for p in points:
        assert p.config.imbalance == p.values["imbalance"] and p.config.lr == p.values["lr"]
        assert {d.name for d in differences(base, p.config)} <= {"imbalance", "lr"}
        assert p.config.data.source == "/data/x" and p.config.epochs == 3  # the base is kept


def test_one_setting_and_typed_values(base):
    points = expand_grid(base, {"augment": ["on", "off", ]})
    assert [p.config.augment.augment for p in points] == [True, False]
    points = expand_grid(base, {"model": ["small_cnn", "seed_cnn", "resnet18"]})
    assert [p.config.model for p in points] == ["small_cnn", "seed_cnn", "resnet18"]
    assert points[1].config.model_options.blocks == 4  # each model with its own values
    assert [p.config.epochs for p in expand_grid(base, {"epochs": ["5", 10]})] == [5, 10]
    assert parse_values(" 1e-3, 3e-3;0.01  ") == ["1e-3", "3e-3", "0.01"]


@pytest.mark.parametrize("settings, message", [
    ({"lr": ["abc", "0.1"]}, "Learning rate: the value 'abc' is not valid. Expected a number"),
    ({"lr": ["-1", "0.1"]}, "Learning rate: the value '-1' is not valid. Learning rate must be greater than 0"),
    ({"epochs": ["1.5", "2"]}, "Epochs: the value '1.5' is not valid. Expected a whole number"),
    ({"imbalance": ["none", "smote"]}, "must be one of none, oversample, weighted_loss, weighted_sampler"),
    ({"model": ["small_cnn", "vgg99"]}, "Model: the value 'vgg99' is not valid. Model must be one of resnet18"),
    ({"lr": ["0.001", "1e-3"]}, "the value 0.001 is given twice"),
    ({"lr": ["0.001"]}, "Give 2 to 4 values for Learning rate (got 1)"),
    ({"lr": ["1", "2", "3", "4", "5"]}, "Give 2 to 4 values for Learning rate (got 5)"),
    ({"lr": [1, 2], "epochs": [1, 2], "seed": [1, 2]}, "Choose one or two settings to vary (got 3)"),
    ({}, "Choose one or two settings to vary (got 0)"),
    ({"source": ["a", "b"]}, "'source' cannot be varied in a sweep"),
    ({"select_metric": ["accuracy", "macro_f1"]}, "'select_metric' cannot be varied in a sweep"),
    ({"learning_rate": [1, 2]}, "'learning_rate' is not an option. Settings a sweep can vary: imbalance, lr, model"),
    ({"model": ["small_cnn", "resnet18"], "blocks": ["3", "4"]}, "Conv blocks is not an option of resnet18"),
])
def test_invalid_sweeps_are_refused_with_a_clear_message(base, settings, message):
    with pytest.raises(SweepError) as err:
        expand_grid(base, settings)
    assert message in str(err.value)


def test_sweepable_options_put_the_usual_suspects_first_and_follow_the_model():
    names = sweepable_options(TrainConfig())
    assert names[:5] == ["imbalance", "lr", "model", "epochs", "image_size"]
    assert "source" not in names and "oversample" not in names and "fc_widths" not in names
    assert "dropout" in names and "batch_norm" in names and "weights" not in names
    assert "weights" in sweepable_options(TrainConfig().with_options(model="resnet18"))
    # Early stopping's patience has no effect while the last epoch is kept (the default): not offered then.
    assert "checkpoint" in names and "patience" not in names
    assert "patience" in sweepable_options(TrainConfig().with_options(checkpoint="best"))
    assert starting_values("lr") == "0.0005, 0.002"


def test_values_read_like_people_write_them():
    assert [format_value(v) for v in (0.002, True, False, None, "oversample", 32, ())] == \
        ["0.002", "on", "off", "–", "oversample", "32", "–"]


def test_a_sweep_over_image_size_trains_every_run_alike_and_says_why(tmp_path, base):
    # On BUSI's train + val counts the automatic ensemble takes 128 px but not 256 px (four times the work); a
    # sweep comparing them would compare an ensemble with one model, so none of its runs is an ensemble.
    busi = [370, 180, 113]
    store = RunStore(tmp_path / "runs")
    manager = JobManager(store, start=False)
    sweep = submit_sweep(store, manager.submit, base, {"image_size": [128, 256]}, pool_counts=busi)
    for entry in sweep.runs:
        assert store.config(entry["run_id"]).small_data_ensemble is False
        (note,) = store.raw_status(entry["run_id"]).notes
        assert note.startswith("'Ensemble for small datasets' is off for every run of this comparison")
    # Sizes the ensemble takes alike: left as they are, and no note.
    sweep = submit_sweep(store, manager.submit, base, {"image_size": [64, 128]}, pool_counts=busi)
    for entry in sweep.runs:
        assert store.config(entry["run_id"]).small_data_ensemble is True
        assert store.raw_status(entry["run_id"]).notes == ()


def test_submit_queues_every_combination_and_records_the_sweep(tmp_path, base):
    store = RunStore(tmp_path / "runs")
    old_run = store.create(base)  # a run from before sweeps existed
    manager = JobManager(store, start=False)  # queues, never starts a worker
    sweep = submit_sweep(store, manager.submit, base, {"imbalance": ["none", "weighted_loss"], "lr": [1e-3, 3e-3]})
    run_ids = [r["run_id"] for r in sweep.runs]
    assert len(run_ids) == 4 and len(set(run_ids)) == 4
    assert set(store.list_ids()) == set(run_ids) | {old_run}  # the sweeps folder is not mistaken for a run
    for entry in sweep.runs:
        assert store.raw_status(entry["run_id"]).state == "queued"
        assert store.config(entry["run_id"]).lr == entry["values"]["lr"]
        assert store.group(entry["run_id"]) == GroupMembership("sweep", sweep.sweep_id, entry["values"])
    assert store.group(old_run) is None
    assert sweep.settings == {"imbalance": ["none", "weighted_loss"], "lr": [0.001, 0.003]}
    saved = json.loads((store.root / "sweeps" / f"{sweep.sweep_id}.json").read_text())
    assert saved["runs"] == sweep.runs
    assert load_sweep(store, sweep.sweep_id).to_dict() == sweep.to_dict()
    assert [s.sweep_id for s in list_sweeps(store)] == [sweep.sweep_id]
    assert sweep.describe() == "Imbalance strategy (2) × Learning rate (2) = 4 runs"
    assert len(store.list()) == 5  # every run still reads as an ordinary run


def test_an_invalid_sweep_queues_nothing(tmp_path, base):
    store = RunStore(tmp_path / "runs")
    with pytest.raises(SweepError):
        submit_sweep(store, JobManager(store, start=False).submit, base, {"lr": ["0.001", "oops"]})
    assert store.list_ids() == [] and list_sweeps(store) == []
    with pytest.raises(SweepError, match="does not exist"):
        load_sweep(store, "sweep-nope")
    with pytest.raises(SweepError, match="Invalid sweep id"):
        load_sweep(store, "../etc")


def _epoch(score: float, f1: float, epoch: int = 1) -> EpochRecord:
    return EpochRecord(epoch=epoch, train_loss=0.5, train_accuracy=0.8, val_loss=0.5, val_accuracy=0.9,
                       val_macro_f1=f1, val_balanced_accuracy=f1, val_recall={}, lr=1e-3, seconds=1.0,
                       images_per_s=100.0, score=score, best=True)


def test_results_are_ranked_by_the_best_validation_score_and_update_live(tmp_path, base):
    store = RunStore(tmp_path / "runs")
    sweep = submit_sweep(store, JobManager(store, start=False).submit, base, {"lr": [1e-3, 2e-3, 4e-3]})
    a, b, c = (r["run_id"] for r in sweep.runs)
    rows = rank_rows(sweep_rows(store, sweep), "best_score")
    assert all(r["rank"] is None and r["state"] == "queued" and r["epochs"] == 3 for r in rows)

    store.set_status(a, "running", pid=None)
    store.beat(a)
    store.append_history(a, _epoch(0.40, 0.35))
    store.append_history(b, _epoch(0.70, 0.30))
    rows = rank_rows(sweep_rows(store, sweep), "best_score")
    assert [(r["run_id"], r["rank"]) for r in rows] == [(b, 1), (a, 2), (c, None)]
    assert rows[1]["state"] == "running" and rows[1]["epochs_done"] == 1 and rows[1]["epochs_words"] == "1 of 3"

    store.append_history(a, _epoch(0.90, 0.20, epoch=2))  # a overtakes b in its second epoch
    test = classification_metrics([0, 1], [[0.9, 0.1], [0.8, 0.2]], ["x", "y"])
    store.write_metrics(a, RunMetrics({"test": test}, best_epoch=2, best_val_score=0.9, precision="fp32",
                                      focus_class="y"))
    rows = rank_rows(sweep_rows(store, sweep), "best_score")
    assert [r["run_id"] for r in rows] == [a, b, c] and rows[0]["best_score"] == 0.90
    by_f1 = rank_rows(sweep_rows(store, sweep), "val_macro_f1")
    assert [r["run_id"] for r in by_f1] == [b, a, c] and by_f1[1]["val_macro_f1"] == 0.20  # the kept epoch's F1
    by_test = rank_rows(sweep_rows(store, sweep), "test_macro_f1")
    assert [(r["run_id"], r["rank"]) for r in by_test][:1] == [(a, 1)] and by_test[1]["rank"] is None
    assert rows[0]["lr"] == 0.001

    store.delete(c)
    rows = sweep_rows(store, sweep)
    assert rows[2]["state"] == "deleted" and rows[2]["best_score"] is None
    with pytest.raises(SweepError, match="Unknown ranking metric"):
        rank_rows(rows, "loss")
    assert set(RANK_METRICS) >= {"best_score", "test_macro_f1"}


def test_a_fold_ensembles_validation_figures_are_its_folds_means(tmp_path, base):
    store = RunStore(tmp_path / "runs")
    sweep = submit_sweep(store, JobManager(store, start=False).submit, base, {"lr": [1e-3, 2e-3]})
    single, ensemble = (r["run_id"] for r in sweep.runs)
    store.append_history(single, _epoch(0.60, 0.60))
    store.append_history(ensemble, _epoch(0.95, 0.95))  # its last fold's best epoch: a lucky fold
    scores = tuple(FoldScore(fold=k, images=10, macro_f1=f1, accuracy=0.5, balanced_accuracy=0.5, focus_recall=0.5,
                             best_epoch=1, epochs=1) for k, f1 in ((1, 0.40), (2, 0.50)))
    store.write_cross_validation(ensemble, CrossValidation(folds=2, grouped=False, scores=scores, completed=2))
    select = store.config(ensemble).select_metric
    rows = {r["run_id"]: r for r in rank_rows(sweep_rows(store, sweep), "best_score")}
    assert rows[ensemble]["val_macro_f1"] == pytest.approx(0.45) and rows[ensemble]["val_accuracy"] == 0.5
    assert rows[ensemble]["best_score"] == pytest.approx(0.45 if select == "macro_f1" else 0.5)
    assert rows[single]["rank"] == 1 and rows[single]["best_score"] == 0.60  # one model: its kept epoch's


def test_runs_of_bagged_models_say_why_a_validation_score_leaves_them_unranked(tmp_path, base):
    store = RunStore(tmp_path / "runs")
    sweep = submit_sweep(store, JobManager(store, start=False).submit, base, {"lr": [1e-3, 2e-3]})
    first, second = (r["run_id"] for r in sweep.runs)
    assert unranked_note(sweep_rows(store, sweep), "best_score") is None  # not started: nothing chosen yet
    store.write_plan(first, store.config(first).with_options(image_size=192, bagged_models=3))
    rows = rank_rows(sweep_rows(store, sweep), "best_score")
    assert [r["bagged"] for r in rows] == [True, False] and rows[0]["best_score"] is None
    note = unranked_note(rows, "val_macro_f1")
    assert note.startswith("1 of these 2 runs train bagged models") and "no validation score" in note
    assert unranked_note(rows, "test_macro_f1") is None  # the test score ranks them
    store.write_plan(second, store.config(second).with_options(image_size=192, bagged_models=3))
    assert unranked_note(sweep_rows(store, sweep), "best_score").startswith("These runs train bagged models")


def test_sweep_figure_is_a_heatmap_for_two_settings_and_bars_for_one():
    fig = sweep_figure([("Imbalance", ["none", "oversample"]), ("Learning rate", ["0.001", "0.003"])],
                       {("none", "0.001"): 0.5, ("oversample", "0.003"): 0.8}, "score")
    heat = fig.data[0]
    assert heat.type == "heatmap" and list(heat.x) == ["none", "oversample"] and list(heat.y) == ["0.001", "0.003"]
    assert [list(row) for row in heat.z] == [[0.5, None], [None, 0.8]]
    bars = sweep_figure([("Learning rate", ["0.001", "0.003"])], {("0.003",): 0.7}, "score").data[0]
    assert bars.type == "bar" and list(bars.y) == [None, 0.7]


def test_value_choices_offer_short_lists_and_leave_numbers_to_typing():
    assert value_choices("imbalance") == ["none", "oversample", "weighted_loss", "weighted_sampler"]
    assert value_choices("model") == ["resnet18", "seed_cnn", "seed_cnn_bn", "small_cnn"]
    assert value_choices("augment") == [True, False] and value_choices("batch_norm") == [True, False]
    assert value_choices("lr") is None and value_choices("epochs") is None
