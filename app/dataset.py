"""The shared sidebar: which dataset every page works on, and the uploads.

The choice is kept under a session-state key no widget owns ("data_config"),
so it survives page changes, and in the URL (the widgets are bound to query
parameters; an upload is named by ``?upload=``), so it survives a refresh.
Uploads go through :class:`medcls.data.uploads.Uploads` (a disk quota, the
oldest unused removed first); the sidebar lists them and deletes one on request.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Callable

import streamlit as st

from medcls.config import DataConfig, option_spec
from medcls.data import DataError, DatasetSpec, load_dataset
from medcls.data.archive import ArchiveError
from medcls.data.explore import typical_side
from medcls.data.npz import NAMES_READ
from medcls.data.uploads import UploadError, Uploads
from medcls.settings import PathNotAllowedError, allowed_data_roots, exposed, redact_paths

from .identity import identity
from .text import shown
from .url_state import restore_upload, save_upload

# Why 'Keep subfolders in one split' does not apply to the data of a kind without folders of its own.
NO_SUBFOLDERS = {"builtin": " Not for the built-in phantoms: they have no subfolders below their class folders.",
                 "npz": " Not for an .npz file: its images are in no folders."}
KINDS = {
    "builtin": "Built-in synthetic phantoms",
    "folder": "A folder on this server",
    "zip": "Upload a .zip of class folders",
    "npz": "An .npz file (MedMNIST, Keras)",
}
OLD_KIND_LABELS = {"A MedMNIST .npz file": "npz"}  # labels of earlier versions, still understood in a URL
STATE_KEY = "data_config"
MAX_UPLOAD_MB = 200


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


def uploads() -> Uploads:
    """The uploads folder; runs that still need an upload keep it."""
    from .manager import store

    return Uploads(runs_need=store().sources_in_use)


def render_sidebar() -> DataConfig:
    """Draw the dataset chooser and return the chosen DataConfig."""
    sb = st.sidebar
    sb.header("Dataset")
    _kind_from_url()
    # Not bound by Streamlit (bind="query-params" would write the label, ?data_kind=A+MedMNIST+.npz+file, and
    # drop a typed ?data_kind=npz as invalid): the URL keeps the short name.
    kind = sb.radio("Images from", list(KINDS), format_func=KINDS.get, key="data_kind",
                    help="Where the images come from. The built-in phantoms need nothing and are SYNTHETIC.")
    _kind_to_url(kind)
    source = ""
    if kind == "folder":
        source = sb.text_input("Folder path on the server", key="data_folder", bind="query-params",
                               placeholder="/data/busi  or  /data/busi/split.csv",
                               help=option_spec("source").help).strip()
        if not source:
            sb.info("Type a folder: class sub-folders, train/val/test sub-folders, or a manifest .csv.")
        if exposed() and allowed_data_roots():
            sb.caption("This server can be reached from other machines, so it reads datasets only from the "
                       "folders its administrator allowed (MEDCLS\\_DATA\\_ROOTS) and from uploads.")
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
    if kind in NO_SUBFOLDERS:  # shown off, as it is for such data: a key of its own, so the folder choice stays
        by_folder = sb.checkbox(option_spec("group_subfolders").label, value=False, disabled=True,
                                key="data_group_subfolders_none",
                                help=option_spec("group_subfolders").help + NO_SUBFOLDERS[kind])
    else:
        by_folder = sb.checkbox(option_spec("group_subfolders").label, key="data_group_subfolders",
                                bind="query-params", help=option_spec("group_subfolders").help + " Used when medcls "
                                "makes the split, as above. The Data explorer says when a split cuts across them.")
    own = sb.checkbox(option_spec("own_split").label, key="data_own_split", bind="query-params",
                      help=option_spec("own_split").help)
    kept = dict(group_duplicates=group, group_subfolders=by_folder, own_split=own)
    try:
        cfg = DataConfig(source=source, class_aliases=aliases, **kept)
    except ValueError as exc:
        sb.error(str(exc))
        cfg = DataConfig(source=source, **kept)
    _set(cfg)
    return cfg


def _kind_from_url() -> None:
    """A fresh session starts from the URL's ``?data_kind=``: the short name (``npz``, as the app writes it and
    as one would type it) or the choice's label."""
    if "data_kind" in st.session_state:
        return
    given = st.query_params.get("data_kind", "")
    kind = given if given in KINDS else ({label: name for name, label in KINDS.items()} | OLD_KIND_LABELS).get(given)
    if kind:
        st.session_state["data_kind"] = kind


def _kind_to_url(kind: str) -> None:
    """Keep the choice in the URL by its short name (the built-in data, the default, is left out)."""
    if kind == "builtin":
        if "data_kind" in st.query_params:
            del st.query_params["data_kind"]
    elif st.query_params.get("data_kind") != kind:
        st.query_params["data_kind"] = kind


def _zip_upload(sb) -> str:
    upload = sb.file_uploader("Dataset .zip (one folder per class)", type=["zip"], key="data_zip",
                              max_upload_size=MAX_UPLOAD_MB,
                              help=f"A .zip of class folders (e.g. benign/, malignant/, normal/), at most "
                                   f"{MAX_UPLOAD_MB} MB. It is unpacked safely into the app's data folder.")
    if upload is None:
        _manage_uploads(sb)
        earlier = restore_upload()  # uploaded before (this session, or the URL's ?upload= after a refresh)
        if earlier and Path(earlier).is_dir():
            sb.caption(f"Using the .zip uploaded earlier: `{shown(Path(earlier).name).replace('`', '')}`")
            return earlier
        return ""
    folder = _keep_upload(sb, upload, uploads().add_zip)
    if folder:
        sb.caption(f"Unpacked to `{redact_paths(folder).replace('`', '')}`")
    return folder


def _keep_upload(sb, upload, add: Callable[..., Path]) -> str:
    """Check ``upload``'s size, keep it with ``add`` (the upload store's ``add_zip`` or ``add_npz``) and remember
    it for this session; the kept path, or '' after saying why it was refused."""
    too_large = upload_too_large(upload.name, upload.size, MAX_UPLOAD_MB)
    if too_large:
        sb.error(f"Upload refused: {shown(too_large)}")
        return ""
    try:
        kept = str(add(upload.getvalue(), upload.name, by=identity()))
    except (ArchiveError, UploadError) as exc:
        named = str(exc) if str(exc).startswith(upload.name) else f"{upload.name}: {exc}"
        sb.error(f"Upload refused: {shown(named)}")
        _manage_uploads(sb)
        return ""
    save_upload(kept)
    _manage_uploads(sb)
    return kept


def _npz_choice(sb) -> str:
    upload = sb.file_uploader(".npz file", type=["npz"], key="data_npz", max_upload_size=MAX_UPLOAD_MB,
                              help=f"Arrays of images and their labels: {NAMES_READ}. Labels are class numbers "
                                   "or class names.")
    if upload is not None:
        return _keep_upload(sb, upload, uploads().add_npz)
    _manage_uploads(sb)
    typed = sb.text_input("…or its path on the server", key="data_npz_path", bind="query-params").strip()
    if typed:
        return typed
    earlier = restore_upload()  # uploaded before (this session, or the URL's ?upload= after a refresh)
    if earlier and Path(earlier).is_file() and earlier.endswith(".npz"):
        name = uploads().file_name_of(earlier) or Path(earlier).name
        sb.caption(f"Using the .npz uploaded earlier: `{shown(name).replace('`', '')}`")
        return earlier
    return ""


def _manage_uploads(sb) -> None:
    """The uploads on this server, with their size and last use; delete one that no run needs."""
    store = uploads()
    listed = store.list()
    if not listed:
        return
    used = sum(u.size for u in listed)
    with sb.expander(f"Uploaded datasets ({_size(used)} of {_size(store.quota)})"):
        st.caption("The oldest unused uploads are removed when a new one needs room. Uploads that a queued, "
                   "training or resumable run needs are kept.")
        me = identity()
        for upload in listed:
            ago = max(0, time.time() - upload.last_used) / 60
            when = f"{ago:,.0f} min ago" if ago < 120 else f"{ago / 60:,.0f} h ago"
            mine = upload.may_delete(me)
            st.caption(f"{shown(upload.name)} · {_size(upload.size)} · used {when}"
                       + (" · needed by a run" if upload.in_use else "")
                       + ("" if mine else " · uploaded by someone else"))
            refusal = ("A queued, training or resumable run needs it." if upload.in_use else None) if mine else \
                "Someone else uploaded it: only they, or an instructor, can delete it."
            if st.button("Delete", key=f"delete_upload_{upload.name}", disabled=refusal is not None, type="tertiary",
                         icon=":material/delete:", help=refusal or "Delete this upload from the server."):
                try:
                    store.delete(upload.name, by=me)
                except (UploadError, PermissionError) as exc:
                    st.error(shown(exc))
                else:
                    if upload.name in restore_upload():
                        save_upload("")
                    st.rerun()


def _size(size: float) -> str:
    if size < 1e6:
        return f"{size / 1e3:,.0f} kB"
    return f"{size / 1e6:,.1f} MB" if size < 10e6 else f"{size / 1e6:,.0f} MB"


def _cache_key(cfg: DataConfig) -> tuple:
    """The data config as a hashable key of the cached readers below."""
    return tuple(sorted(dataclasses.asdict(cfg).items()))


@st.cache_data(show_spinner="Reading the dataset…", ttl=60, max_entries=8)
def _load(cfg_items: tuple) -> DatasetSpec:
    return load_dataset(DataConfig(**dict(cfg_items)))


_UNREADABLE = (DataError, PathNotAllowedError, FileNotFoundError, ValueError, OSError)  # what reading data raises


def _none_chosen(cfg: DataConfig) -> bool:
    """A folder, upload or .npz is to be chosen and has not been yet (the built-in data needs no choice)."""
    return not cfg.source and st.session_state.get("data_kind", "builtin") != "builtin"


def load_current_dataset(cfg: DataConfig | None = None) -> DatasetSpec | None:
    """The chosen dataset, or None after showing the reason with ``st.error``."""
    cfg = cfg or current_data_config()
    if _none_chosen(cfg):
        st.info("Choose a dataset in the sidebar.")
        return None
    if cfg.source:
        uploads().touch(cfg.source)  # in use: not removed to make room for another upload
    try:
        return _load(_cache_key(cfg))
    except _UNREADABLE as exc:
        st.error(f"Cannot use this dataset: {shown(_by_uploaded_name(str(exc), cfg.source))}")
        return None


def current_fingerprint() -> str:
    """The sidebar dataset's fingerprint, or '' when none is chosen or it cannot be read: for pages that only
    prefer runs on it (the Data explorer and the Train page say what is wrong with it)."""
    cfg = current_data_config()
    if _none_chosen(cfg):
        return ""
    try:
        return _fingerprint(_cache_key(cfg))
    except _UNREADABLE:
        return ""


@st.cache_data(show_spinner="Reading the dataset's files to find its runs…", ttl=60, max_entries=8)
def _fingerprint(cfg_items: tuple) -> str:
    """Reads every file's size and time, and the first time in this process its contents: 0.4 s for 10,000 images
    (150 MB) read from memory, 40 ms once read; kept as long as the listing it belongs to."""
    return _load(cfg_items).fingerprint()


def _by_uploaded_name(message: str, source: str) -> str:
    """``message`` with an uploaded .npz named as the person's file ('breast.npz'), not as the uploads folder keeps
    it ('70ddedc452de-breast.npz')."""
    entry = uploads().upload_of(source) if source else None
    if entry is None or entry.suffix != ".npz":
        return message
    return message.replace(entry.name, uploads().file_name_of(entry) or entry.name)


@st.cache_data(show_spinner=False, ttl=60, max_entries=8)
def _side(cfg_items: tuple) -> int | None:
    return typical_side(_load(cfg_items))


def typical_image_side(cfg: DataConfig) -> int | None:
    """The chosen dataset's typical shorter image side in pixels (from a sample of headers; cached)."""
    try:
        return _side(_cache_key(cfg))
    except (DataError, PathNotAllowedError, FileNotFoundError, ValueError, OSError):
        return None  # load_current_dataset has said why


def dataset_caption(spec: DatasetSpec) -> str:
    """The dataset above each page: the built-in phantoms flagged as synthetic, an upload by its name, a folder by
    its path."""
    label = "SYNTHETIC phantoms (not patient data)" if spec.synthetic else source_words(spec.root)
    return f"**{label}** · {shown(spec.summary())}"


def source_words(source: str) -> str:
    """Where a dataset is read from, for people (Markdown): an upload by its name (its place in the uploads folder
    means nothing to the person who uploaded it), a folder or file by its path, '' as the built-in phantoms."""
    if not source:
        return "the built-in phantoms"
    if (uploaded := uploads().file_name_of(source)) is not None:
        return f"{shown(uploaded)} (uploaded)"
    return shown(source)
