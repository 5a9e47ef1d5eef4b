"""What the data explorer shows: samples, image properties, imbalance in words, augmentation draws."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..config import AugmentConfig
from .augment import BatchAugment, to_float
from .health import made_own_split
from .imageio import NPZ_MARK, ImageReadError, decode_resized, file_format, header_size, read_image
from .spec import DatasetSpec, Item, class_word

__all__ = ["sample_items", "thumbnail", "image_properties", "typical_side", "typical_side_of", "enlargement_note",
           "shrink_note", "sampled_words", "squash_note", "squeeze_words", "model_view_caption", "imbalance_sentence",
           "small_validation_note", "NO_VALIDATION_NOTE", "augmentation_preview", "detail_note"]

ENLARGED = 1.25  # a training size this much larger than the images' own is worth a word
# Images at least this many times the training size lose detail worth a word: BUSI's 256 px ultrasound at the
# default 128 px (twice) learned 1-2 points less macro-F1 than at 160-192 px (docs/ablation.md).
SHRUNK = 2.0
# An image that shows a model this many times finer (or coarser) detail than the images it learned from is worth a
# word on Try it: a 256 px scan shown to a model of 28 px MedMNIST images is 4.6 times.
DETAIL_GAP = 2.0
# Images more than this far from square (width / height or height / width) are visibly reshaped by the square
# resize: a 4:3 image's shapes come out 0.75 times as wide as they were.
SQUASHED = 1.1
# A class with fewer validation images than this, and under this share of its train + val images, has a
# validation split too small for its size: a dataset's own split, like the chest X-ray set's 8 + 8 of 5,232.
FEW_VALIDATION_IMAGES = 10
SMALL_VALIDATION_SHARE = 0.05
# A stratified split gives a class a validation image once it has this many (medcls.data.splits.stratified_split).
SPLITTABLE = 3


def sample_items(spec: DatasetSpec, label: int, split: str | None, count: int, seed: int = 0) -> list[Item]:
    """Up to ``count`` items of one class (and split), a fixed random sample."""
    pool = [it for it in spec.items if it.label == label and (split is None or it.split == split)]
    return random.Random(seed).sample(pool, min(count, len(pool)))


@lru_cache(maxsize=512)
def thumbnail(path: str, size: int = 160) -> np.ndarray:
    """A small uint8 image for display (keeps the aspect ratio); raises ValueError when unreadable."""
    try:
        arr = read_image(path, "rgb")
    except ImageReadError as exc:
        raise ValueError(exc.reason) from None
    img = Image.fromarray(arr)
    img.thumbnail((size, size))
    return np.asarray(img)


def image_properties(spec: DatasetSpec, limit: int = 400, seed: int = 0) -> list[dict]:
    """Width, height, Pillow mode, file format and class of (a sample of) the images, from their headers."""
    items = spec.items if len(spec.items) <= limit else random.Random(seed).sample(spec.items, limit)
    rows = []
    for it in items:
        kind = {"class": spec.classes[it.label], "format": file_format(it.path)}
        try:
            width, height, mode = _size(it.path)
        except (OSError, ValueError):
            continue
        rows.append({"width": width, "height": height, "mode": mode, **kind})
    return rows


def _size(source: str | bytes) -> tuple[int, int, str]:
    """(width, height, mode) of an image: from its header, or an .npz array's from its shape (it has none)."""
    if isinstance(source, str) and NPZ_MARK in source:
        arr = read_image(source, "gray")
        return arr.shape[1], arr.shape[0], "npz array"
    return header_size(source)


def typical_side(spec: DatasetSpec, limit: int = 100, seed: int = 0) -> int | None:
    """The median shorter side, in pixels, of (a sample of) the images; None when none can be read."""
    return typical_side_of(image_properties(spec, limit, seed))


def typical_side_of(props: list[dict]) -> int | None:
    """The median shorter side, in pixels, of :func:`image_properties` rows; None when there are none."""
    sides = [min(row["width"], row["height"]) for row in props]
    return int(np.median(sides)) if sides else None


def enlargement_note(image_size: int, side: int | None) -> str | None:
    """What training at ``image_size`` does to images whose shorter side is typically ``side`` pixels, when it
    enlarges them (None when it does not, or the side is unknown)."""
    if not side or image_size <= side * ENLARGED:
        return None
    factor = image_size / side
    return (f"{_resized(side, image_size, 'enlarged', factor)}: the network sees no more detail than the images "
            f"hold, and each step computes about {factor ** 2:.0f} times as many pixels as at {side} px. A smaller "
            "image size trains much faster; whether it costs accuracy on these images is worth one run to find out.")


def shrink_note(image_size: int, side: int | None) -> str | None:
    """What training at ``image_size`` does to images whose shorter side is typically ``side`` pixels, when it
    shrinks them a lot (None when it does not, or the side is unknown)."""
    if not side or side < image_size * SHRUNK:
        return None
    factor = side / image_size
    return (f"{_resized(side, image_size, 'shrunk', factor)}: each pixel the network sees stands for about "
            f"{factor ** 2:.0f} of theirs, so their finest detail is blurred away. A larger image size keeps more of "
            "it and takes longer (the estimate below measures your choice); whether that detail matters for these "
            "images is worth one run to find out. On BUSI's 256 px ultrasound images, 160 and 192 px scored 1 to 2 "
            "points more macro-F1 than 128 px in cross-validation, at 1.4 and about 2 times the time.")


def sampled_words(rows: int, of: int | None) -> str:
    """' sampled from 5,000' when ``rows`` image headers were read of a dataset of ``of`` images; '' for all."""
    return f" sampled from {of:,}" if of and of > rows else ""


def squash_note(props: list[dict], image_size: int, of: int | None = None) -> str | None:
    """What the square resize does to images that are not square, from :func:`image_properties` rows (None when
    fewer than a tenth of them are); ``of``: the dataset's image count, when the rows are a sample of it."""
    off = [(r["width"], r["height"]) for r in props if _squeezed(r["width"], r["height"])]
    if not off or len(off) < 0.1 * len(props):
        return None
    width, height = max(set(off), key=lambda size: (off.count(size), size))  # the commonest, then the largest
    sampled = sampled_words(len(props), of)
    share = (f"None of the {len(props)} images{sampled} is square" if len(off) == len(props) else
             f"{len(off)} of the {len(props)} images{sampled} {'is' if len(off) == 1 else 'are'} not square")
    if 2 * off.count((width, height)) < len(off):  # no shape is typical: each image is reshaped its own way
        return _varied_squash_note(share, off, image_size)
    if width > height:
        kept, squeezed, other = height / width, "sideways to {:.2f} of their width", "height"
    else:
        kept, squeezed, other = width / height, "from top to bottom to {:.2f} of their height", "width"
    sizes = f"{width} × {height} px" if len(set(off)) == 1 else f"most often {width} × {height} px"
    return (f"{share} ({sizes}). Training and prediction resize every image to "
            f"{image_size} × {image_size} px without keeping its shape, as the seed notebook did, so the shapes in each "
            f"{width} × {height} image are squeezed {squeezed.format(kept)} for their {other}: a round lesion "
            "becomes an oval. The model learns and judges the reshaped images alike; a shape it relies on, such as "
            "a lesion taller than it is wide, is the reshaped one.")


def _varied_squash_note(share: str, off: list[tuple[int, int]], image_size: int) -> str:
    """:func:`squash_note` for images of many shapes, none of them typical."""
    widths, heights = [w for w, _ in off], [h for _, h in off]
    kept = [min(w, h) / max(w, h) for w, h in off]
    wide = sum(w > h for w, h in off)
    return (f"{share}, and their shapes vary ({min(widths)} to {max(widths)} px wide, {min(heights)} to "
            f"{max(heights)} px tall; {wide} wider than tall, {len(off) - wide} taller than wide). Training and "
            f"prediction resize every image to {image_size} × {image_size} px without keeping its shape, as the "
            "seed notebook did, so each image is squeezed along its longer side by an amount of its own: the shapes "
            f"in it keep {min(kept):.2f} to {max(kept):.2f} of their length along that side, for their size along "
            "the other. A round lesion becomes an oval, a different one from image to image, so a shape the model "
            "could rely on, such as a lesion taller than it is wide, is not drawn alike in every image.")


def squeeze_words(width: int, height: int, image_size: int) -> str | None:
    """'256 × 192 px squeezed to 192 × 192' for an image the square resize reshapes visibly; None for one that is
    (about) square."""
    if not _squeezed(width, height):
        return None
    nbsp = "\u00a0"  # keeps each size on one line in a narrow caption
    return f"{width}{nbsp}×{nbsp}{height}{nbsp}px squeezed to {image_size}{nbsp}×{nbsp}{image_size}"


def _squeezed(width: int, height: int) -> bool:
    """Far enough from square that the square resize visibly reshapes it."""
    return max(width, height) > SQUASHED * min(width, height)


def model_view_caption(source: str | bytes, image_size: int) -> str:
    """The caption of an image shown as the model's input: 'as the model sees it', and how the square resize
    reshaped it when it did (read from the file's header; an image it cannot read is simply not described)."""
    try:
        width, height, _ = header_size(source)
    except (OSError, ValueError, SyntaxError):  # SyntaxError: Pillow's word for some broken headers
        return "as the model sees it"
    words = squeeze_words(width, height, image_size)
    return f"as the model sees it ({words})" if words else "as the model sees it"


def detail_note(source: str | bytes, trained_side: int, image_size: int) -> str | None:
    """When an image shows the model much more or much less detail than the images it learned from (typically
    ``trained_side`` px on their shorter side; 0: not known) at its input size ``image_size``: a sentence saying so.
    None when they are alike, or the image's size cannot be read (from its header; an .npz array's from its shape).

    A model trained on a 28 px MedMNIST file has only seen 28 px of detail, enlarged; a 256 px scan shrunk to its
    128 px input shows it texture it never saw (and the other way round)."""
    if not trained_side:
        return None
    try:
        width, height, _ = _size(source)
    except (OSError, ValueError, SyntaxError, ImageReadError):
        return None
    side = min(width, height)
    seen, shown = min(trained_side, image_size), min(side, image_size)  # the detail each brings to the input
    learned = (f"the images this model learned from are typically {trained_side} px on their shorter side"
               + (f" (enlarged to its {image_size} px input)" if trained_side < image_size else ""))
    if shown >= DETAIL_GAP * seen:
        return (f"This image is {side} px on its shorter side, and {learned}: at {image_size} px it shows the model "
                f"{shown / seen:.1f} times finer detail than it ever saw, which can mislead it. Shrunk to about "
                f"{trained_side} px first, it would look like them.")
    if seen >= DETAIL_GAP * shown:
        return (f"This image is only {side} px on its shorter side, and {learned}: enlarged to {image_size} px, it "
                f"holds {seen / shown:.1f} times less detail than they did, which can mislead the model.")
    return None


def _resized(side: int, image_size: int, verb: str, factor: float) -> str:
    return (f"The images are typically {side} px on their shorter side, so at {image_size} px each is {verb} "
            f"{factor:.1f} times")


ROUGHLY_BALANCED = 1.5  # largest over smallest class count below which the classes read as balanced


def imbalance_sentence(spec: DatasetSpec, name: Callable[[str], str] = str) -> str:
    """The class imbalance of the training split, in words (Markdown). ``name`` writes the class names (the app
    escapes them, so a class name cannot add Markdown of its own)."""
    counts = spec.counts()["train"]
    present = {c: n for c, n in counts.items() if n}
    if len(present) < 2:
        return "Only one class has training images."
    big = max(present, key=present.get)
    small = min(present, key=present.get)
    ratio = present[big] / present[small]
    total = sum(present.values())
    shares = ", ".join(f"{name(class_word(c))} {n / total:.0%}" for c, n in present.items())
    if ratio < ROUGHLY_BALANCED:
        verdict = "The classes are roughly balanced."
    else:
        verdict = (f"**Imbalanced: {ratio:.1f} {name(class_word(big))} images for every {name(class_word(small))} "
                   f"image.** A model that ignores '{name(small)}' can still look accurate, so watch per-class recall "
                   "and macro-F1. Training oversamples the rarer classes unless you change 'Imbalance strategy' on the "
                   "Train page.")
    return f"Training split: {shares}. {verdict}"


NO_VALIDATION_NOTE = (
    "No validation images (the data has no val split and 'Validation share' is 0): a run that trains one model has "
    "nothing to pick its best epoch by or stop early on, so it trains every epoch and keeps the last one's weights, "
    "and its curves show training only. Set a validation share (command line: --val-fraction) to watch for "
    "over-fitting; a small dataset's cross-validation ensemble validates on folds of its own.")


def small_validation_note(spec: DatasetSpec, name: Callable[[str], str] = str) -> str | None:
    """When the validation split holds far fewer images of a class than it could (fewer than
    ``FEW_VALIDATION_IMAGES``, and under ``SMALL_VALIDATION_SHARE`` of the class's train + val images): a
    sentence saying what that does to a run and how to fix it (None otherwise); with no validation image at all,
    :data:`NO_VALIDATION_NOTE`. ``name`` writes class names."""
    counts = spec.counts()
    train, val = counts["train"], counts["val"]
    if not sum(val.values()) and sum(train.values()):
        return NO_VALIDATION_NOTE
    if made_own_split(spec):  # medcls's stratified split gave each class its share, or says it had too few to
        return None           # split; 'Make my own split' has nothing to mend
    total = {c: sum(counts[split].get(c, 0) for split in counts) for c in spec.classes}
    few = [c for c in spec.classes if train.get(c, 0) and val.get(c, 0) < FEW_VALIDATION_IMAGES
           and val.get(c, 0) < SMALL_VALIDATION_SHARE * (train.get(c, 0) + val.get(c, 0))
           and total[c] >= SPLITTABLE]  # a class of 1-2 images gets no validation image from any split
    if not few:
        return None
    parts = [f"{val.get(c, 0) or 'no'} {name(c)}" for c in few]
    held = parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"
    only = " only" if any(val.get(c, 0) for c in few) else ""
    return (f"The validation split holds{only} {held} image{'' if len(few) == 1 and val.get(few[0], 0) == 1 else 's'} "
            f"({sum(val.values()):,} in all, against {sum(train.values()):,} training images). A run that trains "
            "one model shows its validation curves on these images (and, keeping its best epoch, picks that epoch "
            "and stops early by them), where one image more or less right moves the validation score by several "
            "points. 'Make my own split' (command line: --own-split) "
            "makes a stratified split of all the images instead; a small dataset's cross-validation ensemble "
            "validates on folds of its own.")


def augmentation_preview(path: str, cfg: AugmentConfig, size: int = 128, draws: int = 6, seed: int = 0,
                         color: str = "gray") -> list[np.ndarray]:
    """The original (first) and ``draws - 1`` augmented versions of one image, uint8 (H, W) or (H, W, 3)."""
    pixels = decode_resized(path, size, color)  # (C, S, S)
    batch = to_float(torch.tensor(pixels)[None].repeat(draws, 1, 1, 1))
    out = BatchAugment(cfg)(batch.clone(), torch.Generator().manual_seed(seed))
    out[0] = batch[0]
    arr = (out.clamp(0, 1) * 255).round().byte().numpy()
    return [a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0) for a in arr]

