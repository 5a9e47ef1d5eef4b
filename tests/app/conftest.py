"""AppTest fixtures: an isolated run store and data folder, a tiny dataset, and a fresh job manager."""

from __future__ import annotations

from pathlib import Path

import pytest
import streamlit as st
import streamlit.testing.v1.app_test as app_test_module
from streamlit.runtime.pages_manager import PagesManager

from apphelpers import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[2]


class _NavigationPagesManager(PagesManager):
    """AppTest resets ``PagesManager.uses_pages_directory`` before every run, so with a ``pages/``
    folder beside the entry file its reruns execute the page alone (multipage v1), skipping the entry
    file's st.navigation and shared sidebar. The real server keeps the flag False once st.navigation
    has run; this restores that behaviour for tests."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        PagesManager.uses_pages_directory = False


@pytest.fixture(autouse=True)
def _navigation_in_apptest(monkeypatch):
    monkeypatch.setattr(app_test_module, "PagesManager", _NavigationPagesManager)


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """Isolated folders for the app; the cached job manager is shut down and cleared afterwards."""
    monkeypatch.setenv("MEDCLS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDCLS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDCLS_CACHE_DIR", str(tmp_path / "cache"))
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
def tiny_dataset(tmp_path) -> Path:
    return write_tiny_dataset(tmp_path / "tiny")
