"""The AppTest set-up shared by tests/app and tests/reliability (a conftest cannot import another's)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import streamlit as st

ROOT = Path(__file__).resolve().parents[1]


def isolated_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Iterator[Path]:
    """Isolated folders for the app; the cached job manager is shut down and cleared afterwards."""
    monkeypatch.setenv("MEDCLS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDCLS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDCLS_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("MEDCLS_WORKER_THREADS", "1")
    monkeypatch.setenv("MEDCLS_DEBUG", "1")  # a page error is raised (after its message), so at.exception shows it
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
