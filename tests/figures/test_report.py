"""Run cards: one self-contained HTML file per finished run, from the library and the CLI."""

from __future__ import annotations

import json
import re

import pytest
from plotly.offline import get_plotlyjs

from medcls.cli import main
from medcls.figures.report import DISCLAIMER, run_card_html, write_run_card


def _figure_specs(html: str) -> list[dict]:
    """The data of every embedded Plotly figure (Plotly.newPlot(id, data, layout, config))."""
    specs = []
    for match in re.finditer(r'Plotly\.newPlot\(\s*"[^"]+",\s*(\[.*?\]),\s*\{', html, re.S):
        specs.append(json.loads(match.group(1)))
    return specs


def test_run_card_is_self_contained_and_complete(finished_run):
    store, run_id = finished_run
    html = run_card_html(store, run_id)
    assert html.startswith("<!DOCTYPE html>") and run_id in html
    # plotly.js inlined exactly once; nothing loaded from the network
    assert html.count(get_plotlyjs()[:200]) == 1
    assert not re.search(r'<script[^>]+src=', html) and not re.search(r'<link[^>]+href=["\']https?:', html)
    # the figures are really there: counts, curves, confusion matrix, PR, intervals, reliability
    specs = _figure_specs(html)
    assert len(specs) == 6
    types = {trace["type"] for spec in specs for trace in spec}
    assert {"heatmap", "bar", "scatter"} <= types
    # data fingerprint, split counts, metrics with intervals, the teaching note
    assert store.data_record(run_id).fingerprint in html
    metrics = store.metrics(run_id)
    ci = metrics.intervals["test"]["accuracy"]
    assert f"{ci['estimate']:.2f} ({ci['low']:.2f}–{ci['high']:.2f})" in html
    assert "A teaching tool, not a diagnosis." in html and DISCLAIMER in html
    n = metrics.test.per_class["malignant"].support  # 12 images per class: a tiny test set, flagged
    # every class has n test images here, so one warning names them all
    assert {c.support for c in metrics.test.per_class.values()} == {n}
    assert re.search(rf"Only {n} test images of each of [a-z, ]*malignant", html)
    assert "<td>Learning rate</td><td>0.002</td>" in html  # settings in words
    assert "weights" not in html.lower().split("<h2>settings</h2>")[1].split("<h2>")[0]  # nothing inapplicable


def test_write_run_card_default_and_custom_paths(finished_run, tmp_path):
    store, run_id = finished_run
    default = write_run_card(store, run_id)
    assert default == store.file(run_id, "run_card.html") and run_id in default.read_text()
    custom = write_run_card(store, run_id, tmp_path / "card.html")
    assert custom.read_text().startswith("<!DOCTYPE html>")


def test_unfinished_run_is_refused_with_a_reason(store, synth):
    run_id = store.create(synth.config(), run_id="queued-run")
    with pytest.raises(ValueError, match="no test results"):
        run_card_html(store, run_id)


def test_cli_report_writes_the_card(finished_run, tmp_path, capsys):
    store, run_id = finished_run
    out = tmp_path / "out.html"
    assert main(["--runs-dir", str(store.root), "report", run_id, "-o", str(out)]) == 0
    assert run_id in out.read_text() and str(out) in capsys.readouterr().out
    assert main(["--runs-dir", str(store.root), "report", "no-such-run"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_on_an_exposed_server_the_card_shows_no_server_paths(finished_run, monkeypatch):
    store, run_id = finished_run
    source = store.config(run_id).data.source
    assert source in run_card_html(store, run_id)  # a card made on one's own machine says where the data was
    monkeypatch.setenv("MEDCLS_EXPOSED", "1")
    html = run_card_html(store, run_id)
    assert source not in html and "…/classes" in html


def test_a_fold_ensembles_card_gives_each_folds_epochs_and_scores(store, synth, class_dataset):
    from medcls.jobs.execute import execute_run

    run_id = store.create(synth.config(class_dataset, epochs=2, folds=2, checkpoint="best", patience=0))
    assert execute_run(store, run_id).state == "finished"
    html = run_card_html(store, run_id)
    cv = store.cross_validation(run_id)
    record = store.model_record(run_id)
    # Per fold model, not one model's "best epoch 0" and the folds' epochs added up.
    assert f"{record.parameters // 2:,} in each of 2 fold models" in html
    assert "<th>best epoch of each fold</th><td>" + ", ".join(str(s.best_epoch) for s in cv.scores) in html
    assert "<th>epochs trained in each fold</th><td>2, 2 (of up to 2)</td>" in html
    assert "<h2>Cross-validation (2 folds)</h2>" in html and "<tr><th>best epoch</th>" not in html
    # The training curves are the latest fold's (2 epochs), not both folds' joined into one line.
    curves = next(spec for spec in _figure_specs(html) if any(t.get("name") == "training loss" for t in spec))
    assert next(t for t in curves if t.get("name") == "training loss")["x"] == [1, 2]
    assert "fold 2 of 2" in html
    assert "each predicted by the fold model that never trained on it" in html  # the operating point's images


def test_a_stopped_fold_ensemble_does_not_count_its_cut_fold_as_stopped_early(finished_run):
    from medcls.runs.results import CrossValidation, FoldScore

    store, run_id = finished_run
    epochs = store.config(run_id).epochs

    def score(fold: int, trained: int) -> FoldScore:
        return FoldScore(fold=fold, images=10, macro_f1=0.5, accuracy=0.5, balanced_accuracy=0.5, focus_recall=0.5,
                         best_epoch=1, epochs=trained)

    # Fold 1 ran all its epochs; the person stopped the run one epoch into fold 2.
    store.write_cross_validation(run_id, CrossValidation(folds=3, grouped=False, completed=1,
                                                         scores=(score(1, epochs), score(2, 1))))
    html = run_card_html(store, run_id)
    assert "<th>fold models</th><td>1 of 3 finished</td>" in html
    assert "<th>stopped early</th><td>0 of the 1 that finished (a stop cut the last short)</td>" in html
    # Every fold ran to its end: the row counts fold models, and does not read as if none had stopped.
    store.write_cross_validation(run_id, CrossValidation(folds=2, grouped=False, completed=2,
                                                         scores=(score(1, epochs), score(2, epochs - 1))))
    assert "<th>stopped early</th><td>1 of 2 fold models</td>" in run_card_html(store, run_id)


def test_a_perfect_macro_f1_is_shown_without_a_range_and_explained(finished_run, monkeypatch):
    import numpy as np

    from medcls.analysis import uncertainty
    from medcls.figures import report

    store, run_id = finished_run
    classes = list(store.metrics(run_id).test.per_class)
    y_true = np.repeat(np.arange(len(classes)), 4)
    perfect = uncertainty.metric_intervals(y_true, np.eye(len(classes))[y_true], classes, n_boot=50)
    monkeypatch.setattr(report, "run_intervals", lambda *args, **kwargs: perfect)
    html = run_card_html(store, run_id)
    assert "1.00 (no interval)" in html and "1.00 (1.00–1.00)" not in html
    assert "does not mean that new images would score the same" in html  # FLAT_INTERVAL_NOTE, escaped for HTML
    monkeypatch.undo()
    real = uncertainty.run_intervals(store, run_id)  # the tiny run's own scores: a range wherever one has width
    assert ("no interval" in run_card_html(store, run_id)) == uncertainty.has_flat_interval({"run": real})


def test_whole_numbers_in_the_cards_tables_are_counts_with_thousands_separated():
    from medcls.figures.report import _table

    html = _table([{"class": "normal", "test images": 1050, "F1": 0.5, "kept": True}])
    assert "<td class='num'>1,050</td>" in html and "<td class='num'>0.500</td>" in html, html
    assert "<td>True</td>" in html  # a yes/no is not a count
