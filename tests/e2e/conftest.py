"""Browser tests: a real ``streamlit run`` server and Debian's Chromium driven by Playwright.

- ``server`` (session): ``streamlit run streamlit_app.py`` headless on a free port, with its own run
  store, data folder and cache in a temporary folder. Ready when ``/_stcore/health`` answers ``ok``;
  its whole process group (server and training workers) is ended afterwards, also when a test fails.
- ``fresh_server``: a server of a test's own, that no browser has visited yet.
- ``browser`` (session) and ``page`` (per test: a fresh context, so a fresh Streamlit session). Before
  the first page, ``front_door`` opens the app's root URL once (see its docstring for why).
- ``screenshot(name)`` / ``screenshot_of(page, name)``: save the whole page as ``artifacts/e2e/<name>.png``
  (a failed test also leaves ``FAILED-<test>.png``); the files are listed in an "e2e screenshots" section
  at the end of the pytest output, and as ``screenshot:<name>`` properties in JUnit XML.
- Browser tests run after all other tests of the same pytest run.

Every test here skips, with the reason, when ``chromium`` is not on PATH or Playwright is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts" / "e2e"
# Debian's Chromium (Playwright's own browser download does not work on these machines).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync",
                 "--disable-dev-shm-usage"]
SERVER_START_TIMEOUT_S = 90.0
# Counts script runs that ended (``data-test-script-state`` leaving "running"/"rerunRequested"), so a test
# can wait for the rerun its own click caused rather than guess with a sleep.
SCRIPT_RUN_COUNTER = """
window.__stRunsDone = 0;
new MutationObserver(records => {
  for (const record of records) {
    if (record.oldValue === "running" || record.oldValue === "rerunRequested") window.__stRunsDone += 1;
  }
}).observe(document, {subtree: true, attributes: true, attributeOldValue: true,
                      attributeFilter: ["data-test-script-state"]});
"""


def _skip_reason() -> str | None:
    if shutil.which("chromium") is None:
        return "chromium is not on PATH (install it: apt-get install -y chromium chromium-driver)"
    try:
        found = importlib.util.find_spec("playwright.sync_api") is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        return "Playwright for Python is not installed (pip install -r requirements-dev.txt)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run after the unit and app tests (``make test`` is one pytest run); they skip
    with the reason when Chromium or Playwright is missing."""
    browser_tests = [item for item in items if item.get_closest_marker("e2e") is not None]
    items[:] = [item for item in items if item.get_closest_marker("e2e") is None] + browser_tests
    for item in browser_tests:  # with pytest -n: all in one process, so two servers and browsers never compete
        item.add_marker(pytest.mark.xdist_group("browser"))
    reason = _skip_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"browser test skipped: {reason}")
    for item in browser_tests:
        item.add_marker(skip)


_STARTED = time.time()  # this test process's start (with pytest -n, each process's is before any test ran)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"_e2e_report_{report.when}", report)  # lets the page fixture see a failed test
    return report


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --- the Streamlit server ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Server:
    url: str
    runs_dir: Path
    data_dir: Path
    cache_dir: Path
    log_path: Path
    process: subprocess.Popen


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when pytest dies without its teardown (killed by a CI timeout)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the teardown below is the only cleanup


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def _wait_healthy(url: str, process: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    last_error = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode} before it was ready:\n"
                               f"{_log_tail(log_path)}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200 and response.read().strip() == b"ok":
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as exc:
            last_error = str(exc)
        time.sleep(0.2)
    raise RuntimeError(f"streamlit did not answer {url}/_stcore/health within {SERVER_START_TIMEOUT_S:.0f} s "
                       f"({last_error}):\n{_log_tail(log_path)}")


def _stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (server and its spawned training workers), then SIGKILL."""
    try:
        pgid = os.getpgid(process.pid)
    except ProcessLookupError:
        pgid = None
    if pgid is not None:
        for sig, grace in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline and _group_alive(pgid):
                if process.poll() is None:
                    try:
                        process.wait(timeout=0.2)
                    except subprocess.TimeoutExpired:
                        pass
                else:
                    time.sleep(0.2)
            if not _group_alive(pgid):
                break
    if process.poll() is None:
        process.kill()
        process.wait(timeout=5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


@contextlib.contextmanager
def streamlit_server(base: Path, address: str = "127.0.0.1"):
    """``streamlit run streamlit_app.py`` with its own folders under ``base``, listening on ``address``; ended
    on exit, whatever happens."""
    runs, data, cache = base / "runs", base / "data", base / "cache"
    port = _free_port()
    env = {**os.environ, "MEDCLS_RUNS_DIR": str(runs), "MEDCLS_DATA_DIR": str(data), "MEDCLS_CACHE_DIR": str(cache),
           "TORCH_HOME": str(base / "torch"), "MEDCLS_WORKER_THREADS": "1", "MEDCLS_MAX_CONCURRENT": "1",
           "PYTHONUNBUFFERED": "1", "MEDCLS_STANDBY_WORKER": "1"}  # the app as people run it
    for name in ("MEDCLS_DATA_ROOTS", "MEDCLS_BACKEND", "MEDCLS_EXPOSED", "MEDCLS_ALLOW_SERVER_FOLDERS"):
        env.pop(name, None)
    log_path = base / "server.log"
    command = [sys.executable, "-m", "streamlit", "run", "streamlit_app.py",
               "--server.headless", "true", "--server.port", str(port), "--server.address", address,
               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    with open(log_path, "wb") as log:
        # Its own session (process group), so the end can take the server and every worker it spawned.
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process, log_path)
        yield Server(url=url, runs_dir=runs, data_dir=data, cache_dir=cache, log_path=log_path, process=process)
    finally:
        _stop_process_group(process)


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    """The server all tests share (runs made by one test are visible to the next)."""
    base = tmp_path_factory.mktemp("e2e-server")
    with streamlit_server(base) as running:
        yield running


@pytest.fixture
def fresh_server(tmp_path: Path) -> Server:
    """A server of its own, for a test that needs one nobody has visited yet."""
    base = tmp_path / "server"
    base.mkdir()
    with streamlit_server(base) as running:
        yield running


@pytest.fixture
def exposed_server(tmp_path: Path) -> Server:
    """A server of its own listening on every interface (``--server.address 0.0.0.0``), as when shared."""
    base = tmp_path / "exposed-server"
    base.mkdir()
    with streamlit_server(base, address="0.0.0.0") as running:
        yield running


# --- the browser ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import expect, sync_playwright

    # A slow 2-core machine running two test processes can take longer than Playwright's 5 s to redraw a page.
    expect.set_options(timeout=15_000)
    for old in ARTIFACTS.glob("*.png"):  # the folder shows this run's pages only (not another process's of it)
        try:
            if old.stat().st_mtime < _STARTED:
                old.unlink()
        except FileNotFoundError:  # the other test process removed it first
            pass

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def front_door(browser, server: Server) -> Server:
    """Open the app at its root URL once, as the README tells people to, before any test opens a page URL.

    Streamlit 1.67 treats an app with a ``pages/`` folder beside its entry script as an old-style
    multipage app until ``st.navigation`` has run once in the server process; app/entry.py guards
    against that. ``test_a_page_url_opened_first_shows_the_app_navigation`` covers the guard on a server
    of its own; here, the other tests do not depend on it, so a broken guard fails that one test only.
    """
    context = browser.new_context(base_url=server.url)
    try:
        tab = context.new_page()
        tab.goto("/")
        tab.locator("[data-testid='stSidebarNav']").get_by_text("Compare runs").wait_for(timeout=90_000)
    finally:
        context.close()
    return server


def _new_tab(browser, server: Server):
    """A fresh browser context (its own cookies and storage: a new Streamlit session) and its one tab."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=server.url)
    context.add_init_script(SCRIPT_RUN_COUNTER)
    tab = context.new_page()
    tab.set_default_timeout(30_000)
    return context, tab


def _close_keeping_failure(request: pytest.FixtureRequest, server: Server, context, tab, name: str) -> None:
    """Close a test's browser context; if the test failed, first save what its tab showed."""
    report = getattr(request.node, "_e2e_report_call", None)
    if report is not None and report.failed:
        try:
            _save(request, tab, f"FAILED-{name}")
            request.node.user_properties.append(("server log", str(server.log_path)))
        except Exception:  # the page may be gone; the failure itself is what matters
            pass
    context.close()


@pytest.fixture
def page(browser, front_door: Server, request: pytest.FixtureRequest):
    """A fresh browser context (its own cookies and storage: a new Streamlit session) per test."""
    context, tab = _new_tab(browser, front_door)
    try:
        yield tab
    finally:
        _close_keeping_failure(request, front_door, context, tab, request.node.name)


@pytest.fixture
def person(browser, front_door: Server, request: pytest.FixtureRequest):
    """``person("alice")`` opens another browser context: another person, with their own identity cookie.
    Returns (context, tab); a failed test keeps a screenshot of each person's tab."""
    opened = []

    def open_person(name: str):
        context, tab = _new_tab(browser, front_door)
        opened.append((name, context, tab))
        return context, tab

    try:
        yield open_person
    finally:
        for name, context, tab in opened:
            _close_keeping_failure(request, front_door, context, tab, f"{request.node.name}-{name}")


# Streamlit scrolls inside its own containers, so a "full page" screenshot shows one window's worth.
_CONTENT_HEIGHT = """() => Math.max(...Array.from(document.querySelectorAll(
    "[data-testid='stMain'], [data-testid='stAppViewContainer'], [data-testid='stSidebarContent']"))
    .map(e => e.scrollHeight), window.innerHeight)"""
_TWO_FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


def _save(request: pytest.FixtureRequest, tab, name: str) -> Path:
    """The whole page: the window is made as tall as the content for the screenshot, then restored."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    size = tab.viewport_size
    height = min(int(tab.evaluate(_CONTENT_HEIGHT)) + 40, 8000)
    try:
        if size and height > size["height"]:
            tab.set_viewport_size({"width": size["width"], "height": height})
            tab.evaluate(_TWO_FRAMES)
        tab.screenshot(path=str(path))
    finally:
        if size:
            tab.set_viewport_size(size)
    request.node.user_properties.append((f"screenshot:{name}", _relative(path)))  # listed at the end of the run
    return path


@pytest.fixture
def screenshot_of(request: pytest.FixtureRequest):
    """``screenshot_of(tab, "name")`` saves ``tab`` as artifacts/e2e/name.png and reports the path."""

    def take(tab, name: str) -> Path:
        return _save(request, tab, name)

    return take


@pytest.fixture
def screenshot(page, screenshot_of):
    """``screenshot("train-live")`` saves the test's page as artifacts/e2e/train-live.png."""
    return lambda name: screenshot_of(page, name)
