"""What stands between a visitor and the server: who may reach it, and errors shown as messages.

- :func:`apply_exposure`: the app tells the library which address it listens on. Anything but loopback
  makes the server *exposed* (see :mod:`medcls.settings`): datasets then come only from uploads and the
  configured roots, and messages name folders by their setting instead of their full server path.
- :func:`page_errors` / :func:`guarded`: whatever a page or fragment raises is shown as a clear message
  (a run deleted while the page was drawn, a damaged file, anything unexpected), never as a traceback or
  Streamlit's redacted error box; the details go to the server log. With ``MEDCLS_DEBUG=1`` (development
  and tests) an unexpected error is raised after the message, so nothing is hidden there.
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

import streamlit as st

from medcls.atomic import DiskFullError, disk_full_message, is_disk_full
from medcls.runs.records import RecordError
from medcls.runs.store import RunNotFoundError
from medcls.settings import debug, mark_exposed, runs_dir

from .text import shown

__all__ = ["apply_exposure", "page_errors", "guarded", "error_message"]

log = logging.getLogger("medcls.app")
F = TypeVar("F", bound=Callable)


def apply_exposure() -> bool:
    """Mark the server exposed when it listens beyond this machine; True when it is."""
    return mark_exposed(st.get_option("server.address"))


def error_message(exc: BaseException) -> str:
    """What went wrong, for the person at the page (Markdown-safe, server paths hidden when exposed)."""
    if isinstance(exc, RunNotFoundError):
        return (f"{shown(exc)} It was probably deleted while this page was drawn: reload the page to see the runs "
                "that are there now.")
    if isinstance(exc, RecordError):
        return f"A run's files are damaged: {shown(exc)} Other runs are not affected."
    if isinstance(exc, DiskFullError):
        return shown(exc)
    if is_disk_full(exc):
        return shown(disk_full_message(runs_dir()))
    return (f"This part of the page could not be drawn ({shown(type(exc).__name__)}: {shown(exc)}). Other pages "
            "and every run are unaffected; reload the page to try again.")


@contextmanager
def page_errors() -> Iterator[None]:
    """Show an exception raised inside as a message (and log it) instead of Streamlit's error box."""
    try:
        yield
    except Exception as exc:  # st.stop()/st.rerun() are not Exceptions, so they pass through
        expected = isinstance(exc, (RunNotFoundError, RecordError, DiskFullError))  # faults, not bugs
        log.log(logging.WARNING if expected else logging.ERROR, "page error: %s", exc, exc_info=not expected)
        (st.info if isinstance(exc, RunNotFoundError) else st.error)(error_message(exc))
        if debug() and not expected:
            raise


def guarded(fragment: F) -> F:
    """The same for a fragment (its reruns do not pass through the page's own guard)."""

    @functools.wraps(fragment)
    def wrapper(*args, **kwargs):
        with page_errors():
            return fragment(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
