"""Helpers shared by the reliability tests (AppTest construction)."""

from __future__ import annotations

import re
from pathlib import Path

from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")


def new_app(timeout: float = 60) -> AppTest:
    return AppTest.from_file(APP, default_timeout=timeout)


def as_read(markdown: str) -> str:
    """Markdown source as a person reads it: backslash escapes (of class and file names) removed."""
    return re.sub(r"\\(.)", r"\1", markdown)


def texts(elements) -> list[str]:
    """What the elements say, as read (the app escapes user-controlled names inside Markdown)."""
    return [as_read(str(e.value)) for e in elements]


def slow_config(source, **options):
    """Many epochs of a few tenths of a second each on one thread (0.22 s on ``slow_dataset`` on a 2-core Intel Xeon
    in 2026-12): a run that is reliably mid-epoch."""
    from medcls.config import TrainConfig

    return TrainConfig(image_size=64, epochs=300, batch_size=8, precision="fp32", threads=1).with_options(
        source=str(source), **options)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    import os

    from medcls.runs.lifecycle import _is_zombie

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not _is_zombie(pid)
