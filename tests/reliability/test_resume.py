"""Runs survive a killed worker and a restarted server: they continue from their last finished epoch.

A real worker process is killed mid-run (SIGKILL) and the run is resumed with one call (the Train page's
button); it must end with one continuous history and the same final metrics as the same run trained without
interruption. A killed app server's run is resumed by the next server on its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from polling import wait_for
from reliability_corpus import assert_fault_message, good_classes
from reliability_helpers import ROOT, alive, new_app, slow_config, texts

from medcls.config import TrainConfig
from medcls.jobs.execute import execute_run
from medcls.jobs.local import LocalBackend
from medcls.jobs.manager import JobManager
from medcls.runs.permissions import browser_identity
from medcls.runs.records import RunMeta
from medcls.runs.store import RunStore

pytestmark = pytest.mark.slow


EPOCHS = 10


def ten_epochs(source) -> TrainConfig:
    """A few tenths of a second to a second per epoch in a worker on one thread; nothing stops it early."""
    return TrainConfig(image_size=96, epochs=EPOCHS, batch_size=8, precision="fp32", threads=1) \
        .with_options(source=str(source))


def test_a_run_killed_mid_way_and_resumed_ends_with_the_metrics_of_an_uninterrupted_one(store, tmp_path):
    data = good_classes(tmp_path / "data", classes=("benign", "malignant", "normal"), per_class=40, size=96)
    reference = RunStore(tmp_path / "reference-runs")
    whole = reference.create(ten_epochs(data), run_id="whole")
    assert execute_run(reference, whole).state == "finished"  # the same run, never interrupted

    manager = JobManager(store, backend=LocalBackend(threads=1, nice=0), poll_s=0.2)
    try:
        run_id = manager.submit(ten_epochs(data))
        wait_for(lambda: len(store.history(run_id)) >= 3 and store.has_resume(run_id), timeout=180, interval=0.02,
                 what="three epochs")
        os.kill(store.raw_status(run_id).pid, signal.SIGKILL)  # somewhere in epoch 4 or a little later
        wait_for(lambda: store.raw_status(run_id).state == "interrupted", timeout=15, what="the run to be interrupted")
        assert "signal 9" in store.raw_status(run_id).error
        before = len(store.history(run_id))
        assert 3 <= before < EPOCHS, "the run ended before it could be killed mid-way"
        for _ in range(5):
            manager.tick()
        assert store.raw_status(run_id).state == "interrupted"  # killed, not a server restart: waits for a click
        manager.resume(run_id)  # the Train page's "Resume from epoch N"
        wait_for(lambda: store.raw_status(run_id).state in ("finished", "failed", "interrupted"), timeout=180,
                 what="the resumed run to end")
    finally:
        manager.shutdown(kill=True)
    status = store.raw_status(run_id)
    assert status.state == "finished", status.error
    assert_fault_message(" ".join(status.notes), "killed-run-resumed")
    history, expected = store.history(run_id), reference.history(whole)
    assert [h.epoch for h in history] == list(range(1, EPOCHS + 1))  # one continuous history
    # The same numbers as without the interruption, within floating-point noise.
    assert [h.val_loss for h in history] == pytest.approx([h.val_loss for h in expected], abs=1e-4)
    assert store.metrics(run_id).test.macro_f1 == pytest.approx(reference.metrics(whole).test.macro_f1, abs=1e-4)
    assert store.metrics(run_id).test.accuracy == pytest.approx(reference.metrics(whole).test.accuracy, abs=1e-4)
    assert status.best_epoch == reference.raw_status(whole).best_epoch and status.resumes == 1


def test_the_train_page_resumes_an_interrupted_run_with_one_click(app_env, tmp_path, monkeypatch):
    from medcls.training.engine import Callback

    class Killed(Callback):
        def on_batch_end(self, trainer, event):
            if event.epoch == 2 and event.phase == "train":
                raise KeyboardInterrupt

    store = RunStore(app_env / "runs")
    data = good_classes(tmp_path / "data", per_class=12, size=32)
    alice, bob = "alice-browser-token-0123456789", "bob-browser-token-0123456789"
    run_id = store.create(TrainConfig(image_size=32, epochs=3, batch_size=4, precision="fp32").with_options(
        source=str(data)), run_id="interrupted-run", meta=RunMeta(owner=browser_identity(alice).key,
                                                                   owner_name="Alice"))
    with pytest.raises(KeyboardInterrupt):
        execute_run(store, run_id, callbacks=[Killed()])
    store.set_status(run_id, "interrupted", error="The training process was killed by signal 9.")

    def opened_by(token: str):
        at = new_app()
        at.session_state["_identity_token"] = token  # this browser's cookie
        at.run()
        at.switch_page("app_pages/train.py").run()
        assert at.selectbox(key="train_run_picker").value == run_id
        return at, at.button(key=f"resume_{run_id}")

    at, button = opened_by(bob)  # someone else's run: Bob sees it but may not take a slot for it
    assert button.disabled and "Only Alice, who started this run, or an instructor" in button.help
    # Without a classroom set up, Bob is most likely Alice in another browser: the way that still works is named.
    assert "python -m medcls stop, resume, rename or delete" in button.help
    monkeypatch.setenv("MEDCLS_INSTRUCTOR_SECRET", "a-classroom-secret-0123456789")
    at, button = opened_by(bob)
    assert button.disabled and button.help == ("Only Alice, who started this run, or an instructor can stop, "
                                               "resume, rename or delete it.")
    monkeypatch.delenv("MEDCLS_INSTRUCTOR_SECRET")
    at, button = opened_by(alice)
    assert not button.disabled
    assert button.label == "▶ Resume from epoch 2"
    button.click().run()
    assert not at.exception
    assert store.raw_status(run_id).state in ("queued", "running", "finished")
    assert store.raw_status(run_id).resumes == 1
    assert not any("Interrupted" in w for w in texts(at.warning))


SERVER_SCRIPT = """
import sys, time
from medcls.config import TrainConfig
from medcls.jobs.local import LocalBackend
from medcls.jobs.manager import JobManager
from medcls.runs.permissions import browser_identity
from medcls.runs.records import RunMeta
from medcls.runs.store import RunStore

store = RunStore(sys.argv[1])
manager = JobManager(store, backend=LocalBackend(threads=1, nice=0), poll_s=0.2)
run_id = manager.submit(TrainConfig.load(sys.argv[2]))
print(run_id, flush=True)
while True:
    time.sleep(1)
"""


def test_a_run_whose_server_was_killed_continues_when_the_app_starts_again(app_env, slow_dataset, tmp_path):
    store = RunStore(app_env / "runs")
    config_path = tmp_path / "config.json"
    config_path.write_text(slow_config(slow_dataset).to_json())
    server = subprocess.Popen([sys.executable, "-c", SERVER_SCRIPT, str(store.root), str(config_path)],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    worker_pid = None
    try:
        run_id = server.stdout.readline().strip()
        assert run_id, "the server process did not start a run"
        wait_for(lambda: len(store.history(run_id)) >= 2 and store.has_resume(run_id), timeout=120,
                 what="two epochs")
        worker_pid = int(store.raw_status(run_id).pid)
        server.send_signal(signal.SIGKILL)  # the app server dies; nobody reaps or stops the worker
        server.wait(10)
        # The worker notices its parent is gone, records the interruption and exits.
        wait_for(lambda: store.raw_status(run_id).state == "interrupted", timeout=15,
                 what="the orphaned worker to mark its run interrupted")
        wait_for(lambda: not alive(worker_pid), timeout=10, what="the orphaned worker to exit")
        status = store.raw_status(run_id)
        assert_fault_message(status.error, "server-restarted")
        assert status.auto_resume
        done = len(store.history(run_id))
        # The app starts again: its job manager resumes the run on its own, from its last finished epoch.
        at = new_app().run()
        at.switch_page("app_pages/train.py").run()
        assert not at.exception
        assert at.selectbox(key="train_run_picker").value == run_id
        wait_for(lambda: len(store.history(run_id)) >= done + 1, timeout=120, what="an epoch after the restart")
        new_worker = store.raw_status(run_id).pid
        assert new_worker != worker_pid and store.raw_status(run_id).resumes == 1
        epochs = [h.epoch for h in store.history(run_id)]
        assert epochs == list(range(1, len(epochs) + 1))  # one continuous history
        assert any("Resumed after epoch" in n for n in store.raw_status(run_id).notes)
    finally:
        if server.poll() is None:
            server.kill()
        if worker_pid and alive(worker_pid):
            os.kill(worker_pid, signal.SIGKILL)
