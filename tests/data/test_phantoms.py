"""Tests for the synthetic phantom generator (medcls.data.phantoms)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcls.data.phantoms import (
    GENERATOR_VERSION,
    PHANTOM_CLASSES,
    PhantomSpec,
    render_phantom,
    write_phantom_dataset,
)

SPLITS = ("train", "val", "test")
# Small but with enough minority images that the fractions are measurable.
SMALL = PhantomSpec(n_images=200, image_size=64, seed=3)


def _counts(root: Path) -> dict[str, dict[str, int]]:
    return {s: {c: len(list((root / s / c).glob("*.png"))) for c in PHANTOM_CLASSES} for s in SPLITS}


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("label", PHANTOM_CLASSES)
def test_render_shape_dtype_and_not_constant(label: str, size: int) -> None:
    img = render_phantom(label, np.random.default_rng(0), size)
    assert img.dtype == np.uint8
    assert img.shape == (size, size)
    assert img.std() > 10  # real texture, not a flat image
    assert 20 < img.mean() < 200  # neither black nor saturated


def test_render_rejects_unknown_label() -> None:
    with pytest.raises(ValueError):
        render_phantom("cyst", np.random.default_rng(0))


def test_render_is_deterministic() -> None:
    for label in PHANTOM_CLASSES:
        a = render_phantom(label, np.random.default_rng([5, 1]))
        b = render_phantom(label, np.random.default_rng([5, 1]))
        c = render_phantom(label, np.random.default_rng([5, 2]))
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_fingerprint_is_stable_and_sensitive() -> None:
    assert PhantomSpec().fingerprint() == PhantomSpec().fingerprint()
    assert len(PhantomSpec().fingerprint()) >= 8
    others = {PhantomSpec(seed=1), PhantomSpec(n_images=601), PhantomSpec(image_size=64),
              PhantomSpec(class_fractions=(0.8, 0.1, 0.1)),
              PhantomSpec(split_fractions=(0.6, 0.2, 0.2))}
    prints = {s.fingerprint() for s in others} | {PhantomSpec().fingerprint()}
    assert len(prints) == len(others) + 1
    assert isinstance(GENERATOR_VERSION, int)


@pytest.mark.parametrize("bad", [dict(n_images=0), dict(image_size=8),
                                 dict(class_fractions=(0.5, 0.5, 0.5)),
                                 dict(split_fractions=(1.2, -0.1, -0.1))])
def test_spec_validation(bad: dict) -> None:
    with pytest.raises(ValueError):
        PhantomSpec(**bad)


def test_write_dataset_layout_readme_counts_and_noop(tmp_path: Path) -> None:
    root = tmp_path / "phantoms"
    assert write_phantom_dataset(root, SMALL) == root

    counts = _counts(root)
    total = sum(sum(c.values()) for c in counts.values())
    assert total == SMALL.n_images
    for split in SPLITS:
        for label in PHANTOM_CLASSES:
            assert counts[split][label] >= 2, (split, label)
    per_class = {c: sum(counts[s][c] for s in SPLITS) for c in PHANTOM_CLASSES}
    for label, frac in zip(PHANTOM_CLASSES, SMALL.class_fractions):
        assert abs(per_class[label] / total - frac) < 0.03, (label, per_class)
    assert counts["train"]["normal"] > counts["val"]["normal"] > 0  # 70/15/15 split

    with Image.open(next((root / "val" / "benign").glob("phantom_*.png"))) as img:
        assert img.mode == "L" and img.size == (64, 64)
    readme = (root / "README.txt").read_text()
    assert "synthetic" in readme.lower() and "not patient data" in readme.lower()
    assert SMALL.fingerprint() in readme
    marker = json.loads((root / ".phantom.json").read_text())
    assert marker["fingerprint"] == SMALL.fingerprint()
    assert not [p for p in tmp_path.iterdir() if p.name != "phantoms"]  # temp folder gone

    # Second call: no rewrite (mtimes unchanged) and fast.
    png = next((root / "train" / "normal").glob("*.png"))
    before = (png.stat().st_mtime_ns, (root / ".phantom.json").stat().st_mtime_ns)
    t0 = time.perf_counter()
    write_phantom_dataset(str(root), SMALL)
    assert time.perf_counter() - t0 < 0.5
    assert (png.stat().st_mtime_ns, (root / ".phantom.json").stat().st_mtime_ns) == before


def test_write_dataset_is_byte_identical(tmp_path: Path) -> None:
    spec = PhantomSpec(n_images=30, image_size=48, seed=11)
    a = _files(write_phantom_dataset(tmp_path / "a", spec))
    b = _files(write_phantom_dataset(tmp_path / "b", spec))
    assert a == b
    c = _files(write_phantom_dataset(tmp_path / "c", PhantomSpec(n_images=30, image_size=48, seed=12)))
    assert {k: v for k, v in a.items() if k.endswith(".png")} != {
        k: v for k, v in c.items() if k.endswith(".png")}


def test_tiny_dataset_still_has_two_per_class_per_split(tmp_path: Path) -> None:
    root = write_phantom_dataset(tmp_path / "tiny", PhantomSpec(n_images=5, image_size=32))
    counts = _counts(root)
    assert all(counts[s][c] >= 2 for s in SPLITS for c in PHANTOM_CLASSES), counts


def test_stale_dataset_replaced_but_foreign_folder_refused(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    write_phantom_dataset(root, PhantomSpec(n_images=20, image_size=32, seed=1))
    new = PhantomSpec(n_images=24, image_size=32, seed=2)
    write_phantom_dataset(root, new)
    marker = json.loads((root / ".phantom.json").read_text())
    assert marker["fingerprint"] == new.fingerprint()
    n_files = sum(sum(c.values()) for c in _counts(root).values())
    assert n_files == marker["total"] > 24  # tiny classes topped up to 2 per split

    # An incomplete copy (a file went missing) is regenerated, not trusted.
    next(root.rglob("*.png")).unlink()
    write_phantom_dataset(root, new)
    assert sum(sum(c.values()) for c in _counts(root).values()) == n_files

    foreign = tmp_path / "user_data"
    foreign.mkdir()
    (foreign / "scan.png").write_bytes(b"not ours")
    with pytest.raises(FileExistsError):
        write_phantom_dataset(foreign, new)
    assert (foreign / "scan.png").read_bytes() == b"not ours"


def test_classes_are_learnable_but_not_trivial() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def data(n: int, part: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        x, darkest, y = [], [], []
        for i in range(n):
            # 64 px keeps the test fast; features are taken at 32x32 anyway.
            img = render_phantom(PHANTOM_CLASSES[i % 3], np.random.default_rng([123, part, i]), 64)
            small = np.asarray(Image.fromarray(img).resize((32, 32), Image.BILINEAR), float) / 255
            x.append(small.ravel())
            darkest.append(np.quantile(small[4:-4, 4:-4], 0.02))
            y.append(i % 3)
        return np.array(x), np.array(darkest), np.array(y)

    x_tr, dark_tr, y_tr = data(300, 0)
    x_te, _, y_te = data(150, 1)
    # Lesions are hypoechoic: the darkest tissue is darker than in normal images on average.
    assert dark_tr[y_tr == 1].mean() < dark_tr[y_tr == 0].mean()
    assert dark_tr[y_tr == 2].mean() < dark_tr[y_tr == 0].mean()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
    acc = model.fit(x_tr, y_tr).score(x_te, y_te)
    assert 0.5 < acc < 0.98, acc  # clearly above chance (1/3), but not solved by raw pixels
