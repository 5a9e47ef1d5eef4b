"""Caches keep to a size by removing the least recently used entries (files or folders)."""

from __future__ import annotations

import os

from medcls.data.disk_budget import entry_size, trim_oldest


def _entry(path, size: int, age_s: float, folder: bool = False):
    target = path / "data.bin" if folder else path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"x" * size)
    os.utime(path, (path.stat().st_atime - age_s, path.stat().st_mtime - age_s))
    return path


def test_the_oldest_go_first_until_the_rest_fit(tmp_path):
    old = _entry(tmp_path / "old", 100, 300, folder=True)
    mid = _entry(tmp_path / "mid.npz", 100, 200)
    new = _entry(tmp_path / "new", 100, 100, folder=True)
    assert entry_size(old) == 100
    assert trim_oldest([old, mid, new], 250) == [old]
    assert not old.exists() and mid.exists() and new.exists()
    assert trim_oldest([mid, new], 1000) == []  # fits: nothing to do


def test_the_entry_just_written_stays_even_alone_over_the_limit(tmp_path):
    just_written = _entry(tmp_path / "big.npz", 500, 1000)  # oldest by its time, but about to be read
    other = _entry(tmp_path / "other.npz", 100, 10)
    assert trim_oldest([just_written, other], 200, keep=just_written) == [other]
    assert just_written.exists()
