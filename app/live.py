"""The live view of one run: status, progress, curves, stop. Reads only the run store."""

from __future__ import annotations

import time

import streamlit as st

from medcls.analysis.copies import run_copies_sentence
from medcls.analysis.uncertainty import run_intervals, score_headline
from medcls.figures.training import history_figure, recall_figure, validated
from medcls.runs.lifecycle import FROM_THE_START
from medcls.runs.records import (
    ACTIVE_STATES,
    EpochRecord,
    Progress,
    RecordError,
    RunStatus,
    best_record,
    latest_fold,
    member_word,
)
from medcls.runs.store import RunNotFoundError

from .identity import identity, manage_refusal
from .manager import manager
from .model_summary import stop_timing
from .run_actions import stop_button
from .safety import guarded
from .text import shown

# How often the live panel redraws while its run trains. Every redraw is drawn by a browser that, in a classroom
# demo, runs on the same two cores as the training: with a redraw every second headless Chromium took 27% of a
# core in short slices and the built-in demo's epochs took 6.4-6.7 s (4.2-5.6 s with the browser closed); every
# two seconds, 15% and 4.8 s. An epoch of the demo lasts several seconds, so the panel still moves within each.
LIVE_REFRESH_S = 2.0

STATE_ICONS = {"queued": "⏳", "running": "🏃", "finished": "✅", "failed": "❌", "cancelled": "⏹️",
               "interrupted": "⚠️"}


def fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def default_run(run_ids: list[str]) -> str | None:
    """The run a fresh page shows: the newest active run, else the newest run."""
    store = manager().store
    for run_id in run_ids:
        if store.raw_status(run_id).state in ACTIVE_STATES:
            return run_id
    return run_ids[0] if run_ids else None


def live_panel(run_id: str) -> bool:
    """Status, progress and curves; refreshes itself every LIVE_REFRESH_S seconds while the run is active. True in
    the page run of a click on Stop (:func:`app.run_actions.stop_button`)."""
    store = manager().store
    try:
        active = store.status(run_id).active
    except (RunNotFoundError, FileNotFoundError):
        st.warning(f"Run {run_id} no longer exists (its folder was deleted).")
        return False

    @guarded
    def panel() -> None:
        try:
            status = store.status(run_id)
            history = store.history(run_id)
            progress = store.progress(run_id)
            cfg = store.trained_config(run_id)  # its ensemble as chosen for the data, once it has started
            model_record = store.model_record(run_id)
        except (RunNotFoundError, FileNotFoundError):
            st.warning(f"Run {run_id} no longer exists (its folder was deleted).")
            return
        except RecordError as exc:  # one damaged run shows as damaged; the page and other runs go on
            st.error(f"❌ This run's files are damaged: {shown(exc)}")
            return
        if active and not status.active:
            st.rerun()  # the run ended: redraw the page once, without the timer
        one_model, fold = latest_fold(history)  # an ensemble: its latest fold's (or bagged model's) epochs
        folds = store.planned_folds(run_id, fold, model_record, cfg)
        bagged = bool(cfg.bagged_models)
        word = member_word(bagged)
        _status_line(run_id, status, progress, history, cfg.keeps_last(), bagged)
        if status.state == "interrupted" and store.resumable(run_id, status):
            meta = store.meta(run_id)
            _resume_button(run_id, store.resume_point(run_id), bool(cfg.folds or cfg.bagged_models),
                           manage_refusal(meta.owner, meta.owner_name))
        if not status.active:
            _tested(run_id, _tested_models(fold, folds, bagged))
        _numbers(one_model, progress, cfg.epochs, status, f" ({word} {fold} of {folds})" if fold else "",
                 keeps_last=cfg.keeps_last())
        if history:
            part = f" · {word} {fold} of {folds}" if fold else ""
            focus = store.focus_class(run_id, model_record)
            curves, recall = _figures(run_id, one_model, focus, part)
            st.plotly_chart(curves, key=f"hist_{run_id}", width="stretch")
            if validated(one_model):
                st.plotly_chart(recall, key=f"recall_{run_id}", width="stretch")
            if fold and bagged:
                st.caption(f"Bagged models: each of the {folds} models learns from every training and validation "
                           "image with a seed of its own, starting again at epoch 1. None is validated, so the "
                           f"curves show training only, of bagged model {fold}, the latest; the test split is the "
                           "only check of the models together.")
            elif fold:
                st.caption(f"Cross-validation: each of the {folds} fold models learns from the other folds' images "
                           "and is validated on its own fold, starting again at epoch 1. The curves show fold "
                           f"{fold}, the latest; Compare runs shows every fold's score.")
        elif status.active:
            st.caption("Curves appear after the first epoch.")

    stopped = active and stop_button([run_id], f"stop_{run_id}", "⏹ Stop this run")  # with the page: see there
    # Only a training run's panel is a fragment (it redraws itself). A run that has ended is drawn with the page:
    # a click on a fragment's button (Resume) reruns only the fragment, and such a rerun waits for a page run that
    # is still busy (timing the options below, seconds after a run ends), while a page rerun starts at once.
    (st.fragment(panel, run_every=LIVE_REFRESH_S) if active else panel)()
    return stopped


def _figures(run_id: str, history: list[EpochRecord], focus: str, part: str) -> tuple:
    """The run's two figures, built again only when an epoch has been added. The panel redraws every few seconds
    while a run trains; building them each time was more than half of the server's CPU for a watched run
    (0.11 of a core against 0.05, measured with a browser watching the default run), CPU that a training
    worker on the same two cores then lacks."""
    key = (run_id, focus, part, len(history), repr(history[-1]))
    memo = st.session_state.setdefault("_live_figures", {})
    if key not in memo:
        memo.clear()  # one run's figures at a time
        memo[key] = (history_figure(history, title="Training curves" + part),
                     recall_figure(history, focus, title="Validation recall per class" + part))
    return memo[key]


def _status_line(run_id: str, status: RunStatus, progress: Progress, history: list[EpochRecord],
                 keeps_last: bool = False, bagged: bool = False) -> None:
    """``keeps_last``: the run keeps its last epoch's weights ('Checkpoint kept'), not its best validation epoch's;
    ``bagged``: its ensemble's models are bagged, not folds."""
    icon = STATE_ICONS.get(status.state, "")
    if status.damaged:
        st.error(f"❌ {shown(status.error)}")
    elif status.state == "queued" and manager().store.held(status):
        st.info(f"{icon} Queued in a command-line process (process {status.pid}), which trains it after the runs it "
                "queued before it. The app does not start it.")
    elif status.state == "queued":
        position = manager().queue_position(run_id)
        st.info(f"{icon} Queued" + (f" — position {position} in the queue" if position else "") +
                ". It starts when a training slot is free.")
    elif status.state == "running":
        if progress.phase == "preparing":
            st.progress(min(1.0, progress.prepare_fraction), text=f"{icon} {progress.message or 'Preparing'}…")
        else:
            fold = f"{member_word(bagged).capitalize()} {progress.fold} of {progress.folds} · " if progress.folds else ""
            phase = "training" if progress.phase == "train" else "validation"
            text = (f"{icon} {fold}Epoch {progress.epoch}/{progress.epochs} · {phase} batch "
                    f"{progress.batch}/{progress.batches} · {progress.images_per_s or 0:.0f} images/s")
            st.progress(min(1.0, progress.fraction), text=text)
    elif status.state == "finished" and history and history[-1].fold:  # an ensemble: one kept epoch per model
        bests = [best_record([h for h in history if h.fold == f]) for f in sorted({h.fold for h in history})]
        st.success(f"{icon} Finished: {len(bests)} {member_word(bagged, plural=True)}. "
                   + ("Each kept its last epoch: " if keeps_last or bagged else "Best epochs: ")
                   + f"{', '.join(str(b.epoch) if b else '–' for b in bests)}.")
    elif status.state == "finished" and history and not validated(history):
        st.success(f"{icon} Finished. No validation images to pick an epoch by: the last epoch's weights "
                   f"({history[-1].epoch}) are kept.")
    elif status.state == "finished" and history and keeps_last:
        st.success(f"{icon} Finished. The last epoch's weights ({history[-1].epoch}) are kept ('Checkpoint kept').")
    elif status.state == "finished":
        st.success(f"{icon} Finished. Best epoch: {status.best_epoch or '?'}"
                   + (" (stopped early)" if status.stopped_early else "") + ".")
    elif status.state == "failed":
        st.error(f"{icon} Failed: {shown(status.error or 'unknown error')}")
    elif status.state == "cancelled":
        st.warning(f"{icon} Cancelled. {shown(status.error)}")
    elif status.state == "interrupted":
        st.warning(f"{icon} Interrupted. {shown(status.error)}")
    for note in status.notes:
        st.caption(f"ℹ️ {shown(note)}")


def _tested_models(trained: int, planned: int, bagged: bool) -> str:
    """Which models of an ensemble run were tested together, as the start of its score sentence ('' for one model):
    ``trained`` of ``planned`` fold or bagged models (fewer when the run was stopped on request)."""
    if not trained:
        return ""
    words = member_word(bagged, plural=True)
    if trained >= planned:
        return f"The {words} together, as one ensemble. "
    if trained == 1:
        return f"{member_word(bagged).capitalize()} 1 of {planned} alone (the run was stopped before the others). "
    return f"The first {trained} of {planned} {words} together (the run was stopped before the rest). "


def _tested(run_id: str, who: str = "") -> None:
    """A tested run's scores on its test images, with their intervals, and the way to Compare for the rest;
    ``who``: which models were tested (:func:`_tested_models`; '' for one model)."""
    store = manager().store
    try:
        metrics = store.metrics(run_id)
        if metrics is None:  # not tested (failed, or cancelled before its first epoch)
            return
        headline = score_headline(run_intervals(store, run_id, metrics=metrics), metrics.focus_class)
    except (RunNotFoundError, FileNotFoundError, RecordError):
        return
    if not headline:
        return
    st.markdown(shown(who + headline))
    if copies := run_copies_sentence(store, run_id, metrics):
        st.caption(f"🪞 {shown(copies)}")
    st.page_link("app_pages/compare.py", label="Look closer: Compare runs", icon="📊")


def _resume_button(run_id: str, point: str, ensemble: bool, refusal: str | None) -> None:
    """One click continues an interrupted run where it stopped (it queues like a new run); ``point``: where, in
    words (``RunStore.resume_point``); ``ensemble``: the run trains fold or bagged models."""
    again = point == FROM_THE_START
    label = "▶ Start it again from the first epoch" if again else f"▶ Resume from {point}"
    why = ("It stopped before it saved anything to continue from, so it trains again from the first epoch." if again
           else "Keeps the models it had finished, as they were, and continues the one it was training after its "
                "last saved epoch (or starts the next one), with one continuous history." if ensemble else
           "Continues where it stopped: the same weights, optimizer, schedule and data order, with one continuous "
           "history.")
    if st.button(label, key=f"resume_{run_id}", type="primary", disabled=refusal is not None, help=refusal or why):
        try:
            manager().resume(run_id, by=identity())
        except (ValueError, PermissionError) as exc:
            st.error(shown(exc))
        else:
            stop_timing()  # as Start does: a probe of this page's earlier run would slow the resumed run
            st.toast("Resuming the run…")
            st.rerun()


def _numbers(history: list[EpochRecord], progress: Progress, epochs: int, status: RunStatus, part: str = "",
             keeps_last: bool = False) -> None:
    """``history``: one model's epochs (a cross-validation run's latest fold, named by ``part``); ``keeps_last``:
    the run keeps its last epoch's weights."""
    cols = [*st.columns(2), *st.columns(2)]  # two rows: labels and values stay whole in a narrow column
    last = history[-1] if history else None
    best = best_record(history)
    cols[0].metric("Epochs done" + part, f"{len(history)}/{epochs}")
    unvalidated = last is not None and not last.validated
    cols[1].metric(("Validation score" if unvalidated else "Validation score, last epoch" if keeps_last else
                    "Best validation score") + part,
                   f"{best.score:.3f}" if best and best.validated else "–",
                   help="No validation images, so there is no validation score." if unvalidated else
                   ("Validation macro-F1 of the last epoch, whose weights this run keeps ('Checkpoint kept')"
                    + (" in this fold" if part else "") + "; nothing was chosen by it, so it is a fair check."
                    if keeps_last else
                    "The score chosen under 'Pick the best epoch by', of the epoch whose weights are kept"
                    + (" in this fold" if part else "")
                    + "; on a tie, the epoch with the lower validation loss is kept."))
    running = status.state == "running"
    speed = progress.images_per_s if running else (last.images_per_s if last else None)
    cols[2].metric("Images per second", f"{speed:.0f}" if speed else "–")
    age = time.time() - (progress.time or time.time())
    eta = progress.eta_s if running and progress.phase != "preparing" else None
    cols[3].metric("Time left (at most)", fmt_seconds(max(0.0, eta - age)) if eta is not None else "–",
                   help="Until the last planned epoch, from the epochs measured so far."
                        + ("" if keeps_last else " Early stopping can end the run sooner."))
