"""MedMNIST-style ``.npz`` files, checked before they are unpacked and read in bounded memory.

An ``.npz`` is a zip of ``.npy`` arrays, and each array's header (type and shape) sits in the first
bytes of its member. So everything is checked before a single pixel is unpacked:

- arrays of Python objects (pickles) are refused; images must be ``N x H x W`` or ``N x H x W x C``
  with 1 to 4 channels (2: gray + alpha, 4: RGBA; channels first is recognised too), each image at
  most :data:`~medcls.data.imageio.MAX_IMAGE_PIXELS`, all image arrays together at most
  :data:`MAX_NPZ_BYTES` unpacked (a 1 MB file of zeros can declare gigabytes);
- labels must be one whole number per image, from 0 to :data:`MAX_CLASSES` - 1: NaN, negative,
  fractional and huge labels are refused, naming the first offending image.

Image arrays are then unpacked once, member by member in 1 MB chunks (the real byte count is enforced
while writing, since headers can lie), into ``.npy`` files in the cache, and read through a memory map:
a large array costs page cache, not process memory.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from ..atomic import atomic_write_with
from ..settings import cache_dir
from .disk_budget import trim_oldest
from .imageio import MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, NPZ_MARK, ImageReadError
from .spec import DataError

__all__ = ["MAX_NPZ_BYTES", "MAX_CLASSES", "NpzArray", "KEY_PAIRS", "POOL_MEMBER", "NAMES_READ", "inspect_npz",
           "split_arrays", "read_labels", "image_layout", "check_total", "read_member", "count_zip_entries"]

MAX_NPZ_BYTES = 1 << 30          # all image arrays of one file, unpacked (1 GiB)
MAX_CLASSES = 1000               # more classes than ImageNet is a damaged label, not a dataset
MAX_IMAGES = 500_000             # the largest MedMNIST split holds about 240,000
MAX_MEMBERS = 1000               # an .npz holds a handful of arrays
MAX_NAME_BYTES = 1024            # a label array of class names: 256 characters each (4 bytes a character)
MAX_CACHE_BYTES = 4 << 30        # unpacked arrays kept in the cache (oldest files removed first)
_CHUNK = 1 << 20

# The names an .npz file gives each split's images and labels: MedMNIST's, then Keras's (mnist.npz), each with the
# other spellings of a split; a file with a single pair (images/labels, x/y) is one pool that medcls splits itself.
_SPLIT_WORDS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
KEY_PAIRS: tuple[tuple[str, str], ...] = (("{}_images", "{}_labels"), ("x_{}", "y_{}"), ("{}_x", "{}_y"))
_POOL_PAIRS = (("images", "labels"), ("x", "y"), ("imgs", "labels"), ("data", "labels"))
POOL_MEMBER = "image"  # an unsplit pair's images are items 'file.npz::image/12', read as "image #12"
NAMES_READ = ("MedMNIST's train_images and train_labels (val_ and test_ too), Keras's x_train and y_train (x_test, "
              "y_test), or one pair named images and labels, or x and y, which medcls splits")  # said to people
_LOCK = threading.Lock()


@dataclass(frozen=True)
class NpzArray:
    """An array of the file as its header declares it."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.float64)) * self.dtype.itemsize


def count_zip_entries(handle) -> int | None:
    """The entry count a zip's end record declares (read before the directory is parsed); None if unreadable."""
    try:
        end = zipfile._EndRecData(handle)  # the stdlib's own reader of the end record
        return None if end is None else int(end[zipfile._ECD_ENTRIES_TOTAL])
    except (OSError, AttributeError):  # AttributeError: a Python whose zipfile no longer has these (private) names
        return None


def inspect_npz(path: Path) -> dict[str, NpzArray]:
    """Every array of the file by name, from the headers only."""
    try:
        with open(path, "rb") as handle:
            entries = count_zip_entries(handle)
            if entries is not None and entries > MAX_MEMBERS:
                raise DataError(f"{path.name} holds {entries:,} arrays; a MedMNIST file holds a handful (at most "
                                f"{MAX_MEMBERS:,} are read).")
            with zipfile.ZipFile(handle) as archive:
                arrays = {}
                for info in archive.infolist():
                    if not info.filename.endswith(".npy"):
                        continue
                    name = info.filename[:-4]
                    with archive.open(info) as member:
                        arrays[name] = _header(member, name, path)
                return arrays
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, NotImplementedError, RuntimeError) as exc:
        raise DataError(f"{path.name} is not a readable .npz file ({exc}).") from None


def split_arrays(arrays: dict[str, NpzArray]) -> dict[str, tuple[NpzArray, NpzArray]]:
    """Each split's (images, labels) arrays, by the first naming that the file uses (see KEY_PAIRS): {} if none.

    A file of one unsplit pair gives it as :data:`POOL_MEMBER`; names are matched ignoring case (X_train, y_train).
    """
    by_lower = {name.lower(): array for name, array in arrays.items()}
    for images_key, labels_key in KEY_PAIRS:
        found = {}
        for split, words in _SPLIT_WORDS.items():
            for word in words:
                if images_key.format(word) in by_lower and labels_key.format(word) in by_lower:
                    found[split] = (by_lower[images_key.format(word)], by_lower[labels_key.format(word)])
                    break
        if "train" in found:
            return found
    for images_key, labels_key in _POOL_PAIRS:
        if images_key in by_lower and labels_key in by_lower:
            return {POOL_MEMBER: (by_lower[images_key], by_lower[labels_key])}
    return {}


@lru_cache(maxsize=32)
def _member_names(path: str, mtime_ns: int) -> dict[str, str]:
    """split (or POOL_MEMBER) -> the name of its image array in the file (read from the headers once per version)."""
    return {split: images.name for split, (images, _) in split_arrays(inspect_npz(Path(path))).items()}


def _header(member, name: str, path: Path) -> NpzArray:
    version = npy_format.read_magic(member)
    read = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    shape, _, dtype = read(member, max_header_size=10_000)
    if dtype.hasobject:
        raise DataError(f"{path.name} is not a readable .npz file ({name} holds Python objects, which are never "
                        "loaded: they could run code).")
    return NpzArray(name, tuple(int(n) for n in shape), dtype)


def image_layout(path: Path, array: NpzArray) -> str:
    """'gray' (N, H, W), 'last' (N, H, W, C) or 'first' (N, C, H, W); raises DataError for anything else."""
    shape = array.shape
    if array.dtype.kind not in "buif":
        raise DataError(f"{path.name}: {array.name} holds {array.dtype} values, not pixel numbers.")
    if len(shape) == 3:
        layout, (h, w) = "gray", shape[1:]
    elif len(shape) == 4 and 1 <= shape[3] <= 4:
        layout, (h, w) = "last", shape[1:3]
    elif len(shape) == 4 and 1 <= shape[1] <= 4:
        layout, (h, w) = "first", shape[2:]
    elif len(shape) == 4:
        raise DataError(f"{path.name}: {array.name} has images of {shape[3]} channels; medcls reads 1 (gray), "
                        "2 (gray + alpha), 3 (RGB) or 4 (RGBA).")
    else:
        raise DataError(f"{path.name}: {array.name} should be N x H x W (x C), got {shape}.")
    if h * w > MAX_IMAGE_PIXELS:
        raise DataError(f"{path.name}: {array.name} holds {h}x{w}-pixel images, over the limit of "
                        f"{MAX_IMAGE_PIXELS:,} pixels per image (possible decompression bomb).")
    if min(h, w) < MIN_IMAGE_SIDE:
        raise DataError(f"{path.name}: {array.name} holds images of only {h}x{w} pixels.")
    return layout


def check_total(path: Path, images: list[NpzArray]) -> None:
    count = sum(a.shape[0] for a in images)
    if count > MAX_IMAGES:
        raise DataError(f"{path.name} holds {count:,} images; the limit is {MAX_IMAGES:,}. Use a smaller file.")
    total = sum(a.nbytes for a in images)
    if total > MAX_NPZ_BYTES:
        arrays = ", ".join(f"{a.name} {'x'.join(map(str, a.shape))}" for a in images)
        raise DataError(f"{path.name}: its images unpack to {total / 1e6:,.0f} MB ({arrays}); the limit is "
                        f"{MAX_NPZ_BYTES / 1e6:,.0f} MB. Use smaller or fewer images.")


def read_labels(path: Path, array: NpzArray, images: NpzArray) -> np.ndarray:
    """One label per image of ``images``, checked: whole numbers as int64 (N,), or class names as str (N,)."""
    n_images = images.shape[0]
    if len(array.shape) not in (1, 2) or (len(array.shape) == 2 and array.shape[1] != 1):
        raise DataError(f"{path.name}: {array.name} has shape {array.shape}; medcls needs one class label per image "
                        "(N or N x 1). Multi-label files are not supported.")
    if array.shape[0] != n_images:
        raise DataError(f"{path.name}: {images.name} has {n_images} images but {array.name} has "
                        f"{array.shape[0]}.")
    if array.dtype.kind not in "buifUS":
        raise DataError(f"{path.name}: {array.name} holds {array.dtype} values, not class numbers or names.")
    if array.dtype.kind in "US" and array.dtype.itemsize > MAX_NAME_BYTES:  # read whole: each name costs its width
        raise DataError(f"{path.name}: {array.name} holds class names up to {array.dtype.itemsize:,} bytes wide; "
                        f"at most {MAX_NAME_BYTES} are read.")
    with zipfile.ZipFile(path) as archive, archive.open(f"{array.name}.npy") as member:
        raw = npy_format.read_array(io.BufferedReader(member), allow_pickle=False).reshape(-1)
    if array.dtype.kind in "US":
        names = np.char.strip(np.char.decode(raw, "utf-8", "replace") if array.dtype.kind == "S" else raw)
        if (blank := names == "").any():
            raise DataError(f"{path.name}: {array.name}[{int(np.flatnonzero(blank)[0])}] is an empty class name "
                            f"({int(blank.sum()):,} such label(s)).")
        return names
    values = raw.astype(np.float64)
    checks = (
        (~np.isfinite(values), "is not a number (NaN or infinite)"),
        (np.isfinite(values) & (values != np.round(values)), "is not a whole number"),
        (values < 0, "is negative"),
        (values >= MAX_CLASSES, f"is {MAX_CLASSES} or more (classes are numbered 0 to {MAX_CLASSES - 1})"),
    )
    for bad, why in checks:
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(f"{path.name}: {array.name}[{first}] = {raw[first].item()!r} {why}; labels must be class "
                            f"numbers 0, 1, 2, ... ({int(bad.sum()):,} such label(s)).")
    return values.astype(np.int64)


# --- unpacking into the cache, and reading one image --------------------------------------------------

def _cache_folder(path: Path) -> Path:
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]
    return cache_dir() / "npz" / key


def _unpack(path: Path, name: str) -> Path:
    """The member as a .npy file in the cache (unpacked once, in chunks, within the declared size)."""
    target = _cache_folder(path) / f"{name}.npy"
    with _LOCK:
        if target.is_file():
            os.utime(target.parent)  # recently used: kept when the cache is trimmed
            return target
        declared = inspect_npz(path)[name]
        limit = declared.nbytes + 100_000  # the data plus its header

        def write(out) -> None:
            written = 0
            with zipfile.ZipFile(path) as archive, archive.open(f"{name}.npy") as member:
                while chunk := member.read(_CHUNK):
                    written += len(chunk)
                    if written > limit:
                        raise DataError(f"{path.name}: {name} unpacks to more than its header declares; refused.")
                    out.write(chunk)

        try:
            atomic_write_with(target, write)
        except (zipfile.BadZipFile, EOFError, ValueError) as exc:  # a damaged member (bad CRC, cut off)
            if isinstance(exc, DataError):
                raise
            raise DataError(f"{path.name}: {name} is damaged and cannot be unpacked ({exc}).") from None
        _trim_cache(keep=target.parent)
        return target


def _trim_cache(keep: Path) -> None:
    trim_oldest((p for p in (cache_dir() / "npz").iterdir() if p.is_dir()), MAX_CACHE_BYTES, keep)


@lru_cache(maxsize=8)
def _images(path: str, mtime_ns: int, name: str) -> np.ndarray:
    return np.load(_unpack(Path(path), name), mmap_mode="r", allow_pickle=False)


def read_member(ref: str) -> np.ndarray:
    """Pixels of 'file.npz::split/index' as uint8 (H, W) or (H, W, 3); only that image is read."""
    container, _, member = ref.partition(NPZ_MARK)
    split, _, index = member.partition("/")
    path = Path(container)
    mtime_ns = path.stat().st_mtime_ns
    if not index.isdigit() or split not in (names := _member_names(str(path), mtime_ns)):
        raise ImageReadError(ref, "not an image of an .npz file")
    images = _images(str(path), mtime_ns, names[split])
    arr = np.array(images[int(index)])  # one image out of the memory map
    if arr.ndim == 3 and arr.shape[0] <= 4 and arr.shape[-1] > 4:  # channels first
        arr = np.moveaxis(arr, 0, -1)
    return _to_uint8(arr, ref)


def _to_uint8(arr: np.ndarray, ref: str) -> np.ndarray:
    if arr.dtype != np.uint8:
        values = arr.astype(np.float64)
        finite = np.isfinite(values)
        if not finite.any():
            raise ImageReadError(ref, "the image holds no finite pixel values (all NaN or infinite)")
        lo, hi = float(values[finite].min()), float(values[finite].max())
        if arr.dtype.kind == "b":
            lo, hi = 0.0, 1.0
        elif arr.dtype.kind == "f" and lo >= 0 and hi <= 1:
            lo, hi = 0.0, 1.0     # the usual float images in [0, 1]
        elif lo >= 0 and hi <= 255:
            lo, hi = 0.0, 255.0   # integers already in 8-bit range
        values = np.where(finite, (values - lo) / max(hi - lo, 1e-12) * 255, 0)
        arr = np.clip(values.round(), 0, 255).astype(np.uint8)
    if arr.ndim == 3:
        channels = arr.shape[-1]
        if channels in (2, 4):  # with alpha: transparent parts become black, as for RGBA files
            alpha = arr[..., -1:].astype(np.float32) / 255
            arr = np.round(arr[..., :-1] * alpha).astype(np.uint8)
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    return arr
