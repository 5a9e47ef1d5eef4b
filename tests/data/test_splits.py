"""Stratified, seeded splits that also cope with tiny classes and keep groups together."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from medcls.data.splits import stratified_folds, stratified_split


def _counts(labels, splits):
    return {s: Counter(int(l) for l, sp in zip(labels, splits) if sp == s) for s in ("train", "val", "test")}


def test_each_class_is_cut_in_the_requested_proportions():
    labels = [0] * 100 + [1] * 40 + [2] * 20
    splits, tiny = stratified_split(labels, 0.15, 0.15, seed=0)
    counts = _counts(labels, splits)
    for label, n in ((0, 100), (1, 40), (2, 20)):
        assert counts["test"][label] == round(n * 0.15)
        assert counts["val"][label] == round(n * 0.15)
        assert counts["train"][label] == n - 2 * round(n * 0.15)
    assert tiny == []


def test_same_seed_same_split_other_seed_other_split():
    labels = np.repeat(np.arange(3), 30)
    a, _ = stratified_split(labels, 0.2, 0.2, seed=4)
    b, _ = stratified_split(labels, 0.2, 0.2, seed=4)
    c, _ = stratified_split(labels, 0.2, 0.2, seed=5)
    assert a == b
    assert a != c
    assert _counts(labels, a) == _counts(labels, c)  # different images, same proportions


def test_small_classes_still_get_val_and_test_and_tiny_ones_stay_in_train():
    labels = [0] * 30 + [1] * 3 + [2] * 2
    splits, tiny = stratified_split(labels, 0.15, 0.15, seed=0)
    counts = _counts(labels, splits)
    assert counts["val"][1] == 1 and counts["test"][1] == 1 and counts["train"][1] == 1
    assert counts["train"][2] == 2 and tiny == [2]


def test_zero_fractions_keep_everything_in_train():
    splits, _ = stratified_split([0, 0, 1, 1, 1], 0.0, 0.0, seed=0)
    assert splits == ["train"] * 5


def test_groups_never_straddle_splits():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3)  # 40 groups of 3 near-duplicates
    labels = np.repeat(rng.integers(0, 2, 40), 3)
    splits, _ = stratified_split(labels, 0.2, 0.2, seed=1, groups=groups)
    by_group = {}
    for g, s in zip(groups, splits):
        by_group.setdefault(int(g), set()).add(s)
    assert all(len(s) == 1 for s in by_group.values())
    assert {"train", "val", "test"} == set(splits)


@pytest.mark.parametrize("seed", range(5))
def test_groups_of_unequal_size_are_dealt_by_their_images(seed):
    """Near copies that chain into a few large groups (frames of one clip, a shape turned a little at a time): the
    splits get about their share of the class's images, not of its groups (by groups, a class once put 26 of its
    40 images in test)."""
    sizes = [14, 9, 6, 4, 3, 2, 1, 1]                  # one class of 40 images in 8 groups
    groups = np.repeat(np.arange(len(sizes)), sizes)
    labels = np.zeros(len(groups), int)
    splits, tiny = stratified_split(labels, 0.15, 0.15, seed=seed, groups=groups)
    counts = Counter(splits)
    assert tiny == [] and all(len({splits[i] for i in np.flatnonzero(groups == g)}) == 1 for g in range(len(sizes)))
    assert counts["train"] >= 26 and 3 <= counts["val"] <= 9 and 3 <= counts["test"] <= 9, counts
    # a class whose images form fewer than three groups cannot be split: it stays in train, and is named
    chained, tiny = stratified_split([0] * 40 + [1] * 30, 0.15, 0.15, seed=seed,
                                     groups=[0] * 38 + [1, 1] + list(range(3, 33)))
    assert tiny == [0] and {chained[i] for i in range(40)} == {"train"}
    other = Counter(chained[40:])                                        # the other class: its shares of 30
    assert other["val"] in (4, 5) and other["test"] in (4, 5) and other["train"] in (20, 21, 22)


def test_every_held_out_split_gets_a_group_when_the_class_has_three():
    splits, tiny = stratified_split([0, 0, 0], 0.15, 0.15, seed=0, groups=[0, 1, 2])
    assert sorted(splits) == ["test", "train", "val"] and tiny == []


def test_folds_keep_class_proportions_and_are_seeded():
    labels = np.array([0] * 50 + [1] * 20 + [2] * 7)
    folds = stratified_folds(labels, 5, seed=0)
    per_fold = np.array([np.bincount(labels[folds == k], minlength=3) for k in range(5)])
    assert per_fold[:, 0].tolist() == [10] * 5 and per_fold[:, 1].tolist() == [4] * 5
    assert sorted(per_fold[:, 2].tolist()) == [1, 1, 1, 2, 2]          # 7 rare images spread as evenly as possible
    assert np.array_equal(folds, stratified_folds(labels, 5, seed=0))
    assert not np.array_equal(folds, stratified_folds(labels, 5, seed=1))


def test_folds_keep_every_group_together():
    labels = np.array([0] * 40 + [1] * 20)
    groups = np.arange(60) // 3  # triples of near-duplicates
    folds = stratified_folds(labels, 4, seed=2, groups=groups)
    assert all(len(set(folds[groups == g])) == 1 for g in np.unique(groups))
    sizes = np.bincount(folds, minlength=4)
    assert sizes.max() - sizes.min() <= 6


def test_fewer_than_two_folds_are_refused():
    with pytest.raises(ValueError, match="at least 2 folds"):
        stratified_folds([0, 1], 1, seed=0)
