"""The live "what will this model cost" panel under the training form: size, memory and measured time.

The time comes from :mod:`medcls.training.estimate`: a probe process set up like a training worker times
the configured steps on this machine now; the library scales them to this dataset. This only renders.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from functools import partial

import streamlit as st

from medcls.config import TrainConfig
from medcls.data import DatasetSpec
from medcls.figures.training import parameter_bar_figure
from medcls.jobs.manager import JobManager
from medcls.models.summary import summarize
from medcls.runs.records import member_word
from medcls.training.estimate import (
    Costs,
    EstimateError,
    ProbeStopped,
    RunEstimate,
    estimate_group,
    estimate_run,
    measure_costs,
    probe_config,
)
from medcls.training.hardware import is_quiet, usable_cores
from medcls.training.pipeline import build_model
from medcls.training.probe_board import ProbeBoard, ProbePending
from medcls.training.quiet_timings import recall_quiet, remember_quiet

from .manager import manager
from .safety import guarded
from .text import escape_markdown

STANDBY_WAIT_S = 20.0  # at most this long for a warming training process before timing (it takes about 5-8 s)
PROBE_TTL_S = 600  # the machine's load changes: measure again after ten minutes
# A timing taken while other programs kept cores busy (a run just stopped and testing, a browser drawing) is true
# only while they do: after a minute it is taken again rather than shown to everyone as the machine's speed.
LOUD_TTL_S = 60.0
PROBES_KEY = "_timing_probes"  # session state: the stop signals of this session's probes still running
ASKER_KEY = "_timing_asker"  # session state: who this session is to the probe board (it waits for one probe)
TIMING_POLL_S = 1.0  # how often a page looks whether a probe beside a training run has answered


@st.cache_data(show_spinner=False, max_entries=64)
def _summary(cfg_json: str, num_classes: int, channels: int) -> dict:
    cfg = TrainConfig.from_json(cfg_json)
    s = summarize(build_model(cfg, num_classes, channels, weights="random"), cfg.optimizer)
    return {"parameters": s.parameters, "trainable": s.trainable, "memory_mb": s.weights_mb + s.optimizer_mb,
            "layers": s.layers, "largest": s.largest_layer, "largest_share": s.largest_share,
            "largest_is_linear": s.largest_is_linear}


def _probe(probe_json: str, jobs: JobManager, stop: threading.Event) -> dict:
    """Time ``probe_json`` in a probe process once ``jobs``' warming training process is ready (``stop`` ends it).
    No Streamlit here: this also runs in :func:`_beside_runs`' thread."""
    # A training process warming up (the app has just opened, or a run has just ended) would make the probe
    # choose one thread: a lesson on BUSI was estimated at 7.8-8.0 min that way, and trained in 5.8 min.
    jobs.await_warm_worker(STANDBY_WAIT_S, should_stop=stop.is_set)
    if stop.is_set():  # Start was pressed meanwhile: no probe process at all
        raise ProbeStopped("The timing probe was stopped: a run started.")
    cfg = TrainConfig.from_json(probe_json)
    costs = measure_costs(cfg, stop=stop)
    remember_quiet(cfg, costs)  # kept on disk if it had every core: for when a run trains
    return costs.to_dict()


# No spinner: its animation, drawn by a browser on this machine, slowed the probe's two threads 1.4-1.7x (a lesson
# estimated at 15-17 min trained in 11.3), so the page shows a still caption while timing (_measured_costs).
@st.cache_data(show_spinner=False, max_entries=64, ttl=PROBE_TTL_S)
def _costs(probe_json: str, _stop: threading.Event) -> dict:
    """The probe's answer on a machine where no run trains, and when it was taken ('at'), cached for every
    session; the page waits for it."""
    return {"costs": _probe(probe_json, manager(), _stop), "at": time.time()}


@st.cache_resource(show_spinner=False, on_release=ProbeBoard.shutdown)
def _beside_runs() -> ProbeBoard[dict]:
    """Probes beside a training run, answered in the background: a page run that waited for one (about 10 s)
    would hold up every redraw of the page, the run's own progress included. Shared by all sessions; a timing
    taken beside a run is kept apart from ``_costs`` so that it is not shown as the machine's speed once the run
    has ended."""
    return ProbeBoard(ttl_s=PROBE_TTL_S)


def _measured_costs(cfg: TrainConfig, spec: DatasetSpec, busy: bool) -> tuple[Costs, float | None]:
    """The probe's answer for ``cfg`` (:func:`stop_timing` can stop the probe meanwhile), and when it was
    measured (None: measured now, beside the run training).

    While a run trains (``busy``), a probe would slow it and time only the core it leaves, so a measurement from
    a quiet machine is used instead when there is one. Without one, the options are timed beside the run in the
    background, and :class:`ProbePending` is raised until the answer is ready (see :func:`render_timing_wait`).
    """
    probe_json = probe_config(cfg).to_json()
    probes = st.session_state.setdefault(PROBES_KEY, set())
    if busy:
        if (quiet := recall_quiet(cfg, spec)) is not None:
            return quiet.costs, quiet.measured_at
        try:
            asker = st.session_state.setdefault(ASKER_KEY, uuid.uuid4().hex)
            answer = _beside_runs().ask(probe_json, partial(_probe, probe_json, manager()), asker=asker)
            return Costs.from_dict(answer), None
        except ProbePending as pending:
            probes.add(pending.stop)  # so that Start ends it
            raise
    _beside_runs().stop_all()  # the run has ended: a probe beside it would only slow this one
    stop = threading.Event()
    probes.add(stop)
    timing = st.empty()
    timing.caption("⏱️ Timing a few training steps on this machine, as a training run would…")
    try:
        answer = _costs(probe_json, stop)
        if not is_quiet(answer["costs"]["others_cores"]) and time.time() - answer["at"] > LOUD_TTL_S:
            _costs.clear(probe_json, stop)
            answer = _costs(probe_json, stop)
        return Costs.from_dict(answer["costs"]), answer["at"]
    finally:
        probes.discard(stop)
        timing.empty()


@st.fragment(run_every=TIMING_POLL_S)
@guarded
def render_timing_wait(pending: ProbePending, what: str) -> None:
    """A still caption while ``pending`` times ``what`` beside a training run; the page redraws with the answer."""
    if not _beside_runs().pending(pending.key):
        st.rerun()  # answered (or failed): the page draws the estimate, or says why there is none
    st.caption(f"⏱️ Timing {what} beside the run training, in the background, so that the page does not wait "
               "for it: the estimate appears here once they are timed." + _queue_words(pending))


def _queue_words(pending: ProbePending) -> str:
    """' 2 other option sets are timed first, one at a time (the last took 12 s).' while others are ahead."""
    queue = _beside_runs().queue(pending.key)
    if not queue.ahead:
        return ""
    took = f" (the last took {queue.last_took_s:.0f} s)" if queue.last_took_s is not None else ""
    sets = "option set is" if queue.ahead == 1 else "option sets are"
    return f" {queue.ahead} other {sets} timed first, one at a time{took}."


def _measured_words(costs: Costs, measured_at: float | None, busy: bool) -> str:
    """How the time was measured, and what that means while a run trains."""
    threads = f"{costs.threads} thread{'s' if costs.threads != 1 else ''}"
    how = f"as a training run would run ({threads}, {costs.precision}, lowered priority)"
    if busy and measured_at is not None:
        return (f"Measured on this machine {_ago(measured_at)} while nothing trained, {how}: a run is training "
                "now, and timing beside it would slow it and time only the core it leaves, while each run gets the "
                "whole machine when its turn comes.")
    if busy and costs.threads < usable_cores():
        return (f"Measured now on this machine beside the run training, {how}: when its turn comes a run gets "
                f"all {usable_cores()} cores, so it will likely be faster than this.")
    when = "now" if measured_at is None else _ago(measured_at)
    if not is_quiet(costs.others_cores):
        return (f"Measured {when} on this machine, {how}, while other programs kept about {costs.others_cores:.1f} "
                "of its cores busy: on a quiet machine a run will likely be faster than this.")
    return f"Measured {when} on this machine, {how}."


def _ago(when: float) -> str:
    """'just now', '12 min ago', '3 h ago', '2 days ago'."""
    minutes = max(0.0, time.time() - when) / 60
    if minutes < 1:
        return "just now"
    if minutes < 90:
        return f"{minutes:.0f} min ago"
    return f"{minutes / 60:.0f} h ago" if minutes < 48 * 60 else f"{minutes / 1440:.0f} days ago"


def stop_timing() -> None:
    """Stop this session's timing probes still running: a run it has just started needs the CPU.

    A click on Start reruns the page while the earlier run of the page script may still wait for its probe
    (several seconds on a fresh machine); that probe would otherwise slow the new run's first epoch.
    """
    probes = st.session_state.get(PROBES_KEY, set())
    for stop in list(probes):
        stop.set()
    probes.clear()  # a probe stopped once needs no second signal


def render_skipped_timing(pressed: str = "Start") -> None:
    """What the cost panel says in the page run that started (``pressed`` 'Start') or stopped ('Stop') a run,
    instead of timing the options again."""
    if pressed == "Stop":
        st.caption("⏱️ Not timed now: you have just pressed Stop. The options are timed again when the page redraws "
                   "after the run has ended, with the machine free.")
        return
    st.caption("⏱️ Not timed now: you have just pressed Start, and timing these options would take CPU from "
               "training. A run's time left is under **Runs**; the options are timed again when you change one or "
               "when the page redraws after the run.")


def render_group_estimate(configs: Sequence[TrainConfig], labels: Sequence[str], spec: DatasetSpec, group: str, *,
                          just_queued: bool = False, just_stopped: bool = False) -> None:
    """How long a lesson's or a sweep's runs take one after another, measured like the Train page's estimate
    (one probe per distinct cost, cached for every session). Not in the page run that queued runs (they need the
    CPU now) or stopped them (the machine is about to be free: timed when the page redraws after they end)."""
    if just_queued:
        st.caption(f"⏱️ Not timed now: the runs of this {group} have just been queued and need the CPU. Each run's "
                   "time left is under **Train** once it has finished an epoch.")
        return
    if just_stopped:
        st.caption(f"⏱️ Not timed now: you have just pressed Stop. This {group} is timed again when the page redraws "
                   "after the runs have ended, with the machine free.")
        return
    when: list[float | None] = []
    busy = bool(manager().running())

    def costs_for(cfg: TrainConfig) -> Costs:
        costs, measured_at = _measured_costs(cfg, spec, busy)
        when.append(measured_at)
        return costs

    try:
        estimate = estimate_group(configs, labels, spec, costs_for, warm_start=manager().worker_ready())
    except ProbePending as pending:
        render_timing_wait(pending, f"the {group}'s runs")
        return
    except ProbeStopped:
        return  # a run started from this session meanwhile: the next redraw times them again
    except (EstimateError, ValueError, RuntimeError) as exc:
        st.warning(f"The time of this {group}'s runs could not be measured: {exc}")
        return
    # "Measured earlier while nothing trained" only when every run's timing was; else the fewest threads timed.
    earlier = min(when) if all(t is not None for t in when) else None
    fewest = min((r.costs for r in estimate.runs), key=lambda c: c.threads)
    # Two probes beside a run each get what the run leaves at their moment: on BUSI a sweep's batch 16 read 1.8 times
    # batch 32's time that way, against 1.0-1.2 times on the free machine.
    beside = busy and any(t is None for t in when)  # ``when``: one entry per distinct timing
    rough = (f" The {len(when)} timings each got what the run left at that moment, so the differences between "
             "these runs' times are rough too." if beside and len(when) > 1 else "")
    st.caption(f"⏱️ **The {group}'s {len(configs)} runs, one after another: {estimate.total_words()}** "
               f"({escape_markdown(estimate.run_words())}). {_measured_words(fewest, earlier, busy)}{rough} "
               "Runs already queued go first, and other programs on the machine change it.")


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def _whole_run(estimate: RunEstimate) -> str:
    """'1.7–3.2 min', '40–75 s', '≈ 51 s': short enough for a metric in a narrow column."""
    low, high = estimate.total_s(estimate.earliest), estimate.total_s()
    if not estimate.shows_range():
        return _minutes(high)
    if high < 90:
        return f"{low:.0f}–{high:.0f} s"
    if low < 90:
        return f"{low:.0f} s–{high / 60:.1f} min"
    return f"{low / 60:.1f}–{high / 60:.1f} min"


def render_model_summary(cfg: TrainConfig, spec: DatasetSpec) -> None:
    """Parameters, memory, a per-layer chart and the measured time per epoch and per run for ``cfg`` on ``spec``."""
    try:
        busy = bool(manager().running())
        costs, measured_at = _measured_costs(cfg, spec, busy)
        info = _summary(cfg.to_json(), len(spec.classes), costs.channels)
    except ProbePending as pending:
        render_timing_wait(pending, "these options")
        return
    except ProbeStopped:  # a run started meanwhile (this session's Start): that page run shows the skipped note
        render_skipped_timing()
        return
    except (EstimateError, ValueError, RuntimeError) as exc:
        st.error(f"This model cannot be built or timed with these settings: {exc}")
        return
    estimate = estimate_run(cfg, spec, costs, warm_start=manager().worker_ready())
    c1, c2 = st.columns(2)
    c1.metric("Parameters", f"{info['parameters'] / 1e6:.2f} M", help=f"{info['trainable']:,} of them trainable.")
    c2.metric("Memory", f"{info['memory_mb']:.0f} MB",
              help="Weights, their gradients and the optimizer's running averages, in float32.")
    c3, c4 = st.columns([1, 2])
    c3.metric("Per epoch", f"{estimate.epoch_s:.1f} s", help=f"{estimate.epoch_words()}.")
    features = (f", {estimate.features_s:.0f} s to run the images through the frozen backbone"
                f"{' for each ' + member_word(estimate.bagged, plural=True)[:-1] if estimate.folds else ''}"
                if estimate.features_s else "")
    start = "read the data (a training process is ready and waiting)" if estimate.warm_start else \
        "start a training process and read the data"
    setup = "under a second" if estimate.setup_s < 0.5 else f"about {estimate.setup_s:.0f} s"
    c4.metric("Whole run", _whole_run(estimate), help=f"{estimate.total_words()}, with {setup} to {start}"
              f"{features} and about {estimate.finish_s:.0f} s to test.")
    st.caption(f"{escape_markdown(estimate.epoch_words())} per epoch; {estimate.total_words()}. "
               f"{_measured_words(costs, measured_at, busy)} Other programs on the machine change it; once the run has "
               "finished an epoch, its time left comes from its own epochs.")
    if estimate.note:
        st.info(escape_markdown(estimate.note), icon=":material/info:")
    if estimate.limit_note:  # why "drawn" above is fewer images than balancing the classes would draw
        st.caption(f"ℹ️ {escape_markdown(estimate.limit_note)}")
    if estimate.averaging_note:  # a decay set higher than the run's steps reach: it would change nothing
        st.caption(f"ℹ️ {escape_markdown(estimate.averaging_note)}")
    name, count = info["largest"]
    if info["largest_share"] > 0.5 and info["largest_is_linear"]:
        st.warning(f"**{info['largest_share']:.0%} of all parameters sit in one layer ({name}, {count:,}).** "
                   "A flatten head over a large feature map is what makes the seed's networks big and slow; "
                   "global average pooling (classifier head: gap) or more conv blocks shrink it.")
    # A key keeps the panel open (or closed) while options change and the page redraws.
    with st.expander("Parameters per layer", key="param_layers_open"):
        st.plotly_chart(parameter_bar_figure(info["layers"]), key="param_layers", width="stretch")
