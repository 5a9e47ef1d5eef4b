"""Crash-safe file writes.

Everything the library writes for later reading (run status, configs, metrics,
checkpoints, caches) goes through here: the data is written to a temporary file
in the same folder, flushed to disk, then moved over the target with
``os.replace``, which is atomic on POSIX and Windows. A crash mid-write leaves
the previous good file, never a truncated one. A full disk raises
:class:`DiskFullError`, whose message says how much room is left where.
:func:`exclusive_lock` serialises read-then-write steps across processes.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = [
    "DiskFullError",
    "disk_full_message",
    "is_disk_full",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_with",
    "append_jsonl",
    "exclusive_lock",
    "read_json",
    "read_jsonl",
]


_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No room left to write (the disk or the user's quota is full)."""

    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        super().__init__(errno.ENOSPC, disk_full_message(self.folder))

    def __str__(self) -> str:
        return self.strerror


def disk_full_message(folder: Path | str) -> str:
    """'disk full: 3 MB free in RUNS_DIR (/srv/runs)', naming the setting the folder belongs to."""
    from .settings import describe_folder

    folder = Path(folder)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = f"{shutil.disk_usage(probe).free / 1e6:,.0f} MB"
    except OSError:
        free = "no space"
    return (f"disk full: {free} free in {describe_folder(folder)}. Free some space (delete old runs or "
            "uploads) and try again.")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _FULL


@contextmanager
def exclusive_lock(path: Path | str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the block: across processes, only one
    at a time runs a block under the same lock file, so that what one reads and then writes is not raced."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def atomic_write_with(path: Path | str, write: Callable[[io.BufferedWriter], None]) -> Path:
    """Call ``write(fileobj)`` on a temporary file, then move it over ``path``."""
    path = Path(path)
    try:
        return _atomic_write_with(path, write)
    except DiskFullError:
        raise
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path.parent) from None
        raise


def _atomic_write_with(path: Path, write: Callable[[io.BufferedWriter], None]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644 & ~_UMASK)  # mkstemp creates 0600; results should be readable like any file
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        # Leave the previous file untouched and do not litter the folder.
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    return atomic_write_with(path, lambda handle: handle.write(data))


def atomic_write_text(path: Path | str, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def append_jsonl(path: Path | str, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it.

    A single ``write`` of one short line is all-or-nothing in practice; readers
    also ignore a torn last line (see :func:`read_jsonl`), so history written up
    to the previous line survives a kill.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=_json_default) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        if is_disk_full(exc):
            raise DiskFullError(path.parent) from None
        raise


def read_json(path: Path | str, default: Any = None) -> Any:
    """Read a JSON file; ``default`` when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return default


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    """All complete JSON lines of a file; a torn or corrupt line is skipped."""
    return list(_iter_jsonl(Path(path)))


def _iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, NotADirectoryError):
        return
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            yield value


def _json_default(value: Any) -> Any:
    # numpy scalars and arrays, Paths and tuples-as-lists are the usual suspects.
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serialisable")
