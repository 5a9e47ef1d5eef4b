"""Who started the shown run, renaming, deleting or stopping runs (their owner or an instructor; the library checks).

The run id stays the key everywhere; a new name shows in every picker, legend and run card at the next render.
Deleting asks first in a dialog; a queued run is cancelled and deleted, a training run must be stopped first.
"""

from __future__ import annotations

from typing import Callable, TypeVar

import streamlit as st

from medcls.runs.permissions import PermissionDenied, QueueLimitError
from medcls.runs.store import RunNotFoundError
from medcls.runs.summary import RunSummary

from .identity import identity, manage_refusal, owner_line
from .manager import manager
from .model_summary import stop_timing
from .text import escape_markdown, shown

__all__ = ["run_actions", "stop_button", "queue_all_or_none", "NOTICE_KEY"]

T = TypeVar("T")

NOTICE_KEY = "run_action_notice"  # a message for the next page render (after a rename or a delete)


def run_actions(summary: RunSummary, picker_key: str) -> None:
    """The owner line, and Rename / Delete for the run a page shows (``picker_key``: the page's run picker)."""
    refusal = manage_refusal(summary.owner, summary.owner_name)
    st.caption(owner_line(summary) + (f" · 🔒 {refusal}" if refusal else ""))
    rename_col, delete_col, _ = st.columns([1, 1, 1])
    with rename_col.popover("✏️ Rename", disabled=refusal is not None, help=refusal, width="stretch",
                            key=f"rename_popover_{summary.run_id}"):
        key = f"rename_{summary.run_id}"
        st.text_input("New name", value=summary.name, key=key, max_chars=80)
        st.button("Save name", key=f"rename_save_{summary.run_id}", type="primary", on_click=_rename,
                  args=(summary.run_id, key, picker_key))
    why_not = refusal or ("Stop it first: a training run cannot be deleted." if summary.state == "running" else None)
    if delete_col.button("🗑️ Delete…", key=f"delete_{summary.run_id}", disabled=why_not is not None, help=why_not,
                         width="stretch"):
        _confirm_delete(summary)


def _rename(run_id: str, key: str, picker_key: str) -> None:
    try:
        name = manager().rename(run_id, st.session_state.get(key, ""), by=identity())
    except (PermissionDenied, ValueError, RunNotFoundError) as exc:
        st.session_state[NOTICE_KEY] = ("error", str(exc))
    else:
        st.session_state[picker_key] = run_id  # keep showing it under its new name
        st.session_state[NOTICE_KEY] = ("success", f"Renamed to “{name}”.")


@st.dialog("Delete this run?")
def _confirm_delete(summary: RunSummary) -> None:
    st.markdown(f"**{escape_markdown(summary.name)}**")
    st.write("Its weights, training history, test results and run card are removed for everyone. This cannot be "
             "undone." + (" It is waiting in the queue: it is cancelled first." if summary.state == "queued" else ""))
    yes, no = st.columns(2)
    if yes.button("Delete it", type="primary", key="delete_confirm", width="stretch"):
        try:
            manager().delete(summary.run_id, by=identity())
        except (PermissionDenied, ValueError) as exc:
            st.error(shown(exc))
            return
        except RunNotFoundError:
            pass  # someone else deleted it meanwhile: the result is the same
        st.session_state[NOTICE_KEY] = ("success", f"Deleted “{summary.name}”.")
        st.rerun()
    if no.button("Keep it", key="delete_cancel", width="stretch"):
        st.rerun()


def show_notice() -> None:
    """The message a rename or a delete left for this render."""
    notice = st.session_state.pop(NOTICE_KEY, None)
    if notice:
        kind, text = notice
        (st.success if kind == "success" else st.error)(shown(text))


def stop_button(run_ids: list[str], key: str, label: str = "⏹ Stop the unfinished runs") -> bool:
    """Stop for queued or training runs (``run_ids``: those unfinished when this page run began); True in the page
    run of a click that stopped them, which should then not time options (:func:`stop_timing`).

    Draw it with the page, never inside a fragment that redraws itself: a click on a fragment's button reruns
    only the fragment, and that rerun waits for a page run still busy timing the options (Stop took effect
    10 s after the click while the Train page timed new options beside a run), while a page rerun starts at
    once. The fragment redraws the page once its runs have ended, which takes the button away. Its label has no
    count of runs for the same reason: the button is not redrawn while they end one by one."""
    store = manager().store
    try:
        metas = [store.meta(run_id) for run_id in run_ids]
    except (RunNotFoundError, FileNotFoundError):
        return False  # deleted meanwhile: the page's next redraw says so
    refusal = next((why for m in metas if (why := manage_refusal(m.owner, m.owner_name))), None)
    one = len(run_ids) == 1
    if not st.button(label, key=key, disabled=refusal is not None,
                     help=refusal or ("Ends the run after the current batch. " if one else
                                      "Cancels the runs still queued and ends the one training after its current "
                                      "batch. ") + "The checkpoint so far is kept and tested."):
        return False
    try:
        for run_id in run_ids:
            manager().stop(run_id, by=identity())
    except PermissionDenied as exc:  # a run changed hands meanwhile (an instructor role ended)
        st.error(shown(exc))
        return False
    # A probe still timing options beside a run that is ending (in the background: app.model_summary) would take CPU
    # from it while it stops, and time a machine about to be free.
    stop_timing()
    st.toast("Stopping the run…" if one else "Stopping the runs…")
    return True


def queue_all_or_none(count: int, submit: Callable[[], T], refusals: tuple[type[Exception], ...]) -> T | None:
    """Queue a lesson's or a sweep's ``count`` runs with ``submit`` if this person's queue has room for all of them;
    what ``submit`` returned, or None after showing why nothing was queued (``refusals``: the errors it raises for
    a group it cannot queue)."""
    try:
        manager().check_queue_room(identity(), adding=count)
        queued = submit()
    except (*refusals, QueueLimitError) as exc:
        st.error(shown(exc))
        return None
    stop_timing()  # a probe of this page's earlier redraw still running would slow the first run
    return queued
