"""Browser tests for issue 16 ("Teach with it"): a clickable confusion matrix, and pages that fit a projector.

They share the server of tests/e2e/test_dashboard.py (conftest.py) and train tiny runs through the Train
page when there are not enough finished runs yet.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
expect = sync_api.expect
Page = sync_api.Page

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dashboard import (  # noqa: E402
    changing,
    ensure_finished_runs,
    open_page,
    preselected_for_compare,
    run_name,
    wait_idle,
)

pytestmark = pytest.mark.e2e

PROJECTOR = {"width": 1280, "height": 720}


def input_px(server, run_id: str) -> int:
    """The size the run's model sees (test_dashboard.TINY: 32 px for the phantom runs; the phantoms are 128 px)."""
    from medcls.inference.predictor import load_predictor
    from medcls.runs.store import RunStore

    return load_predictor(RunStore(server.runs_dir), run_id).image_size


def cell_to_click(server, run_id: str):
    """An error cell of the run's test images if it has one (the interesting kind), else a diagonal cell;
    with the images the library puts in it, surest first."""
    from medcls.analysis.error_cases import cell_cases, cell_options
    from medcls.runs.store import RunStore

    test = RunStore(server.runs_dir).predictions(run_id, "test")
    true, predicted, count = cell_options(test.y_true, test.probs, test.classes)[0]
    cases = cell_cases(test.paths, test.y_true, test.probs, test.classes, true, predicted, order="confident")
    assert len(cases) == count
    return test.classes, true, predicted, cases


def click_cell(page: Page, run_id: str, classes: list[str], true: str, predicted: str) -> None:
    """Click the middle-left of a cell (not its centre: a click anywhere in the cell must count)."""
    matrix = f".st-key-cm_{run_id}"
    page.evaluate("sel => document.querySelector(sel).scrollIntoView({block: 'center'})", matrix)
    area = page.locator(f"{matrix} .js-plotly-plot .nsewdrag").first
    expect(area).to_be_visible(timeout=30_000)  # Plotly may draw a chart only once it is scrolled into view
    page.evaluate("sel => document.querySelector(sel).scrollIntoView({block: 'center'})", matrix)
    box = area.bounding_box()
    k = len(classes)
    x = box["x"] + (classes.index(predicted) + 0.3) * box["width"] / k  # columns: predicted
    y = box["y"] + (classes.index(true) + 0.6) * box["height"] / k      # rows: true, the first at the top
    changing(page, lambda: page.mouse.click(x, y))


def image_widths(page: Page) -> list[int]:
    """The cell images' pixel widths, once every image has loaded (a new image reads 0 until it has)."""
    page.wait_for_function("""() => Array.from(document.querySelectorAll("[class*='st-key-cm_image_'] img"))
                                     .every(img => img.complete && img.naturalWidth > 0)""", timeout=30_000)
    return page.evaluate("""() => Array.from(document.querySelectorAll("[class*='st-key-cm_image_'] img"))
                                 .map(img => img.naturalWidth)""")


def test_clicking_a_confusion_cell_shows_its_images(page: Page, server, screenshot):
    ensure_finished_runs(page, server, 1)
    run_id = preselected_for_compare(server)[0]
    classes, true, predicted, cases = cell_to_click(server, run_id)
    open_page(page, "compare")
    expect(page.get_by_text("Click a cell of a matrix to see its test images")).to_be_visible()
    click_cell(page, run_id, classes, true, predicted)

    n = len(cases)
    kind = "correctly predicted" if true == predicted else "predicted"
    expect(page.get_by_text(re.compile(rf"{n} test images? of true {true}, {kind} {predicted}"))).to_be_visible()
    thumbs = page.locator("[class*='st-key-cm_image_']")
    expect(thumbs).to_have_count(min(n, 24))
    for i, case in enumerate(cases[:24]):  # the library's images of that cell, surest first
        thumb = page.locator(f".st-key-cm_image_{i}")
        expect(thumb.locator("[data-testid='stImageCaption']")).to_have_text(
            f"{case.name} · true {true}, predicted {predicted}")
        expect(thumb).to_contain_text(" · ".join(f"{c} {case.probabilities[c]:.2f}" for c in classes))
    # plain thumbnails, each at most THUMB_PX: the 128 px phantoms, or the 28 px images of the .npz run another
    # test of this server may have trained (the newest finished run is the one compared)
    from app.cell_images import THUMB_PX
    from medcls.data.explore import thumbnail

    widths = {thumbnail(case.path, THUMB_PX).shape[1] for case in cases[:24]}
    assert set(image_widths(page)) == widths, "plain thumbnails at the images' own size"
    screenshot("compare-cell-images")

    changing(page, lambda: page.locator(".st-key-cm_gradcam label").click())
    expect(thumbs).to_have_count(min(n, 24))
    # Grad-CAM overlays are drawn on what the model sees: its input (32 px for the tiny phantom runs)
    expect(page.locator("[class*='st-key-cm_image_'] img")).to_have_count(min(n, 24))
    assert set(image_widths(page)) == {input_px(server, run_id)}, image_widths(page)
    expect(page.locator("[data-testid='stAlertContentError']")).to_have_count(0)
    screenshot("compare-cell-gradcam")

    # (while a rerun draws, the previous drawing of a button may stay on screen, faded, for a moment)
    page.locator(".st-key-cm_try_0[data-stale='false'] button").first.click()
    expect(page).to_have_url(re.compile(r"/try\b"), timeout=60_000)
    wait_idle(page)
    expect(page.locator(".st-key-try_run input")).to_have_value(re.compile("^" + re.escape(run_name(server, run_id))))
    expect(page.locator(".st-key-try_pick_test input")).to_have_value(f"{cases[0].name} (true: {true})")
    prediction = page.locator("[data-testid='stMetric']").filter(has_text="Predicted class")
    expect(prediction.locator("[data-testid='stMetricValue']")).to_have_text(predicted, timeout=60_000)
    screenshot("try-it-from-compare")


# --- a classroom projector: 1280 x 720 ----------------------------------------------------------------------

LAYOUT = """() => {
  const vw = window.innerWidth;
  const main = document.querySelector("[data-testid='stMain']");
  const plots = Array.from(document.querySelectorAll(".js-plotly-plot")).map(p => {
    const r = p.getBoundingClientRect();
    const titles = Array.from(p.querySelectorAll(".gtitle, .gtitle-subtitle")).map(t => t.getBoundingClientRect());
    return {left: Math.round(r.left), right: Math.round(r.right), title: p.querySelector(".gtitle")?.textContent,
            titleCut: titles.some(t => t.left < r.left - 1 || t.right > r.right + 1)};
  });
  const cut = Array.from(document.querySelectorAll(
      "[data-testid='stMetricValue'], [data-testid='stMetricValue'] *, [data-testid='stMetricLabel'] *"))
    .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
    .map(e => e.textContent.trim());
  return {vw, page: document.scrollingElement.scrollWidth, main: main.scrollWidth, mainVisible: main.clientWidth,
          plots, cut, metrics: document.querySelectorAll("[data-testid='stMetricValue']").length};
}"""


def check_fits(page: Page, what: str) -> int:
    """No horizontal scrolling, every figure inside the window, no metric cut off; returns the metrics seen."""
    page.wait_for_function("""() => document.querySelectorAll("[data-testid='stPlotlyChart']").length ===
                                    document.querySelectorAll("[data-testid='stPlotlyChart'] .js-plotly-plot").length""",
                           timeout=60_000)  # every figure drawn (a busy machine takes a while)
    page.evaluate("() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))")
    seen = page.evaluate(LAYOUT)
    assert seen["page"] <= seen["vw"], f"{what}: the page scrolls sideways ({seen['page']} > {seen['vw']} px)"
    assert seen["main"] <= seen["mainVisible"], f"{what}: the main area scrolls sideways: {seen}"
    assert seen["plots"], f"{what}: no figure drawn"
    wide = [p for p in seen["plots"] if p["left"] < 0 or p["right"] > seen["vw"]]
    assert not wide, f"{what}: figures reach beyond the {seen['vw']} px window: {wide}"
    cut_titles = [p["title"] for p in seen["plots"] if p["titleCut"]]
    assert not cut_titles, f"{what}: figure titles cut off at the figure's edge: {cut_titles}"
    assert not seen["cut"], f"{what}: metrics cut off with '…': {seen['cut']}"
    return seen["metrics"]


def test_train_and_compare_fit_a_projector(browser, front_door, server, screenshot_of):
    context = browser.new_context(viewport=PROJECTOR, base_url=front_door.url)
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        finished = ensure_finished_runs(page, server, 2)[0]  # Train shows a finished run (not a stopped one)
        newest = preselected_for_compare(server)  # may include a stopped run: it is tested, so comparable
        open_page(page, "train")
        if page.locator(".st-key-train_run_picker input").input_value() != run_name(server, finished):
            page.locator(".st-key-train_run_picker input").click()
            changing(page, lambda: page.get_by_role("option", name=run_name(server, finished), exact=True).click())
        expect(page.get_by_text("Finished. The last epoch's weights").first).to_be_visible(timeout=60_000)
        expect(page.locator(f".st-key-hist_{finished} .js-plotly-plot").first).to_be_visible(timeout=60_000)
        assert check_fits(page, "Train") >= 3, "the finished run's key numbers are shown as metrics"
        screenshot_of(page, "projector-train")

        open_page(page, "compare")
        for run_id in newest:
            expect(page.locator(f".st-key-cm_{run_id} .js-plotly-plot")).to_be_visible(timeout=60_000)
        page.get_by_role("tab", name="Choose a threshold").click()
        expect(page.locator(".st-key-op_sweep .js-plotly-plot")).to_be_visible(timeout=60_000)
        assert check_fits(page, "Compare") >= 4, "the operating point's sensitivity, specificity, PPV and NPV"
        screenshot_of(page, "projector-compare")
    finally:
        context.close()
