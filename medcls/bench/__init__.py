"""``python -m medcls bench``: medcls against the seed pipeline on BUSI, both measured in one run.

Prints figures as it goes, then writes a JSON file and ``docs/benchmarks.md``.
Skips with a message when the BUSI data (``../shared/datasets/busi``) is absent.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch

from ..atomic import atomic_write_json, atomic_write_text
from ..config import DataConfig, TrainConfig
from ..inference.predictor import Predictor
from ..training.autoplan import DETAIL_FOLDS
from ..training.hardware import configure_threads, cpu_name, keep_freed_memory, usable_cores
from ..training.pipeline import build_model, prepare_data
from . import measure, quality, seed
from .report import render_markdown

__all__ = ["default_busi_root", "run_benchmark", "SEED_REPORTED"]

log = logging.getLogger(__name__)

# The seed's best recipe as reported for this machine (cnn3bn, 256 px, 10 epochs, oversampling).
SEED_REPORTED = {"recipe": "seed_cnn_bn, 256 px, 10 epochs, oversample", "test_accuracy": 0.848,
                 "test_macro_f1": 0.813, "malignant_recall": 0.844, "wall_min": 14.5}


def default_busi_root() -> Path:
    return Path(__file__).resolve().parents[3] / "shared" / "datasets" / "busi"


def run_benchmark(data_root: Path, out_dir: Path, *, quick: bool = False,
                  echo: Callable[[str], None] = print) -> dict | None:
    """Run every measurement; returns the results (None when the data is absent)."""
    if not (data_root / "split.csv").is_file():
        echo(f"BUSI not found at {data_root} (expected split.csv there): benchmark skipped.")
        return None
    threads = configure_threads(0)
    keep_freed_memory()  # as every training process does (the seed's subprocess keeps glibc's default)
    batch = 32
    busi = DataConfig(source=str(data_root))
    results: dict = {"machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "usable_cores": usable_cores(),
                                 "threads": threads, "torch": torch.__version__, "python": platform.python_version()},
                     "batch_size": batch, "quick": quick, "date": time.strftime("%Y-%m-%d %H:%M"),
                     "seed_reported": SEED_REPORTED, "gflops_start": measure.machine_gflops()}
    seed_script = seed.find_seed_script(data_root)
    epochs = 1 if quick else 2

    # (1) + (2) seed_cnn_bn at 256 px: seed pipeline vs medcls vs the compute bound.
    # The seed's recipe (Adam 1e-3, StepLR, no oversampling, no weight averaging), so only the pipeline differs;
    # medcls still augments every batch, which the seed does not.
    cnn_cfg = TrainConfig(data=busi).with_options(model="seed_cnn_bn", image_size=256, batch_size=batch,
                                                 epochs=epochs, imbalance="none", optimizer="adam", lr=1e-3,
                                                 scheduler="step", ema_decay=0.0)
    data256 = prepare_data(cnn_cfg)
    if seed_script:
        echo("(1) seed pipeline, seed_cnn_bn 256 px ...")
        run = seed.seed_cnn_throughput(seed_script, data_root, size=256, epochs=epochs, batch_size=batch,
                                       threads=threads, max_batches=0 if not quick else 6)
        # The best epoch on both sides: a shared CPU's noise only ever slows an epoch down.
        best = max(e["train_img_per_s"] for e in run["epochs"])
        results["seed_cnn_bn_256_seed"] = {"images_per_s": best, "epochs": run["epochs"]}
        echo(f"    seed: {best:.1f} img/s")
    else:
        echo("    seed_baseline.py not found next to the data: the seed side is skipped.")
    echo("(1) medcls, seed_cnn_bn 256 px ...")
    ours, bound = measure.throughput_against_bound(cnn_cfg, data256)
    results["seed_cnn_bn_256_medcls"] = ours
    results["seed_cnn_bn_256_bound"] = bound
    echo(f"    medcls: {ours['images_per_s']:.1f} img/s ({ours['precision']}); compute bound "
         f"{bound['images_per_s']:.1f} img/s")

    # (1) + (2) the default small_cnn at 128 px.
    small_cfg = TrainConfig(data=busi).with_options(image_size=128, batch_size=batch, epochs=epochs + 1)
    data128 = prepare_data(small_cfg)
    echo("(1) medcls, small_cnn 128 px ...")
    small, small_bound = measure.throughput_against_bound(small_cfg, data128)
    results["small_cnn_128_medcls"] = small
    results["small_cnn_128_bound"] = small_bound
    echo(f"    medcls: {small['images_per_s']:.0f} img/s; compute bound {small_bound['images_per_s']:.0f} img/s "
         f"-> {small_bound['share']:.2f} of the bound (median over epochs)")

    # (3) ResNet-18 head only: cached features vs the seed's way.
    weights = _resnet_weights()
    head_epochs = 2 if quick else 5  # the same for both sides, so their test metrics are comparable
    head_cfg = TrainConfig(data=busi).with_options(model="resnet18", weights=weights, finetune="head",
                                                  image_size=224, batch_size=batch, epochs=head_epochs,
                                                  imbalance="none", augment=False, lr=1e-3, scheduler="none",
                                                  optimizer="adam")
    data224 = prepare_data(head_cfg)
    echo(f"(3) ResNet-18 head only ({weights} weights), medcls with cached features ...")
    cached = measure.head_only_cached(head_cfg, data224)
    results["resnet18_head_medcls"] = cached
    if seed_script:
        echo("(3) ResNet-18 head only, the seed's way ...")
        torch.manual_seed(0)
        model = build_model(head_cfg, len(data224.classes), 3, weights=weights)
        seed_run = seed.seed_head_only_epoch(seed.load_seed_module(seed_script), data_root, model,
                                             epochs=head_epochs, batch_size=batch)
        seed_metrics = measure.seed_way_metrics(seed_run)
        results["resnet18_head_seed"] = {"epoch_s": seed_run["epoch_s"], "test": seed_metrics.to_dict()}
        echo(f"    seed way {min(seed_run['epoch_s']):.1f} s/epoch vs cached {cached['median_epoch_s']:.3f} s/epoch")
    results["resnet18_weights"] = weights

    # (4) single-image latency from file bytes.
    files = sorted((data_root / "malignant").glob("*.png"))[:8]
    for name, cfg, data in (("small_cnn_128", small_cfg, data128), ("resnet18_224", head_cfg, data224)):
        model = build_model(cfg, len(data.classes), data.decoded.channels, weights="random").eval()
        predictor = Predictor(model, data.classes, cfg.image_size, data.decoded.color)
        results[f"latency_{name}"] = measure.prediction_latency(predictor, files)
        echo(f"(4) latency {name}: {results[f'latency_{name}']['median_ms']:.1f} ms median")

    # (5) decoded-cache memory.
    results["cache_memory"] = [measure.cache_memory(data128.decoded.spec, size) for size in (128, 256)]
    for row in results["cache_memory"]:
        echo(f"(5) cache at {row['size']} px: {row['cache_mb']:.1f} MB (peak while decoding {row['peak_mb']:.1f} MB)")

    # (6) quality of the default recipe on BUSI's committed split, over seeds (BUSI's test split is small:
    # one malignant image is 3 points of recall, so one run says little about the spread).
    seeds = (0,) if quick else (0, 1, 2)
    default_cfg = TrainConfig(data=busi)
    if quick:
        default_cfg = default_cfg.with_options(epochs=min(default_cfg.epochs, 3))
    results["time_to_quality"] = _seeded(echo, "(6) the default recipe on BUSI's split.csv", default_cfg, seeds)
    # (7) the same recipe on a split that keeps near-duplicates together: the honest, leak-free figure.
    grouped_cfg = dataclasses.replace(default_cfg, data=quality.grouped_split(data_root))
    results["leak_free"] = _seeded(echo, "(7) the default recipe on a duplicate-grouped split", grouped_cfg, seeds)
    # (8) k-fold cross-validation over split.csv's train + val images: the error bar small datasets need. When
    # the default recipe cross-validates BUSI by itself with as many folds (a small dataset), (6)'s first run has
    # those folds.
    folds = 2 if quick else 5
    if results["time_to_quality"][0].get("folds") == folds:
        results["cross_validation"] = results["time_to_quality"][0]["cross_validation"] | {"from_default": True}
    else:
        echo(f"(8) {folds}-fold cross-validation of the default recipe on BUSI's train + val ...")
        results["cross_validation"] = quality.cross_validation_quality(default_cfg.with_options(folds=folds))
    cv = results["cross_validation"]
    echo(f"    held-out macro-F1 {cv['macro_f1_mean']:.3f} ± {cv['macro_f1_sd']:.3f}, {cv['focus_class']} recall "
         f"{cv['focus_recall_mean']:.3f} ± {cv['focus_recall_sd']:.3f}, {cv['wall_s'] / 60:.1f} min")
    # What each change bought, on (6)'s split and seeds: the seed's recipe inside medcls, then the default recipe
    # as one model; (6) is the last rung, the default's fold ensemble.
    results["ablation"] = {
        "seed_recipe": _seeded(echo, "(ablation) the seed's recipe inside medcls", _seed_recipe(busi, quick), seeds),
        "one_model": _seeded(echo, "(ablation) the default recipe as one model",
                             default_cfg.with_options(small_data_ensemble=False), seeds)}
    if results["time_to_quality"][0].get("image_size") != 128:  # the size was chosen for BUSI's images: what it bought
        results["ablation"]["ensemble_128"] = _seeded(echo, "(ablation) the default's ensemble at 128 px",
                                                      default_cfg.with_options(image_size=128), seeds)
    if results["time_to_quality"][0].get("bagged_models"):  # what bagging bought: the same size as validated folds
        results["ablation"]["folds"] = _seeded(
            echo, f"(ablation) {DETAIL_FOLDS} fold models", default_cfg.with_options(
                image_size=results["time_to_quality"][0]["image_size"], folds=DETAIL_FOLDS), seeds)
    # (9) the demo loop: Start -> first epoch -> finished run, through the app's job manager and worker.
    echo("(9) the demo loop on the built-in data, through the job manager ...")
    demo_cfg = TrainConfig().with_options(epochs=3) if quick else TrainConfig()
    results["demo_loop"] = quality.demo_loop(demo_cfg)
    for label, d in results["demo_loop"].items():
        echo(f"    {label}: first epoch after {d['first_epoch_s']:.1f} s, {d['state']} after {d['finished_s']:.1f} s "
             f"({d['epochs']}/{d['planned_epochs']} epochs)")
    results["default_recipe"] = {k: v for k, v in default_cfg.applicable().items() if k != "source"}

    results["gflops_end"] = measure.machine_gflops()
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / "benchmarks.json", results)
    atomic_write_text(out_dir / "benchmarks.md", render_markdown(results))
    echo(f"wrote {out_dir / 'benchmarks.json'} and {out_dir / 'benchmarks.md'}")
    return results


def _seed_recipe(busi: DataConfig, quick: bool) -> TrainConfig:
    """The seed notebook's best recipe as closely as medcls trains it: its network at 256 px, oversampling, Adam
    1e-3 without weight decay and StepLR (every 3 epochs x 0.5), 10 epochs, no augmentation, weight averaging or
    test-time mirror, one model, the epoch of best validation accuracy kept (the seed's loop keeps it too)."""
    return TrainConfig(data=busi).with_options(
        model="seed_cnn_bn", image_size=256, epochs=3 if quick else 10, imbalance="oversample", optimizer="adam",
        lr=1e-3, weight_decay=0.0, scheduler="step", ema_decay=0.0, augment=False, tta=False, checkpoint="best",
        patience=0, select_metric="accuracy", small_data_ensemble=False)


def _resnet_weights() -> str:
    """ImageNet weights when the torchvision cache has them (no download attempt); else random."""
    from ..models.resnet import imagenet_cache_path

    return "imagenet" if imagenet_cache_path().is_file() else "random"



def _seeded(echo: Callable[[str], None], title: str, cfg: TrainConfig, seeds: tuple[int, ...]) -> list[dict]:
    runs = []
    for s in seeds:
        echo(f"{title}, seed {s} ...")
        runs.append(quality.time_to_quality(cfg.with_options(seed=s)) | {"seed": s})
        q = runs[-1]
        echo(f"    macro-F1 {q['macro_f1']:.3f}, {q['focus_class']} recall {q['focus_recall']:.3f}, "
             f"{q['wall_s'] / 60:.1f} min")
    return runs
