"""Settings in the URL, so a refresh (or a link shared with a student) keeps them.

A refresh starts a new Streamlit session: ``st.session_state`` is empty again. So what a person chose is
also kept in the page's address:

- the dataset choice: where the images come from by its short name (``?data_kind=folder``, written by the
  sidebar, ``app.dataset``), the sidebar's other widgets bound to query parameters by Streamlit itself
  (``bind="query-params"``: ``&data_folder=/data/busi``); an uploaded dataset is named by
  ``?upload=<its folder or file in the app's upload folder>``;
- the Train form: every option whose value differs from its default, under the option's own name
  (``?epochs=5&image_size=64&model=seed_cnn``), written on every page, read by a fresh session.

Values from the URL go through the same checks as typed ones (a folder must be in the allowed roots, an
option within its bounds); what does not fit is ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from medcls.config import ConfigError, DataConfig, TrainConfig
from medcls.config.table import option_table
from medcls.settings import data_dir

__all__ = ["restore_form", "save_form", "restore_upload", "save_upload", "FORM_KEY", "UPLOAD_PARAM"]

FORM_KEY = "train_options"  # the form's last valid options (flat names); no widget owns this key
UPLOAD_PARAM = "upload"
UPLOAD_KEY = "data_upload_path"


def _url_text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def _form_names() -> dict[str, Any]:
    return {name: spec for name, spec in option_table().items() if spec.section != "data"}


def restore_form() -> None:
    """A fresh session starts the form from the options in the URL (once; the form then owns them)."""
    if FORM_KEY in st.session_state:
        return
    names = _form_names()
    given = {name: st.query_params[name] for name in names if name in st.query_params}
    if not given:
        return
    restored: dict[str, Any] = {}
    try:  # the model first: it decides which of the model's own options exist
        base = TrainConfig().with_options(strict=False, model=given.pop("model", "small_cnn"))
        restored["model"] = base.model
    except (ConfigError, ValueError):
        base = TrainConfig()
    for name, text in given.items():
        try:
            base.with_options(strict=False, **{name: text})  # the same checks as a typed value
        except (ConfigError, ValueError):
            continue
        restored[name] = text
    st.session_state[FORM_KEY] = restored


def save_form(values: dict[str, Any], data: DataConfig | None = None) -> None:
    """Put the form's options that differ from their defaults in the URL (and take the others out)."""
    try:
        current = TrainConfig(data=data or DataConfig()).with_options(strict=False, **values)
        defaults = TrainConfig(data=data or DataConfig()).with_options(strict=False, model=current.model).flat()
    except (ConfigError, ValueError):
        return
    typed = current.applicable()
    changed = {name: _url_text(typed[name]) for name in values
               if name in typed and name in defaults and (typed[name] != defaults[name] or name == "model")
               and not (name == "model" and typed[name] == TrainConfig().model)}
    for name in _form_names():
        if name in changed:
            if st.query_params.get(name) != changed[name]:
                st.query_params[name] = changed[name]
        elif name in st.query_params:
            del st.query_params[name]


def restore_upload() -> str:
    """An uploaded dataset named in the URL, if it is still in the app's upload folder ('' otherwise)."""
    if UPLOAD_KEY in st.session_state:
        return st.session_state[UPLOAD_KEY]
    name = st.query_params.get(UPLOAD_PARAM, "")
    uploads = (data_dir() / "uploads").resolve()
    candidate = (uploads / name).resolve() if name else None
    path = str(candidate) if candidate is not None and candidate.parent == uploads and candidate.exists() else ""
    st.session_state[UPLOAD_KEY] = path
    return path


def save_upload(path: str) -> None:
    """Remember an uploaded dataset (its place in the upload folder) in the session and the URL."""
    st.session_state[UPLOAD_KEY] = path
    if path:
        st.query_params[UPLOAD_PARAM] = Path(path).name
    elif UPLOAD_PARAM in st.query_params:
        del st.query_params[UPLOAD_PARAM]
