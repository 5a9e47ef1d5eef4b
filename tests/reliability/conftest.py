"""Fixtures of the reliability and security suite: an isolated app environment for AppTest, a live server.

The AppTest pieces repeat tests/app/conftest.py on purpose (a conftest cannot be imported from another
folder): an isolated run store and data folder, a fresh cached job manager, and the st.navigation fix.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import streamlit as st
import streamlit.testing.v1.app_test as app_test_module
from streamlit.runtime.pages_manager import PagesManager

from reliability_helpers import ROOT


class _NavigationPagesManager(PagesManager):
    """Keep AppTest reruns going through streamlit_app.py's st.navigation (see tests/app/conftest.py)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        PagesManager.uses_pages_directory = False


@pytest.fixture
def app_env(tmp_path, monkeypatch, _phantom_cache_dir):
    """Isolated folders for the app; the cached job manager is shut down and cleared afterwards.

    The cache folder is the session's shared one, so the built-in phantoms (the default page's data)
    are generated once per test session, not once per test."""
    monkeypatch.setattr(app_test_module, "PagesManager", _NavigationPagesManager)
    monkeypatch.setenv("MEDCLS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDCLS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDCLS_CACHE_DIR", str(_phantom_cache_dir))
    monkeypatch.setenv("MEDCLS_WORKER_THREADS", "1")
    monkeypatch.chdir(ROOT)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    from app.manager import manager

    try:
        manager().shutdown(kill=True)
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()


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
