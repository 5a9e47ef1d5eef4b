"""Plotly figure builders: the right traces, data and axis titles."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from medcls.figures.evaluation import (
    class_counts_figure,
    confusion_matrix_figure,
    pr_curves_figure,
    probability_figure,
)
from medcls.figures.training import (
    history_figure,
    overlay_history_figure,
    parameter_bar_figure,
    recall_figure,
)
from medcls.runs.records import EpochRecord

CLASSES = ["benign", "malignant", "normal"]


def _history(n=3):
    return [EpochRecord.from_dict({"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.2 / e,
                                   "train_accuracy": 0.5 + 0.1 * e,
             "val_accuracy": 0.4 + 0.1 * e, "val_macro_f1": 0.3 + 0.1 * e, "best": e == 2,
             "val_recall": {"benign": 0.5, "malignant": 0.1 * e, "normal": None if e == 1 else 0.9}})
            for e in range(1, n + 1)]


def test_class_counts_has_one_bar_trace_per_split():
    counts = {"train": {"a": 10, "b": 3}, "val": {"a": 2, "b": 1}, "test": {"a": 2, "b": 1}}
    fig = class_counts_figure(counts)
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["train", "val", "test"]
    assert all(isinstance(t, go.Bar) for t in fig.data)
    assert list(fig.data[0].y) == [10, 3] and list(fig.data[0].x) == ["a", "b"]
    assert fig.layout.xaxis.title.text == "class" and fig.layout.yaxis.title.text == "images"
    assert fig.layout.barmode == "group"


def test_history_figure_has_loss_and_accuracy_curves_and_marks_the_best_epoch():
    history = _history()
    fig = history_figure(history)
    names = [t.name for t in fig.data]
    assert names == ["training loss", "validation loss", "training accuracy", "validation accuracy",
                     "validation macro-F1"]
    assert list(fig.data[0].y) == [h.train_loss for h in history]
    assert list(fig.data[4].x) == [1, 2, 3]
    assert [s.x0 for s in fig.layout.shapes] == [2, 2]  # dashed line at the best epoch in both panels
    assert fig.layout.xaxis.title.text == "epoch"
    assert [a.text for a in fig.layout.annotations] == ["loss", "accuracy / macro-F1"]


def test_a_history_without_validation_shows_training_curves_only():
    history = [EpochRecord.from_dict({**h.to_dict(), "validated": False, "best": True}) for h in _history()]
    fig = history_figure(history)
    assert [t.name for t in fig.data] == ["training loss", "training accuracy"]
    assert [a.text for a in fig.layout.annotations] == ["loss", "accuracy"]  # no macro-F1 is drawn: none named
    # On a line of its own under the title, so that a long title ('… · bagged model 2 of 3') is not cut off.
    assert fig.layout.title.text == "Training curves"
    assert fig.layout.title.subtitle.text == "training only: no validation images"
    assert [s.x0 for s in fig.layout.shapes] == [3, 3]  # the kept weights: the last epoch's
    assert not recall_figure(history).data
    overlay = overlay_history_figure({"run": history}, "val_macro_f1")
    assert overlay.data[0].name == "run (no validation images)" and set(overlay.data[0].y) == {None}
    assert list(overlay_history_figure({"run": history}, "train_loss").data[0].y) == [h.train_loss for h in history]
    assert EpochRecord.from_dict(_history()[0].to_dict()).validated  # records written before the field: validated


def test_recall_figure_has_one_curve_per_class_and_highlights_the_focus():
    fig = recall_figure(_history(), focus_class="malignant")
    assert [t.name for t in fig.data] == ["benign", "malignant (focus)", "normal"]
    widths = {t.name: t.line.width for t in fig.data}
    assert widths["malignant (focus)"] > widths["benign"]
    assert fig.layout.yaxis.title.text == "recall" and fig.layout.xaxis.title.text == "epoch"
    assert len(recall_figure([]).data) == 0


def test_confusion_matrix_has_true_classes_on_y_and_predictions_on_x():
    matrix = [[5, 1, 0], [2, 3, 0], [0, 0, 0]]
    fig = confusion_matrix_figure(matrix, CLASSES)
    assert len(fig.data) == 1 and isinstance(fig.data[0], go.Heatmap)
    assert fig.layout.yaxis.title.text == "true" and fig.layout.xaxis.title.text == "predicted"
    assert np.array_equal(np.asarray(fig.data[0].z), np.asarray(matrix, dtype=float))
    assert list(fig.data[0].x) == CLASSES and list(fig.data[0].y) == CLASSES
    assert fig.data[0].text[0][1] == "1"
    norm = confusion_matrix_figure(matrix, CLASSES, normalize=True)
    z = np.asarray(norm.data[0].z)
    assert np.allclose(z[:2].sum(axis=1), 1.0) and np.all(z[2] == 0)  # an empty row stays zero, no NaN
    assert norm.data[0].text[0][0] == f"{5 / 6:.0%}"


def test_a_confusion_matrix_of_many_classes_grows_to_keep_its_rows_readable():
    few = confusion_matrix_figure(np.eye(3, dtype=int), CLASSES)
    ten = [f"class_{i}" for i in range(10)]
    many = confusion_matrix_figure(np.eye(10, dtype=int), ten)
    assert many.layout.height - few.layout.height >= 90  # rows of about 30 px, not 10 squeezed into 3's height
    assert many.data[0].textfont.size < few.data[0].textfont.size


def test_clickable_confusion_matrix_has_one_point_per_cell_naming_it():
    matrix = [[5, 1, 0], [2, 3, 0], [0, 0, 0]]
    fig = confusion_matrix_figure(matrix, CLASSES, normalize=True, clickable=True)
    heatmap, points = fig.data
    assert isinstance(heatmap, go.Heatmap) and isinstance(points, go.Scatter)
    assert len(points.x) == 9
    for x, y, (t, p), text in zip(points.x, points.y, points.customdata, points.text):
        assert (y, x) == (CLASSES[t], CLASSES[p])  # rows true, columns predicted, as the heatmap
        assert text == heatmap.text[t][p]  # the point shows what its cell shows
    assert points.marker.opacity == 0 and points.selected.marker.opacity == 1  # only a chosen cell is outlined
    assert points.selectedpoints is None
    picked = confusion_matrix_figure(matrix, CLASSES, clickable=True, selected=(1, 0)).data[1]
    (index,) = picked.selectedpoints
    assert (picked.y[index], picked.x[index]) == ("malignant", "benign")


def test_pr_curves_have_a_curve_and_a_chance_line_per_class_present():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 0, 1, 0, 1, 0, 0])
    probs = rng.dirichlet(np.ones(3), size=len(y))
    fig = pr_curves_figure(y, probs, CLASSES, focus_class="malignant")
    assert len(fig.data) == 4  # 'normal' has no examples: no curve
    names = [t.name for t in fig.data]
    assert names[0].startswith("benign") and "AP=" in names[0]
    assert names[2].startswith("malignant (focus)")
    assert list(fig.data[3].y) == pytest.approx([3 / 8, 3 / 8])  # chance level = prevalence
    assert fig.layout.xaxis.title.text == "recall" and fig.layout.yaxis.title.text == "precision"
    # The note goes on its own line, so a long run name plus the note is not cut off in a narrow column.
    titled = pr_curves_figure(y, probs, CLASSES, title="<b>run</b> 1")
    assert titled.layout.title.text == "&lt;b&gt;run&lt;/b&gt; 1"
    assert titled.layout.title.subtitle.text == "dashed: chance level"
    assert not confusion_matrix_figure([[1]], ["a"], title="run 1").layout.title.subtitle.text


def test_probability_figure_highlights_the_top_class():
    fig = probability_figure({"benign": 0.2, "malignant": 0.7, "normal": 0.1})
    bar = fig.data[0]
    assert list(bar.y) == CLASSES and list(bar.x) == [0.2, 0.7, 0.1]
    assert bar.marker.color[1] != bar.marker.color[0] == bar.marker.color[2]
    assert fig.layout.xaxis.title.text == "probability"
    import html  # figure text is HTML-escaped: the browser shows '<0.1%'

    ends = probability_figure({"benign": 0.0004, "malignant": 0.9996}).data[0].text
    assert [html.unescape(t) for t in ends] == ["<0.1%", ">99.9%"]


def test_overlay_history_has_one_trace_per_run():
    fig = overlay_history_figure({"run a": _history(2), "run b": _history(3)}, key="val_loss")
    assert [t.name for t in fig.data] == ["run a", "run b"]
    assert len(fig.data[1].x) == 3
    assert fig.layout.yaxis.title.text == "validation loss"  # words, not the field name val_loss
    assert fig.layout.title.text.startswith("Validation loss")
    alone = overlay_history_figure({"run a · fold 5": _history(2)})
    assert alone.layout.showlegend is True  # one curve is named too (Plotly would hide its legend)


def test_parameter_bar_lists_layers_with_shares():
    fig = parameter_bar_figure([("conv1", 300), ("fc", 700)])
    assert list(fig.data[0].y) == ["conv1", "fc"] and list(fig.data[0].x) == [300, 700]
    assert fig.data[0].text[1] == "700 (70%)"
    assert fig.layout.xaxis.title.text == "parameters"


def test_user_named_text_is_plain_text_in_figures_never_html():
    """Plotly draws <a href> links and <b> in its texts: a class or run named like HTML shows as characters."""
    evil = '<a href="https://evil.example/login">CLICK</a>'
    figures = [confusion_matrix_figure([[1, 0], [0, 1]], [evil, "benign & co"]),
               pr_curves_figure(np.array([0, 1, 1, 0]), np.array([[0.8, 0.2], [0.3, 0.7], [0.4, 0.6], [0.9, 0.1]]),
                                [evil, "benign"], evil),
               probability_figure({evil: 0.7, "benign": 0.3}),
               overlay_history_figure({evil: [EpochRecord.from_dict({"epoch": 1, "val_macro_f1": 0.5})]},
                                      "val_macro_f1")]
    for fig in figures:
        spec = fig.to_json()
        assert "<a href" not in spec and "\\u003ca href" not in spec
        assert "&lt;a href" in spec  # shown as the characters the user typed
    assert "benign &amp; co" in figures[0].to_json()
