"""Compare finished runs: metrics with intervals, confusion matrices, PR curves, calibration, training curves,
config differences; then one run up close: threshold, error browser, run card."""

import pandas as pd
import streamlit as st

from app.entry import ensure_navigation
from app.compare_sections import (
    calibration_section,
    error_browser_section,
    operating_point_section,
    run_card_section,
    uncertainty_section,
)
from app.manager import manager
from medcls.compare import config_rows, describe_differences, metrics_rows
from medcls.data import default_focus_class
from medcls.figures import confusion_matrix_figure, overlay_history_figure, pr_curves_figure
from medcls.runs import RunNotFoundError

ensure_navigation()
st.title("📊 Compare runs")
store = manager().store
finished = [i.run_id for i in store.list() if i.state == "finished"]
if not finished:
    st.info("No finished runs yet. Train one or two on the **Train** page, then come back.")
    st.stop()
gone = [r for r in st.session_state.get("compare_runs") or [] if r not in finished]
if gone:
    st.info(f"No longer available (its folder was deleted): {', '.join(gone)}.")
chosen = st.multiselect("Finished runs", finished, default=finished[:2], key="compare_runs",
                        help="Newest first. Pick one or more.")
if not chosen:
    st.stop()

try:
    predictions = {r: store.predictions(r, "test") for r in chosen}
    configs = {r: store.config(r) for r in chosen}
    infos = {r: store.read_json(r, "model.json", {}) or {} for r in chosen}
except (RunNotFoundError, FileNotFoundError) as exc:
    st.error(f"A chosen run cannot be read (was it deleted?): {exc}")
    st.stop()

classes = next(iter(predictions.values()))[3]
focus = st.selectbox("Focus class", classes, index=classes.index(default_focus_class(classes)),
                     key="compare_focus", help="Highlighted in the curves. By default malignant/cancer, the class "
                                               "the seed notebook cared most about.")

st.subheader("Test metrics")
rows = metrics_rows(store, chosen)
table = pd.DataFrame(rows).set_index("run")
st.dataframe(table.style.format("{:.3f}", na_rep="–"), width="stretch")

st.subheader("How sure are these numbers?")
uncertainty_section(store, chosen)

st.subheader("Confusion matrices")
normalize = st.toggle("Row-normalised (share of each true class)", value=False, key="cm_normalize",
                      help="Counts show how many images; row-normalised shows each true class's recall on "
                           "the diagonal.")
cols = st.columns(len(chosen))
for col, run_id in zip(cols, chosen):
    metrics = (store.read_json(run_id, "metrics.json", {}) or {})["test"]
    with col:
        st.plotly_chart(confusion_matrix_figure(metrics["confusion_matrix"], metrics["classes"], normalize=normalize,
                                                title=run_id), key=f"cm_{run_id}", width="stretch")

st.subheader("Precision-recall curves")
cols = st.columns(min(len(chosen), 2))
for i, run_id in enumerate(chosen):
    _, y_true, probs, run_classes = predictions[run_id]
    with cols[i % len(cols)]:
        st.plotly_chart(pr_curves_figure(y_true, probs, run_classes, focus, title=run_id), key=f"pr_{run_id}",
                        width="stretch")

st.subheader("Calibration: can the probabilities be trusted?")
calibration_section(store, predictions, classes, focus)

st.subheader("Training curves")
metric = st.selectbox("Curve", ["val_macro_f1", "val_accuracy", "val_loss", "train_loss", "train_accuracy",
                                "val_balanced_accuracy"], key="compare_curve")
st.plotly_chart(overlay_history_figure({r: store.history(r) for r in chosen}, metric), key="overlay",
                width="stretch")

st.subheader("What differs")
if len(chosen) > 1:
    base = chosen[0]
    for other in chosen[1:]:
        st.markdown(f"**{base} → {other}:** {describe_differences(configs[base], configs[other], infos[base], infos[other])}")
    diff = config_rows(configs, infos)
    if diff:
        st.dataframe(pd.DataFrame(diff).set_index("option"), width="stretch")
else:
    st.caption("Pick two or more runs to see how their settings differ.")

st.header("Look closer at one run")
run_id = st.selectbox("Run", chosen, key="analysis_run") if len(chosen) > 1 else chosen[0]
threshold_tab, errors_tab, card_tab = st.tabs(["Choose a threshold", "Error browser", "Run card"])
with threshold_tab:
    st.caption(f"Trade missed cases against false alarms. The most probable class is not the only way to decide: "
               f"flagging an image as {focus} at a lower probability catches more, at the price of more false "
               "alarms.")
    operating_point_section(store, run_id, focus)
with errors_tab:
    error_browser_section(store, run_id, focus)
with card_tab:
    run_card_section(store, run_id)
