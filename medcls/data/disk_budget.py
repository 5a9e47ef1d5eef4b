"""Caches that keep to a size: the least recently used entries go first.

The decoded-image cache (:mod:`medcls.data.cache`) and the unpacked ``.npz`` arrays (:mod:`medcls.data.npz`)
both grow with every new dataset or image size; on a shared classroom server that would fill the disk. Each
entry is a file or a folder whose modification time says when it was last used (readers touch it).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Iterable

__all__ = ["entry_size", "trim_oldest"]

log = logging.getLogger(__name__)


def entry_size(path: Path) -> int:
    """Bytes of a file, or of the files directly in a folder."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return path.stat().st_size


def trim_oldest(entries: Iterable[Path], limit_bytes: int, keep: Path | None = None) -> list[Path]:
    """Remove the least recently used entries until the rest fit in ``limit_bytes``; ``keep`` (the entry just
    written, about to be read) stays even when it alone is over the limit. Returns what was removed."""
    sized = []
    for path in entries:
        try:
            sized.append((path.stat().st_mtime, entry_size(path), path))
        except OSError:  # removed meanwhile by another process
            continue
    total = sum(size for _, size, _ in sized)
    removed = []
    for _, size, path in sorted(sized):
        if total <= limit_bytes:
            break
        if keep is not None and path == keep:
            continue
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        except OSError:
            continue
        total -= size
        removed.append(path)
    if removed:
        log.info("Cache over %.0f MB: removed %d least recently used entries", limit_bytes / 2**20, len(removed))
    return removed
