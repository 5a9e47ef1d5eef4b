"""Class-imbalance strategies: what each training epoch draws, and how the loss weighs classes.

- ``none``: every training image once per epoch, shuffled.
- ``oversample``: rare classes repeated (per-class multipliers as in the seed's
  x16 / x5, or "balance to the largest class"), decided once per run. Balancing a
  strongly imbalanced dataset would multiply every epoch's work (DermaMNIST: 4.7
  times the training images), so an epoch then draws the next share of shuffled
  passes over the balanced list, at most ``BALANCED_EPOCH_LIMIT`` times the training images.
- ``weighted_loss``: scikit-learn's ``balanced`` class weights in the cross-entropy.
- ``weighted_sampler``: each epoch draws ``n`` images with replacement, every
  class equally likely.

Only the training split is ever resampled. Index lists are decided globally
from the seed, so under DDP every rank agrees and takes its own shard.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["BALANCED_EPOCH_LIMIT", "EpochSampler", "balanced_class_weights", "oversample_indices", "parse_multipliers",
           "make_sampler"]


# Balancing to the largest class draws at most this many times the training images an epoch. BUSI (1.7 times)
# stays whole; the built-in phantoms (2.6) train 23% fewer images an epoch with the same test scores, a
# DermaMNIST-like set (4.7) 2.2 times faster with the same test scores (docs/ablation.md). Two classes never
# exceed it.
BALANCED_EPOCH_LIMIT = 2.0


def parse_multipliers(entries: Sequence[str], classes: Sequence[str]) -> dict[int, float]:
    """{'malignant=16', 'benign=5'} -> {class index: factor}; class names match case-insensitively."""
    lookup = {c.casefold(): i for i, c in enumerate(classes)}
    out: dict[int, float] = {}
    for entry in entries:
        name, _, factor = entry.partition("=")
        key = name.strip().casefold()
        if key not in lookup:
            raise ValueError(f"Oversampling names class {name.strip()!r}, which is not in this dataset "
                             f"(classes: {', '.join(classes)}).")
        out[lookup[key]] = float(factor)
    return out


def oversample_indices(labels: np.ndarray, num_classes: int, rng: np.random.Generator,
                       multipliers: dict[int, float] | None = None) -> np.ndarray:
    """Original indices plus random repeats of rare classes (the seed's random oversampling).

    With ``multipliers`` a class with n images ends with about n * factor; without,
    every class is topped up to the largest class's count.
    """
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes)
    parts = [np.arange(len(labels))]
    for c in range(num_classes):
        members = np.flatnonzero(labels == c)
        if len(members) == 0:
            continue
        target = int(round(counts[c] * multipliers.get(c, 1.0))) if multipliers else int(counts.max())
        extra = max(0, target - counts[c])
        if extra:
            parts.append(rng.choice(members, size=extra, replace=True))
    return np.concatenate(parts)


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """n_samples / (n_classes * count_c), via scikit-learn; classes absent from training get weight 1."""
    from sklearn.utils.class_weight import compute_class_weight  # here: the import costs a worker a second

    labels = np.asarray(labels)
    present = np.unique(labels)
    weights = np.ones(num_classes, dtype=np.float64)
    weights[present] = compute_class_weight("balanced", classes=present, y=labels)
    return torch.tensor(weights, dtype=torch.float32)


class EpochSampler:
    """The training indices of each epoch, deterministic for a (seed, epoch) pair."""

    def __init__(self, labels: np.ndarray, num_classes: int, strategy: str, seed: int,
                 multipliers: dict[int, float] | None = None):
        self.labels = np.asarray(labels)
        self.num_classes = num_classes
        self.strategy = strategy
        self.seed = seed
        self.base = np.arange(len(self.labels))
        if strategy == "oversample":
            self.base = oversample_indices(self.labels, num_classes, np.random.default_rng([seed, 7]), multipliers)
        # Explicit multipliers are the user's choice and kept whole; automatic balancing is limited.
        limit = len(self.base) if multipliers else int(BALANCED_EPOCH_LIMIT * len(self.labels))
        self.epoch_size = min(len(self.base), limit)
        counts = np.bincount(self.labels, minlength=num_classes).astype(np.float64)
        self.sample_weights = (1.0 / np.maximum(counts, 1))[self.labels]

    def __len__(self) -> int:
        return self.epoch_size

    @property
    def limited(self) -> bool:
        """Whether an epoch draws only a share of the balanced list (see ``BALANCED_EPOCH_LIMIT``)."""
        return self.epoch_size < len(self.base)

    def limit_note(self) -> str | None:
        """Why an epoch draws fewer images than balancing would give, in words (None when it does not)."""
        if not self.limited:
            return None
        whole = len(self.base) / len(self.labels)
        limit = "twice" if BALANCED_EPOCH_LIMIT == 2 else f"{BALANCED_EPOCH_LIMIT:g} times"
        return (f"Balancing the classes by oversampling would draw {whole:.1f} times the training images every "
                f"epoch (each image of the rarest class about {self._rarest_repeats():.0f} times). To keep an epoch "
                f"at most {limit} the training images, each epoch draws the next share of that balanced list: the "
                "classes are still seen about equally often, and every image at least once in any "
                f"{self.every_image_within()} epochs in a row.")

    def every_image_within(self) -> int:
        """Any this many epochs in a row draw every image: an entry's two draws in consecutive passes are at most
        ``2 * len(base) - 1`` positions of the stream apart."""
        return -(-(2 * len(self.base) - 1) // self.epoch_size) if self.limited else 1

    def _rarest_repeats(self) -> float:
        counts = np.bincount(self.labels, minlength=self.num_classes)
        present = counts[counts > 0]
        return float(present.max() / present.min())

    def indices(self, epoch: int) -> np.ndarray:
        if self.limited:  # only automatic oversampling is ever limited
            return self._share(epoch)
        rng = np.random.default_rng([self.seed, epoch])
        if self.strategy == "weighted_sampler":
            p = self.sample_weights / self.sample_weights.sum()
            return rng.choice(len(self.labels), size=len(self.labels), replace=True, p=p)
        return rng.permutation(self.base)

    def _share(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s (from 1) slice of an endless stream of shuffled passes over the balanced list: every entry is
        drawn once per pass (see ``every_image_within``)."""
        position, end = (epoch - 1) * self.epoch_size, epoch * self.epoch_size
        parts = []
        while position < end:
            pass_index, offset = divmod(position, len(self.base))
            order = np.random.default_rng([self.seed, 11, pass_index]).permutation(self.base)
            parts.append(order[offset: offset + end - position])
            position += len(parts[-1])
        return np.concatenate(parts)

    def state_dict(self) -> dict:
        """What an epoch draws from (the oversampled index list, the seed); plain values for a resume file."""
        return {"strategy": self.strategy, "seed": self.seed, "size": len(self.labels),
                "base": torch.from_numpy(np.ascontiguousarray(self.base, dtype=np.int64))}

    def load_state_dict(self, state: dict) -> None:
        if state.get("strategy") != self.strategy or state.get("size") != len(self.labels):
            raise ValueError("The saved sampler belongs to other training data (strategy or image count differ).")
        self.seed = int(state["seed"])
        self.base = np.asarray(state["base"].numpy(), dtype=np.int64)

    def epoch_class_counts(self, epoch: int = 1) -> np.ndarray:
        return np.bincount(self.labels[self.indices(epoch)], minlength=self.num_classes)


def make_sampler(labels: np.ndarray, classes: Sequence[str], strategy: str, seed: int,
                 oversample: Sequence[str] = ()) -> EpochSampler:
    multipliers = parse_multipliers(oversample, classes) if strategy == "oversample" and oversample else None
    return EpochSampler(labels, len(classes), strategy, seed, multipliers)
