"""Is an image like the images a model learned from? Distances in the model's own features, level by level.

A classifier answers every image with some class, often with high confidence, also an image unlike
anything it was trained on (a real scan for a model trained on synthetic phantoms). Its softmax cannot
tell, and neither can its last layer: trained only to tell the classes apart, it maps a real scan right
among the phantoms. Its early layers can: they respond to texture, speckle and contrast. Measured on a
small_cnn trained on the built-in phantoms (64 px, 8 epochs, seeds 0-7), the first block's features put 90-100%
of BUSI scans beyond every held-out phantom, the last block's 1-5%, all levels together 94-100% (86% in one
CI run on another machine). The check is only as keen as the first block is wide: with 16 first-block
filters instead of the default 12, all levels flagged 98-100% (seeds 0-2).
Also tried, on 12-filter models (three seeds each): richer summaries of a block
(quantiles, a 2x2 grid of means) flagged fewer scans, not more (the distance spreads over more, less telling
features); the images' own brightness histogram and 4x4 thumbnail flagged 14-19%; a second limit on the
levels' combined distances (root mean square, mean, geometric mean) flagged no scan the largest level missed.

So each image is described at every level the model offers (``model.embed_levels``: each stage's maps,
their mean and spread per channel), each level standardised with the training images' statistics. At each
level, an image's distance is its Euclidean distance to the ``k``-th nearest training image (the nearest-
neighbour check of Sun et al., ICML 2022, applied per layer as Lee et al., NeurIPS 2018, use several
layers). The limit of each level is measured, not guessed: validation images are in-distribution images
the model never trained on, so their distances show how far a familiar new image can lie; the limit is
the furthest of them times ``MARGIN``. An image's score is its largest distance over the levels, each
divided by that level's limit; above 1 it is unlike the training data at some level.

The run stores what this needs (:class:`~medcls.runs.records.FeatureReference`) when it is tested.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.augment import to_float
from ..models import ClassifierModel
from ..runs.reference import FeatureReference

__all__ = ["embed_images", "knn_distances", "fit_reference", "scores", "Novelty", "judge", "NEIGHBOURS", "MARGIN",
           "MAX_REFERENCE_IMAGES"]

NEIGHBOURS = 5                # distance to the 5th nearest training image
MARGIN = 1.25                 # an image must lie this much beyond the furthest validation image to be flagged
MAX_REFERENCE_IMAGES = 2000   # larger training sets are subsampled (seeded) to keep the record small


@torch.inference_mode()
def embed_images(model: ClassifierModel, images: torch.Tensor | np.ndarray, batch_size: int = 64
                 ) -> list[np.ndarray]:
    """Per level, the feature vectors (N, F_level) float32 of uint8 images (N, C, S, S), in eval mode."""
    model.eval()
    if isinstance(images, np.ndarray) and not images.flags.writeable:  # torch wants memory it may write
        images = images.copy()
    images = torch.as_tensor(images)
    chunks: list[list[torch.Tensor]] = []
    for start in range(0, len(images), batch_size):
        x = to_float(images[start:start + batch_size]).contiguous(memory_format=torch.channels_last)
        chunks.append([level.float() for level in model.embed_levels(x)])
    if not chunks:
        return []
    return [torch.cat([chunk[i] for chunk in chunks]).numpy() for i in range(len(chunks[0]))]


def knn_distances(reference: np.ndarray, features: np.ndarray, k: int, *, leave_one_out: bool = False) -> np.ndarray:
    """Euclidean distance of each row of ``features`` to its ``k``-th nearest row of ``reference``.

    ``leave_one_out``: ``features`` are the reference rows themselves; each row's own match is skipped.
    """
    reference = np.asarray(reference, np.float32)
    features = np.asarray(features, np.float32)
    if not len(features):
        return np.zeros(0, np.float32)
    k = max(1, min(k, len(reference) - (1 if leave_one_out else 0)))
    ref_sq = (reference ** 2).sum(1)
    out = np.empty(len(features), np.float32)
    for start in range(0, len(features), 512):
        part = features[start:start + 512]
        squared = (part ** 2).sum(1)[:, None] + ref_sq[None, :] - 2.0 * part @ reference.T
        distance = np.sqrt(np.maximum(squared, 0.0))
        if leave_one_out:
            distance = np.sort(distance, axis=1)[:, 1:]  # the row itself is at distance 0
        out[start:start + 512] = np.partition(distance, k - 1, axis=1)[:, k - 1]
    return out


def _standardise(levels: list[np.ndarray], centers, scales) -> list[np.ndarray]:
    return [(np.asarray(x, np.float32) - c) / s for x, c, s in zip(levels, centers, scales)]


def _raw_distances(reference: FeatureReference, features: list[np.ndarray]) -> np.ndarray:
    """(N, levels) distances to the k-th nearest training image, level by level."""
    standard = _standardise(features, reference.centers, reference.scales)
    return np.stack([knn_distances(np.asarray(ref, np.float32), x, reference.k)
                     for ref, x in zip(reference.features, standard)], axis=1)


def fit_reference(train: list[np.ndarray], val: list[np.ndarray], seed: int = 0) -> FeatureReference:
    """The training images' features per level and each level's limit, measured on the validation images."""
    n = len(train[0]) if train else 0
    if n < 2:
        raise ValueError("The novelty check needs at least two training images.")
    keep = np.arange(n)
    if n > MAX_REFERENCE_IMAGES:
        keep = np.sort(np.random.default_rng(seed).choice(n, MAX_REFERENCE_IMAGES, replace=False))
    centers = [np.asarray(x, np.float32).mean(0) for x in train]
    scales = [np.asarray(x, np.float32).std(0) + 1e-3 for x in train]  # a flat feature does not dominate
    # Stored as float16: measure the limits on exactly what later images are compared with.
    standard = [x[keep].astype(np.float16).astype(np.float32) for x in _standardise(train, centers, scales)]
    k = min(NEIGHBOURS, len(keep) - 1)
    if val and len(val[0]):
        held_out = np.stack([knn_distances(ref, x, k) for ref, x in
                             zip(standard, _standardise(val, centers, scales))], axis=1)
        basis = "validation"
    else:  # no validation images: each training image against the others (a little optimistic)
        held_out = np.stack([knn_distances(ref, ref, k, leave_one_out=True) for ref in standard], axis=1)
        basis = "training"
    limits = np.maximum(held_out.max(axis=0) * MARGIN, 1e-6)
    held_scores = (held_out / limits).max(axis=1)
    return FeatureReference(features=tuple(x.astype(np.float16) for x in standard), centers=tuple(centers),
                            scales=tuple(scales), limits=tuple(float(v) for v in limits), k=k,
                            typical=float(np.median(held_scores)), basis=basis)


def scores(reference: FeatureReference, features: list[np.ndarray]) -> np.ndarray:
    """Each image's score (N,): its largest distance over the levels, in units of that level's limit."""
    return (_raw_distances(reference, features) / np.asarray(reference.limits)[None, :]).max(axis=1)


@dataclass(frozen=True)
class Novelty:
    """How far one image lies from the training images, against the run's measured limits."""

    score: float       # above 1: beyond every held-out image (times the margin) at some level
    typical: float     # a typical held-out image's score
    level: int         # the level where the image is least familiar (0: the first stage)
    levels: int
    basis: str

    @property
    def unusual(self) -> bool:
        return self.score > 1.0

    @property
    def ratio(self) -> float:
        """The score over a typical held-out image's score (1: as familiar as they are)."""
        return self.score / self.typical if self.typical > 0 else float("inf")

    def sentence(self) -> str:
        where = "its first layers (texture, speckle, contrast)" if self.level < self.levels / 2 \
            else "its last layers (shapes it learned for the classes)"
        if self.unusual:
            return (f"**This image is unlike the images this model was trained on.** In {where} it lies "
                    f"{self.ratio:.0f}x as far from the training images as a typical {self.basis} image does, "
                    f"further than any of them. The model was not trained for images like this one: do not trust "
                    "its answer or its confidence.")
        return (f"This image resembles the training images: in the model's features it lies within the range of "
                f"the {self.basis} images ({self.ratio:.1f}x a typical one's distance).")


def judge(model: ClassifierModel, reference: FeatureReference, pixels: np.ndarray) -> Novelty:
    """The novelty of one image, uint8 pixels (C, S, S) as the model sees them."""
    per_level = _raw_distances(reference, embed_images(model, np.asarray(pixels, np.uint8)[None]))[0]
    relative = per_level / np.asarray(reference.limits)
    return Novelty(float(relative.max()), reference.typical, int(relative.argmax()), len(relative), reference.basis)
