"""Faults: killed workers, NaN losses, crashes during writes, simultaneous starts, cancelling during
evaluation, run folders deleted while the app shows them, and a full disk. (A killed app server and resumed
runs: test_resume.py; hung workers and stops from other processes: test_liveness.py.)

Real worker processes are spawned only where the fault needs one (a SIGKILLed worker, a SIGKILLed
server process): two spawns in this file. Everything else runs the real code in-process.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from polling import wait_for
from reliability_corpus import good_classes
from reliability_helpers import ROOT, new_app, slow_config, texts

from medcls.config import TrainConfig
from medcls.inference.predictor import load_predictor
from medcls.jobs.execute import execute_run
from medcls.jobs.local import LocalBackend
from medcls.jobs.manager import JobManager
from medcls.runs.store import RunStore
from medcls.training.callbacks import Callback

HISTORY_KEYS = {"epoch", "train_loss", "val_loss", "val_macro_f1", "score", "best"}


def png_bytes(level: int = 120, size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((size, size), level, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def assert_history_intact(store: RunStore, run_id: str) -> list[dict]:
    """Every line of history.jsonl parses (at most a torn last line), epochs run 1..n without gaps."""
    lines = store.file(run_id, "history.jsonl").read_text(encoding="utf-8").splitlines()
    parsed = []
    for i, line in enumerate(lines):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            assert i == len(lines) - 1, f"line {i + 1} of {len(lines)} is corrupt: {line!r}"
    history = store.history(run_id)
    assert [h.to_dict() for h in history] == parsed and history, "history is empty or unreadable"
    assert [h.epoch for h in history] == list(range(1, len(history) + 1))
    assert all(HISTORY_KEYS <= set(h.to_dict()) for h in history)
    return history


def assert_best_checkpoint_predicts(store: RunStore, run_id: str) -> None:
    prediction = load_predictor(store, run_id).predict(png_bytes(), name="check.png")
    assert abs(sum(prediction.probabilities.values()) - 1.0) < 1e-5
    assert all(np.isfinite(list(prediction.probabilities.values())))


# --- killed processes -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_worker_killed_mid_epoch_keeps_its_history_and_best_checkpoint(store, slow_dataset):
    manager = JobManager(store, max_concurrent=1, backend=LocalBackend(threads=1, nice=0), poll_s=0.2)
    try:
        run_id = manager.submit(slow_config(slow_dataset))

        def mid_epoch():
            done = len(store.history(run_id))
            progress = store.progress(run_id)
            return done >= 1 and progress.phase == "train" and progress.epoch == done + 1 \
                and progress.batch >= 2 and progress
        at_kill = wait_for(mid_epoch, timeout=120, interval=0.05, what="the second epoch to be under way")
        pid = int(store.raw_status(run_id).pid)
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        # Any page reads it as stopped at once (its worker is gone); the manager then records why.
        wait_for(lambda: store.status(run_id).state in ("interrupted", "failed"), timeout=10,
                 what="the killed run to stop reading as running")
        wait_for(lambda: store.raw_status(run_id).state != "running", timeout=10,
                 what="the manager to record the end of the killed worker")
        assert time.monotonic() - killed_at < 10
    finally:
        manager.shutdown(kill=True)
    status = store.raw_status(run_id)  # persisted by the manager, not only derived
    assert status.state == "interrupted" and "signal 9" in status.error, status
    history = assert_history_intact(store, run_id)
    assert len(history) >= at_kill.epoch - 1
    assert_best_checkpoint_predicts(store, run_id)
    # A killed worker is not restarted by itself (it may die again); a fresh store reads the same. Resuming it
    # is one click (test_resume.py).
    JobManager(store, backend=LocalBackend(threads=1, nice=0), start=False)
    assert RunStore(store.root).status(run_id).state == "interrupted"
    assert not store.raw_status(run_id).auto_resume


def test_a_run_marked_running_whose_worker_vanished_is_reconciled_on_restart(store, synth, tmp_path):
    """Server and worker both killed (e.g. the machine restarted): the next manager persists 'interrupted'."""
    run_id = store.create(synth.config(tmp_path))
    store.set_status(run_id, "running", pid=synth.dead_pid())
    store.beat(run_id)
    assert store.status(run_id).state == "interrupted"  # read so at once, before any manager exists
    JobManager(store, backend=LocalBackend(), start=False)
    raw = store.raw_status(run_id)
    assert raw.state == "interrupted" and "stopped unexpectedly" in raw.error


# --- NaN loss ----------------------------------------------------------------------------------------------

class PoisonWeights(Callback):
    """Turns every weight into NaN after the first batch of epoch 2, as a diverging run would."""

    def on_batch_end(self, trainer, event) -> None:
        if event.phase == "train" and event.epoch == 2 and event.batch == 1:
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.fill_(float("nan"))


def test_nan_loss_stops_the_run_with_a_clear_message(app_env, tmp_path):
    store = RunStore(app_env / "runs")
    data = good_classes(tmp_path / "data", per_class=12, size=32)
    run_id = store.create(TrainConfig(image_size=32, epochs=5, batch_size=4, precision="fp32").with_options(
        source=str(data)))
    outcome = execute_run(store, run_id, callbacks=[PoisonWeights()])
    status = store.status(run_id)
    assert outcome.state == status.state == "failed"
    assert "training loss became nan in epoch 2, batch 2" in status.error
    assert "Lower the learning rate" in status.error
    assert len(assert_history_intact(store, run_id)) == 1
    assert_best_checkpoint_predicts(store, run_id)  # epoch 1's weights, not the NaN ones
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    assert any("training loss became nan" in e for e in texts(at.error))


# --- crashes during writes ---------------------------------------------------------------------------------

WRITER_SCRIPT = r"""
import os, sys, threading, time
import torch
from medcls.runs.store import RunStore

def crash_point(fd):  # the new data is in the temporary file; the process dies before it replaces the old one
    os.write(1, b"writing\n")  # one write per line: the two threads' lines never interleave
    time.sleep(120)

os.fsync = crash_point
store = RunStore(sys.argv[1])
run_id = sys.argv[2]
threading.Thread(target=store.set_status, args=(run_id, "failed"), kwargs={"error": "x" * 100000}).start()
threading.Thread(target=store.save_weights, args=(run_id, {"w": torch.full((100000,), 2.0)})).start()
time.sleep(120)
"""


def test_a_crash_during_status_and_checkpoint_writes_leaves_the_previous_files(store, synth, tmp_path):
    run_id = store.create(synth.config(tmp_path))
    store.set_status(run_id, "running", best_epoch=3)
    store.save_weights(run_id, {"w": torch.full((4,), 1.0)})
    before = {name: store.file(run_id, name).read_bytes() for name in ("status.json", "best.pt")}
    writer = subprocess.Popen([sys.executable, "-c", WRITER_SCRIPT, str(store.root), run_id], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert writer.stdout.readline().strip() == "writing"
        assert writer.stdout.readline().strip() == "writing"
        temporaries = [p for p in store.path(run_id).iterdir() if p.name.endswith(".tmp")]
        assert len(temporaries) == 2 and all(p.stat().st_size > 1000 for p in temporaries)  # mid-write
    finally:
        writer.kill()
        writer.wait(10)
    for name, data in before.items():
        assert store.file(run_id, name).read_bytes() == data, f"{name} changed by a crashed write"
    assert store.raw_status(run_id).state == "running" and store.raw_status(run_id).best_epoch == 3
    assert torch.equal(store.load_weights(run_id)["w"], torch.full((4,), 1.0))
    # Leftover temporaries are hidden files: listing and the next write are unaffected.
    assert store.list_ids() == [run_id]
    store.set_status(run_id, "finished")
    assert store.raw_status(run_id).state == "finished"


# --- simultaneous starts -----------------------------------------------------------------------------------

class _Handle:
    def __init__(self):
        self.alive = True

    def is_alive(self):
        return self.alive

    def kill(self):
        self.alive = False

    def exit_description(self):
        return "ended"


class RecordingBackend:
    """Starts nothing; a stand-in worker per run, so many scheduling rounds cost no processes."""

    name = "recording"
    schedules_itself = False

    def __init__(self):
        self.started: dict[str, _Handle] = {}

    def start(self, store, run_id):
        self.started[run_id] = _Handle()
        return self.started[run_id], None


def test_starts_at_the_same_instant_queue_and_never_run_on_top_of_each_other(store, synth, tmp_path):
    """Three app servers on one store, two clicks each at the same instant, max one run at a time."""
    backends = [RecordingBackend() for _ in range(3)]
    managers = [JobManager(store, max_concurrent=1, backend=b, start=False) for b in backends]
    barrier = threading.Barrier(len(managers) + 1)
    most_running, stop_watching, errors = [0], threading.Event(), []

    def watch():
        while not stop_watching.is_set():
            running = [r for r in store.list_ids() if store.raw_status(r).state == "running"]
            most_running[0] = max(most_running[0], len(running))

    def click(manager):
        try:
            barrier.wait()
            for seed in range(2):
                manager.submit(synth.config(tmp_path, seed=seed))
                manager.tick()
            for _ in range(20):
                manager.tick()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    watcher = threading.Thread(target=watch)
    clickers = [threading.Thread(target=click, args=(m,)) for m in managers]
    watcher.start()
    for t in clickers:
        t.start()
    barrier.wait()
    for t in clickers:
        t.join(60)
    assert not errors
    states = sorted(store.raw_status(r).state for r in store.list_ids())
    assert states == ["queued"] * 5 + ["running"]
    assert sum(len(b.started) for b in backends) == 1
    # The running one ends; the queue moves on one at a time, still never two at once.
    for _ in range(5):
        backend = next(b for b in backends if any(h.alive for h in b.started.values()))
        run_id, handle = next((r, h) for r, h in backend.started.items() if h.alive)
        store.set_status(run_id, "finished")
        handle.alive = False
        for manager in managers:
            manager.tick()
    stop_watching.set()
    watcher.join(10)
    assert most_running[0] == 1
    assert sorted(store.raw_status(r).state for r in store.list_ids()) == ["finished"] * 5 + ["running"]
    assert sum(len(b.started) for b in backends) == 6


# --- cancel during evaluation -------------------------------------------------------------------------------

def test_cancelling_during_evaluation_stops_the_run_there(store, tmp_path):
    data = good_classes(tmp_path / "data", per_class=20, size=32)
    run_id = store.create(TrainConfig(image_size=32, epochs=5, batch_size=2, precision="fp32").with_options(
        source=str(data)))
    events = []

    class StopInValidation(Callback):
        def on_batch_end(self, trainer, event) -> None:
            events.append((event.epoch, event.phase, event.batch, event.batches))
            if event.epoch == 2 and event.phase == "val" and event.batch == 1:
                store.request_stop(run_id)  # what the Stop button does

    outcome = execute_run(store, run_id, callbacks=[StopInValidation()])
    assert outcome.state == "cancelled" and store.status(run_id).state == "cancelled"
    last = [e for e in events if e[1] != "test"][-1]  # the kept checkpoint's final test comes after the stop
    assert last[:3] == (2, "val", 1) and last[3] >= 2, "the stop was not honoured inside the evaluation loop"
    assert len(assert_history_intact(store, run_id)) == 1  # epoch 2 never completed
    assert_best_checkpoint_predicts(store, run_id)


# --- deleted run folders -------------------------------------------------------------------------------------

@pytest.mark.parametrize("page,key", [("app_pages/train.py", "train_run_picker"),
                                      ("app_pages/compare.py", "compare_runs"),
                                      ("app_pages/try_it.py", "try_run")])
def test_deleting_the_shown_run_folder_gives_a_message_not_a_crash(page, key, app_run):
    runs, template = app_run
    shutil.copytree(runs / template, runs / "shown-run")
    at = new_app().run()
    at.switch_page(page).run()
    widget = at.multiselect(key=key) if key == "compare_runs" else at.selectbox(key=key)
    widget.set_value(["shown-run"] if key == "compare_runs" else "shown-run").run()
    assert not at.exception
    shutil.rmtree(runs / "shown-run")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("shown-run" in m and "deleted" in m for m in texts(at.info)), texts(at.info)
    # The other run is shown instead; with every run gone the page says so.
    shutil.rmtree(runs / template)
    at.run()
    assert not at.exception
    assert texts(at.info)


def test_a_run_folder_deleted_while_it_trains_does_not_break_the_manager(store, synth, tmp_path):
    backend = RecordingBackend()
    manager = JobManager(store, backend=backend, start=False)
    run_id = manager.submit(synth.config(tmp_path))
    manager.tick()
    shutil.rmtree(store.path(run_id))
    backend.started[run_id].alive = False  # its worker then dies on its next write
    manager.tick()
    assert store.list_ids() == [] and manager.running() == []
