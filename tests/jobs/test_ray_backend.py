"""The Ray job backend on a real local Ray cluster: queueing by the cluster, stop, lost runs, the pages.

One cluster (``ray.init(num_cpus=2)`` on this machine) serves the module; each run asks for one CPU,
so the cluster runs two at a time and queues the rest. Skipped when Ray is not installed.
"""

from __future__ import annotations

import ast
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ray = pytest.importorskip("ray")

from polling import wait_for  # noqa: E402

from medcls.config import DataConfig, TrainConfig  # noqa: E402
from medcls.jobs.manager import JobManager
from medcls.jobs.ray_backend import RayBackend, RayBackendError
from medcls.runs.store import RunStore

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ray_cluster():
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1", object_store_memory=100 * 1024 * 1024)
    yield
    ray.shutdown()


def write_two_classes(root: Path, per_class: int = 12, size: int = 24) -> Path:
    rng = np.random.default_rng(0)
    for label, level in (("bright", 190), ("dark", 70)):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.normal(level, 20, (size, size)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / label / f"{label} ({i}).png")
    return root


def test_settings_come_from_the_environment(monkeypatch):
    for name in ("MEDCLS_RAY_ADDRESS", "MEDCLS_RAY_CPUS_PER_RUN", "MEDCLS_RAY_GPUS_PER_RUN", "MEDCLS_RAY_MEMORY_MB",
                 "MEDCLS_WORKER_THREADS", "MEDCLS_RAY_NICE"):
        monkeypatch.delenv(name, raising=False)
    assert RayBackend.from_settings().nice == 10  # by default runs yield the CPU to an app on the same node
    assert RayBackend.from_settings().address is None  # then RAY_ADDRESS, or the cluster started on this machine
    for name, value in {"MEDCLS_RAY_ADDRESS": "10.0.0.5:6379", "MEDCLS_RAY_CPUS_PER_RUN": "2",
                        "MEDCLS_RAY_GPUS_PER_RUN": "0.5", "MEDCLS_RAY_MEMORY_MB": "2048",
                        "MEDCLS_WORKER_THREADS": "3", "MEDCLS_RAY_NICE": "0"}.items():
        monkeypatch.setenv(name, value)
    backend = RayBackend.from_settings()
    assert (backend.address, backend.cpus_per_run, backend.gpus_per_run, backend.memory_mb, backend.threads,
            backend.nice) == ("10.0.0.5:6379", 2.0, 0.5, 2048, 3, 0)
    assert backend.schedules_itself and backend.name == "ray"
    monkeypatch.setenv("MEDCLS_RAY_CPUS_PER_RUN", "two")
    with pytest.raises(RayBackendError, match="MEDCLS_RAY_CPUS_PER_RUN"):
        RayBackend.from_settings()
    monkeypatch.setenv("MEDCLS_RAY_CPUS_PER_RUN", "0")
    with pytest.raises(RayBackendError, match="positive"):
        RayBackend.from_settings()


def test_a_task_claims_only_a_queued_run_and_refuses_a_store_it_cannot_see(tmp_path):
    from medcls.jobs.ray_backend import _claim, _train_task

    store = RunStore(tmp_path / "runs")
    queued = store.create(TrainConfig(), run_id="queued-run")
    cancelled = store.create(TrainConfig(), run_id="cancelled-run")
    store.set_status(cancelled, "cancelled", error="Cancelled before it started.")
    assert _claim(store, queued)
    status = store.raw_status(queued)
    assert (status.state, status.pid, status.backend) == ("running", os.getpid(), "ray")
    assert not _claim(store, queued), "a run is trained by one task only"
    assert not _claim(store, cancelled) and store.raw_status(cancelled).state == "cancelled"
    assert _train_task(str(store.root), cancelled, 1, 0, {}) == "skipped"
    with pytest.raises(RayBackendError, match="every Ray node"):
        _train_task(str(tmp_path / "not-shared"), queued, 1, 0, {})
    assert not (tmp_path / "not-shared").exists()


def test_only_the_ray_backend_imports_ray():
    offenders = []
    for path in [*(ROOT / "medcls").rglob("*.py"), *(ROOT / "app").rglob("*.py"), *(ROOT / "app_pages").rglob("*.py"),
                 ROOT / "streamlit_app.py"]:
        if path.name == "ray_backend.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            if any(n == "ray" or n.startswith("ray.") for n in names):
                offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_three_runs_queue_on_the_cluster_one_stops_and_the_pages_show_every_history(ray_cluster, tmp_path,
                                                                                   monkeypatch):
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    for name, value in {"MEDCLS_RUNS_DIR": tmp_path / "runs", "MEDCLS_DATA_DIR": tmp_path / "data",
                        "MEDCLS_CACHE_DIR": tmp_path / "cache", "MEDCLS_WORKER_THREADS": 1,
                        "MEDCLS_BACKEND": "ray", "MEDCLS_RAY_CPUS_PER_RUN": 1, "MEDCLS_RAY_NICE": 0}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.chdir(ROOT)
    data = write_two_classes(tmp_path / "tiny")
    st.cache_resource.clear()
    store = RunStore(tmp_path / "runs")
    from app.manager import manager

    def state(run_id: str) -> str:
        return store.status(run_id).state

    try:
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=60).run()
        at.sidebar.radio(key="data_kind").set_value("folder").run()
        at.sidebar.text_input(key="data_folder").set_value(str(data)).run()
        at.switch_page("app_pages/train.py").run()
        assert isinstance(manager().backend, RayBackend)

        def start(epochs: int) -> str:
            before = set(store.list_ids())
            at.number_input(key="opt_epochs").set_value(epochs)
            at.number_input(key="opt_image_size").set_value(32)
            at.number_input(key="opt_batch_size").set_value(8)
            at.selectbox(key="opt_precision").set_value("fp32")
            at.run()
            at.button(key="start_training").click().run()
            assert not at.exception
            (new,) = set(store.list_ids()) - before
            return new

        long_run = start(300)
        wait_for(lambda: state(long_run) == "running", 90, what="the first run to start on the cluster")
        assert store.raw_status(long_run).backend == "ray"
        first, second = start(3), start(3)

        # Two CPUs, one per run: the cluster runs two and keeps the third waiting, queued.
        most_running = 0

        def two_running_one_waiting() -> bool:
            nonlocal most_running
            states = [state(r) for r in (long_run, first, second)]
            most_running = max(most_running, states.count("running"))
            return states == ["running", "running", "queued"]

        wait_for(two_running_one_waiting, 90, what="two runs training while the third waits")
        assert manager().queue_position(second) == 1
        # Not handed to the cluster yet: it waits in medcls's round-robin queue until the cluster has room, so
        # runs queued later by other people can still take their turn before it.
        assert store.raw_status(second).backend != "ray"

        # Stop the long run from its page, once it has a finished epoch.
        wait_for(lambda: store.history(long_run), 90, what="the long run's first epoch")
        at.selectbox(key="train_run_picker").set_value(long_run).run()
        at.button(key=f"stop_{long_run}").click().run()
        wait_for(lambda: state(long_run) == "cancelled", 60, what="the stopped run to end")
        wait_for(lambda: state(first) == "finished" and state(second) == "finished", 120,
                 what="the two short runs to finish")
        assert most_running <= 2, "the cluster never runs more runs than it has CPUs for"

        # Every run's history, read through the normal pages.
        for run_id, label in ((long_run, "Cancelled"), (first, "Finished"), (second, "Finished")):
            at.selectbox(key="train_run_picker").set_value(run_id).run()
            assert not at.exception
            done = [m.value for m in at.metric if m.label == "Epochs done"]
            history = store.history(run_id)
            epochs = store.config(run_id).epochs
            assert done == [f"{len(history)}/{epochs}"] and history
            shown = [m.value for m in [*at.success, *at.warning]]
            assert any(label in text for text in shown), (run_id, shown)
        assert len(store.history(first)) == len(store.history(second)) == 3
        assert store.has_weights(long_run), "a stopped run keeps its best checkpoint"

        at.switch_page("app_pages/compare.py").run()
        assert not at.exception
        assert set(at.multiselect(key="compare_runs").value) == {first, second}
    finally:
        manager().shutdown(kill=True)
        st.cache_resource.clear()


def test_a_run_whose_ray_worker_dies_ends_interrupted_with_the_reason(ray_cluster, tmp_path):
    store = RunStore(tmp_path / "runs")
    cfg = TrainConfig(data=DataConfig(source=str(write_two_classes(tmp_path / "tiny")))).with_options(
        image_size=32, epochs=300, batch_size=8, precision="fp32", threads=1)
    manager = JobManager(store, backend=RayBackend(nice=0), poll_s=0.2)
    try:
        run_id = manager.submit(cfg)
        wait_for(lambda: store.raw_status(run_id).state == "running", 90, what="the run to start")
        status = store.raw_status(run_id)
        assert status.pid != os.getpid() and status.backend == "ray"
        os.kill(status.pid, signal.SIGKILL)  # the node loses the worker
        wait_for(lambda: store.raw_status(run_id).state != "running", 30, what="the manager to notice")
        status = store.raw_status(run_id)
        assert status.state == "interrupted"
        assert "Ray worker" in status.error and "died" in status.error
    finally:
        manager.shutdown()
