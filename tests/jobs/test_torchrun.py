"""Data-parallel training under torchrun: sharding, rank detection, and a real 2-process gloo run.

The torchrun test compares a 2-process run with a single-process run on the same seed. medcls treats the
configured batch as the global batch (each of N ranks takes batch/N images of it, interleaved from one
global epoch order), so with nothing random per rank (no augmentation, no dropout) and no batch norm (whose
batch statistics would be per rank) the two runs take the same optimisation steps on the same images.
They then differ only by floating-point summation order in the gradient all-reduce, about 1e-7 relative
per step; after a few dozen steps that stays far below 1e-3, the tolerance used here. Oversampling is on,
so a per-rank (rather than global) oversampling decision would show up as a different loss curve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medcls.cli import main
from medcls.jobs.torchrun import DistEnv, DistributedError, process_group_backend
from medcls.runs.store import RunStore
from medcls.training.ddp import any_rank, broadcast_object, shard_indices
from medcls.training.imbalance import EpochSampler

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("n, world", [(23, 2), (24, 2), (10, 3), (7, 4)])
def test_every_rank_gets_an_equal_share_of_the_global_order(n, world):
    order = np.random.default_rng(n).permutation(n)
    shards = [shard_indices(order, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1, "unequal shards make DDP's all-reduce wait forever"
    assert len(shards[0]) == -(-n // world)
    interleaved = np.stack(shards, axis=1).reshape(-1)
    assert np.array_equal(interleaved[:n], order), "the ranks together see the global order, in order"
    assert set(interleaved[n:]) <= set(order[:world]), "padding repeats the start of the order"
    assert np.array_equal(shard_indices(order, 0, 1), order)


@pytest.mark.parametrize("strategy", ["oversample", "weighted_sampler"])
def test_imbalance_draws_are_global_so_ranks_split_one_epoch(strategy):
    labels = np.array([0] * 20 + [1] * 4 + [2] * 2)
    # each rank builds its own sampler from the seed, as each torchrun process does
    per_rank = [EpochSampler(labels, 3, strategy, seed=5) for _ in range(2)]
    for epoch in (1, 2):
        epoch_order = EpochSampler(labels, 3, strategy, seed=5).indices(epoch)
        shards = [shard_indices(s.indices(epoch), rank, 2) for rank, s in enumerate(per_rank)]
        together = np.stack(shards, axis=1).reshape(-1)[:len(epoch_order)]
        assert np.array_equal(together, epoch_order)
    counts = np.bincount(labels[EpochSampler(labels, 3, strategy, seed=5).indices(1)], minlength=3)
    assert counts[2] > 2, "the rare class is drawn more often than it occurs"


def test_rank_comes_from_torchrun_variables():
    env = DistEnv.detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (env.rank, env.world_size, env.local_rank, env.distributed, env.is_writer) == (3, 4, 1, True, False)
    assert env.shard == (3, 4)
    single = DistEnv.detect({})
    assert (single.distributed, single.is_writer, single.shard) == (False, True, (0, 1))
    with pytest.raises(DistributedError, match="torchrun"):
        DistEnv.detect({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match="whole numbers"):
        DistEnv.detect({"RANK": "zero", "WORLD_SIZE": "2"})
    expected = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    assert process_group_backend() == expected
    # outside a process group the collectives are plain pass-throughs
    assert broadcast_object({"a": 1}) == {"a": 1} and any_rank(True) and not any_rank(False)


def _write_dataset(root: Path, size: int = 24) -> Path:
    """Noisy, overlapping classes (so the loss stays informative); 12 + 6 training images -> 24 after
    oversampling the rare class x2: an even count, so no padding, and the two runs see the same batches."""
    rng = np.random.default_rng(0)
    counts = {"train": {"common": 12, "rare": 6}, "val": {"common": 4, "rare": 4}, "test": {"common": 4, "rare": 4}}
    for split, per_class in counts.items():
        for label, n in per_class.items():
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            level = 110 if label == "common" else 145
            for i in range(n):
                pixels = rng.normal(level, 45, (size, size)).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{label}_{i}.png")
    return root


def _run_folder(store: RunStore, run_id: str) -> dict:
    status = store.raw_status(run_id)
    return {"status": status, "history": store.history(run_id), "metrics": store.metrics(run_id),
            "weights": store.load_weights(run_id)}


@pytest.mark.slow
def test_two_gloo_processes_under_torchrun_match_a_single_process(tmp_path):
    data = _write_dataset(tmp_path / "data")
    options = ["--data", str(data), "--image-size", "32", "--epochs", "3", "--batch-size", "8", "--precision", "fp32",
               "--no-augment", "--no-batch-norm", "--dropout", "0", "--imbalance", "oversample",
               "--oversample", "rare=2", "--threads", "1", "--seed", "3"]

    # Two processes, one run: rank 0 creates and records it, rank 1 only computes.
    ddp_store = tmp_path / "ddp_runs"
    env = {**os.environ, "MEDCLS_RUNS_DIR": str(ddp_store), "MEDCLS_CACHE_DIR": str(tmp_path / "cache"),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "medcls", "train", *options], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "(2 processes)" in proc.stdout and proc.stdout.count("finished: ") == 1, "only rank 0 reports"

    store = RunStore(ddp_store)
    (run_id,) = store.list_ids()  # one run folder, not one per rank
    folder = store.path(run_id)
    for name in ("config.json", "status.json", "history.jsonl", "best.pt", "model.json", "metrics.json",
                 "predictions.csv", "split.csv", "env.json"):
        assert (folder / name).is_file(), name
    ddp = _run_folder(store, run_id)
    assert ddp["status"].state == "finished"
    assert not any(k.startswith("module.") for k in ddp["weights"]), "weights saved without the DDP wrapper"

    # The same run in one process.
    single_store = RunStore(tmp_path / "single_runs")
    assert main(["--runs-dir", str(single_store.root), "train", *options, "--run-id", "single"]) == 0
    single = _run_folder(single_store, "single")

    assert len(ddp["history"]) == len(single["history"]) == 3
    for a, b in zip(ddp["history"], single["history"]):
        assert a.train_loss == pytest.approx(b.train_loss, rel=1e-3, abs=1e-4)
        assert a.val_loss == pytest.approx(b.val_loss, rel=1e-3, abs=1e-4)
        assert a.train_accuracy == b.train_accuracy and a.val_accuracy == b.val_accuracy
        assert a.best == b.best
    assert len({round(h.train_loss, 3) for h in single["history"]}) == 3, "the loss curve is not flat"
    assert ddp["status"].best_epoch == single["status"].best_epoch
    for split in ("val", "test"):
        assert ddp["metrics"].splits[split].confusion_matrix == single["metrics"].splits[split].confusion_matrix
        assert ddp["metrics"].splits[split].macro_f1 == pytest.approx(single["metrics"].splits[split].macro_f1,
                                                                      abs=1e-9)
    assert ddp["weights"].keys() == single["weights"].keys()
    for key, value in single["weights"].items():
        assert torch.allclose(ddp["weights"][key].float(), value.float(), rtol=1e-3, atol=1e-4), key
    assert json.loads((folder / "config.json").read_text())["seed"] == 3
