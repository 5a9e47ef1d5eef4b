"""Train: the options form, Start, and the live view of the current run."""

import streamlit as st

from app.dataset import current_data_config, dataset_caption, load_current_dataset, typical_image_side
from app.form import render_form
from app.identity import run_meta, visible_runs
from app.live import default_run, live_panel
from app.manager import manager
from app.model_summary import render_model_summary, render_skipped_timing, stop_timing
from app.run_actions import NOTICE_KEY, run_actions, show_notice
from app.text import escape_markdown, shown
from app.weights import weights_panel
from medcls.config import ConfigError
from medcls.data.classes import focus_note
from medcls.data.explore import enlargement_note, shrink_note, small_validation_note
from medcls.runs.naming import display_names
from medcls.runs.permissions import QueueLimitError
from medcls.training.autoplan import folds_for, pool_counts, resolve_image_size


def runs_column() -> bool:
    """The run picker and the live view of the chosen run; True in the page run of a click on Stop."""
    st.subheader("Runs")
    store = manager().store
    notice = NOTICE_KEY in st.session_state
    show_notice()
    summaries = {s.run_id: s for s in visible_runs(store.list())}
    run_ids = list(summaries)
    if not run_ids:
        st.info("No runs yet. Choose options on the left and press **Start training**.")
        return False
    picked = st.session_state.get("train_run_picker")
    if picked not in run_ids:
        if picked and not notice:  # the run this page showed was deleted (its folder removed) since the last refresh
            st.info(f"Run {picked} no longer exists (its folder was deleted); showing another run.")
        # A fresh tab or a refresh: show the run that is training now, else the newest.
        st.session_state["train_run_picker"] = default_run(run_ids)
    # Labels must not change while a run trains, or the picker would lose its selection.
    names = display_names(summaries.values())
    run_id = st.selectbox("Run to show", run_ids, key="train_run_picker", format_func=lambda r: names.get(r, r),
                          help="Newest first.")
    run_actions(summaries[run_id], "train_run_picker")
    return live_panel(run_id)


st.title("🏋️ Train")
data_cfg = current_data_config()
spec = load_current_dataset(data_cfg)

left, right = st.columns([1, 1], gap="large")
costs = None
with left:
    st.subheader("Options")
    if spec is not None:
        st.caption(dataset_caption(spec))
    about = st.container()  # the focus class is the form's (or the data's default): drawn once the form has run
    hint = st.container()  # what the chosen options do to these images, drawn once the form has given a config
    top = st.container()  # the Start button sits above the form, drawn once the form has given a config
    cfg, error = render_form(data_cfg)
    focus = ""
    if spec is not None:
        try:
            focus = focus_note(spec.classes, cfg.focus_class if cfg else "", spec.counts()["train"])
        except ConfigError as exc:  # a focus class these images lack: say so before Start, not when the run fails
            error, cfg = error or str(exc), None
    about.caption("Hover over **?** for what each option does; below the form, the time these options take is "
                  "measured on this machine before you start. The seed notebook cared most about **cancer "
                  f"recall**: missing a cancer is worse than a false alarm. {escape_markdown(focus)}")
    if error:  # beside the Start button it disables, not below the long form where nobody looks
        top.error(shown(error))
    elif spec is not None:
        side, counts = typical_image_side(data_cfg), pool_counts(spec)
        # What the run will train (Image size 0 is chosen from the data, as the run chooses it); Start sends the
        # form's own config, so the run's notes say the same.
        trained, chosen = resolve_image_size(cfg, counts, side)
        if chosen:
            hint.info(f"📐 {chosen}")
        elif not cfg.image_size:
            hint.caption(f"📐 *Image size* 0 trains these images at {trained.image_size} px (192 px only for a small "
                         "dataset of images at least 192 px on their shorter side, trained as an ensemble).")
        if note := enlargement_note(trained.image_size, side) or shrink_note(trained.image_size, side):
            hint.info(f"🔍 {note} (*Image size* is under *Images and augmentation*.)")
        if not (folds_for(trained, counts) or trained.bagged_models) and \
                (note := small_validation_note(spec, name=escape_markdown)):
            hint.warning(note)  # one model validates on the data's own split (bagged models on none)
        weights_panel(trained)
        st.markdown("**What this model costs**")
        costs = st.container()  # filled last (below): timing the options takes seconds on a fresh machine
    with top:
        start = st.button("▶ Start training", type="primary", disabled=cfg is None or spec is None,
                          key="start_training", width="stretch")
    started = False
    if start and cfg is not None:
        try:
            # Named after the size the run will choose ('… · 192 px'), which the page shows above.
            run_id = manager().submit(cfg, meta=run_meta(), name_from=trained)
        except QueueLimitError as exc:
            st.error(shown(exc))
        else:
            started = True
            stop_timing()  # a probe of this page's earlier redraw still running would slow the first epoch
            st.session_state["train_run_picker"] = run_id  # show the new run (the picker is drawn below)
            st.toast(f"Queued: {escape_markdown(manager().store.summary(run_id).name)}")


with right:
    stopped = runs_column()
# The time these options take, measured last: its probe runs for seconds on a fresh machine (a process that
# imports torch and trains a few steps), and the Start button above and the runs beside it must not wait for it.
# A click on Start while it runs reruns the page at once (the earlier redraw still waits for the probe): the run is
# queued above, stop_timing ends that probe, and this redraw does not start another.
if costs is not None:
    with costs:
        if started or stopped:
            render_skipped_timing("Start" if started else "Stop")
        else:
            render_model_summary(trained, spec)
