"""AppTest: the compare page's operating point, intervals, calibration, error browser and run card."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from apphelpers import new_app
from PIL import Image
from plotly.offline import get_plotlyjs
from streamlit.runtime.media_file_manager import MediaFileManager

from medcls.config import DataConfig, TrainConfig
from medcls.data.cache import clear_memory_cache
from medcls.jobs.execute import execute_run
from medcls.runs.store import RunStore

# Mean brightness per class, and a per-image jitter that makes neighbouring classes overlap: a trained model
# separates them only partly, so its scores spread out and a threshold matters.
LEVELS = {"normal": 110, "benign": 130, "malignant": 150}
IMAGE_JITTER = 12.0

# Its trained runs are module fixtures: all in one test process, each is trained once, not once per process.
pytestmark = pytest.mark.xdist_group("compare-analysis")


def _write_dataset(root: Path, per_class: int = 30, size: int = 32) -> Path:
    rng = np.random.default_rng(0)
    for label, level in LEVELS.items():
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            arr = rng.normal(level + rng.normal(0, IMAGE_JITTER), 35, (size, size)).clip(0, 255).astype(np.uint8)
            Image.fromarray(arr).save(folder / f"{label} ({i}).png")
    return root


def _train_once(base: Path, run_id: str, per_class: int, **options) -> Path:
    """A finished run on a fresh dataset in ``base`` (its own cache), for a module fixture; its folder."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDCLS_CACHE_DIR", str(base / "cache"))
        clear_memory_cache()
        data = _write_dataset(base / "data", per_class=per_class)
        store = RunStore(base / "runs")
        cfg = TrainConfig(data=DataConfig(source=str(data))).with_options(
            image_size=32, batch_size=16, precision="fp32", seed=0, **options)
        store.create(cfg, run_id=run_id)
        assert execute_run(store, run_id).state == "finished"
        clear_memory_cache()
    return store.path(run_id)


@pytest.fixture(scope="module")
def _trained(tmp_path_factory) -> Path:
    """One finished 3-class run, trained once for this module; each test gets a copy of its folder."""
    return _train_once(tmp_path_factory.mktemp("compare-analysis"), "analysis-run", per_class=30, epochs=8,
                       lr=1e-2, ema_decay=0.0, augment=False)


@pytest.fixture
def page(app_env, phantom_cache, _trained):
    """The compare page showing the trained run; returns (AppTest, store, run id).

    ``phantom_cache`` shares the built-in dataset (which the sidebar loads) across tests.
    """
    store = RunStore(app_env / "runs")
    shutil.copytree(_trained, store.root / _trained.name)
    at = new_app()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception, at.exception
    return at, store, _trained.name


def _metric(at, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _sensitivity(y_true: np.ndarray, scores: np.ndarray, positive: list[int], threshold: float) -> float:
    """Computed here with plain numpy, independently of medcls.operating_point."""
    is_pos = np.isin(y_true, positive)
    return float((scores[is_pos] >= threshold).mean())


def test_threshold_slider_changes_the_sensitivity_shown(page):
    at, store, run_id = page
    _p = store.predictions(run_id, "test")
    _, y_test, p_test, classes = _p.paths, _p.y_true, _p.probs, _p.classes
    m = classes.index("malignant")
    assert at.radio(key="op_mode").value == "One class against the rest"
    assert at.selectbox(key="op_class").value == "malignant"  # the focus class by default
    at.slider(key="op_threshold").set_value(0.0).run()
    assert _metric(at, "Sensitivity (test)") == "100.0%"
    scores = np.sort(p_test[y_test == m, m])
    middle = float(np.floor(scores[len(scores) // 2] * 1000) / 1000)  # a slider step inside the score range
    expected = _sensitivity(y_test, p_test[:, m], [m], middle)
    assert 0 < expected < 1, "the synthetic run should be unsure enough for a threshold to matter"
    at.slider(key="op_threshold").set_value(middle).run()
    assert not at.exception
    assert _metric(at, "Sensitivity (test)") == f"{expected:.1%}"
    # the 2x2 matrix follows: its bottom row (true malignant) sums to the malignant test images
    matrix = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
                  if json.loads(c.proto.spec)["layout"]["title"]["text"].startswith("Test at threshold"))
    counts = [[int(v) for v in row] for row in matrix["data"][0]["text"]]  # rows true, columns predicted
    assert counts[1][1] == round(expected * (y_test == m).sum()) and sum(counts[1]) == (y_test == m).sum()
    # beside the threshold's figures: the run's own answers (the most probable class), as the test metrics count
    own = int(((p_test.argmax(1) == m) & (y_test == m)).sum())
    assert any(f"flag {own} of {(y_test == m).sum()} malignant test images" in c.value.replace("\\", "")
               for c in at.caption)


def test_find_threshold_reaches_95_percent_sensitivity_on_validation(page):
    at, store, run_id = page
    _p = store.predictions(run_id, "val")
    _, y_val, p_val, classes = _p.paths, _p.y_true, _p.probs, _p.classes
    _p = store.predictions(run_id, "test")
    _, y_test, p_test, _ = _p.paths, _p.y_true, _p.probs, _p.classes
    m = classes.index("malignant")
    assert at.number_input(key="op_target").value == 95.0
    at.button(key="op_find").click().run()
    assert not at.exception and not at.error
    threshold = at.slider(key="op_threshold").value
    assert _sensitivity(y_val, p_val[:, m], [m], threshold) >= 0.95
    assert any(f"{threshold:.3f}" in s.value for s in at.success)
    assert _metric(at, "Sensitivity (test)") == f"{_sensitivity(y_test, p_test[:, m], [m], threshold):.1%}"
    # the highest such threshold: one step higher misses the target on validation
    assert _sensitivity(y_val, p_val[:, m], [m], threshold + 0.0011) < 0.95 or threshold >= 0.999


def test_grouped_view_is_lesion_against_normal(page):
    at, store, run_id = page
    _p = store.predictions(run_id, "test")
    _, y_test, p_test, classes = _p.paths, _p.y_true, _p.probs, _p.classes
    at.radio(key="op_mode").set_value("Merge classes into a group").run()
    group = at.multiselect(key="op_group")
    assert set(group.value) == {"benign", "malignant"}
    assert group.proto.select_all == 0  # every class in the positive group would leave no negative one
    at.slider(key="op_threshold").set_value(0.7).run()
    lesion = [classes.index("benign"), classes.index("malignant")]
    expected = _sensitivity(y_test, p_test[:, lesion].sum(1), lesion, 0.7)
    assert _metric(at, "Sensitivity (test)") == f"{expected:.1%}"
    assert any("benign + malignant" in m.value.replace("\\", "") for m in at.markdown)  # class names are escaped


def test_intervals_and_calibration_are_shown(page):
    at, store, run_id = page
    intervals = store.metrics(run_id).intervals["test"]
    table = next(df.value for df in at.dataframe if "malignant AP" in df.value.index
                 and "(" in str(df.value.loc["accuracy"].iloc[0]))  # the metrics table holds plain numbers
    acc = intervals["accuracy"]
    name = store.summary(run_id).name
    assert table.loc["accuracy", name] == f"{acc['estimate']:.2f} ({acc['low']:.2f}–{acc['high']:.2f})"
    assert any("test images" in w.value and "percentage points" in w.value for w in at.warning)
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    reliability = next(s for s in specs if s["layout"]["title"]["text"].startswith("Reliability"))
    assert any("ECE=" in trace["name"] for trace in reliability["data"])
    assert any("Expected calibration error" in m.value for m in at.markdown)


def test_error_browser_shows_the_images_of_the_chosen_cell(page):
    at, store, run_id = page
    _p = store.predictions(run_id, "test")
    paths, y_test, p_test, classes = _p.paths, _p.y_true, _p.probs, _p.classes
    y_pred = p_test.argmax(1)
    # the first cell offered is a mistake (when there is one), and the page opens on a missed malignant if any
    first = at.selectbox(key="err_cell").value
    assert first[0] != first[1] or (y_pred == y_test).all()
    # pick each cell and compare the thumbnails with the cell computed here
    for t, true in enumerate(classes):
        for p, predicted in enumerate(classes):
            expected = {Path(paths[i]).name for i in np.flatnonzero((y_test == t) & (y_pred == p))}
            if not expected:
                continue
            at.selectbox(key="err_cell").set_value((true, predicted, len(expected))).run()
            assert not at.exception
            grid = [c.replace("\\", "") for img in at.image for c in img.captions if not c.startswith("true:")]
            shown = {c.split(" · ")[0] for c in grid}
            assert len(grid) == min(len(expected), 12)
            assert shown <= expected
            if len(expected) <= 12:
                assert shown == expected
            # worst first: the probability of the true class goes up along the grid
            p_true = [float(c.split(f"P({true}) ")[1].split("%")[0]) for c in grid]
            assert p_true == sorted(p_true)


def test_test_images_whose_copy_the_run_learned_from_are_marked_in_both_image_views(page):
    from medcls.analysis.error_cases import cell_cases, cell_options

    at, store, run_id = page
    test = store.predictions(run_id, "test")
    true, predicted, count = cell_options(test.y_true, test.probs, test.classes)[0]
    first = cell_cases(test.paths, test.y_true, test.probs, test.classes, true, predicted, order="confident")[0]
    metrics = json.loads(store.file(run_id, "metrics.json").read_text())
    metrics["test_copies"] = [first.path]  # as if the run had found a copy of it among train + val
    store.file(run_id, "metrics.json").write_text(json.dumps(metrics))
    at.session_state["cm_picked"] = {"run": run_id, "true": true, "predicted": predicted}
    at.selectbox(key="err_cell").set_value((true, predicted, count))
    at.run()
    assert not at.exception and not at.error
    captions = [c.replace("\\", "") for img in at.image for c in img.captions]
    marked = [c for c in captions if "copy learned" in c]
    # the clicked cell's grid and the error browser's grid each mark it, and only it
    assert len(marked) == 2 and all(c.startswith(first.name) for c in marked), captions
    said = [c.value for c in at.caption if "'copy learned'" in c.value]
    assert len(said) == 2 and all("It marks 1 image here" in c for c in said), said


def test_run_card_download_holds_the_run_and_an_embedded_plot(page, monkeypatch):
    at, store, run_id = page
    captured = {}
    original = MediaFileManager.add_deferred

    def capture(self, callable_, mimetype, *args, **kwargs):
        if mimetype == "text/html":  # the run card, not the page's other downloads
            captured["data"] = callable_
        return original(self, callable_, mimetype, *args, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", capture)
    at.run()
    button = at.download_button(key="run_card")
    assert "run card" in button.proto.label
    html = captured["data"]()
    html = html.decode() if isinstance(html, bytes) else html
    assert run_id in html and "Plotly.newPlot" in html
    assert html.count(get_plotlyjs()[:200]) == 1  # plotly.js inlined once: the card opens offline


def test_grad_cam_toggle_shows_heat_maps_for_the_true_and_predicted_class(page):
    at, store, run_id = page
    true, predicted, _ = at.selectbox(key="err_cell").value
    assert not [c for img in at.image for c in img.captions if c.startswith("Where the model looked")]
    at.toggle(key="err_gradcam").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    heat = [c for img in at.image for c in img.captions if c.startswith("Where the model looked")]
    assert heat == list(dict.fromkeys([f"Where the model looked for '{true}'",
                                       f"Where the model looked for '{predicted}'"]))


def test_a_picked_confusion_cell_shows_its_images_and_opens_one_in_try_it(page):
    """The click itself is covered in the browser (tests/e2e/test_teaching.py); here, what a picked cell shows."""
    from app.text import escape_markdown
    from medcls.analysis.error_cases import cell_cases, cell_options

    at, store, run_id = page
    assert any("Click a cell" in c.value for c in at.caption)
    test = store.predictions(run_id, "test")
    true, predicted, count = cell_options(test.y_true, test.probs, test.classes)[0]  # the biggest mistake
    cases = cell_cases(test.paths, test.y_true, test.probs, test.classes, true, predicted, order="confident")
    at.session_state["cm_picked"] = {"run": run_id, "true": true, "predicted": predicted}
    at.run()
    assert not at.exception and not at.error
    captions = [img.caption for element in at.get("image") for img in element.proto.imgs
                if "· true" in img.caption]
    # Captions are Markdown: file names like "malignant (15).png" arrive escaped and show as written.
    assert captions == [escape_markdown(f"{c.name} · true {true}, predicted {predicted}") for c in cases[:24]]
    lines = [c.value for c in at.caption]
    assert all(escape_markdown(c.probability_line) in lines for c in cases[:24])
    assert any(f"{count} test image" in m.value for m in at.markdown)

    at.toggle(key="cm_gradcam").set_value(True).run()
    assert not at.exception and not at.error
    assert len([img for element in at.get("image") for img in element.proto.imgs if "· true" in img.caption]) \
        == min(count, 24)

    at.button(key="cm_try_0").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="try_run").value == run_id
    assert at.radio(key="try_source").value == "Pick one from the current dataset"
    pick = at.selectbox(key="try_pick_test")
    label = pick.options[pick.index]
    assert label == f"{cases[0].name} (true: {true})"  # not in the sidebar's dataset: offered first
    assert at.metric[0].value == predicted
    assert f"❌ Filed as **{true}** in the dataset: the model's answer is wrong." in [c.value for c in at.caption]


def test_a_fold_ensembles_threshold_is_said_to_be_chosen_out_of_fold(page):
    from medcls.runs.results import CrossValidation, FoldScore

    at, store, run_id = page
    assert not any("out of fold" in c.value for c in at.caption)  # one model: its validation split
    score = FoldScore(fold=1, images=9, macro_f1=0.5, accuracy=0.5, balanced_accuracy=0.5, focus_recall=0.5,
                      best_epoch=1, epochs=2)
    store.write_cross_validation(run_id, CrossValidation(folds=2, grouped=False, scores=(score,) * 2, completed=2))
    at.run()
    n = len(store.predictions(run_id, "val"))
    assert any(f"all {n} of its training + validation images" in c.value and "out of fold" in c.value
               for c in at.caption), [c.value for c in at.caption]


@pytest.fixture(scope="module")
def _trained_ensemble(tmp_path_factory) -> Path:
    """A finished 2-fold ensemble (the default recipe's shape for a small dataset), trained once."""
    return _train_once(tmp_path_factory.mktemp("compare-ensemble"), "ensemble-run", per_class=20, epochs=2, folds=2)


def test_a_fold_ensembles_heat_maps_are_drawn_in_both_places(app_env, phantom_cache, _trained_ensemble):
    """Asking an ensemble for its layer grid once failed the error browser's and the cells' heat maps."""
    store = RunStore(app_env / "runs")
    shutil.copytree(_trained_ensemble, store.root / _trained_ensemble.name)
    at = new_app()
    at.switch_page("app_pages/compare.py").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    at.toggle(key="err_gradcam").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [c for img in at.image for c in img.captions if c.startswith("Where the model looked")]
    assert any("2 models predicting together" in c.value for c in at.caption)
    test = store.predictions(_trained_ensemble.name, "test")
    true, predicted = test.classes[int(test.y_true[0])], test.classes[int(test.probs[0].argmax())]
    at.session_state["cm_picked"] = {"run": _trained_ensemble.name, "true": true, "predicted": predicted}
    at.run()
    at.toggle(key="cm_gradcam").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [img for element in at.get("image") for img in element.proto.imgs if "· true" in img.caption]


def test_two_runs_on_the_same_images_are_compared_image_by_image(page):
    """A copy of the run that gets every test image right: a clear difference by McNemar's test, which the page
    says in words, with the images only one run got right counted."""
    import pandas as pd

    at, store, run_id = page
    assert not any("Image by image" in m.value for m in at.markdown)   # one run: nothing to pair
    better = "analysis-run-better"
    shutil.copytree(store.path(run_id), store.root / better)
    csv = store.root / better / "predictions.csv"
    rows = pd.read_csv(csv)
    test = rows["split"] == "test"
    wrong = int((rows.loc[test, "true"] != rows.loc[test, "pred"]).sum())
    assert wrong >= 6   # the fixture's run separates the classes only partly
    for label in LEVELS:
        rows.loc[test, f"p_{label}"] = (rows.loc[test, "true"] == label).astype(float)
    rows.loc[test, "pred"] = rows.loc[test, "true"]
    rows.to_csv(csv, index=False)
    at.multiselect(key="compare_runs").set_value([run_id, better]).run()
    assert not at.exception, at.exception
    heading = next(m.value for m in at.markdown if m.value.startswith("**Image by image.**"))
    sentences = next(m.value for m in at.markdown if m.value.startswith("- ") and "McNemar" in m.value)
    assert "raised accuracy" in sentences and f"got right {wrong} test images that" in sentences
    assert "clear difference" in sentences and "Each run against" in heading
    assert any("compared more sharply image by image below" in c.value for c in at.caption)
