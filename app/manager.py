"""The one job manager for all users and tabs (the "cached background trainer").

``st.cache_resource`` gives every session the same :class:`medcls.jobs.manager.JobManager`,
configured by the library's settings (``JobManager.from_settings``). The manager never
calls Streamlit from its threads or worker processes; pages read run state from the
run store on disk. When the cache is cleared, the old manager stops scheduling but
leaves running workers alone, and the new manager picks them up from the store.
"""

from __future__ import annotations

import streamlit as st

from medcls.jobs.manager import JobManager
from medcls.runs.store import RunStore
from medcls.settings import runs_dir


def _release(manager: JobManager) -> None:
    manager.shutdown(kill=False)


@st.cache_resource(show_spinner=False, on_release=_release)
def get_manager(root: str) -> JobManager:
    return JobManager.from_settings(RunStore(root))


def manager() -> JobManager:
    return get_manager(str(runs_dir().resolve()))


def store() -> RunStore:
    return manager().store
