"""Images kept in subfolders below their class folders, and whether the split separates a subfolder's images.

Medical datasets are often stored one folder per patient or study inside each class folder
(``benign/patient07/*.png``). Unless told to keep them whole, medcls splits images, not folders, so such a
folder's images can land in train and in test: if the folder is one patient's, the model is tested on a patient
it learned from, and the test score is optimistic in the same way as a near copy's (:mod:`medcls.data.health`).
This module finds those folders, says how many a split cuts across, and gives the groups that keep each one in one
split (``group_subfolders``).
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict

from .spec import SPLITS, DatasetSpec

__all__ = ["subfolder_of", "subfolder_splits", "subfolder_note"]

# How deep an image sits below the dataset folder when it is directly in its class folder, per layout, and how
# many leading folders name its split (so that train/benign/p07 and test/benign/p07 are one folder, benign/p07).
_CLASS_DEPTH = {"class_folders": 2, "split_folders": 3}
_SPLIT_PARTS = {"class_folders": 0, "split_folders": 1}


def subfolder_of(path: str, root: str, layout: str) -> str | None:
    """The subfolder below its class folder that holds an image, as a path from the dataset folder without the
    split's folder ('benign/patient07'); None for an image directly in its class folder, or a layout without
    class folders (a manifest, an ``.npz`` file)."""
    depth = _CLASS_DEPTH.get(layout)
    prefix = root.rstrip("/" + os.sep) + os.sep
    if depth is None or not path.startswith(prefix):
        return None
    # Plain string work, not PurePath: the Data explorer asks this of every image on each redraw.
    parts = path[len(prefix):].split(os.sep)
    return "/".join(parts[_SPLIT_PARTS[layout]:-1]) if len(parts) > depth else None


def subfolder_splits(spec: DatasetSpec) -> dict[str, set[str]]:
    """Each subfolder below a class folder (as a path from the dataset folder) and the splits its images are in;
    empty for a dataset whose images sit directly in their class folders, a manifest or an ``.npz`` file."""
    found: dict[str, set[str]] = defaultdict(set)
    for item in spec.items:
        if (key := subfolder_of(item.path, spec.root, spec.layout)) is not None:
            found[key].add(item.split)
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
            f"{example}: {where}). If a subfolder holds one patient's images, "
            "the model is tested on patients it learned from, and the test score is optimistic. Tick 'Keep "
            "subfolders in one split' (--group-subfolders; with 'Make my own split' for data that brings its own "
            "split) to keep each subfolder's images together.")
