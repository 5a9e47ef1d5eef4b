"""Safe extraction of uploaded ``.zip`` datasets.

An uploaded archive is untrusted. Extraction here refuses absolute paths,
``..`` components and links (zip-slip), caps the number of files and the total
unpacked size (zip bombs; the real byte count is enforced while writing, since
headers can lie), and writes into a temporary folder that is renamed into place
only when everything succeeded. Everything lands under the given root.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

__all__ = ["ArchiveError", "extract_zip", "MAX_TOTAL_BYTES", "MAX_FILES", "MAX_RATIO"]

MAX_TOTAL_BYTES = 1 << 30   # 1 GiB unpacked
MAX_FILES = 50_000
MAX_RATIO = 200             # a file that unpacks to >200x its compressed size (and >1 MB) is a bomb
_CHUNK = 1 << 20


class ArchiveError(ValueError):
    """The archive is unsafe or unusable; the message says which entry and why."""


def _check_member(info: zipfile.ZipInfo) -> PurePosixPath | None:
    """The safe relative path of an entry, None for entries to skip; raises for unsafe ones."""
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ArchiveError(f"{info.filename}: the archive contains a symbolic link, which is not allowed.")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise ArchiveError(f"{info.filename}: absolute paths are not allowed in an upload.")
    path = PurePosixPath(name)
    if ".." in path.parts:
        raise ArchiveError(f"{info.filename}: '..' in a path could write outside the upload folder.")
    if info.is_dir() or not path.parts:
        return None
    if path.parts[0] == "__MACOSX" or any(part.startswith(".") for part in path.parts):
        return None  # macOS resource forks and hidden files
    return path


def extract_zip(source: bytes | Path | str, root: Path | str, *, name: str = "upload",
                max_total_bytes: int = MAX_TOTAL_BYTES, max_files: int = MAX_FILES,
                max_ratio: float = MAX_RATIO) -> Path:
    """Extract a zip under ``root`` and return the dataset folder inside it.

    The target folder is named after the upload and its content hash, so the same
    upload twice reuses one folder. When the archive holds one top-level folder,
    that folder is returned (the usual ``dataset/benign/...`` zip).
    """
    data = source if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:12]
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem)[:40] or "upload"
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{safe_name}-{digest}"
    if not target.exists():
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except (zipfile.BadZipFile, EOFError, OSError, ValueError):
            raise ArchiveError(f"{name}: not a valid .zip file.") from None
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
        try:
            with archive:
                _extract_members(archive, tmp, max_total_bytes, max_files, max_ratio)
            os.replace(tmp, target)  # all or nothing: a failed upload leaves no half-extracted folder
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _dataset_folder(target)


def _extract_members(archive: zipfile.ZipFile, dest: Path, max_total: int, max_files: int, max_ratio: float) -> None:
    members = [(info, _check_member(info)) for info in archive.infolist()]
    files = [(info, path) for info, path in members if path is not None]
    if not files:
        raise ArchiveError("The archive contains no files.")
    if len(files) > max_files:
        raise ArchiveError(f"The archive holds {len(files):,} files; the limit is {max_files:,}.")
    declared = sum(info.file_size for info, _ in files)
    if declared > max_total:
        raise ArchiveError(f"The archive unpacks to {declared / 1e6:,.0f} MB; the limit is {max_total / 1e6:,.0f} MB.")
    written_total = 0
    real_dest = dest.resolve()
    for info, rel in files:
        if info.compress_size and info.file_size > _CHUNK and info.file_size / info.compress_size > max_ratio:
            raise ArchiveError(f"{info.filename}: compressed {info.file_size / info.compress_size:,.0f}:1, "
                               "refused as a possible zip bomb.")
        out = dest.joinpath(*rel.parts)
        if not out.resolve().is_relative_to(real_dest):
            raise ArchiveError(f"{info.filename}: resolves outside the upload folder.")
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{info.filename}: the entry is encrypted (password-protected); upload a .zip "
                               "without a password.")
        out.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        try:
            with archive.open(info) as src, open(out, "wb") as dst:
                while chunk := src.read(_CHUNK):
                    written += len(chunk)
                    written_total += len(chunk)
                    if written > info.file_size or written_total > max_total:
                        raise ArchiveError(f"{info.filename}: unpacks to more than the archive declares; refused.")
                    dst.write(chunk)
        except NotImplementedError:
            raise ArchiveError(f"{info.filename}: packed with a compression method medcls cannot unpack; "
                               "make the .zip with standard (deflate) compression.") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, ValueError) as exc:
            # A damaged entry (bad CRC, sizes that do not match the data, a cut-off stream).
            raise ArchiveError(f"{info.filename}: the entry is damaged and cannot be unpacked ({exc}).") from None


def _dataset_folder(target: Path) -> Path:
    entries = [p for p in target.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return target
