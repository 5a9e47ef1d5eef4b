"""What a dataset's files hold, as short digests: the same bytes are the same image wherever they are kept.

Three things are keyed by files' contents rather than by where they lie: the decoded-image cache, the duplicate
check's fingerprints and a dataset's identity (:meth:`~medcls.data.spec.DatasetSpec.fingerprint`). So one ``.npz``
trained from its path on the command line and uploaded in the app is one dataset, and a folder copied elsewhere
keeps its runs. A file is read once per process: its digest is remembered with its size and modification time and
read again only when they change.
"""

from __future__ import annotations

import hashlib
import os
import threading

from .imageio import NPZ_MARK

__all__ = ["content_digest", "readable_digest", "clear_digest_memory"]

_LOCK = threading.Lock()
_MEMO: dict[str, tuple[tuple[int, int], str]] = {}   # file -> ((size, mtime_ns), digest of its bytes)


def content_digest(path: str) -> str:
    """A digest of the file's bytes (32 hex digits); for an ``.npz`` member (``file.npz::train/0``) the container's
    digest followed by ``::`` and the member. Raises OSError when the file cannot be read."""
    file, _, member = path.partition(NPZ_MARK)
    info = os.stat(file)
    signature = (info.st_size, info.st_mtime_ns)
    with _LOCK:
        memo = _MEMO.get(file)
    if memo is None or memo[0] != signature:
        memo = (signature, _read_digest(file))
        with _LOCK:
            _MEMO[file] = memo
    return memo[1] + (f"{NPZ_MARK}{member}" if member else "")


def readable_digest(path: str) -> str | None:
    """:func:`content_digest`, or None when the file cannot be read (moved, deleted or not permitted)."""
    try:
        return content_digest(path)
    except OSError:
        return None


def clear_digest_memory() -> None:
    """Forget the digests kept in memory (every file is read again)."""
    with _LOCK:
        _MEMO.clear()


def _read_digest(file: str) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(file, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
