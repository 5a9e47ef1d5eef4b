"""The error browser's data: the images of one confusion-matrix cell, worst first."""

from __future__ import annotations

import numpy as np
import pytest

from medcls.analysis.error_cases import (
    cell_cases,
    cell_counts,
    cell_options,
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
