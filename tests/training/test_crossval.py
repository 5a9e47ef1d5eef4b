"""Cross-validation: k fold models, out-of-fold predictions, each fold's score, and the models as one ensemble."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcls.config import ConfigError
from medcls.inference.proba import predict_proba
from medcls.models.ensemble import FoldEnsemble
from medcls.training.crossval import cross_validate
from medcls.training.pipeline import prepare_data


def test_three_folds_give_three_scores_out_of_fold_predictions_and_an_ensemble(class_dataset, synth):
    cfg = synth.config(class_dataset, folds=3, epochs=1)
    data = prepare_data(cfg)
    result = cross_validate(cfg, data)
    assert isinstance(result.model, FoldEnsemble) and len(result.model.members) == 3
    cv = result.cv
    assert cv.folds == cv.completed == 3 and [s.fold for s in cv.scores] == [1, 2, 3]
    pooled = len(data.train) + len(data.val)
    assert sum(s.images for s in cv.scores) == pooled                      # every pooled image held out once
    assert result.metrics["val"].n == pooled and len(result.probs["val"]) == pooled
    assert result.metrics["test"].n == len(data.test)
    mean, sd = cv.mean_sd("macro_f1")
    assert mean == pytest.approx(np.mean([s.macro_f1 for s in cv.scores])) and sd is not None
    # The ensemble's probabilities are the mean of its members'.
    members = np.mean([predict_proba(m, data.test.images) for m in result.model.members], axis=0)
    np.testing.assert_allclose(predict_proba(result.model, data.test.images), members, atol=1e-5)
    np.testing.assert_allclose(result.probs["test"].sum(1), 1.0, atol=1e-5)


def test_each_fold_validates_on_images_it_never_trained_on(class_dataset, synth):
    seen = []

    from medcls.training.engine import Callback

    class Spy(Callback):
        def on_fit_start(self, trainer):
            seen.append((set(map(tuple, trainer.train_data.inputs.flatten(1)[:, :16].tolist())),
                         set(map(tuple, trainer.val_data.inputs.flatten(1)[:, :16].tolist()))))

    cfg = synth.config(class_dataset, folds=2, epochs=1, augment=False)
    cross_validate(cfg, callbacks_for=lambda fold, folds: [Spy()])
    assert len(seen) == 2
    for train, val in seen:
        assert not train & val


def test_too_many_folds_for_a_class_are_refused_with_the_fix(tmp_path, synth):
    root = synth.class_folders(tmp_path / "d", {"benign": 12, "malignant": 4, "normal": 12})
    with pytest.raises(ConfigError, match="fewer training \\+ validation images than the 6 folds"):
        cross_validate(synth.config(root, folds=6, epochs=1, val_fraction=0.1, test_fraction=0.1))
    with pytest.raises(ConfigError, match="0 \\(one model\\) or at least 2"):
        synth.config(root, folds=1)


def test_a_stop_during_the_second_fold_keeps_the_first_folds_as_the_ensemble(class_dataset, synth):
    from medcls.training.engine import Callback

    state = {"fits": 0}

    class StopInFoldTwo(Callback):
        def on_fit_start(self, trainer):
            state["fits"] += 1

        def on_epoch_end(self, trainer, record):
            if state["fits"] == 2:
                state["stop"] = True

    cfg = synth.config(class_dataset, folds=3, epochs=2)
    result = cross_validate(cfg, callbacks_for=lambda fold, folds: [StopInFoldTwo()],
                            should_cancel=lambda: state.get("stop", False))
    assert result.cancelled and len(result.model.members) == 2 and result.cv.completed == 1
    assert "test" in result.metrics
    with torch.inference_mode():
        assert result.model(torch.rand(2, 1, 32, 32)).shape == (2, 3)


def test_fit_trains_a_fold_ensemble_when_chosen_and_one_model_when_turned_off(class_dataset, synth, monkeypatch):
    from medcls.training import autoplan, crossval

    monkeypatch.setattr(autoplan, "AUTO_MIN_PER_FOLD", 1)  # the tiny dataset counts as small enough
    monkeypatch.setattr(autoplan, "AUTO_FOLDS", 2)
    cfg = synth.config(class_dataset, epochs=1)
    assert cfg.folds == 0 and cfg.small_data_ensemble
    result = crossval.fit(cfg)
    assert isinstance(result.model, FoldEnsemble) and result.cv.folds == 2
    assert "trained as a 2-fold cross-validation ensemble" in result.notes[0]
    single = crossval.fit(cfg.with_options(small_data_ensemble=False))
    assert single.cv is None and not isinstance(single.model, FoldEnsemble)
    with pytest.raises(ConfigError, match="no effect here"):
        cfg.with_options(folds=3, small_data_ensemble=False)  # set folds: the automatic choice does not apply


def test_folds_keep_each_subfolder_whole_when_asked(tmp_path, synth):
    """Patient folders below the class folders: with 'Keep subfolders in one split' no folder spans two folds."""
    from pathlib import Path

    from medcls.data.subfolders import subfolder_of
    from medcls.training.crossval import fold_assignment, pool_of
    from tests.conftest import write_image

    for c, name in enumerate(("benign", "malignant")):
        for k in range(6):
            for i in range(4):
                write_image(tmp_path / "d" / name / f"p{k}" / f"{i}.png", 16, seed=c * 100 + k * 10 + i)
    cfg = synth.config(tmp_path / "d", folds=3, epochs=1, group_subfolders=True)
    data = prepare_data(cfg)
    pool = pool_of(data)
    spec = data.decoded.spec
    folds_of: dict[str, set[int]] = {}
    for path, fold in zip(pool.paths, fold_assignment(cfg, pool, data.classes, spec).tolist()):
        folds_of.setdefault(subfolder_of(path, spec.root, spec.layout), set()).add(fold)
    assert all(len(folds) == 1 for folds in folds_of.values()) and len(folds_of) >= 6
    assert Path(pool.paths[0]).parent.name.startswith("p")
    cv = cross_validate(cfg, data).cv   # and the run's record says so
    assert cv.by_subfolder and cv.kept_together_words() == "each subfolder's images"


def test_folds_keep_each_patient_a_manifests_column_names_whole(tmp_path, synth):
    from medcls.training.crossval import fold_assignment, pool_of
    from tests.conftest import write_image

    # A manifest with a patient_id column and all images in one folder: the column is what says whose they are.
    lines = ["path,label,patient_id"]
    for c, name in enumerate(("benign", "malignant")):
        for k in range(6):
            for i in range(4):
                write_image(tmp_path / "d" / "images" / f"{name}{k}-{i}.png", 16, seed=c * 100 + k * 10 + i)
                lines.append(f"images/{name}{k}-{i}.png,{name},P{c}{k}")
    (tmp_path / "d" / "split.csv").write_text("\n".join(lines) + "\n")
    cfg = synth.config(tmp_path / "d", folds=3, epochs=1, group_subfolders=True)
    data = prepare_data(cfg)
    pool, spec = pool_of(data), data.decoded.spec
    folds_of: dict[str, set[int]] = {}
    for path, fold in zip(pool.paths, fold_assignment(cfg, pool, data.classes, spec).tolist()):
        folds_of.setdefault(spec.group_of[path], set()).add(fold)
    assert all(len(folds) == 1 for folds in folds_of.values()) and len(folds_of) >= 6
    cv = cross_validate(cfg, data).cv
    assert cv.kept_together_words() == "each patient_id's images"
    assert type(cv).from_dict(cv.to_dict()) == cv
