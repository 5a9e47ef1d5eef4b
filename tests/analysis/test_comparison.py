"""Run comparison helpers: the settings table, the metrics table and whether runs are comparable."""

from __future__ import annotations

import numpy as np

from medcls.analysis.comparison import as_trained, comparability, config_rows, metrics_rows
from medcls.analysis.metrics import classification_metrics
from medcls.config import TrainConfig
from medcls.runs.records import ModelRecord
from medcls.runs.results import CrossValidation


def test_rows_list_only_differences_with_labels_and_run_names():
    a = TrainConfig()
    rows = config_rows({"r1": a, "r2": a.with_options(lr=1e-3, epochs=5)}, {"r1": "first", "r2": "second"})
    assert {row["setting"] for row in rows} == {"Learning rate", "Epochs"}
    lr_row = next(r for r in rows if r["setting"] == "Learning rate")
    assert lr_row["first"] == "0.002" and lr_row["second"] == "0.001"


def test_runs_are_compared_by_the_size_and_folds_they_chose():
    record = ModelRecord(classes=("a", "b"), image_size=192, in_channels=1, color="gray", folds=3)
    cv = CrossValidation(folds=3, grouped=False, scores=(), completed=1)
    chose, given = TrainConfig(), TrainConfig().with_options(image_size=128)
    assert as_trained(chose, record, cv).image_size == 192 and as_trained(chose, record, cv).folds == 3
    assert as_trained(chose, None, cv).folds == 3  # a cross-validation run before its first fold model is saved
    assert as_trained(chose, None, None) == chose  # nothing chosen yet: as saved
    one_model = ModelRecord(classes=("a", "b"), image_size=128, in_channels=1, color="gray")
    assert as_trained(chose, one_model, None) == given  # chose 128 px and one model: trained like a run given 128
    rows = config_rows({"chose": as_trained(chose, record, cv), "given": given})
    assert {row["setting"] for row in rows} == {"Image size (px)", "Cross-validation folds"}
    folds_row = next(row for row in rows if row["setting"] == "Cross-validation folds")
    assert (folds_row["chose"], folds_row["given"]) == ("3", "0 (none)")  # not a bare "0"
    built_in = config_rows({"busi": given.with_options(source="/data/busi"), "phantoms": given})
    assert built_in[0]["phantoms"] == "the built-in phantoms"  # not "–"
    focus = config_rows({"auto": given, "set": given.with_options(focus_class="malignant")})
    assert (focus[0]["auto"], focus[0]["set"]) == ("chosen for the data", "malignant")
    # Bagged models are an ensemble of their own: their size is read, and they are not taken for folds.
    bagged = ModelRecord(classes=("a", "b"), image_size=192, in_channels=1, color="gray", folds=3, bagged=True)
    asked = TrainConfig().with_options(bagged_models=3)
    assert as_trained(asked, bagged, None) == asked.with_options(image_size=192)
    # An older run that chose its bagged models for the data (no plan.json): read from its model record as such.
    assert as_trained(TrainConfig(), bagged, None) == TrainConfig(image_size=192).with_options(bagged_models=3)
    rows = config_rows({"bagged": as_trained(asked, bagged, None), "one": as_trained(chose, one_model, None)})
    assert [(row["setting"], row["bagged"], row["one"]) for row in rows if row["setting"] != "Image size (px)"] == [
        ("Bagged models", "3", "0 (none)")]


def test_rows_of_different_models_say_not_used_instead_of_inventing_values():
    rows = config_rows({"cnn": TrainConfig(), "resnet": TrainConfig().with_options(model="resnet18")})
    settings = {row["setting"]: row for row in rows}
    assert set(settings) == {"Model", "Dropout"}


def test_metrics_rows_put_the_focus_class_first_and_handle_missing_classes():
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    m = classification_metrics(y, probs, ["benign", "malignant"])
    rows = metrics_rows({"r": m}, {"r": "run one"}, focus_class="malignant")
    assert rows[0]["run"] == "run one"
    keys = list(rows[0])
    assert keys.index("malignant recall") < keys.index("benign recall")
    assert rows[0]["malignant recall"] == 0.5


def test_comparability_says_when_data_or_classes_differ():
    same = comparability({"a": "busi", "b": "busi"}, {"a": "f1", "b": "f1"}, {"a": ["x", "y"], "b": ["x", "y"]})
    assert same.same_data and same.same_classes and not same.messages
    other = comparability({"a": "busi", "b": "phantoms"}, {"a": "f1", "b": "f2"}, {"a": ["x", "y"], "b": ["x", "z"]})
    assert not other.same_data and not other.same_classes
    assert "different data: busi, phantoms." in other.messages[0] and "different class lists" in other.messages[1]


def test_metrics_rows_of_runs_with_different_classes_share_every_column():
    y = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    a = classification_metrics(y, probs, ["benign", "malignant"])
    b = classification_metrics(y, probs, ["dark", "bright"])
    rows = metrics_rows({"a": a, "b": b}, focus_class="malignant")
    assert list(rows[0]) == list(rows[1])  # one table, no ragged rows
    assert list(rows[0])[:4] == ["run", "malignant recall", "malignant precision", "malignant F1"]
    assert rows[1]["malignant recall"] is None and rows[0]["dark recall"] is None  # shown as '–'
    assert rows[1]["dark recall"] == 1.0 and rows[1]["bright recall"] == 0.5
