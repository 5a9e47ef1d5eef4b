"""The dashboard used as a person does, in a real headless Chromium against ``streamlit run``.

What AppTest cannot see: the WebSocket, the fragment timer that streams a run's progress, uploads
through the real file widget, and Plotly drawing the charts. Every check reads what the browser shows.

The tests share one server (see conftest.py) and run in file order, so later tests reuse the runs
earlier ones trained; each also passes alone (``-k``), training tiny runs itself when it needs them.
Training is real: tiny runs (32 px images, a few epochs) on the built-in synthetic phantoms.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
expect = sync_api.expect
Page = sync_api.Page

pytestmark = pytest.mark.e2e

CLASSES = ["benign", "malignant", "normal"]  # the built-in synthetic phantoms
TINY = {"opt_image_size": 32, "opt_batch_size": 16}  # with fp32: ~2 s per epoch on one core
APP_IDLE = "[data-testid='stApp'][data-test-script-state='notRunning']"
SKELETON = "[data-testid='stSkeleton']"  # an element whose drawing code is still loading
EPOCHS_DONE = re.compile(r"(\d+)\s*/\s*(\d+)")


# --- small steps a person takes ---------------------------------------------------------------------

def wait_idle(page: Page, timeout: float = 60_000) -> None:
    """Until no script run is going on (after a page load: until the first run has finished) and the page has
    drawn what it sent.

    Streamlit draws many elements (the multiselect's chips, charts) with code it loads when first needed; until
    then a grey placeholder (stSkeleton) stands in their place. After a page of charts such as Compare, that took
    4 s here once the script had ended, and over 15 s on a busy test machine, where a test then found no
    preselected runs."""
    counted = "window.__stRunsDone"  # undefined where the tab has no SCRIPT_RUN_COUNTER
    before = page.evaluate(counted)
    try:
        page.locator(APP_IDLE).wait_for(timeout=timeout)
    except sync_api.TimeoutError as exc:  # say whether one run hung or reruns followed each other without a gap
        state = page.locator("[data-testid='stApp']").get_attribute("data-test-script-state", timeout=5_000)
        after = page.evaluate(counted)
        runs = "" if after is None else f"{after - (before or 0)} script runs ended meanwhile and "
        raise AssertionError(f"the page was not idle within {timeout / 1000:.0f} s: {runs}its script state is "
                             f"{state!r}") from exc
    expect(page.locator(SKELETON)).to_have_count(0, timeout=timeout)


def open_page(page: Page, path: str) -> None:
    page.goto(f"/{path}")
    wait_idle(page, 90_000)


def runs_done(page: Page) -> int:
    return page.evaluate("window.__stRunsDone || 0")  # counted by conftest.SCRIPT_RUN_COUNTER


def changing(page: Page, action, timeout: float = 60_000) -> None:
    """Do ``action`` (which changes a widget) and wait for the script run it causes to finish.

    A very quick rerun can go by without the page ever showing it as running (React may draw only its
    end), so after a few seconds without a visible rerun, an idle app is taken as done."""
    before = runs_done(page)
    action()
    try:
        page.wait_for_function("n => window.__stRunsDone > n", arg=before, timeout=5_000)
    except sync_api.TimeoutError:
        pass
    wait_idle(page, timeout)


def _open_expander_of(page: Page, key: str) -> None:
    widget = page.locator(f".st-key-{key}")
    expander = page.locator("[data-testid='stExpander']").filter(has=widget)
    if expander.count() and expander.locator("details").get_attribute("open") is None:
        expander.locator("summary").click()
    expect(widget).to_be_visible()


def set_number(page: Page, key: str, value: int) -> None:
    _open_expander_of(page, key)
    box = page.locator(f".st-key-{key} input")
    if box.input_value() != str(value):
        changing(page, lambda: (box.fill(str(value)), box.press("Enter")))
    expect(box).to_have_value(str(value))


def choose(page: Page, key: str, option: str) -> None:
    _open_expander_of(page, key)
    box = page.locator(f".st-key-{key} input")
    if box.input_value() == option:
        return
    item = page.get_by_role("option", name=option, exact=True)
    for attempt in range(3):  # the list may not open, or close again, when a redraw lands on the click
        wait_idle(page)
        box.click()
        try:
            item.wait_for(timeout=5_000)
            changing(page, lambda: item.click(timeout=5_000))
            break
        except sync_api.TimeoutError:
            page.keyboard.press("Escape")
            if attempt == 2:
                raise
    expect(box).to_have_value(option)


def run_ids(server) -> list[str]:
    from medcls.runs.store import RunStore

    return RunStore(server.runs_dir).list_ids() if server.runs_dir.is_dir() else []


def run_states(server) -> dict[str, str]:
    from medcls.runs.store import RunStore

    store = RunStore(server.runs_dir)
    return {r: store.raw_status(r).state for r in run_ids(server)}


def run_name(server, run_id: str) -> str:
    """How pickers and figure titles name the run."""
    from medcls.runs.store import RunStore

    return RunStore(server.runs_dir).summary(run_id).name


def wait_no_active_runs(server, timeout_s: float = 120) -> None:
    """With one training slot, a run left by an earlier (failed) test would keep the next one queued."""
    deadline = time.monotonic() + timeout_s
    while any(s in ("queued", "running") for s in run_states(server).values()):
        assert time.monotonic() < deadline, f"runs still active after {timeout_s:.0f} s: {run_states(server)}"
        time.sleep(0.5)


def start_run(page: Page, server, epochs: int) -> str:
    """Fill the Train form for a tiny run, press Start; return the new run's id (shown in the picker). Every epoch
    runs: the default keeps the last epoch, so early stopping does not apply."""
    wait_no_active_runs(server)
    open_page(page, "train")
    set_number(page, "opt_epochs", epochs)
    for key, value in TINY.items():
        set_number(page, key, value)
    choose(page, "opt_precision", "32-bit (fp32)")  # "auto" would first time a few bf16 steps
    before = set(run_ids(server))
    page.locator(".st-key-start_training button").click()
    deadline = time.monotonic() + 30
    while not set(run_ids(server)) - before:
        assert time.monotonic() < deadline, "pressing Start created no run"
        page.wait_for_timeout(200)
    (run_id,) = set(run_ids(server)) - before
    expect(page.locator(".st-key-train_run_picker input")).to_have_value(run_name(server, run_id), timeout=30_000)
    # The live panel is the new run's (the previous run's panel may linger, faded, during the redraw).
    expect(page.locator(f".st-key-stop_{run_id}").first).to_be_visible(timeout=30_000)
    wait_idle(page)
    return run_id


def epochs_done(page: Page) -> tuple[int, int] | None:
    """The "Epochs done" metric as (done, total); None while it is not drawn."""
    values = page.locator("[data-testid='stMetric']").filter(has_text="Epochs done") \
        .locator("[data-testid='stMetricValue']").all_text_contents()
    parsed = [tuple(map(int, m.groups())) for m in map(EPOCHS_DONE.search, values) if m]
    return max(parsed) if parsed else None  # during a redraw the old value may still be on screen


def curve_points(page: Page, run_id: str) -> int:
    """Markers Plotly drew for the first curve (train loss) of the run's training-curves chart."""
    return page.evaluate(
        """(sel) => Math.max(0, ...Array.from(document.querySelectorAll(sel)).map(
               plot => plot.querySelector('.scatterlayer .trace')?.querySelectorAll('path.point').length || 0))""",
        f".st-key-hist_{run_id} .js-plotly-plot")


def watch_run(page: Page, run_id: str, done, timeout_s: float, what: str) -> list[tuple[float, int, int, int]]:
    """Read the live panel (never touching the page) until ``done(observations)``; observations are
    (seconds, epochs done, epochs, curve points), one per change."""
    seen: list[tuple[float, int, int, int]] = []
    start = time.monotonic()
    while True:
        count = epochs_done(page)
        if count is not None:
            entry = (round(time.monotonic() - start, 1), *count, curve_points(page, run_id))
            if not seen or entry[1:] != seen[-1][1:]:
                seen.append(entry)
            if done(seen):
                return seen
        if time.monotonic() - start > timeout_s:
            shown = page.locator("[data-testid='stAlert'], [data-testid='stProgress']").all_inner_texts()
            pytest.fail(f"{what}: not seen within {timeout_s:.0f} s. Observed (s, done, epochs, points): {seen}. "
                        f"The page shows: {shown}")
        page.wait_for_timeout(250)


def increases(seen) -> int:
    return sum(1 for a, b in zip(seen, seen[1:]) if b[1] > a[1])


def curves_grew(seen) -> bool:
    drawn = [s[3] for s in seen if s[3] > 0]
    return len(drawn) >= 2 and max(drawn) > drawn[0]


def eventually(page: Page, check, timeout_s: float, what: str):
    """Poll ``check()`` until it returns something truthy; fail with ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not (result := check()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not seen within {timeout_s:.0f} s")
        page.wait_for_timeout(250)
    return result


def expect_finished(page: Page, epochs: int, timeout_ms: float = 120_000) -> None:
    expect(page.get_by_text("Finished. The last epoch's weights").first).to_be_visible(timeout=timeout_ms)
    eventually(page, lambda: epochs_done(page) == (epochs, epochs), 10, f"'Epochs done' showing {epochs}/{epochs}")


def finished_runs(server) -> list[str]:
    return [r for r, s in run_states(server).items() if s == "finished"]


def ensure_finished_runs(page: Page, server, count: int) -> list[str]:
    """The ``count`` newest finished runs, training tiny ones first when there are fewer."""
    while len(finished_runs(server)) < count:
        run_id = start_run(page, server, epochs=2)
        expect_finished(page, 2)
        assert run_id in finished_runs(server)
    return finished_runs(server)[:count]


def upload(page: Page, key: str, path: Path) -> None:
    """Through the real widget: click the drop zone, answer the file chooser."""
    dropzone = page.locator(f".st-key-{key} [data-testid='stFileUploaderDropzone']")
    expect(dropzone).to_be_visible()
    with page.expect_file_chooser() as chooser:
        dropzone.click()
    chooser.value.set_files(str(path))
    expect(page.locator(f".st-key-{key} [data-testid='stFileChipName']")).to_have_text(path.name)


def navigations(page: Page) -> list[str]:
    """URLs the main frame loads from now on (a reload would add one)."""
    loads: list[str] = []
    page.on("framenavigated", lambda frame: loads.append(frame.url) if frame == page.main_frame else None)
    return loads


@pytest.fixture(autouse=True)
def no_run_left_training(request: pytest.FixtureRequest):
    """A test that fails mid-run must not leave the one training slot busy for the next tests."""
    yield
    if "server" not in request.fixturenames:
        return
    from medcls.runs.store import RunStore

    server = request.getfixturevalue("server")
    store = RunStore(server.runs_dir)
    for run_id, state in run_states(server).items():
        if state in ("queued", "running"):
            store.request_stop(run_id)


# --- the tests --------------------------------------------------------------------------------------

NAV_TITLES = ["Data explorer", "Train", "Compare runs", "Try it"]  # st.navigation in streamlit_app.py


def expect_app_navigation(page: Page, timeout: float = 30_000) -> None:
    """The app's own sidebar: its named pages (others may be added) and the shared dataset chooser."""
    links = page.locator("[data-testid='stSidebarNav'] [data-testid='stSidebarNavLink']")
    for title in NAV_TITLES:
        expect(links.filter(has_text=re.compile(rf"{re.escape(title)}$"))).to_have_count(1, timeout=timeout)
    expect(page.locator(".st-key-data_kind")).to_be_visible(timeout=timeout)


def test_data_explorer_shows_class_counts_chart(page: Page, screenshot):
    open_page(page, "data")  # the first visit generates the built-in phantoms (a few seconds)
    expect_app_navigation(page)
    chart = page.locator(".st-key-class_counts .js-plotly-plot")
    expect(chart).to_be_visible(timeout=90_000)
    expect(chart.locator(".gtitle")).to_have_text("Images per class and split")
    expect(chart.locator(".xtick")).to_have_text(CLASSES)
    bars = chart.locator(".barlayer .point")
    expect(bars.first).to_be_visible()
    assert bars.count() >= len(CLASSES) * 3, "one bar per class and split (train, val, test)"
    expect(page.get_by_text("SYNTHETIC phantoms").first).to_be_visible()
    screenshot("data-explorer")


def test_training_progress_streams_without_reload(page: Page, server, screenshot):
    # Enough epochs, all of them run, that the panel's redraws see several go by on a fast machine too (5 tiny
    # epochs took about 5 s on an AMD EPYC, close to finishing between two redraws).
    epochs = 12
    run_id = start_run(page, server, epochs)
    loads = navigations(page)
    # Nothing touches the page from here: only the fragment timer can change what it shows.
    seen = watch_run(page, run_id, lambda s: increases(s) >= 2 and curves_grew(s), timeout_s=150,
                     what="'Epochs done' increasing twice and the curves gaining points without a reload")
    assert seen[-1][2] == epochs
    screenshot("train-live")
    expect_finished(page, epochs)  # the panel also notices the end by itself
    eventually(page, lambda: curve_points(page, run_id) == epochs, 10, f"{epochs} points on the final curves")
    assert loads == [], f"the page was reloaded: {loads}"
    screenshot("train-finished")


def test_reload_mid_run_shows_the_same_run_advancing(page: Page, server, screenshot):
    ensure_finished_runs(page, server, 1)  # so "the run shown after a reload" is a choice among several
    # Long enough to outlast the reload on a fast machine: 5 tiny epochs were all done before the reloaded page
    # had drawn on an AMD EPYC. Stopped at the end.
    epochs = 40
    run_id = start_run(page, server, epochs)
    watch_run(page, run_id, lambda s: s[-1][1] >= 1 and s[-1][1] < epochs, timeout_s=120,
              what="the first epoch")
    page.reload()
    # A reload is a new session: the picker must default to the run that is training now.
    expect(page.locator(".st-key-train_run_picker input")).to_have_value(run_name(server, run_id), timeout=60_000)
    seen = watch_run(page, run_id, lambda s: increases(s) >= 1 and curves_grew(s), timeout_s=120,
                     what="the run still advancing after the reload")
    assert seen[0][1] < epochs
    screenshot("train-after-reload")
    page.locator(f".st-key-stop_{run_id}[data-stale='false'] button").first.click()
    expect(page.locator("[data-testid='stAlert']").filter(has_text="Cancelled").first).to_be_visible(timeout=60_000)


def test_stopped_run_shows_as_cancelled(page: Page, server, screenshot):
    epochs = 100
    run_id = start_run(page, server, epochs)
    expect(page.get_by_text(re.compile(rf"Epoch \d+/{epochs}")).first).to_be_visible(timeout=120_000)  # training
    # While the panel redraws, the previous drawing of the button stays on screen (faded) for a moment.
    page.locator(f".st-key-stop_{run_id}[data-stale='false'] button").first.click()
    cancelled = page.locator("[data-testid='stAlert']").filter(has_text="Cancelled")
    expect(cancelled.first).to_be_visible(timeout=60_000)
    expect(page.locator(f".st-key-stop_{run_id}")).to_have_count(0)
    done, total = epochs_done(page)
    assert total == epochs and done < epochs
    screenshot("train-cancelled")
    # It stays cancelled for a new visitor (the state lives in the run store, not the session).
    page.reload()
    expect(page.locator(".st-key-train_run_picker input")).to_have_value(run_name(server, run_id), timeout=60_000)
    expect(cancelled.first).to_be_visible()
    assert run_states(server)[run_id] == "cancelled"


def preselected_for_compare(server) -> list[str]:
    """What Compare picks first: the newest tested runs on the same data (a stopped run is tested too)."""
    from medcls.runs.choice import comparable_default
    from medcls.runs.store import RunStore

    return comparable_default([s for s in RunStore(server.runs_dir).list() if s.tested and not s.damaged])


def test_compare_shows_confusion_matrices_and_pr_curves(page: Page, server, screenshot):
    ensure_finished_runs(page, server, 2)
    newest_two = preselected_for_compare(server)
    assert len(newest_two) == 2
    open_page(page, "compare")
    # A stopped run's tag adds its state after the name.
    expect(page.locator(".st-key-compare_runs [data-tag]")).to_have_text(
        [re.compile("^" + re.escape(run_name(server, r))) for r in newest_two])
    for run_id in newest_two:
        matrix = page.locator(f".st-key-cm_{run_id} .js-plotly-plot")
        # the page draws its matrices after the metrics and their bootstrap intervals; under the full suite's load
        # they once came later than expect's 5-s default (the test passed alone)
        expect(matrix.locator(".gtitle")).to_have_text(run_name(server, run_id), timeout=30_000)
        expect(matrix.locator(".heatmaplayer image")).to_have_count(1)  # Plotly draws the heatmap as an image
        expect(matrix.locator(".xtitle")).to_have_text("predicted")
        expect(matrix.locator(".ytitle")).to_have_text("true")
        expect(matrix.locator(".xtick")).to_have_text(CLASSES)
        curves = page.locator(f".st-key-pr_{run_id} .js-plotly-plot")
        expect(curves.locator(".gtitle")).to_contain_text(run_name(server, run_id))
        expect(curves.locator(".legendtext")).to_have_text([re.compile(rf"^{c}\b.*AP=\d\.\d\d$") for c in CLASSES])
        expect(curves.locator(".scatterlayer .trace path.js-line").first).to_be_visible()
    screenshot("compare")


def test_try_it_predicts_an_uploaded_png(page: Page, server, screenshot, tmp_path: Path):
    ensure_finished_runs(page, server, 1)
    image = tmp_path / "scan.png"
    rng = np.random.default_rng(0)
    pixels = rng.normal(150, 30, (96, 96)).clip(0, 255).astype(np.uint8)
    pixels[30:60, 35:65] //= 3  # a dark lesion-like blob
    Image.fromarray(pixels, "L").save(image)
    open_page(page, "try")
    upload(page, "try_upload", image)
    prediction = page.locator("[data-testid='stMetric']").filter(has_text="Predicted class")
    expect(prediction).to_be_visible(timeout=60_000)
    expect(prediction.locator("[data-testid='stMetricValue']")).to_have_text(re.compile("^(" + "|".join(CLASSES) + ")$"))
    expect(prediction).to_contain_text(re.compile(r"\d+% confidence"))
    chart = page.locator(".st-key-try_probs .js-plotly-plot")
    expect(chart.locator(".gtitle")).to_have_text("Class probabilities")
    expect(chart.locator(".barlayer .point")).to_have_count(len(CLASSES))
    expect(chart.locator(".ytick")).to_have_count(len(CLASSES))
    assert sorted(chart.locator(".ytick").all_text_contents()) == CLASSES
    shares = [float(t.strip("<>%")) for t in chart.locator(".bartext").all_text_contents()]
    # Probabilities in percent, each rounded on its own (91.4, 6.3 and 2.3 read 91, 6 and 2): the sum is off by at
    # most half a point per class.
    assert len(shares) == len(CLASSES) and abs(sum(shares) - 100) <= 0.5 * len(CLASSES), shares
    expect(page.locator("[data-testid='stAlertContentError']")).to_have_count(0)
    screenshot("try-it")


def test_try_it_rejects_a_text_file_named_png(page: Page, server, screenshot, tmp_path: Path):
    ensure_finished_runs(page, server, 1)
    fake = tmp_path / "notes.png"
    fake.write_text("These are my notes, not an image.\n")
    open_page(page, "try")
    upload(page, "try_upload", fake)
    error = page.locator("[data-testid='stAlertContentError']")
    expect(error).to_be_visible(timeout=60_000)
    expect(error).to_contain_text("notes.png")
    expect(error).to_contain_text("not an image")
    expect(page.locator("[data-testid='stMetric']").filter(has_text="Predicted class")).to_have_count(0)
    expect(page.locator("[data-testid='stException']")).to_have_count(0)  # a clear message, not a traceback
    screenshot("try-it-bad-upload")


def test_a_page_url_opened_first_shows_the_app_navigation(browser, fresh_server, screenshot_of):
    """A bookmark of /train opened on a server nobody has visited yet still gets the app: its navigation
    and the shared dataset sidebar. (Streamlit 1.67 treats an app with a ``pages/`` folder as an old-style
    multipage app until ``st.navigation`` has run once; app/entry.py guards against that. AppTest cannot
    see this, as it resets that flag before every run.)"""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=fresh_server.url)
    try:
        page = context.new_page()
        open_page(page, "train")  # a bookmark, opened before anyone has opened the app's root URL
        try:
            expect_app_navigation(page, timeout=10_000)
        finally:
            screenshot_of(page, "first-visit-train")
    finally:
        context.close()
