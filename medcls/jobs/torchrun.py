"""Data-parallel training under ``torchrun``: N processes, DistributedDataParallel, one run folder.

``torchrun --nproc_per_node N -m medcls train ...`` starts N copies of the command line; each finds its
place from the variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``).

- Process group: gloo for CPU tensors; where CUDA exists, ``cpu:gloo,cuda:nccl`` (NCCL for GPU tensors).
- Rank 0 creates the run and broadcasts its id and config; the other ranks train from that config in
  memory and never touch the run store. Only rank 0 writes status, history, weights and metrics.
- Sampling stays global: every rank draws the same epoch order from the seed (oversampling and the
  weighted sampler are decided once, for all ranks) and takes every N-th index of it. The configured
  batch size is the global batch (each rank takes batch/N), so a run means the same thing on 1 or N
  processes (see :func:`medcls.engine.shard_indices` and :func:`medcls.training.train_in_memory`).
- Decisions are agreed: a stop request (the run's stop file or Ctrl-C on any rank) is all-reduced before
  every batch, so all ranks stop at the same batch; rank 0's validation result and number format are
  used everywhere, so early stopping and the best epoch agree.

Nothing here imports Ray; the Ray backend schedules whole runs, torchrun splits one run.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.distributed as dist

from ..config import TrainConfig
from ..runs.records import RunMeta
from ..runs.store import RunStore
from ..settings import dist_timeout_s, environment
from ..training.ddp import any_rank, broadcast_object, ddp_wrap
from ..training.engine import Callback, FitCancelled
from ..training.hardware import configure_threads
from ..training.pipeline import train_in_memory
from .execute import RunOutcome, execute_run

__all__ = ["DistEnv", "DistributedError", "process_group", "process_group_backend", "share_run",
           "execute_distributed"]

log = logging.getLogger(__name__)
DEFAULT_TIMEOUT_S = 1800.0  # how long a rank waits for the others in one collective (MEDCLS_DIST_TIMEOUT_S)
_PEER_LOST = ("gloo", "nccl", "connection closed", "connection reset", "broken pipe", "distbackenderror")


class DistributedError(RuntimeError):
    """The torchrun environment is inconsistent."""


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def detect(cls, environ: Mapping[str, str] | None = None) -> "DistEnv":
        env = environment() if environ is None else environ
        try:
            rank = int(env.get("RANK", "0") or 0)
            world = int(env.get("WORLD_SIZE", "1") or 1)
            local = int(env.get("LOCAL_RANK", str(rank)) or 0)
        except ValueError:
            raise DistributedError("RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers; start medcls with "
                                   "torchrun, which sets them.") from None
        if world < 1 or not 0 <= rank < world:
            raise DistributedError(f"RANK={rank} does not fit WORLD_SIZE={world}; start medcls with torchrun.")
        return cls(rank, world, local)

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    @property
    def shard(self) -> tuple[int, int]:
        return self.rank, self.world_size


def process_group_backend() -> str:
    """gloo for CPU tensors; with CUDA also NCCL for GPU tensors (one group serves both)."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


@contextmanager
def process_group(env: DistEnv, timeout_s: float | None = None) -> Iterator[None]:
    """Join the torchrun job's process group for the duration (nothing to do for a single process)."""
    if not env.distributed or dist.is_initialized():
        yield
        return
    if timeout_s is None:
        timeout_s = dist_timeout_s(DEFAULT_TIMEOUT_S)
    if torch.cuda.is_available():
        torch.cuda.set_device(env.local_rank % torch.cuda.device_count())
    backend = process_group_backend()
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size,
                            timeout=timedelta(seconds=timeout_s))
    log.info("rank %d of %d joined the process group (%s)", env.rank, env.world_size, backend)

    def on_sigterm(signum: int, frame: Any) -> None:  # torchrun ends the survivors when one process fails
        raise DistributedError("torchrun ended this process: another process of the job failed or was killed, "
                               "or the job was stopped (see torchrun's output).")

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        dist.destroy_process_group()


def share_run(store: RunStore | None, cfg: TrainConfig, run_id: str | None, env: DistEnv,
              meta: RunMeta | None = None, name_from: TrainConfig | None = None) -> tuple[str, TrainConfig]:
    """Rank 0 creates the run (named as :meth:`RunStore.create` names it from ``name_from``), held for this
    process to train, so that no job manager sharing the store starts it too; every rank gets its id and the
    exact config it was created with."""
    payload: dict[str, str] = {}
    if env.is_writer:
        try:
            if store is None:
                raise DistributedError("Rank 0 needs the run store to create the run.")
            run_id = store.create(cfg, run_id, meta=meta, name_from=name_from, held=True)
            payload = {"run_id": run_id, "config": cfg.to_json()}
        except Exception as exc:
            broadcast_object({"error": f"{type(exc).__name__}: {exc}"})  # let the other ranks stop too
            raise
    payload = broadcast_object(payload)
    if "error" in payload:
        raise DistributedError(f"Rank 0 could not create the run: {payload['error']}")
    return payload["run_id"], TrainConfig.from_json(payload["config"])


def execute_distributed(store: RunStore | None, run_id: str, cfg: TrainConfig, env: DistEnv, *,
                        callbacks: Sequence[Callback] = (),
                        should_cancel: Callable[[], bool] | None = None) -> RunOutcome:
    """Train this rank's share of the run. Rank 0 records it in ``store`` (and polls its stop file);
    the other ranks only compute. ``should_cancel`` is this rank's own stop signal (e.g. Ctrl-C)."""

    def cancel() -> bool:  # every rank calls this before every batch, so it can be a collective
        local = bool(should_cancel and should_cancel())
        if env.is_writer and store is not None:
            local = local or store.stop_requested(run_id)
        return any_rank(local)

    if env.is_writer:
        if store is None:
            raise DistributedError("Rank 0 needs the run store to record the run.")
        outcome = execute_run(store, run_id, callbacks=callbacks, should_cancel=cancel, shard=env.shard,
                              wrap=ddp_wrap if env.distributed else None)
        if outcome.state == "failed" and any(word in outcome.error.lower() for word in _PEER_LOST):
            outcome.error = ("Another process of this torchrun job stopped (see torchrun's output for its error): "
                             + outcome.error)
            store.set_status(run_id, "failed", error=outcome.error)
        return outcome
    if cfg.threads:
        configure_threads(cfg.threads)
    try:
        train_in_memory(cfg, callbacks=callbacks, should_cancel=cancel, shard=env.shard, wrap=ddp_wrap)
    except FitCancelled:
        return RunOutcome("cancelled")
    except Exception as exc:  # this rank's process exits non-zero, and torchrun ends the others
        log.exception("rank %d failed", env.rank)
        return RunOutcome("failed", error=f"rank {env.rank}: {type(exc).__name__}: {exc}")
    return RunOutcome("finished")
