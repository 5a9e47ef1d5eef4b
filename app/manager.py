"""The one job manager for all users and tabs (the "cached background trainer").

``st.cache_resource`` gives every session the same :class:`medcls.jobs.JobManager`.
The manager never calls Streamlit from its threads or worker processes; pages
read run state from the run store on disk. When the cache is cleared, the
old manager stops scheduling but leaves running workers alone, and the new
manager picks them up from the store.
"""

from __future__ import annotations

import os

import streamlit as st

from medcls.jobs import JobManager
from medcls.runs import RunStore
from medcls.settings import runs_dir


def _release(manager: JobManager) -> None:
    manager.shutdown(kill=False)


@st.cache_resource(show_spinner=False, on_release=_release)
def get_manager(root: str) -> JobManager:
    concurrent = int(os.environ.get("MEDCLS_MAX_CONCURRENT", "1") or 1)
    threads = int(os.environ.get("MEDCLS_WORKER_THREADS", "0") or 0)
    from medcls.jobs import LocalBackend

    backend_name = (os.environ.get("MEDCLS_BACKEND") or "local").strip().lower()
    if backend_name == "ray":  # runs go to a Ray cluster (MEDCLS_RAY_ADDRESS ...; see docs/scaling.md)
        try:
            from medcls.ray_backend import RayBackend
        except ImportError as exc:
            raise RuntimeError(f"MEDCLS_BACKEND=ray needs Ray ({exc}): install it with "
                               "`pip install -r requirements-ray.txt`, or unset MEDCLS_BACKEND.") from exc
        backend = RayBackend.from_env()
    elif backend_name == "local":
        backend = LocalBackend(threads=threads)
    else:
        raise ValueError(f"MEDCLS_BACKEND={backend_name!r} is not a backend: use 'local' (the default) or 'ray'.")
    return JobManager(RunStore(root), max_concurrent=concurrent, backend=backend)


def manager() -> JobManager:
    return get_manager(str(runs_dir().resolve()))


def store() -> RunStore:
    return manager().store
