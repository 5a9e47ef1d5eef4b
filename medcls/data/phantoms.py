"""Deterministic synthetic breast-ultrasound-like phantoms: the built-in default dataset.

The images are SYNTHETIC. They imitate a few textbook B-mode features so that the
pipeline can be trained and demonstrated on a fresh machine with no patient data:

* ``normal``    - layered speckled tissue (skin line, subcutaneous fat, fibroglandular
  tissue, pectoral muscle) with depth attenuation and occasional hypoechoic fat islands.
* ``benign``    - an oval, circumscribed, homogeneous hypoechoic lesion, wider than
  tall, usually with posterior acoustic enhancement.
* ``malignant`` - an irregular/spiculated, taller-than-wide, heterogeneous hypoechoic
  lesion, usually with posterior acoustic shadowing.

Nuisance variation (lesion size/contrast, position, rotation, speckle, gain, layer
thickness) and deliberate class overlap keep the task learnable but not trivial.
They are not for diagnosis and say nothing about real patients.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from scipy import ndimage

logger = logging.getLogger(__name__)

PHANTOM_CLASSES: tuple[str, ...] = ("normal", "benign", "malignant")
SPLITS: tuple[str, ...] = ("train", "val", "test")
# Bump whenever the rendered pixels or the layout change: it is part of the fingerprint,
# so cached datasets written by an older generator are regenerated automatically.
GENERATOR_VERSION: int = 2
MARKER_NAME = ".phantom.json"
_MIN_PER_SPLIT = 2  # every class needs >= 2 images per split for stratified metrics


@dataclass(frozen=True)
class PhantomSpec:
    """What to generate; every field feeds :meth:`fingerprint`."""

    # Small enough to generate in seconds and for the default recipe (which oversamples the rare
    # classes towards the ~200 normal training images) to train in about a minute on a 2-core CPU.
    n_images: int = 400
    # normal, benign, malignant: imbalanced (normal 5 times malignant), so imbalance handling (oversampling,
    # balanced metrics) is exercised by default, yet with 8 malignant and 9 benign test images, not 3 and 4 (at
    # 87/7/6 a run found 1 of 3 malignant test images on 4 of 5 seeds: too few images to learn or judge from).
    class_fractions: tuple[float, float, float] = (0.70, 0.16, 0.14)
    # train, val, test: the usual 70/15/15 hold-out split.
    split_fractions: tuple[float, float, float] = (0.70, 0.15, 0.15)
    # 128 px keeps CPU training fast while lesion margins stay visible.
    image_size: int = 128
    # Base seed; image i uses its own generator derived from (seed, i).
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_images < 1:
            raise ValueError(f"n_images must be >= 1, got {self.n_images}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be >= 32, got {self.image_size}")
        for name in ("class_fractions", "split_fractions"):
            fr = getattr(self, name)
            if len(fr) != 3 or min(fr) < 0 or not np.isclose(sum(fr), 1.0, atol=1e-6):
                raise ValueError(f"{name} must be 3 non-negative numbers summing to 1, got {fr}")

    def fingerprint(self) -> str:
        """Short stable hash of all fields plus GENERATOR_VERSION (for cache folder names)."""
        payload = json.dumps({"v": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:12]


# ----------------------------------------------------------------------------- rendering
def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # tanh form never overflows


def _smooth_noise(rng: np.random.Generator, size: int, sigma: tuple[float, float]) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (tissue texture at a given grain)."""
    n = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return n / (n.std() + 1e-8)


def _ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, w: float, h: float,
             angle: float, edge_px: float, size: int,
             radius_fn: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """Soft mask of a (possibly perturbed) rotated ellipse; edge width in pixels."""
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    rho = np.hypot(u / w, v / h)  # 1.0 on the unperturbed boundary
    edge = 1.0 if radius_fn is None else radius_fn(np.arctan2(v / h, u / w))
    return _sigmoid((edge - rho) * np.sqrt(w * h) * size / edge_px)


def _lesion(rng: np.random.Generator, label: str, xx: np.ndarray, yy: np.ndarray, size: int,
            top: float, bottom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
    """Return (mask, inside echo level, bright rim, posterior gain, centre depth) of a lesion."""
    benign = label == "benign"
    faint = rng.random() < 0.22  # low-contrast lesions blur the line with "normal"
    r = rng.uniform(0.05, 0.1) if rng.random() < 0.3 else rng.uniform(0.1, 0.19)
    # Orientation: benign is wider than tall, malignant taller than wide, with overlap.
    if benign:
        aspect = rng.uniform(0.45, 0.8) if rng.random() < 0.75 else rng.uniform(0.8, 1.2)
    else:
        aspect = rng.uniform(0.95, 1.6) if rng.random() < 0.65 else rng.uniform(0.65, 1.0)
    w, h = r / np.sqrt(aspect), r * np.sqrt(aspect)
    angle = np.deg2rad(rng.uniform(-20, 20))
    cx = rng.uniform(0.22, 0.78)
    cy = rng.uniform(min(top + h + 0.02, 0.55), max(min(bottom - 0.08, 0.62) - h, 0.56))

    # Margin: smooth low-order harmonics (benign, some lobulated) vs irregular + spicules.
    ks = np.arange(2, 8)
    if benign:
        lobulated = rng.random() < 0.35
        amp = rng.uniform(0, 0.10 if lobulated else 0.04, ks.size) * (ks <= (5 if lobulated else 3))
        n_spikes, spike_len = 0, 0.0
    else:
        amp = rng.uniform(0.02, 0.12, ks.size)
        mild = rng.random() < 0.4  # some cancers are only microlobulated, not spiculated
        n_spikes = rng.integers(0, 4) if mild else rng.integers(6, 16)
        spike_len = rng.uniform(0.2, 0.5) if mild else rng.uniform(0.4, 0.9)
    phases = rng.uniform(0, 2 * np.pi, ks.size)
    spike_at = rng.uniform(-np.pi, np.pi, n_spikes)
    spike_h = spike_len * rng.uniform(0.5, 1.0, n_spikes)
    spike_w = rng.uniform(0.05, 0.10, n_spikes)

    # Boundary radius r(phi) is tabulated once on a fine angle grid and interpolated,
    # which is much cheaper than evaluating harmonics and spikes on every pixel.
    grid = np.linspace(-np.pi, np.pi, 721)
    table = 1.0 + amp @ np.cos(np.outer(ks, grid) + phases[:, None])
    for a, hh, sw in zip(spike_at, spike_h, spike_w):
        d = (grid - a + np.pi) % (2 * np.pi) - np.pi  # wrapped angular distance
        table += hh * np.exp(-0.5 * (d / sw) ** 2)

    def radius_fn(phi: np.ndarray) -> np.ndarray:
        return np.interp(phi, grid, table, period=2 * np.pi)

    edge_px = rng.uniform(0.5, 1.0) if benign else rng.uniform(1.0, 2.5)
    mask = _ellipse(xx, yy, cx, cy, w, h, angle, edge_px, size, radius_fn)

    # Echo level inside: homogeneous (benign) vs heterogeneous (malignant).
    level = rng.uniform(0.25, 0.4) if faint else rng.uniform(0.03, 0.16)
    texture = 0.08 if benign else rng.uniform(0.25, 0.45)
    inside = level * np.clip(1 + texture * _smooth_noise(rng, size, (1.5, 1.5)), 0.2, 2.0)
    # Bright rim outside the margin: thin capsule (benign) or thick echogenic halo (malignant).
    rim = np.zeros_like(mask)
    if benign and rng.random() < 0.4:
        rim = 0.5 * (_ellipse(xx, yy, cx, cy, w * 1.08, h * 1.08, angle, 0.6, size, radius_fn) - mask)
    elif not benign and rng.random() < 0.35:
        rim = 0.35 * (_ellipse(xx, yy, cx, cy, w * 1.4, h * 1.4, angle, 3.0, size, radius_fn) - mask)

    # Posterior effect: enhancement (benign) or shadowing (malignant), some with neither.
    if benign:
        gain = rng.uniform(0.4, 1.0) if rng.random() < 0.7 else rng.uniform(-0.15, 0.15)
    else:
        gain = -rng.uniform(0.35, 0.8) if rng.random() < 0.7 else rng.uniform(-0.15, 0.15)
    if faint:
        gain *= 0.5
    return mask, inside, np.clip(rim, 0, None), gain, cy


def render_phantom(label: str, rng: np.random.Generator, size: int = 128) -> np.ndarray:
    """Render one synthetic phantom of class ``label``.

    Args:
        label: one of :data:`PHANTOM_CLASSES`.
        rng: source of all randomness (pass a seeded generator for reproducibility).
        size: output height and width in pixels.

    Returns:
        Grayscale uint8 image of shape ``(size, size)``; rows are depth (top = skin).
    """
    if label not in PHANTOM_CLASSES:
        raise ValueError(f"unknown label {label!r}; expected one of {PHANTOM_CLASSES}")
    px = size / 128.0  # texture grain is defined at 128 px and scaled with the image
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / (size - 1)

    # Layers follow a slightly tilted, wavy depth coordinate (probe angle, anatomy).
    d = yy + rng.uniform(-0.08, 0.08) * (xx - 0.5)

    def wave(amp: float) -> np.ndarray:  # gently undulating layer boundary
        return amp * np.sin(2 * np.pi * (rng.uniform(0.5, 2) * xx + rng.random()))

    skin = rng.uniform(0.025, 0.05)
    fat_end = skin + rng.uniform(0.10, 0.28) + wave(0.03)
    gland_end = fat_end + rng.uniform(0.35, 0.55) + wave(0.04)
    s1, s2 = _sigmoid((d - fat_end) * size / 2), _sigmoid((d - gland_end) * size / 2)
    fat = rng.uniform(0.3, 0.42) * (1 + 0.25 * _smooth_noise(rng, size, (3 * px, 6 * px)))
    gland = rng.uniform(0.6, 0.8) * (1 + 0.3 * _smooth_noise(rng, size, (1.2 * px, 4 * px)))
    muscle = rng.uniform(0.25, 0.4) * (1 + 0.3 * np.sin(2 * np.pi * d * rng.uniform(12, 20)))
    tissue = fat * (1 - s1) + gland * s1 * (1 - s2) + muscle * s2
    tissue = tissue * (d > skin * 0.5) + 1.1 * np.exp(-0.5 * ((d - skin) * size / (1.2 * px)) ** 2)

    # Hypoechoic fat islands/ducts in every class: anatomy that mimics small lesions.
    for _ in range(rng.integers(0, 4)):
        isl = _ellipse(xx, yy, rng.uniform(0.1, 0.9), rng.uniform(skin + 0.05, 0.75),
                       rng.uniform(0.04, 0.1), rng.uniform(0.02, 0.05),
                       rng.uniform(-0.3, 0.3), 1.5, size)
        tissue = tissue * (1 - rng.uniform(0.2, 0.5) * isl)

    if label != "normal":
        mask, inside, rim, gain, cy = _lesion(rng, label, xx, yy, size, float(np.mean(fat_end)),
                                         float(np.mean(gland_end)))
        # Everything straight below the lesion gets the posterior effect, fading with depth.
        below = np.maximum.accumulate(mask, axis=0) * (1 - mask)
        below = ndimage.gaussian_filter1d(below, 1.5 * px, axis=1)
        fade = np.exp(-np.clip(yy - cy, 0, None) / rng.uniform(0.3, 0.8))
        tissue = tissue * (1 + gain * below * fade) * (1 + rim)
        tissue = tissue * (1 - mask) + inside * mask

    # Multiplicative speckle: magnitude of a smoothed complex Gaussian field is Rayleigh;
    # the grain is elongated laterally like a real point-spread function.
    psf = (0.7 * px, rng.uniform(1.0, 1.6) * px)
    re, im = (ndimage.gaussian_filter(rng.standard_normal((size, size)), psf) for _ in range(2))
    speckle = np.hypot(re, im)
    speckle /= speckle.mean()
    strength = rng.uniform(0.4, 0.75)
    img = tissue * (1 - strength + strength * speckle)

    # Depth attenuation only partly compensated by time-gain control, then overall gain/gamma.
    img *= np.exp(-rng.uniform(0.2, 1.4) * yy)
    img = np.clip(img * rng.uniform(0.65, 1.0), 0, None) ** rng.uniform(0.8, 1.25)
    img += 0.02 * rng.standard_normal(img.shape)  # electronic noise floor
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- dataset
def _largest_remainder(total: int, fractions: tuple[float, ...]) -> list[int]:
    """Split ``total`` into integer parts proportional to ``fractions`` summing to ``total``."""
    raw = np.asarray(fractions, dtype=float) * total
    parts = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - parts), kind="stable")[: total - parts.sum()]:
        parts[i] += 1
    return [int(p) for p in parts]


def _plan(spec: PhantomSpec) -> list[tuple[str, str]]:
    """Deterministic (split, label) for each image index; tiny classes are topped up."""
    plan: list[tuple[str, str]] = []
    for label, n_cls in zip(PHANTOM_CLASSES, _largest_remainder(spec.n_images, spec.class_fractions)):
        per_split = [max(_MIN_PER_SPLIT, n) for n in _largest_remainder(n_cls, spec.split_fractions)]
        for split, n in zip(SPLITS, per_split):
            plan += [(split, label)] * n
    order = np.random.default_rng([spec.seed, 0x5EED]).permutation(len(plan))
    return [plan[i] for i in order]  # shuffled so file ids do not reveal the class


def _is_complete(root: Path, fingerprint: str) -> bool:
    try:
        marker = json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    return marker.get("fingerprint") == fingerprint and marker.get("total") == sum(
        1 for _ in root.glob("*/*/*.png"))


def _readme(spec: PhantomSpec, counts: dict[str, dict[str, int]]) -> str:
    lines = [
        "SYNTHETIC BREAST-ULTRASOUND PHANTOMS - NOT PATIENT DATA, NOT FOR DIAGNOSIS.",
        "",
        "Every image here was drawn by medcls.data.phantoms (a procedural generator).",
        "They imitate textbook B-mode features only, to demo and test the pipeline:",
        "  normal    - layered speckled tissue, no lesion",
        "  benign    - oval, circumscribed, wider-than-tall lesion, posterior enhancement",
        "  malignant - irregular/spiculated, taller-than-wide lesion, posterior shadowing",
        "A model trained on them says nothing about real patients.",
        "",
        f"generator_version: {GENERATOR_VERSION}",
        f"fingerprint: {spec.fingerprint()}",
        f"spec: {json.dumps(asdict(spec))}",
        "",
        "counts (split / class):",
    ]
    for split in SPLITS:
        row = ", ".join(f"{c}={counts[split][c]}" for c in PHANTOM_CLASSES)
        lines.append(f"  {split}: {row}, total={sum(counts[split].values())}")
    return "\n".join(lines) + "\n"


def write_phantom_dataset(root: Path | str, spec: PhantomSpec = PhantomSpec()) -> Path:
    """Write the dataset as ``root/{train,val,test}/{class}/phantom_00042.png``.

    Also writes ``root/README.txt`` (states the images are synthetic, the spec and the
    counts) and a marker ``root/.phantom.json``. Output is byte-identical for the same
    spec. Generation happens in a temporary sibling folder that is renamed into place,
    so ``root`` is never half-written. If ``root`` already holds a complete dataset with
    the same fingerprint nothing is done. An existing different phantom dataset is
    replaced; a non-empty folder without a phantom marker is refused (FileExistsError)
    so user data is never deleted.

    Returns:
        ``root`` as a :class:`Path`.
    """
    root = Path(root)
    fp = spec.fingerprint()
    if _is_complete(root, fp):
        logger.debug("phantom dataset %s already complete (fingerprint %s)", root, fp)
        return root
    if root.exists() and not (root / MARKER_NAME).is_file() and (
            not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists, is not empty and is not a phantom dataset")

    start = time.perf_counter()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{fp}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    counts = {s: {c: 0 for c in PHANTOM_CLASSES} for s in SPLITS}
    try:
        for split in SPLITS:
            for label in PHANTOM_CLASSES:
                (tmp / split / label).mkdir(parents=True)
        for i, (split, label) in enumerate(_plan(spec)):
            # One generator per image: content depends only on (seed, i), not on order.
            img = render_phantom(label, np.random.default_rng([spec.seed, i]), spec.image_size)
            Image.fromarray(img).save(tmp / split / label / f"phantom_{i:05d}.png")
            counts[split][label] += 1
        (tmp / "README.txt").write_text(_readme(spec, counts))
        total = sum(sum(c.values()) for c in counts.values())
        marker = {"fingerprint": fp, "generator_version": GENERATOR_VERSION,
                  "spec": asdict(spec), "counts": counts, "total": total}
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True))
        if root.exists():  # a stale/partial phantom dataset or an empty folder: swap it out
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            os.replace(root, old)
            shutil.rmtree(old, ignore_errors=True)
        try:
            os.replace(tmp, root)
        except OSError:
            if not _is_complete(root, fp):  # lost a race to anything but an identical writer
                raise
            logger.debug("another process wrote %s first; discarding our copy", root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("wrote %d synthetic phantoms to %s in %.1fs (fingerprint %s)",
                sum(sum(c.values()) for c in counts.values()), root,
                time.perf_counter() - start, fp)
    return root
