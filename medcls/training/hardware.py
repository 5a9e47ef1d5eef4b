"""CPU settings for fast, responsive training: threads, channels-last, and a bf16 probe.

bf16 autocast is much faster on CPUs with AVX512-BF16/AMX for large convolutions
and linear layers, and slower for small ones, so 'auto' measures a few training
steps both ways on the actual model and batch, and remembers the answer per
(model, input shape, CPU) in the cache folder.

Threads follow the cores that are free, not the cores that exist. torch splits each
operation over its threads and waits for the slowest at a barrier; when another
process keeps one of two cores busy, the thread that shares that core (at a lower
priority, as training workers run) holds every barrier up. Measured on an Intel Xeon
with a busy second core, one epoch of the default recipe took 3.7 s with one thread
and 30 s with two (OpenMP's spinning waits), 6.5 s with two threads that sleep while
waiting (``OMP_WAIT_POLICY=PASSIVE``); on an AMD EPYC beside a busy loop, one
training step (small_cnn, 128 px, batch 32, fp32, niced) took 0.26-0.29 s with one
thread and 1.5 s with two (medians of 25, 2026-12-02). So :func:`choose_threads`
counts the cores other processes leave free, and a worker checks again every second
(:class:`~medcls.training.callbacks.ThreadBudget`), so a load that appears mid-run
costs a second or two (a load must last two seconds; a browser's redraws do not).
Workers keep OpenMP's default waits (a short spin, then
sleep): on a quiet machine, sleeping waits made every epoch of the built-in data
15-25% slower (3.6-4.4 s against 3.0-3.3 s on an Intel Xeon), and a busy core
now costs one thread within a second instead of an epoch.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ..atomic import atomic_write_json, read_json
from ..settings import cache_dir, environment

__all__ = ["cpu_name", "configure_threads", "usable_cores", "keep_freed_memory", "bf16_supported", "resolve_precision",
           "train_step_seconds", "precision_step_seconds", "describe_machine", "CpuSample", "cpu_sample",
           "cores_used_by_others", "choose_threads", "worker_environment", "QUIET_OTHERS_CORES", "is_quiet"]

log = logging.getLogger(__name__)
BF16_MIN_SPEEDUP = 1.15  # only switch to bf16 when it is clearly faster
# A timing is remembered for later runs only when other processes kept at most this many cores busy on average
# while it ran: beside a load, a niced process times the share of a core it is left, not the machine (beside two
# busy processes a worker timed small_cnn's step at 4.1 s in fp32 and 5.1 s in bf16, 40 and 80 times a quiet
# step, and kept fp32 for every later run on a CPU where bf16 is faster).
QUIET_OTHERS_CORES = 0.3


def is_quiet(others_cores: float | None) -> bool:
    """Whether a timing beside ``others_cores`` busy cores (None: the machine does not tell) is the machine's own."""
    return others_cores is None or others_cores <= QUIET_OTHERS_CORES


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# A core counts as free while other processes use at most half of it. Measured on a 2-core Intel Xeon
# (small_cnn, 128 px, niced as workers run, beside a process busy for a share of every 50 ms or 1 s): two threads
# trained 1.4-1.5x as fast as one with others at 0.2-0.3 of a core (a browser watching the Train page), 1.3x at
# 0.5, 0.75-1.1x at 0.7 and 0.5-0.8x at a whole core. The earlier rule (free below 0.3 of a core) dropped to one thread
# for a browser's bursts, and the default run on the built-in data took 100-113 s to train instead of 59 s.
FREE_CORE_SHARE = 0.5


def worker_environment() -> dict[str, str]:
    """The environment of a process that trains (or times training) on this machine: this one's, with medcls
    importable from any working directory."""
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(environment())
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    return env


def configure_threads(threads: int = 0) -> int:
    """Set torch's intra-op threads (0 = the cores free now, see :func:`choose_threads`); return the number."""
    n = threads or choose_threads()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return torch.get_num_threads()


@dataclass(frozen=True)
class CpuSample:
    """The machine's busy CPU time (all processes) and this process's own CPU time, at one moment."""

    wall: float          # time.monotonic()
    busy_total: float    # core-seconds all processes spent busy since boot (from /proc/stat), nan if unknown
    own: float           # core-seconds this process spent (all its threads)


def _busy_core_seconds() -> float:
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return math.nan
    if not fields or fields[0] != "cpu":
        return math.nan
    values = [float(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    busy = values[0] + values[1] + values[2] + values[5] + values[6] + values[7]
    return busy / (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)


def cpu_sample() -> CpuSample:
    return CpuSample(time.monotonic(), _busy_core_seconds(), time.process_time())


def cores_used_by_others(before: CpuSample, after: CpuSample | None = None, *, wait_s: float = 0.3) -> float | None:
    """How many cores other processes kept busy between two samples (``after`` taken now, after ``wait_s``
    when not given); None where the machine does not tell (no /proc/stat)."""
    if after is None:
        time.sleep(max(0.0, wait_s - (time.monotonic() - before.wall)))
        after = cpu_sample()
    wall = after.wall - before.wall
    if wall <= 0 or math.isnan(before.busy_total) or math.isnan(after.busy_total):
        return None
    others = (after.busy_total - before.busy_total) - (after.own - before.own)
    return max(0.0, others / wall)


def sustained_others(since: CpuSample, *, window_s: float = 1.0, windows: int = 3) -> float | None:
    """Cores other processes kept busy from ``since`` until now, and, only while that leaves a core too few, over
    up to ``windows`` windows of ``window_s`` more: the lowest reading. A load must last, as ThreadBudget has it:
    a page's redraw in a browser on this machine fills a second and not the next, but headless Chromium opening
    the Train page kept 1.1-1.8 cores busy for 3 s (once a probe timed one thread there, quiet while it timed,
    and the page estimated BUSI's default at 4.9 minutes for runs of 2.6-3.3). A quiet first reading costs no
    wait, and a lasting load (a run training) at most ``windows`` x ``window_s``."""
    lowest = cores_used_by_others(since, cpu_sample())
    for _ in range(windows):
        if lowest is None or choose_threads(others=lowest) == usable_cores():
            break
        reading = cores_used_by_others(cpu_sample(), wait_s=window_s)
        if reading is None:
            break
        lowest = min(lowest, reading)
    return lowest


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a container's cpuset), not the machine's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


def choose_threads(cores: int | None = None, others: float | None = None, *, wait_s: float = 0.3) -> int:
    """Threads for training now: the cores other processes leave (nearly) free, at least one.

    ``others`` is the number of cores other processes use (measured over ``wait_s`` when not given).
    """
    cores = cores or usable_cores()
    if others is None:
        others = cores_used_by_others(cpu_sample(), wait_s=wait_s)
    if others is None:
        return cores
    free = cores - others
    return max(1, min(cores, int(math.floor(free + (1 - FREE_CORE_SHARE)))))


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


def train_step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, bf16: bool, steps: int = 3,
                       warmup: int = 1, optimizer: torch.optim.Optimizer | None = None) -> list[float]:
    """Seconds of each of ``steps`` timed training steps after ``warmup`` untimed ones, in order (a quick SGD
    unless ``optimizer`` is given).

    Leaves no trace: the weights and the global random stream (dropout draws from it) are as before, so a
    precision probe inside a run does not change what its seed trains."""
    return _step_seconds(model, x, y, [bf16] * (warmup + steps), optimizer)[warmup:]


def precision_step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, rounds: int = 3) -> tuple[float, float]:
    """The fastest training step in fp32 and in bf16, timed in turns (fp32, bf16, fp32, bf16, ...) after one
    untimed step of each.

    In turns, a slow spell of a shared virtual CPU (another guest's load, a clock change, a warm-up of the
    matrix units) slows both formats' steps alike, instead of all the steps of the one timed during it; and
    noise only slows steps down, so the fastest is each format's own speed. Timed one block after the other
    (medians of three), an Intel Xeon with AMX once chose fp32 and remembered it for every later run, where bf16
    trains small_cnn's step at 192 px in 0.45 of fp32's time; its first bf16 steps in a process can take twice
    as long as the later ones for a second or so."""
    formats = [False, True] * (1 + rounds)
    seconds = _step_seconds(model, x, y, formats)[2:]  # the first of each format is untimed
    return min(seconds[0::2]), min(seconds[1::2])


def _step_seconds(model: nn.Module, x: torch.Tensor, y: torch.Tensor, formats: Sequence[bool],
                  optimizer: torch.optim.Optimizer | None = None) -> list[float]:
    """Seconds of one training step in each of ``formats`` (True: bf16), in order; weights, gradients and the
    global random stream are left as they were."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    if optimizer is None:
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    model.train()
    times = []
    with torch.random.fork_rng(devices=[]):
        for bf16 in formats:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = nn.functional.cross_entropy(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            times.append(time.perf_counter() - start)
    model.load_state_dict(state)
    optimizer.zero_grad(set_to_none=True)
    return times


def resolve_precision(setting: str, model: nn.Module, sample: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                      key: str) -> str:
    """'fp32' or 'bf16' for a precision setting of 'auto', 'fp32' or 'bf16'."""
    if setting != "auto":
        return setting
    if not bf16_supported():
        return "fp32"
    # Not keyed by the thread count: a worker that starts with one thread (the app was busy drawing the click
    # that started it) takes the Train page's answer, measured with two, instead of spending seconds before its
    # first epoch measuring again.
    # "quiet": answers remembered before they were checked for other processes' load are measured once more;
    # "paired": and those timed one format after the other (see precision_step_seconds).
    digest = hashlib.sha1(f"{key}|{cpu_name()}|{torch.__version__}|quiet|paired".encode()).hexdigest()
    path = cache_dir() / "precision_probe.json"
    known = read_json(path, {}) or {}
    if digest in known:
        return known[digest]
    x, y = sample()
    before = cpu_sample()
    fp32, bf16 = precision_step_seconds(model, x, y)
    others = cores_used_by_others(before, cpu_sample())
    choice = "bf16" if fp32 / bf16 >= BF16_MIN_SPEEDUP else "fp32"
    quiet = is_quiet(others)
    log.info("precision probe for %s: fp32 %.3fs/step, bf16 %.3fs/step -> %s%s", key, fp32, bf16, choice,
             "" if quiet else f" (for this run only: other processes kept {others:.1f} cores busy meanwhile)")
    if quiet:
        known[digest] = choice
        try:
            atomic_write_json(path, known)
        except OSError:
            pass
    return choice


def describe_machine() -> dict:
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "bf16_cpu": bf16_supported(), "python": platform.python_version()}

