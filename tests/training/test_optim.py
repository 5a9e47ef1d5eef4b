"""Optimizers and schedules built from a TrainConfig."""

from __future__ import annotations

import pytest
import torch

from medcls.config import TrainConfig
from medcls.training.optim import build_optimizer, build_scheduler


def _run(cfg: TrainConfig, steps_per_epoch: int) -> list[float]:
    model = torch.nn.Linear(2, 2)
    optimizer = build_optimizer(cfg, model.parameters())
    scheduler, interval = build_scheduler(cfg, optimizer, steps_per_epoch)
    lrs = []
    for _ in range(cfg.epochs):
        for _ in range(steps_per_epoch):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            if scheduler is not None and interval == "batch":
                scheduler.step()
        if scheduler is not None and interval == "epoch":
            scheduler.step()
    return lrs


@pytest.mark.parametrize("epochs,steps", [(1, 1), (2, 2), (1, 3)])
def test_onecycle_with_very_few_steps_still_trains_and_decays(epochs, steps):
    lrs = _run(TrainConfig().with_options(epochs=epochs, scheduler="onecycle", lr=0.01), steps)
    assert lrs[0] == pytest.approx(0.01)
    assert lrs == sorted(lrs, reverse=True)


def test_onecycle_warms_up_then_decays():
    lrs = _run(TrainConfig().with_options(epochs=4, scheduler="onecycle", lr=0.01), 10)
    peak = lrs.index(max(lrs))
    assert 0 < peak < len(lrs) - 1
    assert max(lrs) == pytest.approx(0.01, rel=1e-3)
    assert lrs[-1] < lrs[0]


def test_step_schedule_is_the_seeds_steplr():
    lrs = _run(TrainConfig().with_options(epochs=7, scheduler="step", step_size=3, gamma=0.5, lr=0.008), 1)
    assert lrs == pytest.approx([0.008] * 3 + [0.004] * 3 + [0.002])


def test_sgd_gets_momentum_and_frozen_parameters_are_left_out():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model[0].requires_grad_(False)
    optimizer = build_optimizer(TrainConfig().with_options(optimizer="sgd", momentum=0.8), model.parameters())
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.8
    assert sum(len(g["params"]) for g in optimizer.param_groups) == 2


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_cpu_optimizers_use_the_fused_kernels(name):
    model = torch.nn.Linear(4, 2)
    optimizer = build_optimizer(TrainConfig().with_options(optimizer=name), model.parameters())
    assert optimizer.defaults["fused"] is True
    before = model.weight.detach().clone()
    model(torch.ones(3, 4)).sum().backward()
    optimizer.step()
    assert not torch.equal(model.weight, before)
