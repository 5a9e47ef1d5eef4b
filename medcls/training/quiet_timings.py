"""Timing probes measured on a quiet machine, remembered for when a run is training.

A probe beside a training run measures the wrong thing, and costs something: it takes CPU from the run, and
it times the threads left beside it (one of two cores), while the run it estimates gets the whole machine when
its turn comes (the app trains one run at a time, and the next starts when this one ends). So a probe that
had every core is kept on disk, keyed by what it timed and the CPU it ran on, and the app uses it instead of
probing while a run trains. What depends on the dataset's state now (whether its images are decoded already)
is checked again when a measurement is recalled.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, replace

import torch

from ..atomic import atomic_write_json, read_json
from ..config import TrainConfig
from ..data.cache import cached_channels
from ..data.spec import DatasetSpec
from ..settings import cache_dir
from .estimate import Costs, probe_config
from .hardware import cpu_name, is_quiet, usable_cores

__all__ = ["QuietCosts", "remember_quiet", "recall_quiet", "QUIET_FILE", "MAX_REMEMBERED"]

log = logging.getLogger(__name__)
QUIET_FILE = "quiet-timings.json"  # in the cache folder
MAX_REMEMBERED = 200               # the newest measurements kept (a few hundred bytes each)


@dataclass(frozen=True)
class QuietCosts:
    """A measurement recalled from disk: the costs, and when they were measured (seconds since the epoch)."""

    costs: Costs
    measured_at: float


def _key(cfg: TrainConfig) -> str:
    """What was timed (the probe's config: its model, size, batch, precision, data ...) on which CPU and torch."""
    text = f"{probe_config(cfg).to_json()}|{cpu_name()}|{usable_cores()}|{torch.__version__}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


def _path():
    return cache_dir() / QUIET_FILE


def remember_quiet(cfg: TrainConfig, costs: Costs, *, now: float | None = None) -> bool:
    """Keep ``costs`` for ``cfg`` if they were measured with every core on a quiet machine; True when kept."""
    # Threads are chosen before the timing, so a load that starts meanwhile is seen only here: a probe that timed
    # beside the app's standby worker starting (importing torch, warming up) measured 6.5 times the quiet cost of
    # an evaluated image, and BUSI's Train page then estimated 8.0 minutes for a run of 4.
    if costs.threads < usable_cores() or not is_quiet(costs.others_cores):
        return False  # timed beside another load: not what a run on its own gets
    entries = read_json(_path(), {})
    if not isinstance(entries, dict):
        entries = {}  # unreadable: start again
    entries[_key(cfg)] = {"costs": costs.to_dict(), "measured_at": time.time() if now is None else now}
    newest = sorted(entries.items(), key=lambda kv: kv[1].get("measured_at", 0), reverse=True)[:MAX_REMEMBERED]
    try:
        atomic_write_json(_path(), dict(newest))
    except OSError as exc:  # a read-only cache only costs the memory
        log.warning("could not keep a quiet timing in %s: %s", _path(), exc)
        return False
    return True


def recall_quiet(cfg: TrainConfig, spec: DatasetSpec) -> QuietCosts | None:
    """The quiet measurement for ``cfg`` on this CPU, with decoding as ``spec``'s cache stands now; None when
    there is none, or when it cannot say what decoding costs now (decoded then, no longer in the cache)."""
    entries = read_json(_path(), {})
    entry = entries.get(_key(cfg)) if isinstance(entries, dict) else None
    try:
        costs, measured_at = Costs.from_dict(entry["costs"]), float(entry["measured_at"])
    except (TypeError, KeyError, ValueError):
        return None  # none, or an entry this version cannot read
    if cached_channels(spec, cfg.image_size, cfg.data.color) is not None:
        costs = replace(costs, decode_image_s=0.0)  # decoded since (e.g. by the run training now)
    elif costs.decode_image_s == 0.0:
        return None  # it was in the cache then and is not now: decoding it was never timed
    return QuietCosts(costs, measured_at)
