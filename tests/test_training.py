"""execute_run / train_in_memory: everything a finished run leaves behind, and how runs end."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from medcls.engine import Callback
from medcls.models import create_model
from medcls.training import execute_run, train_in_memory

RUN_FILES = {"config.json", "status.json", "history.jsonl", "best.pt", "metrics.json", "predictions.csv",
             "split.csv", "data_report.json", "env.json", "model.json", "data.json", "progress.json"}


def _csv(path):
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_finished_run_writes_every_artefact(finished_run):
    store, run_id = finished_run
    folder = store.path(run_id)
    assert RUN_FILES <= {p.name for p in folder.iterdir()}
    status = store.status(run_id)
    assert status["state"] == "finished" and status["best_epoch"] in (1, 2) and status["ended"]
    cfg = store.config(run_id)
    from medcls.config import TrainConfig

    assert TrainConfig.from_dict(json.loads((folder / "config.json").read_text())) == cfg

    history = store.history(run_id)
    assert [h["epoch"] for h in history] == [1, 2]
    assert (folder / "history.jsonl").read_text().count("\n") == 2

    model_info = store.read_json(run_id, "model.json")
    assert model_info["name"] == "small_cnn" and model_info["classes"] == ["benign", "malignant", "normal"]
    assert model_info["image_size"] == 32 and model_info["in_channels"] == 1 and model_info["color"] == "gray"
    assert model_info["focus_class"] == "malignant"
    state = torch.load(folder / "best.pt", map_location="cpu", weights_only=True)
    model = create_model("small_cnn", num_classes=3, image_size=32, in_channels=1)
    model.load_state_dict(state)  # strict: every tensor fits

    split_rows = _csv(folder / "split.csv")
    assert len(split_rows) == 36
    split_counts = Counter(r["split"] for r in split_rows)
    predictions = _csv(folder / "predictions.csv")
    pred_counts = Counter(r["split"] for r in predictions)
    assert pred_counts == {"val": split_counts["val"], "test": split_counts["test"]}
    for row in predictions:
        probs = [float(row[f"p_{c}"]) for c in model_info["classes"]]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert row["pred"] == model_info["classes"][int(np.argmax(probs))]

    metrics = store.read_json(run_id, "metrics.json")
    assert metrics["best_epoch"] == status["best_epoch"] and metrics["precision"] == "fp32"
    for split in ("val", "test"):
        m = metrics[split]
        cm = np.array(m["confusion_matrix"])
        assert cm.shape == (3, 3) and cm.sum() == split_counts[split] == m["n"]
        assert {"accuracy", "balanced_accuracy", "macro_f1", "macro_average_precision", "macro_roc_auc"} <= set(m)
        for name in model_info["classes"]:
            c = m["per_class"][name]
            assert {"precision", "recall", "f1", "support", "average_precision", "roc_auc"} <= set(c)
            assert c["support"] == Counter(r["label"] for r in split_rows if r["split"] == split)[name]
        assert 0 <= m["accuracy"] <= 1 and 0 <= m["macro_roc_auc"] <= 1

    report = store.read_json(run_id, "data_report.json")
    assert set(report) == {"skipped", "notes", "warnings"} and report["skipped"] == []
    env = store.read_json(run_id, "env.json")
    assert env["torch"] == torch.__version__ and "cpu" in env
    data = store.read_json(run_id, "data.json")
    assert data["layout"] == "class_folders" and data["synthetic"] is False


def test_bad_files_are_reported_and_the_run_still_trains(tmp_path, synth, store):
    root = synth.class_folders(tmp_path / "d", {"benign": 10, "malignant": 10, "normal": 10})
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, format="PNG")
    truncated = root / "benign" / "benign (99).png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    empty = root / "malignant" / "empty.png"
    empty.write_bytes(b"")
    text = root / "normal" / "scan.jpg"
    text.write_text("I am a text file")
    mask = synth.image(root / "benign" / "benign (1)_mask.png", 32)

    run_id = store.create(synth.config(root))
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    report = store.read_json(run_id, "data_report.json")
    skipped = {s["path"]: s["reason"] for s in report["skipped"]}
    assert set(skipped) == {str(truncated), str(empty), str(text)}
    assert "truncated" in skipped[str(truncated)] and "empty" in skipped[str(empty)]
    assert "not an image" in skipped[str(text)]
    used = {r["path"] for r in _csv(store.file(run_id, "split.csv"))}
    assert len(used) == 30 and str(mask) not in used and not used & set(skipped)


def test_validation_and_test_are_never_resampled(class_dataset, synth, store):
    run_id = store.create(synth.config(class_dataset, imbalance="oversample", oversample=("malignant=4",)))
    assert execute_run(store, run_id).state == "finished"
    split = Counter(r["split"] for r in _csv(store.file(run_id, "split.csv")))
    predictions = Counter(r["split"] for r in _csv(store.file(run_id, "predictions.csv")))
    assert predictions["val"] == split["val"] and predictions["test"] == split["test"]


@pytest.mark.parametrize("strategy", ["none", "weighted_loss", "weighted_sampler", "oversample"])
def test_every_imbalance_strategy_trains(class_dataset, synth, strategy):
    result = train_in_memory(synth.config(class_dataset, imbalance=strategy, epochs=1))
    assert len(result.trainer.result.history) == 1
    weight = result.trainer.loss_fn.weight
    assert (weight is not None) == (strategy == "weighted_loss")


def test_learning_rate_schedules_are_applied(class_dataset, synth):
    lrs = lambda r: [h.lr for h in r.trainer.result.history]  # noqa: E731
    step = train_in_memory(synth.config(class_dataset, epochs=3, scheduler="step", step_size=1, gamma=0.5, lr=0.01))
    assert lrs(step) == pytest.approx([0.01, 0.005, 0.0025])
    constant = train_in_memory(synth.config(class_dataset, epochs=2, scheduler="none", lr=0.01))
    assert lrs(constant) == pytest.approx([0.01, 0.01])
    cosine = train_in_memory(synth.config(class_dataset, epochs=3, scheduler="cosine", lr=0.01, optimizer="sgd"))
    assert lrs(cosine)[0] == pytest.approx(0.01) and lrs(cosine)[2] < lrs(cosine)[1] < 0.01


def test_train_in_memory_returns_the_best_weights(class_dataset, synth):
    result = train_in_memory(synth.config(class_dataset, epochs=3))
    best = result.trainer.best_state
    live = result.model.state_dict()
    assert all(torch.equal(live[k], best[k]) for k in best)


def test_focus_class_and_focus_recall_selection(class_dataset, synth):
    result = train_in_memory(synth.config(class_dataset, focus_class="MALIGNANT", select_metric="focus_recall",
                                          epochs=1))
    assert result.data.focus_class == "malignant"
    record = result.trainer.result.history[0]
    assert record.score == record.val_recall["malignant"]


def test_cancellation_keeps_history_and_the_best_checkpoint(class_dataset, synth, store):
    class CancelAfterFirstEpoch(Callback):
        done = False

        def on_epoch_end(self, trainer, record):
            CancelAfterFirstEpoch.done = True

    run_id = store.create(synth.config(class_dataset, epochs=5))
    outcome = execute_run(store, run_id, callbacks=[CancelAfterFirstEpoch()],
                          should_cancel=lambda: CancelAfterFirstEpoch.done)
    assert outcome.state == "cancelled"
    status = store.status(run_id)
    assert status["state"] == "cancelled" and "best checkpoint" in status["error"]
    assert len(store.history(run_id)) == 1 and store.has_weights(run_id)


def test_a_stop_file_cancels_before_the_first_batch(class_dataset, synth, store):
    run_id = store.create(synth.config(class_dataset))
    store.request_stop(run_id)
    assert execute_run(store, run_id).state == "cancelled"
    assert store.history(run_id) == [] and not store.has_weights(run_id)


@pytest.mark.parametrize("options, words", [
    ({"batch_size": 64}, "larger than the"),
    ({"focus_class": "tumour"}, "Focus class 'tumour' is not in this dataset"),
    ({"oversample": ("cancer=3",), "imbalance": "oversample"}, "cancer"),
])
def test_config_problems_fail_the_run_with_a_readable_error(class_dataset, synth, store, options, words):
    run_id = store.create(synth.config(class_dataset, **options))
    outcome = execute_run(store, run_id)
    assert outcome.state == "failed" and words in outcome.error
    status = store.status(run_id)
    assert status["state"] == "failed" and words in status["error"]


def test_missing_data_fails_the_run(tmp_path, synth, store):
    run_id = store.create(synth.config(tmp_path / "nowhere"))
    outcome = execute_run(store, run_id)
    assert outcome.state == "failed" and "not found" in outcome.error


def test_a_diverging_run_fails_with_advice(class_dataset, synth, store):
    cfg = synth.config(class_dataset, optimizer="sgd", lr=10.0, batch_norm=False, scheduler="none", epochs=4)
    run_id = store.create(cfg)
    outcome = execute_run(store, run_id)
    assert outcome.state == "failed"
    assert "diverged" in outcome.error and "Lower the learning rate" in outcome.error


def test_unexpected_errors_are_recorded_too(class_dataset, synth, store, monkeypatch):
    import medcls.training as training

    def broken(*args, **kwargs):
        raise RuntimeError("something odd")

    monkeypatch.setattr(training, "build_model", broken)
    run_id = store.create(synth.config(class_dataset))
    outcome = execute_run(store, run_id)
    assert outcome.state == "failed" and outcome.error == "RuntimeError: something odd"
    assert store.status(run_id)["error"] == "RuntimeError: something odd"


def test_colour_data_trains_an_rgb_model(tmp_path, synth, store):
    root = tmp_path / "colour"
    for c, name in enumerate(["a", "b"]):
        for i in range(10):
            synth.image(root / name / f"{i}.png", 32, color=(255, 60 + 90 * c, 30), seed=c * 20 + i)
    run_id = store.create(synth.config(root, epochs=1))
    assert execute_run(store, run_id).state == "finished"
    info = store.read_json(run_id, "model.json")
    assert info["in_channels"] == 3 and info["color"] == "rgb"


def test_the_built_in_synthetic_dataset_trains(phantom_cache, synth, store):
    cfg = synth.config("", epochs=1, batch_size=32)
    run_id = store.create(cfg)
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    data = store.read_json(run_id, "data.json")
    assert data["synthetic"] is True and set(data["classes"]) == {"normal", "benign", "malignant"}
    assert "SYNTHETIC" in store.read_json(run_id, "data_report.json")["notes"][0]
    assert outcome.metrics["test"]["n"] == sum(data["counts"]["test"].values())


def test_auto_precision_measures_once_and_remembers_the_answer(monkeypatch):
    import medcls.hardware as hardware

    model = create_model("small_cnn", num_classes=2, image_size=32, in_channels=1)
    sample = lambda: (torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1]))  # noqa: E731
    assert hardware.resolve_precision("fp32", model, sample, "k") == "fp32"
    monkeypatch.setattr(hardware, "bf16_supported", lambda: False)
    assert hardware.resolve_precision("auto", model, sample, "k") == "fp32"
    monkeypatch.setattr(hardware, "bf16_supported", lambda: True)
    timings = {False: 1.0, True: 0.5}  # bf16 twice as fast
    monkeypatch.setattr(hardware, "time_train_steps", lambda m, x, y, bf16, **kw: timings[bf16])
    assert hardware.resolve_precision("auto", model, sample, "k") == "bf16"

    def must_not_measure(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(hardware, "time_train_steps", must_not_measure)
    assert hardware.resolve_precision("auto", model, sample, "k") == "bf16"  # remembered on disk
    timings[True] = 0.95  # not clearly faster: stay with fp32
    monkeypatch.setattr(hardware, "time_train_steps", lambda m, x, y, bf16, **kw: timings[bf16])
    assert hardware.resolve_precision("auto", model, sample, "other key") == "fp32"


def test_timing_train_steps_leaves_the_weights_unchanged():
    from medcls.hardware import time_train_steps

    model = create_model("small_cnn", num_classes=2, image_size=32, in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seconds = time_train_steps(model, torch.rand(4, 1, 32, 32), torch.tensor([0, 1, 0, 1]), bf16=False, steps=2)
    assert seconds > 0
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
