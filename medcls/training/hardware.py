"""CPU settings for fast, responsive training: threads, channels-last, and a bf16 probe.

bf16 autocast is much faster on CPUs with AVX512-BF16/AMX for large convolutions
and linear layers, and slower for small ones, so 'auto' measures a few training
steps both ways on the actual model and batch, and remembers the answer per
(model, input shape, CPU) in the cache folder.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import sys
import time
from typing import Callable

import torch
from torch import nn

from ..atomic import atomic_write_json, read_json
from ..settings import cache_dir

__all__ = ["cpu_name", "configure_threads", "keep_freed_memory", "bf16_supported", "resolve_precision",
           "time_train_steps", "describe_machine"]

log = logging.getLogger(__name__)
BF16_MIN_SPEEDUP = 1.15  # only switch to bf16 when it is clearly faster


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads (0 = all cores) and return the number in use."""
    n = threads or os.cpu_count() or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_allocator_tuned = False


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed memory instead of handing it back to the kernel (Linux only).

    Every training step frees and re-allocates the same large activation buffers (268 MB for seed_cnn_bn's
    first block at 256 px). By default glibc maps such blocks fresh from the kernel each time, which
    zero-fills every page again: a third of seed_cnn_bn's CPU time was spent in the kernel. Reusing them
    trained it 1.1-1.5x faster here; the price is that the process keeps its peak memory until it exits, so
    only training processes call this. Returns whether the setting took effect.
    """
    global _allocator_tuned
    if _allocator_tuned or not sys.platform.startswith("linux"):
        return _allocator_tuned
    try:
        libc = ctypes.CDLL("libc.so.6")
        _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    except (OSError, AttributeError):  # not glibc (musl, another libc): leave the allocator alone
        return False
    return _allocator_tuned


def bf16_supported() -> bool:
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def time_train_steps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, bf16: bool, steps: int = 3,
                     warmup: int = 1, optimizer: torch.optim.Optimizer | None = None,
                     fastest: bool = False) -> float:
    """Median (or with ``fastest``, the shortest) seconds of a forward+backward+optimizer step (a quick SGD
    unless ``optimizer`` is given); restores the model's weights afterwards."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if optimizer is None:
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    model.train()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    model.load_state_dict(state)
    optimizer.zero_grad(set_to_none=True)
    return min(times) if fastest else sorted(times)[len(times) // 2]


def resolve_precision(setting: str, model: nn.Module, sample: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                      key: str) -> str:
    """'fp32' or 'bf16' for a precision setting of 'auto', 'fp32' or 'bf16'."""
    if setting != "auto":
        return setting
    if not bf16_supported():
        return "fp32"
    digest = hashlib.sha1(f"{key}|{cpu_name()}|{torch.__version__}|{torch.get_num_threads()}".encode()).hexdigest()
    path = cache_dir() / "precision_probe.json"
    known = read_json(path, {}) or {}
    if digest in known:
        return known[digest]
    x, y = sample()
    fp32 = time_train_steps(model, x, y, bf16=False)
    bf16 = time_train_steps(model, x, y, bf16=True)
    choice = "bf16" if fp32 / bf16 >= BF16_MIN_SPEEDUP else "fp32"
    log.info("precision probe for %s: fp32 %.3fs/step, bf16 %.3fs/step -> %s", key, fp32, bf16, choice)
    known[digest] = choice
    try:
        atomic_write_json(path, known)
    except OSError:
        pass
    return choice


def describe_machine() -> dict:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "bf16_cpu": bf16_supported(), "python": platform.python_version()}

