"""The ``ray`` job backend: every run is one task on a Ray cluster, with declared resources.

medcls does not schedule anything here. :class:`RayBackend` submits each queued
run as a Ray task asking for ``cpus_per_run`` CPUs (and ``gpus_per_run`` GPUs);
the cluster's scheduler queues the tasks and starts each one when a node has
the resources free. The run store stays the single source of truth, so it must
live on a path that every node sees (a shared filesystem):

- a submitted run stays ``queued`` until its task really starts; the task then
  claims the run under the store's scheduler lock and marks it ``running``
  (a run cancelled in the meantime is skipped);
- progress, history, weights and the stop file work exactly as for local runs
  (the worker is the same :func:`medcls.jobs.worker.run_worker`, minus watching the
  app's process, which lives on another machine);
- liveness is the run's heartbeat, beaten by its training loop only (never on its
  behalf), plus Ray's own task status: a loop silent for too long is ended by the
  job manager like a local one; when Ray reports
  the task dead (node lost, worker killed, task failed) the job manager marks
  the run interrupted with Ray's reason; a stop that the worker does not honour
  within the grace period ends with ``ray.cancel(force=True)``.

This is the only medcls module that imports ``ray`` (an optional extra:
``pip install -r requirements-ray.txt``). The app selects it with
``MEDCLS_BACKEND=ray``; see ``docs/scaling.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import exceptions as rex

from ..runs.records import Progress
from ..runs.store import RunStore
from ..settings import SettingsError, environment, ray_settings
from .manager import WorkerHandle, scheduler_lock

__all__ = ["RayBackend", "RayBackendError", "FORWARDED_ENV"]

log = logging.getLogger(__name__)

# Settings of the app's process that the training task needs too (paths must be valid on every node).
FORWARDED_ENV = ("MEDCLS_CACHE_DIR", "MEDCLS_DATA_DIR", "MEDCLS_DATA_ROOTS", "MEDCLS_EXPOSED",
                 "MEDCLS_ALLOW_SERVER_FOLDERS", "TORCH_HOME")
DRIVER_PATIENCE_S = 7 * 24 * 3600  # how long the app waits for a lost Ray head before Ray would end it


class RayBackendError(RuntimeError):
    """The Ray cluster cannot be reached or the backend is misconfigured."""


# --- the task that runs on a cluster node -------------------------------------------------------
def _claim(store: RunStore, run_id: str) -> bool:
    """Mark a queued run running (this process owns it); False when it was cancelled or taken meanwhile."""
    with scheduler_lock(store):
        state = store.raw_status(run_id).state
        if state != "queued":
            log.info("run %s is %s, not queued: nothing to do", run_id, state)
            return False
        store.clear_heartbeat(run_id)  # patience counts from now; the training loop beats from its start
        store.set_status(run_id, "running", backend="ray", node=ray.util.get_node_ip_address())
        store.write_progress(run_id, Progress(message="Starting a training process"))
    return True


def _train_task(store_root: str, run_id: str, threads: int, nice: int, env: dict[str, str]) -> str:
    """The body of one run's Ray task; returns the run's final state."""
    environment().update(env)
    if not (Path(store_root) / run_id / "config.json").is_file():
        raise RayBackendError(
            f"Run {run_id} is not in the run store {store_root} as seen from node {ray.util.get_node_ip_address()}: "
            "the run store must be on a filesystem that every Ray node mounts at the same path (MEDCLS_RUNS_DIR).")
    store = RunStore(store_root)
    if not _claim(store, run_id):
        return "skipped"
    from .worker import run_worker

    # No parent watch: the app runs elsewhere. The loop's heartbeat + Ray's task status tell whether this is alive.
    run_worker(store_root, run_id, threads, parent_pid=None, nice=nice)
    return store.raw_status(run_id).state


# max_calls=1: a fresh worker process per run (memory, torch threads and caches start clean).
# max_retries=0: a lost run is reported, never silently restarted on top of its own history.
_remote_train = ray.remote(max_calls=1, max_retries=0)(_train_task)


# --- the handle the job manager polls ----------------------------------------------------------
@dataclass
class _RayHandle:
    ref: Any                      # ray.ObjectRef of the task
    lost: str = ""                # set when Ray itself could not be asked

    def is_alive(self) -> bool:
        try:
            ready, _ = ray.wait([self.ref], timeout=0)
        except Exception as exc:  # the connection to the cluster is gone
            self.lost = f"Lost contact with the Ray cluster: {exc}"
            return False
        return not ready

    def kill(self) -> None:
        try:
            ray.cancel(self.ref, force=True)
        except Exception as exc:
            log.warning("could not cancel Ray task: %s", exc)

    def exit_description(self) -> str:
        if self.lost:
            return self.lost
        try:
            state = ray.get(self.ref, timeout=5)
        except rex.TaskCancelledError:
            return "The Ray task was cancelled."
        except rex.NodeDiedError as exc:
            return f"The cluster node running this run died ({_first_line(exc)})."
        except rex.OutOfMemoryError:
            return "Ray killed the run because its node ran out of memory: use smaller images, a smaller batch " \
                   "or a smaller model, or give each run more memory (MEDCLS_RAY_MEMORY_MB)."
        except rex.WorkerCrashedError:
            return "The Ray worker process running this run died (killed, crashed or out of memory)."
        except rex.RayTaskError as exc:
            return f"The Ray task failed: {_first_line(exc.cause if exc.cause is not None else exc)}"
        except rex.RayError as exc:
            return f"The Ray cluster lost this run: {type(exc).__name__}: {_first_line(exc)}"
        except Exception as exc:
            return f"Could not learn how the Ray task ended: {type(exc).__name__}: {_first_line(exc)}"
        if state == "skipped":
            return "The cluster started the run's task, but the run was no longer queued."
        return f"The Ray task ended while the run was still marked {state!r} (its worker stopped early)."


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- the backend ---------------------------------------------------------------------------------
@dataclass
class RayBackend:
    """Submit runs to a Ray cluster. ``address`` None: ``RAY_ADDRESS`` or the cluster started on this machine."""

    address: str | None = None
    cpus_per_run: float = 1.0
    gpus_per_run: float = 0.0
    memory_mb: int = 0            # 0: do not reserve memory
    threads: int = 0              # torch threads per run; 0: the CPUs the run asked for
    nice: int = 10                # lower priority, so an app on the same node stays responsive (0: none)
    init_options: Mapping[str, Any] = field(default_factory=dict)  # extra ray.init arguments (when connecting)

    name = "ray"
    schedules_itself = True       # the cluster starts runs as resources free up (see capacity)

    def __post_init__(self) -> None:
        if self.cpus_per_run <= 0:
            raise RayBackendError("MEDCLS_RAY_CPUS_PER_RUN must be positive (e.g. 1 or 2).")
        if self.gpus_per_run < 0 or self.memory_mb < 0 or self.threads < 0:
            raise RayBackendError("GPUs, memory and threads per run cannot be negative.")

    @classmethod
    def from_settings(cls) -> "RayBackend":
        """The backend as ``MEDCLS_RAY_*`` and ``MEDCLS_WORKER_THREADS`` configure it (see medcls.settings)."""
        try:
            return cls(**ray_settings())
        except SettingsError as exc:
            raise RayBackendError(str(exc)) from None

    # --- connection -------------------------------------------------------------------------------
    def connect(self) -> None:
        """Join the cluster once per process (a no-op when this process already joined one)."""
        if ray.is_initialized():
            return
        address = self.address or environment().get("RAY_ADDRESS") or "auto"
        # Ray ends a driver that cannot reach the cluster's head for 60 s, and the driver here is the app
        # server: keep it alive; the runs the head took with it end as interrupted (see _RayHandle).
        environment().setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(DRIVER_PATIENCE_S))
        _use_token_when_available()
        try:
            ray.init(address=address, log_to_driver=False, **dict(self.init_options))
        except Exception as exc:
            raise RayBackendError(
                f"Could not connect to the Ray cluster at {address}: {_first_line(exc)}. Start one with "
                f"`ray start --head` (or point MEDCLS_RAY_ADDRESS at the head node, host:port). A cluster that uses "
                f"token authentication also needs its token here (RAY_AUTH_TOKEN or ~/.ray/auth_token).") from exc
        self._check_resources()

    def _check_resources(self) -> None:
        total = ray.cluster_resources()
        wanted = {"CPU": self.cpus_per_run, "GPU": self.gpus_per_run}
        for resource, amount in wanted.items():
            if amount and total.get(resource, 0.0) < amount:
                log.warning("Each run asks for %s %s but the Ray cluster has %s in total: runs will wait until "
                            "nodes with enough %s join.", amount, resource, total.get(resource, 0.0), resource)

    # --- the JobManager backend protocol ------------------------------------------------------------
    def capacity(self) -> int:
        """Runs the cluster can train at once (its CPUs and GPUs over what one run asks; at least one).

        The job manager hands the cluster only that many runs, so the others wait in its round-robin queue
        across people: a sweep handed over first cannot hold another person's run back (Ray itself would
        start tasks broadly in the order it received them). Read again at every scheduling step, so nodes
        that join or leave change it."""
        self.connect()
        total = ray.cluster_resources()
        fits = [total.get("CPU", 0.0) / self.cpus_per_run]
        if self.gpus_per_run:
            fits.append(total.get("GPU", 0.0) / self.gpus_per_run)
        return max(1, int(min(fits)))

    def start(self, store: RunStore, run_id: str) -> tuple[WorkerHandle, int | None]:
        self.connect()
        options: dict[str, Any] = {"num_cpus": self.cpus_per_run, "num_gpus": self.gpus_per_run,
                                   "name": f"medcls-{run_id}"}
        if self.memory_mb:
            options["memory"] = self.memory_mb * 1024 * 1024
        env = {name: environment()[name] for name in FORWARDED_ENV if environment().get(name)}
        threads = self.threads or max(1, int(self.cpus_per_run))
        ref = _remote_train.options(**options).remote(str(Path(store.root).resolve()), run_id, threads, self.nice,
                                                      env)
        log.info("submitted run %s to Ray (%s CPU, %s GPU)", run_id, self.cpus_per_run, self.gpus_per_run)
        return _RayHandle(ref), None  # no pid yet: the task records its own when it starts


def _use_token_when_available() -> None:
    """Ray >= 2.59 turns token authentication on for a cluster started on a machine that has a token
    (``~/.ray/auth_token``), but a process joining it by address does not send that token unless told.
    Do what ``ray start`` does: with ``RAY_AUTH_MODE`` unset, use token mode when a token exists (a cluster
    without authentication ignores it)."""
    if environment().get("RAY_AUTH_MODE"):
        return
    try:  # Ray's own rule; setting the variable alone is too late once Ray has read its config
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
