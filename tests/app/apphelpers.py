"""Helpers for the AppTest tests: a tiny dataset and common widget steps."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "streamlit_app.py")


def write_tiny_dataset(root: Path, per_class: int = 14, size: int = 32) -> Path:
    """Two easy classes (bright vs dark square) in class folders."""
    rng = np.random.default_rng(0)
    for label, level in (("bright", 200), ("dark", 60)):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.normal(level, 20, (size, size)).clip(0, 255).astype(np.uint8)
            Image.fromarray(arr).save(folder / f"{label} ({i}).png")
    return root




def as_read(markdown: str) -> str:
    """Markdown source as a person reads it: backslash escapes (of class and file names) removed."""
    return re.sub(r"\\(.)", r"\1", markdown)


def new_app(timeout: float = 60) -> AppTest:
    return AppTest.from_file(APP, default_timeout=timeout)


def open_on_folder(folder: Path, page: str | None = None) -> AppTest:
    """A new app on a folder of images, chosen through the session (the built-in phantoms are never generated),
    then switched to ``page`` ('app_pages/try_it.py') when given."""
    at = new_app()
    at.session_state["data_kind"] = "folder"
    at.session_state["data_folder"] = str(folder)
    at.run()
    return at.switch_page(page).run() if page else at


def choose_folder(at: AppTest, folder: Path) -> AppTest:
    at.sidebar.radio(key="data_kind").set_value("folder").run()
    at.sidebar.text_input(key="data_folder").set_value(str(folder)).run()
    return at


def set_tiny_options(at: AppTest, epochs: int = 2) -> AppTest:
    """Options that make a run take a few seconds."""
    at.number_input(key="opt_epochs").set_value(epochs)
    at.number_input(key="opt_image_size").set_value(32)
    at.number_input(key="opt_batch_size").set_value(8)
    at.selectbox(key="opt_precision").set_value("fp32")
    return at.run()
