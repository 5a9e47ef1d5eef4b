"""Take a model or a run elsewhere: download buttons for one run, and an uploader that imports a run .zip.

The files are built only when a button is clicked (a TorchScript trace takes a
moment); the import is checked by :func:`medcls.runs.portable.import_run_zip`
before anything is kept, and happens once per uploaded file.
"""

from __future__ import annotations

import tempfile

import streamlit as st

from medcls.data.archive import ArchiveError
from medcls.inference.export import torchscript_zip
from medcls.runs.portable import can_export, export_run_zip, import_run_zip
from medcls.runs.store import RunStore

from .dataset import MAX_UPLOAD_MB, upload_too_large
from .identity import run_meta
from .text import escape_markdown, shown

__all__ = ["portable_section"]


def _torchscript(store: RunStore, run_id: str) -> bytes:
    with tempfile.TemporaryDirectory() as workdir:
        return torchscript_zip(store, run_id, workdir)


def _downloads(store: RunStore, run_id: str) -> None:
    st.caption(f"For **{escape_markdown(store.summary(run_id).name)}**, the run chosen under *Look closer at one "
               "run*.")
    left, right = st.columns(2)
    left.download_button("⬇ Model for Python (TorchScript + predict.py)", data=lambda: _torchscript(store, run_id),
                         file_name=f"{run_id}-torchscript.zip", mime="application/zip", key="export_torchscript",
                         on_click="ignore", disabled=not store.has_weights(run_id),
                         help="model.pt (the network with its preprocessing, returning class probabilities), "
                              "classes.json and a short predict.py that needs only torch, Pillow and numpy (and "
                              "pydicom for DICOM files): `python predict.py image.png`.")
    reason = can_export(store, run_id)
    right.download_button("⬇ This run (.zip for another medcls)", data=lambda: export_run_zip(store, run_id),
                          file_name=f"{run_id}.zip", mime="application/zip", key="export_run_zip",
                          on_click="ignore", disabled=bool(reason),
                          help=reason or "The run's settings, history, weights, test results and predictions. "
                                         "Another medcls imports it below (or `python -m medcls import`), then "
                                         "compares and tries it like its own runs.")
    st.caption(f"From the command line: `python -m medcls export {run_id} --format torchscript --out folder` "
               "(or `--format zip --out run.zip`).")


def _import(store: RunStore) -> None:
    upload = st.file_uploader("Import a run (.zip exported by medcls)", type=["zip"], key="run_import",
                              max_upload_size=MAX_UPLOAD_MB,
                              help="Checked before anything is kept: only the files a run folder holds, records "
                                   "that read back, weights that load as plain numbers and fit the model. A run "
                                   "whose id exists here already gets a new id.")
    if upload is None:
        return
    done = st.session_state.get("run_import_done", {})
    if upload.file_id in done:
        st.success(f"Imported as **{escape_markdown(done[upload.file_id])}**. Pick it under **Runs** above "
                   "(refresh the page if it is not listed yet).")
        return
    too_large = upload_too_large(upload.name, upload.size, MAX_UPLOAD_MB)
    if too_large:
        st.error(f"Import refused: {shown(too_large)}")
        return
    try:
        run_id = import_run_zip(store, upload.getvalue(), upload.name, owner=run_meta())
    except (ArchiveError, ValueError, OSError) as exc:
        st.error(f"Import refused: {shown(exc)}")
        return
    name = store.summary(run_id).name
    st.session_state["run_import_done"] = {**done, upload.file_id: name}
    st.rerun()  # the page lists the new run


def portable_section(store: RunStore, run_id: str | None) -> None:
    """Downloads for ``run_id`` (when given) and the import uploader."""
    st.subheader("Take a model or a run elsewhere")
    if run_id is not None:
        _downloads(store, run_id)
    _import(store)
