"""AppTest: what the pages say is true (issue 14): Compare across different data and classes, ResNet-18 without
its weights, options and the dataset from the URL, the Try-it picker."""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
from apphelpers import as_read, choose_folder, new_app, open_on_folder
from interruptions import KillInMember

from medcls.config import DataConfig, TrainConfig
from medcls.jobs.execute import execute_run
from medcls.runs.store import RunStore


def trained(store: RunStore, source, *, stop_after: int | None = None, **options) -> str:
    cfg = TrainConfig(data=DataConfig(source=str(source))).with_options(
        image_size=32, batch_size=8, precision="fp32", **{"epochs": 2, **options})
    run_id = store.create(cfg)
    cancel = (lambda: len(store.history(run_id)) >= stop_after) if stop_after else None
    outcome = execute_run(store, run_id, should_cancel=cancel)
    assert outcome.state == ("cancelled" if stop_after else "finished"), outcome.error
    return run_id


def test_compare_and_try_it_start_at_runs_on_the_dataset_in_the_sidebar(app_env, tiny_dataset, split_dataset):
    store = RunStore(app_env / "runs")
    on_split = [trained(store, split_dataset), trained(store, split_dataset, stop_after=1, epochs=30)]
    newest = trained(store, tiny_dataset)  # the newest run is on other data
    at = choose_folder(new_app().run(), split_dataset)
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception and at.multiselect(key="compare_runs").value == on_split[::-1]
    at.switch_page("app_pages/try_it.py").run()
    assert not at.exception and at.selectbox(key="try_run").value == on_split[0]  # the finished one
    at = new_app().run()  # the built-in phantoms: no run on them, so the newest run and its like
    at.switch_page("app_pages/compare.py").run()
    assert at.multiselect(key="compare_runs").value == [newest]


def test_runs_on_the_same_images_in_two_places_are_compared_as_runs_on_one_dataset(app_env, split_dataset, tmp_path):
    # A folder and its copy (or an .npz and its upload) are one dataset: its runs' settings do not differ by path.
    copy = tmp_path / "copied" / "splits"
    shutil.copytree(split_dataset, copy)
    store = RunStore(app_env / "runs")
    runs = [trained(store, split_dataset, epochs=1), trained(store, copy, epochs=1)]
    at = choose_folder(new_app().run(), copy)
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception and at.multiselect(key="compare_runs").value == runs[::-1]
    assert not any("different data" in w.value for w in at.warning)
    assert any("read the same images" in c.value and str(copy) in as_read(c.value) for c in at.caption)
    differs = [as_read(m.value) for m in at.markdown if "→" in m.value]
    assert differs and differs[0].endswith("same settings"), differs


def test_compare_runs_on_different_data_and_classes_says_so_and_shows_dashes(app_env, tiny_dataset, split_dataset):
    store = RunStore(app_env / "runs")
    two_classes = trained(store, tiny_dataset)                    # bright, dark
    three_classes = trained(store, split_dataset)                 # benign, malignant, normal
    stopped = trained(store, split_dataset, stop_after=1, epochs=30)
    at = new_app().run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    # Preselected: the newest run and the newest other run on the same data, never the other dataset's run.
    assert at.multiselect(key="compare_runs").value == [stopped, three_classes]
    assert not any("different data" in w.value for w in at.warning)
    assert any("was stopped at epoch 1 of 30" in c.value for c in at.caption)

    at.multiselect(key="compare_runs").select(two_classes).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    warnings = [w.value for w in at.warning]
    assert any("tested on different data" in w for w in warnings), warnings
    assert any("different class lists" in w for w in warnings), warnings
    # Fields down, one column per run (so a 1280 px page never cuts the last field).
    chosen = next(df.value for df in at.dataframe if "how it ended" in df.value.index)
    assert len(chosen.columns) == 3 and "classes" in chosen.index
    assert "stopped at epoch 1 of 30" in set(chosen.loc["how it ended"])
    for frame in (df.value for df in at.dataframe):
        cells = frame.astype(str).to_numpy().ravel().tolist()
        assert "None" not in cells and "nan" not in cells, frame
    # Metrics down, runs across (three runs fit the page's width).
    metrics = next(df.value for df in at.dataframe if "macro-F1" in df.value.index and "accuracy" in df.value.index
                   and "0." in str(df.value.iloc[0, 0]) and "(" not in str(df.value.iloc[0, 0]))
    focus = at.selectbox(key="compare_focus").value
    assert list(metrics.index)[:3] == [f"{focus} recall", f"{focus} precision", f"{focus} F1"]  # focus first
    assert len(metrics.columns) == 3  # one column per chosen run
    assert (metrics == "–").any().any()  # a class a run does not have


def test_resnet_without_imagenet_weights_says_so_before_start_and_offers_scratch(app_env, tiny_dataset,
                                                                                  monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(app_env / "no-torch-cache"))
    at = open_on_folder(tiny_dataset, "app_pages/train.py")
    at.selectbox(key="opt_model").set_value("resnet18").run()
    assert not at.exception
    assert any("ImageNet weights are not on this machine" in w.value for w in at.warning)
    assert at.button(key="weights_random") is not None
    at.button(key="weights_random").click().run()
    assert not at.exception
    assert at.text_input(key="opt_resnet18_weights").value == "random"
    assert not any("ImageNet weights are not on this machine" in w.value for w in at.warning)
    assert any("trains from scratch" in s.value for s in at.success)


def test_the_form_and_the_dataset_come_back_from_the_url(app_env, tiny_dataset):
    at = new_app()
    at.query_params["epochs"] = "7"
    at.query_params["image_size"] = "48"
    at.query_params["imbalance"] = "weighted_loss"
    at.query_params["lr"] = "not a number"  # ignored, the rest stays
    at.session_state["data_kind"] = "folder"
    at.session_state["data_folder"] = str(tiny_dataset)
    at.run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    assert at.number_input(key="opt_epochs").value == 7
    assert at.number_input(key="opt_image_size").value == 48
    assert at.selectbox(key="opt_imbalance").value == "weighted_loss"
    assert at.number_input(key="opt_lr").value == TrainConfig().lr
    # A change on the form goes into the URL; a default value leaves it.
    at.number_input(key="opt_epochs").set_value(12).run()
    assert at.query_params["epochs"] in ("12", ["12"])
    at.number_input(key="opt_image_size").set_value(TrainConfig().image_size).run()
    assert "image_size" not in at.query_params


def test_try_it_offers_the_best_finished_run_on_the_current_data(app_env, tiny_dataset, split_dataset):
    store = RunStore(app_env / "runs")
    here = trained(store, tiny_dataset, epochs=3)
    trained(store, split_dataset)  # newer, on other data
    trained(store, tiny_dataset, stop_after=1, epochs=30)  # newest, on this data, but stopped
    at = open_on_folder(tiny_dataset, "app_pages/try_it.py")
    assert not at.exception
    picker = at.selectbox(key="try_run")
    assert picker.value == here
    labels = picker.options
    assert all(re.search(r" · on \S+ · .+ · (test macro-F1 \d\.\d\d|not tested)$", label) for label in labels), labels
    assert any("stopped at epoch 1 of 30" in label for label in labels)


def test_a_typed_link_chooses_the_dataset_by_its_short_name(app_env, tiny_dataset):
    at = new_app()
    at.query_params["data_kind"] = "folder"  # as a teacher would type it (the app writes the same)
    at.query_params["data_folder"] = str(tiny_dataset)
    at.run()
    assert not at.exception
    assert at.sidebar.radio(key="data_kind").value == "folder"
    assert at.sidebar.text_input(key="data_folder").value == str(tiny_dataset)
    assert at.query_params["data_kind"] in ("folder", ["folder"])
    # The label (what Streamlit's own binding used to write) is understood too; the URL then says the short name.
    for label in ("An .npz file (MedMNIST, Keras)", "A MedMNIST .npz file"):  # today's, and an earlier version's
        at = new_app()
        at.query_params["data_kind"] = label
        at.run()
        assert at.sidebar.radio(key="data_kind").value == "npz"
        assert at.query_params["data_kind"] in ("npz", ["npz"])
    # Back to the built-in data: the default leaves the URL.
    at.sidebar.radio(key="data_kind").set_value("builtin").run()
    assert "data_kind" not in at.query_params


def test_a_run_that_keeps_its_last_epoch_says_so_not_best_epoch(app_env, tiny_dataset):
    from medcls.figures.report import run_card_html

    store = RunStore(app_env / "runs")
    run_id = trained(store, tiny_dataset, epochs=3, checkpoint="last")
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception and at.selectbox(key="train_run_picker").value == run_id
    assert any(s.value.startswith("Finished. The last epoch's weights (3) are kept") for s in at.success), \
        [s.value for s in at.success]
    assert any(m.label == "Validation score, last epoch" for m in at.metric)
    assert "3 (the last: &#x27;Checkpoint kept&#x27;)" in run_card_html(store, run_id)


def test_fold_models_that_keep_their_last_epoch_say_so(app_env, tiny_dataset):
    from medcls.figures.report import run_card_html

    # Trained before the app starts: the app's job manager would take a queued run of its store as its own.
    store = RunStore(app_env / "runs")
    folds = trained(store, tiny_dataset, epochs=2, folds=2, checkpoint="last")
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert at.selectbox(key="train_run_picker").value == folds  # the newest
    assert any(s.value == "Finished: 2 fold models. Each kept its last epoch: 2, 2." for s in at.success), \
        [s.value for s in at.success]
    assert "last epoch of each fold, kept" in run_card_html(store, folds)


def test_a_cross_validation_run_shows_its_folds_not_one_long_run(app_env, tiny_dataset):
    store = RunStore(app_env / "runs")
    run_id = trained(store, tiny_dataset, folds=2, epochs=2, checkpoint="best")
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception and at.selectbox(key="train_run_picker").value == run_id
    assert any(s.value.startswith("Finished: 2 fold models. Best epochs:") for s in at.success), \
        [s.value for s in at.success]
    done = next(m for m in at.metric if m.label.startswith("Epochs done"))
    assert done.label == "Epochs done (fold 2 of 2)" and done.value == "2/2"  # not 4/2
    assert any(m.label == "Best validation score (fold 2 of 2)" for m in at.metric)  # that fold's, not the run's
    assert any("The curves show fold 2, the latest" in c.value for c in at.caption)
    summary = store.summary(run_id)
    assert summary.epochs_words() == "2 of 2 in fold 2 of 2" and summary.folds == 2
    # Compare names the class whose recall the folds tracked, not a "focus recall" to look up
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    folds = next(d.value for d in at.dataframe if "folds" in d.value.columns)
    focus = store.metrics(run_id).focus_class
    assert f"{focus} recall" in folds.columns and "focus recall" not in folds.columns, list(folds.columns)
    assert folds.iloc[0]["folds"] == "2 of 2"
    # and says every fold model's epochs, not the last fold's alone ("2 of 2 in fold 2 of 2")
    runs = next(d.value for d in at.dataframe if "epochs" in d.value.index)
    assert list(runs.loc["epochs"]) == ["2 fold models: 2 and 2 of 2 epochs"], runs
    # Its training curves: one per fold model, each from epoch 1, named in the legend
    curves = next(spec for spec in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
                  if spec["layout"]["title"]["text"] == "Validation macro-F1")
    assert [(t["name"].rsplit(" · ", 1)[-1], t["x"]) for t in curves["data"]] == [("fold 1", [1, 2]), ("fold 2", [1, 2])]
    assert curves["layout"]["showlegend"] is True
    assert any("each fold is a curve of its own" in c.value for c in at.caption)


@pytest.mark.parametrize("chosen_for_the_data", [False, True])
def test_a_bagged_run_shows_its_models_and_says_they_have_no_validation(app_env, tiny_dataset, chosen_for_the_data):
    store = RunStore(app_env / "runs")
    run_id = trained(store, tiny_dataset, bagged_models=2, epochs=2)
    if chosen_for_the_data:  # asked with the ensemble left to the data (config.json), bagged as its plan.json says
        from medcls.atomic import atomic_write_text

        plan = store.config(run_id)
        atomic_write_text(store.file(run_id, "config.json"), plan.with_options(bagged_models=0).to_json())
        store.write_plan(run_id, plan)
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception and at.selectbox(key="train_run_picker").value == run_id
    assert any(s.value == "Finished: 2 bagged models. Each kept its last epoch: 2, 2." for s in at.success), \
        [s.value for s in at.success]
    done = next(m for m in at.metric if m.label.startswith("Epochs done"))
    assert done.label == "Epochs done (bagged model 2 of 2)" and done.value == "2/2"
    score = next(m for m in at.metric if "alidation score" in m.label)
    assert score.value == "–" and "No validation images" in score.help
    assert any("learns from every training and validation image" in c.value and "curves show training only" in c.value
               for c in at.caption)
    assert any(m.value.startswith("The bagged models together, as one ensemble\\.") for m in at.markdown)
    assert not any("fold" in c.value.lower() for c in [*at.caption, *at.success, *at.markdown]
                   if "folder" not in c.value.lower())
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    runs = next(d.value for d in at.dataframe if "epochs" in d.value.index)
    assert list(runs.loc["epochs"]) == ["2 of 2 in bagged model 2 of 2"], runs
    # no validation curve to draw (an empty chart once): the picker offers the training curves only
    assert at.selectbox(key="compare_curve_training").options == ["Training loss", "Training accuracy"]
    curves = next(spec for spec in (json.loads(c.proto.spec) for c in at.get("plotly_chart"))
                  if spec["layout"]["title"]["text"] == "Training loss")
    assert [t["name"].rsplit(" · ", 1)[-1] for t in curves["data"]] == ["bagged model 1", "bagged model 2"]
    assert all(len(t["y"]) == 2 and None not in t["y"] for t in curves["data"])
    assert any("they have no validation curves" in c.value for c in at.caption)
    from medcls.analysis.operating_point import NO_THRESHOLD_WITHOUT_HELD_OUT

    assert any(NO_THRESHOLD_WITHOUT_HELD_OUT in i.value for i in at.info), [i.value for i in at.info]


def test_an_interrupted_bagged_run_offers_to_resume_from_its_next_model(app_env, tiny_dataset, monkeypatch):
    from medcls.runs.permissions import browser_identity
    from medcls.runs.records import RunMeta

    store = RunStore(app_env / "runs")
    cfg = TrainConfig(data=DataConfig(source=str(tiny_dataset))).with_options(
        image_size=32, batch_size=8, precision="fp32", epochs=2, bagged_models=3)
    token = "alice-browser-token-0123456789"
    run_id = store.create(cfg, meta=RunMeta(owner=browser_identity(token).key, owner_name="Alice"))
    with pytest.raises(KeyboardInterrupt):
        execute_run(store, run_id, callbacks=[KillInMember(1)])  # like a killed worker
    store.set_status(run_id, "interrupted", error="The training process was killed by signal 9.")
    import streamlit

    import app.live

    fragments, stopped = [], []
    real_fragment = streamlit.fragment

    def fragment(func=None, **options):
        fragments.append(getattr(func, "__name__", None))
        return real_fragment(func, **options)

    monkeypatch.setattr(streamlit, "fragment", fragment)
    monkeypatch.setattr(app.live, "stop_timing", lambda: stopped.append(True))
    at = new_app()
    at.session_state["_identity_token"] = token  # Alice's browser
    at.run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception and at.selectbox(key="train_run_picker").value == run_id
    button = at.button(key=f"resume_{run_id}")
    assert button.label == "▶ Resume from bagged model 2 of 3"
    assert not button.disabled and button.help.startswith("Keeps the models it had finished, as they were")
    # Drawn with the page, not in a fragment: a fragment's click waits for a page run still timing the options.
    assert "panel" not in fragments
    button.click().run()
    assert not at.exception and stopped == [True]  # as Start does: the page's timing probe gives way to the run
    assert store.raw_status(run_id).state in ("queued", "running", "finished") and store.raw_status(run_id).resumes == 1


def test_the_train_page_says_before_training_how_images_are_enlarged_and_drawn(app_env, tiny_dataset):
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert not any("enlarged" in i.value for i in at.info)  # the built-in phantoms are 128 px, as trained
    # Their classes are imbalanced enough that an epoch draws a share of the balanced list; the page says so
    # beside the estimate that counts it, before training.
    captions = [c.value.replace("\\", "") for c in at.caption]  # as written, without Markdown escapes
    assert any("would draw 2.1 times the training images" in c for c in captions), captions
    assert not any("Weight averaging:" in c for c in captions)  # the default decay
    # A decay the run's 360 steps never reach trains exactly as the default would: said before Start.
    at.number_input(key="opt_ema_decay").set_value(0.999).run()
    captions = [c.value.replace("\\", "") for c in at.caption]
    assert any("a decay of 0.999 is reached only after 8,990 training steps" in c for c in captions), captions
    at = choose_folder(new_app().run(), tiny_dataset)  # 32-px images, default image size 128
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    notes = [i.value for i in at.info if "enlarged" in i.value]
    assert len(notes) == 1 and "typically 32 px" in notes[0] and "enlarged 4.0 times" in notes[0], notes
    at.number_input(key="opt_image_size").set_value(32).run()
    assert not any("enlarged" in i.value for i in at.info)


def test_the_train_page_says_when_large_images_are_shrunk_a_lot(app_env, tmp_path, synth):
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert not any("shrunk" in i.value for i in at.info)  # the built-in phantoms are 128 px, as trained
    root = synth.class_folders(tmp_path / "large", {"benign": 12, "malignant": 12, "normal": 12}, 300)
    at = choose_folder(new_app().run(), root)
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    notes = [i.value for i in at.info if "shrunk" in i.value]
    assert len(notes) == 1 and "typically 300 px" in notes[0] and "shrunk 2.3 times" in notes[0], notes
    at.number_input(key="opt_image_size").set_value(160).run()  # 300 px is under twice 160: nothing to say
    assert not any("shrunk" in i.value for i in at.info)


def test_the_train_page_says_before_start_when_the_image_size_is_chosen_larger_for_the_data(app_env, tmp_path, synth,
                                                                                           monkeypatch):
    from medcls.training import autoplan

    monkeypatch.setattr(autoplan, "AUTO_MIN_PER_FOLD", 1)  # the few images count as a small dataset
    root = synth.class_folders(tmp_path / "large", {"benign": 12, "malignant": 12, "normal": 12}, 200)
    at = choose_folder(new_app().run(), root)
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    (note,) = [i.value for i in at.info if "large images" in i.value]
    assert "typically 200 px" in note and "trained at 192 px as 3 bagged models" in note
    assert "the curves show training only and the test images are the only check" in note  # what it gives up
    assert not any("shrunk" in i.value or "enlarged" in i.value for i in at.info)  # 200 px at 192: neither
    assert not any("trains these images at" in c.value for c in at.caption)
    assert at.number_input(key="opt_image_size").step == 16  # + from 0 goes to the smallest size, not to 1
    at.number_input(key="opt_image_size").set_value(128).run()  # a size set: as set, with the usual 5 folds
    assert not any("large images" in i.value for i in at.info)
    assert not any("trains these images at" in c.value for c in at.caption)
    at.number_input(key="opt_image_size").set_value(0).run()
    monkeypatch.setattr(autoplan, "AUTO_MIN_PER_FOLD", 10)  # now too few of a class for folds: one model, 128 px
    at.run()
    assert not any("large images" in i.value for i in at.info)
    assert any("*Image size* 0 trains these images at 128 px" in c.value and "trained as an ensemble" in c.value
               for c in at.caption)  # these are small and large, but train one model: why 192 px does not apply


def test_a_tiny_validation_split_is_named_where_it_matters(app_env, tmp_path, synth):
    root = synth.split_folders(tmp_path / "cxr", {"train": {c: 60 for c in ("benign", "malignant", "normal")},
                                               "val": {"benign": 2, "malignant": 2, "normal": 20},
                                               "test": {"benign": 3, "malignant": 3, "normal": 3}})
    at = choose_folder(new_app().run(), root)
    at.switch_page("app_pages/data.py").run()
    assert not at.exception
    assert any("validation split holds only 2 benign and 2 malignant" in w.value for w in at.warning)
    at.switch_page("app_pages/train.py").run()
    # A small dataset trains a cross-validation ensemble by default, which validates on its own folds ...
    assert not at.exception and not any("validation split holds" in w.value for w in at.warning)
    at.toggle(key="opt_small_data_ensemble").set_value(False).run()
    # ... one model validates on these 24 images: the page says so before training.
    assert any("validation split holds only 2 benign and 2 malignant" in w.value for w in at.warning)


def test_compare_says_how_many_test_images_are_copies_and_the_score_without_them(app_env, tiny_dataset,
                                                                                 split_dataset):
    import numpy as np
    from PIL import Image

    gray = np.asarray(Image.open(split_dataset / "train" / "benign" / "benign (2).png"), dtype=np.int16)
    Image.fromarray(np.clip(gray + 12, 0, 255).astype(np.uint8)).save(split_dataset / "test" / "benign" / "re.jpg",
                                                                         quality=95)  # the scan saved again
    store = RunStore(app_env / "runs")
    clean = trained(store, tiny_dataset)
    leaky = trained(store, split_dataset)
    at = new_app().run()
    at.switch_page("app_pages/compare.py").run()
    at.multiselect(key="compare_runs").set_value([leaky, clean]).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    names = {r: store.summary(r).name for r in (leaky, clean)}
    copies = [as_read(w.value) for w in at.warning if "near copy among the images this run learned from" in w.value]
    assert len(copies) == 1, copies  # the run without copies says nothing
    assert copies[0].startswith(f"**{names[leaky]}**: 1 of the 10 test images (10%) has a near copy"), copies
    assert "On the 9 test images without a copy: macro-F1" in copies[0] and "on all 10)" in copies[0]


@pytest.mark.parametrize("stop_after, sentence, tested, answers", [
    (1, r"Bagged model 1 of 3 alone \(the run was stopped before the others\)\.",
     "its one bagged model trained so far was tested.", "its one bagged model trained so far answers."),
    (3, r"The first 2 of 3 bagged models together \(the run was stopped before the rest\)\.",
     "the 2 bagged models trained so far were tested together.",
     "the 2 bagged models trained so far answer together."),
])
def test_a_stopped_bagged_run_names_the_models_it_tested(app_env, tiny_dataset, stop_after, sentence, tested,
                                                         answers):
    # Stopped after its first epoch, or in the first epoch of its second model (2 epochs each): its test score is
    # that of the models trained so far, not of 'the bagged models together', nor of 'its kept checkpoint'.
    from medcls.figures.report import run_card_html

    store = RunStore(app_env / "runs")
    run_id = trained(store, tiny_dataset, stop_after=stop_after, bagged_models=3, epochs=2)
    assert f"<th>state</th><td>cancelled (stopped; {tested[:-1]})</td>" in run_card_html(store, run_id)
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    scores = [m.value for m in at.markdown if "test images" in m.value]
    assert len(scores) == 1 and scores[0].startswith(sentence), scores
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    captions = [c.value for c in at.caption]
    assert any(c.startswith("⏹️") and c.endswith(tested) for c in captions), captions
    at.switch_page("app_pages/try_it.py").run()
    assert not at.exception
    assert any(c.value.startswith("⚠️ This run did not finish") and c.value.endswith(answers) for c in at.caption)


def test_a_run_a_command_line_process_holds_says_where_it_trains(app_env, tiny_dataset):
    store = RunStore(app_env / "runs")
    held = store.create(TrainConfig(data=DataConfig(source=str(tiny_dataset))), held=True)  # as `lesson run` queues
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert not at.exception and at.selectbox(key="train_run_picker").value == held
    assert any(f"Queued in a command-line process (process {os.getpid()})" in i.value for i in at.info), \
        [i.value for i in at.info]
    assert not any("when a training slot is free" in i.value for i in at.info)
    assert store.status(held).state == "queued"  # the app's job manager left it to its holder


def test_every_table_shows_a_missing_value_as_a_dash_not_none():
    """Streamlit writes 'None' in an empty cell (a stopped run's score, a queued run's rank) unless told otherwise."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    calls = []
    for path in [*root.glob("app/*.py"), *root.glob("app_pages/*.py"), root / "streamlit_app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "dataframe" \
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "st":
                given = {k.arg: k.value for k in node.keywords}
                calls.append((f"{path.name}:{node.lineno}",
                              isinstance(given.get("placeholder"), ast.Constant) and given["placeholder"].value))
    assert len(calls) >= 10
    assert [where for where, placeholder in calls if placeholder != "–"] == []
