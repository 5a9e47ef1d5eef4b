"""One line per run: what lists of runs (the pickers, Compare, sweeps, ``python -m medcls runs``) show about each.

Unlike the records in :mod:`medcls.runs.records`, a summary is not a file of its own: the run store
(:meth:`~medcls.runs.store.RunStore.summary`) puts it together from the status, meta, config, history, metrics
and, for a fold ensemble, cv.json.
"""

from __future__ import annotations

from dataclasses import dataclass

from .records import ACTIVE_STATES, ModelRecord, member_word

__all__ = ["RunSummary"]


@dataclass(frozen=True)
class RunSummary:
    """What a list of runs shows about each: read from status, meta, config, history and metrics."""

    run_id: str
    name: str                      # the readable name (the run's own, or made from its settings)
    state: str
    created: str
    model: str
    dataset: str                   # the data's name in words ('built-in synthetic phantoms', 'busi', ...)
    data_fingerprint: str
    classes: tuple[str, ...]
    epochs_done: int
    epochs: int
    error: str
    best_score: float | None       # the validation score of the kept checkpoint
    test_macro_f1: float | None
    focus_class: str
    focus_recall: float | None     # test recall of the focus class
    has_weights: bool
    tested: bool                   # has test metrics (finished, or stopped and then tested)
    stopped: bool                  # the metrics are of a stopped run's best checkpoint
    owner: str = ""
    owner_name: str = ""
    damaged: str = ""
    fold: int = 0                  # an ensemble: the fold (or bagged model) of the latest epoch, whose epochs
                                   # epochs_done counts
    folds: int = 0
    bagged: bool = False           # the ensemble's models are bagged (each learns from every image), not folds

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def epochs_words(self) -> str:
        """'4 of 30', or an ensemble's '4 of 30 in fold 3 of 5' ('in bagged model 3 of 5')."""
        return f"{self.epochs_done} of {self.epochs}" + (
            f" in {member_word(self.bagged)} {self.fold} of {self.folds}" if self.fold else "")

    def kept_words(self, verb: str = "tested", record: ModelRecord | None = None) -> str:
        """What an unfinished run was ``verb`` 'tested' with, or ('answers') answers with: 'its kept checkpoint so
        far was tested', or an ensemble's 'the 2 bagged models trained so far answer together'. A stop keeps the
        model it stopped in (part-way, with its kept checkpoint); a run that was interrupted keeps only the models
        it finished: its weights' ``record`` counts them ('its one finished bagged model answers')."""
        one, together = {"tested": ("was tested", "were tested together"),
                         "answers": ("answers", "answer together")}[verb]
        if not self.fold:
            return f"its kept checkpoint so far {one}"
        count = record.folds if record is not None else self.fold
        kind = member_word(self.bagged, plural=True)
        if count < self.fold:
            return f"its one finished {kind[:-1]} {one}" if count == 1 else f"its {count} finished {kind} {together}"
        return f"its one {kind[:-1]} trained so far {one}" if count == 1 else \
            f"the {count} {kind} trained so far {together}"
