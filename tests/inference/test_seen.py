"""Did this run learn from this image? Paths and byte-identical uploads of its training and validation files."""

from __future__ import annotations

import csv
from pathlib import Path

from medcls.inference.seen import learned_from, seen_sentence


def _rows(store, run_id) -> list[dict[str, str]]:
    with open(store.file(run_id, "split.csv"), newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_training_files_are_known_by_path_and_by_their_bytes(finished_run):
    store, run_id = finished_run
    rows = _rows(store, run_id)
    train = next(r["path"] for r in rows if r["split"] == "train")
    val = next(r["path"] for r in rows if r["split"] == "val")
    test = next(r["path"] for r in rows if r["split"] == "test")
    seen = learned_from(store, run_id)
    assert seen.folds == 0 and len(seen.splits) == len(rows)
    assert seen.split_of(path=train) == (train, "train")
    assert seen.split_of(path=val) == (val, "val")
    assert seen.split_of(path=test) is None  # the test images are what the model never saw
    upload = Path(train).read_bytes()
    assert seen.split_of(data=upload) == (train, "train")  # the same file uploaded again
    assert seen.split_of(data=upload[:-1] + bytes([upload[-1] ^ 1])) is None  # any other bytes are not matched
    assert seen.split_of(data=Path(test).read_bytes()) is None


def test_a_moved_training_file_is_still_known_by_its_path(finished_run):
    store, run_id = finished_run
    train = next(r["path"] for r in _rows(store, run_id) if r["split"] == "train")
    data = Path(train).read_bytes()
    Path(train).rename(train + ".moved")
    try:
        seen = learned_from(store, run_id)
        assert seen.split_of(path=train) == (train, "train") and seen.split_of(data=data) is None
    finally:
        Path(train + ".moved").rename(train)


def test_the_sentence_says_how_the_run_used_the_image():
    one = seen_sentence(("/data/benign/benign (3).png", "train"), folds=0)
    assert one.startswith("This is benign (3).png, one of the images this run learned from: this run trained on it.")
    assert "what the model remembers, not how it does on new images" in one
    assert "chose its best epoch" in seen_sentence(("/d/a.png", "val"), folds=0)
    folds = seen_sentence(("/d/a.png", "val"), folds=5)
    assert "4 of this run's 5 fold models trained on it, and the other one chose its best epoch with it" in folds
    assert seen_sentence(("/d/a.png", "train"), folds=5) == folds  # the folds split train + val alike
