"""AppTest fixtures: an isolated run store and data folder, a tiny dataset, and a fresh job manager."""

from __future__ import annotations

from pathlib import Path

import pytest
from app_isolation import isolated_app
from apphelpers import write_tiny_dataset


@pytest.fixture
def app_env(tmp_path, monkeypatch):
    """Isolated folders for the app; the cached job manager is shut down and cleared afterwards."""
    yield from isolated_app(tmp_path, monkeypatch, tmp_path / "cache")


@pytest.fixture
def tiny_dataset(tmp_path) -> Path:
    return write_tiny_dataset(tmp_path / "tiny")
