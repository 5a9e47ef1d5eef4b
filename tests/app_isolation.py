"""The AppTest set-up shared by tests/app and tests/reliability (a conftest cannot import another's)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import streamlit as st

ROOT = Path(__file__).resolve().parents[1]
_MEASURED: dict[tuple, object] = {}  # (probe config JSON, probe settings) -> the Costs measured for it


def _measure_once(measure):
    """``measure_costs``, run for real once per config in this test process.

    The Train page times every config it shows in a probe process (5-15 s on a slow 2-core machine), and each
    page test starts with empty Streamlit caches, so the same built-in config was timed dozens of times per
    suite. The probe itself is tested in tests/training/test_estimate.py; pages only need its answer."""
    def measure_once(cfg, **kwargs):
        key = (cfg.to_json(), tuple(sorted(kwargs.items())))  # a probe with other settings is another measurement
        if key not in _MEASURED:
            _MEASURED[key] = measure(cfg, **kwargs)
        return _MEASURED[key]
    return measure_once


def isolated_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache_dir: Path) -> Iterator[Path]:
    """Isolated folders for the app; the cached job manager is shut down and cleared afterwards."""
    monkeypatch.setenv("MEDCLS_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setenv("MEDCLS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("MEDCLS_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("MEDCLS_WORKER_THREADS", "1")
    monkeypatch.setenv("MEDCLS_DEBUG", "1")  # a page error is raised (after its message), so at.exception shows it
    monkeypatch.chdir(ROOT)
    import app.model_summary

    monkeypatch.setattr(app.model_summary, "measure_costs", _measure_once(app.model_summary.measure_costs))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path
    from app.manager import manager

    try:
        manager().shutdown(kill=True)
    finally:
        st.cache_resource.clear()
        st.cache_data.clear()
