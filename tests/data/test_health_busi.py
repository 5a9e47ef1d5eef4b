"""Data health on the real BUSI dataset: its known duplicates and label conflicts are found."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from medcls.config import DataConfig
from medcls.data import load_dataset
from medcls.data.health import (
    check_duplicates,
    clear_hash_memory,
    random_split_leak,
    split_leak,
)

BUSI = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "busi"

pytestmark = [pytest.mark.busi,
              pytest.mark.skipif(not (BUSI / "split.csv").is_file(), reason="BUSI is not in ../shared/datasets")]


@pytest.fixture(scope="module")
def busi_report(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("MEDCLS_CACHE_DIR", str(tmp_path_factory.mktemp("busi-cache")))
    clear_hash_memory()
    try:
        spec = load_dataset(DataConfig(source=str(BUSI)))
        start = time.perf_counter()
        report = check_duplicates(spec)
        seconds = time.perf_counter() - start
        yield spec, report, seconds
    finally:
        clear_hash_memory()
        mp.undo()


def _names(group) -> set[str]:
    return {Path(it.path).name for it in group.items}


def test_benign_433_is_malignant_145(busi_report):
    spec, report, _ = busi_report
    group = next(g for g in report.groups if "benign (433).png" in _names(g))
    assert "malignant (145).png" in _names(group)
    assert group.identical and group.conflict
    assert [spec.classes[k] for k in group.labels] == ["benign", "malignant"]


def test_busi_has_many_duplicates_and_several_label_conflicts(busi_report):
    spec, report, seconds = busi_report
    assert report.checked == len(spec.items) == 780
    # Pawłowska et al. (2023) report about 19% of BUSI duplicated; near-identical frames add more.
    assert 0.15 <= report.redundant_images / len(spec.items) <= 0.35
    assert len(report.conflicts) >= 5
    pairs = [_names(g) for g in report.conflicts]
    assert any({"benign (399).png", "malignant (93).png"} <= p for p in pairs)
    assert seconds < 60  # a few seconds on an idle 2-core machine; generous for a shared one


def test_busi_fixed_split_leaks_and_a_random_split_would_too(busi_report):
    spec, report, _ = busi_report
    leak = split_leak(report.group_of, [it.split for it in spec.items])
    assert leak.test_images == 118 and leak.test_in_train >= 20
    random = random_split_leak(report.group_of, [it.label for it in spec.items], seeds=range(3))
    assert random.test_in_train >= 20


def test_on_busi_the_fingerprint_alone_is_beyond_chance(busi_report):
    """BUSI's unrelated scans are far apart, so the pixel check rejects none of its 10-bit pairs."""
    _, report, _ = busi_report
    assert report.levels.hash_trusted(10) and report.rejected_pairs == 0
    assert report.levels.typical_bits >= 25
