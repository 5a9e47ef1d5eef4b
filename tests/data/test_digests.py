"""Content digests: the same bytes give the same digest wherever they lie, and a changed file is read again."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from medcls.config import DataConfig
from medcls.data import digests, load_dataset
from medcls.data.digests import clear_digest_memory, content_digest


@pytest.fixture(autouse=True)
def _fresh_memory():
    clear_digest_memory()
    yield
    clear_digest_memory()


def test_same_bytes_same_digest_and_npz_members_keep_their_name(tmp_path):
    a, b = tmp_path / "a.bin", tmp_path / "sub" / "b.bin"
    b.parent.mkdir()
    a.write_bytes(b"pixels")
    b.write_bytes(b"pixels")
    assert content_digest(str(a)) == content_digest(str(b))
    assert content_digest(f"{a}::train/3") == f"{content_digest(str(a))}::train/3"
    with pytest.raises(OSError):
        content_digest(str(tmp_path / "missing.bin"))


def test_a_file_is_read_once_until_it_changes(tmp_path, monkeypatch):
    path = tmp_path / "a.bin"
    path.write_bytes(b"one")
    reads = []
    real = digests._read_digest
    monkeypatch.setattr(digests, "_read_digest", lambda file: reads.append(file) or real(file))
    first = content_digest(str(path))
    assert content_digest(str(path)) == first and len(reads) == 1
    path.write_bytes(b"two!")
    os.utime(path, ns=(1, 1))  # even with an old time: its size changed
    assert content_digest(str(path)) != first and len(reads) == 2


def _npz(path, labels):
    rng = np.random.default_rng(0)
    np.savez(path, **{f"{s}_images": rng.integers(0, 255, (len(labels), 28, 28), dtype=np.uint8) for s in
                      ("train", "val", "test")},
             **{f"{s}_labels": np.array(labels).reshape(-1, 1) for s in ("train", "val", "test")})
    return path


def _fingerprint(source) -> str:
    return load_dataset(DataConfig(source=str(source))).fingerprint()


def test_a_dataset_is_what_its_files_hold_not_where_they_lie(tmp_path):
    # The same .npz trained from its path and uploaded in the app (kept as '<hash>-name.npz') is one dataset.
    labels = [0, 1, 2] * 6
    original = _npz(tmp_path / "toy.npz", labels)
    uploaded = tmp_path / "uploads" / "3b1e3ae009f0-toy.npz"
    uploaded.parent.mkdir()
    shutil.copyfile(original, uploaded)
    assert _fingerprint(original) == _fingerprint(uploaded)
    (tmp_path / "other").mkdir()
    relabelled = _npz(tmp_path / "other" / "toy.npz", [0, 1, 2] * 5 + [1, 0, 2])  # the same pictures, two swapped
    assert _fingerprint(relabelled) != _fingerprint(original)


def test_a_folder_copied_elsewhere_is_the_same_dataset_until_an_image_changes(split_dataset, tmp_path):
    copy = tmp_path / "elsewhere" / "copy"
    shutil.copytree(split_dataset, copy)
    assert _fingerprint(copy) == _fingerprint(split_dataset)
    image = next(copy.glob("train/*/*.png"))
    image.write_bytes(next(copy.glob("val/*/*.png")).read_bytes())  # another picture, same place and label
    assert _fingerprint(copy) != _fingerprint(split_dataset)
