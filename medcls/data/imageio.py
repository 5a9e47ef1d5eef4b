"""Defensive image decoding: any file or upload to a uint8 array, or a clear reason why not.

Pillow does the decoding (pydicom for DICOM files: :mod:`medcls.data.dicom`). This
module adds what a server facing odd files needs: a pixel limit checked from the
header before any pixel is decoded (so a "decompression bomb" is refused cheaply),
EXIF rotation, every Pillow mode (L, RGB, RGBA, P, I;16, I, F, CMYK, ...) turned
into 8-bit gray or RGB, and one exception type whose message names the file and
the reason.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .dicom import DICOM_SUFFIXES, DicomError, dicom_size, is_dicom_file, looks_like_dicom, read_dicom

__all__ = [
    "IMAGE_SUFFIXES",
    "IMAGE_FORMATS",
    "MAX_IMAGE_PIXELS",
    "ImageReadError",
    "too_large_reason",
    "is_image_name",
    "file_format",
    "is_mask_name",
    "not_an_image_reason",
    "header_size",
    "open_image",
    "to_uint8",
    "stretch_to_uint8",
    "read_image",
    "resize_square",
    "decode_resized",
    "is_grayscale",
]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}) | DICOM_SUFFIXES
# The same list in words, for upload labels and hints.
IMAGE_FORMATS = "PNG, JPEG, BMP, TIFF, WebP or DICOM"
_FORMAT_NAMES = {"jpeg": "JPEG", "jpg": "JPEG", "tif": "TIFF", "tiff": "TIFF", "dcm": "DICOM"}
# Pillow modes with more than 8 bits a value (16-bit exports, microscopy, float maps): stretched to 8 bits.
HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# 64 megapixels: far above any ultrasound, X-ray or microscopy tile we expect,
# far below what would exhaust memory (a bomb declares billions).
MAX_IMAGE_PIXELS = 64_000_000
MIN_IMAGE_SIDE = 2  # a 1x1 image carries no information to classify

Color = Literal["gray", "rgb"]
NPZ_MARK = "::"


class ImageReadError(ValueError):
    """An image could not be used. ``str(err)`` names the file and the reason.

    ``kind`` says what went wrong, for a page that suggests a fix: 'missing', 'empty', 'not_image' (another
    kind of file; another format helps), 'too_large', 'too_small', 'corrupt' or 'unreadable'.
    """

    def __init__(self, name: str, reason: str, kind: str = "unreadable"):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
        self.kind = kind


def _megapixels(pixels: float) -> str:
    megapixels = pixels / 1e6
    if megapixels < 1:
        return f"{megapixels:.2g}"
    return f"{megapixels:,.1f}" if megapixels < 100 else f"{megapixels:,.0f}"


def too_large_reason(pixels: float, max_pixels: int, detail: str = "") -> str:
    """'too large: 81.0 megapixels (limit 64)', and what it was."""
    return f"too large: {_megapixels(pixels)} megapixels (limit {max_pixels / 1e6:g})" + (f"; {detail}" if detail else "")


def is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


def file_format(path: str) -> str:
    """The kind of file an image is, from its name: 'PNG', 'JPEG', 'TIFF', 'DICOM', 'npz array', ..."""
    if NPZ_MARK in path:
        return "npz array"
    suffix = Path(path).suffix.lower().lstrip(".")
    return _FORMAT_NAMES.get(suffix, suffix.upper() or "no suffix")


def not_an_image_reason(suffix: str) -> str:
    """Why a file was skipped for its name, and what would have been read."""
    return f"not an image file type ({suffix or 'no extension'}; medcls reads {IMAGE_FORMATS})"


def is_mask_name(name: str) -> bool:
    return "_mask" in Path(name).stem.lower()


def open_image(source: str | Path | bytes, *, name: str | None = None,
               max_pixels: int = MAX_IMAGE_PIXELS, at_least: int = 0, color: Color = "rgb") -> Image.Image:
    """Open and fully decode an image from a path or bytes, refusing bombs and broken files.

    ``at_least``: the caller will shrink the image to about this side, so a JPEG is decoded at the smallest
    scale (1/2, 1/4 or 1/8; libjpeg's DCT scaling) whose sides stay at least this long, and a colour JPEG
    wanted in ``gray`` straight to gray: two to three times faster for X-rays or photos much larger than the
    model's input. Other formats decode whole.
    """
    label = name or (str(source) if not isinstance(source, (bytes, bytearray)) else "upload")
    if isinstance(source, (bytes, bytearray)):
        if len(source) == 0:
            raise ImageReadError(label, "the file is empty (0 bytes)", "empty")
        fp: io.BytesIO | str = io.BytesIO(source)
    else:
        path = Path(source)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ImageReadError(label, "the file does not exist", "missing") from None
        except OSError as exc:
            raise ImageReadError(label, f"the file cannot be read ({exc.strerror or exc})") from None
        if size == 0:
            raise ImageReadError(label, "the file is empty (0 bytes)", "empty")
        fp = str(path)
    if _is_dicom(source):
        return _open_dicom(source, label, max_pixels)
    with warnings.catch_warnings():
        # Pillow warns (rather than fails) between 1x and 2x its own limit; treat as an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp)
            width, height = img.size
            if width * height > max_pixels:
                raise ImageReadError(label, too_large_reason(
                    width * height, max_pixels, f"its header declares {width}x{height} pixels (a possible "
                    "decompression bomb)"), "too_large")
            if min(width, height) < MIN_IMAGE_SIDE:
                raise ImageReadError(label, f"the image is only {width}x{height} pixels", "too_small")
            if at_least and img.format == "JPEG":
                img.draft("L" if color == "gray" else "RGB", (at_least, at_least))
            img.load()
        except ImageReadError:
            raise
        except UnidentifiedImageError:
            raise ImageReadError(label, "not an image file (or a format Pillow cannot read)", "not_image") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            declared = re.search(r"\((\d+) pixels\)", str(exc))
            reason = too_large_reason(int(declared.group(1)), max_pixels, "refused as a possible decompression bomb") \
                if declared else f"too large: refused as a possible decompression bomb ({exc})"
            raise ImageReadError(label, reason, "too_large") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            # Truncated or corrupt data surfaces as OSError ("image file is truncated") or similar.
            raise ImageReadError(label, f"the image data is corrupt or truncated ({exc})", "corrupt") from None
        except MemoryError:
            raise ImageReadError(label, "the image is too large to decode", "too_large") from None
    if img.mode == "F" and not np.isfinite(np.asarray(img)).any():
        raise ImageReadError(label, "the image holds no finite pixel values (all NaN or infinite)")
    try:
        img = ImageOps.exif_transpose(img)  # phone/camera JPEGs store rotation in EXIF
    except Exception:  # a broken EXIF block should not cost the image
        pass
    return img


def _open_dicom(source: str | Path | bytes, label: str, max_pixels: int) -> Image.Image:
    try:
        return read_dicom(source, max_pixels)
    except DicomError as exc:
        raise ImageReadError(label, str(exc), exc.kind) from None
    except MemoryError:
        raise ImageReadError(label, "the image is too large to decode", "too_large") from None
    except Exception as exc:  # a damaged file pydicom trips over
        raise ImageReadError(label, f"the DICOM data is corrupt or truncated ({type(exc).__name__}: {exc})",
                             "corrupt") from None


EXIF_ORIENTATION = 0x0112
QUARTER_TURNS = frozenset({5, 6, 7, 8})  # EXIF orientations that ImageOps.exif_transpose turns by 90 degrees


def header_size(source: str | Path | bytes) -> tuple[int, int, str]:
    """(width, height, mode) of an image file (or an upload's bytes) from its header, no pixel decoded (DICOM: its
    photometric interpretation as the mode). Raises OSError, ValueError (a :class:`DicomError` with the reason
    for DICOM) or Pillow's errors, as opening it would."""
    if _is_dicom(source):
        width, height, photometric = dicom_size(source)
        return width, height, f"DICOM {photometric}"
    with Image.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source) as img:
        width, height = img.size
        try:  # as decoded: a camera's JPEG turned by its EXIF orientation (5-8: a quarter turn) is read turned
            turned = img.getexif().get(EXIF_ORIENTATION) in QUARTER_TURNS
        except Exception:  # a broken EXIF block: decoding ignores it too
            turned = False
        return (height, width, img.mode) if turned else (width, height, img.mode)


def _is_dicom(source: str | Path | bytes) -> bool:
    """An upload's bytes that start like DICOM, or a file :func:`is_dicom_file` takes for one."""
    if isinstance(source, (bytes, bytearray)):
        return looks_like_dicom(source[:132])
    return is_dicom_file(source)


def stretch_to_uint8(arr: np.ndarray) -> np.ndarray:
    """High bit-depth values (H, W) to uint8: the used range (0.5th to 99.5th percentile of the finite values)
    stretched to 0..255; values that are not finite become black.

    Plain numpy only: medcls's exported ``predict.py`` carries this function's source, so that it reads such
    images exactly as medcls does."""
    finite = np.isfinite(arr)
    values = arr[finite]
    lo, hi = np.percentile(values, (0.5, 99.5)) if values.size > 4 else (values.min(), values.max())
    arr = np.where(finite, np.clip((arr - lo) / max(hi - lo, 1e-9), 0, 1) * 255, 0)
    return arr.round().astype(np.uint8)


def to_uint8(img: Image.Image, color: Color) -> np.ndarray:
    """8-bit pixels from any Pillow mode: (H, W) for gray, (H, W, 3) for rgb."""
    mode = img.mode
    if mode in HIGH_BIT_MODES:
        # High bit-depth (16-bit exports, DICOM without a display window, microscopy): stretch the used range to
        # 0..255. Float images may hold NaN or infinite pixels (masked regions): the stretch ignores them and they
        # become black; an image with no finite pixel at all is refused rather than shown as a black square.
        arr = np.asarray(img, dtype=np.float64)
        if not np.isfinite(arr).any():
            raise ImageReadError(getattr(img, "filename", "") or "image",
                                 "the image holds no finite pixel values (all NaN or infinite)")
        gray = stretch_to_uint8(arr)
        return gray if color == "gray" else np.repeat(gray[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        # Transparent parts become black, the usual background of medical images.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    target = "L" if color == "gray" else "RGB"
    if img.mode != target:
        img = img.convert(target)  # handles P, CMYK, YCbCr, 1, LAB ...
    return np.asarray(img, dtype=np.uint8)


def read_image(source: str | Path | bytes, color: Color, *, name: str | None = None, at_least: int = 0) -> np.ndarray:
    """Decode a dataset item (a file or an .npz member) or an upload's bytes to uint8 pixels.

    ``at_least``: see :func:`open_image` (JPEGs may come out smaller, never below this side)."""
    if isinstance(source, str) and NPZ_MARK in source:
        from .npz import read_member  # checked, memory-mapped reading of one image

        arr = read_member(source)
        if color == "gray" and arr.ndim == 3:
            arr = np.asarray(Image.fromarray(arr).convert("L"))
        elif color == "rgb" and arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        return arr
    return to_uint8(open_image(source, name=name, at_least=at_least, color=color), color)


def resize_square(arr: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size (as the seed did, without keeping the aspect ratio)."""
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    img = Image.fromarray(arr)
    # reducing_gap: fast two-step downscale with near-identical quality.
    return np.asarray(img.resize((size, size), Image.Resampling.BILINEAR, reducing_gap=2.0))


def decode_resized(source: str | Path | bytes, size: int, color: Color, *, name: str | None = None) -> np.ndarray:
    """One item (a dataset item or an upload's bytes) as the model sees it: channel-first uint8, (1, size, size)
    or (3, size, size). Training, evaluation and prediction all decode through here, so that they see the same
    pixels."""
    # Twice the size, as resize_square's reducing_gap: a JPEG's reduced decode is then as good as the full one.
    arr = resize_square(read_image(source, color, name=name, at_least=2 * size), size)
    return arr[None] if arr.ndim == 2 else np.ascontiguousarray(arr.transpose(2, 0, 1))


def is_grayscale(arr: np.ndarray, tolerance: int = 8, share: float = 0.002) -> bool:
    """True when an RGB image is gray apart from a few pixels (JPEG noise, a thin caliper mark)."""
    if arr.ndim == 2 or arr.shape[-1] == 1:
        return True
    a = arr.astype(np.int16)
    colourful = (np.abs(a[..., 0] - a[..., 1]) > tolerance) | (np.abs(a[..., 1] - a[..., 2]) > tolerance)
    return float(colourful.mean()) <= share
