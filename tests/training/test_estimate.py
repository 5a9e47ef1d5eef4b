"""Time estimates: what an epoch really does (oversampling, validation, mirror TTA), the range early stopping
allows, and the probe that measures the costs in a process set up like a training worker.

Whether the estimates land within 30% of real runs is measured by ``python -m medcls.bench.estimates``
(docs/estimates.md): it trains real runs, which takes minutes.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from medcls.config import TrainConfig
from medcls.data import load_dataset
from medcls.data.spec import DatasetSpec, Item
from medcls.training.estimate import (
    PROBE_STEPS,
    Costs,
    earliest_stop,
    estimate_group,
    estimate_run,
    measure_costs,
    probe_config,
)
from medcls.training.imbalance import make_sampler

CLASSES = ["benign", "malignant", "normal"]


def spec(train: dict[str, int], val: int = 60, test: int = 59) -> DatasetSpec:
    items = [Item(f"{name}/{i}.png", CLASSES.index(name), "train") for name, n in train.items() for i in range(n)]
    items += [Item(f"val/{i}.png", i % 3, "val") for i in range(val)]
    items += [Item(f"test/{i}.png", i % 3, "test") for i in range(test)]
    return DatasetSpec("x", "class_folders", list(CLASSES), items)


def costs(**changes) -> Costs:
    base = dict(threads=1, precision="fp32", step_s=0.2, eval_image_s=0.004, first_epoch_extra_s=0.5,
                feature_image_s=0.0, embed_image_s=0.002, start_s=4.0, data_s=0.1, decode_image_s=0.0,
                bootstrap_s=0.05, channels=1, others_cores=0.0)
    return Costs(**{**base, **changes})


PHANTOMS = spec({"benign": 20, "malignant": 17, "normal": 244})  # the built-in data's training split


def test_an_epoch_counts_the_oversampled_images_and_the_mirrored_validation():
    cfg = TrainConfig()  # oversampling, batch 32, TTA
    estimate = estimate_run(cfg, PHANTOMS, costs())
    # Topping every class up to the largest would draw 3 * 244 = 732 images (2.6 times the 281); an epoch draws
    # a balanced share of twice the training images instead (BALANCED_EPOCH_LIMIT).
    assert estimate.epoch_images == 2 * 281
    assert estimate.steps == 18  # 562 / 32, the last small batch kept (it is over half a batch)
    assert estimate.epoch_s == pytest.approx(18 * 0.2 + 60 * 0.004)
    plain = estimate_run(cfg.with_options(imbalance="none"), PHANTOMS, costs())
    assert plain.epoch_images == 281 and plain.steps == 9  # 281 / 32 = 8.8 steps, the last over half a batch
    assert estimate.epoch_s > 1.8 * plain.epoch_s  # the old estimate counted 281 images
    assert "562 training images drawn in 18 steps" in estimate.epoch_words()
    asked = estimate_run(cfg.with_options(oversample=("benign=12", "malignant=14")), PHANTOMS, costs())
    assert asked.epoch_images == 244 + 240 + 238  # explicit multipliers are drawn whole
    # The page says why before training, in the words the run will use (the same sampler, the same note).
    labels = np.array([it.label for it in PHANTOMS.items if it.split == "train"])
    assert estimate.limit_note == make_sampler(labels, CLASSES, "oversample", cfg.seed, ()).limit_note()
    assert "2.6 times the training images" in estimate.limit_note
    assert plain.limit_note is None and asked.limit_note is None
    assert "and their mirror images" in estimate.epoch_words()


def test_the_estimate_says_when_a_weight_averaging_decay_is_never_reached():
    cfg = TrainConfig().with_options(ema_decay=0.995)  # 18 steps an epoch on the phantoms (above)
    short = estimate_run(cfg, PHANTOMS, costs())
    assert "a decay of 0.995 is reached only after 1,790 training steps" in short.averaging_note  # 30 x 18 = 540
    assert estimate_run(cfg.with_options(epochs=100), PHANTOMS, costs()).averaging_note is None  # 1,800 steps
    assert estimate_run(TrainConfig(), PHANTOMS, costs()).averaging_note is None  # the default


def test_the_whole_run_spans_the_epochs_early_stopping_allows():
    cfg = TrainConfig().with_options(checkpoint="best", epochs=30)  # patience 5: never before epoch 15
    estimate = estimate_run(cfg, PHANTOMS, costs())
    assert estimate.earliest == 15 and estimate.epochs == 30
    assert estimate.total_s(15) < estimate.total_s() == pytest.approx(
        estimate.setup_s + 0.5 + 30 * estimate.epoch_s + estimate.finish_s)
    assert "early stopping may end it after epoch 15" in estimate.total_words()
    assert earliest_stop(30, 0) == 30 and earliest_stop(2, 5) == 2 and earliest_stop(40, 25) == 26


def test_a_run_without_validation_images_is_estimated_to_train_every_epoch():
    # Early stopping has nothing to go by without validation images, so the run trains all 30 epochs.
    best = TrainConfig().with_options(checkpoint="best", epochs=30)
    estimate = estimate_run(best, spec({"benign": 20, "malignant": 17, "normal": 244}, val=0), costs())
    assert estimate.earliest == estimate.epochs == 30 and estimate.val_images == 0
    assert "early stopping" not in estimate.total_words()


def test_a_run_that_keeps_its_last_epoch_is_estimated_to_train_every_epoch():
    estimate = estimate_run(TrainConfig(), PHANTOMS, costs())  # the default keeps its last epoch
    assert estimate.earliest == estimate.epochs == 20 and "early stopping" not in estimate.total_words()


def test_a_run_that_a_warmed_up_process_takes_does_not_wait_for_a_process_to_start():
    fresh = estimate_run(TrainConfig(), PHANTOMS, costs())
    warm = estimate_run(TrainConfig(), PHANTOMS, costs(), warm_start=True)
    assert fresh.setup_s - warm.setup_s == pytest.approx(4.0)  # costs()' start_s
    assert warm.warm_start and not fresh.warm_start
    assert fresh.total_s() - warm.total_s() == pytest.approx(4.0)


def test_a_group_of_runs_adds_up_one_after_another_and_only_the_first_finds_a_warm_process():
    configs = [TrainConfig().with_options(epochs=10, image_size=size) for size in (64, 64, 128)]
    asked = []

    def costs_for(cfg: TrainConfig) -> Costs:  # a step costs as many times more as the image has pixels
        asked.append(cfg.image_size)
        return costs(step_s=0.2 * (cfg.image_size / 128) ** 2)

    group = estimate_group(configs, ["a", "b", "c"], PHANTOMS, costs_for, warm_start=True)
    assert asked == [64, 128]  # once per distinct cost: the two 64 px runs cost the same
    alone = [estimate_run(c, PHANTOMS, costs_for(c)) for c in configs]  # each as if started by itself, cold
    assert group.total_s() == pytest.approx(sum(r.total_s() for r in alone) - 4.0)  # one process start saved
    assert [r.warm_start for r in group.runs] == [True, False, False]
    assert not group.shows_range() and group.total_s(earliest=True) == group.total_s()  # no early stopping
    assert group.total_s() < 90 and group.total_words() == f"≈ {group.total_s():.0f} s in all"
    # 64 px: 18 steps of 0.05 s a step; 128 px: 18 steps of 0.2 s: the runs differ, so each is named.
    assert group.run_words() == "; ".join(f"{name} ≈ {r.total_s():.0f} s" for name, r in zip("abc", group.runs))
    same = estimate_group(configs[:2], ["a", "b"], PHANTOMS, costs_for)
    assert same.run_words() == f"each ≈ {same.runs[0].total_s():.0f} s"
    with pytest.raises(ValueError, match="one label per run"):
        estimate_group(configs, ["a"], PHANTOMS, costs_for)


def test_in_a_group_only_the_first_run_at_a_size_decodes_images_the_cache_lacks():
    configs = [TrainConfig().with_options(image_size=size) for size in (64, 64, 128)]
    group = estimate_group(configs, list("abc"), PHANTOMS, lambda cfg: costs(decode_image_s=0.01))
    decoding = 0.01 * len(PHANTOMS.items)
    assert group.runs[0].setup_s == pytest.approx(4.0 + 0.1 + decoding)  # the first decodes and caches 64 px
    assert group.runs[1].setup_s == pytest.approx(4.0 + 0.1)              # the second finds them cached
    assert group.runs[2].setup_s == pytest.approx(4.0 + 0.1 + decoding)  # 128 px: decoded again
    uncached = [c.with_options(disk_cache=False) for c in configs[:2]]  # each worker decodes for itself
    group = estimate_group(uncached, list("ab"), PHANTOMS, lambda cfg: costs(decode_image_s=0.01))
    assert group.runs[1].setup_s == pytest.approx(4.0 + 0.1 + decoding)


def test_a_group_whose_runs_may_stop_early_gives_a_range():
    best = TrainConfig().with_options(checkpoint="best", epochs=30)
    group = estimate_group([best] * 4, list("abcd"), PHANTOMS, lambda cfg: costs())  # 15 to 30 epochs
    assert group.total_s(earliest=True) == pytest.approx(sum(r.total_s(15) for r in group.runs))
    assert group.shows_range()
    assert group.total_words().startswith(f"≈ {group.total_s(earliest=True) / 60:.1f} min to ≈ "
                                          f"{group.total_s() / 60:.1f} min in all: early stopping")


def test_setup_counts_decoding_only_when_the_cache_lacks_the_images():
    cached = estimate_run(TrainConfig(), PHANTOMS, costs())
    fresh = estimate_run(TrainConfig(), PHANTOMS, costs(decode_image_s=0.01))
    assert fresh.setup_s - cached.setup_s == pytest.approx(0.01 * len(PHANTOMS.items))


def test_a_frozen_backbone_pays_for_its_features_once_per_model():
    cfg = TrainConfig().with_options(model="resnet18", weights="random")  # head only, 4 cached views
    frozen = estimate_run(cfg, PHANTOMS, costs(feature_image_s=0.01, step_s=0.001))
    n_train = 281
    assert frozen.setup_s == pytest.approx(4.0 + 0.1)
    assert frozen.features_s == pytest.approx((n_train * 4 + (60 + 59) * 2) * 0.01)
    assert frozen.epoch_s < 0.5
    assert frozen.total_s(0) == pytest.approx(frozen.setup_s + frozen.features_s + 0.5 + frozen.finish_s)
    # With the head's steps and validation as fast as measured on BUSI, its epochs are a small part of the run,
    # so one figure stands for it, not "≈ 20 s to ≈ 20 s".
    quick = estimate_run(cfg, PHANTOMS, costs(feature_image_s=0.01, step_s=0.001, eval_image_s=0.0003))
    assert quick.total_words().startswith(f"≈ {quick.total_s():.0f} s in all") and " to " not in quick.total_words()
    # Each fold model caches its own training images' features (and the validation and test images') again.
    folds = estimate_run(cfg.with_options(folds=3), PHANTOMS, costs(feature_image_s=0.01, step_s=0.001))
    assert folds.total_s(0) - folds.setup_s - folds.finish_s == pytest.approx(3 * (folds.features_s + 0.5))
    assert folds.features_s == pytest.approx((folds.train_images * 4 + (folds.val_images + 59) * 2) * 0.01)
    assert folds.train_images < n_train  # a fold model trains on two thirds of train + val


def test_the_probe_config_ignores_what_does_not_change_a_step():
    sized = TrainConfig(image_size=128)
    a = probe_config(sized.with_options(lr=1e-3, epochs=80, seed=3, imbalance="weighted_loss"))
    b = probe_config(sized)
    assert a == b and a.epochs == 2 and a.stopping_patience() == 0
    assert probe_config(sized.with_options(image_size=64)) != b  # the image size does
    with pytest.raises(ValueError, match="still 0"):  # a probe times the size a run trains at, once chosen
        probe_config(TrainConfig())


@pytest.mark.slow
def test_the_probe_measures_costs_in_a_worker_like_process(isolated_env, split_dataset):
    cfg = TrainConfig().with_options(source=str(split_dataset), image_size=32, batch_size=8, precision="fp32")
    measured = measure_costs(cfg)
    assert measured.threads >= 1 and measured.precision == "fp32" and measured.channels == 1
    assert measured.step_s > 0 and measured.eval_image_s > 0 and measured.embed_image_s > 0
    assert measured.start_s > 0.2  # a fresh Python with torch: never instant
    assert measured.decode_image_s > 0  # these images were never decoded at 32 px
    estimate = estimate_run(cfg, load_dataset(cfg.data), measured)
    assert 0 < estimate.epoch_s < 60 and estimate.steps == 4  # 30 training images, batch 8
    assert np.isfinite(estimate.total_s())


@pytest.mark.slow  # starts a probe process
def test_a_probe_that_is_stopped_ends_its_process_at_once(isolated_env, split_dataset, monkeypatch):
    import subprocess
    import threading

    from medcls.training import estimate

    started, popen = [], subprocess.Popen

    def recorded_popen(*args, **kwargs):
        started.append(popen(*args, **kwargs))
        return started[-1]

    monkeypatch.setattr(estimate.subprocess, "Popen", recorded_popen)
    stop = threading.Event()
    threading.Timer(1.0, stop.set).start()  # a run starts while the probe still imports torch
    begin = time.monotonic()
    with pytest.raises(estimate.ProbeStopped, match="a run started"):
        measure_costs(TrainConfig().with_options(source=str(split_dataset), image_size=32, batch_size=8), stop=stop)
    assert time.monotonic() - begin < 1.0 + 2.0  # not after the probe would have answered (several seconds)
    assert started and started[0].poll() is not None  # its process is gone, not left to compete with the run


def test_the_probe_times_a_frozen_backbones_features(isolated_env, split_dataset):
    from medcls.training.probe import probe_costs

    cfg = TrainConfig().with_options(source=str(split_dataset), model="resnet18", weights="random", image_size=32,
                                     batch_size=8, precision="fp32")
    measured = probe_costs(probe_config(cfg))  # in this process: what the probe process prints
    assert measured.feature_image_s > 0 and measured.step_s > 0  # head only: features once, then the head trains
    small = probe_costs(probe_config(cfg.with_options(model="small_cnn")))
    assert small.feature_image_s == 0.0  # trained end to end: no feature cache


def test_one_step_slowed_by_other_work_does_not_set_the_probes_step_cost(isolated_env, split_dataset, monkeypatch):
    from medcls.training import probe

    cfg = TrainConfig().with_options(source=str(split_dataset), image_size=32, batch_size=8, precision="fp32")
    quiet = probe.probe_costs(probe_config(cfg))
    calls = []
    clock_batch_end = probe._Clock.on_batch_end

    def a_burst_in_the_second_epoch(self, trainer, event):  # e.g. the browser drawing the page that asked
        if event.phase == "train" and event.epoch == 2 and event.batch == 2:
            time.sleep(1.5)
        calls.append(event.phase)
        clock_batch_end(self, trainer, event)

    monkeypatch.setattr(probe._Clock, "on_batch_end", a_burst_in_the_second_epoch)
    burst = probe.probe_costs(probe_config(cfg))
    assert calls.count("train") == 2 * PROBE_STEPS  # every step of both epochs was timed
    assert burst.step_s < quiet.step_s + 0.1  # a mean would add 1.5 s / PROBE_STEPS, far more than a step's noise
    assert probe.typical_step([0.1, 0.1, 2.1, 0.1, 0.1, 0.1]) == pytest.approx(0.1)


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs /proc/stat to see other processes' CPU time")
def test_the_probe_says_how_busy_other_processes_kept_the_machine_while_it_timed(isolated_env, split_dataset):
    import subprocess
    import sys

    from medcls.training.probe import probe_costs

    cfg = TrainConfig().with_options(source=str(split_dataset), image_size=32, batch_size=8, precision="fp32")
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # another process keeps a core busy
    try:
        time.sleep(0.3)
        measured = probe_costs(probe_config(cfg))
    finally:
        busy.kill()
        busy.wait()
    assert measured.others_cores >= 0.5  # such a timing is not kept as a quiet machine's (quiet_timings)


@pytest.mark.slow  # starts a probe process
def test_a_probe_that_cannot_build_the_model_says_why(isolated_env, split_dataset):
    from medcls.training.estimate import EstimateError

    cfg = TrainConfig(image_size=32).with_options(source=str(split_dataset / "nope"))
    with pytest.raises(EstimateError, match="not found|does not exist|No such"):
        measure_costs(cfg)


def test_a_small_dataset_is_timed_as_the_five_fold_models_it_trains():
    busi_like = spec({"benign": 306, "malignant": 147, "normal": 93}, val=116, test=118)  # val adds ~39 per class
    single = estimate_run(TrainConfig().with_options(small_data_ensemble=False), busi_like, costs())
    auto = estimate_run(TrainConfig(), busi_like, costs())
    assert single.folds == 0 and auto.folds == 5
    pool = 546 + 116
    assert auto.train_images == pool - len(range(0, pool, 5)) and auto.val_images == pool // 5  # each fold model's
    assert auto.total_s() > 4 * single.total_s() - 4 * single.setup_s  # five models' epochs, one start
    assert "for 5 fold models" in auto.total_words() and "each fold model" in auto.epoch_words()
    assert estimate_run(TrainConfig(), PHANTOMS, costs()).folds == 0  # the built-in data: one model, as it trains
    assert estimate_run(TrainConfig().with_options(folds=3), PHANTOMS, costs()).folds == 3
    assert auto.note is None and single.note is None
    large = estimate_run(TrainConfig().with_options(image_size=256), busi_like, costs())  # 4 times the work
    assert large.folds == 0 and large.note.startswith("One model, not a 5-fold ensemble")
    # The built-in data is small, yet trains one model with the option on: the page says which class is too rare.
    phantoms = estimate_run(TrainConfig(), PHANTOMS, costs())
    assert phantoms.note.startswith("One model, not a 5-fold ensemble: malignant has only")
    assert estimate_run(TrainConfig().with_options(small_data_ensemble=False), PHANTOMS, costs()).note is None


def test_testing_an_ensemble_counts_every_member():
    """After training, a fold ensemble tests and embeds (for Try it's novelty check) through all its members."""
    busi_like = spec({"benign": 306, "malignant": 147, "normal": 93}, val=116, test=118)
    only_embedding = dict(eval_image_s=0.0, bootstrap_s=0.0, embed_image_s=0.01)
    single = estimate_run(TrainConfig().with_options(small_data_ensemble=False), busi_like, costs(**only_embedding))
    auto = estimate_run(TrainConfig(), busi_like, costs(**only_embedding))
    assert single.finish_s == pytest.approx((546 + 116) * 0.01)          # the training and validation images
    assert auto.finish_s == pytest.approx((546 + 116) * 5 * 0.01)        # the same through five members
    # Frozen members test on cached features, but the ensemble's test images go through each backbone.
    frozen = TrainConfig().with_options(model="resnet18", weights="random")
    features = dict(eval_image_s=0.0, bootstrap_s=0.0, embed_image_s=0.0, feature_image_s=0.01)
    assert estimate_run(frozen, busi_like, costs(**features)).finish_s == pytest.approx(118 * 5 * 2 * 0.01)
    assert estimate_run(frozen.with_options(small_data_ensemble=False), busi_like, costs(**features)).finish_s == 0


def test_a_probe_timing_keeps_the_fastest_call_after_the_first(monkeypatch):
    """A few milliseconds of work, slowed many times over by another thread's burst, must not set a cost that
    is multiplied by every image of the dataset: the first call (allocations) is dropped, then the fastest."""
    from medcls.training import probe

    durations = iter([5.0, 0.9, 0.1, 0.7])  # seconds each call takes on a fake clock
    now = [0.0]
    calls: list[int] = []

    def work() -> None:
        now[0] += next(durations)
        calls.append(1)

    monkeypatch.setattr(probe.time, "perf_counter", lambda: now[0])
    assert probe._timed(work, repeats=4) == pytest.approx(0.1)
    assert len(calls) == 4
    durations = iter([2.0])
    assert probe._timed(work, repeats=1) == pytest.approx(2.0)  # one call: its own time


def test_image_size_zero_is_timed_and_estimated_at_the_size_and_folds_the_run_will_choose(monkeypatch):
    import medcls.training.estimate as estimate
    from medcls.training import autoplan

    busi = spec({"benign": 320, "malignant": 150, "normal": 100}, val=99, test=118)  # BUSI-sized, fake paths
    for module in (autoplan, estimate):  # as if its images were 256 px on their shorter side
        monkeypatch.setattr(module, "typical_side", lambda spec, *args, **kwargs: 256)
    timed = []
    group = estimate_group([TrainConfig()], ["a"], busi, lambda cfg: timed.append(cfg.image_size) or costs())
    assert timed == [192] and group.runs[0].folds == 3       # 3 fold models at 192 px, timed at 192 px
    assert estimate_run(TrainConfig(), busi, costs()).folds == 3
    monkeypatch.setattr(autoplan, "typical_side", lambda spec, *args, **kwargs: 128)
    assert estimate_run(TrainConfig(), busi, costs()).folds == 5  # 128 px images: the usual 5 at 128 px


def test_bagged_models_are_timed_each_on_every_train_and_val_image_without_validation():
    busi_like = spec({"benign": 306, "malignant": 147, "normal": 93}, val=116, test=118)
    bagged = estimate_run(TrainConfig().with_options(bagged_models=3, image_size=128), busi_like, costs())
    single = estimate_run(TrainConfig().with_options(small_data_ensemble=False, image_size=128), busi_like, costs())
    assert bagged.folds == 3 and bagged.bagged and bagged.val_images == 0 and bagged.train_images == 546 + 116
    assert bagged.earliest == bagged.epochs  # nothing validated: nothing stops early
    assert "for 3 bagged models" in bagged.total_words() and "each bagged model" in bagged.epoch_words()
    assert "no validation images" in bagged.epoch_words() and "fold" not in bagged.epoch_words()
    # An epoch is training steps only (no validation pass), over more images than the one model's training split.
    assert bagged.epoch_s == pytest.approx(bagged.steps * costs().step_s) and bagged.steps > single.steps
