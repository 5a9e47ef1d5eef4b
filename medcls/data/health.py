"""Data health: exact and near-duplicate images, label conflicts and split leaks.

Public datasets often hold the same image twice: re-exported, cropped a little,
with or without caliper marks, sometimes filed under two classes (BUSI has
``benign (433).png`` = ``malignant (145).png``). A random image-level split
then puts one copy in train and the other in test, and test accuracy measures
memory instead of generalisation.

Each image gets a 64-bit perceptual hash (``imagehash.phash``, a DCT of the
32x32 grayscale image) and a digest of its decoded pixels. Two images are
near-duplicates when their hashes differ in at most ``max_distance`` bits
(10 of 64 by default: on BUSI every pair up to 10 bits was, by eye, the same
scan; past 12 bits different lesions start to appear). Near-duplicate pairs
are joined into groups (connected components), so a chain of small
differences ends up in one group.

Hashes are cached by file contents (in memory and in ``$MEDCLS_CACHE_DIR``),
so a dataset is hashed once; renaming or copying a file costs nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import imagehash
import numpy as np
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from ..atomic import atomic_write_json, read_json
from ..settings import cache_dir
from .imageio import NPZ_MARK, ImageReadError, read_image
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
    "group_ids",
    "duplicate_group_ids",
    "split_leak",
    "random_split_leak",
    "check_duplicates",
    "made_own_split",
    "clear_hash_memory",
]

log = logging.getLogger(__name__)

HASH_FORMAT = 1            # bump when the hash or its input changes
DEFAULT_MAX_DISTANCE = 10  # bits of 64
MAX_ALL_PAIRS = 30_000     # above this many images only identical hashes are compared (all pairs get slow)
_BLOCK = 1024              # rows per block when comparing all pairs

Progress = Callable[[int, int], None]

_LOCK = threading.Lock()
_STAT_MEMO: dict[str, tuple[tuple[int, int], str]] = {}   # file -> ((size, mtime_ns), content digest)
_HASHES: dict[str, tuple[int, str]] = {}                   # content key -> (phash, pixel digest)
_DISK_SEEN: dict[str, int] = {}                            # hash file -> mtime_ns merged into _HASHES
_PAIRS: "OrderedDict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]" = OrderedDict()  # recent pair searches


def clear_hash_memory() -> None:
    """Forget hashes kept in memory (the disk cache stays)."""
    with _LOCK:
        _STAT_MEMO.clear()
        _HASHES.clear()
        _DISK_SEEN.clear()
        _PAIRS.clear()


# --- hashing ----------------------------------------------------------------------------

@dataclass
class HashTable:
    """Per item: the perceptual hash, the digest of its pixels, and whether it could be read."""

    phash: np.ndarray            # uint64 (N,)
    pixels: list[str]            # digest of the decoded grayscale pixels ('' when unreadable)
    ok: np.ndarray               # bool (N,)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


def _hash_file() -> Path:
    return cache_dir() / "image-hashes" / f"v{HASH_FORMAT}.json"


def _file_digest(path: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _content_key(path: str) -> str:
    """A key that changes exactly when the file's contents change (stat-memoised within a process)."""
    file, _, member = path.partition(NPZ_MARK)
    info = os.stat(file)
    signature = (info.st_size, info.st_mtime_ns)
    with _LOCK:
        memo = _STAT_MEMO.get(file)
    if memo is None or memo[0] != signature:
        memo = (signature, _file_digest(file))
        with _LOCK:
            _STAT_MEMO[file] = memo
    return memo[1] + (f"{NPZ_MARK}{member}" if member else "")


def _hash_pixels(path: str) -> tuple[int, str]:
    gray = read_image(path, "gray")
    pixel_digest = hashlib.blake2b(gray.tobytes() + str(gray.shape).encode(), digest_size=12).hexdigest()
    return int(str(imagehash.phash(Image.fromarray(gray))), 16), pixel_digest


def _load_disk() -> None:
    path = _hash_file()
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return
    if _DISK_SEEN.get(str(path)) == mtime:
        return
    stored = read_json(path, {}) or {}
    with _LOCK:
        for key, value in stored.items():
            if isinstance(value, list) and len(value) == 2:
                _HASHES.setdefault(key, (int(value[0], 16), str(value[1])))
        _DISK_SEEN[str(path)] = mtime


def _save_disk(new: dict[str, tuple[int, str]]) -> None:
    path = _hash_file()
    stored = read_json(path, {}) or {}
    stored.update({key: [f"{ph:016x}", digest] for key, (ph, digest) in new.items()})
    try:
        atomic_write_json(path, stored)
        _DISK_SEEN[str(path)] = path.stat().st_mtime_ns
    except OSError as exc:  # a full or read-only disk only costs speed
        log.warning("Could not write the image-hash cache (%s); continuing without it", exc)


def image_hashes(paths: Sequence[str], *, progress: Progress | None = None, disk_cache: bool = True,
                 workers: int | None = None) -> HashTable:
    """Perceptual hash and pixel digest of every image; unreadable files are listed, not raised."""
    n = len(paths)
    keys: list[str | None] = [None] * n
    failures: dict[int, str] = {}
    for i, path in enumerate(paths):
        try:
            keys[i] = _content_key(path)
        except OSError as exc:
            failures[i] = f"the file cannot be read ({exc.strerror or exc})"
    if disk_cache and any(k is not None and k not in _HASHES for k in keys):
        _load_disk()
    todo: dict[str, str] = {}  # content key -> one path with that content
    for i, key in enumerate(keys):
        if key is not None and key not in _HASHES:
            todo.setdefault(key, paths[i])
    done = n - len(todo)
    if progress:
        progress(done, n)

    def one(path: str) -> tuple[int, str] | str:
        try:
            return _hash_pixels(path)
        except ImageReadError as exc:
            return exc.reason
        except Exception as exc:  # one odd file must not stop the check
            return f"could not be decoded ({type(exc).__name__}: {exc})"

    new: dict[str, tuple[int, str]] = {}
    bad: dict[str, str] = {}
    if todo:
        n_workers = workers or min(4, os.cpu_count() or 1)
        # Pillow releases the GIL while decoding. Progress is reported from this (the caller's) thread,
        # so a Streamlit page may draw it.
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            futures = {pool.submit(one, path): key for key, path in todo.items()}
            for future in as_completed(futures):
                result = future.result()
                if isinstance(result, str):
                    bad[futures[future]] = result
                else:
                    new[futures[future]] = result
                done += 1
                if progress and done % 16 == 0 and done < n:
                    progress(done, n)
        if progress:
            progress(n, n)  # files with the same contents were hashed once
        with _LOCK:
            _HASHES.update(new)
        if disk_cache and new:
            _save_disk(new)
        log.info("Hashed %d image(s), %d from the cache", len(todo), n - len(todo))
    phash = np.zeros(n, dtype=np.uint64)
    pixel_digests = [""] * n
    ok = np.zeros(n, dtype=bool)
    for i, key in enumerate(keys):
        if key is None:
            continue
        if key in bad:
            failures[i] = bad[key]
            continue
        phash[i], pixel_digests[i] = _HASHES[key]
        ok[i] = True
    return HashTable(phash, pixel_digests, ok, [(paths[i], failures[i]) for i in sorted(failures)])


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
    first, second, _ = near_duplicate_pairs(table.phash, max_distance, table.ok)
    return [int(g) for g in group_ids(len(paths), first, second)]


# --- leaks ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Leak:
    """How many held-out images have a near-duplicate in an earlier split."""

    test_in_train: float   # test images with a near-duplicate in train
    val_in_train: float    # validation images with a near-duplicate in train
    test_in_val: float     # test images with a near-duplicate in validation
    test_images: float
    val_images: float

    @property
    def test_share(self) -> float:
        return self.test_in_train / self.test_images if self.test_images else 0.0


def split_leak(groups: Sequence[int], splits: Sequence[str]) -> Leak:
    """Leak counts of one assignment of items to splits."""
    by_group: dict[int, set[str]] = {}
    for group, split in zip(groups, splits):
        by_group.setdefault(int(group), set()).add(split)

    def count(held_out: str, seen: str) -> int:
        return sum(1 for g, s in zip(groups, splits) if s == held_out and seen in by_group[int(g)])

    return Leak(test_in_train=count("test", "train"), val_in_train=count("val", "train"),
                test_in_val=count("test", "val"), test_images=sum(s == "test" for s in splits),
                val_images=sum(s == "val" for s in splits))


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


@dataclass
class HealthReport:
    groups: list[DuplicateGroup]   # conflicts first, then leaks, then larger groups
    group_of: np.ndarray           # a group number per spec item (singletons have their own)
    failures: list[tuple[str, str]]
    max_distance: int
    checked: int                   # images hashed successfully

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
    first, second, dist = near_duplicate_pairs(table.phash, max_distance, table.ok)
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
    return HealthReport(found, groups, table.failures, max_distance, int(table.ok.sum()))


def made_own_split(spec: DatasetSpec) -> bool:
    """True when medcls made the train/val/test split itself (the data had none of its own)."""
    return any(note.startswith("No split given") for note in spec.report.notes)
