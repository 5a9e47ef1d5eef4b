"""DICOM files: one image each, as scanners and PACS exports write them, turned into the picture a viewer shows.

pydicom reads the file. This module applies what the file says about displaying it: the modality rescale (CT
values in Hounsfield units, for example), then the file's own display window (window centre and width, mapped
to black..white as DICOM's linear function does) or VOI lookup table; MONOCHROME1 images (where the lowest value
is white, as in many X-rays) are inverted so that every image reads the same way round; colour comes out as
RGB. Without a window the used range is stretched later, like any 16-bit image (:func:`imageio.to_uint8`).
Multi-frame files (volumes, cine loops) are refused: medcls classifies single images.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["DICOM_SUFFIXES", "DicomError", "is_dicom_file", "looks_like_dicom", "dicom_size", "read_dicom"]

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
_MAGIC = b"DICM"
_MAGIC_AT = 128  # after the file's 128-byte preamble
_NEEDS_PYDICOM = "reading DICOM files needs the pydicom package (pip install pydicom)"


class DicomError(ValueError):
    """A DICOM file medcls cannot use; ``str(err)`` is the reason, in words for the data report, and ``kind``
    the :class:`medcls.data.imageio.ImageReadError` kind it amounts to."""

    def __init__(self, reason: str, kind: str = "unreadable"):
        super().__init__(reason)
        self.kind = kind


def looks_like_dicom(head: bytes) -> bool:
    """Whether a file that starts with ``head`` (at least 132 bytes of it) is a DICOM file."""
    return head[_MAGIC_AT:_MAGIC_AT + len(_MAGIC)] == _MAGIC


def is_dicom_file(path: str | Path) -> bool:
    """A ``.dcm``/``.dicom`` file, or one without an extension that starts like DICOM (many exports name their
    files ``IM000001``)."""
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as handle:
            return looks_like_dicom(handle.read(_MAGIC_AT + len(_MAGIC)))
    except OSError:
        return False


def _dcmread(source: str | Path | bytes, **kwargs):
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:  # optional at import time: only DICOM datasets need it
        raise DicomError(_NEEDS_PYDICOM) from None
    fp = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source)
    try:
        return pydicom.dcmread(fp, **kwargs)
    except InvalidDicomError:
        raise DicomError("not a DICOM file (no 'DICM' marker after its 128-byte preamble)") from None


def dicom_size(source: str | Path | bytes) -> tuple[int, int, str]:
    """(width, height, photometric interpretation) from the header alone, for a file holding one image; raises
    :class:`DicomError` for anything else."""
    return _single_image(_dcmread(source, stop_before_pixels=True))


def _single_image(ds) -> tuple[int, int, str]:
    """(width, height, photometric interpretation) of a dataset that holds one image; DicomError otherwise."""
    if "Rows" not in ds or "Columns" not in ds:
        raise DicomError("the DICOM file holds no image (no rows and columns: a report or other non-image data)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomError(f"a DICOM with {frames} frames (a volume or a cine loop); medcls classifies single "
                         "images, so save the frame to classify as its own file", "not_image")
    return int(ds.Columns), int(ds.Rows), str(ds.get("PhotometricInterpretation", "MONOCHROME2"))


def read_dicom(source: str | Path | bytes, max_pixels: int) -> Image.Image:
    """The image as a viewer shows it: mode L (windowed), F (gray, not yet scaled to 8 bits) or RGB.

    Raises :class:`DicomError` with the reason (no pydicom, not DICOM, no image, several frames, too large, pixel data
    compressed in a format no installed decoder reads)."""
    ds = _dcmread(source)  # the pixel data's bytes are read, not yet decoded
    width, height, photometric = _single_image(ds)
    if width * height > max_pixels:  # checked before decoding
        raise DicomError(f"too large: {width}x{height} pixels (limit {max_pixels / 1e6:g} megapixels)", "too_large")
    if "PixelData" not in ds:
        raise DicomError("the DICOM file holds no pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # compressed pixel data without a decoder, or damaged data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if getattr(syntax, "is_compressed", False):
            raise DicomError(f"its pixel data is compressed ({syntax.name}) and cannot be decoded here "
                             f"({type(exc).__name__}: {exc}); 'pip install pylibjpeg pylibjpeg-libjpeg "
                             "pylibjpeg-openjpeg' adds decoders for most of them") from None
        raise DicomError(f"its pixel data is damaged or truncated ({type(exc).__name__}: {exc})") from None
    if pixels.ndim == 3:  # colour (rows, columns, 3); pydicom gives YBR as RGB
        if pixels.dtype != np.uint8:
            bits = int(ds.get("BitsStored", 8) or 8)
            pixels = np.clip(pixels.astype(np.float64) / (2 ** bits - 1) * 255, 0, 255).round()
        return Image.fromarray(pixels.astype(np.uint8), "RGB")
    return _gray(pixels, ds, photometric)


def _gray(pixels: np.ndarray, ds, photometric: str) -> Image.Image:
    from pydicom.pixels import apply_modality_lut, apply_voi

    values = np.asarray(apply_modality_lut(pixels, ds), dtype=np.float64)
    inverted = photometric.upper() == "MONOCHROME1"
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if center is not None and width is not None and width >= 1:
        # DICOM's linear window (PS3.3 C.11.2.1.2.1): centre - width/2 .. centre + width/2 -> black .. white.
        shown = np.clip((values - (center - 0.5)) / max(width - 1, 1) + 0.5, 0, 1) * 255
        shown = 255 - shown if inverted else shown
        return Image.fromarray(shown.round().astype(np.uint8), "L")
    if "VOILUTSequence" in ds:
        values = np.asarray(apply_voi(values, ds), dtype=np.float64)
    if inverted:
        values = values.max() + values.min() - values
    return Image.fromarray(values.astype(np.float32), "F")


def _first(value) -> float | None:
    """A window value, which DICOM may store as several alternatives (the first is the default view)."""
    if value is None:
        return None
    try:
        return float(value[0] if hasattr(value, "__len__") and not isinstance(value, str) else value)
    except (TypeError, ValueError, IndexError):
        return None
