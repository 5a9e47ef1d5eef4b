"""Lessons: ready-made experiments from the coursework, queued on the current dataset and concluded in words."""

import pandas as pd
import streamlit as st

from app.dataset import current_data_config, dataset_caption, load_current_dataset, typical_image_side
from app.identity import run_meta, visible_runs
from app.live import fmt_seconds
from app.manager import manager
from app.model_summary import render_group_estimate
from app.run_actions import queue_all_or_none, stop_button
from app.safety import guarded
from app.text import escape_markdown, shown
from medcls.config import ConfigError, format_value, label
from medcls.data.classes import resolve_focus_class
from medcls.experiments.conclusions import metric_words
from medcls.experiments.lessons import (
    LessonError,
    lesson_conclusion,
    lesson_configs,
    lesson_data_note,
    list_queued,
    load_lessons,
    submit_lesson,
)
from medcls.figures.lessons import lesson_figure
from medcls.runs.naming import dataset_name
from medcls.training.autoplan import group_models_words, plan_for, pool_counts, train_alike

OUTCOME_WORDS = {"finished": "✅ finished", "pending": "⏳ waiting or training", "stopped": "⏹️ stopped",
                 "failed": "❌ failed", "missing": "🗑️ deleted"}

st.title("🎓 Lessons")
st.caption("Ready-made experiments from the coursework this app grew out of. Each lesson trains a few runs that "
           "differ in one thing, on the dataset chosen in the sidebar, shows them side by side as they finish and "
           "ends with what the results show, and how sure they are. Teachers add lessons in "
           "`medcls/experiments/lessons.toml`.")
try:
    lessons = {lesson.name: lesson for lesson in load_lessons()}
except LessonError as exc:
    st.error(shown(exc))
    st.stop()
data_cfg = current_data_config()
spec = load_current_dataset(data_cfg)
if spec is not None:
    st.caption(dataset_caption(spec))

name = st.selectbox("Lesson", list(lessons), format_func=lambda n: lessons[n].title, key="lesson_pick")
lesson = lessons[name]
st.markdown(f"**The question.** {escape_markdown(lesson.question)}")
side = typical_image_side(data_cfg) if spec is not None else None
if spec is not None and (note := lesson_data_note(lesson, spec, side)):
    st.info(escape_markdown(note), icon="⚖️")
try:
    configs = lesson_configs(lesson, data_cfg)
except LessonError as exc:
    st.error(shown(exc))
    st.stop()
shared = ", ".join(f"{label(k)} {format_value(v, k)}" for k, v in lesson.base.items())
counts = pool_counts(spec) if spec is not None else []
configs, alike = train_alike(configs, counts, side) if counts else (configs, None)
group_words = group_models_words(plan_for(configs[0], counts, side), "lesson") if counts else None
ensemble = escape_markdown(group_words or alike or "")
try:  # the class whose recall these runs track on these images (e.g. pneumonia on chest X-rays)
    focus = resolve_focus_class(spec.classes, configs[0].focus_class, spec.counts()["train"]) if spec else ""
except ConfigError:
    focus = ""  # a focus class these images lack: each run says so when it starts
st.caption(f"Every run: {escape_markdown(shared)}; everything else as the defaults. Read off: "
           f"**{escape_markdown(metric_words(lesson.metric, focus))}** on the test images. {ensemble}")
st.dataframe(pd.DataFrame([{"run": r.label, **{label(k): format_value(v, k) for k, v in r.settings.items()}}
                           for r in lesson.runs]), hide_index=True, placeholder="–")
time_box = st.container()  # filled last (below): timing the runs takes seconds on a fresh machine
just_queued = False
if st.button(f"▶ Queue the {len(lesson.runs)} runs of this lesson", type="primary", disabled=spec is None,
             key="lesson_start"):
    queued = queue_all_or_none(len(lesson.runs), lambda: submit_lesson(
        manager().store, manager().submit, lesson, data_cfg, owner=run_meta(), pool_counts=counts, side=side),
        (LessonError,))
    if queued is not None:
        just_queued = True
        st.session_state["lesson_queued_pick"] = queued.lesson_id
        st.toast(f"Queued {len(queued.runs)} runs")


def fill_time_box(just_stopped: bool = False) -> None:
    """The lesson's time, drawn last: nothing above it waits for the timing probe."""
    if spec is not None:
        with time_box:
            render_group_estimate(configs, [r.label for r in lesson.runs], spec, "lesson", just_queued=just_queued,
                                  just_stopped=just_stopped)


st.subheader("Results")
store = manager().store
seen = {s.run_id for s in visible_runs(store.list())}  # "own runs only": the lessons with runs this person sees
queued_all = {q.lesson_id: q for q in list_queued(store, lesson.name) if any(e["run_id"] in seen for e in q.runs)}
if not queued_all:
    st.info("This lesson has not been run yet. Press **Queue** above; the runs train one after another.")
    fill_time_box()
    st.stop()
if st.session_state.get("lesson_queued_pick") not in queued_all:
    st.session_state["lesson_queued_pick"] = next(iter(queued_all))


def when_and_where(lesson_id: str) -> str:
    q = queued_all[lesson_id]
    return f"{q.created.replace('T', ' ')[:16]} · {dataset_name(q.dataset) if q.dataset else 'built-in data'}"


pick = st.selectbox("Which time this lesson was run", list(queued_all), key="lesson_queued_pick",
                    format_func=when_and_where, help="Newest first.")
queued = queued_all[pick]
results, _ = lesson_conclusion(store, queued, lesson)
waiting = [e["run_id"] for e, r in zip(queued.runs, results) if r.outcome == "pending"]
active = bool(waiting)


@st.fragment(run_every=2.0 if active else None)
@guarded
def lesson_results() -> None:
    results, conclusion = lesson_conclusion(store, queued, lesson)
    if active and not any(r.outcome == "pending" for r in results):
        st.rerun()  # every run ended: redraw once, without the timer
    words = conclusion.words
    rows = []
    ensembles = any(r.models > 1 for r in results)  # a small dataset trains fold or bagged models by default
    for r in results:
        row = {"run": r.label, "state": OUTCOME_WORDS.get(r.outcome, r.outcome),
               words: None if r.estimate is None else r.estimate,
               "95% interval": "–" if r.low is None else f"{r.low:.2f}–{r.high:.2f}",
               "test images": r.images or None}
        if ensembles:
            row["models"] = r.models
        if "parameters" in lesson.show:
            row["weights" + (" (each model)" if ensembles else "")] = r.parameters
        if "time" in lesson.show:
            row["training time"] = fmt_seconds(r.seconds)
        rows.append(row)
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch",
                 column_config={words: st.column_config.NumberColumn(format="%.2f"),
                                "test images": st.column_config.NumberColumn(format="%d"),
                                "weights": st.column_config.NumberColumn(format="localized"),
                                "weights (each model)": st.column_config.NumberColumn(format="localized")},
                 placeholder="–")
    st.plotly_chart(lesson_figure(results, words), key="lesson_figure", width="stretch")
    st.markdown("**What the results show**")
    box = st.success if conclusion.complete else st.info
    box("\n\n".join(escape_markdown(s) for s in [conclusion.status, *conclusion.sentences, conclusion.summary] if s))


lesson_results()
# Stop is drawn with the page, not in the results' fragment (see stop_button); no timing in the run it stopped.
fill_time_box(just_stopped=bool(waiting) and stop_button(waiting, "lesson_stop"))
st.caption("A lesson's runs are ordinary runs: watch one train on **Train**, and look deeper at the finished ones "
           "on **Compare runs** (confusion matrices, precision-recall, mistakes).")
