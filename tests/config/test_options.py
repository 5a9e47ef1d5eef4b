"""One declaration per option: labels, groups, applicability, saved configs, legacy files, and a new option
showing up everywhere it should (CLI, sweeps, diffs, run card rows) from its declaration alone."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

import medcls.models._registry as registry
from medcls.cli import build_parser
from medcls.config import (
    GROUPS,
    ConfigError,
    TrainConfig,
    applies_text,
    check_fields,
    describe_differences,
    differences,
    option,
    option_table,
    settings_rows,
    when,
)
from medcls.experiments.sweeps import SweepError, expand_grid, sweepable_options
from medcls.models import ConfigurableCNN, register_model

RESNET_ONLY = {"weights", "finetune", "feature_cache", "feature_views"}


def test_every_option_is_declared_with_a_label_help_and_a_known_group():
    table = option_table()
    assert len(table) > 40
    for name, spec in table.items():
        assert spec.label and spec.label[0].isupper(), name
        assert len(spec.help) > 15, name
        assert spec.option.group in GROUPS, name


def test_a_small_cnn_config_saves_no_resnet_or_inapplicable_settings():
    saved = TrainConfig().to_dict()
    keys = set(saved) | set(saved["model_options"]) | set(saved["augment"])
    assert not RESNET_ONLY & keys
    assert not {"momentum", "step_size", "gamma"} & keys           # AdamW, one-cycle
    assert {"blocks", "filters", "dropout"} <= set(saved["model_options"])


def test_options_that_apply_are_saved_and_those_that_stop_applying_reset():
    sgd = TrainConfig().with_options(optimizer="sgd", momentum=0.5, scheduler="step", step_size=4, gamma=0.1)
    saved = sgd.to_dict()
    assert saved["momentum"] == 0.5 and saved["step_size"] == 4 and saved["gamma"] == 0.1
    back_to_adamw = sgd.with_options(optimizer="adamw", scheduler="onecycle")
    assert back_to_adamw.momentum == 0.9 and back_to_adamw == TrainConfig()  # nothing left behind
    no_aug = TrainConfig().with_options(augment=False)
    assert set(no_aug.to_dict()["augment"]) == {"augment"}
    frozen = TrainConfig().with_options(model="resnet18", finetune="all")
    assert set(frozen.to_dict()["model_options"]) == {"weights", "finetune", "dropout"}  # no feature cache


def test_setting_an_option_that_has_no_effect_is_refused_with_the_reason():
    with pytest.raises(ConfigError, match="Momentum has no effect here: it applies only when optimizer is SGD"):
        TrainConfig().with_options(momentum=0.5)
    with pytest.raises(ConfigError, match=r"StepLR factor .* when learning-rate schedule is step down \(StepLR\)"):
        TrainConfig().with_options(gamma=0.2)
    with pytest.raises(ConfigError, match="Conv blocks is not an option of resnet18"):
        TrainConfig().with_options(model="resnet18", blocks=3)
    assert TrainConfig().with_options(strict=False, momentum=0.5) == TrainConfig()  # a loader may ignore it


def test_applies_text_names_the_deciding_options_in_words():
    spec = option_table()["feature_views"]
    assert applies_text(spec.option.applies) == ("when what to train is head only and cache frozen features "
                                                 "is on and augmentation is on")
    assert applies_text(None) == "always"


def test_legacy_version_1_configs_still_load_with_their_preset_values():
    legacy = {
        "data": {"source": "", "layout": "auto", "class_aliases": [], "class_names": [], "val_fraction": 0.15,
                 "test_fraction": 0.15, "split_seed": 0, "group_duplicates": False, "include_masks": False,
                 "color": "auto", "disk_cache": True},
        "model": {"name": "seed_cnn", "weights": "imagenet", "finetune": "head", "blocks": 3, "filters": None,
                  "growth": None, "kernel_size": None, "batch_norm": True, "activation": None, "pooling": None,
                  "head": None, "fc_widths": None, "dropout": None},
        "augment": {"augment": True, "hflip": True, "vflip": False, "rotate": 10.0, "scale": 0.1,
                    "translate": 0.05, "brightness": 0.2, "contrast": 0.2},
        "image_size": 128, "batch_size": 32, "epochs": 30, "optimizer": "adamw", "lr": 0.002,
        "weight_decay": 0.0001, "momentum": 0.9, "scheduler": "onecycle", "step_size": 3, "gamma": 0.5,
        "imbalance": "oversample", "oversample": [], "ema_decay": 0.99, "tta": True, "patience": 5,
        "select_metric": "macro_f1", "focus_class": "", "seed": 0, "precision": "auto", "channels_last": True,
        "feature_cache": True, "feature_views": 4, "threads": 0}
    cfg = TrainConfig.from_json(json.dumps(legacy))
    assert cfg.model == "seed_cnn"
    assert cfg.model_options.blocks == 3 and cfg.model_options.batch_norm is True     # the run's overrides
    assert cfg.model_options.filters == 32 and cfg.model_options.head == "flatten"    # the preset's values
    resnet = dict(legacy, model={"name": "resnet18", "weights": "random", "finetune": "head"})
    loaded = TrainConfig.from_dict(resnet)
    assert loaded.model_options.weights == "random" and loaded.model_options.feature_views == 4


def test_differences_list_only_options_that_apply_in_both_configs():
    cnn, resnet = TrainConfig(), TrainConfig().with_options(model="resnet18")
    names = [d.name for d in differences(cnn, resnet)]
    assert names == ["model", "dropout"]  # not "conv blocks 6 → ...", not fine-tuning
    before = TrainConfig().with_options(model="seed_cnn")
    after = before.with_options(blocks=3, batch_norm=True)
    assert describe_differences(before, after) == "conv blocks 4 → 3, batch norm off → on"
    assert describe_differences(before, before) == "same settings"


def test_an_option_set_where_only_one_config_uses_it_is_part_of_the_difference():
    # 3 bagged models against 3 fold models: not "folds 0 → 3" alone, as if the first had no ensemble.
    bagged, folds = TrainConfig().with_options(bagged_models=3), TrainConfig().with_options(folds=3)
    assert describe_differences(bagged, folds) == "cross-validation folds 0 (none) → 3, bagged models 3 → not used"
    best = TrainConfig().with_options(checkpoint="best")
    # Left at its default where it applies (patience 5), an option is no difference of its own.
    assert describe_differences(TrainConfig(), best) == "checkpoint kept the last epoch → the best validation epoch"
    assert describe_differences(TrainConfig(), best.with_options(patience=3)).endswith(
        "early-stopping patience not used → 3")


def test_sweeps_refuse_settings_that_would_not_change_anything():
    with pytest.raises(SweepError, match="momentum has no effect"):
        expand_grid(TrainConfig(), {"momentum": ["0.5", "0.9"]})
    with pytest.raises(SweepError, match="finetune|What to train|what to train"):
        expand_grid(TrainConfig(), {"finetune": ["head", "all"]})
    assert "finetune" not in sweepable_options(TrainConfig())
    assert len(expand_grid(TrainConfig().with_options(optimizer="sgd"), {"momentum": ["0.5", "0.9"]})) == 2


@dataclass(frozen=True)
class _TinyOptions:
    width: int = option(8, "How many channels the one and only layer has.", label="Tiny width",
                        group="Architecture", min=1, max=64, sweep=(8, 16))
    shortcut: bool = option(False, "Adds nothing; only applies with SGD, to test applicability.",
                            label="Tiny shortcut", group="Architecture", applies=when(optimizer="sgd"))

    def __post_init__(self) -> None:
        check_fields(self)


@pytest.fixture
def tiny_model(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model("A test model with options of its own.", options=_TinyOptions)
    def tiny_test_net(*, num_classes, image_size=32, in_channels=1, options):  # pragma: no cover - not built
        return ConfigurableCNN(registry.model_entry("small_cnn").make_options({"blocks": 1}), num_classes,
                               in_channels, image_size)

    return "tiny_test_net"


def test_a_new_option_declared_once_reaches_cli_sweeps_diffs_and_run_card(tiny_model):
    help_text = build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    assert "--width" in help_text and "Tiny width" in help_text and "option of tiny_test_net" in help_text
    assert "only when optimizer is SGD" in " ".join(help_text.split())
    base = TrainConfig().with_options(model=tiny_model)
    assert "width" in sweepable_options(base)
    assert base.to_dict()["model_options"] == {"width": 8}               # shortcut does not apply: not saved
    wider = base.with_options(width=16)
    assert describe_differences(base, wider) == "tiny width 8 → 16"
    assert {"group": "Architecture", "setting": "Tiny width", "value": "16"} in settings_rows(wider)
    with pytest.raises(ConfigError, match="Tiny shortcut has no effect"):
        base.with_options(shortcut=True)
