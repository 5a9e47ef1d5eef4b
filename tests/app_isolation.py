"""The AppTest set-up shared by tests/app and tests/reliability (a conftest cannot import another's)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import streamlit as st
import streamlit.testing.v1.app_test as app_test_module
from streamlit.runtime.pages_manager import PagesManager

ROOT = Path(__file__).resolve().parents[1]


class NavigationPagesManager(PagesManager):
    """AppTest resets ``PagesManager.uses_pages_directory`` before every run, so with a ``pages/``
    folder beside the entry file its reruns execute the page alone (multipage v1), skipping the entry
    file's st.navigation and shared sidebar. The real server keeps the flag False once st.navigation
    has run; this restores that behaviour for tests."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        PagesManager.uses_pages_directory = False


def use_navigation_in_apptest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app_test_module, "PagesManager", NavigationPagesManager)


def isolated_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Iterator[Path]:
    """Isolated folders for the app; the cached job manager is shut down and cleared afterwards."""
    monkeypatch.setenv("MEDCLS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDCLS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDCLS_CACHE_DIR", str(cache_dir))
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
