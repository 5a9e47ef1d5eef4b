"""How alike two unrelated images of one dataset are by chance, and which look-alike pairs are really copies.

A perceptual hash (64 bits of an image's coarse shapes) finds near-duplicates well when unrelated images
differ a lot at that scale: two BUSI scans that are 10 bits apart are, by eye, the same scan, while
unrelated scans sit about 30 bits apart. It fails where every image shares one layout and differs only in
detail: 28-pixel chest X-rays (PneumoniaMNIST) all have two dark lungs in the same place, so thousands of
*different* pictures land within 10 bits of another and chain into one giant "group".

So the threshold is not taken on trust. For each dataset, random pairs of its own images (nearly all
unrelated) measure what chance gives: the spread of hash distances and of pixel correlations (on 16 x 16
thumbnails, mean removed, so brightness and contrast changes do not matter). A candidate pair (hash within
the chosen number of bits) counts as a near-duplicate only when it is closer than chance could explain in
a dataset of this size, by its hash or by its pixels:

- hash distance at most ``hash_limit``: the median distance minus ``z`` spreads of the lower tail;
- or pixel correlation at least ``pixel_limit``: the same on the Fisher-z scale, upper tail; and where the
  top 1% of random pairs lies further out than that normal says (images that share one shape at varying
  places, such as a single lesion anywhere on plain tissue), the tail fitted to the 95th and 99th
  percentiles instead, the stricter of the two. The tail is measured without the pairs the first limit
  already calls copies: in a small dataset with several copies of every picture they are over 1% of all pairs;
- or identical pixels.

``z`` is chosen so that fewer than ``FALSE_PAIRS`` unrelated pairs are expected to pass among all
N (N - 1) / 2 pairs (a normal tail fitted to the measured spread). On BUSI the hash limit is about 12
bits, so every 10-bit pair counts as before; on look-alike X-rays it is 0-2 bits and the pixel check
decides. Tests plant exact and near copies among distinct look-alikes and check that exactly the planted
groups come out (tests/data/test_similarity.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.stats import norm

__all__ = ["THUMB_SIDE", "FALSE_PAIRS", "ChanceLevels", "thumbnail_pixels", "chance_levels", "confirm_pairs"]

THUMB_SIDE = 16          # thumbnails for the pixel check: 16 x 16 gray, box-averaged
FALSE_PAIRS = 0.1        # unrelated pairs expected to pass the check, over the whole dataset
SAMPLE_PAIRS = 100_000   # random pairs that measure chance (all pairs when a dataset has fewer)
MIN_IMAGES = 12          # below this, chance cannot be measured: only the hash threshold decides
MIN_TAIL_PAIRS = 2_000   # pairs needed before the top 1% (20 or more pairs) measures the tail, not a few copies
Z_95, Z_99 = float(norm.isf(0.05)), float(norm.isf(0.01))  # the 95th and 99th percentiles of a normal, in spreads


def thumbnail_pixels(gray: np.ndarray) -> bytes:
    """The 16 x 16 box-averaged thumbnail of a uint8 gray image (256 bytes), kept with its hash."""
    thumb = Image.fromarray(np.ascontiguousarray(gray)).resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    return np.asarray(thumb, dtype=np.uint8).tobytes()


def _unit_rows(thumbs: np.ndarray) -> np.ndarray:
    """Thumbnails with the mean removed and scaled to length 1: a dot product is their correlation."""
    rows = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    rows -= rows.mean(axis=1, keepdims=True)
    length = np.linalg.norm(rows, axis=1, keepdims=True)
    length[length == 0] = 1.0  # a flat image correlates with nothing
    return rows / length


@dataclass(frozen=True)
class ChanceLevels:
    """What chance gives between unrelated images of one dataset, and the limits that beat it."""

    images: int
    typical_bits: float          # median hash distance of random pairs
    hash_limit: float            # pairs at most this many bits apart are copies by their hash alone
    typical_correlation: float   # median pixel correlation of random pairs
    pixel_limit: float           # pairs correlating at least this much are copies by their pixels
    measured: bool = True        # False: too few images to measure chance; the hash threshold decides alone

    def hash_trusted(self, max_distance: int) -> bool:
        """Whether every pair within ``max_distance`` bits is beyond chance by its hash alone."""
        return not self.measured or max_distance <= self.hash_limit

    def describe(self, max_distance: int) -> str:
        """The check in words, for this dataset."""
        if not self.measured:
            return (f"With only {self.images} readable images, what chance gives cannot be measured: pairs up to "
                    f"{max_distance} bits apart count as near-duplicates.")
        typical = (f"Unrelated images of this dataset are typically {self.typical_bits:.0f} bits apart and their "
                   f"pixels correlate about {self.typical_correlation:.2f}.")
        if self.hash_trusted(max_distance):
            return (f"{typical} Pairs up to {max_distance} bits apart are far closer than chance, so the "
                    "fingerprint alone decides.")
        return (f"{typical} Here fingerprints alone are not trustworthy (small or look-alike images): only pairs "
                f"up to {max(0.0, self.hash_limit):.0f} bits apart count by fingerprint; closer look-alikes "
                f"count only when their pixels correlate at least {self.pixel_limit:.3f}, which unrelated "
                "images of this dataset do not reach.")


def _spread(low: float, high: float, minimum: float, spreads_apart: float = Z_95) -> float:
    """One spread of a normal whose percentiles ``low`` and ``high`` lie ``spreads_apart`` spreads apart."""
    return max(minimum, (high - low) / spreads_apart)


def chance_levels(phash: np.ndarray, thumbs: np.ndarray, ok: np.ndarray | None = None,
                  seed: int = 0) -> ChanceLevels:
    """Measure chance on random pairs of the readable images and derive the limits (see the module doc)."""
    phash = np.asarray(phash, dtype=np.uint64)
    usable = np.flatnonzero(np.ones(len(phash), bool) if ok is None else np.asarray(ok, bool))
    n = len(usable)
    if n < MIN_IMAGES:
        return ChanceLevels(n, float("nan"), float("inf"), float("nan"), float("inf"), measured=False)
    pairs = n * (n - 1) // 2
    if pairs <= SAMPLE_PAIRS:
        first, second = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        first, second = rng.integers(0, n, SAMPLE_PAIRS), rng.integers(0, n, SAMPLE_PAIRS)
        keep = first != second
        first, second = first[keep], second[keep]
    a, b = usable[first], usable[second]
    bits = np.bitwise_count(phash[a] ^ phash[b]).astype(np.float64)
    units = _unit_rows(np.asarray(thumbs)[usable])
    fisher = np.arctanh(np.clip(np.einsum("ij,ij->i", units[first], units[second]), -0.999999, 0.999999))
    z = float(norm.isf(FALSE_PAIRS / pairs))
    bits_5, bits_50 = np.percentile(bits, [5, 50])
    fisher_50, fisher_95 = np.percentile(fisher, [50, 95])
    pixel_limit = fisher_50 + z * _spread(fisher_50, fisher_95, 0.01)
    unrelated = fisher[fisher < pixel_limit]  # without the pairs the bulk already calls copies (many, in some data)
    if len(unrelated) >= MIN_TAIL_PAIRS and z > Z_99:
        # Look-alikes that share one shape at varying places (a lesion anywhere on plain tissue) correlate in a
        # heavier upper tail than the bulk's normal: fit the tail from its own percentiles too, keep the stricter.
        tail_95, tail_99 = np.percentile(unrelated, [95, 99])
        pixel_limit = max(pixel_limit, tail_99 + (z - Z_99) * _spread(tail_95, tail_99, 0.01, Z_99 - Z_95))
    return ChanceLevels(
        images=n, typical_bits=float(bits_50),
        hash_limit=float(bits_50 - z * _spread(bits_5, bits_50, 0.5)),
        typical_correlation=float(np.tanh(fisher_50)),
        pixel_limit=float(np.tanh(pixel_limit)))


def confirm_pairs(first: np.ndarray, second: np.ndarray, distance: np.ndarray, thumbs: np.ndarray,
                  identical: np.ndarray, levels: ChanceLevels) -> np.ndarray:
    """Which candidate pairs are beyond chance: by hash distance, by pixel correlation, or identical."""
    if not levels.measured or not len(first):
        return np.ones(len(first), bool)
    units = _unit_rows(np.asarray(thumbs))
    correlation = np.einsum("ij,ij->i", units[first], units[second])
    return np.asarray(identical, bool) | (distance <= levels.hash_limit) | (correlation >= levels.pixel_limit)
