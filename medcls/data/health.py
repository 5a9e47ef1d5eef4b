"""Data health: exact and near-duplicate images, label conflicts and split leaks.

Public datasets often hold the same image twice: re-exported, cropped a little,
with or without caliper marks, sometimes filed under two classes (BUSI has
``benign (433).png`` = ``malignant (145).png``). A random image-level split
then puts one copy in train and the other in test, and test accuracy measures
memory instead of generalisation.

Each image gets a 64-bit perceptual hash (``imagehash.phash``, a DCT of the
32x32 grayscale image), a digest of its decoded pixels and a 16x16 thumbnail.
Two images are candidates when their hashes differ in at most ``max_distance``
bits (10 of 64 by default: on BUSI every pair up to 10 bits was, by eye, the
same scan). A candidate counts only when it is closer than chance could
explain for this dataset, by its hash or by its pixels
(:mod:`medcls.data.similarity`): on small look-alike images (28 px chest
X-rays) a fixed number of bits would join thousands of different pictures.
Near-duplicate pairs are joined into groups (connected components), so a chain
of small differences ends up in one group.

Fingerprints (:mod:`medcls.data.fingerprints`) are cached by file contents, so
a dataset is hashed once; renaming or copying a file costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .fingerprints import HashTable, clear_fingerprint_memory, image_hashes
from .similarity import THUMB_SIDE, ChanceLevels, chance_levels, confirm_pairs
from .spec import DatasetSpec, Item
from .splits import stratified_split

__all__ = [
    "DEFAULT_MAX_DISTANCE",
    "HashTable",
    "DuplicateGroup",
    "Leak",
    "HealthReport",
    "image_hashes",
    "near_duplicate_pairs",
    "duplicate_pairs",
    "group_ids",
    "duplicate_group_ids",
    "split_leak",
    "random_split_leak",
    "check_duplicates",
    "made_own_split",
    "clear_hash_memory",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_DISTANCE = 10  # bits of 64
MAX_ALL_PAIRS = 30_000     # above this many images only identical hashes are compared (all pairs get slow)
_BLOCK = 1024              # rows per block when comparing all pairs

Progress = Callable[[int, int], None]

_LOCK = threading.Lock()
_PAIRS: "OrderedDict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]" = OrderedDict()  # recent pair searches


def clear_hash_memory() -> None:
    """Forget fingerprints and pair searches kept in memory (the disk cache stays)."""
    clear_fingerprint_memory()
    with _LOCK:
        _PAIRS.clear()


# --- grouping ---------------------------------------------------------------------------

def near_duplicate_pairs(phash: np.ndarray, max_distance: int = DEFAULT_MAX_DISTANCE,
                         ok: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Index pairs (i < j) whose hashes differ in at most ``max_distance`` bits, with the distance.

    All pairs are compared (about a second for 20,000 images), so the last few answers are remembered:
    a page that redraws asks the same question again.
    """
    phash = np.asarray(phash, dtype=np.uint64)
    ok = np.ones(len(phash), bool) if ok is None else np.asarray(ok, bool)
    key = hashlib.blake2b(phash.tobytes() + ok.tobytes() + f"|{max_distance}|{_BLOCK}".encode(),
                          digest_size=16).hexdigest()
    with _LOCK:
        if key in _PAIRS:
            _PAIRS.move_to_end(key)
            return _PAIRS[key]
    result = _all_pairs(phash, ok, max_distance)
    with _LOCK:
        _PAIRS[key] = result
        while len(_PAIRS) > 4:
            _PAIRS.popitem(last=False)
    return result


def _all_pairs(phash: np.ndarray, ok: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    usable = np.flatnonzero(ok)
    hashes = phash[usable]
    firsts, seconds, dists = [], [], []
    if len(hashes) > MAX_ALL_PAIRS:
        log.warning("%d images: only identical hashes are compared (all pairs would be slow)", len(hashes))
        order = np.argsort(hashes, kind="stable")
        same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
        firsts, seconds = [order[same]], [order[same + 1]]
        dists = [np.zeros(len(same), dtype=np.int64)]
    else:
        for start in range(0, len(hashes), _BLOCK):
            block = hashes[start:start + _BLOCK]
            distance = np.bitwise_count(block[:, None] ^ hashes[None, start:])  # only pairs with j >= start
            rows, cols = np.nonzero(distance <= max_distance)
            keep = cols > rows
            firsts.append(rows[keep] + start)
            seconds.append(cols[keep] + start)
            dists.append(distance[rows[keep], cols[keep]].astype(np.int64))
    if not firsts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    first, second = np.concatenate(firsts), np.concatenate(seconds)
    a, b = usable[first], usable[second]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo.astype(np.int64), hi.astype(np.int64), np.concatenate(dists)


@dataclass(frozen=True)
class DuplicatePairs:
    """Near-duplicate pairs (i < j) beyond chance, their hash distances, and how many candidates chance explained."""

    first: np.ndarray
    second: np.ndarray
    distance: np.ndarray
    levels: ChanceLevels
    rejected: int          # candidate pairs (within the bits) that unrelated images of this dataset also reach


def duplicate_pairs(table: HashTable, max_distance: int = DEFAULT_MAX_DISTANCE) -> DuplicatePairs:
    """Candidate pairs within ``max_distance`` bits, kept only when closer than chance (hash or pixels)."""
    first, second, dist = near_duplicate_pairs(table.phash, max_distance, table.ok)
    thumbs = table.thumbs if table.thumbs is not None else np.zeros((len(table.phash), THUMB_SIDE ** 2), np.uint8)
    levels = chance_levels(table.phash, thumbs, table.ok)
    identical = np.array([table.pixels[a] == table.pixels[b] != "" for a, b in zip(first, second)], dtype=bool)
    keep = confirm_pairs(first, second, dist, thumbs, identical, levels)
    if not keep.all():
        log.info("%d of %d candidate pairs within %d bits are no closer than chance here; not counted",
                 int((~keep).sum()), len(keep), max_distance)
    return DuplicatePairs(first[keep], second[keep], dist[keep], levels, int((~keep).sum()))


def group_ids(n: int, first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """A group number per item: items joined by a chain of pairs share one (connected components)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def duplicate_group_ids(paths: Sequence[str], max_distance: int = DEFAULT_MAX_DISTANCE,
                        progress: Progress | None = None) -> list[int]:
    """Group numbers for a split that keeps near-duplicates together (unreadable files stay alone)."""
    table = image_hashes(paths, progress=progress)
    pairs = duplicate_pairs(table, max_distance)
    return [int(g) for g in group_ids(len(paths), pairs.first, pairs.second)]


# --- leaks ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Leak:
    """How many held-out images have a near-duplicate in an earlier split."""

    test_in_train: float   # test images with a near-duplicate in train
    val_in_train: float    # validation images with a near-duplicate in train
    test_in_val: float     # test images with a near-duplicate in validation
    test_images: float
    val_images: float
    # test images with a near-duplicate in train or validation: what a cross-validated run learns from
    test_in_learning: float = 0.0

    @property
    def test_share(self) -> float:
        return self.test_in_train / self.test_images if self.test_images else 0.0


def split_leak(groups: Sequence[int], splits: Sequence[str]) -> Leak:
    """Leak counts of one assignment of items to splits."""
    by_group: dict[int, set[str]] = {}
    for group, split in zip(groups, splits):
        by_group.setdefault(int(group), set()).add(split)

    def count(held_out: str, *seen: str) -> int:
        return sum(1 for g, s in zip(groups, splits) if s == held_out and by_group[int(g)].intersection(seen))

    return Leak(test_in_train=count("test", "train"), val_in_train=count("val", "train"),
                test_in_val=count("test", "val"), test_images=sum(s == "test" for s in splits),
                val_images=sum(s == "val" for s in splits), test_in_learning=count("test", "train", "val"))


def random_split_leak(groups: Sequence[int], labels: Sequence[int], val_fraction: float = 0.15,
                      test_fraction: float = 0.15, seeds: Sequence[int] = range(5)) -> Leak:
    """The average leak of a random stratified split that ignores duplicates (over ``seeds``)."""
    leaks = [split_leak(groups, stratified_split(labels, val_fraction, test_fraction, seed)[0]) for seed in seeds]
    return Leak(*(float(np.mean([getattr(leak, f) for leak in leaks])) for f in Leak.__dataclass_fields__))


# --- the report -------------------------------------------------------------------------------

@dataclass
class DuplicateGroup:
    """Two or more images that are the same picture (or nearly)."""

    items: list[Item]
    identical: bool        # every member has exactly the same pixels
    max_distance: int      # largest hash distance between two directly matched members

    @property
    def labels(self) -> list[int]:
        return sorted({it.label for it in self.items})

    @property
    def splits(self) -> list[str]:
        order = {"train": 0, "val": 1, "test": 2}
        return sorted({it.split for it in self.items}, key=lambda s: order.get(s, 3))

    @property
    def conflict(self) -> bool:
        """The same image carries different labels."""
        return len(self.labels) > 1

    @property
    def leak(self) -> bool:
        """Copies of the image sit in different splits."""
        return len(self.splits) > 1

    def conflict_example(self) -> list[Item]:
        """One member per class: the copies that carry different labels (for "a.png (benign) = b.png (malignant)")."""
        first_of: dict[int, Item] = {}
        for item in self.items:
            first_of.setdefault(item.label, item)
        return [first_of[label] for label in sorted(first_of)]


@dataclass
class HealthReport:
    groups: list[DuplicateGroup]   # conflicts first, then leaks, then larger groups
    group_of: np.ndarray           # a group number per spec item (singletons have their own)
    failures: list[tuple[str, str]]
    max_distance: int
    checked: int                   # images hashed successfully
    levels: ChanceLevels | None = None  # what chance gives in this dataset (see medcls.data.similarity)
    rejected_pairs: int = 0        # candidate pairs no closer than chance, not counted as duplicates

    def describe_check(self) -> str:
        """How duplicates were told from look-alikes in this dataset, in words."""
        if self.levels is None:
            return ""
        text = self.levels.describe(self.max_distance)
        if self.rejected_pairs:
            text += (f" {self.rejected_pairs:,} pair(s) within {self.max_distance} bits were look-alikes, not "
                     "copies, and are not counted.")
        return text

    @property
    def duplicated_images(self) -> int:
        return sum(len(g.items) for g in self.groups)

    @property
    def redundant_images(self) -> int:
        """Images that could be removed while keeping one of each group."""
        return sum(len(g.items) - 1 for g in self.groups)

    @property
    def conflicts(self) -> list[DuplicateGroup]:
        return [g for g in self.groups if g.conflict]

    @property
    def leaks(self) -> list[DuplicateGroup]:
        return [g for g in self.groups if g.leak]


def check_duplicates(spec: DatasetSpec, max_distance: int = DEFAULT_MAX_DISTANCE,
                     progress: Progress | None = None) -> HealthReport:
    """Find exact and near-duplicate images across all classes and splits of a dataset."""
    paths = [it.path for it in spec.items]
    table = image_hashes(paths, progress=progress)
    pairs = duplicate_pairs(table, max_distance)
    first, second, dist = pairs.first, pairs.second, pairs.distance
    groups = group_ids(len(paths), first, second)
    worst: dict[int, int] = {}
    for a, d in zip(first, dist):
        worst[int(groups[a])] = max(worst.get(int(groups[a]), 0), int(d))
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(int(g), []).append(i)
    found = []
    for g, idx in members.items():
        if len(idx) < 2:
            continue
        identical = len({table.pixels[i] for i in idx}) == 1
        found.append(DuplicateGroup([spec.items[i] for i in idx], identical, worst.get(g, 0)))
    found.sort(key=lambda grp: (not grp.conflict, not grp.leak, -len(grp.items), grp.items[0].path))
    return HealthReport(found, groups, table.failures, max_distance, int(table.ok.sum()), pairs.levels,
                        pairs.rejected)


def made_own_split(spec: DatasetSpec) -> bool:
    """True when medcls made the train/val/test split itself (the data had none of its own)."""
    return any(note.startswith(("No split given", "The dataset's own split was set aside"))
               for note in spec.report.notes)
