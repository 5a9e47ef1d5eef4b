"""Several trained models answering as one: the fold models of a cross-validation run, or bagged models.

The ensemble's probabilities are the mean of its members' probabilities. Its
``forward`` returns the log of that mean, so anything that applies a softmax to
a model's output (``predict_proba``, the metrics, Compare, Try it) gets the
averaged probabilities without knowing it talks to an ensemble.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .base import ClassifierModel

__all__ = ["FoldEnsemble"]


class FoldEnsemble(ClassifierModel):
    def __init__(self, members: Sequence[ClassifierModel]):
        if not members:
            raise ValueError("An ensemble needs at least one model.")
        first = members[0]
        super().__init__(first.num_classes, first.in_channels, first.image_size)
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) in [0, 1] -> log mean probability (B, K)
        probs = torch.stack([torch.softmax(m(x).float(), 1) for m in self.members]).mean(0)
        return probs.clamp_min(1e-12).log()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's features side by side: (B, sum of F). ``x`` is normalised by each member itself."""
        raw = x * self.input_std + self.input_mean
        return torch.cat([m.forward_features(m.normalize(raw)) for m in self.members], 1)

    def gradcam_layer(self) -> nn.Module:
        raise NotImplementedError("An ensemble has no single last layer; Grad-CAM averages its members' maps.")

    def layer_parameters(self) -> list[tuple[str, int]]:
        return [(f"model {i + 1}", sum(p.numel() for p in m.parameters())) for i, m in enumerate(self.members)]
