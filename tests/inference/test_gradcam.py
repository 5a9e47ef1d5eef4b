"""Grad-CAM maps and overlays: shape, range, every registered model, no side effects, localisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medcls.inference.gradcam import gradcam_map, gradcam_overlay, heat_colors
from medcls.inference.predictor import Predictor
from medcls.models import create_model, list_models, model_entry

SIZE = 64


def build(name: str, in_channels: int = 1, **kw):
    torch.manual_seed(0)
    if model_entry(name).pretrained:
        kw.setdefault("weights", "random")
    return create_model(name, num_classes=3, image_size=SIZE, in_channels=in_channels, **kw)


def image(channels: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = rng.normal(90, 25, (channels, SIZE, SIZE)).clip(0, 255).astype(np.uint8)
    pixels[:, 20:40, 24:44] = 230
    return pixels


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_every_model_gives_a_map_of_the_image_size_in_0_1(name, in_channels):
    model = build(name, in_channels)
    pixels = image(in_channels)
    maps = [gradcam_map(model, pixels, k) for k in range(3)]
    for heat in maps:
        assert heat.shape == (SIZE, SIZE) and heat.dtype == np.float32
        assert np.isfinite(heat).all() and heat.min() >= 0.0 and heat.max() <= 1.0
        assert heat.max() in (0.0, 1.0)  # scaled to its maximum (all zero: no positive evidence)
    # With random weights some classes have no positive evidence at all; the others are real maps.
    informative = [h for h in maps if h.max() == 1.0]
    assert informative and all(h.std() > 0.01 for h in informative)


@pytest.mark.parametrize("name", list_models())
def test_the_model_is_left_exactly_as_it_was(name):
    model = build(name, 1)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    gradcam_map(model, image(1), 0)
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_works_inside_inference_mode_and_follows_new_weights():
    model = build("small_cnn", 1).eval()
    pixels = image(1)
    first = gradcam_map(model, pixels, 1)
    with torch.inference_mode():
        assert np.array_equal(gradcam_map(model, pixels, 1), first)
    with torch.no_grad():
        for p in model.classifier.parameters():
            p.mul_(-1.0)  # the opposite evidence
    assert not np.allclose(gradcam_map(model, pixels, 1), first)


def test_bad_input_is_refused_with_a_clear_message():
    model = build("small_cnn", 1)
    with pytest.raises(ValueError, match="1 channel"):
        gradcam_map(model, image(3), 0)
    with pytest.raises(ValueError, match="out of range"):
        gradcam_map(model, image(1), 3)
    with pytest.raises(ValueError, match="uint8"):
        gradcam_map(model, image(1).astype(np.float32), 0)


def test_a_trained_model_looks_at_the_evidence():
    """Class 1 = 'a bright square somewhere': its map must light up the square, not the background."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    def batch(n):
        x = rng.normal(90, 25, (n, 1, SIZE, SIZE)).clip(0, 255)
        y = rng.integers(0, 2, n)
        pos = rng.integers(4, SIZE - 20, (n, 2))
        for i in np.flatnonzero(y == 1):
            r, c = pos[i]
            x[i, 0, r:r + 16, c:c + 16] = 230
        return x.astype(np.uint8), y, pos

    model = create_model("small_cnn", num_classes=2, image_size=SIZE, in_channels=1, blocks=3, filters=8)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(60):
        x, y, _ = batch(16)
        loss = torch.nn.functional.cross_entropy(model(torch.tensor(x).float() / 255), torch.tensor(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    x, y, pos = batch(64)
    for i in np.flatnonzero(y == 1)[:5]:
        heat = gradcam_map(model, x[i], 1)
        r, c = pos[i]
        inside = np.zeros_like(heat, dtype=bool)
        inside[r:r + 16, c:c + 16] = True
        assert heat[inside].mean() > 4 * heat[~inside].mean()


def test_overlay_blends_the_image_and_the_heatmap():
    model = build("small_cnn", 1)
    predictor = Predictor(model, ["a", "b", "c"], SIZE, "gray")
    pixels = image(1)
    k = int(np.argmax(predictor.probabilities(pixels)))
    heat = gradcam_map(model, pixels, k)
    gray = np.repeat(pixels.transpose(1, 2, 0), 3, axis=2)
    plain = gradcam_overlay(predictor, pixels, k, alpha=0.0)
    full = gradcam_overlay(predictor, pixels, k, alpha=1.0)
    half = gradcam_overlay(predictor, pixels, k, alpha=0.5)
    assert plain.shape == full.shape == (SIZE, SIZE, 3) and plain.dtype == np.uint8
    assert np.array_equal(plain, gray)
    assert np.array_equal(full, heat_colors(heat))
    expected = np.round(0.5 * gray.astype(np.float32) + 0.5 * heat_colors(heat).astype(np.float32))
    assert np.abs(half.astype(int) - expected.astype(int)).max() <= 1
    with pytest.raises(ValueError, match="between 0 and 1"):
        gradcam_overlay(predictor, pixels, k, alpha=1.5)


def test_overlay_of_an_rgb_model_keeps_the_colours():
    model = build("small_cnn", 3)
    predictor = Predictor(model, ["a", "b", "c"], SIZE, "rgb")
    pixels = image(3)
    pixels[0] = 255  # a red tint
    assert np.array_equal(gradcam_overlay(predictor, pixels, 0, alpha=0.0), pixels.transpose(1, 2, 0))


def test_heat_colors_run_from_cold_to_hot():
    colors = heat_colors(np.array([0.0, 0.5, 1.0]))
    assert colors.shape == (3, 3) and colors.dtype == np.uint8
    assert colors[0, 2] > colors[0, 0]  # low: blue
    assert colors[2, 0] > colors[2, 2]  # high: red


def test_a_map_of_a_single_cell_is_called_what_it_is():
    from medcls.inference.gradcam import coarse_map_note, gradcam_grid

    model = create_model("small_cnn", num_classes=2, image_size=28, in_channels=1).eval()
    assert gradcam_grid(model, 28) == (1, 1)  # six blocks halve 28 px down to one cell
    assert "only one cell" in coarse_map_note(model, 28)
    assert gradcam_grid(model, 128) == (4, 4) and coarse_map_note(model, 128) == ""
    fresh = create_model("small_cnn", num_classes=2, image_size=64, in_channels=1).eval()
    with torch.inference_mode():  # first asked inside inference mode: the map must still work afterwards
        gradcam_grid(fresh, 64)
    heat = gradcam_map(fresh, np.full((1, 64, 64), 100, np.uint8), 0)
    assert heat.shape == (64, 64)


def test_a_fold_ensemble_gets_its_members_averaged_map_and_their_grid():
    """The default recipe trains small datasets as fold ensembles: Try it and Compare ask for the grid first."""
    from medcls.inference.gradcam import coarse_map_note, gradcam_grid
    from medcls.models.ensemble import FoldEnsemble

    torch.manual_seed(0)
    members = [create_model("small_cnn", num_classes=3, image_size=64, in_channels=1).eval() for _ in range(2)]
    ensemble = FoldEnsemble(members).eval()
    assert gradcam_grid(ensemble, 64) == gradcam_grid(members[0], 64) == (2, 2)
    assert "2 x 2 cells" in coarse_map_note(ensemble, 64)
    pixels = np.random.default_rng(0).integers(0, 256, (1, 64, 64), dtype=np.uint8)
    heat = gradcam_map(ensemble, pixels, 1)
    mean = np.mean([gradcam_map(m, pixels, 1) for m in members], axis=0)
    assert heat.shape == (64, 64) and heat.max() == pytest.approx(1.0)
    np.testing.assert_allclose(heat, mean / mean.max(), atol=1e-6)


def test_the_ensemble_note_counts_the_models_the_run_holds():
    from medcls.inference.gradcam import ensemble_note
    from medcls.models.ensemble import FoldEnsemble

    members = [create_model("small_cnn", num_classes=2, image_size=32, in_channels=1) for _ in range(3)]
    assert ensemble_note(members[0]) == ""
    assert ensemble_note(FoldEnsemble(members)).startswith("This run is 3 models predicting together, so the map is "
                                                          "the average of their 3 maps")
    # A run stopped in its first fold (or bagged) model holds one: nothing is averaged, and '1 models' is not said.
    assert ensemble_note(FoldEnsemble(members[:1])) == (
        "This run holds one model of its ensemble (it was stopped before the others), so the map is that model's.")
