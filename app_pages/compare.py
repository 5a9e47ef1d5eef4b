"""Compare tested runs: metrics with intervals, confusion matrices, PR curves, calibration, training curves,
settings that differ; then one run up close: threshold, error browser, run card."""

import pandas as pd
import streamlit as st

from app.compare_sections import (
    calibration_section,
    confusion_section,
    cross_validation_section,
    error_browser_section,
    image_by_image_section,
    metrics_down,
    operating_point_section,
    run_card_section,
    uncertainty_section,
)
from app.dataset import current_fingerprint, source_words
from app.identity import visible_runs
from app.manager import manager
from app.portable import portable_section
from app.text import escape_markdown, shown
from medcls.analysis.comparison import as_trained, comparability, config_rows, metrics_rows, read_alike
from medcls.analysis.copies import run_copies_sentence
from medcls.config import describe_differences
from medcls.data import default_focus_class
from medcls.figures.evaluation import pr_curves_figure
from medcls.figures.training import overlay_history_figure, validated
from medcls.runs.choice import comparable_default, state_words
from medcls.runs.naming import display_names
from medcls.runs.permissions import owner_words
from medcls.runs.records import RecordError, fold_histories, latest_fold, member_word
from medcls.runs.store import RunNotFoundError

CURVES = {"val_macro_f1": "Validation macro-F1", "val_accuracy": "Validation accuracy",
          "val_balanced_accuracy": "Validation balanced accuracy", "val_loss": "Validation loss",
          "train_loss": "Training loss", "train_accuracy": "Training accuracy"}


def run_choice(run_id: str) -> str:
    summary = summaries[run_id]
    return names[run_id] + (f" · ⏹ {state_words(summary)}" if summary.stopped else "")

st.title("📊 Compare runs")
store = manager().store
listed = visible_runs(store.list())
summaries = {s.run_id: s for s in listed if s.tested and not s.damaged}
untested = [s for s in listed if s.state == "finished" and not s.tested]
if untested:  # e.g. trained with a test share of 0: nothing to compare on the test images
    st.caption("Not listed (finished without test images, e.g. with a test share of 0): "
               + ", ".join(shown(s.name) for s in untested[:5]) + (" …" if len(untested) > 5 else "") + ".")
if not summaries:
    st.info("No tested runs yet. Train one or two on the **Train** page, then come back.")
    portable_section(store, None)  # or import a run trained elsewhere
    st.stop()
names = display_names(summaries.values())
gone = [r for r in st.session_state.get("compare_runs") or [] if r not in summaries]
if gone:
    st.info(f"No longer available (deleted): {', '.join(gone)}.")
    st.session_state["compare_runs"] = [r for r in st.session_state["compare_runs"] if r in summaries]
ids = list(summaries)
first = comparable_default(summaries.values(), data_fingerprint=current_fingerprint())  # on the sidebar's data
chosen = st.multiselect("Runs", ids, default=first, key="compare_runs", format_func=run_choice,
                        help="Tested runs, newest first. To start with, the newest run on the dataset in the sidebar "
                             "(or the newest run, if none is) and the newest other run tested on the same images "
                             "with the same classes are picked (never runs whose test data differ). A stopped run "
                             "is marked ⏹: what it had trained so far was tested.")
if not chosen:
    st.stop()
cvs = {r: cv for r in chosen if (cv := store.cross_validation(r)) is not None}


def epochs_cell(run_id: str) -> str:
    """A finished fold ensemble: every fold model's epochs (the latest fold's alone would hide the others)."""
    cv, summary = cvs.get(run_id), summaries[run_id]
    if cv is not None and cv.scores and cv.completed == cv.folds and summary.state == "finished":
        return cv.epochs_words(summary.epochs)
    return summary.epochs_words()


# One column per run, like the metric tables below: a 1280 px projector shows every field without scrolling.
st.dataframe(metrics_down(pd.DataFrame([{
    "run": names[r],
    "test macro-F1": "–" if summaries[r].test_macro_f1 is None else f"{summaries[r].test_macro_f1:.3f}",
    "how it ended": state_words(summaries[r]), "epochs": epochs_cell(r),
    "started by": owner_words(summaries[r].owner, summaries[r].owner_name),
    "data": summaries[r].dataset, "classes": ", ".join(summaries[r].classes) or "–"}
    for r in chosen]).set_index("run"), label="run"), width="stretch", height="content", key="compare_chosen",
    placeholder="–")

try:
    predictions = {r: store.predictions(r, "test") for r in chosen}
    saved = {r: store.config(r) for r in chosen}
    # As trained: Image size 0 and the automatic ensemble as each run chose them (What differs compares them).
    configs = {r: as_trained(store.trained_config(r, saved[r]), store.model_record(r), cvs.get(r)) for r in chosen}
    metrics = {r: store.metrics(r) for r in chosen}
except (RunNotFoundError, FileNotFoundError, RecordError) as exc:
    st.error(f"A chosen run cannot be read (was it deleted?): {shown(exc)}")
    st.stop()
if any(m is None or m.test is None for m in metrics.values()):
    st.error("A chosen run has no test results any more (was it deleted?). Pick another run.")
    st.stop()
chosen_summaries = {r: summaries[r] for r in chosen}
check = comparability({r: s.dataset for r, s in chosen_summaries.items()},
                      {r: s.data_fingerprint for r, s in chosen_summaries.items()},
                      {r: predictions[r].classes for r in chosen})
for message in check.messages:
    st.warning(escape_markdown(message), icon="⚠️")
for r in chosen:
    if metrics[r].stopped:
        st.caption(f"⏹️ {shown(names[r])} was stopped at epoch {summaries[r].epochs_words()}: "
                   f"{summaries[r].kept_words()}.")

all_classes = list(dict.fromkeys(c for r in chosen for c in predictions[r].classes))
trained_focus = [metrics[r].focus_class for r in chosen if metrics[r].focus_class in all_classes]
focus_default = trained_focus[0] if trained_focus else default_focus_class(all_classes)  # the runs' own focus
if st.session_state.get("compare_focus") not in all_classes:  # a class of runs no longer chosen
    st.session_state.pop("compare_focus", None)
focus = st.selectbox("Focus class", all_classes, index=all_classes.index(focus_default), key="compare_focus",
                     help="Highlighted in the curves and shown first in the table. By default the class the runs "
                          "tracked: a class that names the finding (malignant, cancer, pneumonia, ...; the seed notebook cared "
                          "most about malignant) when present, else the rarest.")
lacking = [names[r] for r in chosen if focus not in predictions[r].classes]
if lacking:
    st.caption(f"{escape_markdown(', '.join(lacking))} {'has' if len(lacking) == 1 else 'have'} no class "
               f"{escape_markdown(focus)}: '–' in its columns, and no curve for it.")

st.subheader("Test metrics")
rows = metrics_rows({r: metrics[r].test for r in chosen}, names, focus)
table = pd.DataFrame(rows).set_index("run").astype(float)
# Shown as text: a missing value (a class the run does not have) reads "–", never "None". Metrics down and runs
# across: a few runs fit the page's width, where a column per metric would scroll sideways.
st.dataframe(metrics_down(table.map(lambda v: "–" if pd.isna(v) else f"{v:.3f}")), width="stretch", height="content",
             key="compare_metrics", placeholder="–")
for r in chosen:  # test images that are copies of training images flatter the score: say by how much
    if copies := run_copies_sentence(store, r, metrics[r], predictions[r]):
        st.warning(f"**{escape_markdown(names[r])}**: {escape_markdown(copies)} For an honest score, train on a split "
                   "that keeps copies together (the Data explorer's *Duplicates and leaks* section makes one).",
                   icon="🪞")

if cvs:
    st.subheader("Cross-validation")
    cross_validation_section({names[r]: cv for r, cv in cvs.items()}, {names[r]: metrics[r].focus_class for r in chosen})

st.subheader("How sure are these numbers?")
uncertainty_section(store, chosen, names, focus)
if len(chosen) > 1:
    image_by_image_section(predictions, names, focus)

st.subheader("Confusion matrices")
confusion_section(store, chosen, metrics, predictions, names)

st.subheader("Precision-recall curves")
cols = st.columns(min(len(chosen), 2))
for i, run_id in enumerate(chosen):
    p = predictions[run_id]
    with cols[i % len(cols)]:
        st.plotly_chart(pr_curves_figure(p.y_true, p.probs, p.classes, focus, title=names[run_id]),
                        key=f"pr_{run_id}", width="stretch")

st.subheader("Calibration: can the probabilities be trusted?")
calibration_section(predictions, names, focus)

st.subheader("Training curves")
curves = {}
folded = bagged = False  # a cross-validation run among them; a run of bagged models among them
for run_id in chosen:  # each fold's model starts again at epoch 1: a fold is a curve of its own, never one long line
    history = store.history(run_id)
    if len(chosen) > 1:  # several runs: each run's latest fold, so that the runs stay readable side by side
        latest, fold = latest_fold(history)
        folds = {fold: latest}
    else:
        folds = fold_histories(history)
    word = member_word(bool(configs[run_id].bagged_models))
    for fold, epochs in folds.items():
        curves[names[run_id] + (f" · {word} {fold}" if fold else "")] = epochs
        folded = folded or bool(fold and not configs[run_id].bagged_models)
        bagged = bagged or bool(fold and configs[run_id].bagged_models)
# Runs without validation images (bagged models, no val split) have training curves only: offer just those, in a
# picker of their own (one picker whose options change keeps showing its old choice in the browser).
any_validated = any(validated(epochs) for epochs in curves.values())
offered = [key for key in CURVES if any_validated or not key.startswith("val_")]
metric = st.selectbox("Curve", offered, format_func=CURVES.get,
                      key="compare_curve" if any_validated else "compare_curve_training")
st.plotly_chart(overlay_history_figure(curves, metric, title=CURVES[metric],
                                       axis_title=CURVES[metric]), key="overlay", width="stretch")
if folded:
    st.caption(("Each fold model of a cross-validation run starts again at epoch 1, validated on its own fold, so "
                "each fold is a curve of its own" if len(chosen) == 1 else
                "A cross-validation run is drawn by its latest fold (each fold model starts again at epoch 1); pick "
                "it alone to see every fold")
               + ". The Cross-validation table above has every fold's score.")
if bagged:
    st.caption(("Each bagged model starts again at epoch 1, so each is a curve of its own" if len(chosen) == 1 else
                "A run of bagged models is drawn by its latest model (each starts again at epoch 1); pick it alone "
                "to see every model")
               + ". Bagged models learn from every training and validation image, so they have no validation "
                 "curves: their test scores above are the only check.")

st.subheader("What differs")
if len(chosen) > 1:
    base = chosen[0]
    compared = configs
    if check.same_data and len(places := dict.fromkeys(configs[r].data.source for r in chosen)) > 1:
        compared = read_alike(configs)
        st.caption("These runs read the same images (the same contents, labels and splits) from different places: "
                   f"{'; '.join(source_words(place) for place in places)}.")
    for other in chosen[1:]:
        st.markdown(f"**{shown(names[base])} → {shown(names[other])}:** "
                    f"{shown(describe_differences(compared[base], compared[other]))}")
    diff = config_rows(compared, names)
    if diff:
        st.dataframe(pd.DataFrame(diff).set_index("setting"), width="stretch", placeholder="–")
    if any(configs[r] != saved[r] for r in chosen):
        st.caption("Image size, folds and bagged models are what each run trained: *Image size* 0 and *Ensemble "
                   "for small datasets* choose them for the data.")
else:
    st.caption("Pick two or more runs to see how their settings differ.")

st.header("Look closer at one run")
run_id = st.selectbox("Run", chosen, key="analysis_run", format_func=lambda r: names[r]) \
    if len(chosen) > 1 else chosen[0]
threshold_tab, errors_tab, card_tab = st.tabs(["Choose a threshold", "Error browser", "Run card"])
with threshold_tab:
    st.caption(f"Trade missed cases against false alarms. The most probable class is not the only way to decide: "
               f"flagging an image as {shown(focus)} at a lower probability catches more, at the price of more false "
               "alarms.")
    operating_point_section(store, run_id, focus)
with errors_tab:
    error_browser_section(store, run_id, focus)
with card_tab:
    run_card_section(store, run_id, names[run_id])
portable_section(store, run_id)
