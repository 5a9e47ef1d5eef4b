"""The live view of one run: status, progress, curves, stop. Reads only the run store."""

from __future__ import annotations

import time

import streamlit as st

from medcls.figures import history_figure, recall_figure
from medcls.runs import ACTIVE_STATES, RunNotFoundError

from .manager import manager

STATE_ICONS = {"queued": "⏳", "running": "🏃", "finished": "✅", "failed": "❌", "cancelled": "⏹️",
               "interrupted": "⚠️"}


def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(seconds)
    return f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def default_run(run_ids: list[str]) -> str | None:
    """The run a fresh page shows: the newest active run, else the newest run."""
    store = manager().store
    for run_id in run_ids:
        if store.raw_status(run_id).get("state") in ACTIVE_STATES:
            return run_id
    return run_ids[0] if run_ids else None


def live_panel(run_id: str) -> None:
    """Status, progress and curves; refreshes itself every second while the run is active."""
    store = manager().store
    try:
        state = store.status(run_id).get("state")
    except (RunNotFoundError, FileNotFoundError):
        st.warning(f"Run {run_id} no longer exists (its folder was deleted).")
        return
    active = state in ACTIVE_STATES

    @st.fragment(run_every=1.0 if active else None)
    def panel() -> None:
        try:
            status = store.status(run_id)
            history = store.history(run_id)
            progress = store.progress(run_id)
            cfg = store.config(run_id)
        except (RunNotFoundError, FileNotFoundError):
            st.warning(f"Run {run_id} no longer exists (its folder was deleted).")
            return
        now_state = status.get("state")
        if active and now_state not in ACTIVE_STATES:
            st.rerun()  # the run ended: redraw the page once, without the timer
        _status_line(run_id, status, progress)
        if now_state in ACTIVE_STATES:
            if st.button("⏹ Stop this run", key=f"stop_{run_id}", help="Ends the run after the current batch. "
                         "The best checkpoint so far is kept."):
                manager().stop(run_id)
                st.toast(f"Stopping {run_id}…")
        _numbers(history, progress, cfg.epochs, now_state)
        if history:
            st.plotly_chart(history_figure(history), key=f"hist_{run_id}", width="stretch")
            focus = (store.read_json(run_id, "model.json", {}) or {}).get("focus_class", "")
            st.plotly_chart(recall_figure(history, focus), key=f"recall_{run_id}", width="stretch")
        elif now_state in ACTIVE_STATES:
            st.caption("Curves appear after the first epoch.")

    panel()


def _status_line(run_id: str, status: dict, progress: dict) -> None:
    state = status.get("state")
    icon = STATE_ICONS.get(state, "")
    if state == "queued":
        position = manager().queue_position(run_id)
        st.info(f"{icon} Queued" + (f" — position {position} in the queue" if position else "") +
                ". It starts when a training slot is free.")
    elif state == "running":
        if progress.get("phase") == "preparing":
            st.progress(float(progress.get("prepare_fraction", 0.0)),
                        text=f"{icon} {progress.get('message', 'Preparing')}…")
        else:
            text = (f"{icon} Epoch {progress.get('epoch', '?')}/{progress.get('epochs', '?')} · "
                    f"{progress.get('phase', 'train')} batch {progress.get('batch', '?')}/{progress.get('batches', '?')}"
                    f" · {progress.get('images_per_s', 0):.0f} images/s · {_fmt_seconds(progress.get('eta_s'))} left")
            st.progress(min(1.0, float(progress.get("fraction", 0.0))), text=text)
    elif state == "finished":
        st.success(f"{icon} Finished. Best epoch: {status.get('best_epoch', '?')}"
                   + (" (stopped early)" if status.get("stopped_early") else "") + ".")
    elif state == "failed":
        st.error(f"{icon} Failed: {status.get('error', 'unknown error')}")
    elif state == "cancelled":
        st.warning(f"{icon} Cancelled. {status.get('error', '')}")
    elif state == "interrupted":
        st.warning(f"{icon} Interrupted. {status.get('error', '')}")


def _numbers(history: list[dict], progress: dict, epochs: int, state: str) -> None:
    cols = st.columns(4)
    last = history[-1] if history else {}
    best = max((h for h in history), key=lambda h: h.get("score", -1), default={})
    cols[0].metric("Epochs done", f"{len(history)}/{epochs}")
    cols[1].metric("Best validation score", f"{best.get('score', 0):.3f}" if best else "–",
                   help="The score chosen under 'Pick the best epoch by'.")
    speed = progress.get("images_per_s") if state == "running" else last.get("images_per_s")
    cols[2].metric("Images per second", f"{speed:.0f}" if speed else "–")
    age = time.time() - progress.get("time", time.time())
    eta = progress.get("eta_s") if state == "running" else None
    cols[3].metric("Time remaining", _fmt_seconds(max(0.0, eta - age)) if eta is not None else "–")
