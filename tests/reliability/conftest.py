"""Fixtures of the reliability and security suite: an isolated app environment for AppTest, a live server."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from app_isolation import isolated_app


@pytest.fixture
def app_env(tmp_path, monkeypatch, _phantom_cache_dir):
    """Isolated folders for the app; the cached job manager is shut down and cleared afterwards.

    The cache folder is the session's shared one, so the built-in phantoms (the default page's data)
    are generated once per test session, not once per test."""
    yield from isolated_app(tmp_path, monkeypatch, _phantom_cache_dir)


@pytest.fixture
def app_run(app_env, _finished_run_template) -> tuple[Path, str]:
    """(runs folder, run id) of a finished run with weights, copied into the app's run store."""
    runs = app_env / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    shutil.copytree(_finished_run_template, runs / _finished_run_template.name)
    return runs, _finished_run_template.name


@pytest.fixture(scope="session")
def live_app(tmp_path_factory):
    """A real ``streamlit run`` of the app (its own run store and data), with one run queued.

    The server reads .streamlit/config.toml like any deployment (address, XSRF, upload cap). Its job
    manager starts on the first page render, picks up the queued run and trains it in a worker process.
    """
    from live_server import start_live_app

    server = start_live_app(tmp_path_factory.mktemp("live-app"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def slow_dataset(tmp_path) -> Path:
    """120 images of 64 px in three classes: slow_config trains a few tenths of a second per epoch on it."""
    from reliability_corpus import good_classes

    return good_classes(tmp_path / "slow-data", classes=("benign", "malignant", "normal"), per_class=40, size=64)
