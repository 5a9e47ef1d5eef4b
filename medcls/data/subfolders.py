"""Images kept in subfolders below their class folders, and whether the split separates a subfolder's images.

Medical datasets are often stored one folder per patient or study inside each class folder
(``benign/patient07/*.png``). Unless told to keep them whole, medcls splits images, not folders, so such a
folder's images can land in train and in test: if the folder is one patient's, the model is tested on a patient
it learned from, and the test score is optimistic in the same way as a near copy's (:mod:`medcls.data.health`).
A ``.csv`` manifest names each image's path, so its folders are read from those paths (``p07/us1.png`` or
``benign/p07/us1.png``). This module finds those folders, says how many a split cuts across, and gives the groups
that keep each one in one split (``group_subfolders``).

A class whose images all sit in one folder (``benign/images/``, or a manifest's ``benign/``) holds no patients
apart: that folder is a container, not a patient's, and is not kept together.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Hashable, Mapping, Sequence

from .manifest import STEM_NOTE
from .spec import SPLITS, DatasetSpec

__all__ = ["subfolder_of", "patient_folders", "subfolder_splits", "subfolder_note"]

# How deep an image sits below the dataset folder when it is directly in its class folder, per layout, and how
# many leading folders name its split (so that train/benign/p07 and test/benign/p07 are one folder, benign/p07).
_CLASS_DEPTH = {"class_folders": 2, "split_folders": 3}
_SPLIT_PARTS = {"class_folders": 0, "split_folders": 1}


def subfolder_of(path: str, root: str, layout: str) -> str | None:
    """The folder that holds an image, as a path from the dataset folder without the split's folder: the subfolder
    below its class folder ('benign/patient07'), or for a manifest the folder its path names ('p07', or
    'benign' for a manifest of class folders). None for an image directly in its class folder or beside the
    manifest, one outside the dataset folder, or an ``.npz`` file's."""
    if layout == "manifest":
        # the manifest's paths are relative to the folder that holds it (the dataset folder, or the .csv's folder)
        base = os.path.dirname(root) if root.lower().endswith(".csv") else root
        parts = _below(path, base)
        return ("/".join(parts[:-1]) or None) if parts else None
    depth = _CLASS_DEPTH.get(layout)
    parts = _below(path, root) if depth is not None else None
    return "/".join(parts[_SPLIT_PARTS[layout]:-1]) if parts and len(parts) > depth else None


def _below(path: str, root: str) -> list[str] | None:
    """The parts of ``path`` below ``root`` (None when it is not below it). Plain string work, not PurePath: the
    Data explorer asks this of every image on each redraw."""
    prefix = root.rstrip("/" + os.sep) + os.sep
    return path[len(prefix):].split(os.sep) if path.startswith(prefix) else None


def patient_folders(paths: Sequence[str], labels: Sequence[Hashable], root: str, layout: str,
                    named: Mapping[str, str] | None = None) -> list[str | None]:
    """The patient or study folder of each image (:func:`subfolder_of`), with the containers left out: a class whose
    images all sit in one folder has no patients apart in it, so that folder is None. ``named``: a manifest's
    patient column (path -> patient), which says it outright instead."""
    if named:
        return [named.get(path) for path in paths]
    folders = [subfolder_of(path, root, layout) for path in paths]
    keys: dict[Hashable, set[str | None]] = defaultdict(set)
    for folder, label in zip(folders, labels):
        keys[label].add(folder)
    containers = {label for label, found in keys.items() if len(found) == 1 and None not in found}
    return [None if label in containers else folder for folder, label in zip(folders, labels)]


def subfolder_splits(spec: DatasetSpec) -> dict[str, set[str]]:
    """Each patient or study folder (as a path from the dataset folder) and the splits its images are in; empty
    for a dataset whose images sit directly in their class folders, or in one folder a class, or an ``.npz``
    file, or a manifest whose images were found by their names (HAM10000's two folders of 5,000 images hold no
    patients)."""
    if not spec.group_of and spec.layout == "manifest" and any(note.startswith(STEM_NOTE) for note in spec.report.notes):
        return {}
    folders = patient_folders([item.path for item in spec.items], [item.label for item in spec.items], spec.root,
                              spec.layout, spec.group_of)
    found: dict[str, set[str]] = defaultdict(set)
    for item, key in zip(spec.items, folders):
        if key is not None:
            found[key].add(item.split)
    return dict(found)


def subfolder_note(spec: DatasetSpec) -> str | None:
    """What the split does to the images' subfolders (None when there are none, or none has images in two
    splits)."""
    folders = subfolder_splits(spec)
    cut = sorted(name for name, splits in folders.items() if len(splits) > 1)
    if not cut:
        return None
    # an example that leaks into the test images, the case that inflates the score, when there is one
    example = next((name for name in cut if {"train", "test"} <= folders[name]), cut[0])
    *rest, last = sorted(folders[example], key=SPLITS.index)
    where = f"{', '.join(rest)} and {last}"
    tick = ("Tick 'Keep subfolders in one split' (--group-subfolders; with 'Make my own split' for data that brings "
            "its own split) to keep each")
    if spec.group_column:
        column = spec.group_column
        return (f"The manifest's column {column!r} says whose each image is ({len(folders):,} {column} values: a "
                f"patient's, a study's or a lesion's), and the split puts the images of {len(cut):,} of them in more "
                f"than one split (such as {example}: {where}). The model is then tested on {column} values it "
                f"learned from, and the test score is optimistic. {tick} {column}'s images together.")
    where_kept = ("folder(s) that the manifest's paths name" if spec.layout == "manifest"
                  else "subfolder(s) below their class folders")
    return (f"The images sit in {len(folders):,} {where_kept} (one per patient or study, "
            f"perhaps), and the split puts the images of {len(cut):,} of them in more than one split (such as "
            f"{example}: {where}). If a folder holds one patient's images, "
            f"the model is tested on patients it learned from, and the test score is optimistic. {tick} "
            "subfolder's images together.")
