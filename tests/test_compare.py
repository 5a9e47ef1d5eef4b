"""Run comparison helpers: config differences in words and the metrics table."""

from __future__ import annotations

from medcls.compare import config_rows, describe_differences
from medcls.config import TrainConfig
from medcls.models import create_model


def _info(cfg: TrainConfig) -> dict:
    model = create_model(cfg.model.name, num_classes=3, image_size=cfg.image_size, in_channels=1,
                         **cfg.model.architecture_overrides())
    return {"architecture": model.architecture()}


def test_seed_q4_step_reads_as_architecture_changes():
    before = TrainConfig().with_options(name="seed_cnn")
    after = before.with_options(blocks=3, batch_norm=True)
    words = describe_differences(before, after, _info(before), _info(after))
    assert words == "conv blocks 4 → 3, batch norm off → on"


def test_preset_switch_names_the_resolved_values():
    a = TrainConfig().with_options(name="seed_cnn")
    b = TrainConfig().with_options(name="seed_cnn_bn")
    words = describe_differences(a, b, _info(a), _info(b))
    assert "model seed_cnn → seed_cnn_bn" in words
    assert "conv blocks 4 → 3" in words and "batch norm off → on" in words


def test_identical_configs_say_so_and_rows_list_only_differences():
    a = TrainConfig()
    assert describe_differences(a, a) == "same settings"
    rows = config_rows({"r1": a, "r2": a.with_options(lr=1e-3, epochs=5)})
    assert {row["option"] for row in rows} == {"lr", "epochs"}
    lr_row = next(r for r in rows if r["option"] == "lr")
    assert lr_row["r1"] == "0.002" and lr_row["r2"] == "0.001"
