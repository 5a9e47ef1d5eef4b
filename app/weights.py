"""ResNet-18 on a machine without its ImageNet weights: say so before Start, and offer the ways on.

Training would otherwise try to download the weights when it starts and fail two seconds later without
internet access. The choices: train from scratch, upload a weights file, or name one on the server.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from medcls.atomic import atomic_write_bytes
from medcls.config import TrainConfig, option_spec
from medcls.models.resnet import (
    WeightsUnavailableError,
    check_weights_file,
    imagenet_cache_path,
    imagenet_weights_available,
)
from medcls.settings import data_dir

from .dataset import upload_too_large
from .form import widget_key

MAX_WEIGHTS_MB = 200
NOTICE_KEY = "weights_notice"


def _weights_key(model: str) -> str:
    return widget_key(option_spec("weights"), model)


def _from_scratch(model: str) -> None:
    st.session_state[_weights_key(model)] = "random"
    st.session_state[NOTICE_KEY] = ("success", "Starting weights set to random: the model trains from scratch.")


def _uploaded(model: str) -> None:
    upload = st.session_state.get("weights_upload")
    if upload is None:
        return
    too_large = upload_too_large(upload.name, upload.size, MAX_WEIGHTS_MB)
    if too_large:  # the uploader's own cap is enforced only by the browser
        st.session_state[NOTICE_KEY] = ("error", f"Not used: {too_large} ResNet-18's weights are about 45 MB.")
        return
    data = upload.getvalue()
    target = data_dir() / "weights" / f"{hashlib.sha256(data).hexdigest()[:12]}-{Path(upload.name).name}"
    if not target.exists():
        atomic_write_bytes(target, data)
    try:
        check_weights_file(target)
    except WeightsUnavailableError as exc:
        target.unlink(missing_ok=True)
        st.session_state[NOTICE_KEY] = ("error", f"Not used: {exc}")
        return
    st.session_state[_weights_key(model)] = str(target)
    st.session_state[NOTICE_KEY] = ("success", f"Starting weights: {upload.name} (checked: ResNet-18 weights).")


def weights_panel(cfg: TrainConfig) -> None:
    """When the chosen model starts from ImageNet weights that are not on this machine: the choices."""
    notice = st.session_state.pop(NOTICE_KEY, None)
    if notice:
        getattr(st, notice[0])(notice[1])
    if getattr(cfg.model_options, "weights", None) != "imagenet" or imagenet_weights_available():
        return
    st.warning(f"**ResNet-18's ImageNet weights are not on this machine** (torchvision keeps them in "
               f"`{imagenet_cache_path()}`). When the run starts it would try to download them (about 45 MB), "
               "which fails without internet access. Choose how to start:", icon="⚠️")
    st.button("Train from scratch (random starting weights)", key="weights_random", on_click=_from_scratch,
              args=(cfg.model,), help="Learns every feature from your images alone: slower to learn, and usually "
                                      "worse than ImageNet features on a few hundred images.")
    st.file_uploader("…or upload a ResNet-18 weights file (.pth)", type=["pth", "pt"], key="weights_upload",
                     max_upload_size=MAX_WEIGHTS_MB, on_change=_uploaded, args=(cfg.model,),
                     help="A state dict of torchvision's resnet18, e.g. resnet18-f37072fd.pth. It is checked before "
                          "it is used.")
    st.caption("…or type the path of such a file on this server into **Starting weights** (Model, above).")
