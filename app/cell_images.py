"""Compare's clickable confusion matrices: click a cell, see its test images, open one in Try it.

Plotly reports clicks on points, not on heatmap cells (streamlit #8760), so each matrix carries an invisible
point per cell (``confusion_matrix_figure(clickable=True)``) and is drawn with ``on_select="rerun"``. The
last cell clicked on any matrix is kept in ``st.session_state[PICKED]``; clicking a cell of another run's
matrix clears the older matrix's outline (its chart gets a new key), so one cell is outlined at a time.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import numpy as np
import streamlit as st

from medcls.analysis.error_cases import Case, cell_cases, cell_of_point, copies_caption
from medcls.data.explore import thumbnail
from medcls.figures.evaluation import confusion_matrix_figure
from medcls.runs.results import Predictions, RunMetrics
from medcls.runs.store import RunStore

from .safety import guarded
from .text import escape_markdown
from .text import shown as safe_text

__all__ = ["clickable_matrices", "HANDOVER", "TRY_IT_PAGE"]

PICKED = "cm_picked"          # {"run": run id, "true": class, "predicted": class}
GENERATIONS = "cm_generation"  # run id -> how often its chart's selection was cleared
HANDOVER = "try_handover"      # an image sent to Try it: {"run", "path", "true"}
TRY_IT_PAGE = "app_pages/try_it.py"
COLUMNS = 4
THUMB_PX = 200
DEFAULT_LIMIT = 24


def _chart_key(run_id: str) -> str:
    return f"cm_chart_{run_id}_{st.session_state.get(GENERATIONS, {}).get(run_id, 0)}"


def _picked(run_id: str, classes: list[str]) -> None:
    """on_select callback of one run's matrix: remember its clicked cell and clear the other matrices'."""
    event = st.session_state.get(_chart_key(run_id))
    points = (event or {}).get("selection", {}).get("points", [])
    cell = cell_of_point(points[-1], classes) if points else None
    previous = st.session_state.get(PICKED)
    if cell is None:  # a double-click cleared this matrix's selection
        if previous and previous["run"] == run_id:
            del st.session_state[PICKED]
        return
    if previous and previous["run"] != run_id:  # a new key draws that chart afresh, without its outline
        generations = st.session_state.setdefault(GENERATIONS, {})
        generations[previous["run"]] = generations.get(previous["run"], 0) + 1
    st.session_state[PICKED] = {"run": run_id, "true": cell[0], "predicted": cell[1]}


def clickable_matrices(store: RunStore, chosen: list[str], metrics: dict[str, RunMetrics],
                       predictions: dict[str, Predictions], names: dict[str, str]) -> None:
    """One confusion matrix per run (counts or row shares); a clicked cell's test images below them."""
    normalize = st.toggle("Row-normalised (share of each true class)", value=False, key="cm_normalize",
                          help="Counts show how many images; row-normalised shows each true class's recall on "
                               "the diagonal.")
    picked = st.session_state.get(PICKED)
    cols = st.columns(min(len(chosen), 2))  # two side by side: cells big enough to read and click on a projector
    for i, run_id in enumerate(chosen):
        test = metrics[run_id].test
        # The picked cell is outlined by the figure itself, so the outline stays when the figure is redrawn
        # (counts <-> shares), which clears Plotly's own selection.
        outlined = (test.classes.index(picked["true"]), test.classes.index(picked["predicted"])) \
            if picked and picked["run"] == run_id and {picked["true"], picked["predicted"]} <= set(test.classes) \
            else None
        with cols[i % len(cols)], st.container(key=f"cm_{run_id}"):
            st.plotly_chart(confusion_matrix_figure(test.confusion_matrix, test.classes, normalize=normalize,
                                                    title=names[run_id], clickable=True, selected=outlined),
                            key=_chart_key(run_id), width="stretch", on_select=partial(_picked, run_id,
                                                                                       list(test.classes)),
                            selection_mode="points", config={"displayModeBar": False})
    if not picked or picked["run"] not in chosen or \
            {picked["true"], picked["predicted"]} - set(predictions[picked["run"]].classes):
        st.caption("👆 Click a cell of a matrix to see its test images.")
        return
    cell_images(store, picked["run"], names[picked["run"]], predictions[picked["run"]], picked["true"],
                picked["predicted"], metrics[picked["run"]].test_copies or ())


def _open_in_try_it(run_id: str, case: Case) -> None:
    st.session_state[HANDOVER] = {"run": run_id, "path": case.path, "true": case.true}
    st.switch_page(TRY_IT_PAGE)


@st.cache_data(max_entries=512, show_spinner=False)
def _overlay(runs_root: str, run_id: str, weights_version: object, path: str, class_name: str) -> np.ndarray:
    """The image with its Grad-CAM heat map for ``class_name`` (cached per run weights, image and class)."""
    from medcls.inference.gradcam import gradcam_overlay
    from medcls.inference.predictor import load_predictor

    predictor = load_predictor(RunStore(runs_root), run_id)
    pixels = predictor.pixels(path)
    return gradcam_overlay(predictor, pixels, predictor.classes.index(class_name), 0.45)


def _heading(name: str, true: str, predicted: str, n: int) -> str:
    images = f"{n:,} test image{'s' if n != 1 else ''}"
    t, p, run = escape_markdown(true), escape_markdown(predicted), escape_markdown(name)
    if true == predicted:
        return f"**{run}:** {images} of true **{t}**, correctly predicted **{p}**"
    return f"**{run}:** {images} of true **{t}**, predicted **{p}**"


@st.fragment
@guarded
def cell_images(store: RunStore, run_id: str, name: str, test: Predictions, true: str, predicted: str,
                copies: Sequence[str] = ()) -> None:
    """The test images of one cell as thumbnails with their probabilities, surest first; ``copies``: the run's
    test images whose near copy it learned from (marked)."""
    cases = cell_cases(test.paths, test.y_true, test.probs, test.classes, true, predicted, order="confident",
                       copies=copies)
    st.markdown(_heading(name, true, predicted, len(cases)))
    if not cases:
        st.info("No test image falls in this cell.")
        return
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    gradcam = left.toggle(f"Grad-CAM: where the model looked for '{escape_markdown(predicted)}'", key="cm_gradcam",
                          help="Colours each image by the regions that raised the predicted class's score (red: "
                               "most, blue: little). It shows where the model looked, not whether it looked at "
                               "the right thing.")
    limit = int(right.number_input("Show at most", 4, 200, DEFAULT_LIMIT, 4, key="cm_limit"))
    shown = cases[:limit]
    st.caption("Sorted by the model's confidence in its answer, surest first. Under each image: the probability "
               "it gave every class." + (f" Showing the {len(shown)} surest of {len(cases)}." if len(cases) > limit
                                         else "") + (f" {marked}" if (marked := copies_caption(shown)) else ""))
    weights = store.weights_version(run_id) if gradcam else None
    failed = []
    grid = st.columns(COLUMNS)
    for i, case in enumerate(shown):
        with grid[i % COLUMNS], st.container(key=f"cm_image_{i}"):
            caption = f"{case.name} · true {case.true}, predicted {case.predicted}{case.mark}"
            try:
                picture = _overlay(str(store.root), run_id, weights, case.path, case.predicted) if gradcam \
                    else thumbnail(case.path, THUMB_PX)
                st.image(picture, caption=safe_text(caption), width="stretch")
            except Exception as exc:  # a moved image, deleted weights, or a model Grad-CAM cannot explain
                failed.append(case.name)
                st.warning(f"{safe_text(caption)}: cannot show it ({safe_text(exc)}).")
            st.caption(safe_text(case.probability_line))
            if st.button("Open in Try it", key=f"cm_try_{i}", icon="🖼️",
                         help="Try it opens with this model and this image chosen."):
                _open_in_try_it(run_id, case)
    if gradcam and not failed:
        st.caption("Grad-CAM is coarse: it comes from the network's last, low-resolution layer. A hot spot on "
                   "text, calipers or the border is a sign the model learned a shortcut.")
        _coarse_warning(store, run_id)


def _coarse_warning(store: RunStore, run_id: str) -> None:
    """Say so when the run's last layer is too small for the map to show where anything is (as Try it does)."""
    from medcls.inference.gradcam import coarse_map_note
    from medcls.inference.predictor import load_predictor

    try:
        predictor = load_predictor(store, run_id)
    except Exception:  # the overlays above were drawn from the same weights; nothing more to say without them
        return
    coarse = coarse_map_note(predictor.model, predictor.image_size)
    if coarse:
        st.warning(coarse)
