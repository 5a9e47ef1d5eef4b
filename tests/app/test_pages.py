"""AppTest tests for every page of the dashboard."""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
from apphelpers import as_read, choose_folder, new_app, open_on_folder, set_tiny_options, write_tiny_dataset
from PIL import Image
from streamlit.testing.v1.element_tree import Block

from app.text import escape_markdown
from medcls.config import DataConfig, TrainConfig
from medcls.jobs.execute import execute_run
from medcls.runs.store import RunStore

PAGES = ["app_pages/data.py", "app_pages/train.py", "app_pages/compare.py", "app_pages/try_it.py"]


def finished_run(store: RunStore, data_dir, seed: int = 0, **options) -> str:
    cfg = TrainConfig(data=DataConfig(source=str(data_dir))).with_options(
        image_size=32, epochs=2, batch_size=8, precision="fp32", seed=seed, **options)
    run_id = store.create(cfg)
    assert execute_run(store, run_id).state == "finished"
    return run_id


def plotly_specs(at) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def test_every_page_renders_on_builtin_data(app_env):
    at = new_app(timeout=120).run()
    assert not at.exception
    # The default page is the data explorer, on the built-in synthetic phantoms.
    assert any("SYNTHETIC" in m.value for m in at.markdown)
    counts = plotly_specs(at)[0]
    assert {trace["name"] for trace in counts["data"]} == {"train", "val", "test"}
    assert set(counts["data"][0]["x"]) == {"normal", "benign", "malignant"}
    assert any("Imbalanced" in m.value for m in at.markdown)
    for page in PAGES[1:]:
        at.switch_page(page).run()
        assert not at.exception, page
        assert not at.error, (page, [e.value for e in at.error])


def test_data_explorer_lists_skipped_files(app_env, tiny_dataset):
    (tiny_dataset / "bright" / "broken.png").write_bytes(b"this is not a png")
    (tiny_dataset / "dark" / "empty.png").write_bytes(b"")
    at = choose_folder(new_app().run(), tiny_dataset)
    assert not at.exception
    tables = [df.value for df in at.dataframe]
    skipped = next(t for t in tables if "reason" in t.columns)
    assert {p.rsplit("/", 1)[-1] for p in skipped["file"]} == {"broken.png", "empty.png"}


def test_data_explorer_says_how_images_that_are_not_square_are_squeezed(app_env, tiny_dataset, tmp_path):
    at = choose_folder(new_app().run(), tiny_dataset)  # 32 x 32 px squares: nothing to say
    assert not at.exception and not any("without keeping its shape" in i.value for i in at.info)
    wide = write_tiny_dataset(tmp_path / "wide", size=32)
    for path in wide.rglob("*.png"):
        Image.open(path).resize((48, 32)).save(path)  # 3:2
    at = choose_folder(new_app().run(), wide)
    note = next(i.value for i in at.info if "without keeping its shape" in i.value)
    assert "None of the 28 images is square (48 × 32 px)" in note
    assert "to 0.67 of their width" in note and "preview below shows an image as the network sees it" in note


def test_data_explorer_warns_when_a_class_s_files_were_made_differently(app_env, tiny_dataset, tmp_path):
    at = choose_folder(new_app().run(), tiny_dataset)  # every class in gray PNG: nothing to say
    assert not at.exception and not any("made differently" in w.value for w in at.warning)
    mixed = write_tiny_dataset(tmp_path / "mixed", size=32)
    first = sorted(p for p in mixed.iterdir() if p.is_dir())[0]
    for path in first.rglob("*.png"):
        Image.open(path).save(path.with_suffix(".jpg"))
        path.unlink()
    at = choose_folder(new_app().run(), mixed)
    warning = next(w.value for w in at.warning if "made differently" in w.value)
    assert f"100% of the {first.name} images are JPEG files, against 0% of the other classes' images" in warning


def test_data_explorer_warns_when_the_split_cuts_across_patient_folders(app_env, tmp_path):
    root = write_tiny_dataset(tmp_path / "p", size=16)
    for i, path in enumerate(sorted(root.rglob("*.png"))):  # 4 patient folders of each class
        (path.parent / f"patient{i % 4}").mkdir(exist_ok=True)
        path.rename(path.parent / f"patient{i % 4}" / path.name)
    at = choose_folder(new_app().run(), root)
    warning = next(w.value for w in at.warning if "subfolder" in w.value)
    assert "The images sit in 8 subfolder" in warning and "below their class folders" in warning


def test_tiny_run_streams_history_and_stop_cancels(app_env, tiny_dataset):
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    set_tiny_options(at, epochs=200)
    at.button(key="start_training").click().run()
    assert not at.exception

    store = RunStore(app_env / "runs")
    run_id = store.list_ids()[0]
    deadline = time.monotonic() + 90
    epochs_seen = []
    while time.monotonic() < deadline:
        time.sleep(1.0)
        at.run()  # AppTest does not run fragment timers: each run() is one refresh
        done = [m.value for m in at.metric if m.label == "Epochs done"]
        if done:
            epochs_seen.append(int(done[0].split("/")[0]))
        if epochs_seen and epochs_seen[-1] >= 2:
            break
    assert epochs_seen and epochs_seen[-1] >= 2, "history did not stream into the page"
    assert epochs_seen == sorted(epochs_seen), "epoch count went backwards"
    # Curves are drawn from the streamed history.
    specs = plotly_specs(at)
    assert any(trace.get("name") == "validation loss" for spec in specs for trace in spec["data"])

    at.button(key=f"stop_{run_id}").click().run()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and store.status(run_id).state != "cancelled":
        time.sleep(0.5)
    at.run()
    assert store.status(run_id).state == "cancelled"
    assert any("Cancelled" in w.value for w in at.warning)
    assert store.has_weights(run_id), "the best checkpoint must survive a stop"


def test_a_run_with_image_size_0_is_named_after_the_size_the_page_says_it_trains_at(app_env, tiny_dataset):
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    set_tiny_options(at)
    at.number_input(key="opt_image_size").set_value(0).run()
    assert any("trains these images at 128 px" in c.value for c in at.caption)
    at.button(key="start_training").click().run()
    assert not at.exception
    store = RunStore(app_env / "runs")
    (run_id,) = store.list_ids()
    # As queued, before its worker chose anything (the worker would rename an "auto size" run as it starts)
    assert [t.value for t in at.toast] == [f"Queued: {escape_markdown(store.meta(run_id).name)}"]
    assert at.toast[0].value.endswith(" · 128 px")
    assert store.config(run_id).image_size == 0  # the config keeps what was asked
    at.button(key=f"stop_{run_id}").click().run()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and store.status(run_id).state not in ("cancelled", "finished"):
        time.sleep(0.5)
    assert store.meta(run_id).name.endswith(" · 128 px")


def test_the_run_panel_builds_its_figures_again_only_when_an_epoch_is_added(app_env, tiny_dataset, monkeypatch):
    import app.live as live

    built = []
    original = live.history_figure
    monkeypatch.setattr(live, "history_figure", lambda *a, **kw: built.append(1) or original(*a, **kw))
    store = RunStore(app_env / "runs")
    run_id = finished_run(store, tiny_dataset)
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    at.run()
    at.run()  # three redraws of the same history (the panel redraws every two seconds while a run trains)
    assert not at.exception and len(built) == 1
    assert any(trace.get("name") == "validation loss" for spec in plotly_specs(at) for trace in spec["data"])
    with open(store.root / run_id / "history.jsonl", "a", encoding="utf-8") as history:  # one more epoch
        record = json.loads((store.root / run_id / "history.jsonl").read_text().splitlines()[-1])
        history.write(json.dumps({**record, "epoch": record["epoch"] + 1}) + "\n")
    at.run()
    assert len(built) == 2


def test_the_recall_chart_marks_the_focus_class_before_a_model_is_saved(app_env, tiny_dataset):
    # A cross-validation run writes model.json when its first fold ends; until then the focus class comes from
    # the run's data record, so the chart marks it from the first epoch on.
    store = RunStore(app_env / "runs")
    run_id = finished_run(store, tiny_dataset)
    (store.root / run_id / "model.json").unlink()
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    names = [trace.get("name") for spec in plotly_specs(at) for trace in spec["data"]]
    assert "bright (focus)" in names and "dark" in names, names[6:]


def test_a_finished_run_says_its_test_scores_with_intervals_and_links_to_compare(app_env, tiny_dataset):
    store = RunStore(app_env / "runs")
    run_id = finished_run(store, tiny_dataset)
    metrics = store.metrics(run_id)
    test, focus = metrics.test, metrics.focus_class
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    assert not at.exception
    line = next(m.value for m in at.markdown if m.value.startswith("On its ")).replace("\\", "")  # unescaped
    support = test.per_class[focus].support
    found = round(test.recall(focus) * support)
    assert line.startswith(f"On its {test.n} test images: accuracy {test.accuracy:.2f} (")
    assert f"{focus} recall {test.recall(focus):.2f} (" in line
    assert f"{found} of its {support} images found" in line
    assert [link.label for link in at.get("page_link")] == ["Look closer: Compare runs"]


def test_compare_shows_two_confusion_matrices(app_env, tiny_dataset):
    store = RunStore(app_env / "runs")
    first = finished_run(store, tiny_dataset, seed=0)
    second = finished_run(store, tiny_dataset, seed=1, lr=1e-3)
    at = new_app().run()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception
    assert set(at.multiselect(key="compare_runs").value) == {first, second}
    names = {store.summary(first).name, store.summary(second).name}
    assert len(names) == 2  # same settings but the learning rate: "(2)" tells them apart
    matrices = [s for s in plotly_specs(at) if s["data"] and s["data"][0]["type"] == "heatmap"
                and s["layout"]["title"]["text"] in names]  # not the operating point's 2x2 matrix
    assert len(matrices) == 2
    assert matrices[0]["layout"]["xaxis"]["title"]["text"] == "predicted"
    assert matrices[0]["layout"]["yaxis"]["title"]["text"] == "true"
    assert any("learning rate" in m.value for m in at.markdown)
    # A run given Image size 0 chose 32 px here: compared by what it trained, its size is no difference.
    saved = store.config(second)
    (store.root / second / "config.json").write_text(saved.with_options(image_size=0).to_json(), encoding="utf-8")
    at.run()
    differs = next(m.value for m in at.markdown if "learning rate" in m.value)
    assert "image size" not in differs, differs
    assert any("what each run trained" in c.value for c in at.caption)


def _png_bytes(level: int = 200) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 40), level, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_try_it_predicts_an_uploaded_png(app_env, tiny_dataset):
    store = RunStore(app_env / "runs")
    finished_run(store, tiny_dataset)
    at = new_app().run()
    at.switch_page("app_pages/try_it.py").run()
    at.file_uploader(key="try_upload").upload("scan.png", _png_bytes(), "image/png").run()
    assert not at.exception
    predicted = [m for m in at.metric if m.label == "Predicted class"]
    assert predicted and predicted[0].value in {"bright", "dark"}
    bars = [s for s in plotly_specs(at) if s["data"][0]["type"] == "bar"]
    assert bars and abs(sum(bars[0]["data"][0]["x"]) - 1.0) < 1e-4
    wide = io.BytesIO()
    Image.fromarray(np.full((40, 60), 200, np.uint8)).save(wide, format="PNG")
    at.file_uploader(key="try_upload").upload("wide.png", wide.getvalue(), "image/png").run()
    captions = [img.caption.replace("\u00a0", " ") for element in at.get("image") for img in element.proto.imgs]
    assert "as the model sees it (60 × 40 px squeezed to 32 × 32)" in captions, captions
    assert not any("finer detail" in c.value for c in at.caption)  # shrunk to its 32 px input, as its images were


def test_try_it_says_when_an_image_shows_finer_detail_than_the_model_ever_saw(app_env, tiny_dataset):
    # The tiny dataset's 32 px images enlarged to 64 px; a 256 px image shrunk to 64 px shows twice their detail.
    store = RunStore(app_env / "runs")
    cfg = TrainConfig(data=DataConfig(source=str(tiny_dataset))).with_options(
        image_size=64, epochs=1, batch_size=8, precision="fp32")
    assert execute_run(store, store.create(cfg)).state == "finished"
    at = new_app().run()
    at.switch_page("app_pages/try_it.py").run()
    for side, expected in ((40, None), (256, "2.0 times finer detail")):
        image = io.BytesIO()
        Image.fromarray(np.full((side, side), 200, np.uint8)).save(image, format="PNG")
        at.file_uploader(key="try_upload").upload(f"{side}.png", image.getvalue(), "image/png").run()
        detail = [as_read(c.value) for c in at.caption if "px on its shorter side" in c.value]
        assert (expected in detail[0] and "typically 32 px" in detail[0]) if expected else not detail, detail


def test_try_it_picks_training_images_too_and_says_the_run_learned_from_them(app_env, tiny_dataset):
    """The pick list starts at the test images; a teacher can switch it to the training images to show what a
    model remembers, and the page says the run learned from the picked one."""
    store = RunStore(app_env / "runs")
    finished_run(store, tiny_dataset)
    at = open_on_folder(tiny_dataset, "app_pages/try_it.py")
    at.radio(key="try_source").set_value("Pick one from the current dataset").run()
    split = at.radio(key="try_split")
    assert split.value == "test" and split.options == ["test images", "validation images", "training images"]
    assert not [i for i in at.info if "learned from" in i.value]   # a test image: new to the model
    tests = at.selectbox(key="try_pick_test").options
    at.selectbox(key="try_pick_test").set_value(len(tests) - 1).run()    # a later test image, then another split
    at.radio(key="try_split").set_value("train").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    train_pick = at.selectbox(key="try_pick_train")
    assert train_pick.value == 0 and train_pick.options != tests
    learned = [i.value for i in at.info if "one of the images this run learned from" in i.value]
    assert len(learned) == 1 and "this run trained on it" in learned[0], learned
    assert train_pick.options[0].split(" (true")[0] in as_read(learned[0])   # the image named is the one picked
    at.radio(key="try_split").set_value("test").run()               # back to the test images: new again
    assert at.selectbox(key="try_pick_test").options == tests
    assert at.selectbox(key="try_pick_test").value == len(tests) - 1   # and the test image picked before
    assert not at.exception and not [i for i in at.info if "learned from" in i.value]
    at.radio(key="try_split").set_value("train").run()
    at.selectbox(key="try_pick_train").set_value(1).run()
    at.radio(key="try_source").set_value("Upload an image").run()   # an upload, then back to picking
    at.radio(key="try_source").set_value("Pick one from the current dataset").run()
    assert at.radio(key="try_split").value == "train" and at.selectbox(key="try_pick_train").value == 1


def test_try_it_says_when_the_image_is_one_the_run_learned_from(app_env, tiny_dataset):
    store = RunStore(app_env / "runs")
    run_id = finished_run(store, tiny_dataset)
    with open(store.file(run_id, "split.csv"), newline="", encoding="utf-8") as handle:
        train = next(Path(r["path"]) for r in csv.DictReader(handle) if r["split"] == "train")
    at = new_app().run()
    at.switch_page("app_pages/try_it.py").run()
    at.file_uploader(key="try_upload").upload("again.png", train.read_bytes(), "image/png").run()
    assert not at.exception and not at.error
    learned = [i.value for i in at.info if "one of the images this run learned from" in i.value]
    assert len(learned) == 1 and "this run trained on it" in learned[0], learned
    predicted = next(m for m in at.metric if m.label == "Predicted class")
    answer = predicted.value.replace("\\", "")
    assert predicted.proto.direction == predicted.proto.MetricDirection.NONE  # a confidence is not a rise: no arrow
    # Right: the answer may be memory; wrong: a tiny model missed an image it trained on, and the page says so.
    said = "remembers, not how it does" if answer == train.parent.name else f"Yet it answers {answer}, not"
    assert said in as_read(learned[0]), (answer, learned)
    at.file_uploader(key="try_upload").upload("scan.png", _png_bytes(), "image/png").run()  # a new image
    assert not at.exception and [m for m in at.metric if m.label == "Predicted class"]
    assert not [i for i in at.info if "learned from" in i.value]
    # The same scan re-exported (a little brighter, as a JPEG): other bytes, but a copy of a training image.
    gray = np.asarray(Image.open(train).convert("L"), dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(gray + 12, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=95)
    at.file_uploader(key="try_upload").upload("export.jpg", buf.getvalue(), "image/jpeg").run()
    assert not at.exception and not at.error
    copies = [as_read(i.value) for i in at.info if "this run learned from" in i.value]
    assert len(copies) == 1 and copies[0].startswith(f"This image is a near copy of {train.name}, a "
                                                     f"{train.parent.name} image this run learned from"), copies
    # the match is shown beside the upload, so that the claim can be judged by eye
    matches = [c.replace("\\", "") for img in at.image for c in img.captions if "image it matches" in c]
    assert matches == [f"the train image it matches: {train.name}"], matches


def test_try_it_bad_upload_shows_a_clear_error(app_env, tiny_dataset):
    store = RunStore(app_env / "runs")
    finished_run(store, tiny_dataset)
    at = new_app().run()
    at.switch_page("app_pages/try_it.py").run()
    at.file_uploader(key="try_upload").upload("notes.png", b"just some text, not pixels", "image/png").run()
    assert not at.exception
    assert at.error and "notes\\.png" in at.error[0].value and "not an image" in at.error[0].value  # name escaped
    assert not [m for m in at.metric if m.label == "Predicted class"]


def test_ensemble_switch_follows_the_folds_drawn_before_it(app_env):
    at = new_app().run()
    at.switch_page("app_pages/train.py").run()
    assert not at.toggle(key="opt_small_data_ensemble").disabled
    # The switch depends on the folds, so it is drawn after them and answers the new value in the same rerun.
    at.number_input(key="opt_folds").set_value(3).run()
    assert not at.exception
    assert at.toggle(key="opt_small_data_ensemble").disabled
    at.number_input(key="opt_folds").set_value(0).run()
    assert not at.toggle(key="opt_small_data_ensemble").disabled


def test_the_train_page_names_the_focus_class_of_these_images_and_refuses_one_they_lack(app_env, tiny_dataset):
    at = choose_folder(new_app().run(), tiny_dataset)  # classes bright and dark: no cancer class
    at.switch_page("app_pages/train.py").run()
    captions = " ".join(as_read(c.value) for c in at.caption)
    assert "These images have no such class, so the rarest" in captions
    assert not at.button(key="start_training").disabled
    at.text_input(key="opt_focus_class").set_value("malignant").run()
    assert not at.exception
    assert any("'malignant' is not in this dataset" in as_read(e.value) for e in at.error)
    assert at.button(key="start_training").disabled                       # refused before Start, not after a run
    # The reason sits beside the disabled button (in its container, before it), not below the long form.
    beside = [list(b.children.values()) for b in _blocks(at.main)
              if any(getattr(c, "key", None) == "start_training" for c in b.children.values())]
    assert beside and [type(c).__name__ for c in beside[0]][:2] == ["Error", "Button"]


def _blocks(node):
    """Every block under ``node``, in page order."""
    if isinstance(node, Block):
        yield node
        for child in node.children.values():
            yield from _blocks(child)


def test_start_does_not_wait_for_the_timing_of_the_options(app_env, tiny_dataset, monkeypatch):
    """Start and the runs are drawn before the options are timed (several seconds on a fresh machine), and the
    page run that starts a run does not time them: a probe then would slow the run's first epoch."""
    import streamlit as st
    from app_isolation import settle_timings, stand_in_costs

    import app.identity
    import app.model_summary

    timed, order = [], []
    monkeypatch.setattr(app.model_summary, "measure_costs",
                        lambda cfg, **kw: timed.append(cfg) or order.append("timed") or stand_in_costs(cfg))
    listed = app.identity.visible_runs
    monkeypatch.setattr(app.identity, "visible_runs", lambda runs: order.append("runs") or listed(runs))
    at = choose_folder(new_app().run(), tiny_dataset)
    order.clear()
    at.switch_page("app_pages/train.py").run()
    assert order[:2] == ["runs", "timed"]  # the runs column (after Start) is drawn before the probe is asked
    set_tiny_options(at)
    assert timed and any(m.label == "Whole run" for m in at.metric)
    st.cache_data.clear()  # a page run that timed the options now would start a probe
    timed.clear()
    at.button(key="start_training").click().run()
    assert not at.exception and RunStore(app_env / "runs").list_ids()  # the run was queued
    assert not timed and not any(m.label == "Whole run" for m in at.metric)
    assert any(c.value.startswith("⏱️ Not timed now: you have just pressed Start") for c in at.caption)
    at.run()  # the next redraw times the options again (in the background while the run trains)
    settle_timings(at)
    assert timed and any(m.label == "Whole run" for m in at.metric)


def test_the_timing_caption_is_still_and_gone_once_the_options_are_timed(app_env, tiny_dataset, monkeypatch):
    """No animated spinner while the probe times the options: drawn by a browser on the same machine, it slowed
    the probe's steps 1.4-1.7x. A still caption says what is happening and makes way for the estimate."""
    from app_isolation import stand_in_costs

    import app.model_summary

    monkeypatch.setattr(app.model_summary, "measure_costs", lambda cfg, **kw: stand_in_costs(cfg))
    assert app.model_summary._costs._info.show_spinner is False
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    assert not at.exception and any(m.label == "Whole run" for m in at.metric)
    assert not any(c.value.startswith("⏱️ Timing a few training steps") for c in at.caption)


def test_a_probe_stopped_by_start_is_shown_as_skipped_not_as_an_error(app_env, tiny_dataset, monkeypatch):
    """Start stops the probe that an earlier redraw of the page still waits for (simulated here from inside the
    probe: in the app the click's redraw runs meanwhile in another thread)."""
    import app.model_summary
    from medcls.training.estimate import ProbeStopped

    stops = []

    def probe_stopped_meanwhile(cfg, *, stop, **_settings):
        stops.append(stop)
        app.model_summary.stop_timing()  # what the click's redraw calls once the run is queued
        if stop.is_set():
            raise ProbeStopped("The timing probe was stopped: a run started.")
        raise AssertionError("stop_timing did not reach the probe this page waits for")

    monkeypatch.setattr(app.model_summary, "measure_costs", probe_stopped_meanwhile)
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    assert not at.exception and stops and stops[-1].is_set()
    assert not at.error, [e.value for e in at.error]  # not "This model cannot be built or timed"
    assert any(c.value.startswith("⏱️ Not timed now") for c in at.caption)
    assert not at.session_state["_timing_probes"]  # a finished probe's stop signal is not kept


def test_the_options_are_timed_after_a_warming_training_process_is_ready(app_env, tiny_dataset, monkeypatch):
    """A training process warming up (the app has just opened) would make the probe time one thread; the probe
    waits for it first, and a Start pressed during that wait starts no probe at all."""
    from app_isolation import stand_in_costs

    import app.model_summary
    from medcls.jobs.manager import JobManager

    order = []
    monkeypatch.setattr(app.model_summary, "measure_costs",
                        lambda cfg, **kw: order.append("timed") or stand_in_costs(cfg))
    monkeypatch.setattr(JobManager, "await_warm_worker",
                        lambda self, timeout, should_stop: order.append(("waited", timeout)) or True)
    at = choose_folder(new_app().run(), tiny_dataset)
    order.clear()
    at.switch_page("app_pages/train.py").run()
    assert order == [("waited", app.model_summary.STANDBY_WAIT_S), "timed"]
    assert any(m.label == "Whole run" for m in at.metric)

    def start_pressed_while_waiting(self, timeout, should_stop):
        app.model_summary.stop_timing()  # what the click's redraw calls once the run is queued
        return should_stop()

    monkeypatch.setattr(JobManager, "await_warm_worker", start_pressed_while_waiting)
    at.number_input(key="opt_image_size").set_value(48).run()  # options not timed yet: a cache miss
    assert "timed" not in order[2:]  # no probe process was started
    assert not at.error and any(c.value.startswith("⏱️ Not timed now") for c in at.caption)


def test_while_a_run_trains_the_options_are_timed_from_a_quiet_measurement_if_there_is_one(app_env, tiny_dataset,
                                                                                           monkeypatch):
    """A probe beside a training run slows it and times the one core it leaves, while the next run gets both."""
    import dataclasses
    import time

    from app_isolation import settle_timings, stand_in_costs

    import app.model_summary
    from medcls.jobs.manager import JobManager
    from medcls.training.quiet_timings import remember_quiet

    timed = []
    monkeypatch.setattr(app.model_summary, "measure_costs", lambda cfg, **kw: timed.append(cfg) or stand_in_costs(cfg))
    monkeypatch.setattr(app.model_summary, "usable_cores", lambda: 2)  # the stand-in probe answers 1 thread
    monkeypatch.setattr(JobManager, "running", lambda self: ["someone-elses-run"])
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    settle_timings(at)
    assert len(timed) == 1  # nothing measured on a quiet machine yet: timed beside the run, and said so
    assert any("Measured now on this machine beside the run training" in c.value and "all 2 cores" in c.value
               for c in at.caption)

    quiet = dataclasses.replace(stand_in_costs(timed[0]), threads=2, decode_image_s=0.001)
    monkeypatch.setattr("medcls.training.quiet_timings.usable_cores", lambda: 2)
    assert remember_quiet(timed[0], quiet, now=time.time() - 12 * 60)
    at.run()
    assert len(timed) == 1  # not timed again beside the run
    (words,) = [c.value for c in at.caption if "Measured on this machine 12 min ago while nothing trained" in c.value]
    assert "2 threads" in words and "each run gets the whole machine when its turn comes" in words
    monkeypatch.setattr(JobManager, "running", lambda self: [])  # the run ended: timed now, with every core
    at.run()
    assert len(timed) == 2 and not any("beside the run" in c.value or "ago" in c.value for c in at.caption)


def test_while_a_run_trains_the_page_does_not_wait_for_a_probe_beside_it(app_env, tiny_dataset, monkeypatch):
    """A page run that waited for the probe (about 10 s beside a run on 2 cores) held up every redraw of the page,
    the live panel of the run training included; the options are timed in the background instead, and a small
    fragment redraws the page once they are."""
    import threading

    from app_isolation import settle_timings, stand_in_costs

    import app.model_summary
    from medcls.jobs.manager import JobManager
    from medcls.training.probe_board import ProbePending

    release, timed = threading.Event(), []

    def slow_probe(cfg, **_settings):
        assert release.wait(30), "the test never released the probe"
        timed.append(cfg)
        return stand_in_costs(cfg)

    monkeypatch.setattr(app.model_summary, "measure_costs", slow_probe)
    monkeypatch.setattr(JobManager, "running", lambda self: ["someone-elses-run"])
    at = choose_folder(new_app().run(), tiny_dataset)
    with pytest.raises(ProbePending):  # another session's options are being timed already: these wait behind them
        app.model_summary._beside_runs().ask("someone else's options", lambda stop: release.wait(30) and {})
    began = time.monotonic()
    at.switch_page("app_pages/train.py").run()
    assert time.monotonic() - began < 10 and not at.exception and not timed  # drawn while the probe still runs
    assert not any(m.label == "Whole run" for m in at.metric)
    (waiting,) = [c.value for c in at.caption if "in the background" in c.value]
    assert waiting.startswith("⏱️ Timing these options beside the run training")
    assert "once they are timed. 1 other option set is timed first, one at a time." in waiting
    at.run()  # a redraw meanwhile starts no second probe
    assert len(at.session_state["_timing_probes"]) == 1
    release.set()
    settle_timings(at)
    assert len(timed) == 1 and any(m.label == "Whole run" for m in at.metric)
    assert any("Measured now on this machine beside the run training" in c.value for c in at.caption)


def test_changing_an_option_stops_the_probe_beside_a_run_that_no_one_waits_for(app_env, tiny_dataset, monkeypatch):
    """Beside a run the probes take turns; a session that changed its options no longer waits for the old ones."""
    import app.model_summary
    from medcls.jobs.manager import JobManager

    stops = []

    def probe_until_stopped(cfg, *, stop, **_settings):
        stops.append(stop)
        assert stop.wait(30), "the probe was never stopped"
        raise RuntimeError("stopped")

    monkeypatch.setattr(app.model_summary, "measure_costs", probe_until_stopped)
    monkeypatch.setattr(JobManager, "running", lambda self: ["someone-elses-run"])
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    assert any("in the background" in c.value for c in at.caption)
    board = app.model_summary._beside_runs()
    for _ in range(100):  # the board's thread starts the first probe
        if stops:
            break
        time.sleep(0.02)
    first = stops[0]
    at.number_input(key="opt_batch_size").set_value(8).run()  # another probe key: the first is no one's wait
    assert first.is_set() and not at.exception
    board.stop_all()
    assert board.wait(10)


def test_start_stops_a_probe_beside_a_run(app_env, tiny_dataset, monkeypatch):
    """The probe runs in the background now, but Start still ends it: the new run needs the CPU."""
    import app.model_summary
    from medcls.jobs.manager import JobManager
    from medcls.training.estimate import ProbeStopped

    stops = []

    def probe_until_stopped(cfg, *, stop, **_settings):
        stops.append(stop)
        if not stop.wait(30):
            raise AssertionError("Start did not stop the probe beside the run")
        raise ProbeStopped("The timing probe was stopped: a run started.")

    monkeypatch.setattr(app.model_summary, "measure_costs", probe_until_stopped)
    monkeypatch.setattr(JobManager, "running", lambda self: ["someone-elses-run"])
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    set_tiny_options(at)
    assert any("in the background" in c.value for c in at.caption)
    at.button(key="start_training").click().run()
    assert app.model_summary._beside_runs().wait(10) and stops and all(s.is_set() for s in stops)
    assert not at.exception and not at.error


def test_a_probe_beside_a_run_stopped_earlier_is_timed_again_not_shown_as_just_started(app_env, tiny_dataset,
                                                                                          monkeypatch):
    """A probe stopped for a reason of its time (a Start, maybe another session's, or the end of a run) is not a
    later redraw's news: the options are timed again instead of saying "you have just pressed Start"."""
    from app_isolation import settle_timings, stand_in_costs

    import app.model_summary
    from medcls.jobs.manager import JobManager
    from medcls.training.estimate import ProbeStopped

    probes = []

    def stopped_the_first_time(cfg, *, stop, **_settings):
        probes.append(stop)
        if len(probes) == 1:
            assert stop.wait(30), "the probe was never stopped"
            raise ProbeStopped("The timing probe was stopped: a run started.")
        return stand_in_costs(cfg)

    monkeypatch.setattr(app.model_summary, "measure_costs", stopped_the_first_time)
    monkeypatch.setattr(JobManager, "running", lambda self: ["someone-elses-run"])
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    assert any("in the background" in c.value for c in at.caption)
    app.model_summary._beside_runs().stop_all()  # as another session's Start would
    settle_timings(at)
    assert len(probes) == 2 and not at.error
    assert not any(c.value.startswith("⏱️ Not timed now") for c in at.caption)
    assert any(m.label == "Whole run" for m in at.metric)


def test_a_timing_taken_while_other_programs_kept_the_machine_busy_says_so(app_env, tiny_dataset, monkeypatch):
    """E.g. the app's standby worker starting beside the probe: the estimate is true for now, not for a quiet
    machine, and the page should not present it as the machine's speed."""
    import dataclasses

    from app_isolation import stand_in_costs

    import app.model_summary

    busy_beside = lambda cfg, **kw: dataclasses.replace(stand_in_costs(cfg), others_cores=1.2)  # noqa: E731
    monkeypatch.setattr(app.model_summary, "measure_costs", busy_beside)
    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    assert not at.error
    assert any("while other programs kept about 1.2 of its cores busy" in c.value
               and "on a quiet machine a run will likely be faster" in c.value for c in at.caption)


def test_a_busy_timing_is_taken_again_after_a_minute_and_a_quiet_one_says_how_old_it_is(app_env, tiny_dataset,
                                                                                         monkeypatch):
    """A timing beside a stopped run's testing was shown to everyone for ten minutes as 'Measured now', 40% slower
    than the quiet machine it was by then."""
    import dataclasses
    from types import SimpleNamespace

    from app_isolation import stand_in_costs

    import app.model_summary

    clock = [1_000_000.0]
    busy = [1.2]
    timed = []

    def measure(cfg, **kw):
        timed.append(busy[0])
        return dataclasses.replace(stand_in_costs(cfg), others_cores=busy[0])

    monkeypatch.setattr(app.model_summary, "measure_costs", measure)
    monkeypatch.setattr(app.model_summary, "time", SimpleNamespace(time=lambda: clock[0]))

    def timing_words(at) -> str:
        (words,) = [c.value for c in at.caption if "as a training run would run" in c.value]
        return words

    at = choose_folder(new_app().run(), tiny_dataset)
    at.switch_page("app_pages/train.py").run()
    assert not at.error and timed == [1.2]
    assert "Measured just now on this machine" in timing_words(at) and "1.2 of its cores busy" in timing_words(at)
    clock[0] += 30
    at.run()
    assert timed == [1.2]  # within a minute: the busy timing still stands
    busy[0] = 0.0
    clock[0] += 40
    at.run()
    assert timed == [1.2, 0.0]  # over a minute: taken again, now on a quiet machine
    assert "cores busy" not in timing_words(at)
    clock[0] += 5 * 60
    at.run()
    assert timed == [1.2, 0.0]  # a quiet timing is kept for ten minutes, and says how old it is
    assert "Measured 5 min ago on this machine" in timing_words(at)


def test_an_uploaded_zip_is_named_by_its_file_not_its_place_on_the_server(app_env, tiny_dataset):
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for image in sorted(tiny_dataset.rglob("*.png")):
            zf.write(image, f"tiny/{image.relative_to(tiny_dataset)}")
    at = new_app().run()
    at.sidebar.radio(key="data_kind").set_value("zip").run()
    at.sidebar.file_uploader(key="data_zip").upload("my scans.zip", buf.getvalue(), "application/zip").run()
    assert not at.exception and not at.error
    captions = [as_read(m.value) for m in at.markdown if "images, 2 classes" in m.value]
    assert captions and captions[0].startswith("**my_scans.zip (uploaded)** · 28 images"), captions
    assert "uploads" not in captions[0]


def test_keep_subfolders_is_shown_off_and_disabled_for_data_without_folders(app_env, tiny_dataset):
    at = new_app()
    at.query_params["data_group_subfolders"] = "true"   # kept in a URL from a folder of patient folders
    at.run()
    box = at.sidebar.checkbox(key="data_group_subfolders_none")
    assert box.disabled and box.value is False and "Not for the built-in phantoms" in box.help
    assert at.session_state["data_config"]["group_subfolders"] is False  # what the pages split by
    at = choose_folder(at, tiny_dataset)
    assert not at.sidebar.checkbox(key="data_group_subfolders").disabled
    assert at.session_state["data_config"]["group_subfolders"] is True
