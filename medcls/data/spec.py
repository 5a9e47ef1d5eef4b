"""The in-memory description every dataset source produces.

Whatever the layout on disk (split folders, class folders, a manifest, an
``.npz``), loading ends in a :class:`DatasetSpec`: a list of items (path,
class index, split), the class names, and a :class:`DataReport` that lists every
file that was skipped and why. Nothing is decoded here.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

__all__ = ["SPLITS", "Item", "Skipped", "DataReport", "DatasetSpec", "DataError", "item_name", "numbered",
           "class_word"]

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """The dataset cannot be used as given; the message says why and how to fix it."""


def numbered(class_name: str) -> bool:
    """Whether a class is named by a number ('0', '1'), which prose beside a count would read as a second count."""
    return class_name[:1].isdigit()


def class_word(class_name: str) -> str:
    """A class name as a sentence writes it: quoted when it is a number ("5.0 '0' images for every '2' image")."""
    return f"'{class_name}'" if numbered(class_name) else class_name


def item_name(path: str) -> str:
    """How people read an item's name: the file's name, or "test #12" for an array inside an .npz."""
    container, mark, member = str(path).partition("::")
    if mark:
        split, _, index = member.partition("/")
        return f"{split} #{index}"
    return container.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Item:
    path: str    # a file path, or "file.npz::split/index" for arrays inside an .npz
    label: int   # index into DatasetSpec.classes
    split: str   # one of SPLITS

    @property
    def name(self) -> str:
        return item_name(self.path)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class DataReport:
    """What happened while reading a dataset, for people to read."""

    skipped: list[Skipped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)     # informative: layout found, split made, ...
    warnings: list[str] = field(default_factory=list)  # worth a look: tiny classes, colour images, ...

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append(Skipped(str(path), reason))

    def merge(self, other: "DataReport") -> None:
        known = {s.path for s in self.skipped}
        self.skipped.extend(s for s in other.skipped if s.path not in known)
        self.notes.extend(n for n in other.notes if n not in self.notes)
        self.warnings.extend(w for w in other.warnings if w not in self.warnings)

    def to_dict(self) -> dict:
        return {
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "notes": list(self.notes),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: dict) -> "DataReport":
        return cls(
            skipped=[Skipped(s["path"], s["reason"]) for s in data.get("skipped", [])],
            notes=list(data.get("notes", [])),
            warnings=list(data.get("warnings", [])),
        )


@dataclass
class DatasetSpec:
    """Items, classes and the report of one dataset."""

    root: str
    layout: str
    classes: list[str]
    items: list[Item]
    report: DataReport = field(default_factory=DataReport)
    synthetic: bool = False
    # Listed but not decodable (``decode_dataset`` drops them from ``items``): still part of what the dataset is,
    # so a run on it and the listing in the sidebar have one fingerprint.
    undecodable: list[Item] = field(default_factory=list)
    # A manifest's patient column (``patient_id``): each image's patient, which 'Keep subfolders in one split'
    # keeps together as it does a patient's folder. Empty for data without one.
    group_of: dict[str, str] = field(default_factory=dict)
    group_column: str = ""

    def split(self, name: str) -> list[Item]:
        return [it for it in self.items if it.split == name]

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {class name: count}} with every class present (zeros included)."""
        out: dict[str, dict[str, int]] = {}
        for split in SPLITS:
            counter = Counter(it.label for it in self.items if it.split == split)
            out[split] = {name: counter.get(i, 0) for i, name in enumerate(self.classes)}
        return out

    def without(self, paths: Iterable[str]) -> "DatasetSpec":
        drop = set(paths)
        return DatasetSpec(self.root, self.layout, list(self.classes),
                           [it for it in self.items if it.path not in drop], self.report, self.synthetic,
                           list(self.undecodable), self.group_of, self.group_column)

    def fingerprint(self) -> str:
        """A short hash of what the dataset is made of: each image's contents with its label and split, and the
        class names.

        Not where the files lie: an ``.npz`` trained from its path and the same file uploaded in the app are one
        dataset, and so is a folder copied elsewhere; its runs stay its runs. Images that do not decode count as
        listed (a run's dataset is the one chosen), files that cannot be read by their path. Each file is read
        once per process (:mod:`medcls.data.digests`).
        """
        from .digests import readable_digest  # reads files: numpy and Pillow stay out of this module's imports

        digest = hashlib.sha256()
        digest.update("\x1f".join(self.classes).encode())
        for entry in sorted(f"{readable_digest(it.path) or f'unreadable:{it.path}'}\x1f{it.label}\x1f{it.split}"
                            for it in [*self.items, *self.undecodable]):
            digest.update(f"\x1e{entry}".encode())
        return digest.hexdigest()[:16]

    def imbalance_ratio(self, split: str = "train") -> float:
        """Largest class count over smallest non-empty class count."""
        counts = [c for c in self.counts()[split].values() if c > 0]
        return max(counts) / min(counts) if counts else 0.0

    def summary(self) -> str:
        """'400 images, 3 classes (train: 244 normal, 20 benign, 16 malignant; val: …)'; a split whose classes
        are all the same size reads 'train: 28 of each class', which fifteen classes need."""
        counts = self.counts()

        def split_counts(split: str) -> str:
            sizes = counts[split]
            if not any(sizes.values()):
                return f"{split}: none"
            if len(sizes) > 2 and len(set(sizes.values())) == 1:
                return f"{split}: {next(iter(sizes.values())):,} of each class"
            return f"{split}: " + ", ".join(f"{n:,} of {class_word(name)}" if numbered(name) else f"{n:,} {name}"
                                            for name, n in sizes.items())

        parts = [split_counts(split) for split in SPLITS]
        return f"{len(self.items):,} images, {len(self.classes)} classes ({'; '.join(parts)})"
