"""Shared fixtures: an isolated environment and tiny synthetic datasets written with Pillow."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Mapping

import numpy as np
import pytest
import torch
from PIL import Image

from medcls.config import TrainConfig
from medcls.data.cache import clear_memory_cache

# The tensors here are tiny: a second thread gains nothing, and on a busy machine OpenMP barriers
# between threads can make each operation ten times slower. One thread keeps the suite fast and steady.
TEST_THREADS = 1
torch.set_num_threads(TEST_THREADS)

CLASSES = ("benign", "malignant", "normal")
# Mean gray level per class, far enough apart that a tiny CNN can learn something.
LEVELS = {"benign": 70, "malignant": 130, "normal": 190, "cancer": 130}


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Every test gets its own cache, run store, data folder and torch hub; nothing real is touched."""
    env = tmp_path / "_env"
    monkeypatch.setenv("MEDCLS_CACHE_DIR", str(env / "cache"))
    monkeypatch.setenv("MEDCLS_RUNS_DIR", str(env / "runs"))
    monkeypatch.setenv("MEDCLS_DATA_DIR", str(env / "data"))
    monkeypatch.setenv("TORCH_HOME", str(env / "torch"))
    monkeypatch.delenv("MEDCLS_DATA_ROOTS", raising=False)
    for name in ("MEDCLS_ALLOW_SERVER_FOLDERS", "MEDCLS_UPLOAD_QUOTA_MB", "MEDCLS_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDCLS_EXPOSED", "")  # recorded, so a server marked exposed by the code is undone after
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    # Tests that open the app's pages would each start a standby training process (seconds of CPU and a few
    # hundred MB while it waits); the tests of that process turn it on, and so do the browser tests' servers.
    monkeypatch.setenv("MEDCLS_STANDBY_WORKER", "0")
    clear_memory_cache()
    yield env
    clear_memory_cache()
    if torch.get_num_threads() != TEST_THREADS:  # a test (or the code under test) changed it
        torch.set_num_threads(TEST_THREADS)


def write_image(path: Path, size: int = 32, *, mode: str | None = None, level: int = 128, seed: int = 0,
                color: tuple[int, int, int] | None = None) -> Path:
    """A small noisy image with a bright square, saved in ``mode`` (format from the suffix).

    ``color`` tints it (RGB); otherwise it is gray ("L") unless another ``mode`` is asked for.
    """
    mode = mode or ("RGB" if color is not None else "L")
    rng = np.random.default_rng(seed)
    gray = np.clip(rng.normal(level, 20, (size, size)), 0, 255)
    q = size // 4
    gray[q:3 * q, q:3 * q] = np.clip(gray[q:3 * q, q:3 * q] + 40, 0, 255)
    gray = gray.astype(np.uint8)
    if color is not None:
        rgb = np.stack([gray * (c / 255.0) for c in color], axis=-1).astype(np.uint8)
        img = Image.fromarray(rgb, "RGB")
    else:
        img = Image.fromarray(gray, "L")
    if mode == "I;16":
        img = Image.fromarray(gray.astype("<u2") * 200)
    elif img.mode != mode:
        img = img.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jpg", ".jpeg") and img.mode not in ("L", "RGB", "CMYK"):
        img = img.convert("RGB")
    img.save(path)
    return path


def write_class_folders(root: Path, counts: Mapping[str, int], size: int = 32, *, suffix: str = ".png",
                        seed: int = 0) -> Path:
    """``root/<class>/<class> (i).png`` with ``counts[class]`` images each."""
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / name / f"{name} ({i}){suffix}", size, level=LEVELS.get(name, 60 + 40 * c),
                        seed=seed * 1000 + c * 100 + i)
    return root


def write_split_folders(root: Path, splits: Mapping[str, Mapping[str, int]], size: int = 32) -> Path:
    for s, (split, counts) in enumerate(splits.items()):
        write_class_folders(root / split, counts, size, seed=s + 1)
    return root


@pytest.fixture
def class_dataset(tmp_path: Path) -> Path:
    """36 gray 32-px images in three class folders (12 each)."""
    return write_class_folders(tmp_path / "classes", {c: 12 for c in CLASSES})


@pytest.fixture
def split_dataset(tmp_path: Path) -> Path:
    """train/val/test folders with 10/3/3 images per class."""
    return write_split_folders(tmp_path / "splits", {
        "train": {c: 10 for c in CLASSES}, "val": {c: 3 for c in CLASSES}, "test": {c: 3 for c in CLASSES}})


def tiny_config(source: str | Path = "", **options) -> TrainConfig:
    """A config that trains in well under a second on the tiny datasets."""
    base = TrainConfig(image_size=32, epochs=2, batch_size=8, precision="fp32")
    return base.with_options(source=str(source), **options)


@pytest.fixture
def store(isolated_env):
    from medcls.runs.store import RunStore

    return RunStore()


@pytest.fixture(scope="session")
def _finished_run_template(tmp_path_factory) -> Path:
    """One real 2-epoch small_cnn run, trained once per session in its own isolated environment."""
    from medcls.jobs.execute import execute_run
    from medcls.runs.store import RunStore

    base = tmp_path_factory.mktemp("run-template")
    with pytest.MonkeyPatch.context() as mp:
        for name, sub in (("MEDCLS_CACHE_DIR", "cache"), ("MEDCLS_RUNS_DIR", "runs"), ("MEDCLS_DATA_DIR", "data"),
                          ("TORCH_HOME", "torch")):
            mp.setenv(name, str(base / sub))
        clear_memory_cache()
        data = write_class_folders(base / "classes", {c: 12 for c in CLASSES})
        store = RunStore(base / "runs")
        run_id = store.create(tiny_config(data), run_id="tiny-run")
        outcome = execute_run(store, run_id)
        clear_memory_cache()
    assert outcome.state == "finished", outcome.error
    return store.path(run_id)


@pytest.fixture
def finished_run(store, _finished_run_template):
    """(store, run_id) of a finished 2-epoch small_cnn run on 36 gray 32-px images (a fresh copy per test)."""
    shutil.copytree(_finished_run_template, store.root / _finished_run_template.name)
    return store, _finished_run_template.name


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


class Synth:
    """The helpers above, handed to tests as the ``synth`` fixture (no imports from conftest needed)."""

    classes = CLASSES
    image = staticmethod(write_image)
    class_folders = staticmethod(write_class_folders)
    split_folders = staticmethod(write_split_folders)
    config = staticmethod(tiny_config)
    dead_pid = staticmethod(dead_pid)


@pytest.fixture
def synth() -> Synth:
    return Synth()


@pytest.fixture(scope="session")
def _phantom_cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("phantom-cache")


@pytest.fixture
def phantom_cache(_phantom_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache folder shared by the few tests that use the built-in synthetic dataset (generated once)."""
    monkeypatch.setenv("MEDCLS_CACHE_DIR", str(_phantom_cache_dir))
    return _phantom_cache_dir


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The screenshots and server logs browser tests recorded (``user_properties``, see tests/e2e/conftest.py):
    they come back in the test reports, also from the processes of ``pytest -n 2``. A test's teardown report
    carries all it and its fixtures recorded. This hook lives here, not beside the browser tests: under
    ``pytest -n`` the controlling process loads only this conftest, so a hook in tests/e2e/ never ran there."""
    shots, logs = [], set()
    for report in (r for reports in terminalreporter.stats.values() for r in reports):
        if getattr(report, "when", None) != "teardown":
            continue
        for key, value in report.user_properties:
            if key.startswith("screenshot:"):
                shots.append((report.nodeid.split("::")[-1], value))
            elif key == "server log":
                logs.add(value)
    if not shots and not logs:
        return
    terminalreporter.section("e2e screenshots")
    for test_name, path in shots:
        terminalreporter.write_line(f"{path}  ({test_name})")
    for log in sorted(logs):
        terminalreporter.write_line(f"server log: {log}")
