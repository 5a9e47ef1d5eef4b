"""On the real BUSI breast-ultrasound data (read in place from ../shared, never copied).

Skipped when the dataset is absent. One epoch at 64 px is only a sanity check of the whole
pipeline on real files, not a quality bar.
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from medcls.config import DataConfig, TrainConfig
from medcls.data import decode_dataset, load_dataset
from medcls.jobs.execute import execute_run

REPO = Path(__file__).resolve().parents[2]
BUSI = (REPO / ".." / "shared" / "datasets" / "busi").resolve()
MANIFEST = BUSI / "split.csv"

pytestmark = [
    pytest.mark.busi,
    pytest.mark.slow,
    pytest.mark.skipif(not MANIFEST.is_file(), reason=f"BUSI dataset not found at {MANIFEST}"),
]


def _manifest_rows():
    with open(MANIFEST, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_busi_loads_through_its_split_manifest():
    rows = _manifest_rows()
    spec = load_dataset(DataConfig(source=str(MANIFEST)))
    assert spec.layout == "manifest" and not spec.synthetic
    assert spec.classes == ["benign", "malignant", "normal"]
    assert len(spec.items) == len(rows) == 780
    sizes = {s: len(spec.split(s)) for s in ("train", "val", "test")}
    assert sizes == {"train": 546, "val": 116, "test": 118}
    assert sizes == dict(Counter(r["split"] for r in rows))
    by_path = {str((BUSI / r["path"]).resolve()): (r["label"], r["split"]) for r in rows}
    for it in spec.items:
        assert by_path[str(Path(it.path).resolve())] == (spec.classes[it.label], it.split)
    assert load_dataset(DataConfig(source=str(BUSI))).counts() == spec.counts()  # the folder finds split.csv


def test_one_epoch_on_busi_gives_sane_metrics(store):
    cfg = TrainConfig(image_size=64, epochs=1, batch_size=32, precision="fp32").with_options(source=str(MANIFEST))
    run_id = store.create(cfg)
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    test = store.metrics(run_id).test
    assert test.n == 118 and np.array(test.confusion_matrix).sum() == 118
    assert 0.0 <= test.accuracy <= 1.0 and 0.0 <= test.macro_f1 <= 1.0
    assert sum(c.support for c in test.per_class.values()) == 118
    predictions = store.predictions(run_id, "test")
    assert predictions.classes == ["benign", "malignant", "normal"] and len(predictions) == 118
    assert np.allclose(predictions.probs.sum(axis=1), 1.0, atol=1e-4)
    assert store.data_report(run_id).skipped == []
    assert store.model_record(run_id).color == "gray"  # ultrasound is gray
    # Nothing was copied out of the shared folder: the run refers to the files in place.
    with open(store.file(run_id, "split.csv"), newline="") as handle:
        paths = [r["path"] for r in csv.DictReader(handle)]
    assert len(paths) == 780 and all(Path(p).resolve().is_relative_to(BUSI) for p in paths)
    # Every image decoded (the run's decode is reused from the in-memory cache here).
    decoded = decode_dataset(load_dataset(cfg.data), 64)
    assert decoded.images.shape == (780, 1, 64, 64) and decoded.images.dtype == np.uint8

