"""ResNet-18 transfer learning: ImageNet weights the torchvision way, weight files, freezing."""

from __future__ import annotations

from urllib.error import URLError

import pytest
import torch
import torch.hub
import torchvision

from medcls.models import ResNetTransfer, WeightsUnavailableError, create_model
from medcls.models.resnet import ResNetOptions, imagenet_cache_path, load_imagenet_state


@pytest.fixture
def offline(monkeypatch):
    """No network: any download attempt fails like an unplugged cable."""

    def no_network(url, *args, **kwargs):
        raise URLError("network is unreachable (test)")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


@pytest.fixture
def reference_state():
    torch.manual_seed(123)
    return torchvision.models.resnet18().state_dict()


def _assert_backbone_equals(model: ResNetTransfer, state: dict, skip=("fc.",)):
    own = model.backbone.state_dict()
    compared = 0
    for key, value in state.items():
        if key.startswith(skip) or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(own[key], value), key
        compared += 1
    assert compared >= 100  # every conv and batch-norm tensor of the backbone


def test_cache_path_follows_torch_home(isolated_env):
    path = imagenet_cache_path()
    assert str(path).startswith(str(isolated_env / "torch"))
    assert path.parent.name == "checkpoints" and path.name.startswith("resnet18-") and path.suffix == ".pth"


def test_imagenet_weights_come_from_the_torch_home_cache(reference_state, offline):
    path = imagenet_cache_path()
    path.parent.mkdir(parents=True)
    torch.save(reference_state, path)  # a self-written file: the hash is only checked on download
    model = create_model("resnet18", num_classes=3, image_size=64, weights="imagenet")
    assert model.pretrained
    _assert_backbone_equals(model, reference_state)


def test_without_cache_and_network_imagenet_weights_fail_with_a_way_out(offline):
    assert not imagenet_cache_path().exists()
    with pytest.raises(WeightsUnavailableError) as info:
        create_model("resnet18", num_classes=3, image_size=64, weights="imagenet")
    message = str(info.value)
    assert "'random'" in message and str(imagenet_cache_path()) in message
    assert "URLError" in message
    assert not imagenet_cache_path().exists()  # no half-downloaded file left behind


def test_a_user_weights_file_is_loaded_exactly(tmp_path, reference_state):
    path = tmp_path / "my weights.pth"
    torch.save(reference_state, path)
    model = create_model("resnet18", num_classes=2, image_size=64, weights=str(path))
    _assert_backbone_equals(model, reference_state)


def test_wrapped_and_ddp_prefixed_state_dicts_are_accepted(tmp_path, reference_state):
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference_state.items()}}, path)
    state = load_imagenet_state(str(path))
    assert set(state) == set(reference_state)
    assert torch.equal(state["conv1.weight"], reference_state["conv1.weight"])


def test_bad_weights_files_raise_weights_unavailable(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        create_model("resnet18", num_classes=2, image_size=64, weights=str(tmp_path / "missing.pth"))
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(WeightsUnavailableError, match="state dict"):
        load_imagenet_state(str(tensor))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="Could not load"):
        load_imagenet_state(str(garbage))
    wrong = tmp_path / "small_cnn.pth"
    torch.save(create_model("small_cnn", num_classes=2, image_size=64).state_dict(), wrong)
    with pytest.raises(WeightsUnavailableError, match="do not fit ResNet-18"):
        create_model("resnet18", num_classes=2, image_size=64, weights=str(wrong))


def test_head_only_freezes_the_backbone_and_keeps_its_batch_norm_in_eval():
    model = create_model("resnet18", num_classes=3, image_size=64, weights="random", finetune="head")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("classifier.") for n in trainable)
    assert model.frozen_features
    model.train()
    assert model.classifier.training
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)
    before = bns[0].running_mean.clone()
    model(torch.rand(4, 3, 64, 64))
    assert torch.equal(bns[0].running_mean, before)  # frozen statistics do not drift


def test_last_block_and_all_modes_unfreeze_the_right_parts():
    last = create_model("resnet18", num_classes=3, image_size=64, weights="random", finetune="last_block")
    trainable = {n.split(".")[1] for n, p in last.named_parameters() if p.requires_grad and n.startswith("backbone.")}
    assert trainable == {"layer4"}
    assert not last.frozen_features
    last.train()
    assert last.backbone.layer4.training and not last.backbone.layer1.training
    everything = create_model("resnet18", num_classes=3, image_size=64, weights="random", finetune="all")
    assert all(p.requires_grad for p in everything.parameters())
    everything.train()
    assert all(m.training for m in everything.modules())
    with pytest.raises(ValueError, match="What to train must be one of head, last_block, all"):
        ResNetOptions(finetune="some")


def test_gray_input_sums_the_pretrained_rgb_filters(tmp_path, reference_state):
    path = tmp_path / "w.pth"
    torch.save(reference_state, path)
    gray = create_model("resnet18", num_classes=3, image_size=64, in_channels=1, weights=str(path))
    assert gray.backbone.conv1.in_channels == 1
    assert torch.allclose(gray.backbone.conv1.weight, reference_state["conv1.weight"].sum(dim=1, keepdim=True))
    rgb = create_model("resnet18", num_classes=3, image_size=64, in_channels=3, weights=str(path)).eval()
    gray.eval()
    # Same features as the RGB model given the gray image on all three channels (ignoring normalisation).
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        a = gray.forward_features(x)
        b = rgb.forward_features(x.repeat(1, 3, 1, 1))
    assert torch.allclose(a, b, atol=1e-4)
    assert gray(x).shape == (2, 3)
