"""The error browser's data: the images of one confusion-matrix cell, worst first."""

from __future__ import annotations

import numpy as np
import pytest

from medcls.analysis.error_cases import (
    cell_cases,
    cell_counts,
    cell_of_point,
    cell_options,
    copies_caption,
    default_cell,
)
from medcls.analysis.metrics import classification_metrics

CLASSES = ["benign", "malignant", "normal"]


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 90)
    probs = rng.dirichlet([1, 1, 1], 90)
    paths = [f"img/{i}.png" for i in range(90)]
    return paths, y_true, probs


def test_cells_match_the_confusion_matrix(predictions):
    paths, y_true, probs = predictions
    matrix = classification_metrics(y_true, probs, CLASSES).confusion_matrix
    np.testing.assert_array_equal(cell_counts(y_true, probs, 3), matrix)
    for t, true in enumerate(CLASSES):
        for p, pred in enumerate(CLASSES):
            assert len(cell_cases(paths, y_true, probs, CLASSES, true, pred)) == matrix[t][p]


def test_cases_are_worst_first_and_really_in_the_cell(predictions):
    paths, y_true, probs = predictions
    cases = cell_cases(paths, y_true, probs, CLASSES, "malignant", "benign")
    assert cases
    p_true = [c.p_true for c in cases]
    assert p_true == sorted(p_true)
    for case in cases:
        i = paths.index(case.path)
        assert y_true[i] == 1 and probs[i].argmax() == 0
        assert case.p_true == pytest.approx(probs[i, 1]) and case.p_predicted == pytest.approx(probs[i, 0])
        assert "P(malignant)" in case.caption and case.caption.startswith(f"{i}.png")
    with pytest.raises(ValueError, match="cancer"):
        cell_cases(paths, y_true, probs, CLASSES, "cancer", "benign")


def test_options_put_errors_first_and_default_to_missed_focus_cases(predictions):
    paths, y_true, probs = predictions
    options = cell_options(y_true, probs, CLASSES)
    errors = [o for o in options if o[0] != o[1]]
    assert options[:len(errors)] == errors
    assert [o[2] for o in errors] == sorted((o[2] for o in errors), reverse=True)
    assert sum(o[2] for o in options) == 90
    true, predicted, _ = options[default_cell(options, "malignant")]
    assert true == "malignant" and predicted != "malignant"


def test_confident_order_puts_the_surest_answers_first(predictions):
    paths, y_true, probs = predictions
    for true, predicted in (("malignant", "benign"), ("normal", "normal")):
        cases = cell_cases(paths, y_true, probs, CLASSES, true, predicted, order="confident")
        worst = cell_cases(paths, y_true, probs, CLASSES, true, predicted)
        assert cases and sorted(c.path for c in cases) == sorted(c.path for c in worst)  # the same images
        p_predicted = [c.p_predicted for c in cases]
        assert p_predicted == sorted(p_predicted, reverse=True)
        assert cases[0].p_predicted == pytest.approx(max(probs[paths.index(c.path), CLASSES.index(predicted)]
                                                         for c in worst))
    with pytest.raises(ValueError, match="order"):
        cell_cases(paths, y_true, probs, CLASSES, "normal", "normal", order="random")


def test_probability_line_names_every_class_in_order(predictions):
    paths, y_true, probs = predictions
    case = cell_cases(paths, y_true, probs, CLASSES, "benign", "normal")[0]
    i = paths.index(case.path)
    assert case.probability_line == " · ".join(f"{c} {probs[i, k]:.2f}" for k, c in enumerate(CLASSES))
    assert case.name == f"{i}.png"


def test_test_images_with_a_learned_copy_are_marked(predictions):
    paths, y_true, probs = predictions
    cases = cell_cases(paths, y_true, probs, CLASSES, "benign", "benign")
    copied = {cases[0].path, cases[2].path, "img/not-in-this-cell.png"}
    marked = cell_cases(paths, y_true, probs, CLASSES, "benign", "benign", copies=copied)
    assert [c.copied for c in marked[:4]] == [True, False, True, False]
    assert "copy learned" in marked[0].caption and "copy learned" not in marked[1].caption
    assert copies_caption(marked).endswith("so a right answer on it may be memory. It marks 2 images here.")
    assert copies_caption(marked[:1]).endswith("It marks 1 image here.")
    assert copies_caption(cases) == ""  # nothing marked, nothing said
    wrong = cell_cases(paths, y_true, probs, CLASSES, "malignant", "benign")
    wrong_marked = cell_cases(paths, y_true, probs, CLASSES, "malignant", "benign", copies={wrong[0].path})
    assert copies_caption(wrong_marked).endswith("It marks 1 image here: the run got it wrong although it learned "
                                                 "from a copy.")  # a mistake is not 'memory'


def test_npz_items_are_named_by_split_and_index():
    probs = np.array([[0.2, 0.8], [0.9, 0.1]])
    cases = cell_cases(["/d/x.npz::test/12", "/d/x.npz::test/3"], np.array([0, 0]), probs, ["a", "b"], "a", "b")
    assert [c.name for c in cases] == ["test #12"]


def test_a_clicked_point_names_its_cell():
    assert cell_of_point({"customdata": [1, 0], "x": "benign"}, CLASSES) == ("malignant", "benign")
    assert cell_of_point({"customdata": [2, 2]}, CLASSES) == ("normal", "normal")
    assert cell_of_point({"customdata": [3, 0]}, CLASSES) is None  # a class this run does not have
    assert cell_of_point({"x": "benign"}, CLASSES) is None
    assert cell_of_point(None, CLASSES) is None
