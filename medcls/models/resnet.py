"""ResNet-18 transfer learning with the seed's head.

ImageNet weights are found the torchvision way: the ``$TORCH_HOME/hub/checkpoints``
cache, then a download when online; or a weights file the user names. When
none is available the error says so and how to fix it. Starting from random
weights must be asked for (``weights='random'``); there is no silent fallback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config.options import check_fields, option, when
from ..settings import check_allowed_path
from ._registry import register_model
from .base import IMAGENET_MEAN, IMAGENET_STD, ClassifierModel, map_summary

__all__ = ["ResNetOptions", "ResNetTransfer", "WeightsUnavailableError", "load_imagenet_state", "imagenet_cache_path",
           "imagenet_weights_available", "check_weights_file", "FINETUNE_MODES"]

log = logging.getLogger(__name__)

FINETUNE_MODES = ("head", "last_block", "all")
_HEAD_ONLY = when(finetune="head")


@dataclass(frozen=True)
class ResNetOptions:
    """Options of a pretrained backbone with a new head."""

    weights: str = option("imagenet", "Starting weights: 'imagenet' (features learned on photos; found in the "
                          "torchvision cache or downloaded), the path of a weights file, or 'random' to train from "
                          "scratch on purpose.", label="Starting weights", group="Model", sweep=("imagenet", "random"),
                          sweep_order=13)
    finetune: str = option("head", "Only the new head (fast, little data needed), also the last block, or everything "
                           "(slow).", label="What to train", group="Model",
                           choices=FINETUNE_MODES, words=(("head", "head only"), ("last_block", "head + last block"),
                                                          ("all", "everything")))
    dropout: float = option(0.5, "Share of the head's units switched off at random while training, against "
                            "overfitting.", label="Dropout", group="Architecture", min=0.0, max=0.9, sweep=(0.2, 0.5),
                            sweep_order=9)
    feature_cache: bool = option(True, "The frozen backbone's features are computed once instead of every epoch "
                                 "(many times faster).", label="Cache frozen features",
                                 group="Speed and reproducibility", applies=_HEAD_ONLY)
    feature_views: int = option(4, "How many augmented copies of each training image to precompute features for.",
                                label="Augmented views to cache", group="Speed and reproducibility", min=1, max=32,
                                applies=when(finetune="head", feature_cache=True, augment=True))

    def __post_init__(self) -> None:
        check_fields(self)


def _torchvision_models():
    """torchvision's model zoo, imported on first use: the import takes about 2 s, which every training worker
    would otherwise pay before its first epoch, whatever model it trains."""
    from torchvision import models

    return models


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be found or downloaded."""


def imagenet_cache_path() -> Path:
    """Where torchvision caches ResNet-18's ImageNet weights ($TORCH_HOME/hub/checkpoints/...)."""
    filename = _torchvision_models().ResNet18_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def imagenet_weights_available() -> bool:
    """Whether ResNet-18's ImageNet weights are in torchvision's cache on this machine. Without them, training
    would try to download them (about 45 MB) when it starts, which fails without internet access."""
    return imagenet_cache_path().is_file()


def check_weights_file(path: str | Path) -> None:
    """Raise WeightsUnavailableError unless ``path`` holds ResNet-18 weights this model can start from."""
    state = {k: v for k, v in load_imagenet_state(str(path)).items() if not k.startswith("fc.")}
    try:
        missing, unexpected = _torchvision_models().resnet18(weights=None).load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensors of other shapes: another architecture
        detail = (str(exc).strip().splitlines() or ["shape mismatch"])[0]
        raise WeightsUnavailableError(f"{Path(path).name} does not hold ResNet-18 weights ({detail}).") from None
    missing = [k for k in missing if not k.startswith("fc.")]
    if missing or unexpected:
        raise WeightsUnavailableError(f"{Path(path).name} does not hold ResNet-18 weights (missing {len(missing)} "
                                      f"and unexpected {len(unexpected)} tensors, e.g. "
                                      f"{(missing + unexpected)[0]}).")


def load_imagenet_state(weights: str) -> dict[str, torch.Tensor]:
    """State dict for 'imagenet' (cache or download) or a user-given file."""
    if weights == "imagenet":
        try:
            # Looks in the TORCH_HOME cache first, downloads (and checks the hash) otherwise.
            return _torchvision_models().ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # URLError, socket errors, hash mismatches...
            raise WeightsUnavailableError(
                f"ImageNet weights for resnet18 are not in the cache ({imagenet_cache_path()}) and could not be "
                f"downloaded ({type(exc).__name__}: {exc}). Copy the file {imagenet_cache_path().name} there (or "
                "set TORCH_HOME), name a weights file, or choose weights='random' to train from scratch "
                "on purpose.") from None
    path = Path(weights).expanduser()
    try:
        check_allowed_path(path)  # a file named in the app's form must lie in the allowed data roots, when set
    except PermissionError as exc:
        raise WeightsUnavailableError(f"Weights file refused: {exc}") from None
    if not path.is_file():
        raise WeightsUnavailableError(f"Weights file {weights} does not exist. Use 'imagenet', 'random' or the "
                                      "path of a ResNet-18 state dict (.pth).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"Could not load weights from {path}: {exc}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(f"{path} does not hold a state dict.")
    return {k.removeprefix("module."): v for k, v in state.items()}


class ResNetTransfer(ClassifierModel):
    """torchvision ResNet-18 backbone + the seed's head (Linear-ReLU-Dropout-Linear)."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 224, weights: str = "imagenet",
                 finetune: str = "head", dropout: float = 0.5, hidden: int = 256):
        super().__init__(num_classes, in_channels, image_size, IMAGENET_MEAN, IMAGENET_STD)
        backbone = _torchvision_models().resnet18(weights=None)
        if weights != "random":
            state = load_imagenet_state(weights)
            state = {k: v for k, v in state.items() if not k.startswith("fc.")}
            missing, unexpected = backbone.load_state_dict(state, strict=False)
            if [k for k in missing if not k.startswith("fc.")] or unexpected:
                raise WeightsUnavailableError(f"The weights do not fit ResNet-18 (missing {missing[:3]}, "
                                              f"unexpected {unexpected[:3]}).")
        if in_channels == 1:
            # Gray input: sum the RGB filters, which equals feeding the gray image on all three channels.
            conv = backbone.conv1
            gray = nn.Conv2d(1, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, bias=False)
            gray.weight.data.copy_(conv.weight.data.sum(dim=1, keepdim=True))
            backbone.conv1 = gray
        n_features = backbone.fc.in_features  # 512
        backbone.fc = nn.Identity()
        self.backbone = backbone
        self.classifier = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(inplace=True),
                                        nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        self.finetune = finetune
        self.pretrained = weights != "random"
        trainable = {"head": (), "last_block": ("layer4",), "all": ("",)}[finetune]
        for name, param in self.backbone.named_parameters():
            param.requires_grad = any(name.startswith(prefix) for prefix in trainable)

    def train(self, mode: bool = True) -> "ResNetTransfer":
        super().train(mode)
        # Frozen parts stay in eval mode so their batch-norm statistics do not drift.
        for name, module in self.backbone.named_children():
            if not any(p.requires_grad for p in module.parameters()) and any(True for _ in module.parameters()):
                module.eval()
        return self

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)  # (B, 512) after global average pooling

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)

    def layer_parameters(self) -> list[tuple[str, int]]:
        """The backbone by stage ('first convolution', 'stage 1' ... 'stage 4'), then the head's two layers."""
        groups = {"conv1": "first convolution", "bn1": "first convolution", "layer1": "stage 1", "layer2": "stage 2",
                  "layer3": "stage 3", "layer4": "stage 4"}
        counts: dict[str, int] = {}
        for name, child in self.backbone.named_children():
            own = sum(p.numel() for p in child.parameters())
            if own:
                label = groups.get(name, name)
                counts[label] = counts.get(label, 0) + own
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        counts["head · hidden layer"] = sum(p.numel() for p in linears[0].parameters())
        counts["head · output layer"] = sum(p.numel() for p in linears[-1].parameters())
        return list(counts.items())

    def embed_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The stem and each of the four stages, summarised per channel (mean and spread over the image)."""
        b = self.backbone
        h = b.maxpool(b.relu(b.bn1(b.conv1(self.normalize(x)))))
        levels = [map_summary(h)]
        for stage in (b.layer1, b.layer2, b.layer3, b.layer4):
            h = stage(h)
            levels.append(map_summary(h))
        return levels

    @property
    def head(self) -> nn.Module:
        return self.classifier

    @property
    def frozen_features(self) -> bool:
        return self.finetune == "head"

    def gradcam_layer(self) -> nn.Module:
        return self.backbone.layer4


@register_model("ResNet-18 transfer learning (torchvision) with the seed's head; ImageNet weights.",
                options=ResNetOptions, pretrained=True)
def resnet18(*, num_classes: int, image_size: int = 224, in_channels: int = 3,
             options: ResNetOptions) -> ResNetTransfer:
    return ResNetTransfer(num_classes, in_channels, image_size, options.weights, options.finetune, options.dropout)
