"""Security: safe checkpoint loading, upload and archive limits, allowed data roots, run ids that stay in
the store, and a server that binds to localhost with XSRF protection on.

Most checks run the library and the pages in-process; the last two ask the real ``streamlit run``
server of the load test (the ``live_app`` fixture), which reads .streamlit/config.toml like any
deployment.
"""

from __future__ import annotations

import ast
import io
import os
import tomllib
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image
from reliability_corpus import good_classes, image_bytes, noise, png_declaring, zip_of
from reliability_helpers import ROOT, new_app, texts

from medcls.config import DataConfig
from medcls.data import load_dataset
from medcls.data.archive import ArchiveError, extract_zip
from medcls.data.imageio import ImageReadError, open_image
from medcls.inference.predictor import load_predictor
from medcls.models import create_model
from medcls.models.resnet import WeightsUnavailableError
from medcls.runs.store import (
    CheckpointError,
    InvalidRunIdError,
    RunNotFoundError,
    RunStore,
)
from medcls.settings import PathNotAllowedError

CODE_FOLDERS = ("medcls", "app", "pages")


def python_files():
    for folder in CODE_FOLDERS:
        yield from sorted((ROOT / folder).rglob("*.py"))
    yield ROOT / "streamlit_app.py"


# --- checkpoints ----------------------------------------------------------------------------------------

def test_every_torch_load_in_the_code_passes_weights_only_true():
    calls = []
    for path in python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch":
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", safe))
            if isinstance(node, ast.Attribute) and node.attr in ("load", "loads") \
                    and isinstance(node.value, ast.Name) and node.value.id in ("pickle", "dill", "joblib"):
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}", False))
    assert calls, "expected at least the run store's torch.load"
    assert [where for where, safe in calls if not safe] == []


class RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")  # a full pickle load would create this file


def test_a_swapped_malicious_checkpoint_runs_no_code_and_the_page_explains(app_run, tmp_path):
    runs, run_id = app_run
    store = RunStore(runs)
    marker = tmp_path / "pwned"
    torch.save({"weight": RunsCodeWhenUnpickled(marker)}, store.file(run_id, "best.pt"))
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        store.load_weights(run_id)
    assert not marker.exists()
    at = new_app().run()
    at.switch_page("app_pages/try_it.py").run()  # the page loads the newest run's weights at once
    assert not at.exception
    assert any(run_id in e and "cannot be loaded safely" in e for e in texts(at.error))
    assert not marker.exists()


def test_damaged_and_mismatched_checkpoints_are_refused_with_a_reason(finished_run):
    store, run_id = finished_run
    good = store.file(run_id, "best.pt").read_bytes()
    store.file(run_id, "best.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="cannot be loaded safely"):
        load_predictor(store, run_id)
    torch.save({"features.0.weight": torch.zeros(3)}, store.file(run_id, "best.pt"))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        load_predictor(store, run_id)
    torch.save([1, 2, 3], store.file(run_id, "best.pt"))
    with pytest.raises(CheckpointError, match="does not hold model weights"):
        store.load_weights(run_id)


def test_checkpoints_load_only_from_inside_the_run_store(finished_run, tmp_path):
    store, run_id = finished_run
    outside = tmp_path / "elsewhere.pt"
    os.replace(store.file(run_id, "best.pt"), outside)
    store.file(run_id, "best.pt").symlink_to(outside)
    with pytest.raises(CheckpointError, match="outside the run store"):
        store.load_weights(run_id)
    # A run folder that is a link out of the store is not a run at all.
    elsewhere = tmp_path / "linked-run"
    os.replace(store.path(run_id), elsewhere)
    (store.root / run_id).symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(InvalidRunIdError, match="outside the run store"):
        store.load_weights(run_id)
    assert store.list_ids() == [] and store.list() == []


BAD_RUN_IDS = ["../runs", "..", ".", "", "/etc", "a/b", "a\\b", "../../etc/passwd", ".hidden", "-rf", "x" * 200,
               "run\x00id", "run id", "%2e%2e"]


@pytest.mark.parametrize("run_id", BAD_RUN_IDS)
def test_user_given_run_ids_cannot_leave_the_run_store(store, run_id):
    with pytest.raises(InvalidRunIdError):
        store.path(run_id)
    with pytest.raises(InvalidRunIdError):
        store.load_weights(run_id)
    with pytest.raises((InvalidRunIdError, RunNotFoundError)):
        load_predictor(store, run_id)


@pytest.mark.parametrize("name", ["../config.json", "/etc/passwd", "..", "a/b.pt", ".hidden", "", "sub\\x"])
def test_file_names_inside_a_run_must_be_plain(finished_run, name):
    store, run_id = finished_run
    with pytest.raises(InvalidRunIdError):
        store.file(run_id, name)


def test_the_cli_refuses_a_run_id_outside_the_store_with_a_message(store, capsys, tmp_path):
    from medcls.cli import main

    code = main(["predict", "../../etc", str(tmp_path / "x.png")])
    assert code == 2
    err = capsys.readouterr().err
    assert "Invalid run id" in err and "Traceback" not in err


# --- uploads and archives -----------------------------------------------------------------------------------

def test_pillows_bomb_limit_stays_on_even_when_medcls_allows_more_pixels():
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS <= 200_000_000
    bomb = png_declaring(10_000, 10_000)  # 100 MP: above Pillow's warning limit of ~89 MP
    with pytest.raises(ImageReadError, match="decompression bomb"):
        open_image(bomb, name="bomb.png", max_pixels=10 ** 12)


def test_no_code_disables_pillows_decompression_bomb_check():
    for path in python_files():
        text = path.read_text(encoding="utf-8")
        assert "MAX_IMAGE_PIXELS = None" not in text and "LOAD_TRUNCATED_IMAGES = True" not in text, path


def test_upload_caps_are_set_for_every_uploader():
    import app.dataset

    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert 0 < config["server"]["maxUploadSize"] <= 200
    assert app.dataset.MAX_UPLOAD_MB <= config["server"]["maxUploadSize"]
    for path in sorted((ROOT / "app").glob("*.py")) + sorted((ROOT / "pages").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert text.count("file_uploader(") == text.count("max_upload_size="), path
        assert text.count("file_uploader(") <= text.count("upload_too_large("), f"{path}: size not checked"


def test_zip_extraction_stays_under_the_data_folder_whatever_the_upload_is_called(tmp_path):
    data = zip_of([("set/benign/b.png", image_bytes(noise(24), "PNG")), ("set/malignant/m.png", b"x")])
    root = tmp_path / "data" / "uploads"
    for name in ("../../../evil.zip", "/etc/cron.d/x.zip", "..", "ok.zip"):
        folder = extract_zip(data, root, name=name)
        assert folder.resolve().is_relative_to(root.resolve()), (name, folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_zip_caps_apply_to_the_bytes_actually_written(tmp_path):
    data = zip_of([(f"d/{i}.png", os.urandom(300_000)) for i in range(4)])  # 1.2 MB, incompressible
    with pytest.raises(ArchiveError, match="the limit is"):
        extract_zip(data, tmp_path / "u", max_total_bytes=1_000_000)
    with pytest.raises(ArchiveError, match="3 files; the limit is 2"):
        extract_zip(zip_of([("a", b"1"), ("b", b"2"), ("c", b"3")]), tmp_path / "u", max_files=2)
    assert list((tmp_path / "u").iterdir()) == []


def test_a_good_zip_upload_unpacks_into_the_apps_data_folder(app_env, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for c, name in enumerate(("bright", "dark")):
            for i in range(8):
                zf.writestr(f"set/{name}/{i}.png", image_bytes(noise(24, level=60 + 120 * c, seed=100 * c + i), "PNG"))
    at = new_app().run()
    at.sidebar.radio(key="data_kind").set_value("zip").run()
    at.file_uploader(key="data_zip").upload("my set.zip", buf.getvalue(), "application/zip").run()
    assert not at.exception and not at.error, texts(at.error)
    folders = [p for p in (app_env / "data" / "uploads").iterdir()]
    assert len(folders) == 1 and (folders[0] / "set" / "bright").is_dir()
    assert any(str(folders[0] / "set") in m for m in texts(at.markdown) + texts(at.caption))


# --- allowed data roots -----------------------------------------------------------------------------------------

@pytest.fixture
def roots(tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    inside = good_classes(allowed / "inside")
    outside = good_classes(tmp_path / "private")
    monkeypatch.setenv("MEDCLS_DATA_ROOTS", str(allowed))
    return allowed, inside, outside


def test_allowed_roots_refuse_folders_outside_with_a_message(roots):
    allowed, inside, outside = roots
    assert len(load_dataset(DataConfig(source=str(inside))).items) == 12
    for source in (outside, outside / "benign", inside / ".." / ".." / "private", Path("/etc")):
        with pytest.raises(PathNotAllowedError, match="outside the folders this server may read") as err:
            load_dataset(DataConfig(source=str(source)))
        assert str(source) in str(err.value) and "MEDCLS_DATA_ROOTS" in str(err.value)
    (allowed / "sneaky").symlink_to(outside, target_is_directory=True)  # a link inside pointing out
    with pytest.raises(PathNotAllowedError):
        load_dataset(DataConfig(source=str(allowed / "sneaky")))


def test_allowed_roots_also_cover_npz_files_and_weights_files(roots, tmp_path):
    allowed, _, outside = roots
    npz = tmp_path / "private" / "breastmnist.npz"
    npz.write_bytes(b"not read")
    with pytest.raises(PathNotAllowedError):
        load_dataset(DataConfig(source=str(npz)))
    weights = tmp_path / "private" / "resnet.pth"
    torch.save({}, weights)
    with pytest.raises(WeightsUnavailableError, match="outside the folders this server may read"):
        create_model("resnet18", num_classes=2, image_size=32, in_channels=1, weights=str(weights))


def test_the_app_refuses_a_folder_outside_the_allowed_roots(roots, app_env, monkeypatch):
    allowed, inside, outside = roots
    at = new_app().run()
    at.sidebar.radio(key="data_kind").set_value("folder").run()
    at.sidebar.text_input(key="data_folder").set_value(str(outside)).run()
    assert not at.exception
    assert any("outside the folders this server may read" in e and str(outside) in e for e in texts(at.error))
    at.sidebar.text_input(key="data_folder").set_value(str(inside)).run()
    assert not at.exception and not at.error


# --- the server -----------------------------------------------------------------------------------------------

def test_the_shipped_config_binds_localhost_and_keeps_protections_on():
    config = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["address"] == "127.0.0.1"
    assert config["server"]["enableXsrfProtection"] is True
    assert config["server"].get("enableCORS", True) is True
    assert config["client"]["toolbarMode"] == "viewer"  # no "Clear cache" for visitors
    assert config["client"]["showErrorDetails"] == "none"  # no tracebacks in the browser
    assert config["server"]["fileWatcherType"] == "none" and config["server"]["runOnSave"] is False


def _listening(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (from /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.mark.slow
def test_the_running_server_listens_on_localhost_only(live_app):
    addresses = _listening(live_app.port)
    assert addresses == {"0100007F"}, f"listening on {addresses} (0100007F is 127.0.0.1)"


@pytest.mark.slow
def test_the_running_server_refuses_uploads_without_an_xsrf_token(live_app):
    request = urllib.request.Request(f"{live_app.url}/_stcore/upload_file/some-session/some-file", method="PUT",
                                     data=b"--x--", headers={"Content-Type": "multipart/form-data; boundary=x"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 403
