"""Seeded, stratified train/val/test splits.

Each class is shuffled and cut on its own, so every split keeps the class
proportions. Unlike scikit-learn's ``train_test_split`` this also works for
classes with one or two images (they stay in train, with a warning), which is
common in small teaching datasets. An optional ``groups`` array keeps all
images of a group (e.g. near-duplicates) in the same split.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from ..config import DataConfig

__all__ = ["stratified_split", "stratified_folds", "split_groups", "GroupedBy", "PatientSource"]


class PatientSource(NamedTuple):
    """Where a dataset's patients are found, for ``group_subfolders``: the folders below ``root`` (as ``layout``
    places them), or a manifest's patient ``column`` (``named``: path -> patient), which wins when given."""
    root: str = ""
    layout: str = ""
    named: Mapping[str, str] = {}
    column: str = ""


class GroupedBy(NamedTuple):
    """The groups a split keeps together (None: every image on its own), and what joined them."""
    groups: np.ndarray | None
    kinds: tuple[str, ...]            # ('subfolders', 'near-duplicates'), as asked for
    said: tuple[str, ...]             # each kind's words for the split's note


def split_groups(cfg: DataConfig, paths: Sequence[str], labels: Sequence[int], root: str = "",
                 layout: str = "", named: Mapping[str, str] | None = None, column: str = "") -> GroupedBy:
    """The groups of images a split (or the folds) must keep together, as ``cfg`` asks: each patient or study
    folder's images (``group_subfolders``; ``root`` and ``layout`` place the folders, and the images' ``labels``
    tell a class's one container folder from its patients') and near-duplicates (``group_duplicates``), joined
    into one group wherever the two meet. A manifest's patient ``column`` (``named``: path -> patient) stands in for
    the folders."""
    labelings, kinds, said = [], [], []
    if cfg.group_subfolders:
        from .subfolders import patient_folders

        folders = patient_folders(paths, labels, root, layout, named)
        ids: dict[str, int] = {}
        labelings.append(np.array([ids.setdefault(key, len(paths) + len(ids)) if key is not None else i
                                   for i, key in enumerate(folders)], dtype=np.int64))
        kinds.append("subfolders" if not named else f"{column} values")
        inside = len(paths) - folders.count(None)
        if named:
            said.append(f"each {column}'s images kept in the same split ({inside:,} images of {len(ids):,} {column} "
                        "values)")
        else:
            said.append(f"each subfolder's images kept in the same split ({inside:,} images in {len(ids):,} "
                        "subfolder(s))" if ids else "no subfolders to keep together: each class's images sit "
                        "directly in its folder, or all in one")
    if cfg.group_duplicates:
        from .health import duplicate_group_ids  # hashes every image once (cached by contents)

        copies = np.asarray(duplicate_group_ids(paths), dtype=np.int64)
        labelings.append(copies)
        kinds.append("near-duplicates")
        said.append(f"near-duplicates kept in the same split ({len(copies) - len(set(copies.tolist()))} image(s) "
                    "joined a duplicate)")
    if len(labelings) < 2:
        return GroupedBy(labelings[0] if labelings else None, tuple(kinds), tuple(said))
    from .health import group_ids

    # one group for a subfolder and every near copy of its images, wherever they are
    pairs = np.array([pair for labeling in labelings for pair in _members_to_first(labeling)], dtype=np.int64)
    return GroupedBy(group_ids(len(paths), pairs[:, 0], pairs[:, 1]), tuple(kinds), tuple(said))


def _members_to_first(groups: np.ndarray) -> list[tuple[int, int]]:
    """(first member, member) pairs that join each group's images: what a union of two groupings is built from."""
    first: dict[int, int] = {}
    return [(first.setdefault(int(g), i), i) for i, g in enumerate(groups)]


def stratified_split(
    labels: Sequence[int],
    val_fraction: float,
    test_fraction: float,
    seed: int,
    groups: Sequence[int] | None = None,
) -> tuple[list[str], list[int]]:
    """Assign 'train', 'val' or 'test' to each label.

    Returns the splits and the labels of classes too small to split (kept whole in train).
    """
    labels = np.asarray(labels)
    group_ids = np.arange(len(labels)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    out = ["train"] * len(labels)
    too_small: list[int] = []

    members, by_class = _groups_by_class(labels, group_ids)

    for label in sorted(by_class):
        groups_of_class = sorted(by_class[label])
        rng.shuffle(groups_of_class)
        if groups is not None:  # groups of near copies differ in size: deal them out by their images
            dealt = _deal_by_images(groups_of_class, members, val_fraction, test_fraction)
            if dealt is None:
                too_small.append(int(label))
            for group, split in (dealt or {}).items():
                for index in members[group]:
                    out[index] = split
            continue
        n = len(groups_of_class)
        n_test = int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        # Each held-out split gets at least one example when the class can spare it,
        # and train always keeps at least one.
        if test_fraction > 0 and n_test == 0 and n >= 3:
            n_test = 1
        if val_fraction > 0 and n_val == 0 and n >= 3:
            n_val = 1
        if n - n_test - n_val < 1:
            n_test, n_val = 0, 0
        if n_test + n_val == 0 and (test_fraction > 0 or val_fraction > 0):
            too_small.append(int(label))  # e.g. 1-2 images: all stay in train, with a warning
        for position, group in enumerate(groups_of_class):
            split = "test" if position < n_test else "val" if position < n_test + n_val else "train"
            for index in members[group]:
                out[index] = split
    return out, too_small


def stratified_folds(labels: Sequence[int], folds: int, seed: int,
                     groups: Sequence[int] | None = None) -> np.ndarray:
    """A fold number 0..folds-1 for each label: every fold gets its share of every class, and all images of a
    group (e.g. near-duplicates) land in one fold.

    Groups are dealt out per class, largest first, each to the fold that holds the fewest images of that class
    so far (ties broken by the seeded shuffle), so fold sizes stay even also when groups differ in size.
    """
    if folds < 2:
        raise ValueError(f"Cross-validation needs at least 2 folds (got {folds}).")
    labels = np.asarray(labels)
    group_ids = np.arange(len(labels)) if groups is None else np.asarray(groups)
    rng = np.random.default_rng(seed)
    members, by_class = _groups_by_class(labels, group_ids)
    out = np.zeros(len(labels), dtype=np.int64)
    for label in sorted(by_class):
        class_groups = sorted(by_class[label])
        rng.shuffle(class_groups)
        class_groups.sort(key=lambda g: -len(members[g]))  # stable: the shuffle breaks ties
        filled = np.zeros(folds)
        start = int(rng.integers(folds))  # which fold gets a class's remainder varies by class
        for group in class_groups:
            order = [(start + i) % folds for i in range(folds)]
            fold = min(order, key=lambda f: filled[f])
            filled[fold] += len(members[group])
            out[members[group]] = fold
    return out


def _deal_by_images(groups: list[int], members: dict[int, list[int]], val_fraction: float,
                    test_fraction: float) -> dict[int, str] | None:
    """Each of one class's groups (shuffled) to a split, so that the splits' images come as close to their shares
    as whole groups allow; None when the class has too few groups to split (fewer than 3).

    Dealing groups by count, as single images are, let a class whose near copies chain into a few large groups
    put 26 of its 40 images in test. Here the largest groups go first, each to the split furthest below its
    share of the class's images; then each held-out split with a share gets a group, and train keeps one."""
    shares = {"test": test_fraction, "val": val_fraction, "train": 1.0 - val_fraction - test_fraction}
    if len(groups) < 3 and (val_fraction > 0 or test_fraction > 0):
        return None
    total = sum(len(members[g]) for g in groups)
    filled = dict.fromkeys(shares, 0)
    dealt: dict[int, str] = {}
    for group in sorted(groups, key=lambda g: -len(members[g])):  # stable: the shuffle breaks ties
        split = max(shares, key=lambda s: shares[s] * total - filled[s])  # ties: test, val, train
        dealt[group] = split
        filled[split] += len(members[group])
    for split in ("test", "val"):
        if shares[split] > 0 and split not in dealt.values():
            in_train = [g for g, s in dealt.items() if s == "train"]
            if len(in_train) > 1:
                dealt[min(in_train, key=lambda g: len(members[g]))] = split
    return dealt


def _groups_by_class(labels: np.ndarray, group_ids: np.ndarray) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Each group's member indices, and each class's groups. A group goes where its first member's class sends
    it; groups, not images, are the unit that is shuffled and dealt out."""
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(group_ids):
        members[int(group)].append(index)
    by_class: dict[int, list[int]] = defaultdict(list)
    for group, idx in members.items():
        by_class[int(labels[idx[0]])].append(group)
    return members, by_class
