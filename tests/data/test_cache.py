"""The decoded-image cache: decode once per (content, size, colour), memory and disk, invalidation."""

from __future__ import annotations

import numpy as np
import pytest

import medcls.data.cache as cache
from medcls.config import DataConfig
from medcls.data import decode_dataset, load_dataset
from medcls.data.cache import clear_memory_cache
from medcls.settings import cache_dir


def _spec(root, **kw):
    return load_dataset(DataConfig(source=str(root), **kw))


@pytest.fixture
def count_decodes(monkeypatch):
    calls = []
    real = cache.decode_resized

    def counting(path, size, color):
        calls.append(path)
        return real(path, size, color)

    monkeypatch.setattr(cache, "decode_resized", counting)
    return calls


def _refuse_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("decoded again although the cache should have answered")

    monkeypatch.setattr(cache, "decode_resized", refuse)


def test_decoded_images_are_uint8_channel_first_and_aligned_with_items(class_dataset):
    decoded = decode_dataset(_spec(class_dataset), 20)
    assert decoded.images.dtype == np.uint8 and decoded.images.shape == (36, 1, 20, 20)
    assert decoded.image_size == 20 and decoded.color == "gray" and decoded.channels == 1
    assert decoded.nbytes() == 36 * 20 * 20
    train = decoded.split("train")
    assert train.images.dtype.is_floating_point is False and train.images.shape[1:] == (1, 20, 20)
    assert train.labels.tolist() == [it.label for it in decoded.spec.items if it.split == "train"]
    assert train.paths == [it.path for it in decoded.spec.items if it.split == "train"]
    assert len(train) + len(decoded.split("val")) + len(decoded.split("test")) == 36


def test_second_decode_hits_the_disk_cache(class_dataset, monkeypatch, count_decodes):
    spec = _spec(class_dataset)
    first = decode_dataset(spec, 24)
    assert len(count_decodes) == 36
    assert len(list((cache_dir() / "decoded").glob("*.npz"))) == 1
    clear_memory_cache()
    _refuse_decoding(monkeypatch)
    second = decode_dataset(_spec(class_dataset), 24)
    assert np.array_equal(first.images, second.images)
    assert [i.path for i in first.spec.items] == [i.path for i in second.spec.items]


def test_memory_cache_answers_without_the_disk(class_dataset, monkeypatch):
    first = decode_dataset(_spec(class_dataset), 24)
    for f in (cache_dir() / "decoded").glob("*.npz"):
        f.unlink()
    _refuse_decoding(monkeypatch)
    assert np.array_equal(decode_dataset(_spec(class_dataset), 24).images, first.images)


def test_disk_cache_can_be_switched_off(class_dataset, count_decodes):
    decode_dataset(_spec(class_dataset), 24, disk_cache=False)
    assert not (cache_dir() / "decoded").exists() or not list((cache_dir() / "decoded").iterdir())
    clear_memory_cache()
    decode_dataset(_spec(class_dataset), 24, disk_cache=False)
    assert len(count_decodes) == 72


def test_changed_file_content_invalidates_the_cache(class_dataset, synth, count_decodes):
    spec = _spec(class_dataset)
    first = decode_dataset(spec, 24)
    target = spec.items[0].path
    synth.image(type(class_dataset)(target), 32, level=250, seed=99)  # same name, new pixels
    clear_memory_cache()
    second = decode_dataset(_spec(class_dataset), 24)
    assert len(count_decodes) == 72  # decoded again
    index = [i.path for i in second.spec.items].index(target)
    assert not np.array_equal(first.images[index], second.images[index])
    assert second.images[index].mean() > first.images[index].mean()


def test_a_new_size_or_colour_is_a_new_entry(class_dataset, count_decodes):
    spec = _spec(class_dataset)
    a = decode_dataset(spec, 16)
    b = decode_dataset(spec, 20)
    c = decode_dataset(spec, 16, "rgb")
    assert (a.images.shape[-1], b.images.shape[-1]) == (16, 20)
    assert c.images.shape == (36, 3, 16, 16) and c.color == "rgb"
    assert len(count_decodes) == 3 * 36


def test_auto_colour_is_gray_for_gray_data_and_rgb_for_colourful_data(tmp_path, synth):
    gray_root = tmp_path / "gray"
    colour_root = tmp_path / "colour"
    for c, name in enumerate(["a", "b"]):
        for i in range(6):
            # Gray content stored as RGB files still counts as gray.
            synth.image(gray_root / name / f"{i}.png", 24, mode="RGB", seed=c * 10 + i)
            synth.image(colour_root / name / f"{i}.png", 24, color=(255, 80 + 60 * c, 20), seed=c * 10 + i)
    gray = decode_dataset(_spec(gray_root), 16)
    colour = decode_dataset(_spec(colour_root), 16)
    assert gray.color == "gray" and gray.images.shape[1] == 1
    assert colour.color == "rgb" and colour.images.shape[1] == 3
    forced = decode_dataset(_spec(colour_root), 16, "gray")
    assert forced.images.shape[1] == 1


def test_auto_gray_matches_pillow_luma(tmp_path, synth):
    root = tmp_path / "d"
    for name in ("a", "b"):
        for i in range(6):
            synth.image(root / name / f"{i}.png", 16, mode="RGB", seed=i)
    decoded = decode_dataset(_spec(root), 16)
    from PIL import Image

    path = decoded.spec.items[0].path
    expected = np.asarray(Image.open(path).convert("L"))
    assert np.abs(decoded.images[0, 0].astype(int) - expected.astype(int)).max() <= 1


def test_decode_failures_are_reported_and_remembered_by_the_cache(class_dataset, monkeypatch):
    bad = class_dataset / "benign" / "zz broken.png"
    good = (class_dataset / "benign" / "benign (0).png").read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    decoded = decode_dataset(_spec(class_dataset), 24)
    assert [s.path for s in decoded.spec.report.skipped] == [str(bad)]
    assert str(bad) not in [i.path for i in decoded.spec.items]
    assert decoded.images.shape[0] == len(decoded.spec.items) == 36
    # A run on it records the dataset that was chosen: the sidebar's listing has the same fingerprint.
    assert decoded.spec.fingerprint() == _spec(class_dataset).fingerprint()
    clear_memory_cache()
    _refuse_decoding(monkeypatch)
    again = decode_dataset(_spec(class_dataset), 24)
    assert [s.path for s in again.spec.report.skipped] == [str(bad)]


def test_unexpected_decoder_errors_only_drop_that_file(class_dataset, monkeypatch):
    real = cache.decode_resized
    victim = str(class_dataset / "normal" / "normal (3).png")

    def flaky(path, size, color):
        if path == victim:
            raise MemoryError("boom")
        return real(path, size, color)

    monkeypatch.setattr(cache, "decode_resized", flaky)
    decoded = decode_dataset(_spec(class_dataset), 24, disk_cache=False)
    assert len(decoded.spec.items) == 35
    assert "MemoryError" in decoded.spec.report.skipped[0].reason


def test_unreadable_cache_file_is_ignored(class_dataset, count_decodes):
    decode_dataset(_spec(class_dataset), 24)
    for f in (cache_dir() / "decoded").glob("*.npz"):
        f.write_bytes(b"garbage")
    clear_memory_cache()
    decoded = decode_dataset(_spec(class_dataset), 24)
    assert decoded.images.shape == (36, 1, 24, 24)
    assert len(count_decodes) == 72


def test_progress_is_reported_up_to_the_total(class_dataset):
    seen = []
    decode_dataset(_spec(class_dataset), 24, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (36, 36)
    seen.clear()
    decode_dataset(_spec(class_dataset), 24, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(36, 36)]  # a cache hit reports completion at once


def test_the_disk_cache_keeps_to_its_size_removing_the_least_recently_used(class_dataset, monkeypatch):
    import os

    spec = _spec(class_dataset)
    folder = cache_dir() / "decoded"
    decode_dataset(spec, 16)
    first = next(folder.glob("*.npz"))
    decode_dataset(spec, 18)
    second = next(p for p in folder.glob("*.npz") if p != first)
    for age, path in ((300, first), (200, second)):  # as if written minutes apart
        os.utime(path, (path.stat().st_atime - age, path.stat().st_mtime - age))
    # Room for the two: reading the first makes it the most recently used, so the second goes.
    room = first.stat().st_size + second.stat().st_size
    monkeypatch.setenv("MEDCLS_IMAGE_CACHE_MB", str(room / 2**20))
    clear_memory_cache()
    decode_dataset(spec, 16)
    decode_dataset(spec, 14)  # smaller than either: with it, one of them must go
    assert first.exists() and not second.exists()
    assert len(list(folder.glob("*.npz"))) == 2
    # A cache of 0 MB keeps only the entry just written (it is about to be read by the training worker).
    monkeypatch.setenv("MEDCLS_IMAGE_CACHE_MB", "0")
    decode_dataset(spec, 12)
    assert len(list(folder.glob("*.npz"))) == 1
