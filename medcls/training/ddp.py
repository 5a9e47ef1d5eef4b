"""The collective operations of data-parallel training (DDP under torchrun), as plain functions.

Every function is a no-op outside a process group, so the training loop calls them unconditionally.
Starting and joining the process group is :mod:`medcls.jobs.torchrun`'s job.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["ddp_wrap", "broadcast_object", "any_rank", "shard_indices", "all_ranks_sum", "from_rank0", "unwrap"]


def unwrap(model: nn.Module) -> nn.Module:
    """The trained module itself, without a DistributedDataParallel wrapper (no 'module.' key prefix)."""
    return model.module if isinstance(model, DistributedDataParallel) else model


def ddp_wrap(module: nn.Module) -> nn.Module:
    """The ``wrap`` for :func:`medcls.training.execute_run`: gradients averaged over the ranks."""
    param = next((p for p in module.parameters() if p.requires_grad), None)
    device_ids = [param.device.index] if param is not None and param.is_cuda else None
    return DistributedDataParallel(module, device_ids=device_ids)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` as rank ``src`` has it, on every rank (unchanged outside a process group)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (a collective: all ranks must call it)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def shard_indices(indices: np.ndarray, rank: int, world: int) -> np.ndarray:
    """One rank's share of an epoch's global order: every ``world``-th index, starting at ``rank``.

    The order is first padded by repeating its start (as torch's DistributedSampler does), so every rank
    gets the same number of images and runs the same number of batches: DDP's gradient all-reduce must
    never wait for a rank that has run out of data.
    """
    if world > 1 and len(indices) % world:
        indices = np.concatenate([indices, np.resize(indices, world - len(indices) % world)])
    return indices[rank::world]


def all_ranks_sum(values: list[float]) -> list[float]:
    """Sum numbers over the DDP ranks (unchanged outside a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return values
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def from_rank0(loss: float, probs: np.ndarray) -> tuple[float, np.ndarray]:
    """Rank 0's validation result on every rank, so early stopping and the best epoch agree everywhere."""
    if not (dist.is_available() and dist.is_initialized()):
        return loss, probs
    packed = torch.cat([torch.tensor([loss], dtype=torch.float64), torch.from_numpy(probs).double().flatten()])
    dist.broadcast(packed, src=0)
    return float(packed[0]), packed[1:].reshape(probs.shape).to(torch.float32).numpy()


