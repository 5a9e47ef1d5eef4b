"""TrainConfig: validation, JSON round trips, flat options and each model's own options."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest

from medcls.config import AugmentConfig, ConfigError, DataConfig, TrainConfig, option
from medcls.config.serialize import CONFIG_FORMAT
from medcls.models import CNNOptions, ResNetOptions


def test_default_config_round_trips_through_dict_and_json():
    cfg = TrainConfig()
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert TrainConfig.from_json(cfg.to_json()) == cfg


def test_a_config_saved_before_automatic_cross_validation_still_trains_one_model():
    saved = TrainConfig().to_dict()
    assert saved["small_data_ensemble"] is True and TrainConfig().small_data_ensemble
    del saved["format"], saved["small_data_ensemble"]  # as every run's config.json from before the option
    assert TrainConfig.from_dict(saved).small_data_ensemble is False
    assert TrainConfig.from_dict({**saved, "folds": 5}).folds == 5  # set folds: the option does not apply


def test_saved_configs_say_their_format_so_options_added_later_are_read_as_they_were_meant():
    saved = TrainConfig().to_dict()
    assert saved["format"] == CONFIG_FORMAT
    # Saved with today's format: an option it leaves out takes today's default ...
    without = {k: v for k, v in saved.items() if k != "small_data_ensemble"}
    assert TrainConfig.from_dict(without).small_data_ensemble is True
    # ... and so does a config written by hand (no format, and not every option a saved config holds).
    by_hand = {"epochs": 5, "model_options": {"batch_norm": True}}
    cfg = TrainConfig.from_dict(by_hand)
    assert cfg.epochs == 5 and cfg.small_data_ensemble is True and cfg.model_options.pool_first is True
    # A complete config without a format number is a run saved before format numbers: it keeps what it trained.
    old = {k: v for k, v in saved.items() if k not in ("format", "small_data_ensemble")}
    old["model_options"] = {k: v for k, v in saved["model_options"].items() if k != "pool_first"}
    cfg = TrainConfig.from_dict(old)
    assert cfg.small_data_ensemble is False and cfg.model_options.pool_first is False
    assert TrainConfig.from_dict({**old, "format": 1}) == cfg  # format 1 said out loud reads the same


@pytest.mark.parametrize("value, words", [(CONFIG_FORMAT + 1, "written by a newer medcls"),
                                          ("2", "whole number"), (0, "at least 1"), (True, "whole number")])
def test_a_config_format_this_medcls_cannot_read_is_refused_with_what_to_do(value, words):
    with pytest.raises(ConfigError, match=words):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "format": value})


def test_non_default_config_round_trips_with_tuples_and_nested_sections():
    cfg = TrainConfig().with_options(
        source="/data/busi", class_aliases=("malignant=cancer", "Benign=benign"), model="seed_cnn",
        fc_widths=(64, 32), blocks=3, batch_norm=False, lr=1e-3, oversample=("malignant=16", "benign=5"),
        hflip=False, rotate=0.0, epochs=7, focus_class="malignant")
    data = json.loads(cfg.to_json())
    assert data["data"]["class_aliases"] == ["malignant=cancer", "Benign=benign"]  # JSON lists ...
    back = TrainConfig.from_dict(data)
    assert back == cfg                                                          # ... become tuples again
    assert isinstance(back.model_options.fc_widths, tuple) and back.model_options.fc_widths == (64, 32)
    assert back.data.source == "/data/busi" and back.augment.hflip is False


def test_load_reads_a_file_and_reports_bad_json_folders_and_missing_files(tmp_path):
    cfg = TrainConfig(epochs=3)
    good = tmp_path / "config.json"
    good.write_text(cfg.to_json())
    assert TrainConfig.load(good) == cfg
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        TrainConfig.load(bad)
    with pytest.raises(ConfigError, match="is a folder"):
        TrainConfig.load(tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        TrainConfig.load(tmp_path / "nothing.json")


@pytest.mark.parametrize("options, words", [
    ({"lr": 0.0}, "Learning rate must be greater than 0"),
    ({"lr": -1e-3}, "Learning rate must be greater than 0"),
    ({"epochs": 0}, "Epochs must be at least 1"),
    ({"image_size": 8}, "Image size must be 0 (chosen for the data) or at least 16 px"),
    ({"image_size": -1}, "Image size (px) must be at least 0"),
    ({"batch_size": 0}, "Batch size must be at least 1"),
    ({"optimizer": "rmsprop"}, "Optimizer must be one of adam, adamw, sgd"),
    ({"weight_decay": -0.1}, "Weight decay must be at least 0"),
    ({"val_fraction": 0.6}, "Validation share must be at most 0.5"),
    ({"kernel_size": 4}, "Kernel size must be one of 3, 5, 7"),
    ({"model": "vgg99"}, "Model must be one of resnet18, seed_cnn, seed_cnn_bn, small_cnn (got 'vgg99')"),
    ({"seed": 2**40}, "Seed must be at most 4,294,967,295 (got 1,099,511,627,776)"),
    # typed or huge: the number as given, not its float rounding (…991,611,392), and no overflow
    ({"seed": "99999999999999999999999"}, "(got 99,999,999,999,999,999,999,999)"),
    ({"seed": 10**400}, "Seed must be at most 4,294,967,295 (got 10,000,"),
    ({"lr": 1e300}, "Learning rate must be at most 10 (got 1e+300)"),
    ({"fc_widths": (0,)}, "Each value of hidden layer widths must be at least 1"),
])
def test_out_of_range_values_raise_config_error_with_the_option_label(options, words):
    with pytest.raises(ConfigError) as info:
        TrainConfig().with_options(**options)
    assert words in str(info.value)


@pytest.mark.parametrize("name", ["dropout", "lr", "rotate", "ema_decay"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, "nan", "inf"])
def test_nan_and_infinity_are_refused_when_the_config_is_made(name, bad):
    with pytest.raises(ConfigError, match="finite"):
        TrainConfig().with_options(**{name: bad})


def test_sections_validate_on_construction():
    with pytest.raises(ConfigError, match="Learning rate"):
        TrainConfig(lr=0)
    with pytest.raises(ConfigError, match="Epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ConfigError, match="at least 10%"):
        DataConfig(val_fraction=0.45, test_fraction=0.45)
    with pytest.raises(ConfigError, match="rotation"):
        AugmentConfig(rotate=-1)
    with pytest.raises(ConfigError, match="Dropout"):
        CNNOptions(dropout=0.95)
    with pytest.raises(ConfigError, match="What to train"):
        ResNetOptions(finetune="everything")


@pytest.mark.parametrize("alias", ["malignant", "=cancer", "malignant=", "a=b=c", " = "])
def test_bad_class_alias_strings_are_refused(alias):
    with pytest.raises(ConfigError, match="alias=class"):
        DataConfig(class_aliases=(alias,))


@pytest.mark.parametrize("entry", ["malignant", "malignant=0.5", "malignant=x", "=3", "malignant=inf",
                                   "malignant=1e9"])
def test_bad_oversampling_entries_are_refused(entry):
    with pytest.raises(ConfigError, match="class=factor"):
        TrainConfig(oversample=(entry,))


def test_unknown_option_names_are_refused_in_dicts_and_flat_options():
    data = TrainConfig().to_dict()
    data["learning_rate"] = 0.1
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict(data)
    nested = TrainConfig().to_dict()
    nested["model_options"]["depth"] = 3
    with pytest.raises(ConfigError, match="depth"):
        TrainConfig.from_dict(nested)
    with pytest.raises(ConfigError) as info:
        TrainConfig().with_options(learning_rate=0.1)
    assert "learning_rate" in str(info.value) and "lr" in str(info.value)  # lists the known names


def test_from_dict_refuses_non_objects_and_absurd_nesting():
    data = TrainConfig().to_dict()
    data["data"] = ["not", "an", "object"]
    with pytest.raises(ConfigError, match="JSON object"):
        TrainConfig.from_dict(data)
    with pytest.raises(ConfigError, match="JSON object"):
        TrainConfig.from_dict([1, 2])
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(ConfigError, match="nested too deeply"):
        TrainConfig.from_json('{"epochs": 3, "data": {"source": ' + deep + "}}")
    with pytest.raises(ConfigError, match="finite"):
        TrainConfig.from_json('{"epochs": 1e400}')


def test_with_options_sets_options_by_flat_name_in_every_section():
    cfg = TrainConfig()
    new = cfg.with_options(lr=1e-3, model="seed_cnn", source="x", hflip=False, blocks=5)
    assert new.lr == 1e-3 and new.model == "seed_cnn" and new.data.source == "x"
    assert new.augment.hflip is False and new.model_options.blocks == 5
    assert cfg == TrainConfig()  # the original is unchanged (frozen)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0  # type: ignore[misc]


def test_a_new_model_starts_from_its_own_option_values():
    seed = TrainConfig().with_options(model="seed_cnn")
    assert seed.model_options.blocks == 4 and seed.model_options.head == "flatten"
    assert seed.model_options.fc_widths == (1024, 512) and seed.model_options.batch_norm is False
    bn = seed.with_options(model="seed_cnn_bn")
    assert bn.model_options.blocks == 3 and bn.model_options.batch_norm is True
    resnet = bn.with_options(model="resnet18")
    assert isinstance(resnet.model_options, ResNetOptions) and resnet.model_options.weights == "imagenet"


def test_with_options_coerces_text_values_like_form_fields_and_flags():
    cfg = TrainConfig().with_options(epochs="3", lr="1e-3", hflip="false", batch_norm="yes",
                                     fc_widths="128, 64", class_aliases="malignant=cancer;Benign=benign")
    assert cfg.epochs == 3 and cfg.lr == 1e-3 and cfg.augment.hflip is False
    assert cfg.model_options.batch_norm is True and cfg.model_options.fc_widths == (128, 64)
    assert cfg.data.class_aliases == ("malignant=cancer", "Benign=benign")
    with pytest.raises(ConfigError, match="whole number"):
        TrainConfig().with_options(epochs=2.5)
    with pytest.raises(ConfigError, match="whole number"):
        TrainConfig().with_options(batch_size="7.9")  # text from a form field is not truncated to 7
    assert TrainConfig().with_options(epochs="4.0").epochs == 4
    with pytest.raises(ConfigError, match="number"):
        TrainConfig().with_options(lr="fast")
    with pytest.raises(ConfigError, match="true/false"):
        TrainConfig().with_options(hflip="maybe")


def test_option_refuses_mutable_defaults_and_unknown_groups():
    with pytest.raises(TypeError, match="tuples"):
        option([], "a list default", label="L", group="Learning")
    with pytest.raises(ValueError, match="form group"):
        option(1, "help", label="L", group="Nowhere")
