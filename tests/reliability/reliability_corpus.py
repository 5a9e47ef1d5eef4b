"""The bad-input corpus: odd files, folders, manifests, archives and settings a teaching server meets.

Each :class:`Case` writes one bad (or merely odd) input into a folder and says what must happen:

- ``refused``: the entry point raises its documented error (never anything else), and the message names
  the file (or setting) and the reason;
- ``skipped``: the dataset still loads, and the data report lists the file with the reason;
- ``accepted``: the input is used (odd but valid: 16-bit, CMYK, EXIF-rotated, unicode names, ...).

Kinds, and the real entry points ``test_bad_input.py`` runs them through:

- ``image``: one file, dropped into a good dataset folder (load_dataset + decode_dataset) and uploaded on
  its own (``Predictor.predict`` on the bytes, as the Try-it page does);
- ``dataset``: a whole dataset (folder, manifest or ``.npz``) for load_dataset + decode_dataset;
- ``archive``: ``.zip`` bytes for ``extract_zip`` (the sidebar's upload);
- ``config``: training options for ``TrainConfig`` (and ``prepare_data`` where the data decides);
- ``config_file``: a config file for ``TrainConfig.load`` and ``python -m medcls train --config FILE``;
- ``command``: a command line for ``python -m medcls`` (a non-zero exit and the message, never a traceback);
- ``run_file``: a damaged file in one run folder, read by ``python -m medcls runs``, the job manager and the
  Train and Compare pages (that run shows as damaged with the reason; every other run goes on).

``FAULTS`` are the faults ``test_faults.py`` provokes (a hung worker, a killed run, a deleted folder, ...),
with the message the user must get. Every case and fault names the item of issue 15 it covers (0: earlier
rounds); ``test_the_corpus_covers_every_item`` checks that each item has at least one.

Builders take the folder to write into and return what to feed the entry point.
"""

from __future__ import annotations

import csv
import io
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

KINDS = ("image", "dataset", "archive", "config", "config_file", "command", "run_file")
OUTCOMES = ("refused", "skipped", "accepted", "damaged")


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    outcome: str
    build: Callable[[Path], Any]
    name: str                          # the file, folder or setting the message must name
    reason: tuple[str, ...] = ()       # fragments of the reason (case-insensitive), all required
    check: Callable[[Any], None] | None = None  # extra check of an accepted image's decoded pixels (H, W[, 3])
    item: int = 0                      # the item of issue 15 it covers (0: an earlier round)

    def __post_init__(self):
        assert self.kind in KINDS and self.outcome in OUTCOMES, self
        assert self.outcome == "accepted" or self.reason, f"{self.id}: say which reason must be shown"


@dataclass(frozen=True)
class Fault:
    """A fault test_faults.py provokes, and the message the user must get (fragments, case-insensitive)."""

    id: str
    item: int
    what: str
    message: tuple[str, ...]


# --- small writers ---------------------------------------------------------------------------------

def noise(size: int | tuple[int, int] = 48, level: int = 128, seed: int = 0) -> Image.Image:
    w, h = (size, size) if isinstance(size, int) else size
    rng = np.random.default_rng(seed)
    return Image.fromarray(np.clip(rng.normal(level, 40, (h, w)), 0, 255).astype(np.uint8), "L")


def image_bytes(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` gray pixels (a decompression bomb's header)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def complete_black_png(width: int, height: int) -> bytes:
    """A complete, valid gray PNG of real (large) dimensions, written by streaming zlib (cheap to make)."""
    comp = zlib.compressobj(1)
    row = b"\0" * (width + 1)  # filter byte + pixels
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", b"".join(parts)) + _chunk(b"IEND", b"")


def write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def save(folder: Path, name: str, img: Image.Image, **params) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **params)
    return path


def good_classes(root: Path, classes=("benign", "malignant"), per_class: int = 6, size: int = 24,
                 split: str | None = None) -> Path:
    """A small valid dataset: one folder per class (inside ``split/`` when given)."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            save(root / (split or "") / name, f"{name} {i}.png", noise(size, level=60 + 120 * (c % 2), seed=10 * c + i))
    return root


def zip_of(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def _patch(data: bytes, edits: list[tuple[bytes, int, str, int]]) -> bytes:
    """Overwrite a field in every header of a kind: (header signature, offset in it, struct format, value)."""
    out = bytearray(data)
    for signature, offset, fmt, value in edits:
        start = 0
        while (pos := out.find(signature, start)) != -1:
            struct.pack_into(fmt, out, pos + offset, value)
            start = pos + 4
    return bytes(out)


LOCAL, CENTRAL = b"PK\x03\x04", b"PK\x01\x02"  # zip local file header / central directory header


def _good_zip() -> bytes:
    png = image_bytes(noise(24), "PNG")
    return zip_of([("data/benign/b1.png", png), ("data/malignant/m1.png", png)])


# --- image cases -----------------------------------------------------------------------------------

def _truncated_png(folder: Path) -> Path:
    data = image_bytes(noise(96, seed=1), "PNG")
    return write(folder, "truncated.png", data[: len(data) * 6 // 10])


def _truncated_jpeg(folder: Path) -> Path:
    data = image_bytes(noise(96, seed=2).convert("RGB"), "JPEG", quality=95)
    return write(folder, "truncated.jpg", data[: len(data) // 2])


def _exif_rotated(folder: Path) -> Path:
    arr = np.zeros((24, 48), np.uint8)
    arr[:, :24] = 255  # stored: left half white; EXIF orientation 6 = "rotate 90 degrees clockwise to show"
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(folder, "rotated.jpg", Image.fromarray(arr).convert("RGB"), exif=exif, quality=95)


def _check_exif(pixels) -> None:
    # Shown upright it is 24 wide and 48 tall, the white half on top.
    assert pixels.shape[:2] == (48, 24), pixels.shape
    assert pixels[:20].mean() > 200 and pixels[28:].mean() < 50


def _palette(folder: Path) -> Path:
    img = noise(32, seed=3).convert("P")
    return save(folder, "palette.png", img, transparency=0)


def _cmyk(folder: Path) -> Path:
    return save(folder, "cmyk.jpg", noise(32, seed=4).convert("CMYK"), quality=95)


def _sixteen_bit(folder: Path) -> Path:
    arr = (np.asarray(noise(32, seed=5)).astype("<u2") * 250)
    return save(folder, "sixteen-bit.png", Image.fromarray(arr))


def _check_stretched(pixels) -> None:
    assert pixels.dtype == np.uint8 and pixels.max() >= 250 and pixels.min() <= 5


def _rgba(folder: Path) -> Path:
    img = noise(32, seed=6).convert("RGBA")
    alpha = np.full((32, 32), 255, np.uint8)
    alpha[:8] = 0
    img.putalpha(Image.fromarray(alpha))
    return save(folder, "rgba.png", img)


def _check_rgba(pixels) -> None:
    assert pixels[:8].max() == 0  # transparent rows become black


def _float_tiff(folder: Path, name: str, nan_pixels: int) -> Path:
    arr = np.asarray(noise(32, seed=9), np.float32) / 255
    arr.reshape(-1)[:nan_pixels] = np.nan
    return save(folder, name, Image.fromarray(arr, "F"))


def _check_not_black(pixels) -> None:
    # One NaN pixel must not turn the picture black: the rest keeps its contrast.
    assert pixels.max() >= 200 and pixels.std() > 20, (pixels.min(), pixels.max(), pixels.std())


IMAGE_CASES = [
    Case("truncated-png", "image", "refused", _truncated_png, "truncated.png", ("corrupt or truncated",)),
    Case("truncated-jpeg", "image", "refused", _truncated_jpeg, "truncated.jpg", ("corrupt or truncated",)),
    Case("zero-byte-file", "image", "refused", lambda d: write(d, "empty.png", b""), "empty.png",
         ("empty (0 bytes)",)),
    Case("text-with-image-extension", "image", "refused",
         lambda d: write(d, "notes.jpg", b"Patient list - do not share.\nThis is text, not pixels.\n"),
         "notes.jpg", ("not an image",)),
    Case("png-signature-then-garbage", "image", "refused",
         lambda d: write(d, "garbage.png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4), "garbage.png",
         ("not an image",)),
    Case("decompression-bomb", "image", "refused", lambda d: write(d, "bomb.png", png_declaring(100_000, 100_000)),
         "bomb.png", ("too large: 10,000 megapixels (limit 64)", "decompression bomb")),
    Case("bomb-under-pillows-limit", "image", "refused", lambda d: write(d, "bomb-81mp.png", png_declaring(9000, 9000)),
         "bomb-81mp.png", ("too large: 81.0 megapixels (limit 64)", "9000x9000")),
    Case("very-large-dimensions", "image", "refused",
         lambda d: write(d, "huge.png", complete_black_png(12_000, 6_000)), "huge.png",
         ("too large: 72.0 megapixels (limit 64)", "12000x6000")),
    Case("one-by-one-pixel", "image", "refused", lambda d: save(d, "dot.png", noise(1)), "dot.png",
         ("only 1x1 pixels",)),
    Case("very-wide-strip", "image", "accepted", lambda d: save(d, "strip.png", noise((4000, 3))), "strip.png"),
    Case("sixteen-bit-png", "image", "accepted", _sixteen_bit, "sixteen-bit.png", check=_check_stretched),
    Case("cmyk-jpeg", "image", "accepted", _cmyk, "cmyk.jpg"),
    Case("palette-png-with-transparency", "image", "accepted", _palette, "palette.png"),
    Case("rgba-png", "image", "accepted", _rgba, "rgba.png", check=_check_rgba),
    Case("exif-rotated-jpeg", "image", "accepted", _exif_rotated, "rotated.jpg", check=_check_exif),
    Case("jpeg-named-png", "image", "accepted",
         lambda d: write(d, "really-a-jpeg.png", image_bytes(noise(32, seed=7), "JPEG")), "really-a-jpeg.png"),
    Case("grayscale-tiff", "image", "accepted", lambda d: save(d, "scan.TIFF", noise(32, seed=8)), "scan.TIFF"),
    Case("float-tiff-with-a-nan-pixel", "image", "accepted", lambda d: _float_tiff(d, "one-nan.tif", nan_pixels=1),
         "one-nan.tif", check=_check_not_black, item=11),
    Case("float-tiff-all-nan", "image", "refused", lambda d: _float_tiff(d, "all-nan.tif", nan_pixels=32 * 32),
         "all-nan.tif", ("no finite pixel values",), item=11),
]


# --- dataset cases -----------------------------------------------------------------------------------

def _no_images(folder: Path) -> Path:
    root = folder / "no-images"
    for name in ("benign", "malignant"):
        write(root / name, "README.txt", b"images go here")
    return root


def _empty_folder(folder: Path) -> Path:
    root = folder / "empty-folder"
    root.mkdir(parents=True)
    return root


def _one_class(folder: Path) -> Path:
    return good_classes(folder / "one-class", classes=("benign",), per_class=8)


def _classes_differ(folder: Path) -> Path:
    root = folder / "coursework"
    good_classes(root, ("benign", "cancer"), per_class=6, split="train")
    good_classes(root, ("benign", "malignant"), per_class=2, split="test")
    return root


def _manifest(folder: Path, rows: list[list[str]], name: str = "split.csv", images: int = 6) -> Path:
    root = folder / "manifest-data"
    good_classes(root / "images", per_class=images)
    with open(root / name, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)
    return root


def _manifest_rows(images: int = 6) -> list[list[str]]:
    rows = []
    for name in ("benign", "malignant"):
        for i in range(images):
            rows.append([f"images/{name}/{name} {i}.png", name, "train" if i < 4 else ("val" if i == 4 else "test")])
    return rows


def _manifest_missing(folder: Path) -> Path:
    return _manifest(folder, _manifest_rows() + [["images/benign/ghost.png", "benign", "train"]])


def _manifest_unknown_label(folder: Path) -> Path:
    rows = _manifest_rows()
    rows[-1] = [rows[-1][0], "tumour", "test"]  # a test image labelled with a class train does not have
    return _manifest(folder, rows)


def _manifest_duplicates(folder: Path) -> Path:
    rows = _manifest_rows()
    return _manifest(folder, rows + [rows[0]])


def _manifest_columns(folder: Path) -> Path:
    root = folder / "bad-columns"
    good_classes(root / "images")
    write(root, "labels.csv", b"file_name;diagnosis\nimages/benign/benign 0.png;benign\n")
    return root


def _manifest_not_utf8(folder: Path) -> Path:
    root = folder / "latin1"
    good_classes(root / "images")
    write(root, "split.csv", "path,label\nimages/benign/bénin 0.png,bénin\n".encode("latin-1"))
    return root


def _unicode_names(folder: Path) -> Path:
    root = folder / "données échographie"
    for c, name in enumerate(("bénin tumeur", "恶性 肿瘤")):
        for i in range(6):
            save(root / name, f"scan {i} ü  copy (1).png", noise(24, level=60 + 120 * c, seed=c * 10 + i))
    return root


def _nested(folder: Path) -> Path:
    root = folder / "nested"
    for c, name in enumerate(("benign", "malignant")):
        for i in range(6):
            save(root / name / f"patient-{i % 3}" / "2023" / "visit 1", f"img{i}.png",
                 noise(24, level=60 + 120 * c, seed=c * 10 + i))
    return root


def _symlink_file_out(folder: Path) -> Path:
    root = good_classes(folder / "linked-file")
    secret = save(folder / "outside", "secret.png", noise(24))
    (root / "benign" / "peek.png").symlink_to(secret)
    return root


def _symlink_dir_out(folder: Path) -> Path:
    root = good_classes(folder / "linked-dir")
    outside = good_classes(folder / "elsewhere", classes=("benign",))
    (root / "benign" / "more").symlink_to(outside / "benign", target_is_directory=True)
    (root / "normal").symlink_to(outside / "benign", target_is_directory=True)  # a whole class folder
    return root


def _npz(folder: Path, name: str, **arrays) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def _npz_wrong_keys(folder: Path) -> Path:
    return _npz(folder, "wrongkeys.npz", pixels=np.zeros((10, 28, 28), np.uint8), classes=np.zeros(10, np.int64))


def _npz_mismatch(folder: Path) -> Path:
    return _npz(folder, "mismatch.npz", train_images=np.zeros((10, 28, 28), np.uint8),
                train_labels=np.zeros(8, np.int64))


def _npz_pickled(folder: Path) -> Path:
    objects = np.array([{"evil": True}] * 10, dtype=object)
    path = folder / "pickled.npz"
    np.savez(path, train_images=objects, train_labels=np.zeros(10, np.int64))
    return path


def _stray_and_masks(folder: Path) -> Path:
    root = good_classes(folder / "strays")
    save(root, "loose.png", noise(24))                       # outside any class folder
    save(root / "benign", "benign 0_mask.png", noise(24))    # a segmentation mask
    write(root / "benign", "notes.docx", b"PK\x03\x04 not an image")
    write(root / "benign", ".DS_Store", b"\0\0\0\1Bud1")
    return root


def _symlink_loop_file(folder: Path) -> Path:
    root = good_classes(folder / "loop-file")
    (root / "benign" / "loop.png").symlink_to("loop.png")  # a link to itself
    return root


def _symlink_loop_source(folder: Path) -> Path:
    (folder / "loop-source").symlink_to("loop-source")
    return folder / "loop-source"


def _manifest_loop_row(folder: Path) -> Path:
    root = _manifest(folder, _manifest_rows() + [["images/benign/circle.png", "benign", "train"]])
    (root / "images" / "benign" / "circle.png").symlink_to("circle.png")
    return root


def _non_utf8_file(folder: Path) -> Path:
    root = good_classes(folder / "latin1-names")
    data = image_bytes(noise(24, seed=11), "PNG")
    with open(os.path.join(os.fsencode(root / "benign"), b"b\xe9nin.png"), "wb") as handle:
        handle.write(data)
    return root


def _non_utf8_class(folder: Path) -> Path:
    root = good_classes(folder / "latin1-class")
    bad = os.path.join(os.fsencode(root), b"tumeur-b\xe9nigne")
    os.mkdir(bad)
    for i in range(3):
        with open(os.path.join(bad, f"{i}.png".encode()), "wb") as handle:
            handle.write(image_bytes(noise(24, seed=20 + i), "PNG"))
    return root


def _manifest_long_field(folder: Path) -> Path:
    return _manifest(folder, _manifest_rows() + [["images/benign/" + "x" * 200_000 + ".png", "benign", "train"]])


def _manifest_nul(folder: Path) -> Path:
    return _manifest(folder, _manifest_rows() + [["images/benign/benign 0.png\0../../etc/passwd", "benign", "train"]])


DEEP = 1100  # folders inside one class folder: deeper than any stack of recursive calls allows


def _deep_folders(folder: Path) -> Path:
    root = good_classes(folder / "deep")
    fd = os.open(root / "benign", os.O_RDONLY)
    try:
        for _ in range(DEEP):  # relative to the last folder: the whole path is too long for one system call
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        out = os.open("deepest.png", os.O_WRONLY | os.O_CREAT, dir_fd=fd)
        os.write(out, image_bytes(noise(24, seed=30), "PNG"))
        os.close(out)
    finally:
        os.close(fd)
    return root


def remove_tree(path: Path) -> None:
    """Remove a folder of any depth without recursion (shutil.rmtree recurses once per level)."""
    if not os.path.lexists(path):
        return
    root = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        stack = [""]  # folders to empty, relative to the root (a relative path stays short enough)
        while stack:
            rel = stack[-1]
            fd = os.open(rel or ".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=root)
            try:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in os.scandir(fd)]
            finally:
                os.close(fd)
            for name, is_dir in entries:
                if not is_dir:
                    os.unlink(os.path.join(rel, name), dir_fd=root)
            folders = [name for name, is_dir in entries if is_dir]
            if folders:
                stack.append(os.path.join(rel, folders[0]))
                continue
            stack.pop()
            if rel:
                os.rmdir(rel, dir_fd=root)
    finally:
        os.close(root)
    os.rmdir(path)


def _named_pipe(folder: Path) -> Path:
    root = good_classes(folder / "with-pipe")
    os.mkfifo(root / "benign" / "pipe.png")  # opening it would wait for a writer forever
    return root


def _npz_labels(folder: Path, name: str, labels) -> Path:
    images = np.random.default_rng(0).integers(0, 255, (20, 28, 28), dtype=np.uint8)
    return _npz(folder, name, train_images=images, train_labels=np.asarray(labels))


def _npz_channels(folder: Path, name: str, channels: int) -> Path:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (20, 28, 28, channels), dtype=np.uint8)
    if channels in (2, 4):
        images[..., -1] = 255  # opaque
    return _npz(folder, name, train_images=images, train_labels=np.array([0, 1] * 10))


def npz_declaring(folder: Path, name: str, shapes: dict[str, tuple[int, ...]], dtype=np.uint8) -> Path:
    """An .npz whose arrays' headers declare ``shapes`` but hold almost no data (a bomb's headers: the checks
    must refuse it from the headers, before unpacking anything)."""
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, shape in shapes.items():
            buf = io.BytesIO()
            np.lib.format.write_array_header_1_0(buf, {"descr": np.dtype(dtype).str, "fortran_order": False,
                                                       "shape": shape})
            archive.writestr(f"{key}.npy", buf.getvalue() + b"\0" * 4096)
    return path


def _npz_bomb(folder: Path) -> Path:
    # The probe's file: 20 images of 8000x8000 zeros (1.2 MB compressed, 1.28 GB unpacked).
    return npz_declaring(folder, "bomb.npz", {"train_images": (20, 8000, 8000), "train_labels": (20,)})


DATASET_CASES = [
    Case("folder-with-no-images", "dataset", "refused", _no_images, "no-images", ("no usable images",)),
    Case("empty-folder", "dataset", "refused", _empty_folder, "empty-folder", ("no images found",)),
    Case("only-one-class", "dataset", "refused", _one_class, "benign", ("only one class", "at least two classes")),
    Case("classes-differ-between-splits", "dataset", "refused", _classes_differ, "malignant",
         ("classes differ between splits", "malignant=cancer")),
    Case("manifest-points-at-missing-file", "dataset", "skipped", _manifest_missing, "ghost.png",
         ("does not exist", "line 14")),
    Case("manifest-with-unknown-label", "dataset", "refused", _manifest_unknown_label, "split.csv",
         ("'tumour' (in test) is not a class in train",)),
    Case("manifest-duplicate-rows", "dataset", "skipped", _manifest_duplicates, "benign 0.png",
         ("duplicate row", "line 2")),
    Case("manifest-without-path-and-label-columns", "dataset", "refused", _manifest_columns, "labels.csv",
         ("needs columns 'path' and 'label'",)),
    Case("manifest-not-utf8", "dataset", "refused", _manifest_not_utf8, "split.csv", ("not a utf-8",)),
    Case("unicode-and-space-laden-names", "dataset", "accepted", _unicode_names, "恶性 肿瘤"),
    Case("nested-folders", "dataset", "accepted", _nested, "benign"),
    Case("symlink-file-leaving-the-root", "dataset", "skipped", _symlink_file_out, "peek.png",
         ("points outside the dataset folder",)),
    Case("symlink-folders-leaving-the-root", "dataset", "skipped", _symlink_dir_out, "more",
         ("linked folder",)),
    Case("stray-images-masks-and-other-files", "dataset", "skipped", _stray_and_masks, "loose.png",
         ("outside any class folder",)),
    Case("npz-with-wrong-keys", "dataset", "refused", _npz_wrong_keys, "wrongkeys.npz",
         ("no arrays medcls knows as images and labels", "classes, pixels")),
    Case("npz-images-and-labels-disagree", "dataset", "refused", _npz_mismatch, "mismatch.npz",
         ("10 images", "8")),
    Case("npz-holding-pickled-objects", "dataset", "refused", _npz_pickled, "pickled.npz",
         ("not a readable .npz",)),
    Case("npz-that-is-not-an-npz", "dataset", "refused", lambda d: write(d, "fake.npz", b"hello, world"),
         "fake.npz", ("not a readable .npz",)),
    # item 1: .npz decompression bombs, refused from the headers
    Case("npz-decompression-bomb", "dataset", "refused", _npz_bomb, "bomb.npz",
         ("unpack to 1,280 MB", "the limit is 1,074 MB"), item=1),
    Case("npz-one-huge-image", "dataset", "refused",
         lambda d: npz_declaring(d, "huge-image.npz", {"train_images": (2, 9000, 9000), "train_labels": (2,)}),
         "huge-image.npz", ("9000x9000", "over the limit of 64,000,000 pixels"), item=1),
    # item 6: one odd file never fails a dataset
    Case("symlink-loop-file", "dataset", "skipped", _symlink_loop_file, "loop.png",
         ("a link that leads back to itself",), item=6),
    Case("symlink-loop-source-folder", "dataset", "refused", _symlink_loop_source, "loop-source",
         ("a loop of symbolic links", "point at the real folder"), item=6),
    Case("manifest-row-is-a-symlink-loop", "dataset", "skipped", _manifest_loop_row, "circle.png",
         ("a link that leads back to itself",), item=6),
    Case("file-name-not-utf8", "dataset", "skipped", _non_utf8_file, "b\\xe9nin.png",
         ("name is not valid utf-8", "rename it"), item=6),
    Case("class-folder-name-not-utf8", "dataset", "skipped", _non_utf8_class, "tumeur-b\\xe9nigne",
         ("class folder whose name is not valid utf-8", "its images were not used"), item=6),
    Case("manifest-field-over-128-kib", "dataset", "skipped", _manifest_long_field, "split.csv line 14",
         ("195 kib long", "over the 128 kib"), item=6),
    Case("manifest-path-with-nul-byte", "dataset", "skipped", _manifest_nul, "split.csv line 14",
         ("contains a nul character",), item=6),
    Case("folders-nested-1100-deep", "dataset", "skipped", _deep_folders, "/d/d/d",
         ("nested more than 100 deep are not searched",), item=6),
    Case("named-pipe-called-png", "dataset", "skipped", _named_pipe, "pipe.png",
         ("not a regular file",), item=6),
    # item 8: .npz labels and channels
    Case("npz-nan-labels", "dataset", "refused",
         lambda d: _npz_labels(d, "nan-labels.npz", [np.nan, 1.0] * 10), "nan-labels.npz",
         ("train_labels[0] = nan is not a number",), item=8),
    Case("npz-negative-labels", "dataset", "refused",
         lambda d: _npz_labels(d, "negative.npz", [-1, 1] * 10), "negative.npz",
         ("train_labels[0] = -1 is negative",), item=8),
    Case("npz-label-of-a-million", "dataset", "refused",
         lambda d: _npz_labels(d, "million.npz", [0, 1] * 9 + [0, 1_000_000]), "million.npz",
         ("train_labels[19] = 1000000 is 1000 or more",), item=8),
    Case("npz-fractional-labels", "dataset", "refused",
         lambda d: _npz_labels(d, "fraction.npz", [0.5, 1.0] * 10), "fraction.npz",
         ("train_labels[0] = 0.5 is not a whole number",), item=8),
    Case("npz-two-channel-images", "dataset", "accepted", lambda d: _npz_channels(d, "two.npz", 2), "two.npz",
         item=8),
    Case("npz-four-channel-images", "dataset", "accepted", lambda d: _npz_channels(d, "four.npz", 4), "four.npz",
         item=8),
    Case("npz-five-channel-images", "dataset", "refused", lambda d: _npz_channels(d, "five.npz", 5), "five.npz",
         ("images of 5 channels",), item=8),
]


# --- archive cases -----------------------------------------------------------------------------------

def _zip_symlink(folder: Path) -> bytes:
    link = zipfile.ZipInfo("data/benign/passwd.png")
    link.create_system = 3  # unix
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return zip_of([("data/benign/b1.png", image_bytes(noise(24), "PNG")), (link, b"/etc/passwd")])


def _zip_bomb(folder: Path) -> bytes:
    zeros = b"\0" * (20 << 20)  # 20 MB that deflate to about 20 kB
    return zip_of([("data/benign/b1.png", image_bytes(noise(24), "PNG")), ("data/benign/zeros.png", zeros)])


def _zip_total(folder: Path) -> bytes:
    # Headers declaring 3 GB in total (the real data is small): refused before anything is written.
    data = zip_of([("data/benign/a.png", b"x" * 100), ("data/benign/b.png", b"y" * 100)])
    return _patch(data, [(CENTRAL, 24, "<I", 1_500_000_000)])


def _zip_many_files(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for i in range(50_001):
            zf.writestr(f"d/{i}.png", b"")
    return buf.getvalue()


def raw_zip(entries: list[tuple[str, bytes, int, int]]) -> bytes:
    """A deflated zip from already compressed members: (name, deflated bytes, crc32, size). Writing the same
    compressed megabyte a thousand times costs nothing, where zipfile would compress a gigabyte."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, crc, size in entries:
        encoded = name.encode()
        offset = out.tell()
        out.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, crc, len(data), size, len(encoded), 0))
        out.write(encoded + data)
        central.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, crc, len(data), size,
                                  len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    start = out.tell()
    out.write(central.getvalue())
    out.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central.getvalue()),
                          start, 0))
    return out.getvalue()


def _zip_many_mebibytes(folder: Path) -> bytes:
    # The probe's bomb: 1000 entries of exactly 1 MiB of zeros (each under the single-entry check), 1.1 MB.
    zeros = b"\0" * (1 << 20)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = packer.compress(zeros) + packer.flush()
    crc = zlib.crc32(zeros)
    return raw_zip([(f"data/benign/{i}.png", deflated, crc, len(zeros)) for i in range(1000)])


def _zip_file_and_folder(folder: Path) -> bytes:
    png = image_bytes(noise(24), "PNG")
    return zip_of([("data/benign", b"a file named like the folder"), ("data/benign/b1.png", png)])


def _zip_long_name(folder: Path) -> bytes:
    return zip_of([("data/benign/" + "a" * 300 + ".png", image_bytes(noise(24), "PNG"))])


ARCHIVE_CASES = [
    Case("zip-slip-dotdot", "archive", "refused",
         lambda d: zip_of([("data/benign/b1.png", b"x"), ("data/../../evil.sh", b"rm -rf /")]), "../../evil.sh",
         ("'..' in a path",)),
    Case("zip-absolute-path", "archive", "refused", lambda d: zip_of([("/etc/cron.d/evil", b"* * * * * root id")]),
         "/etc/cron.d/evil", ("absolute paths are not allowed",)),
    Case("zip-windows-drive-path", "archive", "refused", lambda d: zip_of([("C:\\Windows\\evil.dll", b"MZ")]),
         "evil.dll", ("absolute paths are not allowed",)),
    Case("zip-with-symlink", "archive", "refused", _zip_symlink, "passwd.png", ("symbolic link",)),
    Case("zip-bomb-ratio", "archive", "refused", _zip_bomb, "zeros.png", ("zip bomb",)),
    Case("zip-bomb-declared-total", "archive", "refused", _zip_total, "3,000 MB", ("the limit is",)),
    Case("zip-too-many-files", "archive", "refused", _zip_many_files, "50,001 files", ("the limit is 50,000",)),
    Case("zip-header-lies-about-size", "archive", "refused",
         lambda d: _patch(_good_zip(), [(LOCAL, 22, "<I", 10), (CENTRAL, 24, "<I", 10)]), "b1.png",
         ("damaged",)),
    Case("zip-encrypted-entry", "archive", "refused",
         lambda d: _patch(_good_zip(), [(LOCAL, 6, "<H", 1), (CENTRAL, 8, "<H", 1)]), "b1.png", ("encrypted",)),
    Case("zip-unknown-compression", "archive", "refused",
         lambda d: _patch(_good_zip(), [(LOCAL, 8, "<H", 99), (CENTRAL, 10, "<H", 99)]), "b1.png",
         ("compression method",)),
    Case("zip-that-is-not-a-zip", "archive", "refused", lambda d: b"%PDF-1.4 not a zip at all", "upload.zip",
         ("not a valid .zip",)),
    Case("zip-cut-off", "archive", "refused", lambda d: _good_zip()[:200], "upload.zip", ("not a valid .zip",)),
    Case("zip-bomb-of-many-one-mib-files", "archive", "refused", _zip_many_mebibytes, "1,049 MB",
         ("possible zip bomb",), item=2),
    Case("zip-file-and-folder-of-one-name", "archive", "refused", _zip_file_and_folder, "data/benign",
         ("a file and a folder with this name",), item=7),
    Case("zip-name-over-255-bytes", "archive", "refused", _zip_long_name, "aaaa",
         ("304 bytes long", "at most 255 bytes"), item=7),
]


# --- config cases ------------------------------------------------------------------------------------

CONFIG_CASES = [
    Case("learning-rate-zero", "config", "refused", lambda d: {"lr": 0.0}, "learning rate", ("greater than 0",)),
    Case("learning-rate-negative", "config", "refused", lambda d: {"lr": -0.01}, "learning rate", ("greater than 0",)),
    Case("epochs-zero", "config", "refused", lambda d: {"epochs": 0}, "epochs", ("at least 1",)),
    Case("image-size-8", "config", "refused", lambda d: {"image_size": 8}, "image size", ("at least 16",)),
    Case("validation-share-out-of-range", "config", "refused", lambda d: {"val_fraction": 1.5}, "validation share",
         ("at most",)),
    Case("dropout-not-a-number", "config", "refused", lambda d: {"dropout": "nan"}, "dropout", ("finite",)),
    Case("momentum-without-sgd", "config", "refused", lambda d: {"momentum": 0.5}, "momentum",
         ("no effect", "sgd")),
    Case("learning-rate-text", "config", "refused", lambda d: {"lr": "fast"}, "learning rate:",
         ("expected a number", "fast")),
    Case("rotation-not-a-number", "config", "refused", lambda d: {"rotate": "nan"}, "max rotation",
         ("expected a finite number",), item=10),
    Case("fc-widths-zero", "config", "refused", lambda d: {"model": "seed_cnn", "fc_widths": "1024, 0"},
         "hidden layer widths", ("at least 1",), item=10),
    Case("fc-widths-text", "config", "refused", lambda d: {"model": "seed_cnn", "fc_widths": "wide"},
         "hidden layer widths:", ("expected a number", "wide"), item=10),
    Case("oversampling-infinite", "config", "refused", lambda d: {"oversample": ("malignant=inf",)},
         "malignant=inf", ("factor from 1 to 1000",), item=10),
    Case("seed-huge", "config", "refused", lambda d: {"seed": "99999999999999999999999"}, "seed",
         ("at most 4,294,967,295", "got 99,999,999,999,999,999,999,999"), item=10),
    Case("model-unknown", "config", "refused", lambda d: {"model": "gpt5"}, "model",
         ("must be one of", "small_cnn", "gpt5"), item=10),
]


def _config_file(folder: Path, text: str, name: str = "config.json") -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


CONFIG_FILE_CASES = [
    Case("config-epochs-1e400", "config_file", "refused", lambda d: _config_file(d, '{"epochs": 1e400}'),
         "for option epochs", ("expected a finite number",), item=10),
    Case("config-nan-literal", "config_file", "refused", lambda d: _config_file(d, '{"lr": NaN}'),
         "for option lr", ("expected a finite number",), item=10),
    Case("config-deeply-nested-lists", "config_file", "refused",
         lambda d: _config_file(d, "[" * 100_000 + "]" * 100_000), "config", ("nested too deeply",), item=10),
    Case("config-is-a-folder", "config_file", "refused", lambda d: (d / "a-run").mkdir() or d / "a-run", "a-run",
         ("is a folder",), item=10),
    Case("config-bad-fc-widths", "config_file", "refused",
         lambda d: _config_file(d, '{"model": "seed_cnn", "model_options": {"fc_widths": [512, -3]}}'),
         "hidden layer widths", ("at least 1", "-3"), item=10),
    Case("config-unknown-model", "config_file", "refused",
         lambda d: _config_file(d, '{"model": "gpt5"}'), "model", ("must be one of", "gpt5"), item=10),
    Case("config-huge-integer", "config_file", "refused",
         lambda d: _config_file(d, '{"seed": 1' + "0" * 5000 + "}"), "config", ("not valid json",), item=10),
]


# --- command lines: a message and a non-zero exit, never a traceback ---------------------------------------

COMMAND_CASES = [
    Case("print-config-with-nan-dropout", "command", "refused",
         lambda d: ["train", "--dropout", "nan", "--print-config"], "dropout:",
         ("expected a finite number",), item=10),
    Case("demo-data-size-100000", "command", "refused", lambda d: ["demo-data", str(d / "demo"), "--size", "100000"],
         "--size 100000", ("32 to 1024 pixels",), item=11),
    Case("demo-data-zero-images", "command", "refused", lambda d: ["demo-data", str(d / "demo"), "--images", "0"],
         "--images 0", ("from 1 to 20,000 images",), item=11),
    Case("demo-data-too-many-pixels", "command", "refused",
         lambda d: ["demo-data", str(d / "demo"), "--images", "20000", "--size", "1024"], "--images 20000",
         ("billion pixels", "the limit is 2 billion"), item=11),
    Case("run-id-ending-in-a-newline", "command", "refused", lambda d: ["predict", "tiny-run\n", "x.png"],
         "invalid run id", ("letters, digits",), item=11),
    Case("resume-a-finished-run", "command", "refused", lambda d: ["resume", "tiny-run"], "tiny-run",
         ("is finished", "only an interrupted run can be resumed"), item=13),
    # Importing a run .zip (python -m medcls import; the Compare page's uploader calls the same function).
    Case("run-zip-with-a-pickle", "command", "refused",
         lambda d: _run_zip(d, [("r1/config.json", b"{}"), ("r1/weights.pkl", b"\x80\x04N.")]), "weights.pkl",
         ("is not a file a medcls run folder holds",)),
    Case("run-zip-with-a-script", "command", "refused",
         lambda d: _run_zip(d, [("r1/config.json", b"{}"), ("r1/predict.py", b"import os")]), "predict.py",
         ("is not a file a medcls run folder holds",)),
    Case("run-zip-dotdot", "command", "refused",
         lambda d: _run_zip(d, [("r1/config.json", b"{}"), ("r1/../../evil.json", b"{}")]), "evil.json",
         ("'..' in a path",)),
    Case("run-zip-absolute-path", "command", "refused",
         lambda d: _run_zip(d, [("/tmp/r1/config.json", b"{}")]), "/tmp/r1/config.json", ("absolute paths",)),
    Case("run-zip-without-weights", "command", "refused",
         lambda d: _run_zip(d, [("r1/config.json", b"{}"), ("r1/status.json", b"{}")]), "best.pt",
         ("only tested runs with their weights",)),
    Case("lesson-that-does-not-exist", "command", "refused", lambda d: ["lesson", "run", "nope"], "nope",
         ("there is no lesson",)),
    Case("export-a-run-that-does-not-exist", "command", "refused",
         lambda d: ["export", "no-such-run", "--out", str(d / "out")], "no-such-run", ("does not exist",)),
]


def _run_zip(folder: Path, entries: list[tuple[str, bytes]]) -> list[str]:
    path = folder / "run.zip"
    path.write_bytes(zip_of(entries))
    return ["import", str(path)]


# --- damaged run files ------------------------------------------------------------------------------------------

def _run_file(name: str, content: str) -> Callable[[Path], tuple[str, str]]:
    return lambda d: (name, content)


RUN_FILE_CASES = [
    Case("status-json-string", "run_file", "damaged", _run_file("status.json", '"x"'), "status.json",
         ("holds str instead of a json object",), item=3),
    Case("status-json-number", "run_file", "damaged", _run_file("status.json", "123"), "status.json",
         ("holds int instead of a json object",), item=3),
    Case("status-json-list", "run_file", "damaged", _run_file("status.json", "[1, 2]"), "status.json",
         ("holds list instead of a json object",), item=3),
    Case("status-json-not-json", "run_file", "damaged", _run_file("status.json", "{'state': "), "status.json",
         ("missing or not valid json",), item=3),
    Case("status-json-unknown-state", "run_file", "damaged", _run_file("status.json", '{"state": "exploded"}'),
         "status.json", ("unknown state 'exploded'",), item=3),
    Case("status-json-created-null", "run_file", "accepted",
         _run_file("status.json", '{"state": "finished", "created": null, "created_ns": "x"}'), "status.json",
         item=3),
    Case("status-json-pid-not-a-number", "run_file", "accepted",
         _run_file("status.json", '{"state": "running", "pid": "abc", "host": "elsewhere"}'), "status.json",
         item=3),
    Case("status-json-pid-infinite", "run_file", "accepted",
         _run_file("status.json", '{"state": "running", "pid": 1e400}'), "status.json", item=3),
    Case("status-json-pid-minus-one", "run_file", "accepted",
         _run_file("status.json", '{"state": "running", "pid": -1}'), "status.json", item=3),
    Case("config-json-damaged", "run_file", "damaged", _run_file("config.json", '{"epochs": "many"'),
         "config.json", ("cannot be read",), item=3),
]


# --- faults (provoked in test_faults.py) ---------------------------------------------------------------------------

FAULTS = {f.id: f for f in (
    Fault("hung-worker", 5, "a worker stopped with SIGSTOP while it trains",
          ("stopped responding", "has not reported for", "resume it from its last finished epoch")),
    Fault("stop-from-another-process", 5, "Stop asked in another process that shares the run store",
          ("stopped on request",)),
    Fault("stop-ignored-by-a-hung-worker", 5, "a hung worker asked to stop by a manager that did not start it",
          ("did not stop by itself within", "was ended")),
    Fault("compare-run-without-test-images", 4, "the newest run was trained with a test share of 0",
          ("finished without test images",)),
    Fault("compare-focus-class-only-one-run-has", 4, "runs with different classes; the focus class is in one",
          ()),
    Fault("compare-run-deleted-while-drawn", 4, "a chosen run's folder is deleted while the page is drawn",
          ("does not exist (or was deleted)", "reload the page")),
    Fault("damaged-run-among-good-ones", 3, "a run with a damaged status.json next to good and queued runs",
          ("this run's files are damaged",)),
    Fault("disk-full-while-training", 11, "the disk fills up while a run writes its files",
          ("disk full:", "mb free in runs_dir")),
    Fault("killed-run-resumed", 13, "a worker killed mid-run, then resumed with one click",
          ("resumed after epoch",)),
    Fault("server-restarted", 13, "the app server is killed mid-run and started again",
          ("server that started this run stopped", "continues from its last finished epoch")),
    Fault("markdown-in-class-names", 9, "a class named [CLICK-ME](https://evil.example/login)", ()),
    Fault("exposed-server-reads-only-uploads", 14, "the app listens on 0.0.0.0 without MEDCLS_DATA_ROOTS",
          ("outside the folders this server may read", "datasets come from uploads only")),
    Fault("upload-quota", 2, "uploads beyond the quota; one in use by a run",
          ("all of them are in use", "medcls_upload_quota_mb")),
    Fault("identical-uploads-at-once", 7, "the same .zip unpacked by two sessions at the same instant", ()),
    Fault("small-dataset-trains", 12, "five images per class with the default settings",
          ("batch size was lowered from 32",)),
    Fault("class-without-training-image", 12, "a class whose only images are in test",
          ("have no training image", "add training images of each class")),
)}

CASES = IMAGE_CASES + DATASET_CASES + ARCHIVE_CASES + CONFIG_CASES + CONFIG_FILE_CASES + COMMAND_CASES + \
    RUN_FILE_CASES


def by_kind(kind: str) -> list[Case]:
    return [c for c in CASES if c.kind == kind]


def case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)


def fault(fault_id: str) -> Fault:
    return FAULTS[fault_id]


def assert_fault_message(text: str, fault_id: str) -> None:
    """``text`` (what the user was shown) holds every fragment of the fault's message."""
    low = text.casefold()
    for fragment in FAULTS[fault_id].message:
        assert fragment.casefold() in low, f"{fault_id}: {fragment!r} missing from: {text}"
