"""Model cost summary: parameter counts per layer (in words) and memory. Time: tests/training/test_estimate.py."""

from __future__ import annotations

import pytest

from medcls.models import create_model
from medcls.models.summary import summarize


def test_summary_counts_match_the_model():
    model = create_model("seed_cnn_bn", num_classes=3, image_size=256, in_channels=3)
    s = summarize(model, "adamw")
    assert s.parameters == sum(p.numel() for p in model.parameters())
    assert s.parameters == sum(count for _, count in s.layers)
    # The seed's flatten head: 128*32*32 -> 1024 dominates (the 134M example).
    assert s.largest_layer == ("head · hidden layer 1", 128 * 32 * 32 * 1024 + 1024)
    assert s.largest_share > 0.95
    assert s.weights_mb == pytest.approx(s.parameters * 4 / 2**20)
    assert s.optimizer_mb == pytest.approx(s.trainable * 4 * 3 / 2**20)  # grads + two Adam moments


def test_summary_of_a_frozen_backbone_counts_only_the_head_as_trainable():
    model = create_model("resnet18", num_classes=3, image_size=64, in_channels=1, weights="random")
    s = summarize(model, "sgd")
    head = sum(p.numel() for p in model.head.parameters())
    assert s.trainable == head < s.parameters
    assert s.optimizer_mb == pytest.approx(head * 4 * 2 / 2**20)


def test_the_largest_layer_is_flagged_as_linear_only_for_flatten_heads():
    assert summarize(create_model("seed_cnn_bn", num_classes=3, image_size=128, in_channels=1)).largest_is_linear
    assert not summarize(create_model("small_cnn", num_classes=3, image_size=128, in_channels=1)).largest_is_linear


def test_layers_are_named_in_words_not_module_paths():
    names = [name for name, _ in summarize(create_model("seed_cnn_bn", num_classes=3, image_size=64,
                                                         in_channels=1)).layers]
    assert names[:2] == ["block 1 · convolution", "block 1 · batch norm"]
    assert names[-1] == "head · output layer" and "head · hidden layer 2" in names
    assert not any("." in name or name[0].isdigit() for name in names)  # no "features.0", "classifier.4"
    resnet = summarize(create_model("resnet18", num_classes=2, image_size=64, in_channels=1, weights="random"))
    assert [n for n, _ in resnet.layers][:5] == ["first convolution", "stage 1", "stage 2", "stage 3", "stage 4"]
    assert sum(count for _, count in resnet.layers) == resnet.parameters


def test_forward_macs_counts_every_convolution_and_linear_product():
    from torch import nn

    from medcls.models.summary import forward_macs

    # conv 1->4, 3x3, padding 1 on 8x8: 8*8*4 outputs of 1*3*3 products; then 4*8*8 -> 2 linear: 256*2.
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 2)).train()
    assert forward_macs(model, 8, 1) == 8 * 8 * 4 * 9 + 256 * 2
    assert model.training  # left in the mode it was in
    small = create_model("small_cnn", num_classes=3, image_size=64, in_channels=1)
    # Twice the side: four times the arithmetic in the convolutions (the small head barely counts).
    ratio = forward_macs(small, 128, 1) / forward_macs(small, 64, 1)
    assert ratio == pytest.approx(4.0, rel=0.01)
