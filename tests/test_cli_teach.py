"""The command line's lesson, export and import commands."""

from __future__ import annotations

import zipfile

from medcls.cli import main
from medcls.runs.store import RunStore

LESSON = """
[[lesson]]
name = "tiny"
title = "Tiny: learning rates"
question = "Which learning rate?"
metric = "accuracy"
base = { image_size = 32, epochs = 1, batch_size = 8, precision = "fp32" }
[[lesson.run]]
label = "slow"
settings = { lr = 0.0001 }
[[lesson.run]]
label = "fast"
settings = { lr = 0.003 }
"""


def test_lesson_list_and_run_print_the_runs_and_the_conclusion(class_dataset, tmp_path, capsys):
    assert main(["lesson", "list"]) == 0
    assert "rare-classes" in capsys.readouterr().out
    lessons = tmp_path / "lessons.toml"
    lessons.write_text(LESSON)
    assert main(["lesson", "run", "tiny", "--data", str(class_dataset), "--lessons", str(lessons)]) == 0
    out = capsys.readouterr().out
    assert "All 2 runs finished." in out
    assert "fast" in out and ("raised accuracy" in out or "lowered accuracy" in out or "the same accuracy" in out)
    assert "In short:" in out
    store = RunStore()
    assert {store.group(r).values["label"] for r in store.list_ids()} == {"slow", "fast"}
    assert main(["lesson", "run", "nope", "--lessons", str(lessons)]) == 2
    assert "There is no lesson 'nope'" in capsys.readouterr().err


def test_export_and_import_from_the_command_line(finished_run, tmp_path, capsys):
    store, run_id = finished_run
    assert main(["export", run_id, "--format", "torchscript", "--out", str(tmp_path / "ts")]) == 0
    assert sorted(p.name for p in (tmp_path / "ts").iterdir()) == ["classes.json", "model.pt", "predict.py"]
    assert main(["export", run_id, "--format", "zip", "--out", str(tmp_path / "run.zip")]) == 0
    assert zipfile.is_zipfile(tmp_path / "run.zip")
    capsys.readouterr()
    other = tmp_path / "other-store"
    assert main(["--runs-dir", str(other), "import", str(tmp_path / "run.zip")]) == 0
    assert f"imported run {run_id}" in capsys.readouterr().out
    assert RunStore(other).list_ids() == [run_id]
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr(f"{run_id}/evil.py", "import os")
    assert main(["--runs-dir", str(other), "import", str(bad)]) == 2
    assert "'evil.py' is not a file a medcls run folder holds" in capsys.readouterr().err


def test_a_lesson_trains_its_runs_itself_beside_an_app_sharing_the_store(class_dataset, tmp_path, capsys):
    """The app's job manager (two free slots here) must not start the lesson's queued runs a second time."""
    import os

    from medcls.jobs.manager import JobManager

    lessons = tmp_path / "lessons.toml"
    lessons.write_text(LESSON)
    store = RunStore()
    started = []

    class Recording:
        name, schedules_itself = "recording", False

        def start(self, store, run_id):
            started.append(run_id)
            raise OSError("not in this test")

    manager = JobManager(store, max_concurrent=2, backend=Recording(), poll_s=0.05)
    try:
        assert main(["lesson", "run", "tiny", "--data", str(class_dataset), "--lessons", str(lessons)]) == 0
    finally:
        manager.shutdown()
    assert "All 2 runs finished." in capsys.readouterr().out
    assert started == []
    assert {store.status(r).pid for r in store.list_ids()} == {os.getpid()}


def test_ctrl_c_in_a_lesson_cancels_its_waiting_runs_unless_the_app_deleted_one(class_dataset, tmp_path, capsys,
                                                                                 monkeypatch):
    import contextlib
    import threading

    import medcls.cli.teach as teach
    import medcls.jobs.execute as execute

    lessons = tmp_path / "lessons.toml"
    lessons.write_text(LESSON + '[[lesson.run]]\nlabel = "faster"\nsettings = { lr = 0.01 }\n')
    store = RunStore()
    interrupted = threading.Event()
    trained = []

    @contextlib.contextmanager
    def ctrl_c_stops():
        yield interrupted

    def first_then_ctrl_c(store_, run_id, **kwargs):
        trained.append(run_id)
        outcome = real(store_, run_id, **kwargs)
        waiting = [r for r in store.list_ids() if store.status(r).state == "queued"]
        store.delete(waiting[0])   # as the app's Delete, while the lesson trains
        interrupted.set()          # then Ctrl-C
        return outcome

    real = execute.execute_run
    monkeypatch.setattr(teach, "ctrl_c_stops", ctrl_c_stops)
    monkeypatch.setattr(execute, "execute_run", first_then_ctrl_c)
    assert main(["lesson", "run", "tiny", "--data", str(class_dataset), "--lessons", str(lessons)]) == 1  # unfinished
    out = capsys.readouterr().out
    assert len(trained) == 1 and "1 of 3 runs finished; 1 stopped before the end, 1 deleted." in out, out
    left = [r for r in store.list_ids() if r not in trained]
    assert len(left) == 1 and store.status(left[0]).state == "cancelled"
    assert store.status(left[0]).error == "Stopped from the command line."
