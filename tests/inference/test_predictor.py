"""Predicting one image from a finished run, and evaluating a run on data."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from medcls.data import DataError, ImageReadError, decode_dataset, load_dataset
from medcls.inference.evaluate import evaluate_run
from medcls.inference.predictor import LOW_CONFIDENCE, Prediction, load_predictor
from medcls.inference.proba import predict_proba
from medcls.runs.store import RunNotFoundError


def test_predict_from_a_path_or_bytes_gives_probabilities_over_the_runs_classes(finished_run, class_dataset):
    store, run_id = finished_run
    predictor = load_predictor(store, run_id)
    image = class_dataset / "malignant" / "malignant (0).png"
    by_path = predictor.predict(image)
    by_bytes = predictor.predict(image.read_bytes(), name="upload.png")
    classes = list(store.model_record(run_id).classes)
    for pred in (by_path, by_bytes):
        assert list(pred.probabilities) == classes
        assert sum(pred.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        assert pred.label == max(pred.probabilities, key=pred.probabilities.get)
        assert pred.confidence == pytest.approx(max(pred.probabilities.values()))
    assert by_path.probabilities == pytest.approx(by_bytes.probabilities)


def test_unreadable_uploads_raise_image_read_error(finished_run, tmp_path):
    store, run_id = finished_run
    predictor = load_predictor(store, run_id)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageReadError, match="not an image"):
        predictor.predict(text)
    with pytest.raises(ImageReadError, match="empty"):
        predictor.predict(b"")


def test_prediction_preprocessing_matches_training(finished_run):
    store, run_id = finished_run
    predictor = load_predictor(store, run_id)
    cfg = store.config(run_id)
    decoded = decode_dataset(load_dataset(cfg.data), cfg.image_size, cfg.data.color)
    for index in (0, 5, 17):
        path = decoded.spec.items[index].path
        assert np.array_equal(predictor.pixels(path), decoded.images[index]), path


def test_the_predictor_uses_the_runs_best_weights(finished_run, class_dataset):
    store, run_id = finished_run
    predictor = load_predictor(store, run_id)
    state = store.load_weights(run_id)
    own = predictor.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())
    assert not predictor.model.training


def test_predictors_are_cached_until_the_weights_change(finished_run):
    store, run_id = finished_run
    first = load_predictor(store, run_id)
    assert load_predictor(store, run_id) is first
    weights = store.file(run_id, "best.pt")
    store.save_weights(run_id, store.load_weights(run_id))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert load_predictor(store, run_id) is not first


def test_a_run_without_weights_cannot_predict(store, synth, class_dataset):
    run_id = store.create(synth.config(class_dataset))
    with pytest.raises(RunNotFoundError):
        load_predictor(store, run_id)


def test_low_confidence_flag():
    assert Prediction("a", {"a": 0.55, "b": 0.45}, 0.55).low_confidence
    assert not Prediction("a", {"a": 0.9, "b": 0.1}, 0.9).low_confidence
    assert 0.5 < LOW_CONFIDENCE < 1


def test_evaluate_run_on_its_own_test_split_matches_the_stored_metrics(finished_run):
    store, run_id = finished_run
    metrics = evaluate_run(store, run_id)
    stored = store.metrics(run_id).test
    assert metrics.n == stored.n
    assert metrics.confusion_matrix == stored.confusion_matrix
    assert metrics.macro_f1 == pytest.approx(stored.macro_f1)


def test_evaluate_run_on_other_data_needs_matching_classes(finished_run, tmp_path, synth):
    store, run_id = finished_run
    other = synth.split_folders(tmp_path / "other", {
        "train": {"benign": 4, "cancer": 4, "normal": 4}, "val": {"benign": 2, "cancer": 2, "normal": 2},
        "test": {"benign": 2, "cancer": 2, "normal": 2}})
    with pytest.raises(DataError, match="cancer"):
        evaluate_run(store, run_id, data_source=str(other))
    metrics = evaluate_run(store, run_id, data_source=str(other), class_aliases=["cancer=malignant"], split="all")
    assert metrics.n == 24 and metrics.classes == ["benign", "malignant", "normal"]
    assert sum(map(sum, metrics.confusion_matrix)) == 24


def test_predict_proba_gives_rows_that_sum_to_one(finished_run):
    store, run_id = finished_run
    model = load_predictor(store, run_id).model
    probs = predict_proba(model, torch.randint(0, 255, (5, 1, 32, 32), dtype=torch.uint8), batch_size=2)
    assert probs.shape == (5, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)


def test_predict_proba_averages_precomputed_feature_views_like_image_views():
    from medcls.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, image_size=32, in_channels=1).eval()
    images = torch.randint(0, 255, (4, 1, 32, 32), dtype=torch.uint8)
    with torch.inference_mode():
        x = images.float() / 255
        feats = torch.stack([model.forward_features(model.normalize(v)) for v in (x, x.flip(-1))], 1)  # (N, 2, F)
    from_images = predict_proba(model, images, tta=True)
    from_features = predict_proba(model.head, feats)
    np.testing.assert_allclose(from_images, from_features, atol=1e-5)


def test_test_time_augmentation_averages_the_image_and_its_mirror():
    from medcls.inference.predictor import Predictor
    from medcls.models import create_model

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, image_size=32, in_channels=1).eval()
    pixels = (np.arange(32 * 32, dtype=np.uint8).reshape(1, 32, 32) * 7) % 251  # not mirror-symmetric
    plain = Predictor(model, ["a", "b", "c"], 32, "gray").probabilities(pixels)
    mirrored = Predictor(model, ["a", "b", "c"], 32, "gray").probabilities(pixels[:, :, ::-1].copy())
    both = Predictor(model, ["a", "b", "c"], 32, "gray", tta=True).probabilities(pixels)
    assert not np.allclose(plain, mirrored)
    np.testing.assert_allclose(both, (plain + mirrored) / 2, atol=1e-6)
    assert both.sum() == pytest.approx(1.0, abs=1e-6)
