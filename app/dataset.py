"""The shared sidebar: which dataset every page works on.

The choice is kept under a session-state key no widget owns ("data_config"),
so it survives page changes, and in the URL (the widgets are bound to query
parameters; an upload is named by ``?upload=``), so it survives a refresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import streamlit as st

from medcls.atomic import atomic_write_bytes
from medcls.config import DataConfig, option_spec
from medcls.data import DataError, DatasetSpec, load_dataset
from medcls.data.archive import ArchiveError, extract_zip
from medcls.settings import PathNotAllowedError, data_dir

from .url_state import restore_upload, save_upload

KINDS = {
    "builtin": "Built-in synthetic phantoms",
    "folder": "A folder on this server",
    "zip": "Upload a .zip of class folders",
    "npz": "A MedMNIST .npz file",
}
STATE_KEY = "data_config"
MAX_UPLOAD_MB = 200
# The sidebar's widgets bound to the URL's query parameters (Streamlit keeps them across page switches).
BOUND_KEYS = ("data_kind", "data_folder", "data_aliases", "data_group_duplicates", "data_own_split", "data_npz_path")


def current_data_config() -> DataConfig:
    return DataConfig(**st.session_state.get(STATE_KEY, {}))


def _set(cfg: DataConfig) -> None:
    st.session_state[STATE_KEY] = dataclasses.asdict(cfg)


def upload_too_large(name: str, size: int, limit_mb: int) -> str | None:
    """Why an upload is refused for its size, or None. The uploader's own cap is enforced only by the
    browser (the server enforces only server.maxUploadSize), so pages check the size themselves."""
    if size > limit_mb * 1024 * 1024:
        return (f"{name} is {size / 1024 ** 2:,.1f} MB, over the {limit_mb} MB limit for this upload. "
                "Use a smaller file.")
    return None


def render_sidebar() -> DataConfig:
    """Draw the dataset chooser and return the chosen DataConfig."""
    sb = st.sidebar
    sb.header("Dataset")
    kind = sb.radio("Images from", list(KINDS), format_func=KINDS.get, key="data_kind", bind="query-params",
                    help="Where the images come from. The built-in phantoms need nothing and are SYNTHETIC.")
    source = ""
    if kind == "folder":
        source = sb.text_input("Folder path on the server", key="data_folder", bind="query-params",
                               placeholder="/data/busi  or  /data/busi/split.csv",
                               help=option_spec("source").help).strip()
        if not source:
            sb.info("Type a folder: class sub-folders, train/val/test sub-folders, or a manifest .csv.")
    elif kind == "zip":
        source = _zip_upload(sb)
    elif kind == "npz":
        source = _npz_choice(sb)
    aliases_text = sb.text_input("Class aliases (optional)", key="data_aliases", placeholder="malignant=cancer",
                                 help=option_spec("class_aliases").help, bind="query-params")
    aliases = tuple(a.strip() for a in aliases_text.replace(";", ",").split(",") if a.strip())
    group = sb.checkbox(option_spec("group_duplicates").label, key="data_group_duplicates", bind="query-params",
                        help=option_spec("group_duplicates").help + " Used when medcls makes the split (the data has "
                        "no train/val/test split of its own, or 'Make my own split' is on). The first load hashes "
                        "every image once.")
    own = sb.checkbox(option_spec("own_split").label, key="data_own_split", bind="query-params",
                      help=option_spec("own_split").help)
    try:
        cfg = DataConfig(source=source, class_aliases=aliases, group_duplicates=group, own_split=own)
    except ValueError as exc:
        sb.error(str(exc))
        cfg = DataConfig(source=source, group_duplicates=group, own_split=own)
    _set(cfg)
    return cfg


def _zip_upload(sb) -> str:
    upload = sb.file_uploader("Dataset .zip (one folder per class)", type=["zip"], key="data_zip",
                              max_upload_size=MAX_UPLOAD_MB,
                              help=f"A .zip of class folders (e.g. benign/, malignant/, normal/), at most "
                                   f"{MAX_UPLOAD_MB} MB. It is unpacked safely into the app's data folder.")
    if upload is None:
        earlier = restore_upload()  # uploaded before (this session, or the URL's ?upload= after a refresh)
        if earlier and Path(earlier).is_dir():
            sb.caption(f"Using the .zip uploaded earlier: `{Path(earlier).name}`")
            return earlier
        return ""
    too_large = upload_too_large(upload.name, upload.size, MAX_UPLOAD_MB)
    if too_large:
        sb.error(f"Upload refused: {too_large}")
        return ""
    try:
        folder = extract_zip(upload.getvalue(), data_dir() / "uploads", name=upload.name)
    except ArchiveError as exc:
        named = str(exc) if str(exc).startswith(upload.name) else f"{upload.name}: {exc}"
        sb.error(f"Upload refused: {named}")
        return ""
    save_upload(str(folder))
    sb.caption(f"Unpacked to `{folder}`")
    return str(folder)


def _npz_choice(sb) -> str:
    upload = sb.file_uploader("MedMNIST .npz", type=["npz"], key="data_npz", max_upload_size=MAX_UPLOAD_MB,
                              help="A MedMNIST-style file with train_images, train_labels, val_..., test_...")
    if upload is not None:
        too_large = upload_too_large(upload.name, upload.size, MAX_UPLOAD_MB)
        if too_large:
            sb.error(f"Upload refused: {too_large}")
            return ""
        data = upload.getvalue()
        name = Path(upload.name).name
        target = data_dir() / "uploads" / f"{hashlib.sha256(data).hexdigest()[:12]}-{name}"
        if not target.exists():
            atomic_write_bytes(target, data)
        save_upload(str(target))
        return str(target)
    typed = sb.text_input("…or its path on the server", key="data_npz_path", bind="query-params").strip()
    if typed:
        return typed
    earlier = restore_upload()  # uploaded before (this session, or the URL's ?upload= after a refresh)
    if earlier and Path(earlier).is_file() and earlier.endswith(".npz"):
        sb.caption(f"Using the .npz uploaded earlier: `{Path(earlier).name.split('-', 1)[-1]}`")
        return earlier
    return ""


@st.cache_data(show_spinner="Reading the dataset…", ttl=60, max_entries=8)
def _load(cfg_items: tuple) -> DatasetSpec:
    return load_dataset(DataConfig(**dict(cfg_items)))


def load_current_dataset(cfg: DataConfig | None = None) -> DatasetSpec | None:
    """The chosen dataset, or None after showing the reason with ``st.error``."""
    cfg = cfg or current_data_config()
    if not cfg.source and st.session_state.get("data_kind", "builtin") != "builtin":
        st.info("Choose a dataset in the sidebar.")
        return None
    try:
        return _load(tuple(sorted(dataclasses.asdict(cfg).items())))
    except (DataError, PathNotAllowedError, FileNotFoundError, ValueError) as exc:
        st.error(f"Cannot use this dataset: {exc}")
        return None


def dataset_caption(spec: DatasetSpec) -> str:
    label = "SYNTHETIC phantoms (not patient data)" if spec.synthetic else spec.root
    return f"**{label}** · {spec.summary()}"
