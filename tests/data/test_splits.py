"""Stratified, seeded splits that also cope with tiny classes and keep groups together."""

from __future__ import annotations

from collections import Counter

import numpy as np

from medcls.data.splits import stratified_split


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
