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
- ``config``: training options for ``TrainConfig`` (and ``prepare_data`` where the data decides).

Builders take the folder to write into and return what to feed the entry point.
"""

from __future__ import annotations

import csv
import io
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

KINDS = ("image", "dataset", "archive", "config")
OUTCOMES = ("refused", "skipped", "accepted")


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    outcome: str
    build: Callable[[Path], Any]
    name: str                          # the file, folder or setting the message must name
    reason: tuple[str, ...] = ()       # fragments of the reason (case-insensitive), all required
    check: Callable[[Any], None] | None = None  # extra check of an accepted image's decoded pixels (H, W[, 3])

    def __post_init__(self):
        assert self.kind in KINDS and self.outcome in OUTCOMES, self
        assert self.outcome == "accepted" or self.reason, f"{self.id}: say which reason must be shown"


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
    return _npz(folder, "wrongkeys.npz", images=np.zeros((10, 28, 28), np.uint8), labels=np.zeros(10, np.int64))


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
         ("lacks the medmnist keys", "images, labels")),
    Case("npz-images-and-labels-disagree", "dataset", "refused", _npz_mismatch, "mismatch.npz",
         ("10 images", "8")),
    Case("npz-holding-pickled-objects", "dataset", "refused", _npz_pickled, "pickled.npz",
         ("not a readable .npz",)),
    Case("npz-that-is-not-an-npz", "dataset", "refused", lambda d: write(d, "fake.npz", b"hello, world"),
         "fake.npz", ("not a readable .npz",)),
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
]

CASES = IMAGE_CASES + DATASET_CASES + ARCHIVE_CASES + CONFIG_CASES


def by_kind(kind: str) -> list[Case]:
    return [c for c in CASES if c.kind == kind]


def case(case_id: str) -> Case:
    return next(c for c in CASES if c.id == case_id)
