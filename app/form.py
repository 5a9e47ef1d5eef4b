"""The training form, generated from the options' declarations.

Groups, labels, help, bounds and when an option applies all come from
``medcls.config`` (and each model's own options from the model registry): this
file holds no option names. An option that has no effect with the current
choices is shown disabled, with the reason. A model's own options start from that
model's values; switching the model shows the new model's options.
"""

from __future__ import annotations

import typing
from typing import Any

import streamlit as st

from medcls.config import (
    GROUPS,
    ConfigError,
    DataConfig,
    OptionSpec,
    TrainConfig,
    applies_text,
    format_value,
)
from medcls.config.table import option_table

from .url_state import FORM_KEY, save_form

STATE_KEY = FORM_KEY   # the last valid form as flat option values (no widget owns this key; mirrored in the URL)
MODEL_KEY = "opt_model"


def widget_key(spec: OptionSpec, model: str) -> str:
    """A model's own options get one widget per model, so each model keeps its own values."""
    return f"opt_{model}_{spec.name}" if spec.is_model_option else f"opt_{spec.name}"


def _widget(spec: OptionSpec, value: Any, key: str, disabled: bool) -> Any:
    opt = spec.option
    help_text = opt.help if not disabled else \
        f"{opt.help}\n\n*Not used now: it applies only {applies_text(opt.applies)}.*"
    kwargs = dict(label=opt.label, help=help_text, key=key, disabled=disabled)
    choices = opt.allowed()
    if choices:
        options = list(choices)
        return st.selectbox(options=options, index=options.index(value) if value in options else 0,
                            format_func=lambda v: format_value(v, spec.name), **kwargs)
    if spec.base is bool:
        return st.toggle(value=bool(value), **kwargs)
    if spec.base in (int, float):
        low = opt.gt if opt.gt is not None and opt.min is None else opt.min
        if spec.base is int:
            return st.number_input(value=int(value), step=opt.step or 1, min_value=None if low is None else int(low),
                                   max_value=None if opt.max is None else int(opt.max), **kwargs)
        return st.number_input(value=float(value), format=opt.number_format or "%.3f",
                               step=max(1e-6, abs(float(value)) / 2) if opt.number_format else 0.05,
                               min_value=None if low is None else float(low),
                               max_value=None if opt.max is None else float(opt.max), **kwargs)
    if typing.get_origin(spec.base) is tuple:
        return st.text_input(value=", ".join(map(str, value)), placeholder="none", **kwargs)
    return st.text_input(value=str(value), **kwargs)


def saved_config(data: DataConfig) -> TrainConfig:
    """The form's last valid options on ``data`` (the defaults on a fresh page)."""
    saved = st.session_state.get(STATE_KEY) or {}
    try:
        return TrainConfig(data=data).with_options(strict=False, **saved)
    except (ConfigError, ValueError):
        return TrainConfig(data=data)


def _group_specs(table: dict[str, OptionSpec], title: str, current: dict[str, Any]) -> list[OptionSpec]:
    return [spec for name, spec in table.items()
            if spec.option.group == title and name in current and name != "model"]


def render_form(data: DataConfig) -> tuple[TrainConfig | None, str | None]:
    """Draw the form; return (config, None) or (None, error message)."""
    table = option_table()
    base = saved_config(data)
    values: dict[str, Any] = {}
    model, current = base.model, base.flat()
    for group in GROUPS.values():
        if group.title == "Data":
            continue
        with st.expander(group.title, expanded=group.expanded):
            if group.title == "Model":  # the model decides which of its own options follow
                model = _widget(table["model"], base.model, MODEL_KEY, False)
                current = base.with_options(strict=False, model=model).flat()
            specs = _group_specs(table, group.title, current)
            if group.caption and specs:
                st.caption(group.caption)
            if group.title == "Architecture" and not specs:
                st.caption(f"{model} has no architecture options of its own.")
            # Switches take a whole row (their labels are long sentences); other widgets sit two to a row.
            switches = [spec for spec in specs if spec.base is bool and not spec.option.allowed()]
            others = [spec for spec in specs if spec not in switches]
            # Switches come first, as they decide whether the others apply; a switch that itself depends on one
            # of the others ('Ensemble for small datasets' on 'Cross-validation folds') comes after them.
            names = {spec.name for spec in others}
            after = [spec for spec in switches if spec.option.applies and names & set(spec.option.applies.names())]
            before = [spec for spec in switches if spec not in after]
            top = st.container()
            cols = st.columns(2) if others else []
            bottom = st.container()
            for spec in before + others + after:
                applies = spec.option.applies is None or spec.option.applies.holds({**current, **values})
                where = top if spec in before else bottom if spec in after else cols[others.index(spec) % 2]
                with where:
                    value = _widget(spec, current[spec.name], widget_key(spec, model), not applies)
                if applies:
                    values[spec.name] = value
    try:
        result = TrainConfig(data=data).with_options(model=model, **values)
    except (ConfigError, ValueError) as exc:
        return None, str(exc)
    st.session_state[STATE_KEY] = {"model": model, **{k: v for k, v in result.applicable().items()
                                                      if table[k].section != "data"}}
    save_form(st.session_state[STATE_KEY], data)
    return result, None
