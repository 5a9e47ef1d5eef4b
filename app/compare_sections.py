"""Sections of the Compare page beyond the metrics table: intervals, calibration, thresholds, errors, run card.

Each function collects its input widgets, calls medcls, and renders. The operating-point and
error-browser sections are fragments: moving the threshold slider or picking a cell reruns only them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from medcls.analysis.calibration import calibration_sentence, reliability
from medcls.analysis.error_cases import Case, cell_cases, cell_options, copies_caption, default_cell
from medcls.analysis.operating_point import (
    NO_THRESHOLD_WITHOUT_HELD_OUT,
    BinaryView,
    default_positive_group,
    describe_most_probable_class,
    describe_operating_point,
    most_probable_class_point,
    operating_point,
    threshold_for_sensitivity,
    threshold_sweep,
)
from medcls.analysis.paired import image_by_image
from medcls.analysis.uncertainty import (
    FLAT_INTERVAL_NOTE,
    has_flat_interval,
    interval_rows,
    run_intervals,
    small_class_warnings,
)
from medcls.data.explore import thumbnail
from medcls.figures.analysis import (
    interval_figure,
    reliability_figure,
    score_histogram_figure,
    threshold_sweep_figure,
)
from medcls.figures.evaluation import confusion_matrix_figure, probability_figure
from medcls.figures.report import run_card_html
from medcls.runs.records import RecordError
from medcls.runs.results import CrossValidation, Predictions, RunMetrics
from medcls.runs.store import RunNotFoundError, RunStore

from .cell_images import clickable_matrices
from .safety import guarded
from .text import escape_markdown
from .text import shown as safe_text

__all__ = ["metrics_down", "image_by_image_section", "confusion_section", "uncertainty_section", "calibration_section",
           "operating_point_section", "error_browser_section", "run_card_section", "cross_validation_section"]

THRESHOLD_STEP = 0.001
THUMB_PX = 160


def metrics_down(table: pd.DataFrame, label: str = "metric") -> pd.DataFrame:
    """A table of runs (rows) by metrics (columns) turned to metrics down and runs across: a few runs fit the
    page's width, where one column per metric would scroll sideways. ``label`` heads the metric names."""
    turned = table.T
    turned.index.name = label
    turned.columns.name = None
    return turned


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


# --- several runs -------------------------------------------------------------------------------------------

def uncertainty_section(store: RunStore, run_ids: list[str], names: dict[str, str], focus: str = "") -> None:
    """95% intervals per run, as a table and a forest plot, plus small-sample warnings."""
    intervals = {names[r]: run_intervals(store, r) for r in run_ids}
    st.dataframe(metrics_down(pd.DataFrame(interval_rows(intervals, focus)).set_index("run")), width="stretch",
                 height="content", placeholder="–")
    st.plotly_chart(interval_figure(intervals), key="intervals", width="stretch")
    flat = f" {FLAT_INTERVAL_NOTE}" if has_flat_interval(intervals) else ""
    paired = (" Runs whose intervals overlap may not really differ; runs tested on the same images are compared more "
              "sharply image by image below.") if len(run_ids) > 1 else ""
    st.caption("Each number is followed by its 95% interval. Accuracy and recall are shares of the test images "
               "(k of n), and their range is the Wilson score interval, which stays honest at 0% and 100%. For "
               "macro-F1 and AP the test images were resampled 1,000 times, and the range holds the middle 95% of "
               "the results." + flat + paired)
    for text in small_class_warnings(intervals):
        st.warning(safe_text(text), icon="🔢")


def image_by_image_section(predictions: dict[str, Predictions], names: dict[str, str], focus: str) -> None:
    """Each run against the first, on the test images both judged: McNemar's exact test (medcls/analysis/paired.py)."""
    findings, notes = image_by_image({names[r]: p for r, p in predictions.items()}, focus)
    if findings:
        st.markdown("**Image by image.** " + escape_markdown(
            f"Each run against {findings[0].reference}, on the images both were tested on:"))
        st.markdown("\n".join(f"- {escape_markdown(f.sentence)}" for f in findings))
        st.caption("Only the images one run got right and the other got wrong tell the two apart. McNemar's exact "
                   "test gives how often chance alone would split them so unevenly (p); below 0.05 is called a clear "
                   "difference. Intervals that overlap can hide such a difference: each interval also holds the luck "
                   "of which images ended up in the test split, which both runs share. A clear difference is one of "
                   "these runs on these images: another seed trains other models, and with many comparisons about one "
                   "in twenty crosses 0.05 by chance.")
    for note in notes:
        st.caption(escape_markdown(note))


def confusion_section(store: RunStore, chosen: list[str], metrics: dict[str, RunMetrics],
                      predictions: dict[str, Predictions], names: dict[str, str]) -> None:
    """Each run's confusion matrix on the test images; clicking a cell shows its images (app/cell_images.py)."""
    clickable_matrices(store, chosen, metrics, predictions, names)


def calibration_section(predictions: dict[str, Predictions], names: dict[str, str], focus: str) -> None:
    """Reliability diagram and ECE for each chosen run."""
    name = escape_markdown(focus)
    options = ["top-class probability", f"P({name})"]
    kind = st.radio("Judge", options, horizontal=True, key="cal_kind",
                    help="Top-class: when the model says 80% for its answer, is it right 80% of the time? "
                         f"P({name}): of the images given about 30% {name}, are about 30% {name}?")
    curves = {}
    for run_id, p in predictions.items():
        if kind == options[0]:
            curves[names[run_id]] = reliability(p.y_true, p.probs)
        elif focus in p.classes:
            curves[names[run_id]] = reliability(p.y_true, p.probs, class_index=p.classes.index(focus))
    if not curves:
        st.info(f"None of the chosen runs has the class {name}.")
        return
    st.plotly_chart(reliability_figure(curves), key="reliability", width="stretch")
    for name, rel in curves.items():
        st.markdown(f"**{escape_markdown(name)}:** {calibration_sentence(rel)}")


# --- one run: operating point ---------------------------------------------------------------------------------

def _binary_view(classes: list[str], focus: str) -> BinaryView | None:
    mode = st.radio("Positive group", ["One class against the rest", "Merge classes into a group"],
                    horizontal=True, key="op_mode",
                    help="Merging reproduces the seed notebook's binary view, e.g. lesion (benign + malignant) "
                         "against normal.")
    if mode == "One class against the rest":
        positive = [st.selectbox("Positive class", classes, index=classes.index(focus), key="op_class")]
    else:
        positive = st.multiselect("Classes in the positive group", classes, default=default_positive_group(classes),
                                  key="op_group", select_all=False)  # every class in it leaves no negative
    try:
        return BinaryView.of(classes, positive)
    except ValueError as exc:
        st.error(str(exc))
        return None


def _find_threshold(run_id: str, view: BinaryView, truth: np.ndarray, scores: np.ndarray) -> None:
    """Button callback: set the slider to the highest threshold that reaches the target on validation."""
    target = st.session_state["op_target"] / 100
    try:
        found = threshold_for_sensitivity(truth, scores, target, resolution=THRESHOLD_STEP)
    except ValueError as exc:
        st.session_state["op_found"] = {"error": str(exc), "positive": view.positive, "run": run_id}
        return
    st.session_state["op_threshold"] = found
    st.session_state["op_found"] = {"threshold": found, "target": target, "positive": view.positive, "run": run_id}


@st.fragment
@guarded
def operating_point_section(store: RunStore, run_id: str, focus: str) -> None:
    """Threshold slider with sensitivity, specificity, PPV, NPV and the 2x2 matrix, live."""
    try:
        val, test = store.predictions(run_id, "val"), store.predictions(run_id, "test")
    except (RunNotFoundError, FileNotFoundError, RecordError) as exc:
        st.error(f"Cannot read the predictions of this run: {safe_text(exc)}")
        return
    if not len(val) and len(test) and store.trained_config(run_id).bagged_models:
        st.info(f"Not available for this run: {NO_THRESHOLD_WITHOUT_HELD_OUT}")
        return
    if not len(val) or not len(test):
        st.info("This run has no validation or no test images, so a threshold cannot be chosen and checked.")
        return
    classes = test.classes
    y_val, p_val, y_test, p_test = val.y_true, val.probs, test.y_true, test.probs
    view = _binary_view(classes, focus if focus in classes else classes[-1])
    if view is None:
        return
    pos, neg = escape_markdown(view.positive_label), escape_markdown(view.negative_label)
    if store.cross_validation(run_id) is not None:
        st.caption(f"This run is a fold ensemble: its validation images here are all {len(val)} of its training + "
                   "validation images, each predicted by the fold model that never trained on it (out of fold).")
    truth_val, scores_val = view.truth(y_val), view.scores(p_val)
    truth_test, scores_test = view.truth(y_test), view.scores(p_test)

    left, right = st.columns([3, 2], vertical_alignment="bottom")
    with left:
        st.session_state.setdefault("op_threshold", 0.5)  # the "find" button sets it too, so no value= here
        threshold = st.slider(f"Flag as {pos} when P({pos}) is at least", 0.0, 1.0, step=THRESHOLD_STEP,
                              format="%.3f", key="op_threshold",
                              help="Lower: more images flagged, fewer missed (higher sensitivity), more false "
                                   "alarms. 0.5 is close to what 'most probable class' does.")
    with right:
        st.number_input("Target sensitivity (%)", 50.0, 100.0, 95.0, 1.0, key="op_target")
        st.button(f"Reach ≥ {st.session_state['op_target']:.0f}% sensitivity on validation",
                  key="op_find", on_click=_find_threshold, args=(run_id, view, truth_val, scores_val),
                  help="Chosen on the validation images; the test images then show what it really gives.")

    found = st.session_state.get("op_found")
    if found and (found["run"], found["positive"]) != (run_id, view.positive):
        found = None  # found for another run or group
    if found and "error" in found:
        st.error(safe_text(found["error"]))
    elif found and abs(found["threshold"] - threshold) < 1e-9:
        on_val = operating_point(truth_val, scores_val, threshold)
        st.success(f"Threshold **{threshold:.3f}** flags {on_val['tp']} of {on_val['positives']} {pos} validation "
                   f"images (sensitivity {_pct(on_val['sensitivity'])}, target {found['target']:.0%}). "
                   "Below: what the same threshold gives on the test images.")

    op = operating_point(truth_test, scores_test, threshold)
    cols = st.columns(4)
    helps = {"Sensitivity": f"Share of true {pos} images that are flagged (recall).",
             "Specificity": f"Share of true {neg} images that are not flagged.",
             "PPV": f"Positive predictive value: of the flagged images, the share that really are {pos}.",
             "NPV": f"Negative predictive value: of the cleared images, the share that really are {neg}."}
    for col, (name, key) in zip(cols, [("Sensitivity", "sensitivity"), ("Specificity", "specificity"),
                                       ("PPV", "ppv"), ("NPV", "npv")]):
        col.metric(f"{name} (test)", _pct(op[key]), help=helps[name])
    on_val = operating_point(truth_val, scores_val, threshold)
    st.caption(f"Validation at this threshold: sensitivity {_pct(on_val['sensitivity'])}, specificity "
               f"{_pct(on_val['specificity'])}, PPV {_pct(on_val['ppv'])}, NPV {_pct(on_val['npv'])}.")
    st.markdown(describe_operating_point(op, view, name=escape_markdown))
    st.caption(describe_most_probable_class(most_probable_class_point(y_test, p_test, view), op, view,
                                            name=escape_markdown))
    a, b = st.columns(2)
    with a:
        st.plotly_chart(confusion_matrix_figure(op["matrix"], [view.negative_label, view.positive_label],
                                                title=f"Test at threshold {threshold:.3f}"),
                        key="op_matrix", width="stretch")
    with b:
        st.plotly_chart(score_histogram_figure(scores_test, truth_test, threshold, view.positive_label,
                                               view.negative_label,
                                               title="Test scores; dashed: the threshold"),
                        key="op_hist", width="stretch")
    st.plotly_chart(threshold_sweep_figure(threshold_sweep(truth_test, scores_test), threshold,
                                           title="Every threshold on the test images"),
                    key="op_sweep", width="stretch")


# --- one run: error browser -------------------------------------------------------------------------------------

def _cell_label(cell: tuple[str, str, int]) -> str:
    true, predicted, n = cell
    images = f"{n:,} image{'s' if n != 1 else ''}"
    if true == predicted:
        return f"true {true}, correctly predicted ({images})"
    return f"true {true} → predicted {predicted} ({images})"


def _gradcam_view(store: RunStore, run_id: str, case: Case, classes: list[str]) -> None:
    try:
        from medcls.inference.gradcam import coarse_map_note, ensemble_note, gradcam_overlay
    except ImportError as exc:  # the module or its captum dependency is missing
        st.info(f"Grad-CAM heat maps are not available here ({exc}). Install requirements.txt to get them.")
        return
    from medcls.inference.predictor import load_predictor

    try:
        predictor = load_predictor(store, run_id)
        pixels = predictor.pixels(case.path)
        alpha = st.slider("Heat-map strength", 0.0, 1.0, 0.45, 0.05, key="err_alpha")
        cols = st.columns(2)
        for col, name in zip(cols, dict.fromkeys([case.true, case.predicted])):
            overlay = gradcam_overlay(predictor, pixels, predictor.classes.index(name), alpha)
            col.image(overlay, caption=f"Where the model looked for '{escape_markdown(name)}'", width="stretch")
        coarse = coarse_map_note(predictor.model, predictor.image_size)
        if coarse:
            st.warning(coarse)
    except Exception as exc:  # a deleted image or weights, or a model Grad-CAM cannot explain
        st.error(f"Cannot draw the Grad-CAM heat map: {safe_text(exc)}")
        return
    st.caption("Grad-CAM colours the regions that pushed the model towards a class (red: most, blue: little; an "
               "evenly blue image means nothing raised that class). It shows where the model looked, not whether "
               "it looked at the right thing for the right reason. " + ensemble_note(predictor.model))


@st.fragment
@guarded
def error_browser_section(store: RunStore, run_id: str, focus: str) -> None:
    """Pick a confusion-matrix cell; see its test images, worst first, and look closer at one."""
    try:
        test = store.predictions(run_id, "test")
    except (RunNotFoundError, FileNotFoundError, RecordError) as exc:
        st.error(f"Cannot read the predictions of this run: {safe_text(exc)}")
        return
    paths, y_test, p_test, classes = test.paths, test.y_true, test.probs, test.classes
    options = cell_options(y_test, p_test, classes)
    if not options:
        st.info("This run has no test images.")
        return
    left, right = st.columns([3, 1])
    cell = left.selectbox("Confusion-matrix cell (test images)", options, index=default_cell(options, focus),
                          format_func=_cell_label, key="err_cell",
                          help="Mistakes come first, the most common first. Images are sorted worst first: the "
                               "lowest probability for their true class.")
    limit = right.number_input("Show at most", 4, 200, 12, 4, key="err_limit")
    cases = cell_cases(paths, y_test, p_test, classes, cell[0], cell[1], copies=store.test_copies(run_id))
    shown = cases[:int(limit)]
    said = [f"Showing the {len(shown)} worst of {len(cases):,} images."] if len(cases) > len(shown) else []
    if marked := copies_caption(shown):
        said.append(marked)
    if said:
        st.caption(" ".join(said))
    grid = st.columns(4)
    for i, case in enumerate(shown):
        with grid[i % 4]:
            try:
                st.image(thumbnail(case.path, THUMB_PX), caption=safe_text(case.caption), width="stretch")
            except (ValueError, OSError) as exc:
                st.warning(f"{safe_text(case.caption)}: cannot read the image ({safe_text(exc)}). Was the data "
                           "moved?")

    st.markdown("**Look closer at one image**")
    pick = st.selectbox("Image", range(len(shown)), format_func=lambda i: shown[i].caption,
                        key=f"err_pick_{cell[0]}_{cell[1]}")
    case = shown[pick]
    a, b = st.columns([1, 2])
    with a:
        try:
            st.image(thumbnail(case.path, 320), caption=f"true: {escape_markdown(case.true)}", width="stretch")
        except (ValueError, OSError) as exc:
            st.warning(f"Cannot read the image ({safe_text(exc)}).")
    with b:
        st.plotly_chart(probability_figure(case.probabilities, title="What the model said"), key="err_probs",
                        width="stretch")
    if st.toggle("Show Grad-CAM heat maps", key="err_gradcam",
                 help="Where in the image the model found evidence for the true and the predicted class."):
        with st.spinner("Computing Grad-CAM…"):
            _gradcam_view(store, run_id, case, classes)


# --- one run: run card -----------------------------------------------------------------------------------------

def run_card_section(store: RunStore, run_id: str, name: str) -> None:
    """A download button that builds the run's HTML card when clicked."""
    st.download_button("⬇ Download the run card (HTML)", data=lambda: run_card_html(store, run_id),
                       file_name=f"{run_id}-run-card.html", mime="text/html", key="run_card", on_click="ignore",
                       help="One self-contained file that opens offline: data, settings, metrics with 95% "
                            "intervals, operating point, calibration and all figures.")
    st.caption(f"The same from the command line: `python -m medcls report {run_id} -o card.html`. "
               "The card says that medcls is a teaching tool, not a diagnosis.")


# --- several runs: cross-validation -------------------------------------------------------------------------

def cross_validation_section(cvs: dict[str, CrossValidation], focus: dict[str, str]) -> None:
    """Each cross-validation run's folds: the score of every fold and their mean ± standard deviation.

    ``focus`` names each run's focus class, whose recall the folds tracked ("malignant recall" as the column
    when the runs share it)."""
    classes = {focus.get(name, "") for name in cvs}
    shared = classes.pop() if len(classes) == 1 else ""
    rows = []
    for name, cv in cvs.items():
        grouped = " (grouped)" if cv.grouped or cv.by_subfolder else ""
        row = {"run": name, "folds": f"{cv.completed} of {cv.folds}{grouped}"}
        row["macro-F1"] = cv.mean_sd_words("macro_f1") or "–"
        recall = cv.mean_sd_words("focus_recall")
        if shared:
            row[f"{shared} recall"] = recall or "–"
        else:
            row["focus-class recall"] = f"{focus.get(name) or '?'}: {recall}" if recall else "–"
        row["macro-F1 per fold"] = ", ".join(f"{s.macro_f1:.2f}" for s in cv.scores)
        rows.append(row)
    st.dataframe(pd.DataFrame(rows).set_index("run"), width="stretch", placeholder="–")
    st.caption("Each fold's model is judged on the images it never trained on; the ± is the standard deviation "
               "over the folds: how much the score moves with which images happen to be held out. The test "
               "metrics above are those of the fold models predicting together.")
