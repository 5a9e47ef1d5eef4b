"""Helpers shared by the reliability tests (AppTest construction, polling)."""

from __future__ import annotations

import time
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")


def new_app(timeout: float = 60) -> AppTest:
    return AppTest.from_file(APP, default_timeout=timeout)


def wait_for(condition, timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def texts(elements) -> list[str]:
    return [e.value for e in elements]
