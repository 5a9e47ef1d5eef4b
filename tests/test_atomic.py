"""Crash-safe writes: the old file survives a failed write, readers survive torn files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from medcls.atomic import (
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    atomic_write_with,
    read_json,
    read_jsonl,
)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_writes_create_parent_folders_and_content(tmp_path):
    target = tmp_path / "a" / "b" / "file.bin"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    atomic_write_text(target, "héllo")
    assert target.read_text(encoding="utf-8") == "héllo"
    assert _leftovers(target.parent) == []


def test_written_files_are_readable_like_normal_files(tmp_path):
    target = atomic_write_text(tmp_path / "f.txt", "x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o644 & ~umask


def test_failed_write_callback_keeps_the_previous_file_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "status.json"
    atomic_write_json(target, {"state": "running"})

    def broken(handle):
        handle.write(b'{"state": "fin')
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write_with(target, broken)
    assert read_json(target) == {"state": "running"}
    assert _leftovers(tmp_path) == []


def test_unserialisable_json_keeps_the_previous_file(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(target, {"bad": object()})
    assert read_json(target) == {"ok": 1}
    assert _leftovers(tmp_path) == []


def test_json_handles_numpy_paths_and_sets(tmp_path):
    target = atomic_write_json(tmp_path / "x.json", {
        "arr": np.arange(3), "scalar": np.float32(0.5), "path": Path("/a/b"), "set": {"b", "a"}})
    assert json.loads(target.read_text()) == {"arr": [0, 1, 2], "scalar": 0.5, "path": "/a/b", "set": ["a", "b"]}


def test_read_json_returns_default_for_missing_or_corrupt_files(tmp_path):
    assert read_json(tmp_path / "missing.json", {"d": 1}) == {"d": 1}
    corrupt = tmp_path / "c.json"
    corrupt.write_text('{"torn": ')
    assert read_json(corrupt, "default") == "default"
    binary = tmp_path / "b.json"
    binary.write_bytes(b"\xff\xfe\x00")
    assert read_json(binary) is None


def test_jsonl_reader_ignores_a_torn_last_line_and_non_objects(tmp_path):
    path = tmp_path / "history.jsonl"
    append_jsonl(path, {"epoch": 1, "loss": 0.9})
    append_jsonl(path, {"epoch": 2, "loss": np.float64(0.5)})
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("[1, 2]\n\n")          # valid JSON but not a record
        handle.write('{"epoch": 3, "lo')    # killed mid-write
    records = read_jsonl(path)
    assert records == [{"epoch": 1, "loss": 0.9}, {"epoch": 2, "loss": 0.5}]
    assert read_jsonl(tmp_path / "missing.jsonl") == []
