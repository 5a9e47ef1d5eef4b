"""AppTest: the Sweeps page queues every combination and ranks the runs as their history arrives."""

from __future__ import annotations

import json

import pytest
from apphelpers import as_read, open_on_folder

import app.manager
from app.text import escape_markdown
from medcls.jobs.manager import JobManager
from medcls.runs.records import EpochRecord
from medcls.runs.store import RunStore


@pytest.fixture
def queue_only(app_env, monkeypatch) -> JobManager:
    """The app's job manager, but one that only queues (no worker processes on a shared CPU)."""
    manager = JobManager(RunStore(app_env / "runs"), start=False)
    monkeypatch.setattr(app.manager, "get_manager", lambda root: manager)
    return manager


def _sweep_page(folder):
    """The Sweeps page on a tiny folder dataset."""
    at = open_on_folder(folder, "app_pages/sweeps.py")
    assert not at.exception
    return at


def _results(at):
    return next(df.value for df in at.dataframe if "rank" in df.value.columns)


def test_two_settings_with_two_values_queue_four_runs_and_rank_them(queue_only, tiny_dataset):
    at = _sweep_page(tiny_dataset)
    assert any("No sweeps yet" in i.value for i in at.info)
    at.multiselect(key="sweep_settings").set_value(["imbalance", "lr"]).run()
    at.multiselect(key="sweep_values_imbalance").set_value(["none", "oversample"])
    at.text_input(key="sweep_values_lr").set_value("0.001, 0.003").run()
    assert not at.error, [e.value for e in at.error]
    button = at.button(key="sweep_start")
    assert button.label == "▶ Queue 4 runs" and not button.disabled
    button.click().run()
    assert not at.exception and not at.error

    store = queue_only.store
    run_ids = store.list_ids()
    assert len(run_ids) == 4
    assert {store.config(r).data.source for r in run_ids} == {str(tiny_dataset)}  # the sidebar's dataset
    assert all(store.raw_status(r).state == "queued" for r in run_ids)
    combos = {(store.config(r).imbalance, store.config(r).lr) for r in run_ids}
    assert combos == {("none", 0.001), ("none", 0.003), ("oversample", 0.001), ("oversample", 0.003)}
    sweep_ids = {store.group(r).group_id for r in run_ids}
    assert len(sweep_ids) == 1

    table = _results(at)
    assert len(table) == 4 and set(table["state"]) == {"queued"} and table["rank"].isna().all()
    heat = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert heat["type"] == "heatmap" and len(heat["z"]) == 2 and len(heat["z"][0]) == 2

    # Two runs report an epoch: the table ranks them, best first, on the next refresh.
    by_combo = {(store.config(r).imbalance, store.config(r).lr): r for r in run_ids}
    store.append_history(by_combo[("none", 0.003)], EpochRecord.from_dict({"epoch": 1, "score": 0.42,
                                                                           "val_macro_f1": 0.42, "best": True}))
    store.append_history(by_combo[("oversample", 0.001)], EpochRecord.from_dict({"epoch": 1, "score": 0.61,
                                                                                "val_macro_f1": 0.6, "best": True}))
    at.run()
    table = _results(at)
    names = {r: store.summary(r).name for r in run_ids}
    assert list(table["run"][:2]) == [names[by_combo[("oversample", 0.001)]], names[by_combo[("none", 0.003)]]]
    assert list(table["rank"][:2]) == [1, 2]
    assert any("Best so far" in s.value and "oversample" in s.value for s in at.success)
    heat = json.loads(at.get("plotly_chart")[0].proto.spec)["data"][0]
    assert 0.61 in [v for row in heat["z"] for v in row]


def test_select_all_is_offered_only_where_every_choice_fits(queue_only, tiny_dataset):
    # "Select all" on a one-or-two picker of ten settings would quietly pick the first two.
    at = _sweep_page(tiny_dataset)
    settings = at.multiselect(key="sweep_settings")
    assert len(settings.options) > 2 and settings.proto.select_all == 0
    settings.set_value(["imbalance"]).run()
    strategies = at.multiselect(key="sweep_values_imbalance")  # all four strategies fit in one sweep
    assert len(strategies.options) <= 4 and strategies.proto.select_all != 0  # -1: always shown


def test_an_invalid_value_is_explained_and_nothing_is_queued(queue_only, tiny_dataset):
    at = _sweep_page(tiny_dataset)
    at.multiselect(key="sweep_settings").set_value(["lr"]).run()
    at.text_input(key="sweep_values_lr").set_value("0.001, fast").run()
    assert any("Learning rate: the value 'fast' is not valid" in as_read(e.value) for e in at.error)
    assert at.button(key="sweep_start").disabled
    assert queue_only.store.list_ids() == []


def test_a_sweep_says_before_queuing_how_its_runs_will_train_and_trains_them_alike(queue_only, tiny_dataset,
                                                                                   monkeypatch):
    from medcls.training import autoplan

    monkeypatch.setattr(autoplan, "AUTO_MIN_PER_FOLD", 1)  # the tiny dataset counts as small enough to ensemble
    monkeypatch.setattr(autoplan, "AUTO_MAX_WORK", 10)     # ... at 32 px, but not at 256 px (64 times the work)
    at = _sweep_page(tiny_dataset)
    at.multiselect(key="sweep_settings").set_value(["image_size"]).run()
    at.text_input(key="sweep_values_image_size").set_value("32, 48").run()
    assert any("each run trains 5 fold models" in c.value for c in at.caption)  # both are ensembles
    at.text_input(key="sweep_values_image_size").set_value("32, 256").run()
    assert not any("each run trains" in c.value for c in at.caption)
    (info,) = [i.value for i in at.info if "must train alike" in i.value]
    at.button(key="sweep_start").click().run()
    store = queue_only.store
    assert {store.config(r).small_data_ensemble for r in store.list_ids()} == {False}
    assert all("must train alike" in store.raw_status(r).notes[0] for r in store.list_ids())


def test_a_sweep_says_how_long_its_runs_take_here_and_times_each_cost_once(queue_only, tiny_dataset, monkeypatch):
    from app_isolation import stand_in_costs

    import app.model_summary

    timed = []
    monkeypatch.setattr(app.model_summary, "measure_costs", lambda cfg, **kw: timed.append(cfg) or stand_in_costs(cfg))
    at = _sweep_page(tiny_dataset)
    assert not timed  # nothing to time before settings are chosen
    at.multiselect(key="sweep_settings").set_value(["image_size", "lr"]).run()  # starting values: 64 and 128 px
    assert any(c.value.startswith("⏱️ **The sweep's 4 runs") for c in at.caption)
    timed.clear()
    at.text_input(key="sweep_values_image_size").set_value("32, 128")
    at.text_input(key="sweep_values_lr").set_value("0.001, 0.003").run()
    assert not at.exception and not at.error
    (line,) = [c.value for c in at.caption if c.value.startswith("⏱️")]
    # Four runs but two costs (the rate costs nothing a step), and 128 px was timed for the starting values.
    assert [cfg.image_size for cfg in timed] == [32]
    assert "The sweep's 4 runs, one after another: ≈ " in line
    for size, rate in ((32, 0.001), (128, 0.003)):  # each run named (their costs differ), as the runs list names it
        assert escape_markdown(f"Image size (px) {size}, Learning rate {rate} ≈ ") in line
    at.button(key="sweep_start").click().run()
    assert any("Not timed now: the runs of this sweep have just been queued" in c.value for c in at.caption)
    assert len(timed) == 1


def test_the_base_says_what_image_size_0_trains_at_on_this_data(queue_only, tiny_dataset, tmp_path, synth,
                                                                 monkeypatch):
    from medcls.training import autoplan

    at = _sweep_page(tiny_dataset)  # 32 px images: 128 px
    assert any("Image size (px) 0 (128 px for these images)" in c.value for c in at.caption)
    monkeypatch.setattr(autoplan, "AUTO_MIN_PER_FOLD", 1)  # the few images count as a small dataset
    large = synth.class_folders(tmp_path / "large", {"benign": 12, "malignant": 12, "normal": 12}, 200)
    at = _sweep_page(large)  # a small dataset of 200 px images: 192 px, as the Train page says
    assert any("Image size (px) 0 (192 px for these images)" in c.value for c in at.caption)


def test_a_sweep_over_image_sizes_says_when_they_enlarge_the_images(queue_only, tiny_dataset):
    at = _sweep_page(tiny_dataset)
    at.multiselect(key="sweep_settings").set_value(["image_size"]).run()
    at.text_input(key="sweep_values_image_size").set_value("32, 96").run()
    assert not at.exception and not at.error
    note = as_read(next(c.value for c in at.caption if c.value.startswith("🔍")))
    assert "typically 32 px" in note and "at 96 px each is enlarged 3.0 times" in note
    at.text_input(key="sweep_values_image_size").set_value("24, 32").run()
    assert not any(c.value.startswith("🔍") for c in at.caption)  # no size enlarges them
