"""Manifests: a ``.csv`` that names each image, its class and, optionally, its split.

medcls's own spelling is ``path,label,split``. Public datasets' tables are read as they come, so that a user
points medcls at the table the dataset ships with instead of rewriting it:

- other column names for the image and its class: HAM10000's metadata names an image ``image_id`` and its class
  ``dx``; ISIC 2020's table has ``image_name`` and ``benign_malignant`` (and ``target``, the same as 0 and 1);
  Kaggle's tables often ``id`` or ``id_code`` (APTOS) and ``label`` or ``diagnosis``;
- one column per class holding 1 for the image's class and 0 for the others (ISIC 2019's ground truth);
- an image named without its file extension (``ISIC_0024306``), found below the manifest's folder (HAM10000
  keeps its images in two folders, neither named in the table).

The note in the data report says which columns were read, so a table with several candidate columns (ISIC 2020's
``diagnosis`` beside ``benign_malignant``) is never read silently in a way the user did not expect.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Iterator, NamedTuple

from ..settings import check_allowed_path
from .imageio import is_image_name, not_an_image_reason
from .listing import LOOP, sniff, walk_files
from .spec import DataError, DataReport

__all__ = ["MANIFEST_NAMES", "MAX_MANIFEST_BYTES", "SPLIT_NAMES", "STEM_NOTE", "ManifestRows", "manifest_path",
           "rows_from_manifest", "read_columns", "other_manifests_note"]

MAX_MANIFEST_BYTES = 64 << 20       # a manifest of a million images is about 60 MB
MAX_MANIFEST_LINE = 128 * 1024      # longer lines (rows) are skipped: no path is that long
MANIFEST_NAMES = ("split.csv", "manifest.csv", "labels.csv")
# Folder or manifest spellings of each split.
SPLIT_NAMES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test",
}
# Column names, first match wins: medcls's own first, then those of public datasets' tables.
PATH_COLUMNS = ("path", "filename", "file", "image", "file_name", "filepath", "image_path", "image_name", "image_id",
                "isic_id", "id_code", "id")
LABEL_COLUMNS = ("label", "class", "benign_malignant", "target", "dx", "diagnosis", "category")
# A column naming whose images these are: a patient's images belong in one split (ISIC 2020 has patient_id and
# lesion_id; the patient is the wider group). Used by 'Keep subfolders in one split' like a patient's folder.
GROUP_COLUMNS = ("patient_id", "patient", "subject_id", "subject", "case_id", "study_id", "lesion_id")

# The data report's note on rows matched by name: their folders were found by medcls, not named by the table, so
# they say nothing of patients (:func:`medcls.data.subfolders.subfolder_splits`).
STEM_NOTE = "Images named without their file extension"

Row = tuple[str, str, "str | None"]


class Columns(NamedTuple):
    """Where a manifest keeps each image's path, its class and its split (column positions)."""
    path: int
    label: int | None            # None: one column per class (``one_hot``)
    split: int | None
    one_hot: tuple[int, ...]     # columns holding 1 for the image's class and 0 for the others
    group: int | None            # the patient (or lesion) each image is of
    names: tuple[str, ...]       # the header, as written

    def described(self) -> str:
        classes = (f"classes from {self.names[self.label]!r}" if self.label is not None else
                   f"classes from one column each ({', '.join(self.names[i] for i in self.one_hot)})")
        split = f", splits from {self.names[self.split]!r}" if self.split is not None else ""
        group = f", patients from {self.names[self.group]!r}" if self.group is not None else ""
        return f"paths from {self.names[self.path]!r}, {classes}{split}{group}"


def manifest_path(root: Path) -> Path:
    if root.is_file():
        return root
    for name in MANIFEST_NAMES:
        if (root / name).is_file():
            return root / name
    raise DataError(f"No manifest in {root}: expected one of {', '.join(MANIFEST_NAMES)}.")


def _manifest_lines(manifest: Path, report: DataReport) -> Iterator[str]:
    """The manifest's lines, without those too long to be a row (each reported); UTF-8 is checked per line."""
    try:
        size = manifest.stat().st_size
    except OSError as exc:
        raise DataError(f"Manifest {manifest} cannot be read ({exc.strerror or exc}).") from None
    if size > MAX_MANIFEST_BYTES:
        raise DataError(f"Manifest {manifest} is {size / 1e6:,.0f} MB; the limit is {MAX_MANIFEST_BYTES / 1e6:,.0f} MB "
                        "(about a million rows). Split the dataset into smaller manifests.")
    with open(manifest, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if len(raw) > MAX_MANIFEST_LINE:
                report.skip(f"{manifest.name} line {number}", f"the line is {len(raw) / 1024:,.0f} KiB long, over the "
                            f"{MAX_MANIFEST_LINE // 1024} KiB a row may have")
                yield "\n"  # keeps the line numbers of the rows after it
                continue
            try:
                yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError:
                raise DataError(f"Manifest {manifest} is not a UTF-8 text file (line {number}).") from None


def _is_flag(value: str) -> bool:
    try:
        return float(value) in (0.0, 1.0)
    except ValueError:
        return False


def read_columns(fieldnames: list[str], records: list[list[str]]) -> Columns | None:
    """The manifest's path, class and split columns, or None when it has no path column or no class column(s)."""
    header = {name.strip().lower(): i for i, name in reversed(list(enumerate(fieldnames)))}
    path_col = next((header[k] for k in PATH_COLUMNS if k in header), None)
    label_col = next((header[k] for k in LABEL_COLUMNS if k in header), None)
    split_col = header.get("split")
    group_col = next((header[k] for k in GROUP_COLUMNS if k in header), None)
    if path_col is None:
        return None
    one_hot: tuple[int, ...] = ()
    if label_col is None and records:  # ISIC 2019: one column per class, 1.0 in the image's class
        others = [i for i in range(len(fieldnames)) if i not in (path_col, split_col, group_col)]
        flags = tuple(i for i in others if all(i < len(r) and _is_flag(r[i]) for r in records))
        if len(flags) >= 2 and all(sum(float(r[i]) for i in flags) == 1 for r in records):
            one_hot = flags
        else:
            return None
    return Columns(path_col, label_col, split_col, one_hot, group_col, tuple(name.strip() for name in fieldnames))


class _ByStem:
    """Images below a folder by their name without extension, listed on first use (tables that name an image
    ``ISIC_0024306`` for ``HAM10000_images_part_1/ISIC_0024306.jpg``)."""

    def __init__(self, base: Path):
        self.base, self._stems = base, None
        self.found = 0

    def find(self, stem: str) -> tuple[Path | None, str | None]:
        """(the one image named ``stem``.*, None), or (None, why not)."""
        if self._stems is None:
            self._stems = defaultdict(list)
            for folder, names in walk_files(self.base, DataReport()):  # its own problems are not the manifest's
                for name in names:
                    if is_image_name(name):
                        self._stems[Path(name).stem].append(folder / name)
        matches = self._stems.get(Path(stem).name, []) if "/" not in stem else \
            [p for p in self._stems.get(Path(stem).name, []) if p.parent == (self.base / stem).parent]
        if len(matches) == 1:
            self.found += 1
            return matches[0], None
        if not matches:
            return None, f"no image named {Path(stem).name}.* below {self.base.name}/ (the row names no file extension)"
        listed = ", ".join(str(p.relative_to(self.base)) for p in matches[:3])
        return None, f"{len(matches)} images are named {Path(stem).name}.* ({listed}); name the row's file in full"


class ManifestRows(NamedTuple):
    rows: list[Row]                  # (path, class name, split or None) of each usable row
    group_of: dict[str, str]         # path -> the patient its row names (rows with an empty cell: none)
    group_column: str                # the column they come from ('' when the manifest has none)


def rows_from_manifest(manifest: Path, report: DataReport) -> ManifestRows:
    """Each usable row, and the patient each names when the manifest has such a column; every other row goes to the
    report with its reason."""
    base = manifest.parent
    reader = csv.reader(_manifest_lines(manifest, report))
    fieldnames = next(reader, None) or []
    raw: list[tuple[int, list[str]]] = []
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # one malformed row costs only itself
            report.skip(f"{manifest.name} line {reader.line_num}", f"the row cannot be read as CSV ({exc})")
            continue
        if record:
            raw.append((reader.line_num, record))
    columns = read_columns(fieldnames, [record for _, record in raw])
    if columns is None:
        raise DataError(f"Manifest {manifest} needs columns 'path' and 'label' (found: "
                        f"{', '.join(fieldnames) or 'none'}). Other names medcls reads: {', '.join(PATH_COLUMNS[1:])} "
                        f"for the image; {', '.join(LABEL_COLUMNS[1:])} for its class, or one column per class "
                        "holding 1 for the image's class and 0 for the others.")
    report.notes.append(f"Using manifest {manifest.name} ({len(raw)} rows): {columns.described()}.")
    rows: list[Row] = []
    seen: dict[str, int] = {}
    real_base = base.resolve()
    by_stem = _ByStem(base)
    group_of: dict[str, str] = {}

    def field(record: list[str], col: int | None) -> str:
        return record[col].strip() if col is not None and col < len(record) else ""

    def label_of(record: list[str]) -> str:
        if columns.label is not None:
            return field(record, columns.label)
        return next((columns.names[i] for i in columns.one_hot if float(record[i]) == 1.0), "")

    for line_no, record in raw:
        rel, label = field(record, columns.path), label_of(record)
        where = f"{manifest.name} line {line_no}"
        if not rel or not label:
            report.skip(where, "missing path or label")
            continue
        if "\0" in rel or "\0" in label:
            report.skip(where, "the path or label contains a NUL character")
            continue
        path = base / rel
        if not Path(rel).suffix and not path.exists():  # a name without its extension, as HAM10000's image_id
            found, why = by_stem.find(rel)
            if found is None:
                report.skip(f"{rel} ({where})", why)
                continue
            path, rel = found, str(found.relative_to(base))
        try:
            key = str(path.resolve())
        except RuntimeError:
            report.skip(f"{rel} ({where})", LOOP)
            continue
        if key in seen:
            report.skip(f"{rel} ({where})", f"duplicate row: the file is already listed on line {seen[key]}")
            continue
        seen[key] = line_no
        split_raw = field(record, columns.split).lower()
        split = SPLIT_NAMES.get(split_raw) if split_raw else None
        if split_raw and split is None:
            report.skip(str(path), f"unknown split {split_raw!r} on line {line_no} (use train, val or test)")
            continue
        if not is_image_name(rel):
            report.skip(str(path), not_an_image_reason(Path(rel).suffix))
            continue
        try:
            listed = path.exists() or path.is_symlink()
        except OSError:
            listed = True  # let the sniff say what is wrong (a loop, a name too long, ...)
        reason = sniff(path, real_base) if listed else \
            f"listed in {manifest.name} line {line_no} but the file does not exist"
        if reason and "outside the dataset folder" in reason:
            reason = None  # manifests may legitimately point next door; allowed roots still apply
        if reason is None:  # a row may name any path (absolute, ../..): it must lie in the allowed roots
            try:
                check_allowed_path(path)
            except PermissionError as exc:
                reason = str(exc)
        if reason:
            report.skip(str(path), reason)
            continue
        rows.append((str(path), label, split))
        if group := field(record, columns.group):
            group_of[str(path)] = group
    if by_stem.found:
        report.notes.append(f"{STEM_NOTE} ({by_stem.found:,} of its rows): each was matched to the one image of "
                            f"that name below {base.name}/.")
    return ManifestRows(rows, group_of, columns.names[columns.group] if columns.group is not None else "")


def other_manifests_note(root: Path) -> str | None:
    """For a folder read by its subfolders: a sentence naming a ``.csv`` beside them that reads as a manifest
    (HAM10000's folder: its classes are in ``HAM10000_metadata.csv``, and its two image folders are no classes), or
    None. Only the header and a few rows are read."""
    try:
        tables = sorted(p for p in root.iterdir() if p.suffix.lower() == ".csv" and p.is_file())
    except OSError:
        return None
    for table in tables:
        try:
            with open(table, encoding="utf-8-sig", errors="replace", newline="") as handle:
                reader = csv.reader(handle)
                header = next(reader, None) or []
                records = [r for _, r in zip(range(50), reader) if r]
        except (OSError, csv.Error):
            continue
        if (columns := read_columns(header, records)) is not None:
            return (f"This folder holds {table.name}, a table of images and their classes ({columns.described()}), "
                    "but medcls reads a folder's subfolders as its classes (or a table named "
                    f"{', '.join(MANIFEST_NAMES)}). To use the table's classes, give the .csv itself as the dataset, "
                    f"or name it {MANIFEST_NAMES[0]} (in a .zip to upload, too).")
    return None
