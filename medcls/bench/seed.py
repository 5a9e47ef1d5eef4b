"""The seed notebook's pipeline, measured in the same run as medcls.

The seed side is the seed's own code: ``seed_baseline.py`` (from
``../shared/bench``) runs as a subprocess for the CNN throughput, with the
same thread count and batch size as medcls. For ResNet-18 head-only training
the seed's way (its PIL dataset re-decoding every image, the frozen backbone
running again every epoch) is reproduced here from the seed module's own
``CancerImageDataset`` and loop shape.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

__all__ = ["find_seed_script", "load_seed_module", "seed_cnn_throughput", "seed_head_only_epoch"]

from ..settings import environment

log = logging.getLogger(__name__)


def find_seed_script(data_root: Path) -> Path | None:
    """../shared/bench/seed_baseline.py next to the dataset's shared folder, if present."""
    candidates = [data_root.resolve().parents[1] / "bench" / "seed_baseline.py",
                  Path(__file__).resolve().parents[3] / "shared" / "bench" / "seed_baseline.py"]
    return next((c for c in candidates if c.is_file()), None)


def load_seed_module(script: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("seed_baseline", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed_cnn_throughput(script: Path, data_root: Path, *, model: str = "cnn3bn", size: int = 256,
                        epochs: int = 1, batch_size: int = 32, max_batches: int = 0, threads: int) -> dict:
    """Run seed_baseline.py itself and return its JSON result (train images/s per epoch, metrics)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "seed.json"
        cmd = [sys.executable, str(script), "--data", str(data_root), "--model", model, "--size", str(size),
               "--epochs", str(epochs), "--batch-size", str(batch_size), "--json", str(out)]
        if max_batches:
            cmd += ["--max-train-batches", str(max_batches)]
        env = dict(environment(), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        log.info("running the seed pipeline: %s", " ".join(cmd))
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        result = json.loads(out.read_text())
    result["wall_s"] = time.perf_counter() - start
    return result


def seed_head_only_epoch(seed: ModuleType, data_root: Path, model: nn.Module, *, size: int = 224,
                         batch_size: int = 32, epochs: int = 1, seed_value: int = 0) -> dict:
    """The seed's head-only transfer learning: every epoch re-decodes images and re-runs the frozen backbone.

    ``model`` is medcls's ResNetTransfer in head-only mode (same backbone, same head), so only the data
    path and the per-epoch backbone pass differ from medcls's cached-features training.
    """
    import csv

    from torch.utils.data import DataLoader

    torch.manual_seed(seed_value)
    rows = list(csv.DictReader(open(data_root / "split.csv")))
    classes = seed.CLASSES
    split = {s: [[str(data_root / r["path"]), classes.index(r["label"])] for r in rows if r["split"] == s]
             for s in ("train", "val", "test")}
    loaders = {s: DataLoader(seed.CancerImageDataset(items, size), batch_size=batch_size, shuffle=s == "train")
               for s, items in split.items()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    to_unit = _seed_to_unit_range()
    epoch_seconds = []
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for x, y in loaders["train"]:
            optimizer.zero_grad()
            loss = criterion(model(to_unit(x)), y)
            loss.backward()
            optimizer.step()
        epoch_seconds.append(time.perf_counter() - start)
    model.eval()
    probs, labels = [], []
    with torch.no_grad():
        for x, y in loaders["test"]:
            probs.append(torch.softmax(model(to_unit(x)), 1))
            labels.append(y)
    return {"epoch_s": epoch_seconds, "y_true": torch.cat(labels).numpy(), "probs": torch.cat(probs).numpy(),
            "classes": list(classes)}


def _seed_to_unit_range():
    """The seed normalises with ImageNet statistics in its dataset; medcls models normalise themselves,
    so undo the seed's normalisation before the model (same pixels reach the backbone either way)."""
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return lambda x: x * std + mean

