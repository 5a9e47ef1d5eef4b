"""Images kept in subfolders below their class folders, and whether the split separates a subfolder's images.

Medical datasets are often stored one folder per patient or study inside each class folder
(``benign/patient07/*.png``). medcls splits images, not folders, so such a folder's images can land in train and
in test: if the folder is one patient's, the model is tested on a patient it learned from, and the test score is
optimistic in the same way as a near copy's (:mod:`medcls.data.health`). This module finds those folders and says
how many the split cuts across; a ``.csv`` manifest with a split column keeps each one where it is put.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import PurePath

from .spec import SPLITS, DatasetSpec

__all__ = ["subfolder_splits", "subfolder_note"]

# How deep an image sits below the dataset folder when it is directly in its class folder, per layout, and how
# many leading folders name its split (so that train/benign/p07 and test/benign/p07 are one folder, benign/p07).
_CLASS_DEPTH = {"class_folders": 2, "split_folders": 3}
_SPLIT_PARTS = {"class_folders": 0, "split_folders": 1}


def subfolder_splits(spec: DatasetSpec) -> dict[str, set[str]]:
    """Each subfolder below a class folder (as a path from the dataset folder) and the splits its images are in;
    empty for a dataset whose images sit directly in their class folders, a manifest or an ``.npz`` file."""
    depth = _CLASS_DEPTH.get(spec.layout)
    if depth is None:
        return {}
    root = PurePath(spec.root)
    found: dict[str, set[str]] = defaultdict(set)
    for item in spec.items:
        try:
            parts = PurePath(item.path).relative_to(root).parts
        except ValueError:
            continue
        if len(parts) > depth:
            found[PurePath(*parts[_SPLIT_PARTS[spec.layout]:-1]).as_posix()].add(item.split)
    return dict(found)


def subfolder_note(spec: DatasetSpec) -> str | None:
    """What the split does to the images' subfolders (None when there are none, or none has images in two
    splits)."""
    folders = subfolder_splits(spec)
    cut = sorted(name for name, splits in folders.items() if len(splits) > 1)
    per_class = Counter(name.split("/")[0] for name in folders)
    if not cut or max(per_class.values()) < 2:  # one folder a class ('benign/images') holds no patients apart
        return None
    example = cut[0]
    *rest, last = sorted(folders[example], key=SPLITS.index)
    where = f"{', '.join(rest)} and {last}"
    return (f"The images sit in {len(folders):,} subfolder(s) below their class folders (one per patient or study, "
            f"perhaps), and the split puts the images of {len(cut):,} of them in more than one split (such as "
            f"{example}: {where}). medcls splits images, not folders: if a subfolder holds one patient's images, "
            "the model is tested on patients it learned from, and the test score is optimistic. To keep each "
            "subfolder in one split, give a .csv manifest with a split column, or split folders (train/, val/, "
            "test/) that hold whole subfolders.")
