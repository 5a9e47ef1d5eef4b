"""The model registry and the built-in models: build, forward, backward, parameter counts, presets."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import medcls.models._registry as registry
from medcls.models import (
    ClassifierModel,
    CNNOptions,
    ConfigurableCNN,
    UnknownModelError,
    count_parameters,
    create_model,
    list_models,
    model_entry,
    register_model,
)
from medcls.models.batchnorm import BatchNorm2d


def _build(name, **kw):
    if model_entry(name).pretrained:
        kw.setdefault("weights", "random")
    return create_model(name, **kw)


def test_the_built_in_models_are_registered():
    assert {"small_cnn", "seed_cnn", "seed_cnn_bn", "resnet18"} <= set(list_models())
    assert list_models("seed_*") == ["seed_cnn", "seed_cnn_bn"]
    assert model_entry("resnet18").pretrained and not model_entry("small_cnn").pretrained
    assert all(model_entry(n).description for n in list_models())


@pytest.mark.parametrize("size", [64, 96])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_every_model_builds_runs_forward_and_backward(name, in_channels, size):
    torch.manual_seed(0)
    model = _build(name, num_classes=3, image_size=size, in_channels=in_channels)
    assert isinstance(model, ClassifierModel)
    assert (model.num_classes, model.in_channels, model.image_size) == (3, in_channels, size)
    model.train()
    x = torch.rand(2, in_channels, size, size)
    logits = model(x)
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()
    nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())
    assert count_parameters(model, trainable_only=True) == sum(p.numel() for p in trainable)
    assert sum(n for _, n in model.layer_parameters()) == count_parameters(model)
    features = model.forward_features(model.normalize(x))
    assert features.ndim == 2 and features.shape[0] == 2
    assert isinstance(model.gradcam_layer(), nn.Module)
    model.eval()  # no dropout, running statistics: the same input gives the same output
    with torch.inference_mode():
        a, b = model(x), model(x)
        split = model.forward_head(model.forward_features(model.normalize(x)))
    assert torch.equal(a, b) and torch.allclose(split, a, atol=1e-5)


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(UnknownModelError) as info:
        create_model("nope", num_classes=2)
    message = str(info.value)
    assert "nope" in message
    for name in list_models():
        assert name in message


def test_duplicate_registration_is_refused(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    def small_cnn(*, num_classes, image_size=128, in_channels=3):  # same name as a built-in
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="already registered"):
        register_model("a second small_cnn")(small_cnn)
    assert registry._REGISTRY["small_cnn"].builder is not small_cnn


def test_a_new_model_registers_with_the_options_type_and_defaults_it_declares(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_model("a test model", options=CNNOptions, defaults={"blocks": 1, "filters": 4})
    def tiny_test_model(*, num_classes, image_size=32, in_channels=3, options):
        return ConfigurableCNN(options, num_classes, in_channels, image_size)

    assert "tiny_test_model" in list_models()
    assert create_model("tiny_test_model", num_classes=2).features[0].out_channels == 4  # its own default
    assert create_model("tiny_test_model", num_classes=2, filters=6).features[0].out_channels == 6
    with pytest.raises(ValueError, match="Unknown option"):
        create_model("tiny_test_model", num_classes=2, depth=3)


def test_options_of_another_model_raise_a_clear_error():
    with pytest.raises(ValueError) as info:
        create_model("resnet18", num_classes=3, weights="random", blocks=3)
    assert "ResNetOptions" in str(info.value) and "blocks" in str(info.value)
    assert "finetune" in str(info.value) and "dropout" in str(info.value)  # lists what it does take


def test_presets_start_from_their_own_values_and_others_override_them():
    default = create_model("small_cnn", num_classes=2, image_size=64)
    assert [m.out_channels for m in default.modules() if isinstance(m, nn.Conv2d)] == CNNOptions().channels()
    custom = create_model("small_cnn", num_classes=2, image_size=64, blocks=3, filters=8, head="flatten",
                          fc_widths=(16,), batch_norm=False, activation="gelu", pooling="avg", kernel_size=5)
    convs = [m for m in custom.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 16, 32] and convs[0].kernel_size == (5, 5)
    linears = [m for m in custom.classifier if isinstance(m, nn.Linear)]
    assert [(l.in_features, l.out_features) for l in linears] == [(32 * 8 * 8, 16), (16, 2)]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in custom.modules())
    assert any(isinstance(m, nn.GELU) for m in custom.modules())
    assert any(isinstance(m, nn.AvgPool2d) for m in custom.modules())


def test_seed_cnn_bn_at_256_px_has_the_seeds_134_8_million_parameters():
    model = create_model("seed_cnn_bn", num_classes=3, image_size=256, in_channels=3)
    assert round(count_parameters(model) / 1e6, 1) == 134.8
    first = next(m for m in model.classifier if isinstance(m, nn.Linear))
    assert (first.in_features, first.out_features) == (128 * 32 * 32, 1024)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.features) == 3
    assert sum(isinstance(m, nn.BatchNorm1d) for m in model.classifier) == 2


def test_seed_cnn_has_four_conv_layers_and_three_linear_layers_with_dropout():
    model = create_model("seed_cnn", num_classes=3, image_size=64, in_channels=3)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [32, 64, 128, 256]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [l.out_features for l in linears] == [1024, 512, 3]
    assert linears[0].in_features == 256 * 4 * 4
    dropouts = [m for m in model.classifier if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 2 and all(d.p == 0.5 for d in dropouts)
    assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in model.modules())


def test_small_cnn_is_small():
    model = create_model("small_cnn", num_classes=3, image_size=128)
    assert 0.8e6 < count_parameters(model) < 1e6     # about 0.89 M: 12 first-block filters, doubling per block
    assert model.options.channels() == [12, 24, 48, 96, 192, 384]


@pytest.mark.parametrize("size", [8, 16, 33])
def test_more_blocks_than_the_image_can_halve_still_work(size):
    # Pooling rounds up, so a 1-pixel map stays 1 pixel: six blocks fit even an 8 px image.
    model = create_model("small_cnn", num_classes=2, image_size=size, in_channels=1)
    assert model(torch.rand(2, 1, size, size)).shape == (2, 2)
    flat = create_model("seed_cnn", num_classes=2, image_size=size, in_channels=1)
    assert flat(torch.rand(2, 1, size, size)).shape == (2, 2)


def test_invalid_shapes_are_refused_with_reasons():
    with pytest.raises(ValueError, match="1 \\(gray\\) or 3 \\(RGB\\)"):
        create_model("small_cnn", num_classes=2, image_size=64, in_channels=2)
    with pytest.raises(ValueError, match="at least 2 classes"):
        create_model("small_cnn", num_classes=1, image_size=64)
    with pytest.raises(ValueError, match="Kernel size must be one of 3, 5, 7"):
        CNNOptions(kernel_size=4)


def test_gray_models_normalise_with_one_channel():
    model = create_model("small_cnn", num_classes=2, image_size=64, in_channels=1)
    assert model.input_mean.shape == (1, 1, 1, 1) and model.input_std.shape == (1, 1, 1, 1)
    rgb = create_model("small_cnn", num_classes=2, image_size=64, in_channels=3)
    assert rgb.input_mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    assert "input_mean" not in rgb.state_dict()  # not saved: rebuilt from the model itself


def test_pooling_before_relu_computes_the_seeds_block_order_exactly():
    # max(relu(x)) == relu(max(x)): the faster run order must give the seed's outputs, layer list unchanged.
    torch.manual_seed(0)
    model = create_model("seed_cnn_bn", num_classes=3, image_size=32, in_channels=1).eval()
    kinds = [type(m) for m in model.features]
    assert kinds == [nn.Conv2d, BatchNorm2d, nn.ReLU, nn.MaxPool2d] * 3  # the seed's order, as printed
    assert model.run_order[:4] == (0, 1, 3, 2) and model.run_order[-4:] == (8, 9, 10, 11)
    x = torch.randn(4, 1, 32, 32)
    assert torch.equal(model.forward_features(x), model.pool(model.features(x)))
    # Grad-CAM's layer is still the last block's activation, before its pooling.
    assert model.gradcam_layer() is model.features[10]


def test_non_monotone_activations_keep_the_seeds_order():
    model = create_model("small_cnn", num_classes=2, image_size=32, in_channels=1, activation="gelu",
                         pool_first=False)
    assert list(model.run_order) == list(range(len(model.features)))


def test_the_default_pools_before_batch_norm_except_in_the_last_block():
    model = create_model("small_cnn", num_classes=2, image_size=64, in_channels=1, blocks=3)
    kinds = [type(model.features[i]).__name__ for i in model.run_order]
    assert kinds == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU"] * 2 + ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]
    assert [type(m) for m in model.features] == [nn.Conv2d, BatchNorm2d, nn.ReLU, nn.MaxPool2d] * 3  # names kept
    assert model.gradcam_layer() is model.features[10]  # the last block's activation, before its pooling
    levels = model.embed_levels(torch.rand(2, 1, 64, 64))
    assert [level.shape[1] for level in levels] == [2 * c for c in model.options.channels()]  # one per block
    assert not create_model("seed_cnn_bn", num_classes=2).options.pool_first  # the seed's network stays the seed's


def test_a_cnn_saved_before_pool_first_existed_predicts_as_it_was_trained():
    from medcls.config import TrainConfig

    old = TrainConfig().to_dict()
    del old["format"], old["model_options"]["pool_first"]  # as configs were written before the option existed
    cfg = TrainConfig.from_dict(old)
    assert cfg.model_options.pool_first is False
    torch.manual_seed(0)
    trained = create_model("small_cnn", num_classes=3, image_size=32, in_channels=1, pool_first=False).eval()
    reloaded = create_model(cfg.model, num_classes=3, image_size=32, in_channels=1, options=cfg.model_options).eval()
    reloaded.load_state_dict(trained.state_dict())
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(reloaded(x), trained(x))
    assert TrainConfig.from_dict(TrainConfig().to_dict()).model_options.pool_first is True  # today's configs keep it
