"""AppTest: the Grad-CAM heatmap on the Try-it page, its class choice and its opacity slider."""

from __future__ import annotations

from apphelpers import open_on_folder

from medcls.config import DataConfig, TrainConfig
from medcls.jobs.execute import execute_run
from medcls.runs.store import RunStore


def _image_captions(at) -> list[str]:
    return [img.caption for element in at.get("image") for img in element.proto.imgs]


def _picker(at):
    """The class picker of the image shown (its key names the image: a new image starts at its prediction)."""
    (picker,) = [s for s in at.selectbox if s.label == "Show the evidence for"]
    return picker


def _try_a_dataset_image(app_env, tiny_dataset, **options):
    """Train a tiny run on the folder, open Try it on one of its images; the AppTest."""
    store = RunStore(app_env / "runs")
    cfg = TrainConfig(data=DataConfig(source=str(tiny_dataset))).with_options(
        image_size=32, epochs=1, batch_size=8, precision="fp32", blocks=3, **options)
    run_id = store.create(cfg)
    assert execute_run(store, run_id).state == "finished"

    at = open_on_folder(tiny_dataset, "app_pages/try_it.py")
    at.radio(key="try_source").set_value("Pick one from the current dataset").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def test_gradcam_overlay_follows_the_slider_and_the_class(app_env, tiny_dataset):
    at = _try_a_dataset_image(app_env, tiny_dataset)
    predicted = at.metric[0].value
    assert _picker(at).value == predicted  # explains the prediction by default
    assert at.slider(key="gradcam_alpha").value == 0.4
    assert f"Grad-CAM for {predicted} · opacity 0.40" in _image_captions(at)

    at.slider(key="gradcam_alpha").set_value(0.8).run()
    assert not at.exception
    assert f"Grad-CAM for {predicted} · opacity 0.80" in _image_captions(at)

    other = next(c for c in ("bright", "dark") if c != predicted)
    _picker(at).set_value(other).run()
    assert not at.exception and not at.error
    assert f"Grad-CAM for {other} · opacity 0.80" in _image_captions(at)
    assert any(other in c.value for c in at.caption if "Grad-CAM heatmap" in c.value)

    # Another image starts again at its own prediction, and the caption names that class.
    at.selectbox(key="try_pick_test").set_value(1).run()
    assert not at.exception
    now = at.metric[0].value
    assert _picker(at).value == now
    assert f"Grad-CAM for {now} · opacity 0.80" in _image_captions(at)


def test_a_fold_ensemble_run_shows_its_heatmap(app_env, tiny_dataset):
    """The default recipe trains a small dataset as a fold ensemble: its heatmap (the members' maps averaged) is
    drawn on Try it, where asking the ensemble for its grid once failed the whole section."""
    at = _try_a_dataset_image(app_env, tiny_dataset, folds=2)
    predicted = at.metric[0].value
    assert f"Grad-CAM for {predicted} · opacity 0.40" in _image_captions(at)
    assert any("2 models predicting together" in c.value for c in at.caption if "Grad-CAM heatmap" in c.value)
