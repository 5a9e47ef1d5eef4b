"""Safe extraction of uploaded ``.zip`` datasets.

An uploaded archive is untrusted. Extraction here refuses absolute paths,
``..`` components and links (zip-slip), names the filesystem cannot hold (a part
over 255 bytes, a file and a folder of the same name), caps the number of files
(counted from the archive's end record, before its directory is parsed), the total
unpacked size and the compression ratio of single entries and of the whole archive
(zip bombs, including many small ones; the real byte count is enforced while
writing, since headers can lie), and writes into a temporary folder that is renamed
into place only when everything succeeded. Two identical uploads unpacked at once
end in one folder. Everything lands under the given root.
"""

from __future__ import annotations

import errno
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

from ..atomic import disk_full_message, is_disk_full

__all__ = ["ArchiveError", "extract_zip", "check_zip", "open_checked", "extract_checked", "target_name", "MAX_TOTAL_BYTES", "MAX_FILES", "MAX_RATIO",
           "MAX_ARCHIVE_RATIO",
           "MAX_NAME_BYTES"]

MAX_TOTAL_BYTES = 1 << 30   # 1 GiB unpacked
MAX_FILES = 50_000
MAX_RATIO = 200             # a file that unpacks to >200x its compressed size (and >1 MB) is a bomb
MAX_ARCHIVE_RATIO = 20      # the whole archive: images barely compress, so >20x (over 64 MB) is a bomb
ARCHIVE_RATIO_FROM = 64 << 20
MAX_NAME_BYTES = 255        # one file or folder name, as Linux filesystems allow
MAX_PATH_BYTES = 1024       # a whole path inside the archive
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
    if "\0" in name:
        raise ArchiveError(f"{info.filename!r}: a NUL character in a name is not allowed.")
    long = next((part for part in path.parts if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES), None)
    if long is not None:
        raise ArchiveError(f"{_short(info.filename)}: the name {_short(long)} is "
                           f"{len(long.encode('utf-8', 'surrogateescape'))} bytes long; names can be at most "
                           f"{MAX_NAME_BYTES} bytes. Shorten it and make the .zip again.")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise ArchiveError(f"{_short(info.filename)}: the path is over {MAX_PATH_BYTES} bytes long; shorten the "
                           "folder and file names and make the .zip again.")
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
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ArchiveError(_os_reason(exc, root)) from None
    target = root / target_name(data, name)
    if target.exists():
        return _dataset_folder(target)
    archive, files = _open_checked(data, name, max_total_bytes, max_files)
    try:
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
    except OSError as exc:
        archive.close()
        raise ArchiveError(_os_reason(exc, root)) from None
    try:
        with archive:
            _extract_members(archive, files, tmp, max_total_bytes, max_ratio)
        try:
            os.replace(tmp, target)  # all or nothing: a failed upload leaves no half-extracted folder
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not target.is_dir():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # the same upload, unpacked at the same time, won the race
    except ArchiveError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    except OSError as exc:  # a full disk, a name the filesystem refuses, ...
        shutil.rmtree(tmp, ignore_errors=True)
        raise ArchiveError(_os_reason(exc, root)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return _dataset_folder(target)


def check_zip(data: bytes, name: str = "upload", *, max_total_bytes: int = MAX_TOTAL_BYTES,
              max_files: int = MAX_FILES) -> int:
    """Every check that needs only the archive's directory; returns the bytes it declares it unpacks to."""
    archive, files = _open_checked(data, name, max_total_bytes, max_files)
    with archive:
        return sum(info.file_size for info, _ in files)


def open_checked(data: bytes, name: str = "upload", *, max_total_bytes: int = MAX_TOTAL_BYTES,
                 max_files: int = MAX_FILES) -> tuple[zipfile.ZipFile, list[tuple[zipfile.ZipInfo, PurePosixPath]]]:
    """The open archive and its checked entries (safe relative paths; hidden files and __MACOSX left out), for
    callers that check more before unpacking (a run import). Close the archive when done."""
    return _open_checked(data, name, max_total_bytes, max_files)


def extract_checked(archive: zipfile.ZipFile, files: list[tuple[zipfile.ZipInfo, PurePosixPath]], dest: Path, *,
                    max_total_bytes: int = MAX_TOTAL_BYTES, max_ratio: float = MAX_RATIO) -> None:
    """Unpack entries from :func:`open_checked` into ``dest``, enforcing the real sizes and ratios while writing."""
    _extract_members(archive, files, dest, max_total_bytes, max_ratio)


def _open_checked(data: bytes, name: str, max_total: int,
                  max_files: int) -> tuple[zipfile.ZipFile, list[tuple[zipfile.ZipInfo, PurePosixPath]]]:
    from .npz import count_zip_entries

    entries = count_zip_entries(io.BytesIO(data))  # from the end record: before millions of entries are parsed
    if entries is not None and entries > max_files:
        raise ArchiveError(f"The archive holds {entries:,} files; the limit is {max_files:,}.")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, NotImplementedError):
        raise ArchiveError(f"{name}: not a valid .zip file.") from None
    try:
        files = _check_directory(archive, max_total, max_files)
    except BaseException:
        archive.close()
        raise
    return archive, files


def target_name(data: bytes, name: str) -> str:
    """The folder an upload unpacks into: its name and content hash (the same upload twice is one folder)."""
    digest = hashlib.sha256(data).hexdigest()[:12]
    safe_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(name).stem)[:40] or "upload"
    return f"{safe_name}-{digest}"


def _short(text: str, keep: int = 40) -> str:
    return text if len(text) <= keep else f"{text[:keep]}…"


def _os_reason(exc: OSError, root: Path) -> str:
    if is_disk_full(exc):
        return f"The upload cannot be unpacked: {disk_full_message(root)}"
    where = f" ({Path(exc.filename).name})" if exc.filename else ""
    return f"The upload cannot be unpacked: {exc.strerror or exc}{where}."


def _check_directory(archive: zipfile.ZipFile, max_total: int,
                     max_files: int) -> list[tuple[zipfile.ZipInfo, PurePosixPath]]:
    members = [(info, _check_member(info)) for info in archive.infolist()]
    files = [(info, path) for info, path in members if path is not None]
    if not files:
        raise ArchiveError("The archive contains no files.")
    if len(files) > max_files:
        raise ArchiveError(f"The archive holds {len(files):,} files; the limit is {max_files:,}.")
    declared = sum(info.file_size for info, _ in files)
    if declared > max_total:
        raise ArchiveError(f"The archive unpacks to {declared / 1e6:,.0f} MB; the limit is {max_total / 1e6:,.0f} MB.")
    packed = sum(info.compress_size for info, _ in files)
    if declared > ARCHIVE_RATIO_FROM and declared > MAX_ARCHIVE_RATIO * max(packed, 1):
        raise ArchiveError(f"The archive unpacks to {declared / 1e6:,.0f} MB from {packed / 1e6:,.1f} MB of data "
                           f"({declared / max(packed, 1):,.0f}:1): refused as a possible zip bomb (images barely "
                           "compress).")
    _check_names(files)
    return files


def _extract_members(archive: zipfile.ZipFile, files: list[tuple[zipfile.ZipInfo, PurePosixPath]], dest: Path,
                     max_total: int, max_ratio: float) -> None:
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


def _check_names(files: list[tuple[zipfile.ZipInfo, PurePosixPath]]) -> None:
    """A name used both for a file and for a folder (a/b and a/b/c.png) cannot be unpacked."""
    file_names = {path.as_posix(): info.filename for info, path in files}
    for info, path in files:
        for parent in path.parents:
            clash = file_names.get(parent.as_posix())
            if clash is not None:
                raise ArchiveError(f"{clash}: the archive holds a file and a folder with this name "
                                   f"(the folder holds {info.filename}); rename one and make the .zip again.")


def _dataset_folder(target: Path) -> Path:
    entries = [p for p in target.iterdir() if not p.name.startswith(".")]
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return target
