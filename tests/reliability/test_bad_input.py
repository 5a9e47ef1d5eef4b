"""Every case of the bad-input corpus through the real entry points: a clear message, never a traceback.

Library entry points (load_dataset + decode_dataset, Predictor.predict on upload bytes, extract_zip,
TrainConfig/prepare_data) must raise only their documented error types, naming the file and the
reason; an unexpected exception fails the test with its traceback. The pages are checked for a subset:
the Try-it upload, the sidebar's .zip upload and the Data explorer on a folder full of bad files.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import pytest
from reliability_corpus import (
    ARCHIVE_CASES,
    CASES,
    FAULTS,
    IMAGE_CASES,
    Case,
    assert_fault_message,
    by_kind,
    case,
    good_classes,
    noise,
    remove_tree,
    save,
)
from reliability_helpers import ROOT, new_app, texts

from app.text import escape_markdown
from medcls.config import ConfigError, DataConfig, TrainConfig
from medcls.data import DataError, decode_dataset, load_dataset
from medcls.data.archive import ArchiveError, extract_zip
from medcls.data.imageio import ImageReadError, open_image, to_uint8
from medcls.inference.predictor import Predictor
from medcls.jobs.execute import execute_run
from medcls.models import create_model
from medcls.runs.store import RunStore
from medcls.training.pipeline import prepare_data

GOOD_PER_CLASS = 6


def assert_message(message: str, c: Case) -> None:
    """The message names the file (or setting) and gives the reason."""
    low = message.casefold()
    named = c.name.casefold() in low or escape_markdown(c.name).casefold() in low  # pages escape file names
    assert named, f"{c.id}: {c.name!r} not named in: {message}"
    for fragment in c.reason:
        assert fragment.casefold() in low, f"{c.id}: reason {fragment!r} missing from: {message}"


def tiny_train_config(source: Path, **options) -> TrainConfig:
    return TrainConfig(image_size=32, epochs=1, batch_size=4, precision="fp32").with_options(
        source=str(source), **options)


def test_the_corpus_is_big_and_covers_every_kind():
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 25
    assert {c.kind for c in CASES} == {"image", "dataset", "archive", "config", "config_file", "command", "run_file"}
    assert {c.outcome for c in CASES} == {"refused", "skipped", "accepted", "damaged"}


def test_the_corpus_covers_every_item_of_the_second_hardening_round():
    covered = {c.item for c in CASES} | {f.item for f in FAULTS.values()}
    assert set(range(1, 15)) <= covered, f"items without a case: {sorted(set(range(1, 15)) - covered)}"


def test_every_fault_of_the_corpus_is_provoked_by_a_test():
    sources = " ".join(p.read_text(encoding="utf-8") for p in (ROOT / "tests").rglob("test_*.py"))
    missing = [f for f in FAULTS if f'"{f}"' not in sources]
    assert missing == []


@pytest.fixture
def corpus_dir(tmp_path):
    """The folder cases write into; a folder nested deeper than shutil.rmtree can remove is removed here."""
    yield tmp_path
    for deep in tmp_path.rglob("deep"):
        remove_tree(deep)
        break


# --- one odd image file: in a dataset folder, and uploaded on its own ---------------------------------

@pytest.fixture(scope="module")
def predictor() -> Predictor:
    """An (untrained) small CNN behind the same Predictor the Try-it page uses."""
    model = create_model("small_cnn", num_classes=2, image_size=32, in_channels=1)
    return Predictor(model, ["benign", "malignant"], 32, "gray", run_id="corpus")


@pytest.mark.parametrize("c", by_kind("image"), ids=lambda c: c.id)
def test_image_file_dropped_into_a_dataset_folder(c: Case, tmp_path):
    root = good_classes(tmp_path / "data", per_class=GOOD_PER_CLASS)
    bad = c.build(root / "benign")
    spec = load_dataset(DataConfig(source=str(root)))
    decoded = decode_dataset(spec, 16)
    used = {it.path for it in decoded.spec.items}
    listed = [s for s in decoded.spec.report.skipped if Path(s.path).name == bad.name]
    if c.outcome == "accepted":
        assert str(bad) in used and not listed
        assert decoded.images.shape[1:] == (1, 16, 16)
    else:
        assert str(bad) not in used and len(listed) == 1
        assert_message(f"{listed[0].path}: {listed[0].reason}", c)
    # The good images are all still there: one odd file never costs the others.
    assert len(used) == 2 * GOOD_PER_CLASS + (c.outcome == "accepted")


@pytest.mark.parametrize("c", by_kind("image"), ids=lambda c: c.id)
def test_image_file_uploaded_for_a_prediction(c: Case, tmp_path, predictor):
    path = c.build(tmp_path)
    data = path.read_bytes()
    if c.outcome == "accepted":
        prediction = predictor.predict(data, name=path.name)
        assert prediction.label in predictor.classes
        assert abs(sum(prediction.probabilities.values()) - 1.0) < 1e-5
        if c.check:
            c.check(to_uint8(open_image(data, name=path.name), "gray"))
    else:
        with pytest.raises(ImageReadError) as err:
            predictor.predict(data, name=path.name)
        assert err.value.name == path.name
        assert_message(str(err.value), c)


# --- whole datasets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("c", by_kind("dataset"), ids=lambda c: c.id)
def test_dataset(c: Case, corpus_dir):
    source = c.build(corpus_dir)
    cfg = DataConfig(source=str(source))
    if c.outcome == "refused":
        with pytest.raises(DataError) as err:
            decode_dataset(load_dataset(cfg), 16)
        assert_message(str(err.value), c)
        return
    decoded = decode_dataset(load_dataset(cfg), 16)
    report = decoded.spec.report
    if c.outcome == "skipped":
        listed = [s for s in report.skipped if c.name in s.path]
        assert listed, f"{c.name} not in the data report: {report.skipped}"
        assert_message(f"{listed[0].path}: {listed[0].reason}", c)
        assert listed[0].path not in {it.path for it in decoded.spec.items}
        assert sorted(decoded.spec.classes) == ["benign", "malignant"]
        assert len(decoded.spec.items) == 2 * GOOD_PER_CLASS
    else:
        assert not report.skipped
        assert c.name in decoded.spec.classes or any(c.name in it.path for it in decoded.spec.items)
        is_npz = source.suffix == ".npz"
        assert len(decoded.spec.items) == (20 if is_npz else 2 * GOOD_PER_CLASS)
        assert decoded.images.shape[1:] in ((1, 16, 16), (3, 16, 16)) and decoded.images.any()


@pytest.mark.parametrize("case_id", ["unicode-and-space-laden-names", "nested-folders"])
def test_odd_but_valid_datasets_train_and_record_their_files(case_id, tmp_path, store):
    c = case(case_id)
    source = c.build(tmp_path)
    run_id = store.create(tiny_train_config(source))
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    split_csv = store.file(run_id, "split.csv").read_text(encoding="utf-8")
    assert split_csv.count("\n") == 2 * GOOD_PER_CLASS + 1
    assert source.name in split_csv  # unicode and spaces survive into the run's files


def test_manifest_rows_outside_the_allowed_roots_are_skipped(tmp_path, monkeypatch):
    root = good_classes(tmp_path / "allowed" / "data")
    outside = save(tmp_path / "private", "p.png", noise(24))
    rows = [f"{c}/{c} {i}.png,{c}" for c in ("benign", "malignant") for i in range(GOOD_PER_CLASS)]
    (root / "split.csv").write_text("path,label\n" + "\n".join(rows) + f"\n{outside},benign\n", encoding="utf-8")
    monkeypatch.setenv("MEDCLS_DATA_ROOTS", str(tmp_path / "allowed"))
    spec = load_dataset(DataConfig(source=str(root)))
    listed = [s for s in spec.report.skipped if s.path == str(outside)]
    assert listed and "outside the folders this server may read" in listed[0].reason
    assert len(spec.items) == 2 * GOOD_PER_CLASS


# --- archives ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", by_kind("archive"), ids=lambda c: c.id)
def test_archive(c: Case, tmp_path):
    data = c.build(tmp_path)
    uploads = tmp_path / "sandbox" / "uploads"
    with pytest.raises(ArchiveError) as err:
        extract_zip(data, uploads, name="upload.zip")
    assert_message(str(err.value), c)
    # All or nothing: no half-extracted folder, no temporary folder, nothing written beside the sandbox.
    assert list(uploads.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sandbox"]


# --- settings ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", by_kind("config"), ids=lambda c: c.id)
def test_config(c: Case, tmp_path):
    data = good_classes(tmp_path / "data", per_class=GOOD_PER_CLASS)
    with pytest.raises(ConfigError) as err:
        prepare_data(tiny_train_config(data, **c.build(tmp_path)))  # the config itself refuses it
    assert_message(str(err.value), c)


@pytest.mark.parametrize("c", by_kind("config_file"), ids=lambda c: c.id)
def test_config_file(c: Case, tmp_path, capsys):
    from medcls.cli import main

    path = c.build(tmp_path)
    with pytest.raises(ConfigError) as err:
        TrainConfig.load(path)
    assert_message(str(err.value), c)
    assert main(["train", "--config", str(path), "--print-config"]) == 2  # refused before anything is made
    out = capsys.readouterr()
    assert_message(out.err, c)
    assert "Traceback" not in out.err and not out.out


# --- command lines ------------------------------------------------------------------------------------

@pytest.mark.parametrize("c", by_kind("command"), ids=lambda c: c.id)
def test_command(c: Case, tmp_path, finished_run, capsys):
    from medcls.cli import main

    argv = c.build(tmp_path)
    assert main(argv) == 2
    out = capsys.readouterr()
    assert_message(out.err, c)
    assert "Traceback" not in out.err
    assert not (tmp_path / "demo").exists() or not any((tmp_path / "demo").iterdir())  # nothing half-written


def test_a_refused_command_exits_with_a_message_in_a_real_process(tmp_path):
    import subprocess
    import sys

    c = case("print-config-with-nan-dropout")
    proc = subprocess.run([sys.executable, "-m", "medcls", *c.build(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and not proc.stdout
    assert_message(proc.stderr, c)


# --- one damaged run among good ones ---------------------------------------------------------------------

@pytest.fixture
def store_with_a_damaged_run(finished_run):
    """(store, good run, damaged run id, queued run id, case) for a run_file case, in the shared store."""
    import shutil as _shutil

    store, good = finished_run

    def make(c: Case):
        damaged = "damaged-run"
        _shutil.copytree(store.path(good), store.root / damaged)
        (store.root / damaged / "heartbeat").unlink()  # no loop beats for it: a 'running' claim is judged dead
        name, content = c.build(store.root)
        (store.root / damaged / name).write_text(content, encoding="utf-8")
        queued = store.create(tiny_train_config(""), run_id="queued-run")
        return store, good, damaged, queued

    return make


@pytest.mark.parametrize("c", by_kind("run_file"), ids=lambda c: c.id)
def test_a_damaged_run_file_shows_that_run_as_damaged_and_everything_else_goes_on(c, store_with_a_damaged_run,
                                                                                  capsys):
    from medcls.cli import main
    from medcls.jobs.manager import JobManager

    store, good, damaged, queued = store_with_a_damaged_run(c)
    # The command line lists every run; the damaged one with what is wrong.
    assert main(["runs"]) == 0
    out = capsys.readouterr()
    assert "Traceback" not in out.err and good in out.out and queued in out.out and damaged in out.out
    summary = next(s for s in store.list() if s.run_id == damaged)
    if c.outcome == "damaged":
        assert summary.damaged
        assert_message(out.out, c)
    # The job manager starts and starts the queued run.
    started = []

    class Backend:
        name, schedules_itself = "recording", False

        def start(self, store_, run_id):
            started.append(run_id)

            class Handle:
                def is_alive(self):
                    return True

                def kill(self):
                    pass

                def exit_description(self):
                    return ""
            return Handle(), None

    manager = JobManager(store, max_concurrent=2, backend=Backend(), start=False)
    manager.tick()
    assert queued in started  # (a run whose status claims 'running' without a live worker is resumed too)
    manager.shutdown(kill=False)


@pytest.mark.parametrize("case_id", ["status-json-string", "status-json-unknown-state", "config-json-damaged",
                                     "status-json-pid-not-a-number"])
def test_a_damaged_run_on_the_train_and_compare_pages(case_id, app_run):
    c = case(case_id)
    runs, good = app_run
    import shutil as _shutil

    _shutil.copytree(runs / good, runs / "damaged-run")
    name, content = c.build(runs)
    (runs / "damaged-run" / name).write_text(content, encoding="utf-8")
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    at.selectbox(key="train_run_picker").set_value("damaged-run").run()
    assert not at.exception, [e.value for e in at.exception]
    if c.outcome == "damaged":
        assert any(c.reason[0] in e.casefold() for e in texts(at.error)), texts(at.error)
        assert_fault_message(" ".join(texts(at.error)), "damaged-run-among-good-ones")
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    good_name = RunStore(runs).summary(good).name
    assert any(o.startswith(good_name) for o in at.multiselect(key="compare_runs").options)  # still comparable


def test_a_run_whose_batch_is_larger_than_the_data_trains_with_a_smaller_batch_and_says_so(tmp_path, store):
    data = good_classes(tmp_path / "data", per_class=GOOD_PER_CLASS)
    run_id = store.create(tiny_train_config(data, batch_size=500))
    outcome = execute_run(store, run_id)
    status = store.status(run_id)
    assert outcome.state == status.state == "finished", outcome.error
    assert any("batch size was lowered from 500" in note for note in status.notes)


# --- a folder full of bad files: trains, and every file is reported ---------------------------------------

def dirty_dataset(root: Path) -> tuple[Path, list[str], list[str]]:
    """Split folders with every image case dropped into train/benign; (root, refused names, accepted names)."""
    for split, n in (("train", GOOD_PER_CLASS), ("val", 3), ("test", 3)):
        good_classes(root, per_class=n, split=split)
    target = root / "train" / "benign"
    refused, accepted = [], []
    for c in IMAGE_CASES:
        path = c.build(target)
        (accepted if c.outcome == "accepted" else refused).append(path.name)
    # A truncated file that sorts first, so pages that show "the first training image" meet it.
    shutil.copy(target / "truncated.png", target / "000-truncated.png")
    refused.append("000-truncated.png")
    return root, refused, accepted


def test_a_dataset_folder_full_of_bad_files_trains_and_reports_each_one(tmp_path, store):
    root, refused, accepted = dirty_dataset(tmp_path / "dirty")
    run_id = store.create(tiny_train_config(root))
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    reasons = {Path(s.path).name: s.reason for s in store.data_report(run_id).skipped}
    assert sorted(reasons) == sorted(refused)
    for name in refused:
        c = next((c for c in IMAGE_CASES if c.name == name), case("truncated-png"))  # or the 000- copy
        assert_message(f"{name}: {reasons[name]}", dataclasses.replace(c, name=name))
    used = {Path(line.split(",")[0]).name for line in store.file(run_id, "split.csv").read_text().splitlines()[1:]}
    assert set(accepted) <= used and not set(refused) & used


# --- through the pages --------------------------------------------------------------------------------------

def test_data_explorer_on_a_folder_full_of_bad_files(app_env, tmp_path):
    root, refused, _ = dirty_dataset(tmp_path / "dirty")
    at = new_app(timeout=120).run()
    at.sidebar.radio(key="data_kind").set_value("folder").run()
    at.sidebar.text_input(key="data_folder").set_value(str(root)).run()
    assert not at.exception, [e.value for e in at.exception]
    shown = " ".join(texts(at.caption) + texts(at.warning) + texts(at.error))
    skipped = next(df.value for df in at.dataframe if "reason" in df.value.columns)
    shown += " " + " ".join(f"{p}: {r}" for p, r in zip(skipped["file"], skipped["reason"]))
    for name in refused:  # listed as skipped, or as "Not checked" by the duplicate check (name escaped), with its reason
        assert name in shown or escape_markdown(name) in shown, f"{name} is not reported on the Data explorer"


def test_try_it_shows_each_bad_upload_as_a_clear_error(app_run, tmp_path):
    at = new_app().run()
    at.switch_page("app_pages/try_it.py").run()
    assert not at.exception
    for c in [c for c in IMAGE_CASES if c.outcome == "refused"]:
        path = c.build(tmp_path / c.id)
        at.file_uploader(key="try_upload").upload(path.name, path.read_bytes(), "image/png").run()
        assert not at.exception, (c.id, [e.value for e in at.exception])
        errors = texts(at.error)
        assert errors, c.id
        assert_message(errors[0], c)
        assert not [m for m in at.metric if m.label == "Predicted class"], c.id
    # A valid image still works afterwards.
    path = case("cmyk-jpeg").build(tmp_path)
    at.file_uploader(key="try_upload").upload(path.name, path.read_bytes(), "image/jpeg").run()
    assert not at.exception and not at.error
    assert [m for m in at.metric if m.label == "Predicted class"]


def test_try_it_refuses_an_upload_over_its_size_limit(app_run):
    at = new_app().run()
    at.switch_page("app_pages/try_it.py").run()
    # The browser enforces the uploader's 20 MB cap, the server only its global one: the page checks itself.
    at.file_uploader(key="try_upload").upload("big-scan.png", b"\0" * (20 * 1024 * 1024 + 1), "image/png").run()
    assert not at.exception
    errors = texts(at.error)
    assert errors and "big-scan.png" in errors[0] and "over the 20 MB limit" in errors[0]


ZIP_PAGE_CASES = ["zip-slip-dotdot", "zip-with-symlink", "zip-bomb-ratio", "zip-encrypted-entry",
                  "zip-that-is-not-a-zip"]


def test_sidebar_zip_upload_refuses_bad_archives_and_oversize_uploads(app_env, tmp_path, monkeypatch):
    import app.dataset

    monkeypatch.setattr(app.dataset, "MAX_UPLOAD_MB", 1)  # the real cap is 200 MB; the check is the same
    at = new_app().run()
    at.sidebar.radio(key="data_kind").set_value("zip").run()
    for c in [c for c in ARCHIVE_CASES if c.id in ZIP_PAGE_CASES]:
        at.file_uploader(key="data_zip").upload("class-data.zip", c.build(tmp_path), "application/zip").run()
        assert not at.exception, (c.id, [e.value for e in at.exception])
        errors = texts(at.sidebar.error)
        assert errors and "class-data.zip" in errors[0], (c.id, errors)
        if c.name != "upload.zip":  # the library names the upload it was given; the page names the user's file
            assert_message(errors[0], c)
        else:
            assert all(f.casefold() in errors[0].casefold() for f in c.reason)
    uploads = app_env / "data" / "uploads"
    assert not uploads.exists() or [p.name for p in uploads.iterdir()] == []
    at.file_uploader(key="data_zip").upload("huge-data.zip", b"PK" + b"\0" * (1024 * 1024), "application/zip").run()
    assert not at.exception
    errors = texts(at.sidebar.error)
    assert errors and "huge-data.zip" in errors[0] and "over the 1 MB limit" in errors[0]


def test_sidebar_npz_upload_is_size_capped_and_cannot_choose_its_path(app_env, monkeypatch):
    import io

    import numpy as np

    import app.dataset

    monkeypatch.setattr(app.dataset, "MAX_UPLOAD_MB", 1)
    at = new_app().run()
    at.sidebar.radio(key="data_kind").set_value("npz").run()
    at.file_uploader(key="data_npz").upload("big.npz", b"\0" * (1024 * 1024 + 1), "application/octet-stream").run()
    assert not at.exception
    assert any("big.npz" in e and "over the 1 MB limit" in e for e in texts(at.sidebar.error))
    buf = io.BytesIO()
    np.savez(buf, images=np.zeros((4, 8, 8), np.uint8))
    at.file_uploader(key="data_npz").upload("../../../escape.npz", buf.getvalue(), "application/octet-stream").run()
    assert not at.exception
    written = [p for p in app_env.rglob("*escape.npz")]
    assert len(written) == 1 and written[0].parent == app_env / "data" / "uploads"
    assert any("escape.npz" in e and "no arrays medcls knows as images and labels" in e for e in texts(at.error))
    kept_as = written[0].name  # "<content hash>-escape.npz": the person's file is named as they uploaded it
    assert kept_as != "escape.npz" and not any(kept_as in e for e in texts(at.error)), texts(at.error)
    again = new_app()  # a refresh: the URL names the upload, and the sidebar names it as the person's file
    again.query_params.update({"data_kind": "npz", "upload": kept_as})
    again.run()
    assert any("Using the .npz uploaded earlier: `escape.npz`" in c for c in texts(again.sidebar.caption)), \
        texts(again.sidebar.caption)
