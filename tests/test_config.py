"""TrainConfig: validation, JSON round trips, flat options, diffs and help text."""

from __future__ import annotations

import dataclasses
import json

import pytest

from medcls.config import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    ModelConfig,
    TrainConfig,
    config_diff,
    field_help,
    iter_options,
    option,
)


def test_default_config_round_trips_through_dict_and_json():
    cfg = TrainConfig()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_json(cfg.to_json()) == cfg


def test_non_default_config_round_trips_with_tuples_and_nested_sections():
    cfg = TrainConfig().with_options(
        source="/data/busi", class_aliases=("malignant=cancer", "Benign=benign"), name="seed_cnn",
        fc_widths=(64, 32), blocks=3, batch_norm=False, lr=1e-3, oversample=("malignant=16", "benign=5"),
        hflip=False, rotate=0.0, epochs=7, focus_class="malignant")
    data = json.loads(cfg.to_json())
    assert data["data"]["class_aliases"] == ["malignant=cancer", "Benign=benign"]  # JSON lists ...
    back = TrainConfig.from_dict(data)
    assert back == cfg                                                          # ... become tuples again
    assert isinstance(back.model.fc_widths, tuple) and back.model.fc_widths == (64, 32)
    assert back.data.source == "/data/busi" and back.augment.hflip is False


def test_load_reads_a_file_and_reports_bad_json(tmp_path):
    cfg = TrainConfig(epochs=3)
    good = tmp_path / "config.json"
    good.write_text(cfg.to_json())
    assert TrainConfig.load(good) == cfg
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainConfig.load(bad)


@pytest.mark.parametrize("options, words", [
    ({"lr": 0.0}, "learning rate must be greater than 0"),
    ({"lr": -1e-3}, "learning rate must be greater than 0"),
    ({"epochs": 0}, "epochs must be at least 1"),
    ({"image_size": 8}, "image size must be at least 16"),
    ({"batch_size": 0}, "batch size must be at least 1"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of adam, adamw, sgd"),
    ({"weight_decay": -0.1}, "weight decay must be at least 0"),
    ({"val_fraction": 0.6}, "val fraction must be at most 0.5"),
    ({"kernel_size": 4}, "kernel size must be one of 3, 5, 7"),
])
def test_out_of_range_values_raise_config_error_with_the_option_name(options, words):
    with pytest.raises(ConfigError) as info:
        TrainConfig().with_options(**options)
    assert words in str(info.value)


def test_sections_validate_on_construction():
    with pytest.raises(ConfigError, match="learning rate"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="at least 10%"):
        DataConfig(val_fraction=0.45, test_fraction=0.45)
    with pytest.raises(ConfigError, match="rotate"):
        AugmentConfig(rotate=-1)
    with pytest.raises(ConfigError, match="dropout"):
        ModelConfig(dropout=0.95)


@pytest.mark.parametrize("alias", ["malignant", "=cancer", "malignant=", "a=b=c", " = "])
def test_bad_class_alias_strings_are_refused(alias):
    with pytest.raises(ConfigError, match="alias=class"):
        DataConfig(class_aliases=(alias,))


def test_good_class_alias_is_accepted():
    assert DataConfig(class_aliases=("malignant=cancer",)).class_aliases == ("malignant=cancer",)


@pytest.mark.parametrize("entry", ["malignant", "malignant=0.5", "malignant=x", "=3"])
def test_bad_oversampling_entries_are_refused(entry):
    with pytest.raises(ConfigError, match="class=factor"):
        TrainConfig(oversample=(entry,))


def test_unknown_option_names_are_refused_in_dicts_and_flat_options():
    data = TrainConfig().to_dict()
    data["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict(data)
    nested = TrainConfig().to_dict()
    nested["model"]["depth"] = 3
    with pytest.raises(ConfigError, match="depth"):
        TrainConfig.from_dict(nested)
    with pytest.raises(ConfigError) as info:
        TrainConfig().with_options(learning_rate=0.1)
    assert "learning_rate" in str(info.value) and "lr" in str(info.value)  # lists the known names


def test_from_dict_refuses_a_non_object_section():
    data = TrainConfig().to_dict()
    data["data"] = ["not", "an", "object"]
    with pytest.raises(ConfigError, match="JSON object"):
        TrainConfig.from_dict(data)


def test_with_options_sets_options_by_flat_name_in_every_section():
    cfg = TrainConfig()
    new = cfg.with_options(lr=1e-3, name="seed_cnn", source="x", hflip=False, blocks=4)
    assert new.lr == 1e-3 and new.model.name == "seed_cnn" and new.data.source == "x"
    assert new.augment.hflip is False and new.model.blocks == 4
    assert cfg == TrainConfig()  # the original is unchanged (frozen)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]


def test_with_options_coerces_text_values_like_form_fields_and_flags():
    cfg = TrainConfig().with_options(epochs="3", lr="1e-3", hflip="false", batch_norm="yes",
                                     fc_widths="128, 64", class_aliases="malignant=cancer;Benign=benign",
                                     blocks="none")
    assert cfg.epochs == 3 and cfg.lr == 1e-3 and cfg.augment.hflip is False
    assert cfg.model.batch_norm is True and cfg.model.fc_widths == (128, 64)
    assert cfg.data.class_aliases == ("malignant=cancer", "Benign=benign")
    assert cfg.model.blocks is None
    with pytest.raises(ConfigError, match="whole number"):
        TrainConfig().with_options(epochs=2.5)
    with pytest.raises(ConfigError, match="whole number"):
        TrainConfig().with_options(batch_size="7.9")  # text from a form field is not truncated to 7
    assert TrainConfig().with_options(epochs="4.0").epochs == 4
    with pytest.raises(ConfigError, match="number"):
        TrainConfig().with_options(lr="fast")
    with pytest.raises(ConfigError, match="true/false"):
        TrainConfig().with_options(hflip="maybe")


def test_flat_names_are_unique_and_cover_every_leaf_option():
    names = [name for name, _, _ in iter_options()]
    assert len(names) == len(set(names))
    flat = TrainConfig().flat()
    assert list(flat) == names
    leaves = sum(len(dataclasses.fields(s)) for s in (DataConfig, ModelConfig, AugmentConfig))
    top = [f for f in dataclasses.fields(TrainConfig) if f.name not in ("data", "model", "augment")]
    assert len(names) == leaves + len(top)


def test_every_option_has_plain_language_help():
    for name, f, _ in iter_options():
        assert len(f.metadata.get("help", "")) > 15, name
    assert "learning rate" in field_help("lr").lower() or "step" in field_help("lr").lower()
    with pytest.raises(KeyError):
        field_help("no_such_option")


def test_config_diff_lists_exactly_the_changed_options():
    a = TrainConfig()
    b = a.with_options(lr=1e-3, name="resnet18", hflip=False)
    diff = config_diff(a, b)
    assert sorted(diff) == sorted([("lr", a.lr, 1e-3), ("name", "small_cnn", "resnet18"), ("hflip", True, False)])
    assert config_diff(a, a) == []


def test_architecture_overrides_only_lists_set_options():
    assert ModelConfig().architecture_overrides() == {}
    m = ModelConfig(blocks=3, batch_norm=False, fc_widths=(16,))
    assert m.architecture_overrides() == {"blocks": 3, "batch_norm": False, "fc_widths": (16,)}


def test_option_refuses_mutable_defaults():
    with pytest.raises(TypeError, match="tuples"):
        option([], "a list default")
