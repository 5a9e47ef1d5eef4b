"""What every training process pays once, before its first epoch ends, paid ahead of time.

A fresh Python process that trains imports torch, scikit-learn and medcls (about 2.5 s on a 2-core CPU), and
its first optimizer step, weight average and metrics load more code on first use (torch's first optimizer
step imports torch._dynamo, about 1.5 s). :func:`warm_up` pays all of it on a tiny model: the app's standby
training process calls it while it waits for a run (:mod:`medcls.jobs.worker`), and the timing probe calls it
before it starts its clock, so that the probe's first epoch shows only what every fold model's first epoch
costs again, and its start what a fresh process costs (:mod:`medcls.training.estimate`).
"""

from __future__ import annotations

from typing import Callable

__all__ = ["warm_up"]


def warm_up(run_waiting: Callable[[], bool] = lambda: False) -> None:
    """Import and use once the default model, optimizer, schedule, weight averaging, augmentation, evaluation
    and metrics on two random 64-px images. Nothing is kept: a run seeds its own random streams and sets its
    own threads.

    What a first epoch needs comes first. When ``run_waiting()`` says a run has arrived, the rest (what a run
    needs only at its end) is left for the run to pay when it gets there, as a fresh process would: a run handed
    over in the middle of the warm-up starts no later than in a fresh process."""
    import numpy as np
    import torch

    from ..analysis.metrics import classification_metrics, epoch_metrics
    from ..config import TrainConfig
    from ..data.augment import BatchAugment
    from ..inference.proba import predict_proba
    from .callbacks import WeightAveraging
    from .optim import build_optimizer, build_scheduler
    from .pipeline import build_model

    cfg = TrainConfig(image_size=64)  # the images below
    model = build_model(cfg, 2, 1, weights="random").to(memory_format=torch.channels_last)
    averaging = WeightAveraging(cfg.ema_decay)
    average = averaging.start(model)
    optimizer = build_optimizer(cfg, model.parameters())
    scheduler, _ = build_scheduler(cfg, optimizer, 1)
    images = BatchAugment(cfg.augment)(torch.rand(2, 1, 64, 64))
    loss = torch.nn.functional.cross_entropy(model(images.contiguous(memory_format=torch.channels_last)),
                                             torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    averaging.update(model)  # the first update copies, later ones average
    averaging.update(model)
    probs = predict_proba(average, images, tta=True)
    truth = np.array([0, 1])
    epoch_metrics(truth, probs.argmax(1), ["a", "b"])
    if run_waiting():
        return
    classification_metrics(truth, probs, ["a", "b"])  # the final test's metrics import SciPy (about 1.4 s)
