"""A real Streamlit server of the app, and a minimal browser stand-in speaking its WebSocket protocol.

:class:`Session` is what a browser tab does: it opens ``/_stcore/stream``, asks for a page with a
``rerun_script`` BackMsg and reads ForwardMsgs until ``script_finished``. The time from request to
``script_finished`` is the page render time a user waits for. It also reads the few elements that
describe the shown run (the run picker, the status line, "Epochs done") from the deltas.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from reliability_corpus import good_classes
from reliability_helpers import ROOT
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from websockets.sync.client import connect

from app.live import STATE_ICONS  # the icons the status line starts with
from medcls.config import TrainConfig
from medcls.runs.records import RunMeta
from medcls.runs.store import RunStore

FINISHED_EARLY_FOR_RERUN = ForwardMsg.ScriptFinishedStatus.Value("FINISHED_EARLY_FOR_RERUN")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveApp:
    process: subprocess.Popen
    port: int
    store: RunStore
    run_id: str | None
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        worker = self.store.raw_status(self.run_id).pid if self.run_id else None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        # The worker notices its parent is gone and exits by itself; make sure of it.
        if worker:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and _alive(int(worker)):
                time.sleep(0.2)
            if _alive(int(worker)):
                os.kill(int(worker), signal.SIGKILL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().split(b")")[-1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def start_live_app(base: Path, timeout: float = 90.0, long_run: bool = True, env_extra: dict | None = None) -> LiveApp:
    data = good_classes(base / "data-in", classes=("benign", "malignant", "normal"), per_class=20, size=64)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDCLS_")}
    env.update(MEDCLS_RUNS_DIR=str(base / "runs"), MEDCLS_DATA_DIR=str(base / "data"),
               MEDCLS_CACHE_DIR=str(base / "cache"), MEDCLS_MAX_CONCURRENT="1", MEDCLS_WORKER_THREADS="1",
               TORCH_HOME=str(base / "torch"), PYTHONPATH=str(ROOT), **(env_extra or {}))
    store = RunStore(base / "runs")
    # Long enough to train through the whole load test (an epoch of these 60 images took 0.11 s on one thread of
    # a 2-core Intel Xeon in 2026-12, so 300 epochs once ended before the test did); stopped by the test when done.
    run_id = None if not long_run else store.create(TrainConfig(image_size=64, epochs=1000, batch_size=8, precision="fp32").with_options(
        source=str(data)), run_id="live-run", meta=RunMeta(name="live-run"))  # the picker shows names
    port = free_port()
    log = base / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "streamlit_app.py", "--server.port", str(port),
         "--server.headless", "true", "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    app = LiveApp(process, port, store, run_id, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{app.url}/_stcore/health", timeout=2) as response:
                if response.read().strip() == b"ok":
                    return app
        except OSError:
            time.sleep(0.3)
    app.close()
    raise RuntimeError(f"streamlit did not become healthy in {timeout:.0f}s:\n{log.read_text()[-3000:]}")


@dataclass
class View:
    """What one render showed about the run."""

    run_id: str | None = None
    state: str | None = None
    epochs_done: str | None = None
    exceptions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, element) -> None:
        kind = element.WhichOneof("type")
        if kind == "selectbox" and element.selectbox.label == "Run to show":
            box = element.selectbox
            self.run_id = box.raw_value if box.set_value and box.raw_value else box.options[box.default]
        elif kind == "metric" and element.metric.label == "Epochs done":
            self.epochs_done = element.metric.body
        elif kind in ("progress", "alert"):
            if kind == "progress":
                text = element.progress.text
            else:  # Streamlit moves a leading emoji of an alert into its icon field
                text = f"{element.alert.icon} {element.alert.body}" if element.alert.icon else element.alert.body
            for state, icon in STATE_ICONS.items():
                if text.startswith(f"{icon} "):
                    self.state = state
            if kind == "alert" and element.alert.format == 1:  # ERROR
                self.errors.append(text)
        elif kind == "exception":
            self.exceptions.append(f"{element.exception.type}: {element.exception.message}")

    def summary(self) -> tuple:
        return self.run_id, self.state, self.epochs_done


class Session:
    """One browser tab: its own WebSocket connection, hence its own Streamlit session."""

    def __init__(self, app: LiveApp):
        self.ws = connect(f"ws://127.0.0.1:{app.port}/_stcore/stream", subprotocols=["streamlit"],
                          max_size=None, open_timeout=30).__enter__()  # closed by close()
        # fragment id -> interval of each fragment with run_every the page drew, in page order: the live panel
        # first, then e.g. the estimate's wait for a probe beside the run.
        self.auto_reruns: dict[str, float] = {}

    @property
    def auto_rerun(self) -> tuple[float, str] | None:
        """(interval, fragment id) of the page's first self-refreshing fragment (on the Train page, the live panel)."""
        return next(((interval, fragment) for fragment, interval in self.auto_reruns.items()), None)

    def render(self, page: str = "train", timeout: float = 120.0) -> tuple[float, View]:
        """Ask for a full run of ``page``; (seconds until the script finished, what it showed)."""
        return self._run(page, "", timeout)

    def rerun_fragment(self, page: str = "train", timeout: float = 120.0) -> tuple[float, View]:
        """What the browser does every ``interval`` seconds for a fragment with run_every (the live panel)."""
        assert self.auto_rerun, "the page did not ask for automatic fragment reruns"
        return self._run(page, self.auto_rerun[1], timeout)

    def _run(self, page: str, fragment_id: str, timeout: float) -> tuple[float, View]:
        msg = BackMsg()
        msg.rerun_script.page_name = page
        msg.rerun_script.query_string = ""
        if fragment_id:
            msg.rerun_script.fragment_id = fragment_id
            msg.rerun_script.is_auto_rerun = True
        else:
            self.auto_reruns.clear()  # a full run asks again for those it still wants
        start = time.perf_counter()
        self.ws.send(msg.SerializeToString())
        view = View()
        while True:
            fm = ForwardMsg()
            fm.ParseFromString(self.ws.recv(timeout=timeout))
            kind = fm.WhichOneof("type")
            if kind == "new_session":  # a script run starts (again, after an st.rerun)
                view = View()
                if not fm.metadata.run.fragment_ids:  # a full run: it asks again for those it still wants
                    self.auto_reruns.clear()
            elif kind == "auto_rerun":
                self.auto_reruns[fm.auto_rerun.fragment_id] = fm.auto_rerun.interval
            elif kind == "stop_auto_rerun":
                for stopped in fm.stop_auto_rerun.fragment_ids:
                    self.auto_reruns.pop(stopped, None)
            elif kind == "delta" and fm.delta.WhichOneof("type") == "new_element":
                view.add(fm.delta.new_element)
            elif kind == "script_finished" and fm.script_finished != FINISHED_EARLY_FOR_RERUN:
                return time.perf_counter() - start, view

    def close(self) -> None:
        self.ws.close()
