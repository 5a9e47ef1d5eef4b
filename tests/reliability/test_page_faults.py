"""Faults met through the pages: Compare with odd runs, Markdown in names, small datasets, a full disk,
an exposed server, and the upload quota. Each gives a clear message, never a traceback or an error box."""

from __future__ import annotations

import errno
import io
import re
import shutil
import zipfile

import numpy as np
import pytest
from reliability_corpus import assert_fault_message, fault, good_classes, image_bytes, noise
from reliability_helpers import new_app, texts

from medcls.atomic import atomic_write_with
from medcls.config import TrainConfig
from medcls.data import DataError
from medcls.jobs.execute import execute_run
from medcls.runs.store import RunStore
from medcls.training.pipeline import prepare_data


def tiny(source, **options) -> TrainConfig:
    return TrainConfig(image_size=32, epochs=2, batch_size=4, precision="fp32").with_options(source=str(source),
                                                                                            **options)


def trained(store: RunStore, run_id: str, cfg: TrainConfig) -> str:
    store.create(cfg, run_id=run_id)
    outcome = execute_run(store, run_id)
    assert outcome.state == "finished", outcome.error
    return run_id


# --- Compare ------------------------------------------------------------------------------------------------

def test_compare_with_a_newest_run_that_has_no_test_images(app_env, tmp_path):
    store = RunStore(app_env / "runs")
    data = good_classes(tmp_path / "data", per_class=10)
    trained(store, "a-with-test", tiny(data))
    trained(store, "b-without-test", tiny(data, test_fraction=0.0))  # the newest: preselected before the fix
    at = new_app().run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, [e.value for e in at.exception]
    assert_fault_message(" ".join(texts(at.caption)), "compare-run-without-test-images")
    assert len(at.multiselect(key="compare_runs").options) == 1  # the run with test images is compared
    assert at.get("plotly_chart")


def test_compare_runs_with_different_classes_and_a_focus_class_only_one_has(app_env, tmp_path):
    fault("compare-focus-class-only-one-run-has")
    store = RunStore(app_env / "runs")
    trained(store, "three", tiny(good_classes(tmp_path / "d3", classes=("benign", "malignant", "normal"))))
    trained(store, "two", tiny(good_classes(tmp_path / "d2", classes=("benign", "cyst"))))
    at = new_app().run()
    at.switch_page("app_pages/compare.py").run()
    at.multiselect(key="compare_runs").set_value(["three", "two"]).run()
    assert not at.exception, [e.value for e in at.exception]
    for focus in ("normal", "cyst"):  # each class only one run has
        at.selectbox(key="compare_focus").set_value(focus).run()
        assert not at.exception, (focus, [e.value for e in at.exception])
        at.radio(key="cal_kind").set_value(at.radio(key="cal_kind").options[1]).run()
        assert not at.exception, (focus, [e.value for e in at.exception])
        for run_id in ("three", "two"):
            at.selectbox(key="analysis_run").set_value(run_id).run()
            assert not at.exception, (focus, run_id, [e.value for e in at.exception])
        at.radio(key="cal_kind").set_value(at.radio(key="cal_kind").options[0]).run()
    assert not at.error, texts(at.error)


def test_a_run_folder_deleted_while_compare_draws_it_gives_a_message(app_env, tmp_path, monkeypatch):
    store = RunStore(app_env / "runs")
    data = good_classes(tmp_path / "data", per_class=10)
    trained(store, "kept", tiny(data))
    trained(store, "doomed", tiny(data, seed=1))
    at = new_app().run()
    at.switch_page("app_pages/compare.py").run()
    at.multiselect(key="compare_runs").set_value(["kept", "doomed"]).run()
    assert not at.exception
    real_history = RunStore.history
    reads = []

    def history_then_gone(self, run_id):  # someone deletes the run after the page listed it, while it draws
        reads.append(run_id)
        if run_id == "doomed" and reads.count("doomed") == 2 and (self.root / "doomed").exists():
            shutil.rmtree(self.root / "doomed")
        return real_history(self, run_id)

    monkeypatch.setattr(RunStore, "history", history_then_gone)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert_fault_message(" ".join(texts(at.info)), "compare-run-deleted-while-drawn")
    monkeypatch.setattr(RunStore, "history", real_history)
    at.run()  # the next render shows what is there
    assert not at.exception and not at.error


# --- Markdown injection --------------------------------------------------------------------------------------

EVIL = "[CLICK-ME](https:evil.example)"  # a folder name cannot hold '/', so the link has none
UNESCAPED = re.compile(r"(?<!\\)\[CLICK")


def _markdown_texts(at) -> list[str]:
    """Every text Streamlit renders as Markdown on the page: bodies, alerts, captions, metrics, image captions,
    widget labels and help, radio options."""
    out = texts_raw(at.markdown) + texts_raw(at.caption) + texts_raw(at.error) + texts_raw(at.warning) \
        + texts_raw(at.info) + texts_raw(at.success)
    out += [m.proto.body for m in at.get("metric")] + [m.proto.label for m in at.get("metric")]
    out += [img.caption for element in at.get("image") for img in element.proto.imgs]
    for kind in ("selectbox", "multiselect", "radio", "slider", "button", "toggle", "checkbox", "text_input",
                 "number_input"):
        for widget in at.get(kind):
            out += [str(getattr(widget, "label", "")), str(getattr(widget.proto, "help", ""))]
    out += [o for radio in at.get("radio") for o in radio.options]
    return out


def texts_raw(elements) -> list[str]:
    return [str(e.value) for e in elements]


def test_a_class_name_with_a_markdown_link_is_shown_as_text_everywhere(app_env, tmp_path):
    fault("markdown-in-class-names")
    store = RunStore(app_env / "runs")
    data = good_classes(tmp_path / "data", classes=("benign", EVIL), per_class=10)
    run_id = trained(store, "evil-run", tiny(data))
    store.set_meta(run_id, store.meta(run_id).__class__(name="**bold** [run](https:evil.example)"))
    at = new_app(timeout=120).run()
    at.sidebar.radio(key="data_kind").set_value("folder").run()
    at.sidebar.text_input(key="data_folder").set_value(str(data)).run()
    for page in ("app_pages/data.py", "app_pages/train.py", "app_pages/compare.py", "app_pages/try_it.py"):
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        shown = _markdown_texts(at)
        assert any("CLICK" in t for t in shown) or page == "app_pages/compare.py", page  # the name is shown...
        leaks = [t for t in shown if UNESCAPED.search(t) or "**bold**" in t]
        assert leaks == [], (page, leaks)  # ...but never as Markdown
    at.switch_page("app_pages/try_it.py").run()
    at.radio(key="try_source").set_value("Pick one from the current dataset").run()
    evil_index = next(i for i, label in enumerate(at.selectbox(key="try_pick_test").options) if "CLICK" in label)
    at.selectbox(key="try_pick_test").set_value(evil_index).run()
    assert not at.exception
    leaks = [t for t in _markdown_texts(at) if UNESCAPED.search(t)]
    assert leaks == []


# --- small datasets ------------------------------------------------------------------------------------------

def test_five_images_per_class_train_with_the_default_settings(store, tmp_path):
    data = good_classes(tmp_path / "five", classes=("benign", "malignant", "normal"), per_class=5, size=48)
    run_id = store.create(TrainConfig(epochs=2).with_options(source=str(data)))  # defaults otherwise
    outcome = execute_run(store, run_id)
    status = store.status(run_id)
    assert outcome.state == status.state == "finished", outcome.error
    assert_fault_message(" ".join(status.notes), "small-dataset-trains")


def test_a_class_without_a_training_image_is_refused_with_the_fix(tmp_path):
    path = tmp_path / "split-classes.npz"
    images = np.random.default_rng(0).integers(0, 255, (12, 28, 28), dtype=np.uint8)
    np.savez(path, train_images=images[:8], train_labels=np.array([0, 1] * 4),
             test_images=images[8:], test_labels=np.array([0, 1, 2, 2]))
    with pytest.raises(DataError) as err:
        prepare_data(tiny(path))
    assert "class_2" in str(err.value)
    assert_fault_message(str(err.value), "class-without-training-image")


# --- a full disk ---------------------------------------------------------------------------------------------

def test_a_full_disk_fails_the_run_with_room_left_and_no_traceback(app_env, tmp_path, monkeypatch, capsys):
    from medcls.cli import main

    data = good_classes(tmp_path / "data", per_class=10)
    real_save = RunStore.save_weights

    def no_room(self, run_id, state):  # the disk fills up while the checkpoint is written
        def write(handle):
            raise OSError(errno.ENOSPC, "No space left on device")
        atomic_write_with(self.file(run_id, "best.pt"), write)

    monkeypatch.setattr(RunStore, "save_weights", no_room)
    code = main(["train", "--data", str(data), "--image-size", "32", "--epochs", "2", "--batch-size", "4",
                 "--precision", "fp32", "--run-id", "full-disk"])
    out = capsys.readouterr()
    assert code == 1 and "Traceback" not in out.err
    assert_fault_message(out.err, "disk-full-while-training")
    store = RunStore(app_env / "runs")
    assert_fault_message(store.raw_status("full-disk").error, "disk-full-while-training")
    monkeypatch.setattr(RunStore, "save_weights", real_save)
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    assert any("disk full" in e for e in texts(at.error))


# --- a server others can reach -------------------------------------------------------------------------------

def _zip_of_classes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c, name in enumerate(("bright", "dark")):
            for i in range(6):
                zf.writestr(f"set/{name}/{i}.png", image_bytes(noise(24, level=60 + 120 * c, seed=10 * c + i), "PNG"))
    return buf.getvalue()


def test_an_exposed_server_reads_only_uploads_and_shows_no_server_paths(app_env, tmp_path, monkeypatch):
    import streamlit as st

    server_folder = good_classes(tmp_path / "usr-share", per_class=6)
    real_get_option = st.get_option
    monkeypatch.setattr(st, "get_option", lambda key: "0.0.0.0" if key == "server.address" else real_get_option(key))
    at = new_app().run()
    at.sidebar.radio(key="data_kind").set_value("folder").run()
    at.sidebar.text_input(key="data_folder").set_value(str(server_folder)).run()
    assert not at.exception
    errors = texts(at.error)
    assert_fault_message(" ".join(errors), "exposed-server-reads-only-uploads")
    assert "MEDCLS_DATA_ROOTS" in " ".join(errors)
    # An upload works, and the page names it by the setting, not by its path on the server.
    at.sidebar.radio(key="data_kind").set_value("zip").run()
    at.file_uploader(key="data_zip").upload("my set.zip", _zip_of_classes(), "application/zip").run()
    assert not at.exception and not at.error, texts(at.error)
    everything = " ".join(texts(at.markdown) + texts(at.caption) + texts(at.sidebar.caption))
    assert "DATA_DIR/uploads/my_set-" in everything
    assert str(app_env) not in everything and str(tmp_path) not in everything


def test_the_operator_can_let_an_exposed_server_read_its_folders(app_env, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDCLS_EXPOSED", "1")
    monkeypatch.setenv("MEDCLS_ALLOW_SERVER_FOLDERS", "1")
    folder = good_classes(tmp_path / "server-data", per_class=6)
    at = new_app().run()
    at.sidebar.radio(key="data_kind").set_value("folder").run()
    at.sidebar.text_input(key="data_folder").set_value(str(folder)).run()
    assert not at.exception and not at.error, texts(at.error)


# --- the upload quota ----------------------------------------------------------------------------------------

def _zip(seed: int) -> bytes:
    """About 1.1 MB of class folders (incompressible pixels)."""
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in ("bright", "dark"):
            for i in range(6):
                zf.writestr(f"set/{name}/{i}.bmp", image_bytes(noise(300, seed=int(rng.integers(1e6))), "BMP"))
    return buf.getvalue()


def test_uploads_beyond_the_quota_are_refused_until_one_is_deleted(app_env, monkeypatch):
    first, second = _zip(1), _zip(2)
    monkeypatch.setenv("MEDCLS_UPLOAD_QUOTA_MB", str(len(first) * 1.5 / 1e6))  # room for one of them
    assert len(first) > 1e6
    at = new_app().run()
    at.sidebar.radio(key="data_kind").set_value("zip").run()
    at.file_uploader(key="data_zip").upload("first.zip", first, "application/zip").run()
    assert not at.exception and not at.sidebar.error, texts(at.sidebar.error)
    at.file_uploader(key="data_zip").upload("second.zip", second, "application/zip").run()
    assert not at.exception
    errors = texts(at.sidebar.error)
    assert errors and "second.zip" in errors[0]
    assert_fault_message(errors[0], "upload-quota")  # the first one is in use: shown a moment ago
    uploads = sorted(p.name for p in (app_env / "data" / "uploads").iterdir())
    assert len(uploads) == 1 and uploads[0].startswith("first-")
    # Delete the first one in the sidebar; the second then fits.
    at.button(key=f"delete_upload_{uploads[0]}").click().run()
    assert not at.exception
    assert not (app_env / "data" / "uploads" / uploads[0]).exists()
    at.file_uploader(key="data_zip").upload("second.zip", second, "application/zip").run()
    assert not at.exception and not at.sidebar.error, texts(at.sidebar.error)
    assert [p.name.split("-")[0] for p in (app_env / "data" / "uploads").iterdir()] == ["second"]


def test_another_persons_upload_cannot_be_deleted_in_the_sidebar(app_env):
    at = new_app().run()
    at.sidebar.radio(key="data_kind").set_value("zip").run()
    at.file_uploader(key="data_zip").upload("set.zip", _zip_of_classes(), "application/zip").run()
    (name,) = [p.name for p in (app_env / "data" / "uploads").iterdir()]
    assert not at.button(key=f"delete_upload_{name}").disabled  # the uploader may
    other = new_app()  # another browser (another identity cookie)
    other.session_state["data_kind"] = "zip"
    other.run()
    button = other.button(key=f"delete_upload_{name}")
    assert button.disabled and "Someone else uploaded it" in button.help
    assert any("uploaded by someone else" in c for c in texts(other.sidebar.caption))


def test_the_same_zip_uploaded_twice_reuses_one_folder(app_env):
    fault("identical-uploads-at-once")  # the race itself: tests/data/test_uploads.py
    data = _zip_of_classes()
    for _ in range(2):
        at = new_app().run()
        at.sidebar.radio(key="data_kind").set_value("zip").run()
        at.file_uploader(key="data_zip").upload("set.zip", data, "application/zip").run()
        assert not at.exception and not at.error
    assert len(list((app_env / "data" / "uploads").iterdir())) == 1
