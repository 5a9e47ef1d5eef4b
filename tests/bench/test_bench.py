"""The benchmark command: skips without BUSI, measures on any data, and writes a report that explains misses."""

from __future__ import annotations

import copy

import pytest

from medcls.bench import measure, run_benchmark, seed
from medcls.bench.report import TARGETS, render_markdown
from medcls.config import DataConfig
from medcls.data import load_dataset
from medcls.inference.predictor import Predictor
from medcls.models import create_model

RESULTS = {
    "machine": {"cpu": "Test CPU 9000", "cores": 2, "threads": 2, "torch": "2.x", "python": "3.11"},
    "batch_size": 32, "quick": False, "date": "2026-11-26 00:00",
    "seed_reported": {"recipe": "seed_cnn_bn, 256 px, 10 epochs, oversample", "test_accuracy": 0.848,
                      "test_macro_f1": 0.813, "malignant_recall": 0.844, "wall_min": 14.5},
    "seed_cnn_bn_256_seed": {"images_per_s": 10.0},
    "seed_cnn_bn_256_medcls": {"images_per_s": 16.0, "precision": "fp32"},
    "seed_cnn_bn_256_bound": {"images_per_s": 17.0},
    "small_cnn_128_medcls": {"images_per_s": 180.0},
    "small_cnn_128_bound": {"images_per_s": 190.0},
    "resnet18_head_medcls": {"median_epoch_s": 0.05, "extract_s": 30.0,
                             "test": {"accuracy": 0.70, "macro_f1": 0.65}},
    "resnet18_head_seed": {"epoch_s": [14.0, 13.5], "test": {"accuracy": 0.71, "macro_f1": 0.66}},
    "resnet18_weights": "imagenet",
    "latency_small_cnn_128": {"median_ms": 5.0, "calls": 25},
    "latency_resnet18_224": {"median_ms": 30.0, "calls": 25},
    "cache_memory": [{"size": 128, "images": 780, "channels": 1, "cache_mb": 12.2, "peak_mb": 49.0}],
    "time_to_quality": [{"seed": 0, "macro_f1": 0.86, "focus_class": "malignant", "focus_recall": 0.91,
                         "wall_s": 130.0}],
    "leak_free": [{"seed": 0, "macro_f1": 0.78, "focus_class": "malignant", "focus_recall": 0.80}],
    "cross_validation": {"folds": 5, "focus_class": "malignant", "macro_f1_mean": 0.80, "macro_f1_sd": 0.03,
                         "focus_recall_mean": 0.85, "focus_recall_sd": 0.05, "wall_s": 600.0},
    "demo_loop": {"cold": {"state": "finished", "first_epoch_s": 7.5, "finished_s": 41.0, "epochs": 20,
                           "planned_epochs": 30, "test_macro_f1": 0.9}},
    "default_recipe": {"model": "small_cnn", "image_size": 128},
}


def test_without_busi_the_benchmark_skips_with_a_message(tmp_path):
    said: list[str] = []
    assert run_benchmark(tmp_path / "nowhere", tmp_path / "out", echo=said.append) is None
    assert "benchmark skipped" in said[0] and "split.csv" in said[0]
    assert not (tmp_path / "out").exists()


def test_the_report_puts_the_seed_beside_medcls_with_ratios_and_verdicts():
    text = render_markdown(RESULTS)
    assert "Test CPU 9000, 2 cores" in text and "2 threads" in text
    row = next(line for line in text.splitlines() if "seed_cnn_bn 256 px (img/s" in line)
    assert "| 10.0 | 16.0 (fp32) | 1.60× |" in row and "✅ met" in row
    assert "| 13.5 | 0.050" in text and "270×" in text  # head-only: fastest seed epoch / cached epoch
    assert "0.813 / 0.844 / 14.5 min" in text and "0.860 / 0.910 / 2.2 min" in text
    assert "missed" not in text.split("## Notes")[1]
    leak = next(line for line in text.splitlines() if "the leak's inflation" in line)
    assert "macro-F1 +0.080, recall +0.110" in leak
    assert "6 − 7 mixes what the leak adds with which images happen to be tested" in text  # the note on (7)
    assert "0.800 ± 0.030 / 0.850 ± 0.050 (10.0 min in all)" in text
    demo = next(line for line in text.splitlines() if "Demo loop" in line)
    assert "7.5 s / 41.0 s (20 of 30 epochs)" in demo and "✅ met" in demo


def test_the_recipe_line_leaves_out_empty_options_also_when_read_back_from_json():
    results = copy.deepcopy(RESULTS)
    results["default_recipe"].update(oversample=[], class_names=(), fc_widths=[64])  # JSON turns tuples into lists
    recipe = render_markdown(results).split("## Default recipe")[1].split("## Notes")[0]
    assert "model=small_cnn, image_size=128, fc_widths=[64]" in recipe
    assert "oversample" not in recipe and "class_names" not in recipe


def test_a_missed_target_is_reported_with_by_how_much_and_why():
    slow = copy.deepcopy(RESULTS)
    slow["seed_cnn_bn_256_medcls"]["images_per_s"] = 13.0
    slow["small_cnn_128_medcls"]["images_per_s"] = 150.0
    text = render_markdown(slow)
    notes = text.split("## Notes")[1]
    assert f"(1) missed by {TARGETS['seed_speedup'] - 1.3:.2f}×" in notes
    assert "compute bound is only 1.70×" in notes
    assert "so the precision probe kept fp32" in notes and "bf16 arithmetic" not in notes
    slow["seed_cnn_bn_256_medcls"]["precision"] = "bf16"  # the note says what the probe chose on this CPU
    assert "with bf16 arithmetic already" in render_markdown(slow).split("## Notes")[1]
    assert "(2) missed by 0.11" in notes
    assert text.count("❌ missed") == 2
    assert "bound's own steps" not in notes  # older results did not time the bound's median step
    slow["small_cnn_128_bound"]["steady_share"] = 0.87
    assert "ran at a median of 0.87 of the fastest" in render_markdown(slow).split("## Notes")[1]


def test_the_seed_script_is_found_next_to_the_shared_data(tmp_path):
    data = tmp_path / "shared" / "datasets" / "busi"
    data.mkdir(parents=True)
    script = tmp_path / "shared" / "bench" / "seed_baseline.py"
    script.parent.mkdir()
    script.write_text("CLASSES = ['normal', 'benign', 'malignant']\n")
    assert seed.find_seed_script(data) == script
    assert seed.load_seed_module(script).CLASSES == ["normal", "benign", "malignant"]


def test_cache_memory_counts_uint8_bytes_per_image(class_dataset):
    spec = load_dataset(DataConfig(source=str(class_dataset)))
    row = measure.cache_memory(spec, 16)
    assert row["images"] == 36 and row["channels"] == 1
    assert row["cache_mb"] == pytest.approx(36 * 16 * 16 / 2**20)
    assert row["peak_mb"] >= row["cache_mb"]


def test_latency_is_a_median_over_the_requested_calls(class_dataset):
    files = sorted(class_dataset.rglob("*.png"))[:3]
    model = create_model("small_cnn", num_classes=3, image_size=32, in_channels=1)
    result = measure.prediction_latency(Predictor(model, ["a", "b", "c"], 32, "gray"), files, calls=21)
    assert result["calls"] == 21 and 0 < result["median_ms"] <= result["p90_ms"]


def test_the_compute_bound_trains_the_configured_model_on_in_memory_tensors(synth):
    cfg = synth.config(batch_size=4)
    bound = measure.compute_bound(cfg, channels=1, num_classes=3, precision="fp32", steps=2)
    assert bound["images_per_s"] == pytest.approx(4 / bound["step_s"]) and bound["step_s"] > 0
    assert bound["median_step_s"] >= bound["step_s"]  # the fastest of the steps is the bound


def test_the_bound_is_timed_around_every_epoch_and_each_epoch_is_judged_against_its_neighbours(class_dataset, synth):
    from medcls.training.pipeline import prepare_data

    cfg = synth.config(class_dataset, epochs=3, ema_decay=0.0)
    data = prepare_data(cfg)
    ours, bound = measure.throughput_against_bound(cfg, data, steps=2)
    assert len(bound["around_epochs"]) == 4 and len(bound["epoch_shares"]) == 3  # before epoch 1, after each
    around, epochs = bound["around_epochs"], ours["epoch_images_per_s"]
    for i, share in enumerate(bound["epoch_shares"]):
        assert share == pytest.approx(epochs[i] / ((around[i] + around[i + 1]) / 2), abs=2e-3)
    assert bound["share"] == pytest.approx(sorted(bound["epoch_shares"])[1], abs=1e-3)  # the median
    assert 0 < bound["steady_share"] <= 1  # the fastest step over the median one
    assert bound["images_per_s"] == pytest.approx(sum(sorted(around)[1:3]) / 2, abs=0.01)  # median of four
    assert ours["epochs"] == 3


def test_timing_the_bound_between_epochs_leaves_the_training_as_it_was(class_dataset, synth):
    from medcls.training.pipeline import prepare_data, train_in_memory

    cfg = synth.config(class_dataset, epochs=2, augment=True, dropout=0.5)  # both draw random numbers
    data = prepare_data(cfg)
    plain = train_in_memory(cfg, data).fit.history
    timer = measure._BoundBetweenEpochs(cfg, data.decoded.channels, len(data.classes), steps=1)
    timed = train_in_memory(cfg, data, callbacks=[timer]).fit.history
    assert len(timer.bounds) == 3
    assert [h.train_loss for h in timed] == pytest.approx([h.train_loss for h in plain], rel=1e-5)


def test_the_report_uses_the_median_share_over_epochs_when_the_bound_was_timed_around_them():
    r = copy.deepcopy(RESULTS)
    r["small_cnn_128_bound"] = {"images_per_s": 250.0, "around_epochs": [240.0, 260.0, 250.0, 230.0],
                                "epoch_shares": [0.88, 0.93, 0.95], "share": 0.93}
    row = next(line for line in render_markdown(r).splitlines() if "small_cnn 128 px: throughput" in line)
    assert "| 0.93 |" in row and "✅ met" in row  # 180 / 250 would have been 0.72
    assert "median of 4 timings around the epochs, epochs at 0.88–0.95" in row
    old = next(line for line in render_markdown(RESULTS).splitlines() if "small_cnn 128 px: throughput" in line)
    assert "| 0.95 |" in old and "timings" not in old  # older results: one bound, 180 / 190


def test_a_share_just_under_the_target_is_not_rounded_onto_it():
    r = copy.deepcopy(RESULTS)
    r["small_cnn_128_bound"] = {"images_per_s": 250.0, "around_epochs": [250.0, 250.0],
                                "epoch_shares": [0.897], "share": 0.897}
    text = render_markdown(r)
    row = next(line for line in text.splitlines() if "small_cnn 128 px: throughput" in line)
    assert "| 0.897 |" in row and "❌ missed" in row   # '0.90 ❌ missed' read as a contradiction
    assert "- (2) missed by 0.003:" in text


def test_time_to_quality_over_seeds_shows_mean_and_range_and_judges_the_mean():
    r = copy.deepcopy(RESULTS)
    r["time_to_quality"] = [{"seed": s, "macro_f1": f1, "focus_class": "malignant", "focus_recall": rec,
                             "wall_s": wall} for s, f1, rec, wall in ((0, 0.78, 0.75, 120.0), (1, 0.76, 0.91, 125.0),
                                                                     (2, 0.74, 0.66, 118.0))]
    text = render_markdown(r)
    row = next(line for line in text.splitlines() if line.startswith("| 6 |"))
    assert "seeds 0, 1, 2" in row and "0.760 (0.740–0.780)" in row and "2.0 (2.0–2.1) min" in row
    assert "❌ missed" in row  # the mean is under F1 0.85
    assert "(6) the default recipe's macro-F1 (0.760) is 0.053 below" in text


def test_the_machine_yardstick_is_reported_when_measured():
    assert "GFLOPS" not in render_markdown(RESULTS)
    text = render_markdown(RESULTS | {"gflops_start": 250.0, "gflops_end": 180.4})
    assert "250 GFLOPS at the start and 180 at the end" in text


def test_machine_gflops_measures_a_positive_speed():
    assert measure.machine_gflops(n=128, repeats=3) > 0


def test_a_miss_measured_while_the_machine_changed_speed_says_so():
    slow = copy.deepcopy(RESULTS) | {"gflops_start": 165.0, "gflops_end": 194.0}
    slow["small_cnn_128_medcls"]["images_per_s"] = 150.0
    assert "moved by 18% during this run" in render_markdown(slow)
    steady = slow | {"gflops_end": 170.0}
    assert "moved by" not in render_markdown(steady)


@pytest.mark.slow
def test_the_demo_loop_is_timed_through_the_job_manager_and_a_worker_process(monkeypatch, tmp_path):
    from medcls.bench.quality import demo_loop
    from medcls.config import TrainConfig

    monkeypatch.setenv("MEDCLS_WORKER_THREADS", "1")
    monkeypatch.setenv("MEDCLS_STANDBY_WORKER", "1")  # as the app runs
    timings = demo_loop(TrainConfig(image_size=32, epochs=2, batch_size=16, precision="fp32"), timeout_s=240)
    assert set(timings) == {"cold", "warm", "at_once"}
    for t in timings.values():
        assert t["state"] == "finished" and t["epochs"] == 2
        assert 0 < t["first_epoch_s"] < t["finished_s"] < 240
    # The cold run waited for the standby process to warm up and was trained by it; so was the next run (a new
    # standby process is started once the slot is free again).
    assert 0 < timings["cold"]["standby_warm_up_s"] < 60 and timings["warm"]["standby_warm_up_s"] is not None
    assert timings["cold"]["by_standby"] and timings["warm"]["by_standby"]
    assert "standby training process warm" in render_markdown(RESULTS | {"demo_loop": timings})


@pytest.mark.slow
def test_a_group_of_runs_is_estimated_together_then_queued_at_once_and_timed_to_the_last(monkeypatch, tmp_path,
                                                                                        class_dataset):
    from medcls.bench.estimates import _markdown, run_group_case
    from medcls.config import TrainConfig
    from medcls.jobs.manager import JobManager
    from medcls.runs.store import RunStore

    monkeypatch.setenv("MEDCLS_WORKER_THREADS", "1")
    base = TrainConfig(image_size=32, epochs=2, batch_size=8, precision="fp32")
    configs = [base.with_options(source=str(class_dataset), imbalance=fix) for fix in ("none", "oversample")]
    store = RunStore(tmp_path / "runs")
    manager = JobManager(store)
    try:
        row = run_group_case("two runs", configs, store, manager, echo=lambda *_: None)
    finally:
        manager.shutdown(kill=True)
    assert row["runs"] == 2 and len(row["run_id"]) == 2 and row["epochs_run"] == 4
    assert {store.config(r).imbalance for r in row["run_id"]} == {"none", "oversample"}
    ended = [store.raw_status(r) for r in row["run_id"]]
    assert ended[0].ended <= ended[1].started  # one after another
    assert row["estimate_total_s"] > 0 and row["total_ratio"] == pytest.approx(
        row["estimate_total_s"] / row["measured_total_s"], rel=0.01)
    assert len(row["measured_epochs_s"]) == 4 and row["estimate_range_s"][0] <= row["estimate_range_s"][1]
    assert "| two runs | 4 in 2 runs of up to 2 |" in _markdown({"date": "d", "cpu": "c", "cores": 2, "python": "3",
                                                                "cases": [row]})


def test_the_estimates_report_says_whether_each_estimate_assumed_a_warm_process():
    from medcls.bench.estimates import _markdown

    row = {"case": "default", "epochs_run": 16, "epochs_planned": 30, "estimate_epoch_s": 2.5,
           "measured_epoch_s": 2.6, "epoch_ratio": 0.96, "estimate_total_s": 48.0, "measured_total_s": 50.0,
           "total_ratio": 0.96, "threads": 2, "others_cores_before": 0.1}
    text = _markdown({"date": "2026-12-01", "cpu": "Test CPU", "cores": 2, "python": "3.11",
                      "cases": [{**row, "warm_start": True}, {**row, "case": "cold", "warm_start": False}, row]})
    lines = [line for line in text.splitlines() if line.startswith("| default") or line.startswith("| cold")]
    assert [line.rsplit("|", 2)[1].strip() for line in lines] == ["yes", "no", "–"]
    assert "| warm process |" in text


def test_the_estimates_report_names_the_kind_of_ensemble_a_case_trained():
    from medcls.bench.estimates import _markdown

    row = {"case": "ens", "epochs_run": 60, "epochs_planned": 20, "estimate_epoch_s": 3.0, "measured_epoch_s": 3.0,
           "epoch_ratio": 1.0, "estimate_total_s": 190.0, "measured_total_s": 200.0, "total_ratio": 0.95,
           "threads": 2, "others_cores_before": 0.0, "folds": 3}
    text = _markdown({"date": "d", "cpu": "c", "cores": 2, "python": "3",
                      "cases": [{**row, "bagged": True}, {**row, "bagged": False}, row]})
    assert [line.split("|")[2].strip() for line in text.splitlines() if line.startswith("| ens")] == [
        "60 in 3 bagged models of up to 20", "60 in 3 fold models of up to 20", "60 in 3 fold models of up to 20"]


def test_the_same_runs_are_also_scored_on_the_test_images_that_are_new_to_them():
    r = copy.deepcopy(RESULTS)
    r["time_to_quality"] = [{**q, "without_copies": {"copies": 45, "test_images": 118, "macro_f1": f1,
                                                     "focus_recall": rec}}
                            for q, f1, rec in zip(r["time_to_quality"] * 2, (0.80, 0.82), (0.84, 0.88))]
    row = next(line for line in render_markdown(r).splitlines() if "test images with no copy" in line)
    assert row.startswith("| 6 | … the same runs on the 73 of 118 test images with no copy among train + val")
    assert "| 0.810 (0.800–0.820) / 0.860 (0.840–0.880) |" in row
    assert "test images with no copy" not in render_markdown(RESULTS)  # not measured: no row


def test_time_to_quality_scores_the_test_images_without_a_copy_apart(tmp_path, synth):
    import numpy as np
    from PIL import Image

    from medcls.bench.quality import time_to_quality

    root = synth.split_folders(tmp_path / "splits", {"train": {c: 10 for c in synth.classes},
                                                     "val": {c: 3 for c in synth.classes},
                                                     "test": {c: 3 for c in synth.classes}})
    gray = np.asarray(Image.open(root / "train" / "benign" / "benign (4).png"), dtype=np.int16)
    Image.fromarray(np.clip(gray + 12, 0, 255).astype(np.uint8)).save(root / "test" / "benign" / "re.jpg", quality=95)
    out = time_to_quality(synth.config(root, small_data_ensemble=False))
    fresh = out["without_copies"]
    assert fresh["copies"] == 1 and fresh["test_images"] == 10 and 0 <= fresh["macro_f1"] <= 1
    point = out["operating_point"]  # the same run also judged at a threshold chosen on its validation images
    assert point["test_images"] == 10 and point["chosen_on"] == "the validation images" and 0 <= point["threshold"] <= 1


def test_the_runs_are_also_judged_at_an_operating_point_chosen_without_the_test_split():
    r = copy.deepcopy(RESULTS)
    point = {"target": 0.9, "chosen_on": "the out-of-fold predictions of train + val"}
    r["time_to_quality"] = [{**q, "operating_point": {**point, "threshold": t, "sensitivity": sens, "specificity": spec}}
                            for q, t, sens, spec in zip(r["time_to_quality"] * 2, (0.30, 0.20), (0.906, 0.938),
                                                        (0.80, 0.70))]
    r["leak_free"] = [{**r["leak_free"][0], "operating_point": {**point, "threshold": 0.1, "sensitivity": 0.7,
                                                                  "specificity": None}}]  # no negatives: no row
    text = render_markdown(r)
    rows = [line for line in text.splitlines() if "sensitivity / specificity" in line]
    assert "each out-of-fold prediction comes from one fold model" not in text  # one model: chosen on validation
    for q in r["time_to_quality"]:
        q["folds"] = 5
    assert "each out-of-fold prediction comes from one fold model" in render_markdown(r)
    assert len(rows) == 1 and rows[0].startswith("| 6 | … the same runs flagging malignant when P(malignant) ≥ ")
    assert "reaches 90% sensitivity on the out-of-fold predictions of train + val" in rows[0]
    assert "thresholds 0.250 (0.200–0.300)" in rows[0] and "| 0.922 (0.906–0.938) / 0.750 (0.700–0.800) |" in rows[0]
    assert "sensitivity / specificity" not in render_markdown(RESULTS)  # not measured: no row


def test_the_operating_point_is_chosen_on_validation_and_judged_on_test():
    from types import SimpleNamespace

    import numpy as np
    import torch

    from medcls.bench.quality import operating_point_on_test

    def split(labels):
        return SimpleNamespace(labels=torch.tensor(labels))

    def probs(focus_scores):  # classes (benign, malignant): P(malignant) as given
        p = np.asarray(focus_scores, dtype=np.float32)
        return np.stack([1 - p, p], axis=1)

    # Validation: ten malignant images scored 0.95, 0.85, ..., 0.05; 90% of them reach 0.15.
    val_scores = [0.95 - 0.1 * i for i in range(10)] + [0.5, 0.1]
    data = SimpleNamespace(classes=["benign", "malignant"], val=split([1] * 10 + [0, 0]),
                           test=split([1, 1, 1, 1, 0, 0, 0, 0]))
    result = SimpleNamespace(data=data, cv=None, probs={"val": probs(val_scores),
                                                        "test": probs([0.9, 0.4, 0.16, 0.1, 0.6, 0.2, 0.1, 0.0])})
    point = operating_point_on_test(result, "malignant", 0.9)
    assert point["threshold"] == pytest.approx(0.15, abs=1e-6) and point["chosen_on"] == "the validation images"
    # Test: 3 of 4 malignant at or above 0.15 (0.1 is missed); 2 of 4 benign flagged (0.6, 0.2).
    assert point["sensitivity"] == 0.75 and point["specificity"] == 0.5 and point["flagged"] == 5
    result.cv = object()  # a fold ensemble: its validation predictions are out of fold
    assert operating_point_on_test(result, "malignant", 0.9)["chosen_on"].startswith("the out-of-fold")
    result.data = SimpleNamespace(**{**vars(data), "val": split([0] * 12)})
    assert operating_point_on_test(result, "malignant", 0.9) is None  # no malignant image to choose on
    del result.probs["test"]
    assert operating_point_on_test(result, "malignant", 0.9) is None
    result.probs = {"test": probs([0.9] * 8)}  # bagged models: no validation images to choose on
    assert operating_point_on_test(result, "malignant", 0.9) is None


def test_the_report_shows_what_each_change_bought_rung_by_rung():
    def runs(*f1s, recall=0.8, minutes=1.0):
        return [{"seed": s, "macro_f1": f, "focus_class": "malignant", "focus_recall": recall, "wall_s": minutes * 60}
                for s, f in enumerate(f1s)]

    r = RESULTS | {"time_to_quality": [q | {"folds": 5} for q in runs(0.84, 0.86, minutes=5.0)],
                   "ablation": {"seed_recipe": runs(0.70, 0.72, minutes=3.0), "one_model": runs(0.76, 0.80)}}
    section = render_markdown(r).split("## What each change bought")[1].split("## Default recipe")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [row.split(" | ")[0] for row in rows] == [
        "| The seed notebook's reported best run (its own pipeline: seed_cnn_bn, 256 px, 10 epochs, oversample; one run)",
        "| The seed's recipe inside medcls: seed_cnn_bn at 256 px, oversampling, Adam 1e-3 and StepLR, 10 epochs, no "
        "augmentation or weight averaging, the epoch of best validation accuracy; one model",
        "| The default recipe as one model: small_cnn at 128 px, AdamW with one-cycle, weight averaging, "
        "augmentation, the test-time mirror, 20 epochs keeping the last",
        "| The default recipe: the same, as the 5-fold ensemble it trains on this small dataset (row 6)"]
    assert rows[1].endswith("| 0.710 (0.700–0.720) | 0.800 (0.800–0.800) | 3.0 (3.0–3.0) | – |")
    assert rows[2].endswith("| +0.070 |") and rows[3].endswith("| +0.070 |")  # 0.78 - 0.71, 0.85 - 0.78
    assert "(mean and range over seeds 0, 1)" in section
    assert "## What each change bought" not in render_markdown(RESULTS)  # a result file from before the ladder


def test_the_seed_recipe_rung_trains_as_the_seed_script_does():
    from medcls.bench import _seed_recipe

    cfg = _seed_recipe(DataConfig(source="busi"), quick=False)
    # seed_baseline.py: cnn3bn at 256 px, --oversample, Adam(lr=1e-3) without weight decay, StepLR(3, 0.5), 10
    # epochs, no augmentation, best validation accuracy kept; one model.
    assert (cfg.model, cfg.image_size, cfg.epochs, cfg.imbalance) == ("seed_cnn_bn", 256, 10, "oversample")
    assert (cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.scheduler) == ("adam", 1e-3, 0.0, "step")
    assert (cfg.applicable()["step_size"], cfg.applicable()["gamma"]) == (3, 0.5)
    assert not cfg.augment.augment and not cfg.tta and cfg.ema_decay == 0 and cfg.patience == 0
    assert cfg.select_metric == "accuracy" and not cfg.small_data_ensemble and cfg.folds == 0
    assert _seed_recipe(DataConfig(source="busi"), quick=True).epochs == 3


def test_the_report_shows_what_the_size_chosen_for_the_data_bought_on_top_of_the_ensemble_at_128_px():
    def runs(*f1s, recall=0.8, minutes=1.0):
        return [{"seed": s, "macro_f1": f, "focus_class": "malignant", "focus_recall": recall, "wall_s": minutes * 60}
                for s, f in enumerate(f1s)]

    chosen = [q | {"folds": 3, "image_size": 192} for q in runs(0.85, 0.87, recall=0.9, minutes=4.0)]
    r = RESULTS | {"time_to_quality": chosen,
                   "ablation": {"seed_recipe": runs(0.70, 0.72), "one_model": runs(0.76, 0.80),
                                "ensemble_128": runs(0.84, 0.86, minutes=3.5)}}
    text = render_markdown(r)
    section = text.split("## What each change bought")[1].split("## Default recipe")[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert rows[3].startswith("| The same as the 5-fold ensemble a small dataset trained with until 2026-12-05")
    assert rows[3].endswith("| 0.850 (0.840–0.860) | 0.800 (0.800–0.800) | 3.5 (3.5–3.5) | +0.070 |")
    assert rows[4].startswith("| The default recipe: 192 px, chosen for these images, as the 3-fold ensemble")
    assert rows[4].endswith("| 0.860 (0.850–0.870) | 0.900 (0.900–0.900) | 4.0 (4.0–4.0) | +0.010 |")
    assert "default recipe (3-fold ensemble at 192 px, chosen for this small dataset)" in text
    # Bagged models as the default: the fold models at the same size are the rung below them, and lend (6) their
    # operating point (bagged models hold no image out to choose a threshold on).
    point = {"target": 0.9, "chosen_on": "the out-of-fold predictions of train + val", "threshold": 0.1,
             "sensitivity": 0.95, "specificity": 0.6}
    bagged = [q | {"bagged_models": 3, "folds": 0, "image_size": 192, "operating_point": None}
              for q in runs(0.88, 0.90, recall=0.95, minutes=4.5)]
    r = r | {"time_to_quality": bagged, "ablation": r["ablation"] | {"folds": [q | {"operating_point": point}
                                                                              for q in chosen]}}
    text = render_markdown(r)
    rows = [line for line in text.split("## What each change bought")[1].split("## Default recipe")[0].splitlines()
            if line.startswith("| ") and "---" not in line][1:]
    assert rows[4].startswith("| 192 px, chosen for these images, as the 3-fold ensemble a small dataset of large "
                              "images trained with until 2026-12-06")
    assert rows[5].startswith("| The default recipe: 192 px, chosen for these images, as the 3 bagged models it "
                              "trains on this small dataset (row 6), each learning from every train + val image")
    assert rows[5].endswith("| 0.890 (0.880–0.900) | 0.950 (0.950–0.950) | 4.5 (4.5–4.5) | +0.030 |")
    assert "default recipe (3 bagged models at 192 px, chosen for this small dataset)" in text
    assert "| 6 | … the ablation's 3 fold models at 192 px (the bagged default holds no image out to choose a " \
           "threshold on) flagging malignant when" in text
    cv = RESULTS["cross_validation"] | {"image_size": 128}  # (8) run apart: 5 folds set, so 128 px
    assert "train + val (the default recipe with the folds set, so at 128 px): held-out" in \
        render_markdown(r | {"cross_validation": cv})
