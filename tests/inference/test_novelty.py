"""The "unlike the training data" check: a measured distance in the model's own features, stored with the run.

A model trained on the built-in synthetic phantoms must flag real BUSI scans and must not flag held-out
phantoms (BUSI tests skip when ../shared/datasets/busi is absent); images of another kind (noise, a
uniform gray) are flagged for any model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medcls.config import DataConfig, TrainConfig
from medcls.data import decode_dataset, load_dataset
from medcls.inference.novelty import MARGIN, embed_images, fit_reference, knn_distances, scores
from medcls.inference.predictor import load_predictor
from medcls.jobs.execute import execute_run
from medcls.models import create_model
from medcls.runs.records import RecordError
from medcls.runs.reference import FeatureReference
from medcls.runs.store import RunStore

BUSI = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "busi"
SIZE = 64

# Its trained run is a module fixture: in one test process, it is trained once, not once per process.
pytestmark = pytest.mark.xdist_group("novelty")


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    """A small_cnn trained on the built-in phantoms at 64 px (about 20 s), in its own environment."""
    base = tmp_path_factory.mktemp("novelty")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDCLS_CACHE_DIR", str(base / "cache"))
        store = RunStore(base / "runs")
        run_id = store.create(TrainConfig().with_options(image_size=SIZE, epochs=8, precision="fp32"))
        assert execute_run(store, run_id).state == "finished"
        predictor = load_predictor(store, run_id)
        decoded = decode_dataset(load_dataset(DataConfig()), SIZE, "gray")
        yield store, run_id, predictor, decoded


@pytest.mark.slow  # trains a run (the module fixture, about 30 s)
def test_the_run_stores_its_reference_and_it_reads_back(phantom_run):
    store, run_id, predictor, decoded = phantom_run
    reference = store.feature_reference(run_id)
    assert reference is not None and reference.basis == "validation"
    assert len(reference.features) == 6  # one level per conv block of small_cnn
    assert len(reference.features[0]) == len(decoded.split("train"))
    assert all(limit > 0 for limit in reference.limits) and 0 < reference.typical < 1
    assert predictor.reference is not None


@pytest.mark.slow  # trains a run (the module fixture, about 30 s)
def test_held_out_phantoms_are_not_flagged(phantom_run):
    _, _, predictor, decoded = phantom_run
    test = decoded.split("test")
    found = scores(predictor.reference, embed_images(predictor.model, test.images))
    assert (found > 1).mean() <= 0.05, np.sort(found)[-5:]
    typical = int(np.argsort(found)[len(found) // 2])  # a held-out image of median score (a few may be flagged)
    novelty = predictor.novelty(test.images[typical].numpy())
    assert not novelty.unusual and "resembles the training images" in novelty.sentence()


@pytest.mark.slow  # trains a run (the module fixture, about 30 s)
def test_images_of_another_kind_are_flagged(phantom_run):
    _, _, predictor, _ = phantom_run
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (1, SIZE, SIZE), dtype=np.uint8)
    flat = np.full((1, SIZE, SIZE), 128, np.uint8)
    for pixels in (noise, flat):
        novelty = predictor.novelty(pixels)
        assert novelty.unusual and novelty.score > 1
        assert "unlike the images this model was trained on" in novelty.sentence()


@pytest.mark.slow  # trains a run (the module fixture, about 30 s)
def test_the_command_line_flags_an_image_unlike_the_training_images(phantom_run, tmp_path, capsys):
    """python -m medcls predict says what Try it says: a noise picture is answered, and flagged."""
    import json

    from PIL import Image

    from medcls.cli.main import main

    store, run_id, predictor, decoded = phantom_run
    noise = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (SIZE, SIZE), dtype=np.uint8)).save(noise)
    test = decoded.split("test")
    familiar = int(np.argmin(scores(predictor.reference, embed_images(predictor.model, test.images))))
    phantom = tmp_path / "phantom.png"
    Image.fromarray(test.images[familiar, 0].numpy()).save(phantom)
    assert main(["--runs-dir", str(store.root), "predict", run_id, str(noise), str(phantom)]) == 0
    noise_line, phantom_line = capsys.readouterr().out.strip().splitlines()
    assert "(unlike the training images (" in noise_line and "do not trust this answer)" in noise_line
    assert "unlike the training images" not in phantom_line
    assert main(["--runs-dir", str(store.root), "predict", "--json", run_id, str(noise)]) == 0
    assert json.loads(capsys.readouterr().out)["unlike_training_images"] is True


@pytest.mark.busi
@pytest.mark.skipif(not (BUSI / "split.csv").is_file(), reason="BUSI is not in ../shared/datasets")
@pytest.mark.slow  # trains a run (the module fixture, about 30 s)
def test_real_busi_scans_are_flagged_for_a_phantom_model(phantom_run):
    _, _, predictor, _ = phantom_run
    busi = decode_dataset(load_dataset(DataConfig(source=str(BUSI))), SIZE, "gray", disk_cache=False)
    found = scores(predictor.reference, embed_images(predictor.model, torch.from_numpy(busi.images)))
    # 94-100% over seeds 0-7 on one machine, 86% on another (its arithmetic trains another model): the check is as
    # keen as the default's 12 first-block filters allow (module docstring). A broken check flags a few percent.
    assert (found > 1).mean() >= 0.8, f"only {(found > 1).mean():.0%} of BUSI flagged"


def test_limits_come_from_the_furthest_validation_image():
    rng = np.random.default_rng(1)
    train = [rng.normal(0, 1, (200, 8)).astype(np.float32)]
    val = [rng.normal(0, 1, (40, 8)).astype(np.float32)]
    reference = fit_reference(train, val)
    held_out = knn_distances(reference.features[0].astype(np.float32),
                             (val[0] - reference.centers[0]) / reference.scales[0], reference.k)
    assert reference.limits[0] == pytest.approx(held_out.max() * MARGIN, rel=1e-3)
    assert (scores(reference, val) <= 1 / MARGIN + 1e-6).all()  # no validation image is flagged
    far = [rng.normal(6, 1, (10, 8)).astype(np.float32)]
    assert (scores(reference, far) > 1).all()


def test_without_validation_images_the_training_images_set_the_limit():
    rng = np.random.default_rng(2)
    reference = fit_reference([rng.normal(0, 1, (50, 4)).astype(np.float32)], [])
    assert reference.basis == "training" and reference.limits[0] > 0


def test_a_damaged_reference_reads_as_missing(tmp_path):
    store = RunStore(tmp_path / "runs")
    run_id = store.create(TrainConfig())
    assert store.feature_reference(run_id) is None  # a run from before the check
    store.file(run_id, "novelty.npz").write_bytes(b"not an npz")
    assert store.feature_reference(run_id) is None
    with pytest.raises(RecordError):
        FeatureReference.from_arrays({"meta": np.array("{}")})


def test_every_model_describes_images_level_by_level():
    for name, extra in (("small_cnn", {}), ("seed_cnn_bn", {}), ("resnet18", {"weights": "random"})):
        model = create_model(name, num_classes=3, image_size=64, in_channels=1, **extra).eval()
        levels = embed_images(model, np.zeros((2, 1, 64, 64), np.uint8))
        assert len(levels) >= 3 and all(level.shape[0] == 2 for level in levels), name
        assert all(level.shape[1] <= 1024 for level in levels), name  # compact: a flatten head's map is pooled
