"""execute_run: everything a finished run leaves behind in the run store, and how runs end."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter

import numpy as np
import pytest
import torch
from interruptions import KillInMember
from PIL import Image

from medcls.config import TrainConfig
from medcls.jobs.execute import execute_run
from medcls.models import create_model
from medcls.training.engine import Callback

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
    assert status.state == "finished" and status.best_epoch in (1, 2) and status.ended
    cfg = store.config(run_id)
    assert TrainConfig.from_dict(json.loads((folder / "config.json").read_text())) == cfg

    history = store.history(run_id)
    assert [h.epoch for h in history] == [1, 2]
    assert (folder / "history.jsonl").read_text().count("\n") == 2

    record = store.model_record(run_id)
    assert cfg.model == "small_cnn" and record.classes == ("benign", "malignant", "normal")
    assert record.image_size == 32 and record.in_channels == 1 and record.color == "gray"
    assert record.focus_class == "malignant" and record.parameters > 0
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
        probs = [float(row[f"p_{c}"]) for c in record.classes]
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert row["pred"] == record.classes[int(np.argmax(probs))]

    metrics = store.metrics(run_id)
    assert metrics.best_epoch == status.best_epoch and metrics.precision == "fp32" and not metrics.stopped
    assert metrics.test_copies == ()  # checked: no test image is a copy of one it learned from
    raw = json.loads((folder / "metrics.json").read_text())
    for split in ("val", "test"):
        m = metrics.splits[split]
        cm = np.array(m.confusion_matrix)
        assert cm.shape == (3, 3) and cm.sum() == split_counts[split] == m.n
        assert {"accuracy", "balanced_accuracy", "macro_f1", "macro_average_precision",
                "macro_roc_auc"} <= set(raw[split])
        for name in record.classes:
            c = m.per_class[name]
            assert c.support == Counter(r["label"] for r in split_rows if r["split"] == split)[name]
        assert 0 <= m.accuracy <= 1 and 0 <= m.macro_roc_auc <= 1

    assert store.data_report(run_id).skipped == []
    env = store.env(run_id)
    assert env["torch"] == torch.__version__ and "cpu" in env
    data = store.data_record(run_id)
    assert data.layout == "class_folders" and data.synthetic is False
    assert data.focus_class == record.focus_class == "malignant"  # known with the data, before any model
    assert data.typical_side == 32  # the images' own size, for Try it to compare an image's detail with



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
    skipped = {s.path: s.reason for s in store.data_report(run_id).skipped}
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
    assert status.state == "cancelled"
    assert status.error == ("Stopped on request after 1 of 5 epochs. It keeps the weights of its last epoch (1), "
                            "and they were tested.")
    assert len(store.history(run_id)) == 1 and store.has_weights(run_id)
    # A stopped run is still tested (its best checkpoint), so it can be compared and tried like any other.
    metrics = store.metrics(run_id)
    assert metrics.stopped and metrics.test.n > 0 and store.summary(run_id).tested



@pytest.mark.parametrize("options, stop_at, kept, words", [
    (dict(folds=3, checkpoint="best"), (1, 1), 2,
     "Stopped on request in fold 2 of 3, after 1 of its 2 epochs. The 2 fold models trained so far are kept "
     "and were tested (fold 2 with the weights of its best validation epoch so far (1))."),
    (dict(folds=3, checkpoint="best"), (0, 2), 1,
     "Stopped on request before fold 2 of 3 had finished an epoch. Its one fold model trained to the end is "
     "kept and was tested."),
    (dict(bagged_models=3), (1, 1), 2,
     "Stopped on request in bagged model 2 of 3, after 1 of its 2 epochs. The 2 bagged models trained so far "
     "are kept and were tested (bagged model 2 with the weights of its last epoch (1))."),
    (dict(bagged_models=3), (0, 2), 1,
     "Stopped on request before bagged model 2 of 3 had finished an epoch. Its one bagged model trained to the "
     "end is kept and was tested."),
])
def test_a_stopped_ensemble_says_which_of_its_models_it_keeps(class_dataset, synth, store, options, stop_at, kept,
                                                               words):
    class StopAt(Callback):
        member, stop = 0, False

        def on_fold_start(self, fold, folds):
            StopAt.member = fold

        def on_epoch_end(self, trainer, record):
            StopAt.stop = StopAt.stop or (StopAt.member, record.epoch) == stop_at

    run_id = store.create(synth.config(class_dataset, epochs=2, **options))
    assert execute_run(store, run_id, callbacks=[StopAt()], should_cancel=lambda: StopAt.stop).state == "cancelled"
    assert store.status(run_id).error == words
    assert store.metrics(run_id).stopped and store.has_weights(run_id) and store.model_record(run_id).folds == kept


def test_a_stop_asked_after_the_last_epoch_lets_the_run_be_tested(class_dataset, synth, store):
    """The stop arrives while the finished run tests its weights (seconds): its epochs are done, so it is kept."""
    class StopAfterLastEpoch(Callback):
        stop = False

        def on_epoch_end(self, trainer, record):
            StopAfterLastEpoch.stop = record.epoch == 2

    run_id = store.create(synth.config(class_dataset, epochs=2))
    outcome = execute_run(store, run_id, callbacks=[StopAfterLastEpoch()], should_cancel=lambda: StopAfterLastEpoch.stop)
    assert outcome.state == "finished" and store.metrics(run_id).test.n > 0


def test_a_stop_file_cancels_before_the_first_batch(class_dataset, synth, store):
    run_id = store.create(synth.config(class_dataset))
    store.request_stop(run_id)
    assert execute_run(store, run_id).state == "cancelled"
    assert store.history(run_id) == [] and not store.has_weights(run_id)



@pytest.mark.parametrize("options, words", [
    ({"focus_class": "tumour"}, "Focus class 'tumour' is not in this dataset"),
    ({"oversample": ("cancer=3",), "imbalance": "oversample"}, "cancer"),
])
def test_config_problems_fail_the_run_with_a_readable_error(class_dataset, synth, store, options, words):
    run_id = store.create(synth.config(class_dataset, **options))
    outcome = execute_run(store, run_id)
    assert outcome.state == "failed" and words in outcome.error
    status = store.status(run_id)
    assert status.state == "failed" and words in status.error


def test_a_batch_larger_than_the_training_images_is_lowered_and_the_run_says_so(class_dataset, synth, store):
    run_id = store.create(synth.config(class_dataset, batch_size=64, epochs=1))
    seen_while_training: list[list[str]] = []

    class ReadNotes(Callback):
        def on_fit_start(self, trainer):
            seen_while_training.append(store.status(run_id).notes)

    outcome = execute_run(store, run_id, callbacks=[ReadNotes()])
    assert outcome.state == "finished", outcome.error
    notes = store.status(run_id).notes
    lowered = [n for n in notes if "batch size was lowered from 64 to 8" in n]
    assert len(lowered) == 1 and "training images" in lowered[0], notes
    # Too few of a class for the automatic ensemble: the run says why it trained one model, as the Train page did.
    assert any(n.startswith("One model, not a 5-fold ensemble: ") for n in notes), notes
    assert seen_while_training == [notes]  # in the run's status (the live panel) before its first epoch



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
    import medcls.training.pipeline as training

    def broken(*args, **kwargs):
        raise RuntimeError("something odd")

    monkeypatch.setattr(training, "build_model", broken)
    run_id = store.create(synth.config(class_dataset))
    outcome = execute_run(store, run_id)
    assert outcome.state == "failed" and outcome.error == "RuntimeError: something odd"
    assert store.status(run_id).error == "RuntimeError: something odd"



def test_colour_data_trains_an_rgb_model(tmp_path, synth, store):
    root = tmp_path / "colour"
    for c, name in enumerate(["a", "b"]):
        for i in range(10):
            synth.image(root / name / f"{i}.png", 32, color=(255, 60 + 90 * c, 30), seed=c * 20 + i)
    run_id = store.create(synth.config(root, epochs=1))
    assert execute_run(store, run_id).state == "finished"
    record = store.model_record(run_id)
    assert record.in_channels == 3 and record.color == "rgb"



def test_the_built_in_synthetic_dataset_trains(phantom_cache, synth, store):
    cfg = synth.config("", epochs=1, batch_size=32)
    run_id = store.create(cfg)
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    data = store.data_record(run_id)
    assert data.synthetic is True and set(data.classes) == {"normal", "benign", "malignant"}
    assert "SYNTHETIC" in store.data_report(run_id).notes[0]
    assert outcome.metrics["test"].n == sum(data.counts["test"].values())
    assert store.summary(run_id).dataset == "built-in synthetic phantoms"


def test_a_cross_validation_run_records_its_folds_and_predicts_as_one_model(class_dataset, synth, store):
    from medcls.inference.gradcam import gradcam_map
    from medcls.inference.predictor import load_predictor

    run_id = store.create(synth.config(class_dataset, folds=3, epochs=1))
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    cv = store.cross_validation(run_id)
    assert cv.folds == cv.completed == 3 and len(cv.scores) == 3
    assert store.model_record(run_id).folds == 3
    history = store.history(run_id)
    assert [h.fold for h in history] == [1, 2, 3] and [h.epoch for h in history] == [1, 1, 1]
    metrics = store.metrics(run_id)
    assert metrics.splits["val"].n == 30 and metrics.test.n == 6  # out-of-fold over train+val; the ensemble on test
    predictor = load_predictor(store, run_id)
    assert len(predictor.model.members) == 3
    prediction = predictor.predict(class_dataset / "benign" / "benign (0).png")
    assert sum(prediction.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    heat = gradcam_map(predictor.model, predictor.pixels(class_dataset / "benign" / "benign (0).png"), 0)
    assert heat.shape == (32, 32) and 0.0 <= heat.min() <= heat.max() <= 1.0
    assert store.cross_validation(store.create(synth.config(class_dataset))) is None
    # Try it's novelty reference: the training split's features, with limits measured on the validation split
    # alone (the results view's train + val holds the reference images themselves).
    from medcls.inference.novelty import embed_images, fit_reference
    from medcls.training.pipeline import prepare_data

    data = prepare_data(store.config(run_id))
    expected = fit_reference(embed_images(predictor.model, data.train.images),
                             embed_images(predictor.model, data.val.images), seed=0)
    reference = store.feature_reference(run_id)
    assert len(reference.features[0]) == len(data.train) == 24
    assert reference.limits == pytest.approx(expected.limits, rel=1e-3)
    assert reference.typical == pytest.approx(expected.typical, rel=1e-3)


# --- resuming after an interruption ----------------------------------------------------------------------------

class KillAt(Callback):
    """Dies like a killed process in the middle of an epoch (nothing is recorded on the way out)."""

    def __init__(self, epoch: int, batch: int = 1):
        self.epoch, self.batch = epoch, batch

    def on_batch_end(self, trainer, event) -> None:
        if event.phase == "train" and event.epoch == self.epoch and event.batch == self.batch:
            raise KeyboardInterrupt


def _interrupt(store, run_id, epoch):
    with pytest.raises(KeyboardInterrupt):
        execute_run(store, run_id, callbacks=[KillAt(epoch)])
    store.set_status(run_id, "interrupted")  # what the job manager records for a killed worker


@pytest.mark.parametrize("options", [{}, {"imbalance": "weighted_sampler", "scheduler": "cosine", "ema_decay": 0.0},
                                     {"imbalance": "weighted_loss", "scheduler": "step", "optimizer": "sgd"}],
                         ids=["oversample-onecycle-ema", "weighted-sampler-cosine", "weighted-loss-step-sgd"])
def test_a_run_killed_mid_epoch_and_resumed_ends_as_if_never_interrupted(class_dataset, synth, store, options):
    from medcls.jobs.manager import requeue

    cfg = synth.config(class_dataset, epochs=5, **options)  # every epoch trains (the last epoch is kept)
    whole = store.create(cfg, run_id="whole")
    assert execute_run(store, whole).state == "finished"
    broken = store.create(cfg, run_id="broken")
    _interrupt(store, broken, epoch=4)
    assert [h.epoch for h in store.history(broken)] == [1, 2, 3] and store.has_resume(broken)
    requeue(store, broken)
    outcome = execute_run(store, broken)
    assert outcome.state == "finished", outcome.error
    history = store.history(broken)
    assert [h.epoch for h in history] == [1, 2, 3, 4, 5]  # one continuous history
    expected = store.history(whole)
    assert [h.val_loss for h in history] == pytest.approx([h.val_loss for h in expected], abs=1e-5)
    assert store.metrics(broken).test.macro_f1 == pytest.approx(store.metrics(whole).test.macro_f1, abs=1e-6)
    assert store.raw_status(broken).best_epoch == store.raw_status(whole).best_epoch
    assert any("Resumed after epoch 3 of 5" in n for n in store.status(broken).notes)
    assert not store.has_resume(broken)  # a finished run needs no resume state
    for a, b in zip(store.load_weights(broken).values(), store.load_weights(whole).values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)


def _assert_same_ensemble(store, broken: str, whole: str, folds: bool) -> None:
    """The resumed run ends with the same ensemble and scores as the run never interrupted, out-of-fold ones
    (and each fold's best epoch) included."""
    for a, b in zip(store.load_weights(broken).values(), store.load_weights(whole).values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-5)
    assert store.metrics(broken).test.macro_f1 == pytest.approx(store.metrics(whole).test.macro_f1, abs=1e-6)
    if folds:
        assert [s.macro_f1 for s in store.cross_validation(broken).scores] == \
            pytest.approx([s.macro_f1 for s in store.cross_validation(whole).scores], abs=1e-6)
        assert [s.best_epoch for s in store.cross_validation(broken).scores] == \
            [s.best_epoch for s in store.cross_validation(whole).scores]


@pytest.mark.parametrize("options, word", [(dict(bagged_models=3), "bagged model"),
                                           (dict(folds=3, checkpoint="best"), "fold")], ids=["bagged", "folds"])
def test_an_ensemble_killed_in_its_second_model_resumes_with_the_first_kept_as_it_was(class_dataset, synth, store,
                                                                                      options, word):
    from medcls.jobs.manager import requeue

    cfg = synth.config(class_dataset, epochs=2, **options)
    whole = store.create(cfg, run_id="whole")
    assert execute_run(store, whole).state == "finished"
    broken = store.create(cfg, run_id="broken")
    with pytest.raises(KeyboardInterrupt):
        execute_run(store, broken, callbacks=[KillInMember(1)])
    store.set_status(broken, "interrupted")  # what the job manager records for a killed worker
    assert store.has_resume(broken) and store.model_record(broken).folds == 1
    assert store.resume_point(broken) == f"{word} 2 of 3"  # the Train page's "Resume from bagged model 2 of 3"

    class Count(Callback):
        models = 0

        def on_fold_start(self, fold, folds) -> None:
            Count.models += 1

    requeue(store, broken)
    outcome = execute_run(store, broken, callbacks=[Count()])
    assert outcome.state == "finished", outcome.error
    assert Count.models == 2  # models 2 and 3: the first was not trained again
    assert [(h.fold, h.epoch) for h in store.history(broken)] == [(m, e) for m in (1, 2, 3) for e in (1, 2)]
    assert any(f"Resumed after {word} 1 of 3: the finished model was kept as it was, and {word} 2 started from its "
               "first epoch." in n for n in store.status(broken).notes)
    assert not store.has_resume(broken)
    _assert_same_ensemble(store, broken, whole, folds="folds" in options)


def test_an_ensemble_killed_before_its_first_epoch_ended_starts_again(class_dataset, synth, store):
    from medcls.jobs.manager import requeue

    run_id = store.create(synth.config(class_dataset, epochs=2, bagged_models=2), run_id="r")
    with pytest.raises(KeyboardInterrupt):
        execute_run(store, run_id, callbacks=[KillAt(epoch=1)])
    store.set_status(run_id, "interrupted")
    assert not store.has_resume(run_id) and not store.history(run_id)
    assert store.resume_point(run_id) == "the first epoch"
    requeue(store, run_id)
    assert execute_run(store, run_id).state == "finished"
    assert [(h.fold, h.epoch) for h in store.history(run_id)] == [(1, 1), (1, 2), (2, 1), (2, 2)]


@pytest.mark.parametrize("options, word, kept", [(dict(bagged_models=3), "bagged model", 1),
                                                 (dict(folds=3, checkpoint="best"), "fold", 1),
                                                 (dict(bagged_models=2), "bagged model", 0)],
                         ids=["bagged", "folds", "in-the-first-model"])
def test_an_ensemble_killed_mid_model_continues_that_model_after_its_last_epoch(class_dataset, synth, store,
                                                                                options, word, kept):
    """A model of an ensemble resumes after its last saved epoch, as one model's run does: its finished epochs
    are not trained again, and the run ends with the same ensemble as one never interrupted."""
    from medcls.jobs.manager import requeue

    cfg = synth.config(class_dataset, epochs=3, **options)
    members = options.get("folds") or options["bagged_models"]
    whole = store.create(cfg, run_id="whole")
    assert execute_run(store, whole).state == "finished"
    broken = store.create(cfg, run_id="broken")
    with pytest.raises(KeyboardInterrupt):
        execute_run(store, broken, callbacks=[KillInMember(kept, epoch=3)])  # in its third epoch
    store.set_status(broken, "interrupted")
    assert store.resume_point(broken) == f"epoch 3 of {word} {kept + 1} of {members}"

    class Epochs(Callback):
        trained: list[int] = []

        def on_epoch_end(self, trainer, record) -> None:
            Epochs.trained.append(record.epoch)

    requeue(store, broken)
    outcome = execute_run(store, broken, callbacks=[Epochs()])
    assert outcome.state == "finished", outcome.error
    assert Epochs.trained == [3] + [1, 2, 3] * (members - kept - 1)  # the interrupted model's last epoch, then on
    assert [(h.fold, h.epoch) for h in store.history(broken)] == [(m, e) for m in range(1, members + 1)
                                                                  for e in (1, 2, 3)]
    notes = store.status(broken).notes
    assert any(n.startswith(f"Resumed in {word} {kept + 1} of {members}: ") and
               n.endswith(f"{word} {kept + 1} continued from its resume checkpoint.") for n in notes), notes
    assert any("Resumed after epoch 2 of 3" in n for n in notes), notes
    assert not store.has_resume(broken)
    _assert_same_ensemble(store, broken, whole, folds="folds" in options)


def test_a_run_whose_data_changed_meanwhile_is_not_continued_on_other_data(class_dataset, synth, store):
    from medcls.jobs.manager import requeue

    run_id = store.create(synth.config(class_dataset, epochs=4), run_id="r")
    _interrupt(store, run_id, epoch=3)
    synth.image(class_dataset / "benign" / "new one.png")
    requeue(store, run_id)
    outcome = execute_run(store, run_id)
    assert outcome.state == "failed" and "dataset changed since this run started" in outcome.error
    assert len(store.history(run_id)) == 2  # what it had is kept


def test_a_damaged_resume_checkpoint_starts_the_run_again_with_a_note(class_dataset, synth, store):
    from medcls.jobs.manager import requeue

    run_id = store.create(synth.config(class_dataset, epochs=3), run_id="r")
    _interrupt(store, run_id, epoch=3)
    store.file(run_id, "resume.pt").write_bytes(b"not a checkpoint")
    requeue(store, run_id)
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    assert [h.epoch for h in store.history(run_id)] == [1, 2, 3]
    assert any("resume checkpoint cannot be loaded safely" in n and "started again from the first epoch" in n
               for n in store.status(run_id).notes)


def test_a_worker_whose_run_was_taken_from_it_stops_without_writing(class_dataset, synth, store):
    """Ended as hung (or resumed elsewhere) while it was frozen: when it wakes up it writes nothing more."""
    run_id = store.create(synth.config(class_dataset, epochs=50), run_id="r")

    class TakenOver(Callback):
        def on_batch_end(self, trainer, event) -> None:
            if event.epoch == 2 and event.batch == 1:
                store.set_status(run_id, "interrupted", error="ended by the job manager")
                store.clear_heartbeat(run_id)

    outcome = execute_run(store, run_id, callbacks=[TakenOver()])
    assert outcome.state == "interrupted"
    status = store.raw_status(run_id)
    assert status.state == "interrupted" and status.error == "ended by the job manager"
    assert len(store.history(run_id)) == 1  # epoch 2 ended after it lost the run: not recorded


def test_a_small_dataset_run_is_cross_validated_and_says_why(class_dataset, synth, store, monkeypatch):
    from medcls.training import autoplan

    monkeypatch.setattr(autoplan, "AUTO_MIN_PER_FOLD", 1)  # the tiny dataset counts as small enough
    monkeypatch.setattr(autoplan, "AUTO_FOLDS", 2)
    run_id = store.create(synth.config(class_dataset, epochs=1))  # folds 0: chosen automatically
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    assert store.cross_validation(run_id).folds == 2 and store.model_record(run_id).folds == 2
    assert store.config(run_id).folds == 0  # the config says what was asked; the note and records what was done
    assert any("trained as a 2-fold cross-validation ensemble" in n for n in store.status(run_id).notes)


def test_a_small_dataset_of_large_images_trains_at_the_larger_size_as_bagged_models_and_says_why(
        class_dataset, synth, store, monkeypatch):
    from medcls.training import autoplan

    monkeypatch.setattr(autoplan, "AUTO_MIN_PER_FOLD", 1)  # the tiny dataset counts as small enough
    monkeypatch.setattr(autoplan, "DEFAULT_SIZE", 16)      # its 32 px images are "large": 32 px and up
    monkeypatch.setattr(autoplan, "DETAIL_SIZE", 32)
    monkeypatch.setattr(autoplan, "DETAIL_FOLDS", 2)
    monkeypatch.setattr(autoplan, "DETAIL_BAGGED", 2)
    run_id = store.create(synth.config(class_dataset, epochs=1, image_size=0))  # Image size 0: chosen for the data
    assert store.meta(run_id).name.endswith(" · auto size")  # queued: the size is not chosen yet
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    assert " · 32 px" in store.meta(run_id).name and store.meta(run_id).name.endswith("2 bagged")
    record = store.model_record(run_id)
    assert (record.image_size, record.folds, record.bagged) == (32, 2, True)
    assert store.cross_validation(run_id) is None  # nothing held out: no cross-validation score
    assert store.config(run_id).image_size == 0  # the config says what was asked; the note and records what was done
    trained = store.trained_config(run_id)  # what the pages read: the plan recorded when it started
    assert (trained.image_size, trained.folds, trained.bagged_models) == (32, 0, 2)
    assert store.summary(run_id).bagged and store.summary(run_id).folds == 2
    (note,) = [n for n in store.status(run_id).notes if n.startswith("A small dataset of large images")]
    assert "typically 32 px" in note and "trained at 32 px as 2 bagged models" in note
    # A run that picks its best validation epoch needs held-out images: fold models, with their cross-validation.
    best = store.create(synth.config(class_dataset, epochs=1, image_size=0, checkpoint="best"))
    assert execute_run(store, best).state == "finished"
    record = store.model_record(best)
    assert (record.image_size, record.folds, record.bagged, store.cross_validation(best).folds) == (32, 2, False, 2)
    (note,) = [n for n in store.status(best).notes if n.startswith("A small dataset of large images")]
    assert "trained at 32 px as a 2-fold cross-validation ensemble" in note


def test_a_run_that_enlarges_its_images_says_so(class_dataset, synth, store):
    plain = store.create(synth.config(class_dataset, epochs=1, image_size=32))  # the images are 32 px
    enlarged = store.create(synth.config(class_dataset, epochs=1, image_size=64))
    for run_id in (plain, enlarged):
        assert execute_run(store, run_id).state == "finished"
    assert not any("enlarged" in n for n in store.status(plain).notes)
    assert any("typically 32 px" in n and "enlarged 2.0 times" in n for n in store.status(enlarged).notes)


def test_a_run_on_images_that_are_not_square_says_how_they_are_squeezed(class_dataset, synth, store):
    square = store.create(synth.config(class_dataset, epochs=1))
    assert execute_run(store, square).state == "finished"
    for path in class_dataset.rglob("*.png"):
        Image.open(path).resize((32, 48)).save(path)  # 2:3, taller than wide
    tall = store.create(synth.config(class_dataset, epochs=1))
    assert execute_run(store, tall).state == "finished"
    assert not any("without keeping its shape" in n for n in store.status(square).notes)
    (note,) = [n for n in store.status(tall).notes if "without keeping its shape" in n]
    assert note.startswith("None of the 36 images is square (32 × 48 px).") and "to 32 × 32 px" in note
    assert "squeezed from top to bottom to 0.67 of their height" in note


def test_a_run_whose_classes_files_were_made_differently_says_so(class_dataset, synth, store):
    alike = store.create(synth.config(class_dataset, epochs=1))
    assert execute_run(store, alike).state == "finished"
    first = sorted(p for p in class_dataset.iterdir() if p.is_dir())[0]
    for path in first.glob("*.png"):  # one class's images re-saved as JPEG, as another hospital's export might be
        Image.open(path).save(path.with_suffix(".jpg"))
        path.unlink()
    mixed = store.create(synth.config(class_dataset, epochs=1))
    assert execute_run(store, mixed).state == "finished"
    assert not any("made differently" in n for n in store.status(alike).notes)
    (note,) = [n for n in store.status(mixed).notes if "made differently" in n]
    assert f"100% of the {first.name} images are JPEG files" in note


def test_a_run_whose_split_cuts_across_patient_folders_says_so(class_dataset, synth, store):
    flat = store.create(synth.config(class_dataset, epochs=1))
    assert execute_run(store, flat).state == "finished"
    for i, path in enumerate(sorted(class_dataset.rglob("*.png"))):  # each class's images in 3 patient folders
        (path.parent / f"patient{i % 3}").mkdir(exist_ok=True)
        path.rename(path.parent / f"patient{i % 3}" / path.name)
    nested = store.create(synth.config(class_dataset, epochs=1))
    assert execute_run(store, nested).state == "finished"
    assert not any("subfolder" in n for n in store.status(flat).notes)
    (note,) = [n for n in store.status(nested).notes if "subfolder" in n]
    assert note.startswith("The images sit in 9 subfolder(s) below their class folders")


def test_a_one_model_run_on_a_tiny_validation_split_says_so(tmp_path, synth, store):
    root = synth.split_folders(tmp_path / "cxr", {"train": {c: 60 for c in ("benign", "malignant", "normal")},
                                               "val": {"benign": 2, "malignant": 2, "normal": 20},
                                               "test": {"benign": 3, "malignant": 3, "normal": 3}})
    one = store.create(synth.config(root, epochs=1, small_data_ensemble=False))
    folds = store.create(synth.config(root, epochs=1))  # a small dataset: the folds validate on their own
    for run_id in (one, folds):
        assert execute_run(store, run_id).state == "finished"
    assert any(n.startswith("The validation split holds only 2 benign and 2 malignant images")
               for n in store.status(one).notes), store.status(one).notes
    assert store.cross_validation(folds).folds == 5
    assert not any("validation split holds" in n for n in store.status(folds).notes)


def test_a_bagged_run_records_models_that_learned_from_every_image_and_says_so(class_dataset, synth, store):
    from medcls.figures.report import run_card_html
    from medcls.inference.predictor import load_predictor
    from medcls.inference.seen import learned_from, seen_sentence

    run_id = store.create(synth.config(class_dataset, bagged_models=2, epochs=1))
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    record = store.model_record(run_id)
    assert record.folds == 2 and record.bagged and store.cross_validation(run_id) is None
    history = store.history(run_id)
    assert [h.fold for h in history] == [1, 2] and not any(h.validated for h in history)
    metrics = store.metrics(run_id)
    assert set(metrics.splits) == {"test"} and metrics.test.n == 6
    summary = store.summary(run_id)
    assert summary.bagged and summary.epochs_words() == "1 of 1 in bagged model 2 of 2"
    assert len(load_predictor(store, run_id).model.members) == 2
    # Every bagged model learned from the validation images too.
    seen = learned_from(store, run_id)
    assert seen.bagged and set(seen.learning) == {"train", "val"}
    val_image = next(path for path, split in seen.splits.items() if split == "val")
    assert "all 2 of this run's bagged models trained on it" in seen_sentence(
        (val_image, "val"), seen.folds, bagged=seen.bagged)
    html = run_card_html(store, run_id)
    assert f"{record.parameters // 2:,} in each of 2 bagged models" in html
    assert "<th>bagged models</th><td>2 of 2 finished</td>" in html
    assert "<th>epochs trained in each bagged model</th><td>1, 1 (of 1)</td>" in html
    assert "Not available: the bagged models learned from every training and validation image" in html
    assert "bagged model 2 of 2" in html and "fold 2 of 2" not in html and "fold model" not in html
