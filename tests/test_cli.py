"""The command line, called in-process through medcls.cli.main (and once as python -m medcls)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from interruptions import KillInMember
from PIL import Image

from medcls.cli import main
from medcls.config import TrainConfig
from medcls.runs.store import RunStore

TINY = ["--image-size", "32", "--epochs", "1", "--batch-size", "8", "--precision", "fp32"]


@pytest.fixture
def trained(finished_run):
    """A finished run in the store the CLI uses (a copy of one trained once per session)."""
    store, run_id = finished_run
    assert store.root == RunStore().root
    return run_id


def test_train_writes_a_finished_run_and_prints_test_metrics(class_dataset, capsys):
    code = main(["train", "--data", str(class_dataset), *TINY, "--run-id", "cli-run"])
    out = capsys.readouterr()
    assert code == 0, out.err
    run_id = "cli-run"
    store = RunStore()
    assert store.status(run_id).state == "finished"
    cfg = store.config(run_id)
    assert (cfg.data.source, cfg.image_size, cfg.epochs, cfg.batch_size) == (str(class_dataset), 32, 1, 8)
    assert "test: accuracy" in out.out and "confusion matrix (rows: true, columns: predicted)" in out.out
    n = store.metrics(run_id).test.n
    assert f"On its {n} test images: accuracy " in out.out and "In brackets: the 95% interval" in out.out
    assert f"run {run_id} ({store.meta(run_id).name}) finished" in out.out
    assert "| 32 px | 1 epoch | imbalance oversample" in out.out  # one epoch, not "1 epochs"
    assert "epoch   1/1" in out.err  # progress goes to stderr


def test_train_prints_the_data_reports_warnings_and_a_tiny_class_scores_blank(tmp_path, synth, capsys):
    # One class of a single image: the Data explorer warns that it stays in train; the command line said nothing.
    data = synth.class_folders(tmp_path / "rare", {"benign": 12, "malignant": 12, "rare": 1})
    assert main(["train", "--data", str(data), *TINY, "--run-id", "rare"]) == 0
    out = capsys.readouterr().out
    assert "warning: Class 'rare' is too small to split: all its images stay in train." in out
    assert "data: No split given: made a stratified 70%/15%/15% train/val/test split (seed 0)." in out
    # Its row in the test table: no image of it, none called it: blanks, not a precision and F1 of 0.
    assert re.search(r"^rare\s+-\s+-\s+-\s+-\s+0$", out, re.M), out


def test_a_run_with_image_size_0_is_named_after_the_size_it_trains_at(class_dataset, capsys):
    code = main(["train", "--data", str(class_dataset), *TINY, "--image-size", "0", "--run-id", "auto"])
    out = capsys.readouterr()
    assert code == 0, out.err
    name = "classes · small_cnn · oversample · 128 px"  # chosen from the data before the run is created
    assert out.out.splitlines()[0].startswith(f"run auto ({name}) in ")
    assert f"run auto ({name}) finished" in out.out


def test_a_run_whose_data_cannot_be_listed_is_named_as_queued_and_fails_saying_why(tmp_path, capsys):
    code = main(["train", "--data", str(tmp_path / "missing"), *TINY, "--image-size", "0", "--run-id", "gone"])
    out = capsys.readouterr()
    assert code == 1
    assert "· auto size)" in out.out.splitlines()[0]
    assert "Dataset not found" in out.err


def test_runs_lists_the_run(trained, capsys):
    run_id = trained
    assert main(["runs"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.rstrip().endswith(run_id))
    assert "finished" in line and "small_cnn" in line and "2/2" in line and "classes · small_cnn" in line


def test_runs_shortens_a_long_name_in_its_middle_so_that_its_end_tells_runs_apart(trained, capsys):
    from medcls.cli.store_commands import MAX_NAME_WIDTH
    from medcls.runs.records import RunMeta

    store = RunStore()
    long = "busi · small_cnn · oversample · 192 px · 3 bagged · augment · lr 0.004"
    ids = [store.create(TrainConfig(), meta=RunMeta(name=f"{long} ({k})")) for k in (2, 3)]
    assert main(["runs"]) == 0
    lines = {l.rstrip().rsplit(" ", 1)[-1]: l for l in capsys.readouterr().out.splitlines()}
    shown = [lines[run_id][:MAX_NAME_WIDTH] for run_id in ids]
    assert shown[0].startswith("busi · small_cnn · oversample · 192 px") and "…" in shown[0]
    assert shown[0].endswith("lr 0.004 (2)") and shown[1].endswith("lr 0.004 (3)")


def test_runs_says_a_fold_ensemble_is_one(class_dataset, capsys):
    assert main(["train", "--data", str(class_dataset), *TINY, "--folds", "2", "--run-id", "cv-run"]) == 0
    capsys.readouterr()
    assert main(["runs"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.rstrip().endswith("cv-run"))
    assert "finished, 2 folds" in line and "1/1" in line  # the epochs are each fold model's


def test_a_reader_that_goes_away_ends_the_command_quietly(trained):
    # 'python -m medcls runs | head -1': the pipe is closed before the table is written.
    proc = subprocess.Popen([sys.executable, "-m", "medcls", "runs"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ})
    proc.stdout.close()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and b"error" not in err and b"Traceback" not in err, err


def test_runs_without_runs_gives_a_hint(capsys):
    assert main(["runs"]) == 0
    assert "no runs yet" in capsys.readouterr().out


def test_predict_prints_probabilities_per_image(trained, class_dataset, capsys):
    run_id = trained
    image = class_dataset / "benign" / "benign (0).png"
    assert main(["predict", run_id, str(image)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{image}: ")
    for name in ("benign", "malignant", "normal"):  # as the app writes them: percentages, never a certain 100%
        assert re.search(rf"\b{name} (\d+(\.\d)?%|>99\.9%|<0\.1%)", out), out
    assert main(["predict", run_id, str(image), "--json"]) == 0
    record = json.loads(capsys.readouterr().out.strip())
    assert record["image"] == str(image) and sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert record["label"] == max(record["probabilities"], key=record["probabilities"].get)


def test_predict_reports_unreadable_images_and_keeps_going(trained, class_dataset, tmp_path, capsys):
    run_id = trained
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    good = class_dataset / "normal" / "normal (1).png"
    assert main(["predict", run_id, str(bad), str(good)]) == 1
    captured = capsys.readouterr()
    assert f"{bad}: error:" in captured.err and str(good) in captured.out


def test_predict_says_when_an_image_shows_finer_detail_than_the_training_images(trained, tmp_path, capsys):
    store = RunStore()
    record = store.data_record(trained)  # as if its images had been 16 px, enlarged to its 32 px input
    store.write_data_record(trained, dataclasses.replace(record, typical_side=16))
    large = tmp_path / "large.png"
    Image.fromarray(np.full((256, 256), 120, np.uint8)).save(large)
    assert main(["predict", trained, str(large), "--json"]) == 0
    captured = capsys.readouterr()
    assert f"{large}: note: This image is 256 px" in captured.err and "2.0 times finer detail" in captured.err
    assert json.loads(captured.out.strip())["image"] == str(large)  # --json stays one JSON line an image


def test_predict_with_an_unknown_run_exits_2(capsys, tmp_path):
    image = tmp_path / "x.png"
    image.write_bytes(b"")
    assert main(["predict", "no-such-run", str(image)]) == 2
    assert "error:" in capsys.readouterr().err


def test_evaluate_prints_and_writes_metrics(trained, tmp_path, capsys):
    run_id = trained
    out_file = tmp_path / "m.json"
    assert main(["evaluate", run_id, "--json", str(out_file)]) == 0
    metrics = json.loads(out_file.read_text())
    stored = RunStore().metrics(run_id).test
    assert metrics["confusion_matrix"] == stored.confusion_matrix
    out = capsys.readouterr().out
    assert "test: accuracy" in out and "did not finish" not in out
    # Another split is named as what it is, and images the run learned from are said to be such.
    assert main(["evaluate", run_id, "--split", "train"]) == 0
    out = capsys.readouterr().out
    assert "train: accuracy" in out and "test: accuracy" not in out
    assert "note: this run learned from its training images: a right answer on one shows what the model remembers" \
        in out
    assert main(["evaluate", run_id, "--split", "val"]) == 0  # one model keeping its last epoch: val only draws curves
    out = capsys.readouterr().out
    assert "val: accuracy" in out and "learned from" not in out
    assert main(["evaluate", run_id, "--split", "all"]) == 0
    assert "all splits: accuracy" in capsys.readouterr().out


def test_evaluate_on_the_runs_own_images_from_another_place_says_it_learned_from_them(trained, tmp_path, capsys,
                                                                                    synth):
    copy = tmp_path / "copy"
    shutil.copytree(RunStore().data_record(trained).root, copy)  # its dataset, copied (as an upload would be)
    assert main(["evaluate", trained, "--data", str(copy), "--split", "train"]) == 0
    assert "note: this run learned from its training images" in capsys.readouterr().out
    other = synth.class_folders(tmp_path / "other", {"benign": 6, "malignant": 6, "normal": 6})
    assert main(["evaluate", trained, "--data", str(other), "--split", "train"]) == 0
    assert "learned from" not in capsys.readouterr().out  # other images: new to the model


def test_demo_data_writes_a_loadable_dataset(tmp_path, capsys):
    target = tmp_path / "demo"
    assert main(["demo-data", str(target), "--images", "30", "--size", "32"]) == 0
    images = [p for p in target.rglob("*.png")]
    assert len(images) >= 30  # each class gets at least 2 images per split
    assert f"wrote {len(images)} synthetic phantom images" in capsys.readouterr().out
    from medcls.config import DataConfig
    from medcls.data import load_dataset

    spec = load_dataset(DataConfig(source=str(target)))
    assert len(spec.items) == len(images) and set(spec.classes) == {"normal", "benign", "malignant"}


def test_a_bad_config_value_exits_2_with_a_clear_message(capsys):
    assert main(["train", "--lr", "0", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "Learning rate must be greater than 0" in err
    assert RunStore().list_ids() == []  # nothing was created
    assert main(["train", "--class-aliases", "malignant"]) == 2
    assert "alias=class" in capsys.readouterr().err


def test_unknown_choices_and_inapplicable_flags_exit_2_with_the_reason(capsys):
    assert main(["train", "--optimizer", "rmsprop"]) == 2
    assert "Optimizer must be one of adam, adamw, sgd (got 'rmsprop')" in capsys.readouterr().err
    assert main(["train", "--momentum", "0.5"]) == 2
    assert "Momentum has no effect here: it applies only when optimizer is SGD" in capsys.readouterr().err
    assert main(["train", "--dropout", "nan", "--print-config"]) == 2
    assert "finite" in capsys.readouterr().err
    assert RunStore().list_ids() == []


def test_train_help_shows_labels_defaults_and_when_options_apply(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--lr LR Learning rate:" in text and "default: 0.002" in text
    assert "Learning rate: Learning rate" not in text            # a help that names itself gets no label in front
    assert "Starting weights: 'imagenet'" in text and "Starting weights: Starting" not in text
    assert "--seed SEED Random seed: the same seed" in text       # its own name for the option, no "Seed:" first
    assert "Classifier head: Classifier:" not in text and "--head {flatten,gap} Classifier: 'flatten'" in text
    assert "Ensemble for small datasets: With 0 folds" in text  # "With 0 folds" names nothing: the label stays
    assert "≤ 4,294,967,295" in text and "e+09" not in text      # the seed's bound in full
    assert "--model {resnet18,seed_cnn,seed_cnn_bn,small_cnn} Model: The network." in text
    assert "only when optimizer is SGD" in text                  # momentum
    assert "4 for seed_cnn" in text and "3 for seed_cnn_bn" in text  # each preset's own conv blocks


def test_a_run_name_can_be_given_and_shows_in_the_list(class_dataset, capsys):
    argv = ["train", "--data", str(class_dataset), *TINY, "--run-id", "named", "--name", "Lesson 1: baseline"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["runs"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.rstrip().endswith("named"))
    assert line.startswith("Lesson 1: baseline")


def test_the_cli_is_the_local_operator_it_renames_and_deletes_anyones_runs(isolated_env, capsys, monkeypatch):
    from medcls.runs.records import RunMeta

    store = RunStore()
    store.create(TrainConfig(), run_id="alices", meta=RunMeta(owner="browser:alice", owner_name="Alice"),
                 state="finished")
    store.create(TrainConfig(), run_id="training", state="running")
    assert main(["runs"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.rstrip().endswith("alices"))
    assert "Alice" in line  # who started it
    assert main(["rename", "alices", "Alice's  baseline"]) == 0
    assert store.meta("alices").name == "Alice's baseline" and store.meta("alices").owner == "browser:alice"
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["delete", "alices"]) == 1 and "alices" in store.list_ids()
    assert main(["delete", "alices", "--yes"]) == 0 and "alices" not in store.list_ids()
    capsys.readouterr()
    assert main(["delete", "training", "--yes"]) == 2  # a training run is refused, with what to do
    assert "stop it first" in capsys.readouterr().err and "training" in store.list_ids()


def test_stop_ends_anyones_training_run_and_cancels_a_queued_one(isolated_env, class_dataset, capsys):
    # The app's visitor who started a run may have lost their browser; the local operator can still stop it.
    import threading

    from medcls.jobs.execute import execute_run
    from medcls.runs.records import RunMeta

    store = RunStore()
    cfg = TrainConfig().with_options(source=str(class_dataset), image_size=32, batch_size=8, precision="fp32",
                                     epochs=200)
    run_id = store.create(cfg, meta=RunMeta(owner="browser:alice", owner_name="Alice"))
    ended = {}
    # As a worker does: it honours the stop file, whichever process wrote it.
    worker = threading.Thread(target=lambda: ended.update(outcome=execute_run(
        store, run_id, should_cancel=lambda: store.stop_requested(run_id))))
    worker.start()
    while len(store.history(run_id)) < 1:
        time.sleep(0.05)
    assert main(["stop", run_id]) == 0
    worker.join(timeout=60)
    out = capsys.readouterr().out
    assert ended["outcome"].state == "cancelled" and store.status(run_id).state == "cancelled"
    assert "asked to stop after its current batch" in out
    assert f"run {run_id} cancelled: Stopped on request after" in out
    assert main(["stop", run_id]) == 1  # ended: nothing to stop
    assert "is cancelled: it is not queued or training" in capsys.readouterr().out
    queued = store.create(cfg, meta=RunMeta(owner="browser:bob"))
    assert main(["stop", queued, "--wait", "0"]) == 0 and store.status(queued).state == "cancelled"
    assert "cancelled before it started" in capsys.readouterr().out


def test_print_config_resolves_flags_and_config_files(tmp_path, capsys):
    base = tmp_path / "base.json"
    base.write_text(TrainConfig(epochs=7, lr=1e-3).to_json())
    argv = ["train", "--config", str(base), "--model", "seed_cnn", "--no-hflip", "--class-aliases",
            "malignant=cancer", "Benign=benign", "--fc-widths", "64", "32", "--print-config"]
    assert main(argv) == 0
    cfg = TrainConfig.from_json(capsys.readouterr().out)
    assert cfg.epochs == 7 and cfg.lr == 1e-3 and cfg.model == "seed_cnn" and cfg.augment.hflip is False
    assert cfg.data.class_aliases == ("malignant=cancer", "Benign=benign") and cfg.model_options.fc_widths == (64, 32)


def test_a_failed_run_exits_1(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nowhere"), *TINY]) == 1
    assert "failed" in capsys.readouterr().err


def test_runs_dir_flag_moves_the_store(trained, tmp_path, capsys):
    other = tmp_path / "other-store"
    assert main(["--runs-dir", str(other), "runs"]) == 0
    assert "no runs yet" in capsys.readouterr().out


def test_python_dash_m_medcls_works():
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-m", "medcls", "--help"], capture_output=True, text=True, env=env,
                          timeout=60)
    assert proc.returncode == 0
    for command in ("train", "evaluate", "predict", "runs", "demo-data"):
        assert command in proc.stdout


def test_what_a_run_adjusts_is_printed_once_before_its_first_epoch(class_dataset, capsys):
    options = ["--image-size", "32", "--epochs", "1", "--batch-size", "64", "--precision", "fp32"]
    assert main(["train", "--data", str(class_dataset), *options]) == 0
    out = capsys.readouterr()
    assert out.err.index("note: The batch size was lowered from 64") < out.err.index("epoch   1/1")
    assert "batch size was lowered" not in out.out  # not repeated with the results


def test_cross_validation_prints_each_fold_and_the_mean_and_spread(class_dataset, capsys):
    assert main(["train", "--data", str(class_dataset), *TINY, "--folds", "2", "--run-id", "cv-run"]) == 0
    out = capsys.readouterr()
    assert "fold 1 of 2" in out.err and "fold 2 of 2" in out.err
    assert "cross-validation: 2 of 2 folds" in out.out and "fold 1: macro-F1" in out.out
    assert "macro-F1:" in out.out and "± " in out.out and "fold models' ensemble" in out.out
    assert "malignant recall" in out.out and "focus recall" not in out.out  # the class it means, by name


@pytest.mark.slow
def test_training_into_a_log_file_prints_one_line_per_epoch(class_dataset, isolated_env, tmp_path):
    """Standard output and error redirected (a log file, CI): no carriage-return progress bar, one line an epoch."""
    log = tmp_path / "train.log"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    with open(log, "w") as handle:
        proc = subprocess.run([sys.executable, "-m", "medcls", "--runs-dir", str(tmp_path / "runs"), "train",
                               "--data", str(class_dataset), "--image-size", "32", "--epochs", "3", "--batch-size", "8",
                               "--precision", "fp32"],
                              stdout=handle, stderr=subprocess.STDOUT, env=env, timeout=300)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "\r" not in text and "[#" not in text
    epoch_lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    assert [line.split()[1] for line in epoch_lines] == ["1/3", "2/3", "3/3"], text


def test_evaluate_and_predict_say_a_stopped_ensemble_answers_with_its_models_trained_so_far(isolated_env,
                                                                                            class_dataset, capsys):
    from medcls.jobs.execute import execute_run

    store = RunStore()
    cfg = TrainConfig().with_options(source=str(class_dataset), image_size=32, batch_size=8, precision="fp32",
                                     epochs=2, bagged_models=3)
    run_id = store.create(cfg)  # stopped in the first epoch of its second model (2 epochs each)
    assert execute_run(store, run_id, should_cancel=lambda: len(store.history(run_id)) >= 3).state == "cancelled"
    note = ("note: this run did not finish (cancelled at epoch 1 of 2 in bagged model 2 of 3): the 2 bagged models "
            "trained so far answer together")
    assert main(["evaluate", run_id]) == 0
    assert note in capsys.readouterr().out
    image = class_dataset / "benign" / "benign (0).png"
    assert main(["predict", run_id, str(image), "--json"]) == 0
    captured = capsys.readouterr()
    assert note in captured.err and json.loads(captured.out)["image"] == str(image)  # the JSON lines stay JSON
    # A killed worker keeps only the models it finished: not the second, whose first epoch it had recorded.
    killed = store.create(cfg)
    with pytest.raises(KeyboardInterrupt):
        execute_run(store, killed, callbacks=[KillInMember(1, epoch=2)])
    store.set_status(killed, "interrupted", error="The training process was killed by signal 9.")
    assert main(["predict", killed, str(image)]) == 0
    assert ("note: this run did not finish (interrupted at epoch 1 of 2 in bagged model 2 of 3): its one finished "
            "bagged model answers") in capsys.readouterr().err


def test_bagged_models_train_say_each_model_and_are_listed_as_bagged(class_dataset, capsys):
    assert main(["train", "--data", str(class_dataset), *TINY, "--bagged-models", "2", "--run-id", "bag-run"]) == 0
    out = capsys.readouterr()
    assert "bagged model 1 of 2" in out.err and "bagged model 2 of 2" in out.err and "fold" not in out.err
    assert "bagged: 2 models, each trained on every train + val image" in out.out
    assert main(["runs"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.rstrip().endswith("bag-run"))
    assert "finished, 2 bagged" in line and "1/1" in line


def test_bagged_models_chosen_for_the_data_are_named_as_such(class_dataset, capsys, monkeypatch):
    from medcls.training import autoplan

    monkeypatch.setattr(autoplan, "AUTO_MIN_PER_FOLD", 1)  # the tiny dataset counts as small enough
    monkeypatch.setattr(autoplan, "DEFAULT_SIZE", 16)      # its 32 px images are "large": 32 px and up
    monkeypatch.setattr(autoplan, "DETAIL_SIZE", 32)
    monkeypatch.setattr(autoplan, "DETAIL_BAGGED", 2)
    tiny = [a for a in TINY if a not in ("--image-size", "32")]  # Image size 0: chosen for the data
    assert main(["train", "--data", str(class_dataset), *tiny, "--run-id", "auto-bag"]) == 0
    out = capsys.readouterr()
    assert "bagged model 1 of 2" in out.err and "bagged model 2 of 2" in out.err
    assert "fold" not in out.err.split("bagged model 1 of 2")[1]  # (the note before says how to get fold models)
    assert "bagged: 2 models, each trained on every train + val image" in out.out
    assert "trained at 32 px as 2 bagged models" in out.err  # the note says why, before the first epoch
    assert main(["runs"]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.rstrip().endswith("auto-bag"))
    assert "finished, 2 bagged" in line


def test_an_ensemble_under_torchrun_is_refused_with_the_fix(class_dataset, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--data", str(class_dataset), *TINY, "--bagged-models", "2"]) != 0
    assert "An ensemble (--bagged-models) trains its models one after another in one process" in \
        capsys.readouterr().err


def test_resume_says_where_an_interrupted_ensemble_continues_and_keeps_its_finished_model(class_dataset, capsys):
    from medcls.jobs.execute import execute_run

    store = RunStore()
    cfg = TrainConfig().with_options(source=str(class_dataset), image_size=32, epochs=1, batch_size=8,
                                     precision="fp32", bagged_models=2)
    run_id = store.create(cfg, run_id="killed")
    with pytest.raises(KeyboardInterrupt):
        execute_run(store, run_id, callbacks=[KillInMember(1)])
    store.set_status(run_id, "interrupted")
    code = main(["resume", run_id])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"run {run_id} ({store.meta(run_id).name}): continuing from bagged model 2 of 2" in out.out
    lines = out.err.splitlines()
    assert "bagged model 1 of 2" not in lines and "bagged model 2 of 2" in lines  # only the second one trains
    assert "note: Resumed after bagged model 1 of 2: the finished model was kept as it was" in out.err
    assert store.status(run_id).state == "finished" and store.model_record(run_id).folds == 2
