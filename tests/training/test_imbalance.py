"""Imbalance strategies: oversampling, sklearn-balanced weights, a class-balanced sampler."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

from medcls.training.imbalance import (
    BALANCED_EPOCH_LIMIT,
    EpochSampler,
    balanced_class_weights,
    make_sampler,
    oversample_indices,
    parse_multipliers,
)

CLASSES = ["benign", "malignant", "normal"]


def _labels(counts):
    return np.concatenate([np.full(n, c) for c, n in enumerate(counts)])


def test_parse_multipliers_matches_class_names_case_insensitively():
    assert parse_multipliers(["Malignant=16", "benign=5"], CLASSES) == {1: 16.0, 0: 5.0}
    with pytest.raises(ValueError, match="cancer"):
        parse_multipliers(["cancer=4"], CLASSES)


def test_oversampling_with_multipliers_repeats_rare_classes():
    labels = _labels([50, 4, 30])
    idx = oversample_indices(labels, 3, np.random.default_rng(0), {1: 16.0, 0: 2.0})
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.tolist() == [100, 64, 30]
    assert set(range(len(labels))) <= set(idx.tolist())  # every original image is kept
    extra = idx[len(labels):]
    assert set(labels[extra].tolist()) == {0, 1}              # only the multiplied classes are repeated


def test_oversampling_without_multipliers_balances_to_the_largest_class():
    labels = _labels([50, 4, 30])
    counts = np.bincount(labels[oversample_indices(labels, 3, np.random.default_rng(0))], minlength=3)
    assert counts.tolist() == [50, 50, 50]


def test_balanced_class_weights_equal_sklearns():
    labels = _labels([50, 4, 30])
    ours = balanced_class_weights(labels, 3).numpy()
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    assert np.allclose(ours, expected)
    assert ours[1] > ours[2] > ours[0]
    absent = balanced_class_weights(_labels([10, 0, 5]), 3).numpy()
    assert absent[1] == 1.0 and np.allclose(absent[[0, 2]], compute_class_weight(
        "balanced", classes=np.array([0, 2]), y=_labels([10, 0, 5])))


def test_weighted_sampler_draws_classes_roughly_equally():
    labels = _labels([2700, 270, 30])
    sampler = EpochSampler(labels, 3, "weighted_sampler", seed=0)
    counts = sampler.epoch_class_counts(1)
    assert counts.sum() == len(labels)
    assert np.all(np.abs(counts - 1000) < 150), counts
    assert len(sampler) == len(labels)


def test_epoch_orders_are_seeded_and_change_every_epoch():
    labels = _labels([20, 5, 10])
    a = EpochSampler(labels, 3, "none", seed=1)
    b = EpochSampler(labels, 3, "none", seed=1)
    assert np.array_equal(a.indices(1), b.indices(1))
    assert not np.array_equal(a.indices(1), a.indices(2))
    assert sorted(a.indices(3).tolist()) == list(range(len(labels)))  # 'none': every image once
    assert not np.array_equal(a.indices(1), EpochSampler(labels, 3, "none", seed=2).indices(1))


def test_weighted_loss_strategy_does_not_resample():
    labels = _labels([20, 5, 10])
    sampler = make_sampler(labels, CLASSES, "weighted_loss", seed=0)
    assert sorted(sampler.indices(1).tolist()) == list(range(len(labels)))


def test_make_sampler_applies_oversampling_multipliers():
    labels = _labels([20, 5, 10])
    sampler = make_sampler(labels, CLASSES, "oversample", seed=0, oversample=["malignant=4"])
    assert len(sampler) == 50
    assert sampler.epoch_class_counts(1).tolist() == [20, 20, 10]
    balanced = make_sampler(labels, CLASSES, "oversample", seed=0)
    assert balanced.epoch_class_counts(2).tolist() == [20, 20, 20]
    # Multipliers only matter for oversampling.
    assert len(make_sampler(labels, CLASSES, "none", seed=0, oversample=["malignant=4"])) == 35


def test_balancing_a_strongly_imbalanced_set_limits_each_epoch_but_stays_balanced():
    labels = _labels([200, 20, 10])  # balancing would draw 600, 2.6 times the 230 images
    sampler = make_sampler(labels, CLASSES, "oversample", seed=0)
    assert sampler.limited and len(sampler) == int(BALANCED_EPOCH_LIMIT * len(labels)) == 460
    epoch = sampler.indices(1)
    assert len(epoch) == 460
    counts = np.bincount(labels[epoch], minlength=3)
    assert np.all(np.abs(counts - 460 / 3) < 40), counts  # still about equally often
    assert sampler.every_image_within() == 3  # ceil((2 * 600 - 1) / 460)
    for first in (1, 2, 5):  # wherever one starts counting
        seen = set().union(*(sampler.indices(e).tolist() for e in range(first, first + 3)))
        assert seen == set(range(len(labels)))
    assert np.array_equal(epoch, make_sampler(labels, CLASSES, "oversample", seed=0).indices(1))  # seeded
    note = sampler.limit_note()
    assert "2.6 times the training images" in note and "rarest class about 20 times" in note and "in any 3 epochs in a row" in note
    # A mild imbalance (BUSI: 1.7 times) and explicit multipliers are kept whole.
    mild = make_sampler(_labels([100, 50, 30]), CLASSES, "oversample", seed=0)
    assert not mild.limited and len(mild) == 300 and mild.limit_note() is None
    asked = make_sampler(labels, CLASSES, "oversample", seed=0, oversample=["malignant=10", "normal=20"])
    assert not asked.limited and len(asked) == 600


def test_a_limited_epoch_share_draws_every_image_within_the_promised_epochs():
    labels = _labels([500, 5, 5])  # balanced list 1,500 entries, epochs of 1,020: the widest gap between passes
    sampler = make_sampler(labels, CLASSES, "oversample", seed=3)
    k = sampler.every_image_within()
    assert k == 3
    for first in range(1, 8):
        seen = set().union(*(sampler.indices(e).tolist() for e in range(first, first + k)))
        assert seen == set(range(len(labels))), first
