"""The TorchScript export predicts what medcls predicts, also through predict.py without medcls."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from io import BytesIO

import numpy as np
import pytest
import torch

from medcls.analysis.metrics import probability_percent
from medcls.config import TrainConfig
from medcls.inference.export import ExportedModel, export_torchscript, torchscript_zip
from medcls.inference.predictor import Predictor
from medcls.inference.proba import predict_proba
from medcls.models import create_model, list_models
from medcls.models.ensemble import FoldEnsemble

NO_MEDCLS = ("import runpy, sys; sys.modules['medcls'] = None; "  # any 'import medcls' now fails
             "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')")


@pytest.fixture
def exported(finished_run, tmp_path):
    store, run_id = finished_run
    return store, run_id, export_torchscript(store, run_id, tmp_path / "export")


def test_the_torchscript_model_matches_medcls_on_the_test_images(exported):
    store, run_id, folder = exported
    assert sorted(p.name for p in folder.iterdir()) == ["classes.json", "model.pt", "predict.py"]
    extra = {"classes.json": ""}
    model = torch.jit.load(str(folder / "model.pt"), _extra_files=extra)
    info = json.loads(extra["classes.json"])
    assert info == json.loads((folder / "classes.json").read_text())
    predictor = Predictor.from_run(store, run_id)
    assert info["classes"] == predictor.classes and info["image_size"] == predictor.image_size
    assert info["color"] == predictor.color and info["tta"] == predictor.tta
    paths = store.predictions(run_id, "test").paths
    assert len(paths) >= 3
    pixels = np.stack([predictor.pixels(p) for p in paths])
    with torch.no_grad():
        ours = model(torch.from_numpy(pixels)).numpy()
    theirs = np.stack([predictor.probabilities(p) for p in pixels])
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    np.testing.assert_allclose(ours.sum(1), 1.0, atol=1e-5)
    stored = store.predictions(run_id, "test").probs  # what the run recorded when it was tested
    np.testing.assert_allclose(ours, stored, atol=1e-4)


def test_predict_py_runs_without_medcls_and_gives_medcls_answers(exported, tmp_path):
    store, run_id, folder = exported
    paths = store.predictions(run_id, "test").paths
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.modules['medcls'] = None; import medcls"],
                           cwd=folder, env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "import of medcls halted" in check.stderr  # the guard below works
    _assert_predict_py_agrees(store, run_id, folder, paths, tmp_path)
    code = (folder / "predict.py").read_text()
    assert not re.search(r"^\s*(import|from)\s+medcls", code, re.MULTILINE)
    # Without --json it writes probabilities as the app does: percentages, never a certain 100%.
    text = subprocess.run([sys.executable, "-I", "-c", NO_MEDCLS, str(folder / "predict.py"), paths[0]], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120).stdout
    answer = Predictor.from_run(store, run_id).predict(paths[0])
    assert text.strip().endswith("(" + ", ".join(f"{c} {probability_percent(p)}"
                                                 for c, p in answer.probabilities.items()) + ")"), text


def _assert_predict_py_agrees(store, run_id, folder, paths, cwd) -> None:
    """predict.py, run where medcls cannot be imported, gives medcls's answer for every image."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-I", "-c", NO_MEDCLS, str(folder / "predict.py"), "--json", *paths],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # no traceback, no warnings for the user
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["image"] for line in lines] == paths
    predictor = Predictor.from_run(store, run_id)
    for line in lines:
        expected = predictor.predict(line["image"])
        assert line["label"] == expected.label
        for name, p in expected.probabilities.items():
            assert line["probabilities"][name] == pytest.approx(p, abs=1e-4)


def test_predict_py_reads_16_bit_images_and_large_jpegs_as_medcls_does(exported, tmp_path):
    from PIL import Image

    store, run_id, folder = exported
    rng = np.random.default_rng(0)
    # A 16-bit scan using 1,000..9,000 of its 65,535 levels: clipped to 255 it would be all white.
    scan = (1000 + rng.random((48, 40)) * 8000).astype("<u2")
    Image.fromarray(scan).save(tmp_path / "scan16.png")
    # A photo many times the model's input: decoded at a reduced scale.
    y, x = np.mgrid[0:400, 0:600]
    photo = np.stack([x * 255 // 599, y * 255 // 399, (x + y) * 255 // 998], axis=-1).astype(np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.jpg", quality=92)
    paths = [str(tmp_path / "scan16.png"), str(tmp_path / "photo.jpg")]
    _assert_predict_py_agrees(store, run_id, folder, paths, tmp_path)
    # The very pixels, not only answers close to medcls's (a tiny model's answers hardly move with its input).
    import runpy

    load = runpy.run_path(str(folder / "predict.py"), run_name="exported")["load"]
    predictor = Predictor.from_run(store, run_id)
    for path in paths:
        assert np.array_equal(load(path)[0].numpy(), predictor.pixels(path)), path
    assert load(paths[0]).float().std() > 20  # the scan's structure survives (clipping gave one flat white)


def test_predict_py_reads_dicom_as_medcls_does(exported, tmp_path):
    pytest.importorskip("pydicom")
    import runpy

    from dicom_files import write_dicom

    store, run_id, folder = exported
    ramp = np.tile(np.linspace(0, 4000, 50), (40, 1)).round().astype(np.uint16)
    paths = [str(write_dicom(tmp_path / "ct.dcm", ramp, window=(1500, 1000))),  # the file's window
             str(write_dicom(tmp_path / "IM000001", ramp, photometric="MONOCHROME1")),  # no extension; inverted
             str(write_dicom(tmp_path / "colour.dicom", np.stack([ramp // 16] * 3, -1).astype(np.uint8)))]
    _assert_predict_py_agrees(store, run_id, folder, paths, tmp_path)
    load = runpy.run_path(str(folder / "predict.py"), run_name="exported")["load"]
    predictor = Predictor.from_run(store, run_id)
    for path in paths:
        assert np.array_equal(load(path)[0].numpy(), predictor.pixels(path)), path
    window = load(paths[0])[0, 0].numpy()
    assert window[:, 0].max() == 0 and window[:, -1].min() == 255  # windowed: clipped at both ends
    assert load(paths[1])[0, 0, 0, 0] > load(paths[1])[0, 0, 0, -1]  # MONOCHROME1: low values shown white
    # A file it cannot use says why, without a traceback.
    write_dicom(tmp_path / "cine.dcm", ramp, frames=3)
    (tmp_path / "fake.dcm").write_bytes(b"\0" * 132)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    for name, reason in (("cine.dcm", "a DICOM with 3 frames"), ("fake.dcm", "not a DICOM file")):
        proc = subprocess.run([sys.executable, "-I", str(folder / "predict.py"), str(tmp_path / name)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1 and reason in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_the_zip_download_holds_the_three_files(finished_run, tmp_path):
    store, run_id = finished_run
    with zipfile.ZipFile(BytesIO(torchscript_zip(store, run_id, tmp_path))) as archive:
        assert sorted(archive.namelist()) == [f"{run_id}-torchscript/{n}" for n in
                                              ("classes.json", "model.pt", "predict.py")]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("folds", [0, 2])
def test_every_model_and_a_fold_ensemble_trace_to_the_same_probabilities(name, folds):
    options = TrainConfig().with_options(model=name, **({"weights": "random"} if name == "resnet18" else {}))

    def make():
        return create_model(name, num_classes=3, image_size=32, in_channels=3, options=options.model_options).eval()

    model = FoldEnsemble([make() for _ in range(folds)]).eval() if folds else make()
    images = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    with torch.no_grad():
        traced = torch.jit.trace(ExportedModel(model, tta=True).eval(), images[:2], check_trace=False)
        ours = traced(images).numpy()  # another batch size than the trace's
    np.testing.assert_allclose(ours, predict_proba(model, images, tta=True), atol=1e-5)
