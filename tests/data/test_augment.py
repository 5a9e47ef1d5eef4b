"""Batch augmentation: shapes, ranges, determinism, real flips, identity when off."""

from __future__ import annotations

import torch

from medcls.config import AugmentConfig
from medcls.data import BatchAugment, to_float

NO_JITTER = dict(rotate=0.0, scale=0.0, translate=0.0, brightness=0.0, contrast=0.0)


def _batch(b=8, c=1, s=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, c, s, s, generator=g)


def test_to_float_scales_uint8_to_unit_range():
    images = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)
    x = to_float(images)
    assert x.dtype == torch.float32
    assert torch.allclose(x, torch.tensor([[[[0.0, 128 / 255, 1.0]]]]))


def test_default_augmentation_keeps_shape_dtype_and_range_and_changes_the_batch():
    for channels in (1, 3):
        x = _batch(c=channels)
        out = BatchAugment(AugmentConfig())(x.clone(), torch.Generator().manual_seed(1))
        assert out.shape == x.shape and out.dtype == x.dtype
        assert out.min() >= 0.0 and out.max() <= 1.0
        assert not torch.allclose(out, x)


def test_augmentation_off_is_the_identity():
    x = _batch()
    for cfg in (AugmentConfig(augment=False), AugmentConfig(hflip=False, **NO_JITTER)):
        aug = BatchAugment(cfg)
        assert not aug.active
        assert torch.equal(aug(x.clone()), x)


def test_seeded_generator_makes_augmentation_deterministic():
    x = _batch()
    aug = BatchAugment(AugmentConfig(vflip=True))
    a = aug(x.clone(), torch.Generator().manual_seed(7))
    b = aug(x.clone(), torch.Generator().manual_seed(7))
    c = aug(x.clone(), torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_horizontal_flip_only_gives_the_image_or_its_mirror():
    x = _batch(b=32, c=3)
    out = BatchAugment(AugmentConfig(hflip=True, vflip=False, **NO_JITTER))(x.clone(),
                                                                            torch.Generator().manual_seed(0))
    mirrored = 0
    for original, result in zip(x, out):
        same = torch.allclose(result, original, atol=1e-5)
        flipped = torch.allclose(result, original.flip(-1), atol=1e-5)
        assert same or flipped
        mirrored += flipped
    assert 0 < mirrored < 32  # a coin per image, not all-or-nothing


def test_vertical_flip_only_gives_the_image_or_its_upside_down_copy():
    x = _batch(b=32)
    out = BatchAugment(AugmentConfig(hflip=False, vflip=True, **NO_JITTER))(x.clone(),
                                                                            torch.Generator().manual_seed(0))
    flips = [torch.allclose(r, o.flip(-2), atol=1e-5) for o, r in zip(x, out)]
    sames = [torch.allclose(r, o, atol=1e-5) for o, r in zip(x, out)]
    assert all(f or s for f, s in zip(flips, sames))
    assert 0 < sum(flips) < 32


def test_brightness_only_scales_each_image_by_one_gain():
    x = _batch(b=6) * 0.5 + 0.25  # away from the clamp
    cfg = AugmentConfig(hflip=False, **{**NO_JITTER, "brightness": 0.2})
    out = BatchAugment(cfg)(x.clone(), torch.Generator().manual_seed(3))
    gains = out / x
    for g in gains:
        assert torch.allclose(g, g.flatten()[0].expand_as(g), atol=1e-4)  # one gain per image
        assert 0.8 - 1e-4 <= g.flatten()[0] <= 1.2 + 1e-4


def test_affine_grid_matches_torchs_for_any_transform_and_size():
    import torch.nn.functional as F

    from medcls.data.augment import affine_grid

    g = torch.Generator().manual_seed(0)
    for b, h, w, dtype in ((5, 24, 24, torch.float32), (3, 17, 40, torch.float32), (2, 9, 6, torch.float64)):
        theta = (torch.randn(b, 2, 3, generator=g) * 0.5 + torch.eye(2, 3)).to(dtype)
        ours = affine_grid(theta, h, w)
        reference = F.affine_grid(theta, [b, 1, h, w], align_corners=False)
        assert ours.shape == reference.shape and ours.dtype == dtype
        assert torch.allclose(ours, reference, atol=1e-6)


def test_brightness_and_contrast_in_one_pass_keep_each_images_formula():
    """((x - mean) * stretch + mean) * gain per image, clamped: checked against the draws the seeded stream makes."""
    x = _batch(b=6) * 0.5 + 0.25
    cfg = AugmentConfig(hflip=False, **{**NO_JITTER, "brightness": 0.2, "contrast": 0.3})
    out = BatchAugment(cfg)(x.clone(), torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)  # the same draws, in the same order: gains first, then stretches
    gain = (torch.rand(6, generator=g) * 0.4 + 0.8).view(6, 1, 1, 1)
    stretch = (torch.rand(6, generator=g) * 0.6 + 0.7).view(6, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(out, (((x - mean) * stretch + mean) * gain).clamp(0, 1), atol=1e-6)
