"""Listing the files of a dataset folder, so that one odd file never stops the dataset.

:func:`list_images` walks a folder without recursion (a folder nested thousands deep cannot exhaust the
stack) and without following links, at most :data:`MAX_DEPTH` deep; :func:`sniff` looks at one file without
decoding its pixels. Every file or folder that cannot be used goes to the data report with the reason:
a link that loops or leaves the dataset, a name that is not UTF-8, a named pipe or device, a folder that
cannot be read or is too deep, an unreadable or oversized image header.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Iterator

from PIL import Image, UnidentifiedImageError

from ..config import DataConfig
from .dicom import DicomError, is_dicom_file
from .imageio import MAX_IMAGE_PIXELS, header_size, is_image_name, is_mask_name, not_an_image_reason, too_large_reason
from .spec import DataReport

__all__ = ["MAX_DEPTH", "LOOP", "NOT_UTF8", "list_images", "walk_files", "sniff", "shown_path", "bad_name"]

MAX_DEPTH = 100  # folders nested deeper than this inside a class folder are not searched


def shown_path(path: str | Path) -> str:
    """A path as text that can always be written and shown: bytes that are not UTF-8 become \\xNN."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def bad_name(name: str) -> bool:
    try:
        name.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


NOT_UTF8 = "name is not valid UTF-8 text (written with another system's encoding); rename it"


def walk_files(folder: Path, report: DataReport) -> Iterator[tuple[Path, list[str]]]:
    """(folder, file names) below ``folder``, sorted, without following links, at most MAX_DEPTH deep.

    Iterative (a folder nested thousands deep cannot exhaust the stack); folders that cannot be read, linked
    folders, folders with names that are not UTF-8 and folders too deep are reported and skipped."""
    stack = [(folder, 0)]
    while stack:
        current, depth = stack.pop()
        try:
            with os.scandir(current) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            report.skip(shown_path(current), f"the folder cannot be read ({exc.strerror or exc})")
            continue
        files, folders = [], []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            try:
                linked, is_dir = entry.is_symlink(), entry.is_dir(follow_symlinks=False)
            except OSError:
                linked, is_dir = False, False
            if linked and os.path.isdir(entry.path):
                report.skip(shown_path(entry.path), "a linked folder; links are not followed")
            elif is_dir and bad_name(entry.name):
                report.skip(shown_path(entry.path), f"a folder whose {NOT_UTF8}; its images were not used")
            elif is_dir and depth >= MAX_DEPTH:
                report.skip(shown_path(entry.path), f"folders nested more than {MAX_DEPTH} deep are not searched")
            elif is_dir:
                folders.append(Path(entry.path))
            else:
                files.append(entry.name)
        yield current, files
        stack.extend((f, depth + 1) for f in reversed(folders))


def list_images(folder: Path, root: Path, cfg: DataConfig, report: DataReport) -> list[str]:
    """Image files below ``folder`` (recursively), sniffed cheaply; bad ones go to the report."""
    found: list[str] = []
    masks_skipped = 0
    real_root = root.resolve()
    for dirpath, filenames in walk_files(folder, report):
        for filename in filenames:
            path = dirpath / filename
            if not is_image_name(filename) and not (not path.suffix and is_dicom_file(path)):
                report.skip(shown_path(path), not_an_image_reason(shown_path(path.suffix)))
                continue
            if bad_name(filename):
                report.skip(shown_path(path), f"the file {NOT_UTF8}")
                continue
            if is_mask_name(filename) and not cfg.include_masks:
                masks_skipped += 1
                continue
            reason = sniff(path, real_root)
            if reason:
                report.skip(str(path), reason)
            else:
                found.append(str(path))
    if masks_skipped:
        files = "1 file" if masks_skipped == 1 else f"{masks_skipped} files"
        report.notes.append(f"{folder.name}: {files} named *_mask* skipped (segmentation masks; "
                            "set include_masks to use them).")
    return found


LOOP = "a link that leads back to itself (a loop of symbolic links)"


def sniff(path: Path, real_root: Path) -> str | None:
    """A reason to skip the file, found without decoding its pixels; None if it looks fine."""
    if path.is_symlink():
        try:
            target = path.resolve()
        except RuntimeError:  # Python 3.11 raises for a loop of links
            return LOOP
        if not target.is_relative_to(real_root):
            return "a link that points outside the dataset folder"
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            return "not a regular file (a folder, named pipe, device or socket)"
        if info.st_size == 0:
            return "the file is empty (0 bytes)"
        width, height, _ = header_size(path)  # header parsed; pixels are decoded later, once
    except DicomError as exc:  # not one image, or pydicom missing: the reason in its own words
        return str(exc)
    except FileNotFoundError:
        return "the file does not exist (or is a broken link)"
    except UnidentifiedImageError:
        return "not an image (the content is not a readable image format)"
    except Image.DecompressionBombError as exc:  # Pillow refuses huge declared sizes while opening
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        return too_large_reason(int(declared.group(1)), MAX_IMAGE_PIXELS, "refused as a possible decompression "
                                "bomb") if declared else f"too large: refused as a possible decompression bomb ({exc})"
    except OSError as exc:
        if exc.errno == 40:  # ELOOP
            return LOOP
        return f"the image header is unreadable ({exc})"
    except (SyntaxError, ValueError) as exc:
        return f"the image header is unreadable ({exc})"
    except Exception as exc:  # one odd file must never stop a dataset from loading
        return f"the file could not be read ({type(exc).__name__}: {exc})"
    if width * height > MAX_IMAGE_PIXELS:
        return too_large_reason(width * height, MAX_IMAGE_PIXELS,
                                f"its header declares {width}x{height} pixels (a possible decompression bomb)")
    return None
