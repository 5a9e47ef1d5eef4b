"""Model cost summary: parameter counts, memory and the per-epoch time estimate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medcls.config import DataConfig, TrainConfig
from medcls.models import create_model
from medcls.models.summary import estimate_epoch_seconds, summarize, time_step
from medcls.training.pipeline import train_in_memory


def test_summary_counts_match_the_model():
    model = create_model("seed_cnn_bn", num_classes=3, image_size=256, in_channels=3)
    s = summarize(model, "adamw")
    assert s.parameters == sum(p.numel() for p in model.parameters())
    assert s.parameters == sum(count for _, count in s.layers)
    # The seed's flatten head: 128*32*32 -> 1024 dominates (the 134M example).
    assert s.largest_layer == ("classifier.0", 128 * 32 * 32 * 1024 + 1024)
    assert s.largest_share > 0.95
    assert s.weights_mb == pytest.approx(s.parameters * 4 / 2**20)
    assert s.optimizer_mb == pytest.approx(s.trainable * 4 * 3 / 2**20)  # grads + two Adam moments


def test_summary_of_a_frozen_backbone_counts_only_the_head_as_trainable():
    model = create_model("resnet18", num_classes=3, image_size=64, in_channels=1, weights="random")
    s = summarize(model, "sgd")
    head = sum(p.numel() for p in model.head.parameters())
    assert s.trainable == head < s.parameters
    assert s.optimizer_mb == pytest.approx(head * 4 * 2 / 2**20)


def _dataset(root, per_class=48, size=48):
    rng = np.random.default_rng(0)
    for name, level in (("a", 60), ("b", 190)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            arr = rng.normal(level, 30, (size, size)).clip(0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")
    return root


@pytest.fixture
def one_thread():
    """Steady timing on a shared 2-core machine; restores the thread count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_epoch_estimate_is_within_a_factor_of_two_of_a_measured_epoch(tmp_path, one_thread):
    cfg = TrainConfig(data=DataConfig(source=str(_dataset(tmp_path / "d")))).with_options(
        image_size=48, epochs=3, batch_size=16, precision="fp32", imbalance="none", augment=False)
    result = train_in_memory(cfg)
    measured = float(np.median([h.seconds for h in result.fit.history]))
    model = create_model("small_cnn", num_classes=2, image_size=48, in_channels=1)
    step = time_step(model, cfg.batch_size, 1, 48, 2, repeats=3)
    estimate = estimate_epoch_seconds(step, cfg.batch_size, len(result.data.train), len(result.data.val))
    assert 0.5 <= estimate / measured <= 2.0, (estimate, measured)


def test_time_step_leaves_the_weights_unchanged():
    model = create_model("small_cnn", num_classes=2, image_size=32, in_channels=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert time_step(model, 4, 1, 32, 2) > 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_largest_layer_is_flagged_as_linear_only_for_flatten_heads():
    assert summarize(create_model("seed_cnn_bn", num_classes=3, image_size=128, in_channels=1)).largest_is_linear
    assert not summarize(create_model("small_cnn", num_classes=3, image_size=128, in_channels=1)).largest_is_linear
