"""MedMNIST .npz files: checked from their headers, labels validated, images read one at a time from a memory map."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from medcls.config import DataConfig
from medcls.data import DataError, decode_dataset, load_dataset, npz
from medcls.data.imageio import read_image
from medcls.data.spec import item_name


def _write(path, **arrays):
    np.savez_compressed(path, **arrays)
    return path


def _images(n=12, size=28, channels=None, seed=0):
    shape = (n, size, size) if channels is None else (n, size, size, channels)
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def test_headers_are_read_without_unpacking_the_data(tmp_path):
    path = _write(tmp_path / "toy.npz", train_images=_images(), train_labels=np.arange(12) % 2)
    arrays = npz.inspect_npz(path)
    assert arrays["train_images"].shape == (12, 28, 28) and arrays["train_images"].dtype == np.uint8
    assert arrays["train_images"].nbytes == 12 * 28 * 28


def test_the_entry_count_comes_from_the_end_record_and_a_python_without_its_reader_still_reads_files(tmp_path,
                                                                                                     monkeypatch):
    path = _write(tmp_path / "toy.npz", train_images=_images(), train_labels=np.arange(12) % 2)
    with open(path, "rb") as handle:
        assert npz.count_zip_entries(handle) == 2
    # A Python whose zipfile module no longer has the private end-record reader (zipfile itself still works).
    import types

    monkeypatch.setattr(npz, "zipfile", types.SimpleNamespace(ZipFile=zipfile.ZipFile, BadZipFile=zipfile.BadZipFile))
    with open(path, "rb") as handle:
        assert npz.count_zip_entries(handle) is None  # unknown: the directory itself is then read
    assert npz.inspect_npz(path)["train_images"].shape == (12, 28, 28)


def test_a_bomb_is_refused_before_any_memory_is_used(tmp_path, monkeypatch):
    """Headers declaring 1.28 GB (the data itself is 4 kB): refused from the header; nothing is unpacked."""
    import tracemalloc

    path = tmp_path / "bomb.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (20, 8000, 8000)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train_images.npy", header.getvalue() + b"\0" * 4096)
        archive.writestr("train_labels.npy", _npy(np.zeros(20, np.int64)))
    monkeypatch.setattr(npz, "_unpack", lambda *a: pytest.fail("unpacked a bomb"))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="unpack to 1,280 MB.*the limit is 1,074 MB"):
            load_dataset(DataConfig(source=str(path)))
        assert tracemalloc.get_traced_memory()[1] < 20_000_000
    finally:
        tracemalloc.stop()


def test_images_are_read_one_at_a_time_from_a_memory_map(tmp_path):
    images = _images(40)
    path = _write(tmp_path / "toy.npz", train_images=images, train_labels=np.arange(40) % 2)
    assert np.array_equal(read_image(f"{path}::train/7", "gray"), images[7])
    held = npz._images(str(path), path.stat().st_mtime_ns, "train_images")
    assert isinstance(held, np.memmap)  # the array stays on disk; one image is copied out per read
    assert list((npz._cache_folder(path)).glob("*.npy")) == [npz._cache_folder(path) / "train_images.npy"]


def test_a_member_that_unpacks_to_more_than_its_header_says_is_refused(tmp_path):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": (2, 4, 4)})
    path = tmp_path / "liar.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("train_images.npy", buf.getvalue() + b"\0" * 500_000)
        archive.writestr("train_labels.npy", _npy(np.array([0, 1])))
    with pytest.raises(DataError, match="unpacks to more than its header declares"):
        npz._unpack(path, "train_images")


def _npy(array):
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


@pytest.mark.parametrize("labels,words", [
    ([np.nan] + [1.0] * 11, "train_labels[0] = nan is not a number"),
    ([1.0] * 11 + [np.inf], "train_labels[11] = inf is not a number"),
    ([0, 1, -2] + [1] * 9, "train_labels[2] = -2 is negative"),
    ([0.0, 1.5] + [1.0] * 10, "train_labels[1] = 1.5 is not a whole number"),
    ([0, 1] * 5 + [0, 10**6], "train_labels[11] = 1000000 is 1000 or more"),
])
def test_bad_labels_are_refused_naming_the_first_one(tmp_path, labels, words):
    path = _write(tmp_path / "labels.npz", train_images=_images(), train_labels=np.array(labels))
    with pytest.raises(DataError) as err:
        load_dataset(DataConfig(source=str(path)))
    assert words in str(err.value) and "labels.npz" in str(err.value)


def test_keras_style_arrays_are_read_with_their_splits(tmp_path):
    """mnist.npz's naming (x_train, y_train, x_test, y_test), in either case: the test split is kept."""
    train, test = _images(40, seed=1), _images(10, seed=2)
    path = _write(tmp_path / "mnist.npz", X_train=train, y_train=np.arange(40) % 2, X_test=test,
                  y_test=np.arange(10) % 2)
    spec = load_dataset(DataConfig(source=str(path)))
    counts = {split: sum(spec.counts()[split].values()) for split in ("train", "val", "test")}
    assert counts["test"] == 10 and counts["train"] + counts["val"] == 40 and counts["val"] > 0
    assert np.array_equal(read_image(f"{path}::test/3", "gray"), test[3])
    assert any("test images from 'X_test', labels from 'y_test'" in note for note in spec.report.notes)


def test_one_unsplit_pair_is_split_by_medcls(tmp_path):
    images = _images(60, seed=3)
    path = _write(tmp_path / "scans.npz", images=images, labels=np.arange(60) % 3)
    spec = load_dataset(DataConfig(source=str(path)))
    counts = {split: sum(spec.counts()[split].values()) for split in ("train", "val", "test")}
    assert counts["val"] > 0 and counts["test"] > 0 and sum(counts.values()) == 60
    assert "scans.npz: images from 'images', labels from 'labels' (no splits of their own)." in spec.report.notes
    assert "No split given: made a stratified 70%/15%/15% train/val/test split (seed 0)." in spec.report.notes
    first_test = next(it for it in spec.items if it.split == "test")
    index = int(first_test.path.rsplit("/", 1)[1])
    assert np.array_equal(read_image(first_test.path, "gray"), images[index])
    assert item_name(first_test.path) == f"image #{index}"  # not "train #…" for an image in the test split


def test_class_names_as_labels_name_the_classes(tmp_path):
    names = np.array(["malignant", "benign", " normal "] * 4)
    path = _write(tmp_path / "own.npz", images=_images(), labels=names)
    spec = load_dataset(DataConfig(source=str(path)))
    assert spec.classes == ["benign", "malignant", "normal"]  # alphabetical, spaces trimmed
    assert [spec.classes[it.label] for it in sorted(spec.items, key=lambda it: int(it.path.rsplit("/", 1)[1]))] \
        == [n.strip() for n in names]
    bytes_path = _write(tmp_path / "bytes.npz", x_train=_images(), y_train=names.astype("S"))
    assert load_dataset(DataConfig(source=str(bytes_path))).classes == spec.classes


@pytest.mark.parametrize("labels, words", [
    ({"y_train": np.array(["a", "b"] * 6), "y_test": np.arange(12) % 2}, "class names and others class numbers"),
    ({"y_train": np.array(["a", ""] * 6)}, r"y_train\[1\] is an empty class name \(6 such"),
])
def test_bad_class_name_labels_are_refused(tmp_path, labels, words):
    arrays = {"x_train": _images(), **({"x_test": _images()} if "y_test" in labels else {}), **labels}
    with pytest.raises(DataError, match=words):
        load_dataset(DataConfig(source=str(_write(tmp_path / "bad.npz", **arrays))))


def test_class_names_too_wide_to_read_are_refused_from_the_header(tmp_path):
    path = _write(tmp_path / "wide.npz", images=_images(), labels=np.array(["a" * 300, "b"] * 6))
    with pytest.raises(DataError, match="class names up to 1,200 bytes wide; at most 1024 are read"):
        load_dataset(DataConfig(source=str(path)))


def test_a_file_without_known_names_says_which_names_are_read(tmp_path):
    path = _write(tmp_path / "odd.npz", pixels=_images(), classes=np.arange(12) % 2)
    with pytest.raises(DataError, match=r"found: classes, pixels\).*train_images.*x_train and y_train"):
        load_dataset(DataConfig(source=str(path)))


def test_multi_label_files_are_explained(tmp_path):
    path = _write(tmp_path / "chestmnist.npz", train_images=_images(), train_labels=np.zeros((12, 14)))
    with pytest.raises(DataError, match="one class label per image.*Multi-label files are not supported"):
        load_dataset(DataConfig(source=str(path)))


def test_labels_that_skip_numbers_make_only_the_classes_that_occur(tmp_path):
    path = _write(tmp_path / "sparse.npz", train_images=_images(), train_labels=np.array([0, 7] * 6))
    spec = load_dataset(DataConfig(source=str(path)))
    assert spec.classes == ["class_0", "class_7"]
    assert {it.label for it in spec.items} == {0, 1}


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_one_to_four_channels_decode(tmp_path, channels):
    images = _images(12, channels=channels)
    if channels in (2, 4):
        images[..., -1] = 255
        images[0, :, :14, -1] = 0  # the left half of image 0 is transparent: black
    path = _write(tmp_path / f"c{channels}.npz", train_images=images, train_labels=np.arange(12) % 2)
    pixels = read_image(f"{path}::train/0", "rgb" if channels >= 3 else "gray")
    assert pixels.shape == ((28, 28, 3) if channels >= 3 else (28, 28))
    if channels in (2, 4):
        assert pixels[:, :14].max() == 0 and pixels[:, 14:].max() > 0
    decoded = decode_dataset(load_dataset(DataConfig(source=str(path))), 16)
    assert len(decoded.spec.items) == 12 and decoded.images.shape[2:] == (16, 16)


def test_channels_first_images_are_recognised(tmp_path):
    images = _images(12, channels=3)
    path = _write(tmp_path / "first.npz", train_images=np.moveaxis(images, -1, 1).copy(),
                  train_labels=np.arange(12) % 2)
    assert np.array_equal(read_image(f"{path}::train/3", "rgb"), images[3])


def test_float_images_with_nan_pixels_keep_their_contrast_and_all_nan_images_are_skipped(tmp_path):
    images = np.random.default_rng(0).random((12, 28, 28))
    images[0, 0, 0] = np.nan
    images[1] = np.nan
    path = _write(tmp_path / "float.npz", train_images=images, train_labels=np.arange(12) % 2)
    first = read_image(f"{path}::train/0", "gray")
    assert first[0, 0] == 0 and first.max() > 200 and first.std() > 40
    decoded = decode_dataset(load_dataset(DataConfig(source=str(path))), 16)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in decoded.spec.report.skipped}
    assert "no finite pixel values" in reasons["1"] and len(decoded.spec.items) == 11


def test_sixteen_bit_images_are_stretched_not_clipped(tmp_path):
    images = (np.random.default_rng(0).random((12, 28, 28)) * 4000).astype(np.uint16)
    path = _write(tmp_path / "wide.npz", train_images=images, train_labels=np.arange(12) % 2)
    pixels = read_image(f"{path}::train/0", "gray")
    assert pixels.max() == 255 and pixels.min() == 0 and len(np.unique(pixels)) > 100


def test_the_unpacked_cache_is_trimmed_oldest_first(tmp_path, monkeypatch):
    monkeypatch.setattr(npz, "MAX_CACHE_BYTES", 12 * 28 * 28 + 1000)
    paths = [_write(tmp_path / f"f{i}.npz", train_images=_images(seed=i), train_labels=np.arange(12) % 2)
             for i in range(3)]
    for path in paths:
        npz._unpack(path, "train_images")
    kept = [p for p in paths if (npz._cache_folder(p) / "train_images.npy").exists()]
    assert kept == [paths[-1]]


def test_too_many_images_are_refused_from_the_headers(tmp_path, monkeypatch):
    monkeypatch.setattr(npz, "MAX_IMAGES", 10)
    path = _write(tmp_path / "many.npz", train_images=_images(12), train_labels=np.arange(12) % 2)
    with pytest.raises(DataError, match="holds 12 images; the limit is 10"):
        load_dataset(DataConfig(source=str(path)))


def test_decoding_more_than_memory_allows_is_refused_before_decoding(tmp_path, monkeypatch):
    from medcls.data import cache

    monkeypatch.setattr(cache, "MAX_DECODED_BYTES", 12 * 3 * 64 * 64 - 1)
    path = _write(tmp_path / "toy.npz", train_images=_images(12), train_labels=np.arange(12) % 2)
    spec = load_dataset(DataConfig(source=str(path)))
    with pytest.raises(DataError, match="Decoding 12 images at 64 px needs about 0.0 GB of memory"):
        decode_dataset(spec, 64)
    assert len(decode_dataset(spec, 32).spec.items) == 12
