"""A configurable plain CNN. The seed's two networks and the fast default are presets of it.

Conv blocks are ``conv -> [batch norm] -> activation -> pool`` as listed (the
seed's order); with batch norm, the default runs ``conv -> pool -> batch norm ->
activation`` in all blocks but the last (``pool_first``: the same layers, on a
quarter of the values after the convolution). The filter count grows per block,
and the head is either the seed's flatten + fully connected stack or global
average pooling. Layer sizes are computed from the input size, never hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..config.options import ConfigError, check_fields, option, when
from ._registry import register_model
from .base import ClassifierModel, map_summary
from .batchnorm import BatchNorm2d

__all__ = ["CNNOptions", "ConfigurableCNN", "SEED_CNN", "SEED_CNN_BN", "MAX_FILTERS"]

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}
POOLS = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d}


MAX_FILTERS = 512  # cap so deep stacks do not explode
_ARCH = "Architecture"


@dataclass(frozen=True)
class CNNOptions:
    """The configurable CNN's options; each preset (model) starts from its own values."""

    blocks: int = option(6, "Number of conv blocks; each halves the image. More blocks: more capacity, and more "
                         "risk of overfitting on a few hundred images.", label="Conv blocks", group=_ARCH, min=1,
                         max=8, sweep=(3, 6), sweep_order=11)
    filters: int = option(12, "Filters in the first block; later blocks grow from here. Few filters keep the "
                          "costly high-resolution layers cheap.", label="First-block filters", group=_ARCH, min=4,
                          max=256, sweep=(12, 24), sweep_order=12)
    growth: float = option(2.0, "How much the filter count grows per block (2 = doubles).", label="Filter growth",
                           group=_ARCH, min=1.0, max=3.0)
    kernel_size: int = option(3, "Size of each convolution window in pixels.", label="Kernel size", group=_ARCH,
                              choices=(3, 5, 7))
    batch_norm: bool = option(True, "Batch normalisation after each convolution: steadier, faster training.",
                              label="Batch norm", group=_ARCH)
    pool_first: bool = option(True, "Halve the maps before batch norm and the activation in every block but "
                              "the last: they then work on a quarter of the values, and a training step on a CPU "
                              "takes about a quarter less time. Off: the seed's order (convolution, batch norm, "
                              "activation, pooling).",
                              label="Pool before batch norm", group=_ARCH, applies=when(batch_norm=True))
    activation: str = option("relu", "The non-linearity after each layer.", label="Activation", group=_ARCH,
                             choices=("relu", "gelu", "silu"),
                             words=(("relu", "ReLU"), ("gelu", "GELU"), ("silu", "SiLU")))
    pooling: str = option("max", "How each block halves the image: max or average pooling.", label="Pooling",
                          group=_ARCH, choices=("max", "avg"), words=(("max", "max pooling"),
                                                                       ("avg", "average pooling")))
    head: str = option("gap", "Classifier: 'flatten' + fully connected layers (the seed's, many parameters) or "
                       "'gap' (global average pooling, few parameters).", label="Classifier head", group=_ARCH,
                       choices=("flatten", "gap"), words=(("flatten", "flatten + dense"),
                                                         ("gap", "global pooling")))
    fc_widths: tuple[int, ...] = option((), "Widths of the hidden fully connected layers of the head, e.g. "
                                        "1024, 512 (empty: none).", label="Hidden layer widths", group=_ARCH,
                                        item_min=1, item_max=65536, sweepable=False)
    dropout: float = option(0.2, "Share of the head's units switched off at random while training, against "
                            "overfitting.", label="Dropout", group=_ARCH, min=0.0, max=0.9, sweep=(0.2, 0.5),
                            sweep_order=9)

    def __post_init__(self) -> None:
        check_fields(self)
        if len(self.fc_widths) > 8:
            raise ConfigError("Hidden layer widths: at most 8 layers.")

    def channels(self) -> list[int]:
        """Filters of each block: 16, 32, 64, ... capped at MAX_FILTERS."""
        return [min(MAX_FILTERS, int(round(self.filters * self.growth ** i))) for i in range(self.blocks)]


# Each preset's starting values (the rest are CNNOptions' defaults: the CPU-friendly small_cnn).
SEED_CNN = dict(blocks=4, filters=32, growth=2.0, batch_norm=False, head="flatten", fc_widths=(1024, 512), dropout=0.5)
SEED_CNN_BN = dict(blocks=3, filters=32, growth=2.0, batch_norm=True, pool_first=False, head="flatten",
                   fc_widths=(1024, 512), dropout=0.5)


class ConfigurableCNN(ClassifierModel):
    def __init__(self, spec: CNNOptions, num_classes: int, in_channels: int = 3, image_size: int = 128):
        super().__init__(num_classes, in_channels, image_size)
        self.options = spec
        act = ACTIVATIONS[spec.activation]
        layers: list[nn.Module] = []
        c_in = in_channels
        run_order: list[int] = []  # the order forward() applies the feature layers in (see below)
        block_ends: list[int] = []  # the layer that ends each block in that order
        channels = spec.channels()
        for i, c_out in enumerate(channels):
            block = [nn.Conv2d(c_in, c_out, spec.kernel_size, padding=spec.kernel_size // 2)]
            if spec.batch_norm:
                block.append(BatchNorm2d(c_out))
            # ceil_mode: a map that is already 1 px stays 1 px, so any block count fits any image size.
            block += [act(), POOLS[spec.pooling](2, 2, ceil_mode=True)]
            start = len(layers)
            conv, norm, activation, pool = start, start + 1, start + len(block) - 2, start + len(block) - 1
            order = list(range(start, start + len(block)))
            # The layers stay in the seed's order (so checkpoints keep their names); forward() may run them in
            # another. The last block always keeps the seed's order, so Grad-CAM sees its activation before pooling.
            last = i == len(channels) - 1
            if spec.batch_norm and spec.pool_first and not last:
                # Batch norm and the activation on a quarter of the values: batch norm over the full-size maps
                # is a quarter of a CPU training step (docs/ablation.md).
                if spec.activation == "relu":
                    block[-2] = nn.ReLU(inplace=True)  # after batch norm, whose backward does not need its output
                order = [conv, pool, norm, activation]
            elif spec.activation == "relu" and spec.pooling == "max" and not last:
                # max(relu(x)) == relu(max(x)): pooling first is the same function with the ReLU (and its
                # backward) on a quarter of the values: 1.3x faster training for seed_cnn_bn at 256 px on CPU.
                block[-2] = nn.ReLU(inplace=True)
                order[-2:] = [pool, activation]
            layers += block
            run_order += order
            block_ends.append(order[-1])
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.run_order = tuple(run_order)
        self.block_ends = frozenset(block_ends)

        if spec.head == "gap":
            self.pool: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
            n_features = c_in
        else:
            self.pool = nn.Flatten()
            side = -(-image_size // 2 ** spec.blocks)  # each pooling rounds up
            n_features = c_in * side * side  # e.g. seed_cnn_bn at 256 px: 128*32*32 = 131072
        head: list[nn.Module] = []
        width = n_features
        for hidden in spec.fc_widths:
            head.append(nn.Linear(width, hidden))
            if spec.batch_norm:
                head.append(nn.BatchNorm1d(hidden))
            head += [act(), nn.Dropout(spec.dropout)]
            width = hidden
        if not spec.fc_widths and spec.dropout > 0:
            head.append(nn.Dropout(spec.dropout))
        head.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i in self.run_order:
            x = self.features[i](x)
        return self.pool(x)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)

    def layer_parameters(self) -> list[tuple[str, int]]:
        """'block 1 · convolution', 'block 1 · batch norm', ..., 'head · hidden layer 1', 'head · output layer'."""
        rows, block = [], 0
        for layer in self.features:
            if isinstance(layer, nn.Conv2d):
                block += 1
            own = sum(p.numel() for p in layer.parameters(recurse=False))
            if own:
                kind = "convolution" if isinstance(layer, nn.Conv2d) else "batch norm"
                rows.append((f"block {block} · {kind}", own))
        linears = [m for m in self.classifier if isinstance(m, nn.Linear)]
        hidden = 0
        for layer in self.classifier:
            own = sum(p.numel() for p in layer.parameters(recurse=False))
            if not own:
                continue
            if isinstance(layer, nn.Linear):
                if layer is linears[-1]:
                    rows.append(("head · output layer", own))
                    continue
                hidden += 1
                rows.append((f"head · hidden layer {hidden}", own))
            else:
                rows.append((f"head · batch norm {hidden}", own))
        return rows

    def embed_levels(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each conv block's output maps, summarised per filter (mean and spread over the image)."""
        h = self.normalize(x)
        levels = []
        for i in self.run_order:
            h = self.features[i](h)
            if i in self.block_ends:
                levels.append(map_summary(h))
        return levels

    @property
    def head(self) -> nn.Module:
        return self.classifier

    def gradcam_layer(self) -> nn.Module:
        # The activation of the last block, before its pooling (highest-level map with some resolution).
        return self.features[-2]


@register_model("The seed notebook's first CNN: 4 conv blocks, 3 linear layers (very many parameters).",
                options=CNNOptions, defaults=SEED_CNN)
def seed_cnn(*, num_classes: int, image_size: int = 256, in_channels: int = 3, options: CNNOptions) -> ConfigurableCNN:
    return ConfigurableCNN(options, num_classes, in_channels, image_size)


@register_model("The seed notebook's improved CNN: 3 conv blocks with batch norm, BN in the classifier.",
                options=CNNOptions, defaults=SEED_CNN_BN)
def seed_cnn_bn(*, num_classes: int, image_size: int = 256, in_channels: int = 3,
                options: CNNOptions) -> ConfigurableCNN:
    return ConfigurableCNN(options, num_classes, in_channels, image_size)


@register_model("Fast CPU default: 6 conv blocks with batch norm, global-average-pooling head (~0.9M parameters).",
                options=CNNOptions)
def small_cnn(*, num_classes: int, image_size: int = 128, in_channels: int = 3, options: CNNOptions) -> ConfigurableCNN:
    return ConfigurableCNN(options, num_classes, in_channels, image_size)
