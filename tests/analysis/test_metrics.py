"""Metrics: agree with scikit-learn, rows of the confusion matrix are true classes, None when undefined."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from medcls.analysis.metrics import (
    SplitMetrics,
    classification_metrics,
    epoch_metrics,
    pr_curve,
    select_score,
    softmax,
)

CLASSES = ["benign", "malignant", "normal"]


@pytest.fixture
def predictions():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 3, 60)
    logits = rng.normal(size=(60, 3)) + np.eye(3)[y_true] * 1.5  # better than chance, not perfect
    return y_true, softmax(logits)


def test_softmax_rows_sum_to_one_even_for_huge_logits():
    p = softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, 1.0, 2.0]]))
    assert np.all(np.isfinite(p)) and np.allclose(p.sum(1), 1.0)
    assert np.allclose(p[0], [0.5, 0.5, 0.0])


def test_classification_metrics_match_scikit_learn(predictions):
    y_true, probs = predictions
    y_pred = probs.argmax(1)
    m = classification_metrics(y_true, probs, CLASSES)
    assert m.n == 60 and m.classes == CLASSES
    assert m.accuracy == pytest.approx(accuracy_score(y_true, y_pred))
    assert m.balanced_accuracy == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m.macro_f1 == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=[0, 1, 2])
    for i, name in enumerate(CLASSES):
        c = m.per_class[name]
        assert (c.precision, c.recall, c.f1, c.support) == pytest.approx((p[i], r[i], f[i], s[i]))
        assert c.average_precision == pytest.approx(average_precision_score(y_true == i, probs[:, i]))
        assert c.roc_auc == pytest.approx(roc_auc_score(y_true == i, probs[:, i]))
    assert m.macro_roc_auc == pytest.approx(np.mean([m.per_class[c].roc_auc for c in CLASSES]))
    assert m.macro_average_precision == pytest.approx(
        np.mean([m.per_class[c].average_precision for c in CLASSES]))


def test_a_class_never_called_has_no_precision_and_one_absent_too_has_no_f1():
    # 3 classes; "malignant" is in the split but never predicted, "normal" is neither in it nor predicted
    # (a class of one image kept in train). A precision of 0 would say every call of it was wrong: none was made.
    y_true = np.array([0, 0, 1, 1])
    probs = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.0], [0.7, 0.3, 0.0], [0.4, 0.6, 0.0]])
    m = classification_metrics(y_true, probs, ["benign", "malignant", "normal"])
    assert m.per_class["malignant"].precision == pytest.approx(1.0)
    benign, normal = m.per_class["benign"], m.per_class["normal"]
    assert benign.precision == pytest.approx(2 / 3) and normal.precision is None
    assert normal.recall is None and normal.f1 is None and normal.support == 0
    assert m.macro_f1 == pytest.approx(np.mean([benign.f1, m.per_class["malignant"].f1]))
    never = classification_metrics(y_true, np.array([[0.9, 0.1, 0.0]] * 4), ["benign", "malignant", "normal"])
    malignant = never.per_class["malignant"]
    assert malignant.precision is None and malignant.recall == 0.0 and malignant.f1 == 0.0
    # A run saved before kept zeros there: read back, it shows what a new run would.
    saved = m.to_dict()
    saved["per_class"]["normal"].update(precision=0.0, f1=0.0)
    assert SplitMetrics.from_dict(saved) == m


def test_confusion_matrix_rows_are_true_classes(predictions):
    y_true, probs = predictions
    cm = np.array(classification_metrics(y_true, probs, CLASSES).confusion_matrix)
    expected = np.zeros((3, 3), int)
    for t, p in zip(y_true, probs.argmax(1)):
        expected[t, p] += 1
    assert np.array_equal(cm, expected)
    assert cm.sum(axis=1).tolist() == np.bincount(y_true, minlength=3).tolist()


def test_a_class_missing_from_the_labels_gives_none_not_nan():
    y_true = np.array([0, 0, 2, 2])
    probs = softmax(np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0], [2.0, 0, 0]]))
    m = classification_metrics(y_true, probs, CLASSES)
    missing = m.per_class["malignant"]
    assert missing.support == 0 and missing.recall is None
    assert missing.average_precision is None and missing.roc_auc is None
    assert m.per_class["benign"].roc_auc is not None
    import json

    json.dumps(m.to_dict(), allow_nan=False)  # ready for metrics.json


def test_macro_f1_leaves_out_classes_with_no_image_and_no_prediction():
    """Two right answers among fifteen classes score 1, not 2/15 (the 'without copies' figure of a run on fifteen
    classes read 0.067 for two right answers); a class that is predicted but absent still counts as 0."""
    classes = [f"c{i}" for i in range(15)]
    right = np.array([3, 7])
    assert classification_metrics(right, np.eye(15)[right], classes).macro_f1 == 1.0
    assert epoch_metrics(right, right, classes)["macro_f1"] == 1.0
    false_alarm = np.array([3, 9])  # the second image, of c7, called c9: c3 scores 1, c7 and c9 score 0
    assert classification_metrics(right, np.eye(15)[false_alarm], classes).macro_f1 == pytest.approx(1 / 3)
    assert epoch_metrics(right, false_alarm, classes)["macro_f1"] == pytest.approx(1 / 3)


def test_perfect_predictions_score_one():
    y = np.array([0, 1, 2, 1, 0, 2])
    m = classification_metrics(y, np.eye(3)[y], CLASSES)
    assert m.accuracy == m.macro_f1 == m.balanced_accuracy == m.macro_roc_auc == 1.0


def test_epoch_metrics_and_select_score(predictions):
    y_true, probs = predictions
    y_pred = probs.argmax(1)
    m = epoch_metrics(y_true, y_pred, CLASSES)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["recall"]["malignant"] == pytest.approx(np.mean(y_pred[y_true == 1] == 1))
    assert select_score(m, "macro_f1", "malignant") == m["macro_f1"]
    assert select_score(m, "focus_recall", "malignant") == m["recall"]["malignant"]
    absent = epoch_metrics(np.array([0, 2]), np.array([0, 2]), CLASSES)
    assert absent["recall"]["malignant"] is None
    assert select_score(absent, "focus_recall", "malignant") == -1.0


@pytest.mark.parametrize("case", range(40))
def test_the_per_epoch_summary_equals_scikit_learns_values(case):
    """epoch_metrics reads them off a confusion matrix (no scikit-learn import before the first epoch); they must
    match scikit-learn's, also when a class is absent from the truth, the predictions or both."""
    rng = np.random.default_rng(case)
    k, n = int(rng.integers(2, 6)), int(rng.integers(1, 40))
    classes = [f"c{i}" for i in range(k)]
    used = rng.choice(k, size=int(rng.integers(1, k + 1)), replace=False)  # some classes never occur
    y_true, y_pred = rng.choice(used, n), rng.choice(used if case % 2 else np.arange(k), n)
    m = epoch_metrics(y_true, y_pred, classes)
    labels = list(range(k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        recall = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)[1]
        assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    # scikit-learn without labels averages over the classes in the truth or the predictions
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))
    probs = np.eye(k)[y_pred] * 0.9 + 0.1 / k
    assert classification_metrics(y_true, probs, classes).macro_f1 == pytest.approx(m["macro_f1"])
    assert m["recall"] == {c: (pytest.approx(recall[i]) if (y_true == i).any() else None)
                           for i, c in enumerate(classes)}


def test_pr_curve_reports_ap_and_chance_level(predictions):
    y_true, probs = predictions
    curve = pr_curve(y_true, probs, 1)
    assert curve["prevalence"] == pytest.approx(np.mean(y_true == 1))
    assert curve["average_precision"] == pytest.approx(average_precision_score(y_true == 1, probs[:, 1]))
    assert len(curve["precision"]) == len(curve["recall"]) == len(curve["thresholds"]) + 1
    empty = pr_curve(np.array([0, 2]), probs[:2], 1)
    assert empty["average_precision"] is None and empty["precision"] == []


def test_a_probability_is_never_rounded_onto_certainty():
    from medcls.analysis.metrics import probability_percent

    assert [probability_percent(p) for p in (0.997, 0.003, 0.9996, 0.0002, 0.71, 0.995, 1.0, 0.0)] == [
        "99.7%", "0.3%", ">99.9%", "<0.1%", "71%", "99.5%", "100%", "0%"]
