"""The choices a run leaves to its data: one model or a fold ensemble, and the image size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def test_small_datasets_are_cross_validated_automatically_large_or_thin_ones_are_not():
    from medcls.training.autoplan import AUTO_FOLDS, auto_folds

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
    from medcls.training.autoplan import AUTO_FOLDS, REFERENCE_PASSES, folds_for, training_work

    busi = [370, 180, 113]
    default = TrainConfig(image_size=128)
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
    from medcls.training.autoplan import resolve_folds, too_much_work

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
    from medcls.training.autoplan import folds_for, resolve_folds, too_rare_for_folds

    classes = ["benign", "malignant", "normal"]
    words = too_rare_for_folds(TrainConfig(), [24, 21, 296], classes)   # the built-in phantoms' train + val
    assert folds_for(TrainConfig(), [24, 21, 296]) == 0
    assert words == ("One model, not a 5-fold ensemble: malignant has only 21 training + validation images, so "
                     "each fold model would be validated on about 4 of them (the ensemble needs 50 of every "
                     "class, 10 for each fold). Set the folds to train an ensemble anyway.")
    assert too_rare_for_folds(TrainConfig(), [370, 180, 113], classes) is None     # BUSI: the ensemble trains
    assert too_rare_for_folds(TrainConfig(), [3000, 40, 500], classes) is None     # large: not a small dataset
    assert "ensemble: malignant has only 21" in too_rare_for_folds(TrainConfig(), [0, 21, 296], classes)  # not 0
    assert too_rare_for_folds(TrainConfig().with_options(folds=3), [24, 21, 296], classes) is None  # as set
    # A class of one image (kept whole in train): not "about 0 of them", but how many fold models see none.
    assert ("normal has only 1 training + validation image, so 4 of the 5 fold models would be validated on none "
            "of them") in too_rare_for_folds(TrainConfig(), [40, 30, 1], classes)
    assert too_rare_for_folds(TrainConfig().with_options(small_data_ensemble=False), [24, 21, 296], classes) is None
    labels = torch.cat([torch.full((n,), i) for i, n in enumerate([24, 21, 296])])
    data = SimpleNamespace(train=SimpleNamespace(labels=labels), val=SimpleNamespace(labels=labels[:0]),
                           classes=classes)
    cfg, note = resolve_folds(TrainConfig(), data)   # the run keeps the Train page's words among its notes
    assert cfg.folds == 0 and note == words


def test_the_options_help_and_the_readme_state_the_ensembles_limits_as_the_code_applies_them():
    # The help text cannot import crossval (crossval imports the config), so it spells the limits out, as the
    # README does: this keeps the words true when a limit changes.
    from medcls.config import option_table
    from medcls.training.autoplan import AUTO_MAX_IMAGES, AUTO_MAX_WORK

    words = option_table()["small_data_ensemble"].option.help
    assert f"at most {AUTO_MAX_IMAGES:,} training" in words and f"as much work as {AUTO_MAX_WORK:,} of them" in words
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert f"at most {AUTO_MAX_IMAGES:,} training + validation images, and at most as much work as " \
           f"{AUTO_MAX_WORK:,} of them" in readme


def test_the_work_limit_was_set_for_the_default_networks_arithmetic():
    # AUTO_MAX_WORK bounds an automatic ensemble's time in units of one image of the default network at 128 px, and
    # was chosen (2,000) for the 12-filter default's arithmetic. A new default makes each unit cost more or less
    # time: retune the limit by the ratio of step times (the comment above it) and then this figure.
    from medcls.training.autoplan import REFERENCE_MODEL, REFERENCE_SIZE, _forward_cost

    macs, _ = _forward_cost(REFERENCE_MODEL, None, REFERENCE_SIZE)
    assert macs == 58_393_344, f"the default network now costs {macs:,} multiply-adds an image: retune AUTO_MAX_WORK"


BUSI = [370, 180, 113]  # BUSI's train + val images per class


def test_image_size_zero_trains_larger_images_of_a_small_dataset_at_192_px_as_three_bagged_models():
    from medcls.config import TrainConfig
    from medcls.training.autoplan import AUTO_FOLDS, DETAIL_BAGGED, DETAIL_SIZE, folds_for, plan_for, resolve_image_size

    cfg, note = resolve_image_size(TrainConfig(), BUSI, side=256)   # BUSI's 256 px ultrasound images
    assert (cfg.image_size, cfg.folds, cfg.bagged_models) == (DETAIL_SIZE, 0, DETAIL_BAGGED) == (192, 0, 3)
    assert note.startswith("A small dataset of large images (663 training + validation images, typically 256 px on "
                           "their shorter side): trained at 192 px as 3 bagged models")
    # The ways back to validation curves and a cross-validation score, with what each trains.
    assert "set 'Checkpoint kept' to the best epoch (3 fold models at 192 px" in note
    assert "set the folds yourself (at 128 px unless you set an image size)" in note
    assert resolve_image_size(TrainConfig(checkpoint="best"), BUSI, side=256)[0].folds == 3
    assert resolve_image_size(TrainConfig(folds=3), BUSI, side=256)[0].image_size == 128
    assert plan_for(TrainConfig(), BUSI, side=256) == cfg and folds_for(TrainConfig(), BUSI, side=256) == 0
    assert resolve_image_size(TrainConfig(), BUSI, side=192)[0].image_size == 192     # at least 192 px
    for side in (191, 128, 28, None):  # smaller images, or a side not known: 128 px and the usual 5 folds
        sized, words = resolve_image_size(TrainConfig(), BUSI, side=side)
        assert (sized.image_size, sized.folds, sized.bagged_models, words) == (128, 0, 0, None)
        assert folds_for(TrainConfig(), BUSI, side=side) == AUTO_FOLDS


def test_a_run_that_keeps_its_best_epoch_trains_larger_images_as_three_fold_models():
    # The best epoch is picked on held-out images, which bagged models do not have.
    from medcls.config import TrainConfig
    from medcls.training.autoplan import DETAIL_FOLDS, folds_for, resolve_image_size

    best = TrainConfig().with_options(checkpoint="best")
    cfg, note = resolve_image_size(best, BUSI, side=256)
    assert (cfg.image_size, cfg.folds, cfg.bagged_models) == (192, DETAIL_FOLDS, 0) == (192, 3, 0)
    assert "trained at 192 px as a 3-fold cross-validation ensemble" in note and "best validation epoch" in note
    assert folds_for(best, BUSI, side=256) == DETAIL_FOLDS


def test_image_size_zero_keeps_128_px_wherever_the_small_data_ensemble_would_not_train():
    from medcls.config import TrainConfig
    from medcls.training.autoplan import resolve_image_size

    for counts, cfg in (([24, 21, 296], TrainConfig()),                               # a rare class (the phantoms)
                        ([1200, 1200, 1200], TrainConfig()),                          # large: one model
                        (BUSI, TrainConfig().with_options(small_data_ensemble=False)),  # switched off
                        (BUSI, TrainConfig().with_options(folds=5)),                  # folds as set
                        (BUSI, TrainConfig().with_options(model="resnet18", finetune="all"))):  # too much work
        sized, note = resolve_image_size(cfg, counts, side=512)
        assert sized.image_size == 128 and sized.folds == cfg.folds and note is None
    explicit = TrainConfig(image_size=96)
    assert resolve_image_size(explicit, BUSI, side=512) == (explicit, None)  # a size set is kept


def test_three_fold_models_at_192_px_cost_about_what_five_cost_at_128_px():
    # Each fold model trains on (k - 1) / k of the images: the plan spends about the default ensemble's time.
    from medcls.config import TrainConfig
    from medcls.training.autoplan import AUTO_FOLDS, DEFAULT_SIZE, DETAIL_FOLDS, DETAIL_SIZE, training_work

    def ensemble_work(size: int, folds: int) -> float:
        return (folds - 1) * training_work(TrainConfig(image_size=size))

    ratio = ensemble_work(DETAIL_SIZE, DETAIL_FOLDS) / ensemble_work(DEFAULT_SIZE, AUTO_FOLDS)
    assert 1.0 < ratio < 1.2, ratio
    with pytest.raises(ValueError, match="still 0"):  # work is counted at a size, once chosen
        training_work(TrainConfig())


def test_runs_compared_side_by_side_train_alike_when_only_some_would_get_the_larger_size():
    from medcls.config import TrainConfig
    from medcls.training.autoplan import folds_for, group_models_words, plan_for, resolve_image_size, train_alike

    light, heavy = TrainConfig(), TrainConfig().with_options(model="resnet18", finetune="all")
    configs, note = train_alike([light, heavy], BUSI, side=256)  # 3 bagged models at 192 px against one model
    assert "must train alike" in note and not any(c.small_data_ensemble for c in configs)
    assert [resolve_image_size(c, BUSI, 256)[0].image_size for c in configs] == [128, 128]
    assert [(p.folds, p.bagged_models) for p in (plan_for(c, BUSI, 256) for c in configs)] == [(0, 0), (0, 0)]
    same, none = train_alike([light, light.with_options(lr=1e-3)], BUSI, side=256)
    assert none is None and [plan_for(c, BUSI, 256).bagged_models for c in same] == [3, 3]
    # The best epoch against the last: 3 fold models against 3 bagged ones do not train alike either.
    mixed, note = train_alike([light, light.with_options(checkpoint="best")], BUSI, side=256)
    assert "must train alike" in note and [folds_for(c, BUSI, 256) for c in mixed] == [0, 0]
    assert group_models_words(plan_for(light, BUSI, 256), "sweep").startswith(
        "On this dataset each run trains 3 bagged models at 192 px")
    assert group_models_words(plan_for(light, BUSI, 128), "lesson").startswith(
        "On this dataset each run trains 5 fold models")
    assert group_models_words(plan_for(heavy, BUSI, 128), "lesson") is None  # one model


def test_a_datasets_listing_gives_the_side_and_counts_the_choice_reads(tmp_path, synth, monkeypatch):
    from medcls.config import TrainConfig
    from medcls.data import load_dataset
    from medcls.training import autoplan

    root = synth.class_folders(tmp_path / "large", {c: 4 for c in synth.classes}, size=40)
    spec = load_dataset(TrainConfig().with_options(source=str(root)).data)
    assert autoplan.pool_counts(spec) == [3, 3, 3]   # train + val: the split keeps one image of each for testing
    monkeypatch.setattr(autoplan, "AUTO_MIN_PER_FOLD", 0)  # the tiny dataset counts as small enough
    monkeypatch.setattr(autoplan, "DETAIL_SIZE", 40)
    cfg, note = autoplan.size_for_data(TrainConfig(), spec)
    assert cfg.image_size == 40 and "typically 40 px" in note
    monkeypatch.setattr(autoplan, "DETAIL_SIZE", 41)  # the images are smaller than the larger size
    assert autoplan.size_for_data(TrainConfig(), spec) == (TrainConfig(image_size=autoplan.DEFAULT_SIZE), None)


def test_image_size_is_zero_or_a_real_size_and_is_read_only_once_chosen():
    from medcls.config import ConfigError, TrainConfig

    assert TrainConfig().image_size == 0 and TrainConfig(image_size=16).chosen_image_size() == 16
    with pytest.raises(ConfigError, match=r"0 \(chosen for the data\) or at least 16 px"):
        TrainConfig(image_size=15)
    with pytest.raises(ValueError, match="choose it for the dataset first"):
        TrainConfig().chosen_image_size()


def test_bagged_models_keep_their_number_and_take_the_larger_size_where_fold_models_would():
    from medcls.config import TrainConfig
    from medcls.training.autoplan import DETAIL_SIZE, folds_for, one_model_reason, resolve_image_size, train_alike

    bagged = TrainConfig().with_options(bagged_models=3)
    sized, note = resolve_image_size(bagged, BUSI, side=256)
    assert (sized.image_size, sized.folds, sized.bagged_models) == (DETAIL_SIZE, 0, 3)
    assert note.startswith("A small dataset of large images (663 training + validation images, typically 256 px on "
                           "their shorter side): its 3 bagged models train at 192 px")
    assert resolve_image_size(bagged, BUSI, side=128)[0].image_size == 128                  # small images
    assert resolve_image_size(bagged, [1200, 1200, 1200], side=512)[0].image_size == 128    # a large dataset
    # No folds are chosen beside them, and nothing says that a small dataset trains one model.
    assert folds_for(bagged, BUSI, side=256) == 0 and one_model_reason(sized, [24, 21, 296], ["a", "b", "c"]) is None
    # Beside runs the automatic ensemble takes, bagged runs are left as they are (they ask for their own models).
    configs, _ = train_alike([bagged, TrainConfig().with_options(model="resnet18", finetune="all")], BUSI, side=256)
    assert configs[0] == bagged
