"""Uploaded datasets: a disk quota, the oldest unused removed first, uploads in use kept, deletion on request."""

from __future__ import annotations

import io
import os
import threading
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from medcls.data.uploads import UploadError, Uploads
from medcls.runs.permissions import Identity


def dataset_zip(seed: int, images: int = 4, size: int = 64) -> bytes:
    """A .zip of two class folders of incompressible images (about images * 2 * size^2 bytes). The same seed
    gives the same bytes: entries carry a fixed date, not the clock's (two calls a second apart would otherwise
    be two different uploads)."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in ("benign", "malignant"):
            for i in range(images):
                img = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (size, size), dtype=np.uint8)).save(img, format="BMP")
                zf.writestr(zipfile.ZipInfo(f"set/{name}/{i}.bmp", date_time=(2020, 1, 1, 0, 0, 0)), img.getvalue())
    return buf.getvalue()


def _age(uploads: Uploads, name: str, seconds: float) -> None:
    old = time.time() - seconds
    os.utime(uploads.root / name, (old, old))


@pytest.fixture
def uploads(tmp_path):
    return Uploads(tmp_path / "uploads", quota_mb=0.13, recent_s=60)  # 130 kB: three of the test zips


def test_an_upload_unpacks_once_and_records_its_size(uploads):
    data = dataset_zip(0)
    folder = uploads.add_zip(data, "my set.zip")
    assert folder.name == "set" and sorted(p.name for p in folder.iterdir()) == ["benign", "malignant"]
    assert uploads.add_zip(data, "my set.zip") == folder  # the same upload again: the same folder
    [entry] = uploads.list()
    assert 40_000 < entry.size < 43_000 and entry.kind == "zip" and not entry.in_use


def test_an_upload_is_named_by_the_file_that_was_uploaded(uploads, tmp_path):
    folder = uploads.add_zip(dataset_zip(0), "my-set.zip")  # unpacked into "my-set-<hash>/set"
    assert uploads.file_name_of(folder) == "my-set.zip"
    assert uploads.file_name_of(folder / "benign" / "0.bmp") == "my-set.zip"
    npz = uploads.add_npz(b"not read here", "blood-mnist.npz")  # kept as "<hash>-blood-mnist.npz"
    assert npz.name != "blood-mnist.npz" and uploads.file_name_of(npz) == "blood-mnist.npz"
    assert uploads.file_name_of(tmp_path / "elsewhere") is None


def test_the_oldest_unused_upload_makes_room_first(uploads):
    for i in range(3):
        uploads.add_zip(dataset_zip(i), f"set{i}.zip")
    names = [u.name for u in sorted(uploads.list(), key=lambda u: u.name)]
    for age, name in zip((600, 300, 120), names):  # set0 used longest ago
        _age(uploads, name, age)
    uploads.add_zip(dataset_zip(3), "set3.zip")
    left = {u.name.split("-")[0] for u in uploads.list()}
    assert left == {"set1", "set2", "set3"}
    assert uploads.used_bytes() <= uploads.quota


def test_uploads_in_use_or_used_recently_are_kept_and_the_new_one_is_refused_with_the_reason(tmp_path):
    needed: list[str] = []
    uploads = Uploads(tmp_path / "uploads", quota_mb=0.13, runs_need=lambda: needed, recent_s=60)
    folders = [uploads.add_zip(dataset_zip(i), f"set{i}.zip") for i in range(3)]
    _age(uploads, uploads.upload_of(folders[0]).name, 600)
    _age(uploads, uploads.upload_of(folders[1]).name, 600)
    needed[:] = [str(folders[0]), str(folders[1])]  # runs queued on set0 and set1; set2 shown a moment ago
    with pytest.raises(UploadError, match="all of them are in use.*MEDCLS_UPLOAD_QUOTA_MB"):
        uploads.add_zip(dataset_zip(3), "set3.zip")
    assert {u.name.split("-")[0] for u in uploads.list()} == {"set0", "set1", "set2"}
    assert not any(p.name.startswith("set3") for p in uploads.root.iterdir())  # nothing half-written
    needed.remove(str(folders[1]))  # that run finished
    uploads.add_zip(dataset_zip(3), "set3.zip")
    assert {u.name.split("-")[0] for u in uploads.list()} == {"set0", "set2", "set3"}


def test_an_upload_larger_than_the_whole_quota_is_refused(uploads):
    with pytest.raises(UploadError, match="unpacks to 0.2 MB, more than the 0.1 MB all uploads may use together"):
        uploads.add_zip(dataset_zip(0, images=20), "big.zip")
    assert uploads.list() == []


def test_deleting_an_upload_unless_a_run_needs_it(tmp_path):
    needed: list[str] = []
    uploads = Uploads(tmp_path / "uploads", quota_mb=10, runs_need=lambda: needed)
    folder = uploads.add_zip(dataset_zip(0), "set.zip")
    npz = uploads.add_npz(b"npz bytes", "../../breastmnist.npz")
    assert npz.parent == uploads.root and npz.name.endswith("-breastmnist.npz")
    needed.append(str(folder / "benign"))
    name = uploads.upload_of(folder).name
    with pytest.raises(UploadError, match="used by a run"):
        uploads.delete(name)
    needed.clear()
    uploads.delete(name)
    uploads.delete(npz.name)
    assert uploads.list() == [] and not folder.exists()
    for bad in ("../x", ".lock", "missing"):
        with pytest.raises(UploadError, match="no upload named"):
            uploads.delete(bad)


def test_only_the_people_who_uploaded_it_or_an_instructor_may_delete_an_upload(tmp_path):
    alice, bob, carol = Identity("browser:alice", "Alice"), Identity("browser:bob", "Bob"), Identity("browser:c")
    teacher = Identity("browser:teacher", "Teacher", instructor=True)
    uploads = Uploads(tmp_path / "uploads", quota_mb=10)
    name = uploads.upload_of(uploads.add_zip(dataset_zip(0), "set.zip", by=alice)).name
    uploads.add_zip(dataset_zip(0), "set.zip", by=carol)  # the same file again: one entry, two uploaders
    npz = uploads.add_npz(b"npz bytes", "breastmnist.npz", by=bob)
    (listed_npz,) = [u for u in uploads.list() if u.name == npz.name]
    assert listed_npz.may_delete(bob) and listed_npz.may_delete(teacher) and not listed_npz.may_delete(alice)
    with pytest.raises(PermissionError, match="someone else uploaded it"):
        uploads.delete(name, by=bob)
    assert [u.name for u in uploads.list() if u.name == name]  # still there
    uploads.delete(npz.name, by=teacher)
    uploads.delete(name, by=carol)
    assert uploads.list() == [] and not list((tmp_path / ".uploads-owners").iterdir())  # no stale owner records


def test_the_same_upload_unpacked_by_two_sessions_at_once_ends_in_one_folder(tmp_path):
    data = dataset_zip(0, images=30)
    results, errors = [], []
    barrier = threading.Barrier(4)

    def add():
        barrier.wait()
        try:  # each session its own Uploads, as two app servers would have
            results.append(Uploads(tmp_path / "uploads", quota_mb=100).add_zip(data, "same.zip"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(set(results)) == 1
    assert [p.name for p in (tmp_path / "uploads").iterdir()] == [results[0].parent.name]


def test_two_identical_uploads_racing_without_the_lock_do_not_fail(tmp_path, monkeypatch):
    """extract_zip itself survives the race (the loser's rename meets a full folder: ENOTEMPTY)."""
    from medcls.data import archive

    data = dataset_zip(1, images=30)
    real_replace = os.replace
    gate = threading.Barrier(2)

    def slow_replace(src, dst):
        if str(src).rsplit("/", 1)[-1].startswith(".extract-"):
            gate.wait(10)  # both extractions finished: now both rename, one after the other
        return real_replace(src, dst)

    monkeypatch.setattr(archive.os, "replace", slow_replace)
    results, errors = [], []

    def extract():
        try:
            results.append(archive.extract_zip(data, tmp_path / "u", name="same.zip"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=extract) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(set(results)) == 1
    assert len([p for p in (tmp_path / "u").iterdir()]) == 1  # no temporary folder left behind
