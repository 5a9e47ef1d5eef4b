"""Decode and resize each image once, keep it as uint8.

The seed decoded every PNG again in every epoch. Here a dataset is decoded
once per (file contents, image size, colour) into one ``uint8`` array of shape
``(N, C, S, S)``, kept in memory and, optionally, on disk keyed by the files'
contents, so the next run (or the training worker process) starts instantly.
Files that fail to decode are dropped and added to the data report. The disk cache keeps to
``MEDCLS_IMAGE_CACHE_MB``: when a new entry would pass it, the least recently used entries go first
(a shared classroom server decodes many uploads and sizes, and must not fill its disk with them).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..atomic import atomic_write_with
from ..settings import cache_dir, image_cache_mb
from .digests import readable_digest
from .disk_budget import trim_oldest
from .imageio import ImageReadError, decode_resized, is_grayscale
from .spec import DataError, DataReport, DatasetSpec

__all__ = ["DecodedDataset", "DecodedSplit", "decode_dataset", "clear_memory_cache", "cached_channels",
           "prune_disk_cache"]

log = logging.getLogger(__name__)

CACHE_FORMAT = 2           # bump when the stored layout or decoding changes (2: JPEGs decoded reduced)
MAX_DECODED_BYTES = 8 << 30  # the decoded images of one dataset (as RGB while decoding) must fit in this
GRAY_SHARE_FOR_AUTO = 0.95  # 'auto' colour: gray when at least this share of images is gray
_MEMORY: "OrderedDict[str, tuple[np.ndarray, list[str], list[tuple[str, str]], str]]" = OrderedDict()
_MEMORY_LOCK = threading.Lock()
_MEMORY_ENTRIES = 4

Progress = Callable[[int, int], None]


@dataclass
class DecodedSplit:
    images: torch.Tensor  # uint8 (N, C, S, S)
    labels: torch.Tensor  # int64 (N,)
    paths: list[str]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class DecodedDataset:
    spec: DatasetSpec     # without the items that failed to decode
    images: np.ndarray    # uint8 (N, C, S, S), aligned with spec.items
    image_size: int
    color: str            # 'gray' or 'rgb' (resolved from 'auto')

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    def split(self, name: str) -> DecodedSplit:
        idx = [i for i, it in enumerate(self.spec.items) if it.split == name]
        return DecodedSplit(
            images=torch.from_numpy(self.images[idx]),
            labels=torch.tensor([self.spec.items[i].label for i in idx], dtype=torch.long),
            paths=[self.spec.items[i].path for i in idx],
        )

    def nbytes(self) -> int:
        return int(self.images.nbytes)


def clear_memory_cache() -> None:
    with _MEMORY_LOCK:
        _MEMORY.clear()


def decode_dataset(spec: DatasetSpec, image_size: int, color: str = "auto", *, disk_cache: bool = True,
                   progress: Progress | None = None, workers: int | None = None) -> DecodedDataset:
    """Decode every item of ``spec`` at ``image_size``; failures go to the report."""
    need = len(spec.items) * 3 * image_size * image_size
    if need > MAX_DECODED_BYTES:
        raise DataError(f"Decoding {len(spec.items):,} images at {image_size} px needs about {need / 1e9:,.1f} GB of "
                        f"memory; the limit is {MAX_DECODED_BYTES / 1e9:,.1f} GB. Use a smaller image size or fewer "
                        "images.")
    key = _cache_key(spec, image_size, color)
    cached = _lookup(key, disk_cache)
    if cached is None:
        cached = _decode_all(spec, image_size, color, progress, workers)
        _store(key, cached, disk_cache)
    elif progress:
        progress(len(spec.items), len(spec.items))
    images, kept_paths, failures, resolved = cached
    report = DataReport()
    for path, reason in failures:
        report.skip(path, reason)
    spec.report.merge(report)
    kept = set(kept_paths)
    usable = DatasetSpec(spec.root, spec.layout, list(spec.classes), [it for it in spec.items if it.path in kept],
                         spec.report, spec.synthetic,
                         spec.undecodable + [it for it in spec.items if it.path not in kept], spec.group_of,
                         spec.group_column)
    return DecodedDataset(usable, images, image_size, resolved)


def cached_channels(spec: DatasetSpec, image_size: int, color: str = "auto") -> int | None:
    """1 or 3 when this dataset is already decoded at this size (in memory or on disk), else None.

    Reads only the cache's description, never its pixels (what a run's start-up time depends on).
    """
    key = _cache_key(spec, image_size, color)
    with _MEMORY_LOCK:
        if key in _MEMORY:
            return int(_MEMORY[key][0].shape[1])
    try:
        with np.load(_disk_path(key), allow_pickle=False) as data:
            return 1 if json.loads(str(data["meta"]))["color"] == "gray" else 3
    except (OSError, KeyError, ValueError):
        return None


def _decode_all(spec: DatasetSpec, size: int, color: str, progress: Progress | None,
                workers: int | None) -> tuple[np.ndarray, list[str], list[tuple[str, str]], str]:
    paths = [it.path for it in spec.items]
    decode_as = "rgb" if color in ("auto", "rgb") else "gray"
    done = 0
    lock = threading.Lock()

    def one(path: str) -> np.ndarray | str:
        nonlocal done
        try:
            result: np.ndarray | str = decode_resized(path, size, decode_as)
        except ImageReadError as exc:
            result = exc.reason
        except Exception as exc:  # never let one odd file stop a dataset from loading
            result = f"could not be decoded ({type(exc).__name__}: {exc})"
        if progress:
            with lock:
                done += 1
                if done % 16 == 0 or done == len(paths):
                    progress(done, len(paths))
        return result

    n_workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:  # Pillow releases the GIL while decoding
        results = list(pool.map(one, paths))
    arrays = [r for r in results if isinstance(r, np.ndarray)]
    kept = [p for p, r in zip(paths, results) if isinstance(r, np.ndarray)]
    failures = [(p, r) for p, r in zip(paths, results) if isinstance(r, str)]
    del results  # `arrays` now holds the only references, released one by one below
    channels = 3 if decode_as == "rgb" else 1
    resolved = decode_as
    if color == "auto":
        gray = [is_grayscale(a.transpose(1, 2, 0)) for a in arrays]
        if not arrays or sum(gray) >= GRAY_SHARE_FOR_AUTO * len(arrays):
            resolved, channels = "gray", 1
            if len(gray) - sum(gray):
                log.info("%d colour image(s) converted to grayscale", len(gray) - sum(gray))
    # Filled one image at a time: converting the whole RGB stack at once needs several float copies of it
    # (about 1 GB for BUSI at 256 px); this way the peak is the decoded images plus the result.
    stack = np.empty((len(arrays), channels, size, size), np.uint8)
    for i in range(len(arrays)):
        stack[i] = _luma(arrays[i]) if channels < arrays[i].shape[0] else arrays[i]
        arrays[i] = None  # type: ignore[call-overload]  # free as we go
    return stack, kept, failures, resolved


def _luma(rgb: np.ndarray) -> np.ndarray:
    """(3, H, W) uint8 -> (1, H, W) uint8: ITU-R 601 luma, as Pillow's convert('L') computes it."""
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    return np.round(np.tensordot(weights, rgb.astype(np.float32), axes=1))[None].astype(np.uint8)


# --- cache keys and storage ------------------------------------------------

def _cache_key(spec: DatasetSpec, size: int, color: str) -> str:
    """Changes with any file's contents; keeps the paths too, since an entry lists the paths it kept."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(f"v{CACHE_FORMAT}|{size}|{color}".encode())
    for it in spec.items:
        # An unreadable file counts as such (decoding then reports it), until it can be read.
        digest.update(f"|{it.path}={readable_digest(it.path) or 'unreadable'}".encode())
    return digest.hexdigest()


def _disk_path(key: str) -> Path:
    return cache_dir() / "decoded" / f"{key}.npz"


def _lookup(key: str, disk: bool):
    with _MEMORY_LOCK:
        if key in _MEMORY:
            _MEMORY.move_to_end(key)
            return _MEMORY[key]
    if not disk:
        return None
    path = _disk_path(key)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            entry = (data["images"], meta["kept"], [tuple(f) for f in meta["failures"]], meta["color"])
    except (OSError, KeyError, ValueError) as exc:
        if path.exists():
            log.warning("Ignoring unreadable image cache %s (%s)", path, exc)
        return None
    try:
        os.utime(path)  # used now: the last to be removed when the cache is full
    except OSError:
        pass
    _remember(key, entry)
    return entry


def prune_disk_cache(limit_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used decoded datasets until the rest fit in ``limit_bytes`` (``keep`` stays,
    even alone over the limit); returns the removed files."""
    return trim_oldest((cache_dir() / "decoded").glob("*.npz"), limit_bytes, keep)


def _store(key: str, entry, disk: bool) -> None:
    _remember(key, entry)
    if not disk:
        return
    images, kept, failures, color = entry
    meta = json.dumps({"kept": kept, "failures": failures, "color": color})
    try:
        def write(handle: io.BufferedWriter) -> None:
            np.savez(handle, images=images, meta=np.array(meta))
        atomic_write_with(_disk_path(key), write)
    except OSError as exc:  # a full or read-only disk only costs speed
        log.warning("Could not write the image cache (%s); continuing without it", exc)
        return
    prune_disk_cache(int(image_cache_mb() * 2**20), keep=_disk_path(key))


def _remember(key: str, entry) -> None:
    with _MEMORY_LOCK:
        _MEMORY[key] = entry
        _MEMORY.move_to_end(key)
        while len(_MEMORY) > _MEMORY_ENTRIES:
            _MEMORY.popitem(last=False)
