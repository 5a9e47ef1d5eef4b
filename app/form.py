"""The training form, generated from TrainConfig's own fields.

Labels are short; the help text under each "?" is the plain-language reason
stored with the field in ``medcls.config``, so the form, the CLI and the saved
config always agree. Values persist across page changes under a session key.
"""

from __future__ import annotations

import typing

import streamlit as st

from medcls.config import ConfigError, DataConfig, OptionInfo, TrainConfig, option_info
from medcls.models import list_models, model_entry

SECTIONS: list[tuple[str, list[str], bool]] = [
    ("Model", ["name", "weights", "finetune"], True),
    ("Architecture", ["blocks", "filters", "growth", "kernel_size", "batch_norm", "activation", "pooling", "head",
                      "fc_widths", "dropout"], False),
    ("Images and augmentation", ["image_size", "augment", "hflip", "vflip", "rotate", "scale", "translate",
                                 "brightness", "contrast", "tta"], False),
    ("Learning", ["epochs", "batch_size", "optimizer", "lr", "weight_decay", "momentum", "scheduler", "step_size",
                  "gamma", "ema_decay"], True),
    ("Rare classes", ["imbalance", "oversample", "select_metric", "focus_class", "patience"], True),
    ("Speed and reproducibility", ["seed", "precision", "channels_last", "feature_cache", "feature_views",
                                   "threads"], False),
]
LABELS = {
    "name": "Model", "lr": "Learning rate", "fc_widths": "Fully connected widths", "augment": "Augmentation",
    "hflip": "Random left-right flips", "vflip": "Random up-down flips", "rotate": "Max rotation (°)",
    "scale": "Max zoom", "translate": "Max shift", "select_metric": "Pick the best epoch by",
    "imbalance": "Imbalance strategy", "oversample": "Oversampling multipliers", "focus_class": "Focus class",
    "image_size": "Image size (px)", "batch_size": "Batch size", "weight_decay": "Weight decay",
    "step_size": "StepLR step (epochs)", "gamma": "StepLR factor", "patience": "Early-stopping patience",
    "channels_last": "Channels-last memory", "feature_cache": "Cache frozen features",
    "feature_views": "Augmented views to cache", "kernel_size": "Kernel size", "batch_norm": "Batch norm",
    "finetune": "Fine-tune", "ema_decay": "Weight averaging (EMA decay)", "tta": "Mirror at test time (TTA)",
    "blocks": "Conv blocks", "filters": "First-block filters", "growth": "Filter growth",
}
STATE_KEY = "train_options"
PRESET = "preset default"
_FLOAT_FORMAT = {"lr": "%.1e", "weight_decay": "%.1e"}


def _label(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


def _widget(info: OptionInfo, value: typing.Any, key: str, disabled: bool = False):
    name, meta, optional, base = info.name, info.field.metadata, info.optional, info.base
    help_text = info.help
    choices = list(list_models()) if name == "name" else meta.get("choices")
    kwargs = dict(label=_label(name), help=help_text, key=key, disabled=disabled)
    if choices:
        options = ([PRESET] if optional else []) + list(choices)
        current = PRESET if value is None and optional else value
        picked = st.selectbox(options=options, index=options.index(current) if current in options else 0,
                              format_func=str, **kwargs)
        return None if picked == PRESET else picked
    if base is bool:
        if optional:
            options = [PRESET, "on", "off"]
            current = PRESET if value is None else ("on" if value else "off")
            picked = st.selectbox(options=options, index=options.index(current), **kwargs)
            return None if picked == PRESET else picked == "on"
        return st.toggle(value=bool(value), **kwargs)
    if base in (int, float):
        number = dict(min_value=meta.get("min"), max_value=meta.get("max"))
        if base is int:
            number = {k: (int(v) if v is not None else None) for k, v in number.items()}
            return st.number_input(value=value, step=1, placeholder=PRESET, **number, **kwargs)
        number = {k: (float(v) if v is not None else None) for k, v in number.items()}
        if meta.get("gt") is not None and number["min_value"] is None:
            number["min_value"] = 0.0
        return st.number_input(value=None if value is None else float(value), format=_FLOAT_FORMAT.get(name, "%.3f"),
                               step=_float_step(name, value), placeholder=PRESET, **number, **kwargs)
    if typing.get_origin(base) is tuple:
        text = st.text_input(value="" if value is None else ", ".join(map(str, value)), placeholder=PRESET
                             if optional else "", **kwargs)
        return None if optional and not text.strip() else text
    return st.text_input(value="" if value is None else str(value), **kwargs)


def _float_step(name: str, value: float | None) -> float:
    if name in _FLOAT_FORMAT:
        return max(1e-6, (value or 1e-3) / 2)
    return 0.05


def render_form(data: DataConfig) -> tuple[TrainConfig | None, str | None]:
    """Draw the form; return (config, None) or (None, error message)."""
    saved: dict = st.session_state.get(STATE_KEY) or TrainConfig().flat()
    infos = option_info()
    values: dict = {}
    model_name = saved.get("name", "small_cnn")
    for title, names, expanded in SECTIONS:
        with st.expander(title, expanded=expanded):
            if title == "Architecture":
                st.caption("Options of the configurable CNNs (small_cnn, seed_cnn, seed_cnn_bn). "
                           "Leave a value at “preset default” to keep the chosen preset's setting.")
            cols = st.columns(2)
            for i, name in enumerate(names):
                disabled = _not_applicable(name, values.get("name", model_name))
                with cols[i % 2]:
                    values[name] = _widget(infos[name], saved.get(name), f"opt_{name}", disabled)
                if disabled:
                    values[name] = saved.get(name) if name not in ARCH_NAMES else None
    st.session_state[STATE_KEY] = {**saved, **values}
    try:
        cfg = TrainConfig(data=data).with_options(**values)
    except (ConfigError, ValueError) as exc:
        return None, str(exc)
    return cfg, None


ARCH_NAMES = set(SECTIONS[1][1])


def _not_applicable(name: str, model_name: str) -> bool:
    """Grey out options the chosen model ignores (architecture for resnet, weights for CNNs)."""
    try:
        entry = model_entry(model_name)
    except KeyError:
        return False
    if name in ARCH_NAMES:
        return name not in entry.accepts()
    if name in ("weights", "finetune"):
        return not entry.pretrained
    return False
