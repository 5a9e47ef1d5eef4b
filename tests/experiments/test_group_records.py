"""Group records (sweeps, lessons): ids that name files safely, atomic round trips, damaged files skipped."""

from __future__ import annotations

import pytest

from medcls.experiments.records import GroupRecords
from medcls.runs.store import RunStore


class OddError(ValueError):
    pass


def test_records_round_trip_list_and_refuse_bad_or_missing_ids(tmp_path):
    store = RunStore(tmp_path / "runs")
    records = GroupRecords("odds", "odd_id", "odd", OddError)
    assert records.all(store) == []  # no folder yet
    records.write(store, "odd-1", {"odd_id": "odd-1", "runs": ["a"]})
    records.write(store, "odd-2", {"odd_id": "odd-2", "runs": []})
    (store.root / "odds" / "damaged.json").write_text("{not json")
    (store.root / "odds" / "foreign.json").write_text('{"other": 1}')
    assert records.read(store, "odd-1") == {"odd_id": "odd-1", "runs": ["a"]}
    assert sorted(r["odd_id"] for r in records.all(store)) == ["odd-1", "odd-2"]
    for bad in ("../odd-1", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(OddError, match="Invalid odd id"):
            records.read(store, bad)
    with pytest.raises(OddError, match="Odd 'odd-9' does not exist"):
        records.read(store, "odd-9")


def test_a_fresh_id_never_names_a_record_that_exists(tmp_path, monkeypatch):
    import medcls.runs.naming as naming

    store = RunStore(tmp_path / "runs")
    records = GroupRecords("odds", "odd_id", "odd", OddError)
    records.write(store, "odd-20261202-140822-64a1", {"odd_id": "odd-20261202-140822-64a1"})
    draws = iter(["64a1", "64a1", "9f00"])  # two groups queued in the same second, the same digits drawn
    monkeypatch.setattr(naming.secrets, "token_hex", lambda n: next(draws))
    assert records.fresh_id(store, "odd-20261202-140822") == "odd-20261202-140822-9f00"
