"""Fingerprints of images for the duplicate check: a perceptual hash, a pixel digest and a thumbnail.

Each image gets a 64-bit perceptual hash (``imagehash.phash``, a DCT of the 32x32 grayscale image), a
digest of its decoded gray pixels (equal digests: identical pictures) and a 16x16 thumbnail (the pixel
check of :mod:`medcls.data.similarity`). Fingerprints are cached by file contents (in memory and in
``$MEDCLS_CACHE_DIR``), so a dataset is fingerprinted once; renaming or copying a file costs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import imagehash
import numpy as np
from PIL import Image

from ..atomic import atomic_write_json, read_json
from ..settings import cache_dir
from .digests import clear_digest_memory, content_digest
from .imageio import ImageReadError, read_image
from .similarity import THUMB_SIDE, thumbnail_pixels

__all__ = ["HashTable", "image_hashes", "fingerprint_pixels", "clear_fingerprint_memory", "HASH_FORMAT"]

log = logging.getLogger(__name__)

HASH_FORMAT = 2            # bump when the hash or its input changes (2: with a 16x16 thumbnail)

Progress = Callable[[int, int], None]

_LOCK = threading.Lock()
_HASHES: dict[str, tuple[int, str, bytes]] = {}            # content key -> (phash, pixel digest, thumbnail)
_DISK_SEEN: dict[str, int] = {}                            # hash file -> mtime_ns merged into _HASHES


def clear_fingerprint_memory() -> None:
    """Forget fingerprints kept in memory, and the files' digests (the disk cache stays)."""
    clear_digest_memory()
    with _LOCK:
        _HASHES.clear()
        _DISK_SEEN.clear()


@dataclass
class HashTable:
    """Per item: the perceptual hash, the digest of its pixels, a thumbnail, and whether it could be read."""

    phash: np.ndarray            # uint64 (N,)
    pixels: list[str]            # digest of the decoded grayscale pixels ('' when unreadable)
    ok: np.ndarray               # bool (N,)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    thumbs: np.ndarray | None = None  # uint8 (N, 256): 16x16 gray thumbnails (zeros when unreadable)


def _hash_file() -> Path:
    return cache_dir() / "image-hashes" / f"v{HASH_FORMAT}.json"


def _hash_pixels(path: str) -> tuple[int, str, bytes]:
    return fingerprint_pixels(read_image(path, "gray"))


def fingerprint_pixels(gray: np.ndarray) -> tuple[int, str, bytes]:
    """(perceptual hash, pixel digest, thumbnail) of decoded uint8 gray pixels: what the table keeps per image."""
    pixel_digest = hashlib.blake2b(gray.tobytes() + str(gray.shape).encode(), digest_size=12).hexdigest()
    return int(str(imagehash.phash(Image.fromarray(gray))), 16), pixel_digest, thumbnail_pixels(gray)


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
            if isinstance(value, list) and len(value) == 3:
                try:
                    thumb = base64.b64decode(value[2])
                    if len(thumb) == THUMB_SIDE * THUMB_SIDE:
                        _HASHES.setdefault(key, (int(value[0], 16), str(value[1]), thumb))
                except (ValueError, TypeError):
                    continue  # a damaged entry is hashed again
        _DISK_SEEN[str(path)] = mtime


def _save_disk(new: dict[str, tuple[int, str, bytes]]) -> None:
    path = _hash_file()
    stored = read_json(path, {}) or {}
    stored.update({key: [f"{ph:016x}", digest, base64.b64encode(thumb).decode()]
                   for key, (ph, digest, thumb) in new.items()})
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
            keys[i] = content_digest(path)
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

    def one(path: str) -> tuple[int, str, bytes] | str:
        try:
            return _hash_pixels(path)
        except ImageReadError as exc:
            return exc.reason
        except Exception as exc:  # one odd file must not stop the check
            return f"could not be decoded ({type(exc).__name__}: {exc})"

    new: dict[str, tuple[int, str, bytes]] = {}
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
    thumbs = np.zeros((n, THUMB_SIDE * THUMB_SIDE), dtype=np.uint8)
    for i, key in enumerate(keys):
        if key is None:
            continue
        if key in bad:
            failures[i] = bad[key]
            continue
        phash[i], pixel_digests[i], thumb = _HASHES[key]
        thumbs[i] = np.frombuffer(thumb, dtype=np.uint8)
        ok[i] = True
    return HashTable(phash, pixel_digests, ok, [(paths[i], failures[i]) for i in sorted(failures)], thumbs)
