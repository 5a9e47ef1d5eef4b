"""Run cards: one finished run as a single self-contained HTML file.

The card holds what someone needs to judge a run without the app: the data
(source, fingerprint, images per class and split), the model and every setting,
the test metrics with 95% intervals and small-sample warnings, the
operating point for the focus class, calibration, and the figures. Plotly's
JavaScript is inlined once, so the file opens offline and can be e-mailed or
attached to coursework. Every card says that medcls is a teaching tool.
"""

from __future__ import annotations

import html
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import plotly.graph_objects as go

from .. import __version__
from ..analysis.calibration import calibration_sentence, reliability
from ..analysis.copies import run_copies_sentence
from ..analysis.metrics import SplitMetrics
from ..analysis.operating_point import (
    NO_THRESHOLD_WITHOUT_HELD_OUT,
    BinaryView,
    operating_point,
    threshold_for_sensitivity,
)
from ..analysis.uncertainty import (
    FLAT_INTERVAL_NOTE,
    format_interval,
    has_flat_interval,
    run_intervals,
    small_class_warnings,
)
from ..atomic import atomic_write_text
from ..config import format_value, settings_rows
from ..data import default_focus_class
from ..runs.permissions import owner_words
from ..runs.records import EpochRecord, ModelRecord, fold_histories, latest_fold, member_word
from ..runs.results import CrossValidation, Predictions, RunMetrics
from ..runs.store import RunNotFoundError, RunStore
from ..settings import redact_paths
from .analysis import interval_figure, reliability_figure
from .evaluation import class_counts_figure, confusion_matrix_figure, pr_curves_figure
from .training import history_figure

__all__ = ["run_card_html", "write_run_card", "DISCLAIMER", "TARGET_SENSITIVITY"]

log = logging.getLogger(__name__)

DISCLAIMER = ("medcls is a teaching tool, not a diagnostic device. Nothing in this card is validated for "
              "clinical use, and no result here is a diagnosis.")
TARGET_SENSITIVITY = 0.95

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ddd;padding:.25em .6em;text-align:left}th{background:#f4f6f8}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff4e5;border-left:4px solid #f0a020;padding:.6em 1em;margin:1em 0}
.warn{background:#fdecea;border-left:4px solid #d9534f;padding:.5em 1em;margin:.4em 0}
.muted{color:#666;font-size:.9em}code{background:#f4f4f4;padding:0 .25em}
.figures{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:1em}.wide{grid-column:1/-1}
@media (max-width:900px){.figures{grid-template-columns:minmax(0,1fr)}}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    if not rows:
        return "<p class='muted'>(none)</p>"
    columns = list(columns or rows[0].keys())
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c)
            numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
            shown = f"{v:,}" if numeric and isinstance(v, int) else _num(v)  # a table's whole numbers are counts
            cells.append(f"<td class='num'>{_esc(shown)}</td>" if numeric else f"<td>{_esc(shown)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pairs(pairs: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{_esc(k)}</th><td>{_esc(_num(v))}</td></tr>" for k, v in pairs)
    return f"<table><tbody>{rows}</tbody></table>"


class _Figures:
    """Plotly figures as HTML divs; plotly.js is inlined with the first one only."""

    def __init__(self) -> None:
        self.first = True

    def __call__(self, fig: go.Figure, wide: bool = False) -> str:
        div = fig.to_html(full_html=False, include_plotlyjs=self.first,
                          config={"displaylogo": False, "responsive": True})
        self.first = False
        return f"<div class='figure{' wide' if wide else ''}'>{div}</div>"


def _metrics_section(test: SplitMetrics, ci: Mapping) -> str:
    overall = [
        ("images", test.n),
        ("accuracy", format_interval(ci.get("accuracy")) if ci else _num(test.accuracy)),
        ("macro-F1", format_interval(ci.get("macro_f1")) if ci else _num(test.macro_f1)),
        ("balanced accuracy", _num(test.balanced_accuracy)),
        ("macro average precision", _num(test.macro_average_precision)),
        ("macro ROC AUC", _num(test.macro_roc_auc)),
    ]
    rows = []
    for name, c in test.per_class.items():
        cci = (ci.get("per_class") or {}).get(name, {}) if ci else {}
        rows.append({"class": name, "test images": c.support, "precision": c.precision,
                     "recall (95% interval)": format_interval(cci.get("recall")) if cci else _num(c.recall),
                     "F1": c.f1,
                     "AP (95% interval)": format_interval(cci.get("average_precision")) if cci
                     else _num(c.average_precision)})
    warnings = "".join(f"<div class='warn'>{_esc(w)}</div>" for w in small_class_warnings({'run': ci})) if ci else ""
    method = (f"<p class='muted'>95% intervals: {ci.get('method')}, {ci.get('n_boot'):,} resamples of the test "
              "images for the bootstrap (its range holds the middle 95% of the resampled values)."
              + (f" {_esc(FLAT_INTERVAL_NOTE)}" if has_flat_interval({"run": ci}) else "") + "</p>") if ci else ""
    return _pairs(overall) + _table(rows) + warnings + method


def _copies_warning(store: RunStore, run_id: str, metrics: RunMetrics, test: Predictions) -> str:
    sentence = run_copies_sentence(store, run_id, metrics, test)
    return f"<div class='warn'>{_esc(sentence)}</div>" if sentence else ""


def _operating_point_section(store: RunStore, run_id: str, classes: list[str], focus: str,
                             out_of_fold: bool = False, bagged: bool = False) -> str:
    if bagged:
        return f"<p class='muted'>Not available: {_esc(NO_THRESHOLD_WITHOUT_HELD_OUT)}</p>"
    try:
        val, test = store.predictions(run_id, "val"), store.predictions(run_id, "test")
        view = BinaryView.of(classes, [focus])
        threshold = threshold_for_sensitivity(view.truth(val.y_true), view.scores(val.probs), TARGET_SENSITIVITY)
    except (ValueError, RunNotFoundError) as exc:
        return f"<p class='muted'>Not available: {_esc(exc)}</p>"
    rows = []
    for split, p in (("train + val, out of fold" if out_of_fold else "validation", val), ("test", test)):
        op = operating_point(view.truth(p.y_true), view.scores(p.probs), threshold)
        rows.append({"split": split, f"{focus} images": op["positives"], "sensitivity": op["sensitivity"],
                     "specificity": op["specificity"], "PPV": op["ppv"], "NPV": op["npv"]})
    where = ("on the training + validation images, each predicted by the fold model that never trained on it" if
             out_of_fold else "on the validation images")
    return (f"<p>Flagging an image as <b>{_esc(focus)}</b> when P({_esc(focus)}) ≥ <b>{threshold:.3f}</b> "
            f"reaches at least {TARGET_SENSITIVITY:.0%} sensitivity {where}. What that "
            "threshold gives on the test images is the honest estimate:</p>" + _table(rows))


def _parameters_words(record: ModelRecord) -> str:
    """A model's weights; an ensemble's, per fold (or bagged) model."""
    each = f" in each of {record.models} {member_word(record.bagged, plural=True)}" if record.models > 1 else ""
    return f"{record.parameters_per_model:,}{each}"


def _fold_rows(cv: CrossValidation, epochs: int, keeps_last: bool = False) -> list[tuple[str, Any]]:
    """The overview's epoch rows for a fold ensemble: each fold model has its own best epoch and length."""
    ended = cv.scores[:cv.completed]  # a stop cuts the last fold short: that is not early stopping
    early = sum(s.epochs < epochs for s in ended)
    return [("fold models", f"{cv.completed} of {cv.folds} finished"),
            ("last epoch of each fold, kept" if keeps_last else "best epoch of each fold",
             ", ".join(str(s.best_epoch) for s in cv.scores)),
            ("epochs trained in each fold", ", ".join(str(s.epochs) for s in cv.scores) + f" (of up to {epochs})"),
            ("stopped early", _stopped_early_words(early, len(ended), len(cv.scores)))]


def _bagged_rows(history: Sequence[EpochRecord], planned: int, epochs: int) -> list[tuple[str, Any]]:
    """The overview's epoch rows for bagged models: each trains every epoch and keeps its last."""
    trained = [len(h) for fold, h in fold_histories(history).items() if fold]
    return [("bagged models", f"{sum(n == epochs for n in trained)} of {planned} finished"),
            ("kept epoch of each", "the last: no validation images to pick one by (each learns from them all)"),
            ("epochs trained in each bagged model", ", ".join(map(str, trained)) + f" (of {epochs})")]


def _stopped_early_words(early: int, ended: int, trained: int) -> str:
    """How many fold models early stopping ended, out of those that finished ('3 of 3 fold models', not '3 of the 3
    folds trained to their end', which read as if none had stopped)."""
    if ended == trained:
        return f"{early} of {ended} fold model{'s' if ended != 1 else ''}"
    return f"{early} of the {ended} that finished (a stop cut the last short)"


def _cross_validation_section(cv: CrossValidation, focus: str) -> str:
    rows = [{"fold": s.fold, "held-out images": s.images, "macro-F1": s.macro_f1, "accuracy": s.accuracy,
             f"{focus} recall": s.focus_recall, "kept epoch": s.best_epoch, "epochs": s.epochs} for s in cv.scores]
    spread = [f"{label} {words}" for metric, label in (("macro_f1", "macro-F1"), ("focus_recall", f"{focus} recall"))
              if (words := cv.mean_sd_words(metric))]
    grouped = f" {kept[0].upper()}{kept[1:]} were kept in one fold." if (kept := cv.kept_together_words()) else ""
    return (f"<h2>Cross-validation ({cv.folds} folds)</h2><p>Each fold's model was judged on the training + "
            f"validation images it never trained on (mean ± standard deviation over the folds: "
            f"{_esc('; '.join(spread))}).{grouped} The test metrics above are those of the fold models predicting "
            "together.</p>" + _table(rows))


def run_card_html(store: RunStore, run_id: str) -> str:
    """The run card of a tested run as one HTML document (plotly.js inlined once)."""
    summary = store.summary(run_id)
    metrics = store.metrics(run_id)
    test = metrics.test if metrics else None
    if test is None:
        raise ValueError(f"Run {summary.name!r} has no test results (state: {summary.state}). A run card needs a "
                         "tested run with a test split: wait for it to finish, or pick another run.")
    cfg = store.trained_config(run_id)  # its image size and ensemble as chosen for the data
    status = store.status(run_id)
    data = store.data_record(run_id)
    history = store.history(run_id)
    predictions = store.predictions(run_id, "test")
    classes = predictions.classes
    focus = metrics.focus_class or default_focus_class(classes)
    ci = run_intervals(store, run_id, "test")
    rel = reliability(predictions.y_true, predictions.probs)
    figure = _Figures()

    figures = []
    if data and data.counts:
        figures.append(figure(class_counts_figure(data.counts)))
    figures.append(figure(confusion_matrix_figure(test.confusion_matrix, test.classes,
                                                  title="Confusion matrix (test; rows true, columns predicted)")))
    curves, fold = latest_fold(history)  # a fold ensemble: its latest fold's curves, not every fold's in one line
    if curves:
        title = "Training curves" + (f" · {member_word(summary.bagged)} {fold} of {summary.folds}" if fold else "")
        figures.append(figure(history_figure(curves, title=title), wide=True))
    figures.append(figure(pr_curves_figure(predictions.y_true, predictions.probs, classes, focus)))
    figures.append(figure(reliability_figure({"test": rel})))
    figures.append(figure(interval_figure({summary.name: ci}), wide=True))

    counts = data.counts if data else {}
    count_rows = [{"split": split, **per_class, "total": sum(per_class.values())}
                  for split, per_class in counts.items()]
    model_record = store.model_record(run_id)
    state = summary.state + (f" (stopped; {summary.kept_words()})" if metrics.stopped else "")
    cv = store.cross_validation(run_id)
    overview = [
        ("name", summary.name), ("run id", run_id), ("started by", owner_words(summary.owner, summary.owner_name)),
        ("state", state), ("created", status.created),
        ("ended", status.ended), ("model", cfg.model),
        ("parameters", _parameters_words(model_record) if model_record and model_record.parameters else None),
        ("image size", f"{model_record.image_size} px" + ("" if cfg.image_size else " (chosen for the data)")
         if model_record else format_value(cfg.image_size, "image_size")),
        *(_fold_rows(cv, cfg.epochs, cfg.keeps_last()) if cv and cv.scores else
          _bagged_rows(history, cfg.bagged_models, cfg.epochs) if cfg.bagged_models else
          [("kept epoch", f"{metrics.best_epoch} (the last: no validation images to pick one by)")
           if history and not history[-1].validated else
           ("kept epoch", f"{metrics.best_epoch} (the last: 'Checkpoint kept')") if cfg.keeps_last() else
           ("best epoch", metrics.best_epoch),
           ("epochs trained", len(history)),
           ("stopped early", "yes" if status.stopped_early else "no")]),
        ("number format", format_value(metrics.precision, "precision")), ("focus class", focus),
    ]
    # On a server others can reach, the card names folders by their setting, not by their path on the server.
    data_pairs = [("dataset", summary.dataset),
                  ("source", redact_paths(data.root if data else cfg.data.source or "built-in")),
                  ("layout", format_value(data.layout, "layout") if data else None),
                  ("synthetic", ("yes" if data.synthetic else "no") if data else None),
                  ("fingerprint", data.fingerprint if data else None), ("classes", ", ".join(classes)),
                  ("colour", format_value(data.color, "color") if data else None)]
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    body = f"""
<h1>Run card: {_esc(summary.name)}</h1>
<p class="muted">Run {_esc(run_id)} · made by medcls {_esc(__version__)} on {_esc(made)}.</p>
<div class="note"><b>A teaching tool, not a diagnosis.</b> {_esc(DISCLAIMER)}</div>
<h2>Summary</h2>{_pairs(overview)}
<h2>Data</h2>{_pairs(data_pairs)}
<p>Images per split and class:</p>{_table(count_rows)}
<h2>Test metrics with 95% confidence intervals</h2>{_metrics_section(test, ci)}{_copies_warning(store, run_id, metrics, predictions)}
{_cross_validation_section(cv, focus) if cv and cv.scores else ""}
<h2>Operating point for {_esc(focus)}</h2>{_operating_point_section(store, run_id, classes, focus, out_of_fold=bool(cv and cv.scores),
                         bagged=bool(cfg.bagged_models))}
<h2>Calibration</h2><p>{_esc(calibration_sentence(rel))}</p>
<h2>Figures</h2><div class='figures'>{''.join(figures)}</div>
<h2>Settings</h2>{_table([{**r, "value": redact_paths(r["value"])} for r in settings_rows(cfg)],
                          ["group", "setting", "value"])}
<h2>Machine and versions</h2>{_pairs(sorted(store.env(run_id).items()))}
<div class="note">{_esc(DISCLAIMER)}</div>
"""
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>medcls run card: {_esc(summary.name)}</title><style>{_CSS}</style></head>"
            f"<body>{body}</body></html>\n")


def write_run_card(store: RunStore, run_id: str, path: Path | str | None = None) -> Path:
    """Write the run card to ``path`` (default: run_card.html in the run folder) atomically."""
    target = Path(path) if path is not None else store.file(run_id, "run_card.html")
    atomic_write_text(target, run_card_html(store, run_id))
    log.info("Wrote the run card of %s to %s", run_id, target)
    return target
