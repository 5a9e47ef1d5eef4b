"""AppTest: the Lessons page queues a lesson on the sidebar's dataset and concludes from the stored results."""

from __future__ import annotations

import numpy as np
import pytest
from apphelpers import as_read, open_on_folder

import app.manager
from app.text import escape_markdown
from medcls.analysis.metrics import classification_metrics
from medcls.analysis.uncertainty import metric_intervals
from medcls.data import load_dataset
from medcls.jobs.manager import JobManager
from medcls.runs.records import ModelRecord
from medcls.runs.results import RunMetrics
from medcls.runs.store import RunStore
from medcls.training.estimate import Costs, estimate_group


@pytest.fixture
def queue_only(app_env, monkeypatch) -> JobManager:
    """The app's job manager, but one that only queues (no worker processes on a shared CPU)."""
    manager = JobManager(RunStore(app_env / "runs"), start=False)
    monkeypatch.setattr(app.manager, "get_manager", lambda root: manager)
    return manager


def _finish(store, run_id, probs):
    classes = ["benign", "malignant", "normal"]
    y = np.array([1, 1, 1, 0, 0, 2, 2])
    probs = np.array(probs)
    store.write_metrics(run_id, RunMetrics({"test": classification_metrics(y, probs, classes)}, best_epoch=1,
                                           best_val_score=0.5, precision="fp32", focus_class="malignant",
                                           intervals={"test": metric_intervals(y, probs, classes)}))
    store.set_status(run_id, "finished")


def test_a_lesson_is_queued_on_the_sidebars_data_and_concluded_from_its_runs(queue_only, tiny_dataset):
    at = open_on_folder(tiny_dataset, "app_pages/lessons.py")
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="lesson_pick").value == "rare-classes"
    assert any("has not been run yet" in i.value for i in at.info)
    # what to read, named for these images: no class names a finding, so the rarest (a tie: the first by name)
    assert any("Read off: **bright recall** on the test images" in c.value for c in at.caption)
    # the tiny folder's two classes are equally common: the imbalance fixes have nothing to correct here
    assert any("about equally common" in i.value and "differ by chance alone" in i.value for i in at.info)
    at.button(key="lesson_start").click().run()
    assert not at.exception and not at.error

    store = queue_only.store
    run_ids = store.list_ids()
    assert len(run_ids) == 4
    assert {store.config(r).data.source for r in run_ids} == {str(tiny_dataset)}
    assert {store.config(r).imbalance for r in run_ids} == {"none", "oversample", "weighted_loss",
                                                             "weighted_sampler"}
    assert any("0 of 4 runs finished; 4 still waiting or training" in i.value for i in at.info)

    by_label = {store.group(r).values["label"]: r for r in run_ids}
    miss = [[0.1, 0.8, 0.1], [0.8, 0.1, 0.1], [0.8, 0.1, 0.1], [0.9, 0.05, 0.05], [0.9, 0.05, 0.05],
            [0.1, 0.1, 0.8], [0.1, 0.1, 0.8]]
    _finish(store, by_label["no fix"], miss)
    _finish(store, by_label["oversampling"], [[0.1, 0.8, 0.1]] * 3 + miss[3:])
    store.set_status(by_label["weighted loss"], "failed", error="boom")
    at.run()
    assert not at.exception and not at.error
    text = " ".join(i.value for i in at.info)
    assert "2 of 4 runs finished; 1 still waiting or training, 1 failed" in text
    assert "oversampling raised malignant recall from 0\\.33 \\(no fix\\) to 1\\.00" in text
    assert "could be chance" in text
    table = next(df.value for df in at.dataframe if "malignant recall" in df.value.columns)
    assert list(table["run"]) == ["no fix", "oversampling", "weighted loss", "weighted sampler"]
    assert table["malignant recall"].iloc[0] == pytest.approx(1 / 3)
    assert "models" not in table.columns  # one model each: nothing to say
    assert at.get("plotly_chart")

    # On a small dataset the default trains fold ensembles: the table says how many models each run has.
    store.write_model_record(by_label["no fix"], ModelRecord(classes=("benign", "malignant", "normal"),
                                                             image_size=32, in_channels=1, color="gray", folds=5))
    at.run()
    table = next(df.value for df in at.dataframe if "malignant recall" in df.value.columns)
    assert list(table["models"]) == [5, 1, 1, 1]


def test_the_lesson_says_when_its_runs_will_be_fold_ensembles(queue_only, tiny_dataset, monkeypatch):
    from medcls.training import autoplan

    def caption(at):
        return next(c.value for c in at.caption if c.value.startswith("Every run:"))

    at = open_on_folder(tiny_dataset, "app_pages/lessons.py")
    assert "fold models" not in caption(at)  # too few images of a class: one model per run
    monkeypatch.setattr(autoplan, "AUTO_MIN_PER_FOLD", 1)  # now the tiny dataset counts as small enough
    at.run()
    assert "each run trains 5 fold models" in caption(at) and "about 5 times as long" in caption(at)


def _fixed_costs(cfg, **_settings) -> Costs:
    """A probe's answer that depends only on the image size and the model (a page test starts no probe)."""
    heavy = 4.0 if cfg.model.startswith("seed_cnn") else 1.0  # the seed's networks' flatten head
    return Costs(threads=2, precision="fp32", step_s=0.01 * heavy * (cfg.image_size / 64) ** 2, eval_image_s=0.001,
                 first_epoch_extra_s=0.5, feature_image_s=0.0, embed_image_s=0.001, start_s=3.0, data_s=0.1,
                 decode_image_s=0.0, bootstrap_s=0.2, channels=1, others_cores=0.0)


def test_the_lesson_says_how_long_its_runs_take_here_before_they_are_queued(queue_only, tiny_dataset, monkeypatch):
    import app.model_summary

    timed = []
    monkeypatch.setattr(app.model_summary, "measure_costs", lambda cfg, **kw: timed.append(cfg) or _fixed_costs(cfg))
    at = open_on_folder(tiny_dataset, "app_pages/lessons.py")
    assert not at.exception and not at.error
    (line,) = [c.value for c in at.caption if "one after another" in c.value]
    assert len(timed) == 1  # the four runs differ only in the imbalance fix, which costs nothing a step: one probe

    at.button(key="lesson_start").click().run()
    assert any("Not timed now: the runs of this lesson have just been queued" in c.value for c in at.caption)
    assert not any("one after another:" in c.value for c in at.caption) and len(timed) == 1
    store = queue_only.store
    by_label = {store.group(r).values["label"]: store.config(r) for r in store.list_ids()}
    labels = ["no fix", "oversampling", "weighted loss", "weighted sampler"]
    configs = [by_label[name] for name in labels]
    expected = estimate_group(configs, labels, load_dataset(configs[0].data), _fixed_costs)
    assert f"**The lesson's 4 runs, one after another: {expected.total_words()}** " \
           f"({escape_markdown(expected.run_words())})" in line  # the runs as queued, timed before they were
    at.run()  # the next redraw times them again (from the cache: no new probe)
    assert any("one after another" in c.value for c in at.caption) and len(timed) == 1

    at.selectbox(key="lesson_pick").set_value("networks").run()
    assert not at.exception and not at.error
    # One probe per network, but small_cnn at 64 px costs what it cost in the first lesson: not timed again.
    assert [cfg.model for cfg in timed[1:]] == ["seed_cnn", "seed_cnn_bn"]
    (line,) = [c.value for c in at.caption if "one after another" in c.value]
    assert "The lesson's 3 runs" in line and "seed\\_cnn ≈" in line and "small\\_cnn ≈" in line  # run by run


def test_while_a_run_trains_the_lesson_is_timed_from_quiet_measurements_only_if_all_its_runs_have_one(
        queue_only, tiny_dataset, monkeypatch):
    import dataclasses
    import time

    from app_isolation import settle_timings

    import app.model_summary
    from medcls.training import quiet_timings
    from medcls.training.estimate import probe_config

    timed = []
    monkeypatch.setattr(app.model_summary, "measure_costs", lambda cfg, **kw: timed.append(cfg) or _fixed_costs(cfg))
    monkeypatch.setattr(JobManager, "running", lambda self: ["someone-elses-run"])
    for module in (app.model_summary, quiet_timings):
        monkeypatch.setattr(module, "usable_cores", lambda: 2)  # _fixed_costs had both of them

    at = open_on_folder(tiny_dataset, "app_pages/lessons.py")
    at.selectbox(key="lesson_pick").set_value("networks").run()  # three networks: three timings
    settle_timings(at)  # beside the run, one after another in the background
    (small,) = [cfg for cfg in timed if cfg.model == "small_cnn"]
    quiet = dataclasses.replace(_fixed_costs(small), decode_image_s=0.001)
    quiet_timings.remember_quiet(probe_config(small), quiet, now=time.time() - 20 * 60)
    at.run()  # one run has a quiet measurement, two do not: not said to be measured before the run
    (words,) = [c.value for c in at.caption if c.value.startswith("⏱️")]
    assert "ago" not in words and "Measured now on this machine" in words
    # three timings, two of them beside the run: their differences are not the machine's either
    assert "The 3 timings each got what the run left at that moment" in words
    for cfg in (cfg for cfg in timed if cfg.model != "small_cnn"):
        quiet = dataclasses.replace(_fixed_costs(cfg), decode_image_s=0.001)
        quiet_timings.remember_quiet(probe_config(cfg), quiet, now=time.time() - 5 * 60)
    probes = len(timed)
    at.run()
    (words,) = [c.value for c in at.caption if c.value.startswith("⏱️")]
    assert "Measured on this machine 20 min ago while nothing trained" in words  # the oldest of the three
    assert "what the run left" not in words  # all three quiet: their differences are the machine's
    assert len(timed) == probes  # none timed beside the run


def test_the_resolution_lesson_says_when_the_images_hold_less_detail_than_either_size(queue_only, tiny_dataset):
    # The tiny dataset's images are 32 px: 64 and 128 px both enlarge them, so neither run sees more detail.
    at = open_on_folder(tiny_dataset, "app_pages/lessons.py")
    at.selectbox(key="lesson_pick").set_value("resolution").run()
    note = as_read(" ".join(i.value for i in at.info))
    assert "typically 32 px" in note and "every run enlarges them (2.0 times at 64 px and 4.0 times at 128 px)" in note
    at.selectbox(key="lesson_pick").set_value("augmentation").run()
    assert not any("enlarges" in i.value for i in at.info)  # not a lesson about image size
