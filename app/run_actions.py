"""Who started the shown run, and renaming or deleting it (its owner or an instructor; the library checks).

The run id stays the key everywhere; a new name shows in every picker, legend and run card at the next render.
Deleting asks first in a dialog; a queued run is cancelled and deleted, a training run must be stopped first.
"""

from __future__ import annotations

import streamlit as st

from medcls.runs.permissions import PermissionDenied
from medcls.runs.store import RunNotFoundError
from medcls.runs.summary import RunSummary

from .identity import identity, manage_refusal, owner_line
from .manager import manager
from .text import escape_markdown, shown

__all__ = ["run_actions", "NOTICE_KEY"]

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
