"""What a run measured: a cross-validation's folds in words and on disk (cv.json)."""

from __future__ import annotations

from medcls.runs.results import CrossValidation, FoldScore


def test_a_cross_validations_spread_in_words():
    def score(fold: int, f1: float, recall: float | None) -> FoldScore:
        return FoldScore(fold=fold, images=10, macro_f1=f1, accuracy=0.5, balanced_accuracy=0.5, focus_recall=recall,
                         best_epoch=1, epochs=1)

    cv = CrossValidation(folds=2, grouped=False, scores=(score(1, 0.7, None), score(2, 0.8, 0.5)), completed=2)
    assert cv.mean_sd_words("macro_f1") == "0.750 ± 0.071"
    assert cv.mean_sd_words("focus_recall") == "0.500"  # one fold has it: no spread to give
    none = CrossValidation(folds=1, grouped=False, scores=(score(1, 0.7, None),), completed=1)
    assert none.mean_sd_words("focus_recall") is None


def test_a_cross_validations_epochs_in_words():
    def score(fold: int, epochs: int) -> FoldScore:
        return FoldScore(fold=fold, images=10, macro_f1=0.5, accuracy=0.5, balanced_accuracy=0.5, focus_recall=0.5,
                         best_epoch=1, epochs=epochs)

    five = CrossValidation(folds=5, grouped=False, scores=tuple(score(k, e) for k, e in
                                                                 enumerate((16, 18, 30, 15, 27), 1)), completed=5)
    assert five.epochs_words(30) == "5 fold models: 16, 18, 30, 15 and 27 of 30 epochs"
    one = CrossValidation(folds=1, grouped=False, scores=(score(1, 4),), completed=1)
    assert one.epochs_words(10) == "1 fold model: 4 of 10 epochs"


def test_cross_validation_says_what_its_folds_kept_together_and_keeps_it_on_disk():
    score = FoldScore(fold=1, images=10, macro_f1=0.7, accuracy=0.8, balanced_accuracy=0.75, focus_recall=None,
                      best_epoch=3, epochs=3)
    both = CrossValidation(folds=2, grouped=True, scores=(score,), completed=1, by_subfolder=True)
    assert both.kept_together_words() == "near-duplicates and each subfolder's images"
    assert CrossValidation.from_dict(both.to_dict()) == both
    old = {k: v for k, v in both.to_dict().items() if k != "by_subfolder"}   # a cv.json from before the option
    assert CrossValidation.from_dict(old).by_subfolder is False
    assert CrossValidation(folds=2, grouped=False, scores=(score,), completed=1).kept_together_words() == ""
