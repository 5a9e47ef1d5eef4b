"""The live "what will this model cost" panel under the training form."""

from __future__ import annotations

import json

import numpy as np
import streamlit as st

from medcls.config import TrainConfig
from medcls.data import DatasetSpec
from medcls.figures.training import parameter_bar_figure
from medcls.models.summary import estimate_epoch_seconds, summarize, time_step
from medcls.training.imbalance import make_sampler
from medcls.training.pipeline import build_model


def _channels(cfg: TrainConfig) -> int:
    return 3 if cfg.data.color == "rgb" else 1  # 'auto' resolves to gray for (nearly) all medical images


@st.cache_data(show_spinner="Timing a few training steps on this machine…", max_entries=64)
def _probe(cfg_json: str, num_classes: int) -> dict:
    cfg = TrainConfig.from_json(cfg_json)
    channels = _channels(cfg)
    model = build_model(cfg, num_classes, channels, weights="random")
    summary = summarize(model, cfg.optimizer)
    cached = bool(getattr(cfg.model_options, "feature_cache", False)) and model.frozen_features
    step = time_step(model, cfg.batch_size, channels, cfg.image_size, num_classes, channels_last=cfg.channels_last)
    return {"parameters": summary.parameters, "trainable": summary.trainable, "weights_mb": summary.weights_mb,
            "optimizer_mb": summary.optimizer_mb, "layers": summary.layers, "largest": summary.largest_layer,
            "largest_share": summary.largest_share, "largest_is_linear": summary.largest_is_linear,
            "step_s": step, "feature_cached": cached}


def render_model_summary(cfg: TrainConfig, spec: DatasetSpec) -> None:
    """Parameters, memory, a per-layer chart and the estimated time per epoch for ``cfg`` on ``spec``."""
    probe_cfg = cfg.with_options(epochs=1)  # epochs do not change the cost of one epoch
    try:
        info = _probe(json.dumps(probe_cfg.to_dict(), sort_keys=True), len(spec.classes))
    except (ValueError, RuntimeError) as exc:
        st.error(f"This model cannot be built with these settings: {exc}")
        return
    labels = np.array([it.label for it in spec.items if it.split == "train"])
    n_val = sum(1 for it in spec.items if it.split == "val")
    n_epoch = len(make_sampler(labels, spec.classes, cfg.imbalance, cfg.seed, cfg.oversample)) if len(labels) else 0
    epoch_s = estimate_epoch_seconds(info["step_s"], cfg.batch_size, n_epoch, n_val)
    if info["feature_cached"]:
        # Frozen backbone: features are computed once (about one inference pass per image and view),
        # after which an epoch only trains the small head.
        views = cfg.model_options.feature_views if cfg.augment.augment else 1
        once = (len(labels) * views + n_val) * info["step_s"] / cfg.batch_size / 3
        note = f"≈ {once:.0f} s once to cache features, then about a second per epoch"
    else:
        note = f"≈ {epoch_s:.0f} s per epoch · ≈ {epoch_s * cfg.epochs / 60:.1f} min for {cfg.epochs} epochs"
    c1, c2, c3 = st.columns(3)
    c1.metric("Parameters", f"{info['parameters'] / 1e6:.2f} M", help=f"{info['trainable']:,} of them trainable.")
    c2.metric("Memory: weights + optimizer", f"{info['weights_mb'] + info['optimizer_mb']:.0f} MB",
              help="Weights, their gradients and the optimizer's running averages, in float32.")
    c3.metric("Time per epoch here", f"{epoch_s:.1f} s", help=f"From timing real training steps on this "
              f"machine with {n_epoch} training images per epoch. {note}.")
    st.caption(note)
    name, count = info["largest"]
    if info["largest_share"] > 0.5 and info["largest_is_linear"]:
        st.warning(f"**{info['largest_share']:.0%} of all parameters sit in one layer (`{name}`, {count:,}).** "
                   "A flatten head over a large feature map is what makes the seed's networks big and slow; "
                   "global average pooling (head = gap) or more blocks shrink it.")
    with st.expander("Parameters per layer"):
        st.plotly_chart(parameter_bar_figure(info["layers"]), key="param_layers", width="stretch")
