"""Dataset discovery: split folders, class folders, manifests and MedMNIST ``.npz``.

:func:`load_dataset` turns a :class:`~medcls.config.DataConfig` into a
:class:`~medcls.data.spec.DatasetSpec`. Files are only *listed* and sniffed here
(size, image header); decoding happens once, later, in the decoded cache.

One odd file never stops a dataset: links that loop or leave the folder, names that
are not UTF-8, named pipes and devices, folders nested too deep (see :mod:`.listing`),
manifest rows that are too long, hold a NUL character or do not parse are each
skipped and listed in the data report with the reason.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..config import DataConfig
from ..settings import cache_dir, check_allowed_path
from . import npz
from .classes import ClassResolver
from .imageio import NPZ_MARK, is_image_name
from .listing import NOT_UTF8, bad_name, list_images, shown_path
from .manifest import (
    MANIFEST_NAMES,
    MAX_MANIFEST_BYTES,
    SPLIT_NAMES,
    manifest_path,
    other_manifests_note,
    rows_from_manifest,
)
from .spec import SPLITS, DataError, DataReport, DatasetSpec, Item
from .splits import PatientSource, split_groups, stratified_split
from .subfolders import subfolder_of

__all__ = ["load_dataset", "detect_layout", "synthetic_root", "SPLIT_NAMES", "MAX_MANIFEST_BYTES"]

log = logging.getLogger(__name__)
# MedMNIST v2's class names (its INFO table), by the flag its files are named after ('breastmnist.npz',
# 'breastmnist_224.npz'); v1's organ files were 'organmnist_axial.npz' and the like.
_ORGANS = ["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver", "lung-left",
           "lung-right", "pancreas", "spleen"]
MEDMNIST_CLASSES = {
    "breastmnist": ["malignant", "normal, benign"],
    "pneumoniamnist": ["normal", "pneumonia"],
    "dermamnist": ["actinic keratoses", "basal cell carcinoma", "benign keratosis", "dermatofibroma",
                   "melanoma", "melanocytic nevi", "vascular lesions"],
    "bloodmnist": ["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte",
                   "monocyte", "neutrophil", "platelet"],
    "retinamnist": ["0", "1", "2", "3", "4"],
    "pathmnist": ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle", "normal colon mucosa",
                  "cancer-associated stroma", "colorectal adenocarcinoma epithelium"],
    "octmnist": ["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"],
    "tissuemnist": ["collecting duct, connecting tubule", "distal convoluted tubule", "glomerular endothelial cells",
                    "interstitial endothelial cells", "leukocytes", "podocytes", "proximal tubule segments",
                    "thick ascending limb"],
    **{flag: _ORGANS for flag in ("organamnist", "organcmnist", "organsmnist", "organmnist")},
}


def medmnist_classes(file_name: str) -> list[str]:
    """MedMNIST's class names for a file named after its flag (empty when it is not): 'breastmnist.npz',
    'breastmnist_224.npz', and the app's uploads, which keep a content hash before the name
    ('3b1e3ae009f0-breastmnist.npz')."""
    flag = re.search(r"[a-z]+mnist", Path(file_name).stem.lower())
    return list(MEDMNIST_CLASSES.get(flag.group(0), [])) if flag else []


def synthetic_root() -> Path:
    """Where the built-in phantom dataset lives (generated on first use)."""
    from .phantoms import PhantomSpec, write_phantom_dataset

    spec = PhantomSpec()
    root = cache_dir() / "synthetic" / f"phantoms-{spec.fingerprint()}"
    return write_phantom_dataset(root, spec)


def load_dataset(cfg: DataConfig) -> DatasetSpec:
    """Find every image of a dataset, its class and its split."""
    synthetic = not cfg.source.strip()
    if "\0" in cfg.source:
        raise DataError("The dataset path contains a NUL character; give a folder, a .csv manifest or an .npz file.")
    if not synthetic:
        try:
            Path(cfg.source).expanduser().resolve()
        except RuntimeError:  # Python 3.11 raises for a loop of symbolic links
            raise DataError(f"{cfg.source} is a loop of symbolic links (a link that leads back to itself); "
                            "point at the real folder.") from None
    root = synthetic_root() if synthetic else check_allowed_path(cfg.source)
    if not root.exists():
        raise DataError(f"Dataset not found: {cfg.source}. Give a folder, a .csv manifest or an .npz file.")
    layout = detect_layout(root) if cfg.layout == "auto" else cfg.layout
    report = DataReport()
    resolver = ClassResolver(cfg.class_aliases)
    named: dict[str, str] = {}
    column = ""
    if layout == "npz":
        spec = _from_npz(root, cfg, report)
    else:
        if layout == "manifest":
            rows, named, column = rows_from_manifest(manifest_path(root), report)
        elif layout == "split_folders":
            rows = _rows_from_split_folders(root, cfg, report)
        elif layout == "class_folders":
            rows = _rows_from_class_folders(root, cfg, report)
        else:
            raise DataError(f"Unknown layout {layout!r}.")
        if layout != "manifest" and (table := other_manifests_note(root)):
            report.warnings.append(table)
        try:
            spec = _build_spec(root, layout, rows, resolver, cfg, report, named, column)
        except DataError as exc:
            if layout != "manifest":
                raise
            raise DataError(f"In manifest {manifest_path(root)}: {exc}") from None  # say which file to fix
    spec.synthetic = synthetic
    if synthetic:
        report.notes.insert(0, "Built-in SYNTHETIC phantom images generated by medcls: not patient data, "
                               "for learning and demos only.")
    _check_usable(spec)
    log.info("Loaded %s: %s", root, spec.summary())
    return spec


def detect_layout(root: Path) -> str:
    if root.is_file():
        suffix = root.suffix.lower()
        if suffix == ".npz":
            return "npz"
        if suffix == ".csv":
            return "manifest"
        raise DataError(f"{root} is a file but not a .csv manifest or .npz array file.")
    if not root.is_dir():
        raise DataError(f"{root} is neither a folder nor a file.")
    if any((root / name).is_file() for name in MANIFEST_NAMES):
        return "manifest"
    subdirs = {p.name.lower() for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if "train" in subdirs or "training" in subdirs:
        return "split_folders"
    if subdirs:
        return "class_folders"
    raise DataError(f"No images found in {root}: expected class sub-folders (e.g. {root}/benign/*.png), "
                    f"train/val/test sub-folders, or a manifest such as split.csv.")


# --- rows: (path, raw class name, split or None) --------------------------

Row = tuple[str, str, "str | None"]


def _rows_from_class_folders(root: Path, cfg: DataConfig, report: DataReport, split: str | None = None) -> list[Row]:
    rows: list[Row] = []
    stray = [p for p in root.iterdir() if p.is_file() and is_image_name(p.name)]
    for path in stray:
        report.skip(shown_path(path), "an image outside any class folder (its class is unknown)")
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if class_dir.is_symlink():
            report.skip(str(class_dir), "a linked folder; links are not followed")
            continue
        if bad_name(class_dir.name):
            report.skip(shown_path(class_dir), f"a class folder whose {NOT_UTF8}; its images were not used")
            continue
        images = list_images(class_dir, root, cfg, report)
        if not images:
            report.warnings.append(f"Folder {class_dir.name!r} holds no usable images and was ignored.")
        rows += [(p, class_dir.name, split) for p in images]
    return rows


def _rows_from_split_folders(root: Path, cfg: DataConfig, report: DataReport) -> list[Row]:
    rows: list[Row] = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        split = SPLIT_NAMES.get(split_dir.name.lower())
        if split is None:
            report.warnings.append(f"Folder {split_dir.name!r} is not train/val/test and was ignored.")
            continue
        rows += _rows_from_class_folders(split_dir, cfg, report, split=split)
    return rows


def _build_spec(root: Path, layout: str, rows: list[Row], resolver: ClassResolver, cfg: DataConfig,
                report: DataReport, named: dict[str, str] | None = None, column: str = "") -> DatasetSpec:
    """``named``: each image's patient from a manifest's ``column``, kept together as a patient's folder is."""
    patients = PatientSource(str(root), layout, named or {}, column)
    if not rows:
        raise DataError(f"No usable images found in {root}"
                        + (f" ({len(report.skipped)} {'file' if len(report.skipped) == 1 else 'files'} skipped; see "
                           "the data report)." if report.skipped
                           else ". Expected class sub-folders with .png/.jpg/.bmp/.tif images."))
    by_split: dict[str | None, set[str]] = defaultdict(set)
    for _, name, split in rows:
        by_split[split].add(name)
    classes = resolver.resolve({("train" if s is None else s): names for s, names in by_split.items()})
    labels = [classes.index(resolver.canonical(name)) for _, name, _ in rows]
    splits = [split for _, _, split in rows]
    given = any(s is not None for s in splits)
    if cfg.own_split and given:  # the dataset's split leaks (or is unwanted): make one instead
        splits = [None] * len(splits)

    unsplit = [i for i, s in enumerate(splits) if s is None]
    has = {s for s in splits if s is not None}
    if unsplit and not has:
        _make_split(splits, unsplit, [rows[i][0] for i in unsplit], labels, classes, cfg, report,
                    set_aside=cfg.own_split and given, patients=patients)
    elif unsplit:
        report.warnings.append(f"{len(unsplit)} manifest row(s) had no split and were put in train.")
        for i in unsplit:
            splits[i] = "train"
    _carve_missing_splits(splits, labels, classes, cfg, report, [path for path, _, _ in rows], patients)
    items = [Item(path, label, split) for (path, _, _), label, split in zip(rows, labels, splits)]
    return DatasetSpec(str(root), layout, classes, items, report, group_of=dict(named or {}), group_column=column)


def _make_split(splits: list, positions: list[int], paths: list[str], labels: list[int], classes: list[str],
                cfg: DataConfig, report: DataReport, set_aside: bool = False,
                patients: PatientSource = PatientSource()) -> None:
    """A stratified, seeded train/val/test split of the items at ``positions`` (each subfolder's images kept
    together with ``group_subfolders``, near-duplicates with ``group_duplicates``); the note says how it was made
    (see :func:`medcls.data.health.made_own_split`)."""
    item_labels = [labels[i] for i in positions]
    grouping = split_groups(cfg, paths, item_labels, *patients)
    groups = grouping.groups
    grouped = "".join(f"; {words}" for words in grouping.said)
    assigned, tiny = stratified_split(item_labels, cfg.val_fraction, cfg.test_fraction,
                                      cfg.split_seed, groups=groups)
    why = "The dataset's own split was set aside ('Make my own split')" if set_aside else "No split given"
    report.notes.append(f"{why}: made a stratified {1 - cfg.val_fraction - cfg.test_fraction:.0%}/"
                        f"{cfg.val_fraction:.0%}/{cfg.test_fraction:.0%} train/val/test split "
                        f"(seed {cfg.split_seed}{grouped}).")
    _apply(splits, positions, assigned)
    for k in tiny:
        of_class = [groups[i] for i, p in enumerate(positions) if labels[p] == k] if groups is not None else []
        if len(set(of_class)) < len(of_class):  # subfolders or near copies joined its images into fewer groups
            what = " and ".join(grouping.kinds)
            of = " and ".join("near copies" if kind == "near-duplicates" else kind for kind in grouping.kinds)
            report.warnings.append(
                f"Class {classes[k]!r} cannot be split with {what} kept together: its {len(of_class)} "
                f"images form {len(set(of_class))} group(s) of {of}, so all stay in train and it has no "
                "validation or test images.")
        else:
            report.warnings.append(f"Class {classes[k]!r} is too small to split: all its images stay in train.")


def _apply(splits: list, positions: list[int], values: list[str]) -> None:
    for pos, value in zip(positions, values):
        splits[pos] = value


def _carve_missing_splits(splits: list[str], labels: list[int], classes: list[str], cfg: DataConfig,
                          report: DataReport, paths: list[str] | None = None,
                          patients: PatientSource = PatientSource()) -> None:
    """A missing val or test split is cut from train, stratified and seeded (keeping together what the config
    keeps together, when the images' ``paths`` are given)."""
    for missing, fraction in (("val", cfg.val_fraction), ("test", cfg.test_fraction)):
        if missing in splits or fraction <= 0:
            continue
        train_pos = [i for i, s in enumerate(splits) if s == "train"]
        # Fraction of the whole dataset, taken from train.
        share = min(0.5, fraction * len(splits) / max(1, len(train_pos)))
        train_labels = [labels[i] for i in train_pos]
        groups = split_groups(cfg, [paths[i] for i in train_pos], train_labels, *patients).groups if paths else None
        assigned, _ = stratified_split(train_labels, 0.0, share, cfg.split_seed + 1, groups=groups)
        _apply(splits, train_pos, [missing if a == "test" else "train" for a in assigned])
        report.notes.append(f"No {missing} split found: carved {assigned.count('test')} images from train "
                            f"(stratified, seed {cfg.split_seed + 1}).")


def _from_npz(path: Path, cfg: DataConfig, report: DataReport) -> DatasetSpec:
    """An .npz file of arrays (MedMNIST's, Keras's or one unsplit pair): its headers and labels are checked before
    any image is unpacked (see .npz)."""
    arrays = npz.inspect_npz(path)
    pairs = npz.split_arrays(arrays)
    if not pairs:
        raise DataError(f"{path.name} has no arrays medcls knows as images and labels (found: "
                        f"{', '.join(sorted(arrays)) or 'nothing'}). It reads {npz.NAMES_READ}.")
    present = [s for s in (*SPLITS, npz.POOL_MEMBER) if s in pairs]  # split arrays, or the one unsplit pair
    if npz.POOL_MEMBER in pairs:
        images, labels = pairs[npz.POOL_MEMBER]
        report.notes.append(f"{path.name}: images from '{images.name}', labels from '{labels.name}' (no splits "
                            "of their own).")
    elif any(images.name != f"{split}_images" for split, (images, _) in pairs.items()):
        report.notes.append(f"{path.name}: " + "; ".join(f"{split} images from '{images.name}', labels from "
                                                          f"'{labels.name}'" for split, (images, labels)
                                                          in pairs.items()) + ".")
    layouts = {s: npz.image_layout(path, pairs[s][0]) for s in present}
    npz.check_total(path, [pairs[s][0] for s in present])
    labels_by_split = {s: npz.read_labels(path, pairs[s][1], pairs[s][0]) for s in present}
    channels = {pairs[s][0].shape[-1 if layouts[s] == "last" else 1] for s in present if layouts[s] != "gray"}
    if channels & {2, 4}:
        report.notes.append(f"{path.name}: images with an alpha channel; transparent parts are shown black.")
    names, index = _npz_classes(path, cfg, labels_by_split)
    items = [Item(f"{path}{NPZ_MARK}{member}/{i}", index[label.item()], member if member in SPLITS else None)
             for member in present for i, label in enumerate(labels_by_split[member])]
    spec = DatasetSpec(str(path), "npz", names, items, report)
    splits: list = [it.split for it in items]
    if cfg.own_split or npz.POOL_MEMBER in pairs:  # set aside, or none given: split like class folders
        splits = [None] * len(items)
        _make_split(splits, list(range(len(items))), [it.path for it in items], [it.label for it in items], names,
                    cfg, report, set_aside=npz.POOL_MEMBER not in pairs)
    _carve_missing_splits(splits, [it.label for it in items], names, cfg, report)
    spec.items = [Item(it.path, it.label, s) for it, s in zip(items, splits)]
    return spec


def _npz_classes(path: Path, cfg: DataConfig, labels_by_split: dict[str, np.ndarray]) -> tuple[list[str], dict]:
    """The class names of an .npz file's labels, and each label's class index."""
    kinds = {labels.dtype.kind for labels in labels_by_split.values()}
    if "U" in kinds:  # class names as labels: the classes are the names used, in alphabetical order
        if len(kinds) > 1:
            raise DataError(f"{path.name}: some splits' labels are class names and others class numbers; give "
                            "every split the same kind.")
        names = sorted({str(v) for labels in labels_by_split.values() for v in labels})
        if cfg.class_names:
            raise DataError(f"{path.name} names its classes in its labels ({', '.join(names[:5])}"
                            f"{', …' if len(names) > 5 else ''}); leave the class names empty.")
        return names, {name: i for i, name in enumerate(names)}
    used = sorted({int(v) for labels in labels_by_split.values() for v in labels})
    names = list(cfg.class_names) or medmnist_classes(path.name)
    n_classes = used[-1] + 1 if used else 0
    if cfg.class_names and len(names) != n_classes:
        raise DataError(f"{path.name} has {n_classes} classes but {len(names)} class names were given.")
    if names and len(names) >= n_classes:
        return names, {label: label for label in range(len(names))}
    # An unknown file: one class per label that occurs (labels 0, 3, 7 make three classes, not eight).
    return [f"class_{label}" for label in used], {label: i for i, label in enumerate(used)}


def _wrapped_hint(spec: DatasetSpec) -> str:
    """' The folder images holds folders of its own (bar, disc, ring): …' when the one class found is a folder
    wrapped around the real class folders (a dataset unpacked into data/images/<class>/); '' otherwise."""
    inner: dict[str, set[str]] = defaultdict(set)
    for item in spec.items:
        if (folder := subfolder_of(item.path, spec.root, spec.layout)) is not None:
            outer, _, rest = folder.partition("/")
            inner[outer].add(rest.partition("/")[0])
    if len(inner) != 1 or len(names := sorted(next(iter(inner.values())))) < 2:
        return ""
    outer = next(iter(inner))
    listed = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
    return (f" The folder {outer} holds folders of its own ({listed}): if those are the classes, choose "
            f"{Path(spec.root) / outer} as the dataset.")


def _check_usable(spec: DatasetSpec) -> None:
    counts = spec.counts()
    train_classes = [name for name, n in counts["train"].items() if n > 0]
    if len(train_classes) < 2:
        raise DataError(f"Only one class ({', '.join(train_classes) or 'none'}) has training images in "
                        f"{spec.root}. A classifier needs at least two classes, e.g. one folder per class."
                        + _wrapped_hint(spec))
    for name, n in counts["train"].items():
        if 0 < n < 5:
            spec.report.warnings.append(f"Class {name!r} has only {n} training image(s); results for it "
                                        "will be unreliable (is the name a typo?).")
    for split in ("val", "test"):
        if sum(counts[split].values()) == 0:
            spec.report.warnings.append(f"The {split} split is empty.")
