"""Which runs a page offers first, and how a picker describes a run: its name, data, state and test score."""

from __future__ import annotations

from typing import Iterable, Sequence

from .summary import RunSummary

__all__ = ["state_words", "run_label", "preferred_run", "comparable_default"]


def state_words(summary: RunSummary) -> str:
    """'finished', 'stopped at epoch 4 of 30', 'failed', ... as a picker shows it."""
    if summary.state == "finished":
        return "finished"
    if summary.state == "cancelled" and summary.epochs_done:
        return f"stopped at epoch {summary.epochs_words()}"
    if summary.state == "interrupted" and summary.epochs_done:
        return f"interrupted at epoch {summary.epochs_words()}"
    return summary.state


def run_label(summary: RunSummary, name: str | None = None) -> str:
    """'busi · small_cnn · oversample · 128 px · on busi · finished · test macro-F1 0.77' (``name`` overrides
    the run's name, e.g. one made unique by :func:`~medcls.runs.naming.display_names`)."""
    score = "not tested" if summary.test_macro_f1 is None else f"test macro-F1 {summary.test_macro_f1:.2f}"
    return " · ".join([name or summary.name, f"on {summary.dataset}", state_words(summary), score])


def _score(summary: RunSummary) -> float:
    return -1.0 if summary.test_macro_f1 is None else summary.test_macro_f1


def preferred_run(summaries: Sequence[RunSummary], data_fingerprint: str = "") -> str | None:
    """The run to offer first: the best finished run (by test macro-F1) on the current data, else the best tested
    run on it (a stopped run answers with what it kept, which suits the current data's images better than a model
    of other data does), else the best finished run on any data, else the newest. ``summaries`` are newest first;
    ties go to the newer run."""
    if not summaries:
        return None
    tested = [s for s in summaries if s.test_macro_f1 is not None]
    on_data = [s for s in tested if data_fingerprint and s.data_fingerprint == data_fingerprint]
    pool = _finished(on_data) or on_data or _finished(tested)
    if not pool:
        return summaries[0].run_id
    return max(pool, key=lambda s: (_score(s), -pool.index(s))).run_id


def _finished(summaries: Sequence[RunSummary]) -> list[RunSummary]:
    return [s for s in summaries if s.state == "finished"]


def comparable_default(summaries: Iterable[RunSummary], count: int = 2, data_fingerprint: str = "") -> list[str]:
    """Runs to compare first: the newest tested run on the current data (``data_fingerprint``; else the newest
    tested run) and the next newest tested on the same data with the same classes (never runs whose test images or
    classes differ)."""
    tested = [s for s in summaries if s.tested]
    if not tested:
        return []
    first = next((s for s in tested if data_fingerprint and s.data_fingerprint == data_fingerprint), tested[0])
    return [s.run_id for s in tested if s.data_fingerprint == first.data_fingerprint
            and tuple(s.classes) == tuple(first.classes)][:count]
