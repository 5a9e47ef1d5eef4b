"""Uploaded datasets: where they live, how much disk they may use, and how they go away.

Every upload lives in ``DATA_DIR/uploads`` under a name made of the upload's own name and a hash of its
content: a ``.zip`` unpacked into a folder (see :mod:`.archive`), or an ``.npz`` kept as a file. The same
upload twice is the same entry. Together they may use ``MEDCLS_UPLOAD_QUOTA_MB``; a new upload makes room by
removing the oldest unused uploads first. An upload is in use while a run still needs it (queued, running,
or interrupted and resumable) or when the app used it in the last :data:`RECENT_S` seconds; uploads in use
are never removed, and one can be deleted on request unless a run needs it, by a person who uploaded it or an
instructor (the uploaders' keys are kept beside the uploads folder, in ``.uploads-owners/<entry>.json``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from ..atomic import atomic_write_bytes, atomic_write_text, disk_full_message, is_disk_full
from ..runs.naming import uploaded_as
from ..runs.permissions import OPERATOR, Identity, can_manage
from ..settings import upload_quota_mb, uploads_dir
from .archive import check_zip, extract_zip, target_name

__all__ = ["Upload", "UploadError", "Uploads", "RECENT_S"]

RECENT_S = 15 * 60       # an upload used this recently (a page showed it) is not removed to make room
_SIZE_FILE = ".medcls-size"


class UploadError(ValueError):
    """An upload cannot be stored or removed; the message says why and what to do."""


@dataclass(frozen=True)
class Upload:
    name: str           # the entry in the uploads folder
    path: Path
    size: int           # bytes on disk
    last_used: float    # Unix time the app last used it (or it was uploaded)
    in_use: bool        # a run still needs it
    owners: tuple[str, ...] = ()  # identity keys of the people who uploaded it (the same file twice: both)

    def may_delete(self, by: Identity) -> bool:
        return _may_delete(by, self.owners)

    @property
    def kind(self) -> str:
        return "npz" if self.path.suffix == ".npz" else "zip"


class Uploads:
    """The uploads folder with its quota. ``runs_need()`` gives the data sources runs still need."""

    def __init__(self, root: Path | None = None, quota_mb: float | None = None,
                 runs_need: Callable[[], Iterable[str]] = tuple, recent_s: float = RECENT_S):
        self.root = Path(root) if root is not None else uploads_dir()
        self.quota = int((quota_mb if quota_mb is not None else upload_quota_mb()) * 1e6)
        self.runs_need = runs_need
        self.recent_s = recent_s

    # --- adding -----------------------------------------------------------------------------------------
    def add_zip(self, data: bytes, name: str, by: Identity = OPERATOR) -> Path:
        """Unpack a .zip upload (safely, see extract_zip) and return its dataset folder."""
        target = self.root / target_name(data, name)
        with self._locked():
            if not target.exists():
                self._make_room(check_zip(data, name), name)
            folder = extract_zip(data, self.root, name=name)
            if not (target / _SIZE_FILE).exists():
                atomic_write_text(target / _SIZE_FILE, str(_disk_size(target)))
            self._add_owner(target, by)
        self.touch(target)
        return folder

    def add_npz(self, data: bytes, name: str, by: Identity = OPERATOR) -> Path:
        """Keep an .npz upload (checked later, when it is read as a dataset) and return its path."""
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).name)[-80:] or "upload.npz"
        target = self.root / f"{target_name(data, name).rsplit('-', 1)[1]}-{safe}"
        with self._locked():
            if not target.exists():
                self._make_room(len(data), name)
                try:
                    atomic_write_bytes(target, data)
                except OSError as exc:
                    raise UploadError(f"{name} cannot be stored: {_reason(exc, self.root)}") from None
            self._add_owner(target, by)
        self.touch(target)
        return target

    # --- using and removing ---------------------------------------------------------------------------------
    def upload_of(self, path: Path | str) -> Path | None:
        """The upload entry a dataset path lies in (None when it is not an upload)."""
        try:
            rel = Path(path).resolve().relative_to(self.root.resolve())
        except (ValueError, OSError, RuntimeError):
            return None
        return self.root / rel.parts[0] if rel.parts and not rel.parts[0].startswith(".") else None

    def file_name_of(self, path: Path | str) -> str | None:
        """The name of the file that was uploaded for the upload a dataset path lies in ('skin.zip'; the entry
        adds a content hash, see :func:`target_name` and :meth:`add_npz`); None when it is not an upload."""
        entry = self.upload_of(path)
        if entry is None:
            return None
        return uploaded_as(entry.name) if entry.suffix == ".npz" else f"{uploaded_as(entry.name)}.zip"

    def touch(self, path: Path | str) -> None:
        """Mark the upload holding ``path`` as used now (it is then not removed to make room for a while)."""
        entry = self.upload_of(path)
        if entry is not None:
            try:
                os.utime(entry)
            except OSError:
                pass  # deleted meanwhile

    def list(self) -> list[Upload]:
        """Every upload, the most recently used first."""
        needed = self._needed()
        out = []
        for entry in self._entries():
            try:
                out.append(Upload(entry.name, entry, _size(entry), entry.stat().st_mtime, entry in needed,
                                  self._owners(entry)))
            except FileNotFoundError:
                continue  # removed meanwhile
        return sorted(out, key=lambda u: u.last_used, reverse=True)

    def used_bytes(self) -> int:
        return sum(u.size for u in self.list())

    def delete(self, name: str, by: Identity = OPERATOR) -> None:
        """Remove one upload; refused while a run needs it, and to anyone but its uploaders and instructors."""
        entry = self.root / name
        if "/" in name or name.startswith(".") or not entry.exists():
            raise UploadError(f"There is no upload named {name!r}.")
        with self._locked():
            if not _may_delete(by, self._owners(entry)):
                raise PermissionError(f"You cannot delete {name}: someone else uploaded it. Only the people who "
                                      "uploaded it, or an instructor, can delete it.")
            if entry in self._needed():
                raise UploadError(f"{name} is used by a run that is queued, training or can be resumed; delete "
                                  "or finish that run first.")
            self._remove(entry)

    # --- who uploaded what ------------------------------------------------------------------------------------
    def _owners_file(self, entry: Path) -> Path:
        return self.root.parent / f".{self.root.name}-owners" / f"{entry.name}.json"  # beside it, as the lock

    def _owners(self, entry: Path) -> tuple[str, ...]:
        try:
            keys = json.loads(self._owners_file(entry).read_text())
        except (OSError, ValueError):
            return ()  # uploaded before owners were kept (or by the local operator): instructors may delete it
        return tuple(k for k in keys if isinstance(k, str)) if isinstance(keys, list) else ()

    def _add_owner(self, entry: Path, by: Identity) -> None:
        owners = self._owners(entry)
        if by.key and by.key not in owners:
            target = self._owners_file(entry)
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(target, json.dumps([*owners, by.key]))

    def _remove(self, entry: Path) -> None:
        _remove(entry)
        self._owners_file(entry).unlink(missing_ok=True)

    # --- the quota ----------------------------------------------------------------------------------------------
    def _make_room(self, needed: int, name: str) -> None:
        if needed > self.quota:
            raise UploadError(f"{name} unpacks to {_mb(needed)}, more than the {_mb(self.quota)} all uploads may use "
                              "together (MEDCLS_UPLOAD_QUOTA_MB). Upload a smaller dataset.")
        uploads = self.list()
        used = sum(u.size for u in uploads)
        now = time.time()
        for upload in sorted(uploads, key=lambda u: u.last_used):  # the oldest use first
            if used + needed <= self.quota:
                break
            if upload.in_use or now - upload.last_used < self.recent_s:
                continue
            self._remove(upload.path)
            used -= upload.size
        if used + needed > self.quota:
            raise UploadError(f"{name} needs {_mb(needed)}, but uploads already use {_mb(used)} of {_mb(self.quota)} "
                              f"and all of them are in use (by runs, or shown in the last {self.recent_s / 60:.0f} "
                              "minutes). Delete an upload you no longer need, or ask the administrator to raise "
                              "MEDCLS_UPLOAD_QUOTA_MB.")

    def _needed(self) -> set[Path]:
        out = set()
        for source in self.runs_need():
            entry = self.upload_of(source) if source else None
            if entry is not None:
                out.add(entry)
        return out

    def _entries(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        return [p for p in self.root.iterdir() if not p.name.startswith(".") and not p.is_symlink()]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One upload at a time makes room and unpacks (two users at once never overshoot the quota)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root.parent / f".{self.root.name}.lock", "a+") as handle:  # beside it: not an upload
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def _may_delete(by: Identity, owners: tuple[str, ...]) -> bool:
    """Whether ``by`` may delete an upload of these uploaders: one of them, an instructor or the local operator
    (the rule for runs, :func:`~medcls.runs.permissions.can_manage`, with several owners)."""
    return by.manages_all or any(can_manage(by, owner) for owner in owners)


def _size(entry: Path) -> int:
    if entry.is_file():
        return entry.stat().st_size
    try:
        return int((entry / _SIZE_FILE).read_text())
    except (OSError, ValueError):
        return _disk_size(entry)


def _disk_size(folder: Path) -> int:
    total = 0
    for dirpath, _, filenames in os.walk(folder):
        for filename in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, filename)).st_size
            except OSError:
                continue
    return total


def _remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        # Renamed first so a half-removed upload is never mistaken for a dataset.
        doomed = entry.with_name(f".removing-{entry.name}")
        try:
            os.replace(entry, doomed)
        except OSError:
            doomed = entry
        shutil.rmtree(doomed, ignore_errors=True)
    else:
        entry.unlink(missing_ok=True)


def _mb(size: float) -> str:
    return f"{size / 1e6:,.1f} MB" if size < 10e6 else f"{size / 1e6:,.0f} MB"


def _reason(exc: OSError, root: Path) -> str:
    return disk_full_message(root) if is_disk_full(exc) else f"{exc.strerror or exc}"
