"""AppTest: Stop buttons are drawn with the page, never inside the fragments that redraw runs by themselves.

A click on a fragment's button reruns only the fragment, and that rerun waits for a page run still busy timing the
options beside a training run: in Chromium, Stop took effect 10 s after the click. A page rerun starts at once.
"""

from __future__ import annotations

import functools

import pytest
import streamlit
from apphelpers import open_on_folder, set_tiny_options

import app.manager
from medcls.jobs.manager import JobManager
from medcls.runs.store import RunStore


@pytest.fixture
def queue_only(app_env, monkeypatch) -> JobManager:
    """The app's job manager, but one that only queues: the runs stay active while the pages are drawn."""
    manager = JobManager(RunStore(app_env / "runs"), start=False)
    monkeypatch.setattr(app.manager, "get_manager", lambda root: manager)
    return manager


@pytest.fixture
def buttons(monkeypatch) -> dict[str, bool]:
    """Each button's key drawn, and whether it was drawn inside a fragment (``st.fragment`` and ``st.button``
    wrapped for the pages' script runs, which run in this process)."""
    drawn: dict[str, bool] = {}
    depth = [0]
    real_fragment, real_button = streamlit.fragment, streamlit.button

    def fragment(func=None, **options):
        def wrap(body):
            @functools.wraps(body)
            def counted(*args, **kwargs):
                depth[0] += 1
                try:
                    return body(*args, **kwargs)
                finally:
                    depth[0] -= 1
            return real_fragment(counted, **options)
        return wrap(func) if func is not None else wrap

    def button(label, key=None, **kwargs):
        drawn[key] = depth[0] > 0
        return real_button(label, key=key, **kwargs)

    monkeypatch.setattr(streamlit, "fragment", fragment)
    monkeypatch.setattr(streamlit, "button", button)
    return drawn


def test_the_train_pages_stop_button_is_drawn_with_the_page(queue_only, buttons, tiny_dataset):
    at = set_tiny_options(open_on_folder(tiny_dataset, "app_pages/train.py"))
    at.button(key="start_training").click().run()
    (run_id,) = queue_only.store.list_ids()
    assert not at.exception and at.selectbox(key="train_run_picker").value == run_id
    assert buttons[f"stop_{run_id}"] is False  # drawn, and not in the live panel's fragment
    queue_only.store.set_status(run_id, "running")  # as its worker would (this process stands in for it)
    at.run()
    at.button(key=f"stop_{run_id}").click().run()
    assert not at.exception
    assert queue_only.store.stop_requested(run_id)
    assert [t.value for t in at.toast] == ["Stopping the run…"]
    # That page run does not time the options beside a run that is ending: the next redraw, after it, does.
    assert any("you have just pressed Stop" in c.value for c in at.caption), [c.value for c in at.caption]


def test_a_sweeps_and_a_lessons_stop_buttons_are_drawn_with_the_page(queue_only, buttons, tiny_dataset):
    at = open_on_folder(tiny_dataset, "app_pages/sweeps.py")
    at.multiselect(key="sweep_settings").set_value(["imbalance"]).run()
    at.multiselect(key="sweep_values_imbalance").set_value(["none", "oversample"]).run()
    at.button(key="sweep_start").click().run()
    assert not at.exception and buttons["sweep_stop"] is False
    assert at.button(key="sweep_stop").label == "⏹ Stop the unfinished runs"  # no count: it is not redrawn as runs end
    sweep_runs = queue_only.store.list_ids()
    at.button(key="sweep_stop").click().run()
    assert {queue_only.store.status(r).state for r in sweep_runs} == {"cancelled"}
    assert any("you have just pressed Stop" in c.value for c in at.caption), [c.value for c in at.caption]

    at.switch_page("app_pages/lessons.py").run()
    at.button(key="lesson_start").click().run()
    assert not at.exception and buttons["lesson_stop"] is False
    lesson_runs = set(queue_only.store.list_ids()) - set(sweep_runs)
    at.button(key="lesson_stop").click().run()
    assert {queue_only.store.status(r).state for r in lesson_runs} == {"cancelled"}
    at.run()
    assert not any(b.key == "lesson_stop" for b in at.button)  # nothing left to stop: the button is gone


def test_a_lesson_or_a_sweep_too_big_for_the_persons_queue_queues_nothing_and_says_why(queue_only, tiny_dataset,
                                                                                       monkeypatch):
    monkeypatch.setenv("MEDCLS_QUEUE_LIMIT", "3")  # a lesson of 4 runs does not fit; a sweep of 2 does
    at = open_on_folder(tiny_dataset, "app_pages/lessons.py")
    at.button(key="lesson_start").click().run()
    assert not at.exception and queue_only.store.list_ids() == []  # none of the lesson's runs, not the first 3
    assert any("at most 3 waiting at once" in e.value for e in at.error), [e.value for e in at.error]
    assert not at.toast

    at.switch_page("app_pages/sweeps.py").run()
    at.multiselect(key="sweep_settings").set_value(["imbalance"]).run()
    at.multiselect(key="sweep_values_imbalance").set_value(["none", "oversample"]).run()
    at.button(key="sweep_start").click().run()
    assert not at.exception and not at.error and len(queue_only.store.list_ids()) == 2
    assert [t.value for t in at.toast] and at.toast[0].value.startswith("Queued 2 runs")
