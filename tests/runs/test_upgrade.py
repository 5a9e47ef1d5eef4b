"""Runs recorded before datasets were fingerprinted by their files' contents still read as trained on their data."""

from __future__ import annotations

import hashlib
import json
import shutil

from medcls.config import DataConfig, TrainConfig
from medcls.data import load_dataset
from medcls.runs.records import FINGERPRINT_FORMAT


def _legacy_run(store, spec) -> str:
    """A run as medcls wrote it until 2026-12-07: its fingerprint hashed the images' paths, with no format."""
    run_id = store.create(TrainConfig(epochs=1), run_id="old")
    store.write_split(run_id, [(it.path, spec.classes[it.label], it.split) for it in spec.items])
    digest = hashlib.sha256("\x1f".join(spec.classes).encode())
    for it in sorted(spec.items, key=lambda i: i.path):
        digest.update(f"\x1e{it.path}\x1f{it.label}\x1f{it.split}".encode())
    record = {"root": spec.root, "layout": spec.layout, "synthetic": False, "fingerprint": digest.hexdigest()[:16],
              "classes": spec.classes, "counts": spec.counts(), "color": "gray", "focus_class": ""}
    store.file(run_id, "data.json").write_text(json.dumps(record))
    return run_id


def test_an_older_runs_fingerprint_is_recomputed_from_its_files_and_kept(store, split_dataset, tmp_path):
    spec = load_dataset(DataConfig(source=str(split_dataset)))
    run_id = _legacy_run(store, spec)
    copy = tmp_path / "copy"
    shutil.copytree(split_dataset, copy)
    # Read as the data it trained on, and as the same data as a copy of its folder (which it was not before).
    assert store.summary(run_id).data_fingerprint == spec.fingerprint() == \
        load_dataset(DataConfig(source=str(copy))).fingerprint()
    written = json.loads(store.file(run_id, "data.json").read_text())
    assert written["fingerprint"] == spec.fingerprint() and written["fingerprint_format"] == FINGERPRINT_FORMAT


def test_an_older_run_whose_files_are_gone_keeps_its_record(store, split_dataset, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(split_dataset, moved)
    spec = load_dataset(DataConfig(source=str(moved)))
    run_id = _legacy_run(store, spec)
    before = store.file(run_id, "data.json").read_text()
    shutil.rmtree(moved)
    assert store.data_record(run_id).fingerprint == json.loads(before)["fingerprint"]
    assert store.file(run_id, "data.json").read_text() == before
