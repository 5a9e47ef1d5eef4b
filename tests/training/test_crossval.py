"""Cross-validation: k fold models, out-of-fold predictions, each fold's score, and the models as one ensemble."""

from __future__ import annotations

from pathlib import Path

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


def test_small_datasets_are_cross_validated_automatically_large_or_thin_ones_are_not():
    from medcls.training.crossval import AUTO_FOLDS, auto_folds

    assert auto_folds([370, 180, 113]) == AUTO_FOLDS       # BUSI's train + val: a few hundred, every class ≥ 50
    assert auto_folds([24, 21, 296]) == 0                  # the built-in phantoms: too few of two classes
    assert auto_folds([1200, 1200, 1200]) == 0             # large: one model has enough, five take five times
    assert auto_folds([500, 0, 0]) == 0                    # one class present: nothing to validate
    assert auto_folds([50, 50]) == AUTO_FOLDS and auto_folds([50, 49]) == 0  # 10 per class in each of 5 folds
    assert auto_folds([370, 180, 113], work_per_image=4.0) == 0  # BUSI, each image 4 times the work: too long
    # 1,800 images of the 12-filter default: under the work limit of 2,000, which bounds about the time 1,500 of
    # the 16-filter network took; 2,100 are over it.
    assert auto_folds([700, 600, 500]) == AUTO_FOLDS and auto_folds([800, 700, 600]) == 0


def test_the_automatic_ensemble_is_limited_by_work_images_times_size_and_network():
    from medcls.config import TrainConfig
    from medcls.training.crossval import AUTO_FOLDS, REFERENCE_PASSES, folds_for, training_work

    busi = [370, 180, 113]
    default = TrainConfig()
    assert training_work(default) == 1.0 and folds_for(default, busi) == AUTO_FOLDS
    assert training_work(default.with_options(image_size=256)) == pytest.approx(4.0, rel=0.01)  # 4 times the pixels
    assert folds_for(default.with_options(image_size=256), busi) == 0
    assert folds_for(default.with_options(image_size=64), [900, 900, 900]) == AUTO_FOLDS   # small images: cheap
    assert folds_for(default.with_options(image_size=32), [1100, 1100, 1100]) == 0  # over 3,000: one model learns
    # A heavier network at the same size: ResNet-18 is several times small_cnn's arithmetic (and is built with
    # random weights to count it, so no ImageNet file is needed).
    resnet_all = default.with_options(model="resnet18", finetune="all")
    assert training_work(resnet_all) > 4 and folds_for(resnet_all, busi) == 0
    # Frozen, with cached features (ResNet-18's default: head only): the backbone runs once per cached view,
    # forward only, so five heads are far less work than five trained networks.
    frozen = default.with_options(model="resnet18")
    assert training_work(frozen) == pytest.approx(training_work(resnet_all) * 4 / REFERENCE_PASSES)  # 4 views
    assert folds_for(frozen, busi) == AUTO_FOLDS
    assert training_work(frozen.with_options(feature_cache=False)) == training_work(resnet_all)  # every epoch
    assert training_work(frozen.with_options(augment=False)) == pytest.approx(training_work(frozen) / 4)  # 1 view
    assert folds_for(default.with_options(image_size=256, folds=5), busi) == 5  # as set


def test_a_small_dataset_kept_from_the_ensemble_by_its_work_says_so_before_and_after_training():
    from types import SimpleNamespace

    from medcls.config import TrainConfig
    from medcls.training.crossval import resolve_folds, too_much_work

    busi = [370, 180, 113]
    large = TrainConfig().with_options(image_size=256)
    words = too_much_work(large, busi)
    assert words.startswith("One model, not a 5-fold ensemble: 663 training + validation images")
    assert "as much work as 2,652 images with small_cnn at 128 px" in words and "limit of 2,000" in words
    assert too_much_work(TrainConfig(), busi) is None                       # the ensemble is trained
    reference = too_much_work(TrainConfig(), [1000, 800, 500])              # the reference model and size
    assert "2,300 training + validation images with small_cnn at 128 px are over the automatic ensemble's " \
           "limit of 2,000 such images" in reference and "as much work as" not in reference
    assert too_much_work(large, [24, 21, 296]) is None                      # too few of a class anyway
    assert too_much_work(large.with_options(small_data_ensemble=False), busi) is None  # switched off
    labels = torch.cat([torch.full((n,), i) for i, n in enumerate(busi)])
    data = SimpleNamespace(train=SimpleNamespace(labels=labels), val=SimpleNamespace(labels=labels[:0]),
                           classes=["benign", "malignant", "normal"])
    cfg, note = resolve_folds(large, data)   # the run's note (the Train page shows the same words before Start)
    assert cfg.folds == 0 and note == words


def test_a_small_dataset_kept_from_the_ensemble_by_a_rare_class_names_it():
    from types import SimpleNamespace

    from medcls.config import TrainConfig
    from medcls.training.crossval import folds_for, resolve_folds, too_rare_for_folds

    classes = ["benign", "malignant", "normal"]
    words = too_rare_for_folds(TrainConfig(), [24, 21, 296], classes)   # the built-in phantoms' train + val
    assert folds_for(TrainConfig(), [24, 21, 296]) == 0
    assert words == ("One model, not a 5-fold ensemble: malignant has only 21 training + validation images, so "
                     "each fold model would pick its best epoch on about 4 of them (the ensemble needs 50 of every "
                     "class, 10 for each fold). Set the folds to train an ensemble anyway.")
    assert too_rare_for_folds(TrainConfig(), [370, 180, 113], classes) is None     # BUSI: the ensemble trains
    assert too_rare_for_folds(TrainConfig(), [3000, 40, 500], classes) is None     # large: not a small dataset
    assert "ensemble: malignant has only 21" in too_rare_for_folds(TrainConfig(), [0, 21, 296], classes)  # not 0
    assert too_rare_for_folds(TrainConfig().with_options(folds=3), [24, 21, 296], classes) is None  # as set
    assert too_rare_for_folds(TrainConfig().with_options(small_data_ensemble=False), [24, 21, 296], classes) is None
    labels = torch.cat([torch.full((n,), i) for i, n in enumerate([24, 21, 296])])
    data = SimpleNamespace(train=SimpleNamespace(labels=labels), val=SimpleNamespace(labels=labels[:0]),
                           classes=classes)
    cfg, note = resolve_folds(TrainConfig(), data)   # the run keeps the Train page's words among its notes
    assert cfg.folds == 0 and note == words


def test_fit_trains_a_fold_ensemble_when_chosen_and_one_model_when_turned_off(class_dataset, synth, monkeypatch):
    from medcls.training import crossval

    monkeypatch.setattr(crossval, "AUTO_MIN_PER_FOLD", 1)  # the tiny dataset counts as small enough
    monkeypatch.setattr(crossval, "AUTO_FOLDS", 2)
    cfg = synth.config(class_dataset, epochs=1)
    assert cfg.folds == 0 and cfg.small_data_ensemble
    result = crossval.fit(cfg)
    assert isinstance(result.model, FoldEnsemble) and result.cv.folds == 2
    assert "trained as a 2-fold cross-validation ensemble" in result.notes[0]
    single = crossval.fit(cfg.with_options(small_data_ensemble=False))
    assert single.cv is None and not isinstance(single.model, FoldEnsemble)
    with pytest.raises(ConfigError, match="no effect here"):
        cfg.with_options(folds=3, small_data_ensemble=False)  # set folds: the automatic choice does not apply


def test_the_options_help_and_the_readme_state_the_ensembles_limits_as_the_code_applies_them():
    # The help text cannot import crossval (crossval imports the config), so it spells the limits out, as the
    # README does: this keeps the words true when a limit changes.
    from medcls.config import option_table
    from medcls.training.crossval import AUTO_MAX_IMAGES, AUTO_MAX_WORK

    words = option_table()["small_data_ensemble"].option.help
    assert f"at most {AUTO_MAX_IMAGES:,} training" in words and f"as much work as {AUTO_MAX_WORK:,} of them" in words
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert f"at most {AUTO_MAX_IMAGES:,} training + validation images, and at most as much work as " \
           f"{AUTO_MAX_WORK:,} of them" in readme


def test_the_work_limit_was_set_for_the_default_networks_arithmetic():
    # AUTO_MAX_WORK bounds an automatic ensemble's time in units of one image of the default network at 128 px, and
    # was chosen (2,000) for the 12-filter default's arithmetic. A new default makes each unit cost more or less
    # time: retune the limit by the ratio of step times (the comment above it) and then this figure.
    from medcls.training.crossval import REFERENCE_MODEL, REFERENCE_SIZE, _forward_cost

    macs, _ = _forward_cost(REFERENCE_MODEL, None, REFERENCE_SIZE)
    assert macs == 58_393_344, f"the default network now costs {macs:,} multiply-adds an image: retune AUTO_MAX_WORK"
