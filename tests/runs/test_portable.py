"""A run travels as a .zip: export, import elsewhere (listed, compared, tried), and unsafe zips refused."""

from __future__ import annotations

import io
import stat
import zipfile

import numpy as np
import pytest

from medcls.analysis.comparison import metrics_rows
from medcls.inference.predictor import Predictor
from medcls.runs.portable import RunImportError, export_run_zip, import_run_zip
from medcls.runs.store import RunStore


def _zip(entries: dict[str, bytes], *, link: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
        if link is not None:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return buffer.getvalue()


def _entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_export_then_import_gives_a_run_that_lists_compares_and_predicts(finished_run, tmp_path):
    store, run_id = finished_run
    data = export_run_zip(store, run_id)
    names = set(_entries(data))
    assert f"{run_id}/best.pt" in names and f"{run_id}/config.json" in names
    assert not {f"{run_id}/heartbeat", f"{run_id}/resume.pt", f"{run_id}/progress.json"} & names

    other = RunStore(tmp_path / "elsewhere")
    new_id = import_run_zip(other, data, "tiny.zip")
    assert new_id == run_id and other.list_ids() == [run_id]
    summary = other.summary(run_id)
    original = store.summary(run_id)
    assert summary.state == "finished" and summary.tested and summary.test_macro_f1 == original.test_macro_f1
    assert summary.name == original.name
    assert other.status(run_id).pid is None and "Imported from tiny.zip." in other.status(run_id).notes
    np.testing.assert_array_equal(other.predictions(run_id).probs, store.predictions(run_id).probs)
    image = store.predictions(run_id).paths[0]
    assert Predictor.from_run(other, run_id).predict(image).probabilities == pytest.approx(
        Predictor.from_run(store, run_id).predict(image).probabilities)

    again = import_run_zip(other, data, "tiny.zip")  # the id is taken: a new id, a name told apart
    assert again != run_id and again.startswith(f"{run_id}-imported-")
    assert set(other.list_ids()) == {run_id, again}
    assert other.summary(again).name == f"{original.name} (2)"
    assert not [p for p in other.root.iterdir() if p.name.startswith(".import-")]  # nothing left behind
    rows = metrics_rows({r: other.metrics(r).test for r in (run_id, again)})  # as Compare's table reads them
    assert len(rows) == 2 and rows[0] == {**rows[1], **{k: v for k, v in rows[0].items() if k == "run"}}



def test_an_import_whose_fresh_id_is_taken_draws_again(finished_run, tmp_path, monkeypatch):
    from medcls.runs import naming

    store, run_id = finished_run
    data = export_run_zip(store, run_id)
    other = RunStore(tmp_path / "elsewhere")
    draws = iter(["aaaa", "aaaa", "bbbb"])
    monkeypatch.setattr(naming.secrets, "token_hex", lambda n: next(draws))
    assert import_run_zip(other, data, "tiny.zip") == run_id  # its own id while free
    assert import_run_zip(other, data, "tiny.zip") == f"{run_id}-imported-aaaa"
    assert import_run_zip(other, data, "tiny.zip") == f"{run_id}-imported-bbbb"  # not over the first copy
    assert len(other.list_ids()) == 3 and all(other.summary(r).tested for r in other.list_ids())


def _refused(store: RunStore, data: bytes, message: str, **kwargs) -> None:
    before = sorted(p.name for p in store.root.iterdir())
    with pytest.raises(RunImportError if "run" in message.lower() or "file" in message else ValueError,
                       match=message):
        import_run_zip(store, data, "bad.zip", **kwargs)
    assert sorted(p.name for p in store.root.iterdir()) == before  # a refused import leaves nothing


@pytest.fixture
def good(finished_run):
    store, run_id = finished_run
    return run_id, _entries(export_run_zip(store, run_id))


def test_unsafe_zips_are_refused(good, tmp_path):
    run_id, entries = good
    target = RunStore(tmp_path / "target")
    _refused(target, _zip({**entries, f"{run_id}/../../evil.json": b"{}"}), r"'\.\.' in a path")
    _refused(target, _zip({**entries, "/etc/cron.d/evil": b"x"}), "absolute paths are not allowed")
    _refused(target, _zip(entries, link=f"{run_id}/metrics.json"), "symbolic link")
    _refused(target, _zip({**entries, f"{run_id}/evil.pkl": b"\x80\x04N."}), "'evil.pkl' is not a file a medcls run")
    _refused(target, _zip({**entries, f"{run_id}/predict.py": b"import os"}), "'predict.py' is not a file")
    _refused(target, _zip({**entries, f"{run_id}/.hidden": b""}), "'.hidden' is not a file")
    _refused(target, _zip({**entries, f"{run_id}/sub/config.json": b"{}"}), "one folder with the run's files")
    _refused(target, _zip({**entries, "other-run/config.json": entries[f"{run_id}/config.json"]}),
             "exactly one run folder")
    _refused(target, _zip(entries), "unpacks to", max_total_bytes=10_000)  # an oversized member
    assert target.list_ids() == []


def test_content_that_could_run_code_or_is_damaged_is_refused(good, tmp_path):
    run_id, entries = good
    target = RunStore(tmp_path / "target")
    # A pickle that calls a function when loaded, in place of the weights: weights_only refuses it.
    evil = b"\x80\x04\x95\x1b\x00\x00\x00\x00\x00\x00\x00\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x02id\x94\x85\x94R\x94."
    buffer = io.BytesIO()
    import torch

    torch.save({"x": torch.zeros(1)}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as inner:  # a torch file whose pickle is replaced
        swapped = io.BytesIO()
        with zipfile.ZipFile(swapped, "w") as out:
            for name in inner.namelist():
                out.writestr(name, evil if name.endswith("data.pkl") else inner.read(name))
    _refused(target, _zip({**entries, f"{run_id}/best.pt": swapped.getvalue()}), "cannot be loaded safely")
    _refused(target, _zip({**entries, f"{run_id}/best.pt": buffer.getvalue()}), "does not fit the model")
    _refused(target, _zip({**entries, f"{run_id}/config.json": b'{"model": "nope"}'}), "not a valid medcls config")
    _refused(target, _zip({**entries, f"{run_id}/model.json": b"[1]"}), "not a JSON object")
    _refused(target, _zip({k: v for k, v in entries.items() if not k.endswith("best.pt")}), "has no best.pt")
    running = entries[f"{run_id}/status.json"].replace(b'"finished"', b'"running"')
    _refused(target, _zip({**entries, f"{run_id}/status.json": running}), "only finished or stopped runs")
    bad_id = {k.replace(run_id, "bad id!"): v for k, v in entries.items()}
    _refused(target, _zip(bad_id), "not a run")
    assert target.list_ids() == []


def test_a_run_naming_server_files_outside_the_allowed_folders_is_refused(finished_run, tmp_path, monkeypatch):
    store, run_id = finished_run
    entries = _entries(export_run_zip(store, run_id))
    secret = tmp_path / "private" / "scan.png"
    secret.parent.mkdir()
    secret.write_bytes(b"not for other users")
    table = entries[f"{run_id}/predictions.csv"].decode()
    header, first, *rest = table.splitlines()
    cells = first.split(",")
    cells[1] = str(secret)
    poisoned = "\n".join([header, ",".join(cells), *rest]) + "\n"
    data = _zip({**entries, f"{run_id}/predictions.csv": poisoned.encode()})
    # The run's own data folder is allowed; the poisoned row's file is not.
    monkeypatch.setenv("MEDCLS_DATA_ROOTS", store.config(run_id).data.source)
    target = RunStore(tmp_path / "target")
    assert import_run_zip(target, _zip(entries), "clean.zip") == run_id
    target.delete(run_id)
    _refused(target, data, f"names {secret}, a file or folder on this server outside the folders it may read")
    monkeypatch.delenv("MEDCLS_DATA_ROOTS")  # a machine that reads any folder: its own files, its own user
    assert import_run_zip(target, data, "mine.zip") == run_id


def test_an_imported_run_belongs_to_the_person_who_imported_it(finished_run, tmp_path):
    """Its owner on the exporting machine means nothing here: the importer may rename or delete it."""
    from medcls.runs.records import RunMeta

    source, exported = finished_run
    data = export_run_zip(source, exported)
    store = RunStore(tmp_path / "elsewhere")
    run_id = import_run_zip(store, data, "run.zip", owner=RunMeta(owner="browser:abc", owner_name="Ana"))
    meta = store.meta(run_id)
    assert (meta.owner, meta.owner_name) == ("browser:abc", "Ana")
