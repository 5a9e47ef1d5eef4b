"""How a dataset's images are stored, and what that can teach a model by mistake.

Two things about the files, not the pictures, change what a network learns:

- Images with more than 8 bits a value (16-bit PNG or TIFF exports, float maps) are stretched image by image to
  the 256 gray levels the network is given (:func:`medcls.data.imageio.stretch_to_uint8`), so their overall
  brightness is set per image, and is not on one scale with 8-bit images beside them.
- When one class's files were made differently from the others' (another format, bit depth, colour mode or size:
  often another scanner, hospital or export), a model can learn to tell the classes by that instead of by what
  the images show, score well on a split of the same files and fail on new ones: the "shortcut" of, for example,
  chest X-ray sets whose classes came from different hospitals.

Both are judged from the rows of :func:`medcls.data.explore.image_properties` (a sample of image headers).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .explore import sampled_words
from .imageio import HIGH_BIT_MODES

__all__ = ["high_bit_note", "stored_by_class_note", "MIN_CLASS_IMAGES", "SHORTCUT_GAP"]

# A file kind this many times more common in one class than in the others (as a share of each side's images,
# 0.5 = 50 points) is worth a warning: a model could tell that class from the rest by its files alone.
SHORTCUT_GAP = 0.5
# ... when that kind of file is at most this common among the other classes' images (a class that simply shares
# the commonest kind with some of the others does not stand out).
RARE_ELSEWHERE = 0.25
# Classes (and the rest) with fewer sampled images than this say too little about how their files were made.
MIN_CLASS_IMAGES = 5
_MODES = {"L": "8-bit gray", "LA": "8-bit gray with transparency", "RGB": "RGB colour",
          "RGBA": "RGB colour with transparency", "P": "palette colour", "CMYK": "CMYK colour", "1": "black and white",
          "I;16": "16-bit gray", "I;16B": "16-bit gray", "I;16L": "16-bit gray", "I;16N": "16-bit gray",
          "I": "32-bit integer", "F": "32-bit float"}


def high_bit_note(props: Sequence[dict], of: int | None = None) -> str | None:
    """What the stretch to 8 bits does, when some of the images hold more (None when none do)."""
    high = [r for r in props if r["mode"] in HIGH_BIT_MODES]
    if not high:
        return None
    sampled = sampled_words(len(props), of)
    kinds = ", ".join(sorted({_MODES.get(r["mode"], r["mode"]) for r in high}))
    if len(high) == len(props):
        who, after = f"All {len(props)} images{sampled} hold", (
            "so a difference in overall brightness or contrast between images does not reach the model; "
            "differences within an image do.")
    else:
        who, after = f"{len(high)} of the {len(props)} images{sampled} hold", (
            "while the 8-bit images keep their own levels: the two kinds' brightness is not on one scale, and a "
            "model could learn which kind an image is.")
    return (f"{who} more than 8 bits a value ({kinds}). Each of them is stretched from its own used range (its "
            f"0.5th to 99.5th percentile) to the 256 gray levels the network is given, {after}")


def stored_by_class_note(props: Sequence[dict]) -> str | None:
    """A warning when a class's files were made differently from the others' (format, bit depth and colour mode,
    or size in pixels), naming the largest difference of each such class (up to three); None when every class's
    files are alike."""
    classes = Counter(r["class"] for r in props)
    props = [{**r, "size": f"{r['width']} × {r['height']} px"} for r in props]
    marks = {}  # class -> (gap, key, kind, share in the class, share in the others)
    for key in ("format", "mode", "size"):
        for name, count in classes.items():
            rest = len(props) - count
            if count < MIN_CLASS_IMAGES or rest < MIN_CLASS_IMAGES:
                continue
            ours = Counter(r[key] for r in props if r["class"] == name)
            theirs = Counter(r[key] for r in props if r["class"] != name)
            for kind in ours:
                share, other = ours[kind] / count, theirs[kind] / rest
                gap = share - other  # what marks this class out: a kind of file much commoner in it
                if gap >= SHORTCUT_GAP and other <= RARE_ELSEWHERE and gap > marks.get(name, (0.0,))[0]:
                    marks[name] = (gap, key, kind, share, other)
    if not marks:
        return None
    # Of two classes, the second's mark is the first's mirror image ("100% PNG against 0%"): name one.
    worst = sorted(marks.items(), key=lambda item: -item[1][0])[:1 if len(classes) == 2 else 3]
    said = "; ".join(
        f"{share:.0%} of the {name} images are {_kind_words(key, kind)}, "
        f"against {other:.0%} of the other classes' images" for name, (_, key, kind, share, other) in worst)
    return (f"The classes' files were made differently: {said}. Files made differently often come from different "
            "sources (another scanner, hospital or export), and a model can learn to tell the class by what its "
            "source leaves in the images (compression, contrast, marks) instead of by what they show: it then scores "
            "well on these files and fails on new ones. Check that every class comes from the same sources, or "
            "convert the files alike before training.")


def _kind_words(key: str, kind: str) -> str:
    """'JPEG files', '16-bit gray', '500 × 400 px'."""
    return f"{kind} files" if key == "format" else _MODES.get(kind, kind) if key == "mode" else kind
