"""The run store: ids, status and liveness, history, artefacts, listing."""

from __future__ import annotations

import os
import subprocess
import time
from datetime import datetime

import numpy as np
import pytest
import torch

from medcls.analysis.metrics import classification_metrics
from medcls.config import TrainConfig
from medcls.runs.records import DataRecord, EpochRecord, ModelRecord, Progress, RunMeta
from medcls.runs.results import CrossValidation, FoldScore, RunMetrics
from medcls.runs.store import (
    HEARTBEAT_STALE_S,
    InvalidRunIdError,
    RunNotFoundError,
    RunStore,
)


@pytest.fixture
def run(store):
    return store.create(TrainConfig(epochs=3), run_id="r1")


def test_store_defaults_to_the_runs_dir_setting(isolated_env):
    assert RunStore().root == isolated_env / "runs"


def test_created_run_round_trips_its_config(store):
    cfg = TrainConfig(epochs=3, lr=1e-3).with_options(class_aliases=("malignant=cancer",), model="seed_cnn")
    run_id = store.create(cfg, meta=RunMeta(name="my run"))
    assert store.config(run_id) == cfg
    assert store.raw_status(run_id).state == "queued"
    assert store.meta(run_id).name == "my run" and store.summary(run_id).name == "my run"
    assert "seed_cnn" in run_id
    with pytest.raises(FileExistsError):
        store.create(cfg, run_id=run_id)


def test_runs_queued_within_one_second_never_share_an_id(store, monkeypatch):
    # A sweep queues its runs within a second; the id's 4 random hex digits can meet (CI saw it once).
    import medcls.runs.naming as naming
    import medcls.runs.store as store_module

    draws = iter(["64a1", "64a1", "64a1", "9f00"])
    monkeypatch.setattr(naming.secrets, "token_hex", lambda n: next(draws))

    class OneSecond(datetime):  # every run is created in the same second
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 2, 14, 8, 22, tzinfo=tz)

    monkeypatch.setattr(store_module, "datetime", OneSecond)
    cfg = TrainConfig()
    first, second = store.create(cfg), store.create(cfg)
    assert first == "20261202-140822-small_cnn-64a1" and second == "20261202-140822-small_cnn-9f00"
    assert store.config(first) == store.config(second) == cfg and len(store.list_ids()) == 2
    with pytest.raises(FileExistsError):  # an id given by the caller is never replaced by another
        store.create(cfg, run_id=first)


@pytest.mark.parametrize("bad", ["../x", "a/b", "..", "/etc", "/tmp/abs", "", ".hidden", "a\\b", "x" * 200,
                                 "a..b", "café"])
def test_invalid_run_ids_are_rejected(store, bad):
    with pytest.raises(InvalidRunIdError):
        store.path(bad, must_exist=False)
    if bad:  # an empty id asks create() for a generated one
        with pytest.raises(InvalidRunIdError):
            store.create(TrainConfig(), run_id=bad)
    assert not any(store.root.parent.glob("x")) and list(store.root.iterdir()) == []


def test_file_names_inside_a_run_must_be_plain(store, run):
    for bad in ("../config.json", "a/b", "", ".", "..", ".hidden"):
        with pytest.raises(InvalidRunIdError):
            store.file(run, bad)
    assert store.file(run, "metrics.json").parent == store.path(run)


def test_missing_runs_raise_run_not_found(store):
    with pytest.raises(RunNotFoundError):
        store.config("never-made")
    with pytest.raises(RunNotFoundError):
        store.path("never-made")


def test_set_status_records_times_pid_and_refuses_unknown_states(store, run):
    status = store.set_status(run, "running")
    assert status.pid == os.getpid() and status.started
    store.beat(run)
    assert store.status(run).state == "running"  # this process is alive and beating
    done = store.set_status(run, "finished", best_epoch=2)
    assert done.ended and done.best_epoch == 2 and done.started == status.started
    with pytest.raises(ValueError, match="Unknown run state"):
        store.set_status(run, "exploded")


def test_running_status_with_a_dead_pid_reads_as_interrupted(store, run, synth):
    store.set_status(run, "running", pid=synth.dead_pid())
    store.beat(run)  # even with a fresh heartbeat: the process is gone
    status = store.status(run)
    assert status.state == "interrupted" and "stopped unexpectedly" in status.error
    assert store.raw_status(run).state == "running"  # reading does not rewrite the file


def test_running_status_of_a_zombie_process_reads_as_interrupted(store, run):
    proc = subprocess.Popen(["true"])
    try:
        deadline = time.time() + 5
        while time.time() < deadline:
            with open(f"/proc/{proc.pid}/stat", "rb") as f:
                if f.read().split(b")")[-1].split()[0] == b"Z":
                    break
            time.sleep(0.02)
        store.set_status(run, "running", pid=proc.pid)
        store.beat(run)
        assert store.status(run).state == "interrupted"
    finally:
        proc.wait()


def test_running_status_without_pid_depends_on_the_heartbeat(store, run):
    store.set_status(run, "running", pid=None)
    store.write_progress(run, Progress(phase="train", epoch=1))  # past its preparation (longer patience there)
    store.beat(run)
    assert store.status(run).state == "running"
    old = time.time() - HEARTBEAT_STALE_S - 5
    os.utime(store.file(run, "heartbeat"), (old, old))
    assert store.status(run).state == "interrupted"


def test_stop_requests(store, run):
    assert not store.stop_requested(run)
    store.request_stop(run)
    assert store.stop_requested(run)


def test_history_appends_and_ignores_a_torn_last_line(store, run):
    store.append_history(run, EpochRecord.from_dict({"epoch": 1, "score": 0.5, "best": True}))
    store.append_history(run, EpochRecord.from_dict({"epoch": 2, "score": 0.4, "best": False}))
    with open(store.file(run, "history.jsonl"), "a") as handle:
        handle.write('{"epoch": 3, "sco')
    assert [h.epoch for h in store.history(run)] == [1, 2]
    info = store.summary(run)
    assert info.epochs_done == 2 and info.best_score == 0.5 and info.epochs == 3


def test_progress_and_json_artefacts(store, run):
    assert store.progress(run) == Progress()
    store.write_progress(run, Progress(phase="train", fraction=0.25))
    assert store.progress(run).fraction == 0.25
    assert store.metrics(run) is None and not store.summary(run).tested
    test = classification_metrics(np.array([0, 1, 1]), np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]]), ["a", "b"])
    store.write_metrics(run, RunMetrics({"test": test}, best_epoch=1, best_val_score=0.5, precision="fp32",
                                        focus_class="b"))
    assert store.metrics(run).test == test
    summary = store.summary(run)
    assert summary.test_macro_f1 == 1.0 and summary.tested and summary.focus_recall == 1.0


def test_weights_round_trip_with_weights_only_and_survive_a_failed_save(store, run):
    with pytest.raises(RunNotFoundError, match="no saved weights"):
        store.load_weights(run)
    state = {"w": torch.arange(4.0)}
    store.save_weights(run, state)
    assert store.has_weights(run)
    assert torch.equal(store.load_weights(run)["w"], state["w"])
    with pytest.raises(Exception):
        store.save_weights(run, {"w": lambda: None})  # cannot be pickled
    assert torch.equal(store.load_weights(run)["w"], state["w"])  # the old checkpoint is intact
    assert not [p for p in store.path(run).iterdir() if p.name.endswith(".tmp")]


def test_a_cross_validation_run_counts_its_planned_folds_not_the_folds_saved_so_far(store, run):
    def epoch(n: int, fold: int) -> EpochRecord:
        return EpochRecord(epoch=n, train_loss=1.0, train_accuracy=0.5, val_loss=1.0, val_accuracy=0.5,
                           val_macro_f1=0.5, val_recall={}, val_balanced_accuracy=0.5, lr=1e-3, seconds=1.0,
                           images_per_s=10.0, score=0.5, fold=fold)

    assert store.summary(run).folds == 0  # one model
    for fold in (1, 2, 3):
        store.append_history(run, epoch(1, fold))
    # Training fold 3 of 5: two fold models are saved, the progress record holds the plan.
    store.write_model_record(run, ModelRecord(classes=("a", "b"), image_size=32, in_channels=1, color="gray", folds=2))
    store.write_progress(run, Progress(phase="train", fold=3, folds=5))
    assert store.summary(run).folds == 5
    assert store.summary(run).epochs_words() == "1 of 3 in fold 3 of 5"
    # Stopped in fold 3: its ensemble has three models, cv.json keeps the plan.
    store.write_model_record(run, ModelRecord(classes=("a", "b"), image_size=32, in_channels=1, color="gray", folds=3))
    store.write_progress(run, Progress())
    score = FoldScore(fold=1, images=4, macro_f1=0.5, accuracy=0.5, balanced_accuracy=0.5, focus_recall=None,
                      best_epoch=1, epochs=1)
    store.write_cross_validation(run, CrossValidation(folds=5, grouped=False, scores=(score,) * 3, completed=2))
    assert store.planned_folds(run, 3, store.model_record(run), store.config(run)) == 5
    assert store.summary(run).folds == 5


def test_the_focus_class_is_known_before_a_model_is_saved(store, run):
    # A cross-validation run saves its first model record when its first fold ends; its live recall chart and
    # the run list name the focus class from the start, from the data record.
    assert store.focus_class(run) == "" and store.summary(run).focus_class == ""
    store.write_data_record(run, DataRecord(root="/data/busi", layout="folders", synthetic=False, fingerprint="f",
                                            classes=("benign", "malignant"), counts={}, color="gray",
                                            focus_class="malignant"))
    assert store.focus_class(run) == "malignant" and store.summary(run).focus_class == "malignant"
    record = ModelRecord(classes=("benign", "malignant"), image_size=32, in_channels=1, color="gray",
                         focus_class="benign")  # a model record, once written, is what the run predicts with
    store.write_model_record(run, record)
    assert store.focus_class(run, store.model_record(run)) == "benign"
    assert DataRecord.from_dict({"root": "/old", "classes": ["a", "b"]}).focus_class == ""  # written before


def test_predictions_and_split_files_round_trip(store, run):
    classes = ["benign", "malignant"]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    store.write_predictions(run, ["val", "test", "test"], ["a.png", "b.png", "c, d.png"], np.array([0, 1, 1]),
                            probs, classes)
    test = store.predictions(run, "test")
    assert test.paths == ["b.png", "c, d.png"] and test.y_true.tolist() == [1, 1] and test.classes == classes
    assert np.allclose(test.probs, probs[1:], atol=1e-6)
    store.write_split(run, [("a.png", "benign", "train")])
    assert store.file(run, "split.csv").read_text().splitlines() == ["path,label,split", "a.png,benign,train"]


def test_listing_newest_first_and_deleting(store):
    first = store.create(TrainConfig(), run_id="first")
    status = store.raw_status(first).to_dict()
    status["created"] = "2000-01-01T00:00:00+00:00"
    from medcls.atomic import atomic_write_json

    atomic_write_json(store.file(first, "status.json"), status)
    second = store.create(TrainConfig(), run_id="second")
    (store.root / "not-a-run").mkdir()
    assert store.list_ids() == [second, first]
    assert [i.run_id for i in store.list()] == [second, first]
    assert store.list()[0].dataset == "built-in synthetic phantoms" and store.list()[0].model == "small_cnn"
    assert store.list()[1].name == "phantoms · small_cnn · oversample · auto size"
    assert store.list()[0].name == "phantoms · small_cnn · oversample · auto size (2)"  # the same settings again
    store.delete(first)
    assert store.list_ids() == [second]
    with pytest.raises(RunNotFoundError):
        store.delete(first)


def test_runs_made_within_one_second_keep_their_creation_order(store):
    ids = [store.create(TrainConfig(seed=i)) for i in range(6)]  # random suffixes, same second
    assert store.list_ids() == ids[::-1]


@pytest.mark.parametrize("content", ['"x"', "123", "[1, 2]", '{"created": null}', '{"state": "exploded"}',
                                     "{not json", ""])
def test_a_damaged_status_file_shows_the_run_as_damaged_and_the_store_goes_on(store, run, content):
    other = store.create(TrainConfig(), run_id="healthy")
    store.file(run, "status.json").write_text(content)
    status = store.status(run)
    assert status.damaged and status.state == "failed" and "damaged" in status.error
    summaries = {s.run_id: s for s in store.list()}
    assert set(summaries) == {run, other} and summaries[other].state == "queued"
    assert summaries[run].damaged


def test_odd_values_in_a_status_file_are_read_forgivingly(store, run):
    store.file(run, "status.json").write_text('{"state": "running", "pid": "abc", "created": 5}')
    status = store.status(run)
    assert status.pid is None and status.created == ""
    assert status.state == "interrupted"  # no heartbeat and no start time: nobody is training it


def test_a_run_id_ending_in_a_newline_is_refused(store):
    with pytest.raises(InvalidRunIdError):
        store.path("good-id\n", must_exist=False)


def test_a_run_named_after_its_settings_takes_the_name_of_the_image_size_chosen_for_it(store):
    queued, chosen = TrainConfig(), TrainConfig().with_options(image_size=192)
    first = store.create(queued)
    second = store.create(queued)  # "... · auto size (2)"
    typed = store.create(queued, meta=RunMeta(name="my size test"))
    taken = store.create(chosen)  # "... · 192 px" is taken already
    assert store.name_chosen_size(first, queued, chosen) == "phantoms · small_cnn · oversample · 192 px (2)"
    assert store.name_chosen_size(second, queued, chosen) == "phantoms · small_cnn · oversample · 192 px (3)"
    assert store.name_chosen_size(typed, queued, chosen) == "my size test"  # a typed name stays
    assert store.name_chosen_size(taken, chosen, chosen) == "phantoms · small_cnn · oversample · 192 px"
    assert [store.meta(r).name for r in (first, second, typed)] == [
        "phantoms · small_cnn · oversample · 192 px (2)", "phantoms · small_cnn · oversample · 192 px (3)",
        "my size test"]


def _create_and_name_at_once(root, barrier, queued, chosen, results) -> None:  # in a child process
    from medcls.runs.store import RunStore

    store = RunStore(root)
    barrier.wait()
    run_id = store.create(queued)
    barrier.wait()
    results.put((store.meta(run_id).name, store.name_chosen_size(run_id, queued, chosen)))


def test_runs_created_and_named_by_several_processes_at_once_get_different_names(store):
    # Two command lines started together both named their run '… · 192 px (4)' (seen 2026-12-06): the free number
    # was chosen by each before either had written its name.
    import multiprocessing

    context = multiprocessing.get_context("fork")
    queued, chosen = TrainConfig(), TrainConfig().with_options(image_size=192)
    processes = 6
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [context.Process(target=_create_and_name_at_once, args=(store.root, barrier, queued, chosen, results))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    names = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    created, started = zip(*names)
    assert len(set(created)) == processes and len(set(started)) == processes, names
    assert set(started) == {"phantoms · small_cnn · oversample · 192 px"} | {
        f"phantoms · small_cnn · oversample · 192 px ({k})" for k in range(2, processes + 1)}


def test_a_run_records_what_it_chose_for_its_data_and_pages_read_it_as_trained(store):
    asked = TrainConfig().with_options(epochs=2)  # Image size 0, the ensemble left to the data
    run_id = store.create(asked)
    assert store.trained_config(run_id) == asked  # not started: as asked
    assert not store.summary(run_id).bagged
    store.write_plan(run_id, asked.with_options(image_size=192, bagged_models=3))
    trained = store.trained_config(run_id)
    assert (trained.image_size, trained.folds, trained.bagged_models) == (192, 0, 3)
    assert store.config(run_id) == asked  # config.json keeps what was asked
    summary = store.summary(run_id)
    assert summary.bagged and summary.folds == 0  # no model saved yet: nothing planned to count from a fold
    store.write_progress(run_id, Progress(phase="train", epoch=1, epochs=2, fold=1, folds=3))
    store.append_history(run_id, EpochRecord(epoch=1, train_loss=1.0, train_accuracy=0.5, val_loss=None,
                                             val_accuracy=None, val_macro_f1=None, val_recall={},
                                             val_balanced_accuracy=None, lr=1e-3, seconds=1.0, images_per_s=10.0,
                                             score=None, fold=1))
    assert store.summary(run_id).folds == 3 and store.summary(run_id).bagged  # bagged model 1 of 3
    store.file(run_id, "plan.json").write_text("[1, 2]", encoding="utf-8")  # not a plan: read as asked
    assert store.trained_config(run_id) == asked
