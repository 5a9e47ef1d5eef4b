"""Did this run learn from this image? A right answer on an image a model trained on shows memory, not skill.

Try it answers any image. When the image is one of the run's own training images (picked from the dataset, or
the same file uploaded again), its answer says little about new patients, and the page says so. The run's
``split.csv`` lists the files it learned from; an upload is compared byte for byte with those of the same size
(a stat of each file is all that is read beforehand, so a large dataset costs no reading), so only an identical
copy is recognised (a re-exported or cropped copy is not: the Data explorer's duplicate check finds those within
a dataset).
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from ..data.imageio import NPZ_MARK
from ..data.spec import item_name
from ..runs.store import RunStore

__all__ = ["LearnedFrom", "learned_from", "seen_sentence"]

log = logging.getLogger(__name__)

LEARNING_SPLITS = ("train", "val")  # validation picks the best epoch, and fold models train on it


@dataclass(frozen=True)
class LearnedFrom:
    """The files a run learned from: path -> split, and the paths of the readable ones by their size in bytes."""

    splits: dict[str, str]
    by_size: dict[int, tuple[str, ...]]
    folds: int  # 0: one model

    def split_of(self, path: str | None = None, data: bytes | None = None) -> tuple[str, str] | None:
        """(path, split) of the run's training or validation file that is this path, or has exactly these bytes."""
        if path is not None and self.splits.get(path) in LEARNING_SPLITS:
            return path, self.splits[path]
        for candidate in self.by_size.get(len(data), ()) if data is not None else ():
            try:
                if Path(candidate).read_bytes() == data:
                    return candidate, self.splits[candidate]
            except OSError:  # moved or deleted since: it cannot be the upload's twin any more
                continue
        return None


def learned_from(store: RunStore, run_id: str) -> LearnedFrom:
    """Read the run's split and the sizes of its training and validation files still on disk.

    Files that moved or were deleted are skipped (their paths still match a pick); members of an .npz have no
    file of their own to upload, so only their paths count.
    """
    splits: dict[str, str] = {}
    path = store.file(run_id, "split.csv")
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row.get("path") and row.get("split"):
                    splits[row["path"]] = row["split"]
    by_size: dict[int, list[str]] = {}
    for item, split in splits.items():
        if split not in LEARNING_SPLITS or NPZ_MARK in item:
            continue
        try:
            by_size.setdefault(Path(item).stat().st_size, []).append(item)
        except OSError:
            continue
    if splits and not by_size:
        log.info("Run %s: none of its training files is on this machine; uploads are matched by nothing", run_id)
    return LearnedFrom(splits, {size: tuple(paths) for size, paths in by_size.items()}, store.summary(run_id).folds)


def seen_sentence(match: tuple[str, str], folds: int) -> str:
    """Why an answer on this image means little, in a sentence for the page (Markdown-free)."""
    path, split = match
    name = item_name(path)
    if folds:  # the folds split train + val: each image is held out by one fold model, the others train on it
        how = (f"{folds - 1} of this run's {folds} fold models trained on it, and the other one chose its best "
               "epoch with it")
    elif split == "train":
        how = "this run trained on it"
    else:
        how = "this run chose its best epoch by how well it did on it and the other validation images"
    return (f"This is {name}, one of the images this run learned from: {how}. A right answer here shows what the "
            "model remembers, not how it does on new images; pick a test image to see that.")
