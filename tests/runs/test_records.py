"""Run records: which epochs make one training curve."""

from __future__ import annotations

from medcls.runs.records import EpochRecord, best_record, fold_histories, latest_fold


def epoch(n: int, fold: int = 0, best: bool = False) -> EpochRecord:
    return EpochRecord(epoch=n, train_loss=1.0, train_accuracy=0.5, val_loss=1.0, val_accuracy=0.5, val_macro_f1=0.5,
                       val_balanced_accuracy=0.5, val_recall={}, lr=1e-3, seconds=1.0, images_per_s=10.0,
                       score=0.1 * n, best=best, fold=fold)


def test_a_cross_validation_history_is_drawn_one_fold_at_a_time():
    ordinary = [epoch(1, best=True), epoch(2)]
    assert latest_fold(ordinary) == (ordinary, 0) and latest_fold([]) == ([], 0)
    folds = [epoch(1, 1, True), epoch(2, 1, True), epoch(1, 2, True), epoch(2, 2), epoch(3, 2)]
    shown, fold = latest_fold(folds)
    assert fold == 2 and [h.epoch for h in shown] == [1, 2, 3]  # never epochs 1, 2, 1, 2, 3 on one axis
    assert best_record(shown).epoch == 1 and best_record(shown).fold == 2
    each = fold_histories(folds)  # every fold's curve, for a run shown alone
    assert list(each) == [1, 2] and [h.epoch for h in each[1]] == [1, 2] and each[2] == shown
    assert fold_histories(ordinary) == {0: ordinary} and fold_histories([]) == {0: []}
