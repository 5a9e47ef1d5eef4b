"""Sweeps: queue every combination of a few values of one or two settings, and rank the runs as they train."""

import pandas as pd
import streamlit as st

from app.dataset import current_data_config, dataset_caption, load_current_dataset, typical_image_side
from app.form import render_form
from app.identity import run_meta, visible_runs
from app.manager import manager
from app.model_summary import render_group_estimate
from app.run_actions import queue_all_or_none, stop_button
from app.safety import guarded
from app.text import escape_markdown, shown
from medcls.config import TrainConfig, format_value, label
from medcls.data.explore import enlargement_note
from medcls.experiments.sweeps import (
    MAX_SETTINGS,
    MAX_VALUES,
    RANK_METRICS,
    SweepError,
    expand_grid,
    list_sweeps,
    parse_values,
    rank_rows,
    starting_values,
    submit_sweep,
    sweep_rows,
    sweepable_options,
    unranked_note,
    value_choices,
)
from medcls.figures.training import sweep_figure
from medcls.runs.records import ACTIVE_STATES
from medcls.training.autoplan import group_models_words, plan_for, pool_counts, resolve_image_size, train_alike


def values_widget(name: str, base: TrainConfig) -> list:
    current = base.flat().get(name)
    options = value_choices(name)
    if options is not None:
        start = [current] + [o for o in options if o != current][:1] if current in options else options[:2]
        # "Select all" only where all of them fit; beyond MAX_VALUES it would quietly pick the first few.
        return st.multiselect(f"Values of **{label(name)}**", options, default=start, max_selections=MAX_VALUES,
                              format_func=lambda v: format_value(v, name), key=f"sweep_values_{name}",
                              select_all=len(options) <= MAX_VALUES)
    text = st.text_input(f"Values of **{label(name)}** (2 to {MAX_VALUES}, separated by commas)",
                         value=starting_values(name), key=f"sweep_values_{name}",
                         placeholder=f"e.g. {format_value(current)}, …")
    return parse_values(text)


st.title("🧪 Sweeps")
st.caption("Explore settings without code: pick one or two settings and a few values of each. Every combination "
           "trains as its own run (they queue and run one after another), and the table below ranks them by "
           "their validation score while they train.")
data_cfg = current_data_config()
spec = load_current_dataset(data_cfg)
counts = pool_counts(spec) if spec is not None else []
side = typical_image_side(data_cfg) if spec is not None else None

st.subheader("1 · Start from the Train page's options")
if spec is not None:
    st.caption(dataset_caption(spec))
with st.expander("Base options (shared with the Train page)", expanded=False):
    base, form_error = render_form(data_cfg)
if form_error:
    st.error(shown(form_error))
else:
    def base_words(name: str) -> str:
        if name == "image_size" and not base.image_size and counts:  # say what 0 chooses here, as Train does
            return f"{label(name)} 0 ({resolve_image_size(base, counts, side)[0].image_size} px for these images)"
        return f"{label(name)} {format_value(base.flat()[name], name)}"

    st.caption("Base: " + ", ".join(base_words(k) for k in ("model", "image_size", "epochs", "lr", "imbalance")) + ".")

st.subheader("2 · Choose what to vary")
names = st.multiselect("Settings to vary (one or two)", sweepable_options(base), max_selections=MAX_SETTINGS,
                       format_func=label, key="sweep_settings", select_all=False,  # it would pick the first two
                       help="For example the imbalance strategy and the learning rate: 2 x 2 values = 4 runs.")
settings = {}
for name in names:
    settings[name] = values_widget(name, base or TrainConfig(data=data_cfg))
points, grid_error = [], None
if base is not None and names:
    try:
        points = expand_grid(base, settings)
    except SweepError as exc:
        grid_error = str(exc)
if grid_error:
    st.error(shown(grid_error))
elif points:
    run_labels = [", ".join(f"{label(k)} {format_value(v, k)}" for k, v in p.values.items()) for p in points]
    st.caption(f"{len(points)} runs: " + "; ".join(run_labels))
    configs, alike = train_alike([p.config for p in points], counts, side) if counts else ([], None)
    largest = max((resolve_image_size(c, counts, side)[0].image_size for c in configs), default=0)
    if "image_size" in names and (enlarged := enlargement_note(largest, side)):
        st.caption(f"🔍 {escape_markdown(enlarged)}")  # a sweep over sizes asks what detail buys
    if alike:
        st.info(escape_markdown(alike), icon=":material/info:")
    elif len(words := {group_models_words(plan_for(c, counts, side), "sweep") for c in configs}) == 1 and \
            (group_words := words.pop()) and not (base.folds or base.bagged_models):
        st.caption(escape_markdown(group_words))
time_box = st.container()  # filled last (below): timing the runs takes seconds on a fresh machine
just_queued = False
queue = st.button(f"▶ Queue {len(points)} runs" if points else "▶ Queue the runs", type="primary",
                  disabled=not points or spec is None, key="sweep_start")
if queue and base is not None:
    meta = run_meta()
    queued_sweep = queue_all_or_none(len(points), lambda: submit_sweep(
        manager().store, lambda cfg, **kw: manager().submit(cfg, meta=meta, **kw), base, settings,
        pool_counts=counts, side=side), (SweepError,))
    if queued_sweep is not None:
        just_queued = True
        st.session_state["sweep_pick"] = queued_sweep.sweep_id
        st.toast(f"Queued {len(queued_sweep.runs)} runs ({queued_sweep.sweep_id})")


def fill_time_box(just_stopped: bool = False) -> None:
    """The sweep's time, drawn last: nothing above it waits for the timing probe."""
    if points and spec is not None and configs:
        with time_box:
            render_group_estimate(configs, run_labels, spec, "sweep", just_queued=just_queued,
                                  just_stopped=just_stopped)


st.subheader("3 · Results")
store = manager().store
seen = {s.run_id for s in visible_runs(store.list())}  # "own runs only": the sweeps with runs this person sees
sweeps = {s.sweep_id: s for s in list_sweeps(store) if any(r["run_id"] in seen for r in s.runs)}
if not sweeps:
    st.info("No sweeps yet. Choose settings above and press **Queue**.")
    fill_time_box()
    st.stop()
if st.session_state.get("sweep_pick") not in sweeps:
    st.session_state["sweep_pick"] = next(iter(sweeps))
pick = st.selectbox("Sweep", list(sweeps), key="sweep_pick", format_func=lambda s: f"{s} · {sweeps[s].describe()}",
                    help="Newest first.")
metric = st.selectbox("Rank by", list(RANK_METRICS), format_func=RANK_METRICS.get, key="sweep_metric")
sweep = sweeps[pick]
unfinished = [r["run_id"] for r in sweep_rows(store, sweep) if r["state"] in ACTIVE_STATES]
active = bool(unfinished)


@st.fragment(run_every=2.0 if active else None)
@guarded
def results() -> None:
    rows = rank_rows(sweep_rows(store, sweep), metric)
    states = pd.Series([r["state"] for r in rows]).value_counts()
    st.caption(" · ".join(f"{n} {state}" for state, n in states.items()))
    if note := unranked_note(rows, metric):
        st.info(escape_markdown(note), icon=":material/info:")
    if active and not any(r["state"] in ACTIVE_STATES for r in rows):
        st.rerun()  # all runs ended: redraw once, without the timer
    if rows and rows[0]["rank"] == 1:
        best = rows[0]
        st.success("Best so far: " + ", ".join(f"{label(k)} **{format_value(best[k], k)}**" for k in sweep.settings)
                   + f" with {best[metric]:.3f} ({escape_markdown(best['name'])}).")
    table = pd.DataFrame([{
        "rank": r["rank"], **{label(k): format_value(r.get(k), k) for k in sweep.settings}, "state": r["state"],
        "epochs": r["epochs_words"], "best validation score": r["best_score"],
        "validation macro-F1": r["val_macro_f1"], "test macro-F1": r["test_macro_f1"], "run": r["name"]}
        for r in rows])
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "rank": st.column_config.NumberColumn(format="%d"),
        **{c: st.column_config.NumberColumn(format="%.3f") for c in
           ("best validation score", "validation macro-F1", "test macro-F1")}}, placeholder="–")
    axes = [(label(k), [format_value(v, k) for v in values]) for k, values in sweep.settings.items()]
    cells = {tuple(format_value(r.get(k), k) for k in sweep.settings): r[metric] for r in rows}
    st.plotly_chart(sweep_figure(axes, cells, RANK_METRICS[metric].split(" (")[0]), key="sweep_figure",
                    width="stretch")


results()
# Stop is drawn with the page, not in the results' fragment (see stop_button); no timing in the run it stopped.
fill_time_box(just_stopped=bool(unfinished) and stop_button(unfinished, "sweep_stop"))
st.caption("Runs of a sweep are ordinary runs: watch one train on the **Train** page, or compare the finished ones "
           "on **Compare runs**.")
