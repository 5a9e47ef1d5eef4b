"""DICOM files read as a viewer shows them: rescale, the file's window, MONOCHROME1 inverted, one frame only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from dicom_files import write_dicom  # noqa: E402

from medcls.config import DataConfig  # noqa: E402
from medcls.data import load_dataset  # noqa: E402
from medcls.data.explore import image_properties  # noqa: E402
from medcls.data.imageio import ImageReadError, decode_resized, header_size, open_image, read_image  # noqa: E402


def _ramp(height: int = 40, width: int = 50) -> np.ndarray:
    """12-bit values rising left to right, 0 .. 4000."""
    return np.tile(np.linspace(0, 4000, width), (height, 1)).round().astype(np.uint16)


def test_a_ct_window_is_applied_as_a_viewer_does(tmp_path):
    # Stored 0..4000 with intercept -1024: -1024..2976 Hounsfield units; a soft-tissue window 40 +- 200.
    path = write_dicom(tmp_path / "ct.dcm", _ramp(), intercept=-1024, window=(40, 400))
    gray = read_image(str(path), "gray")
    hu = _ramp().astype(float) - 1024
    assert gray.shape == (40, 50) and gray.dtype == np.uint8
    assert (gray[hu <= -161] == 0).all() and (gray[hu >= 241] == 255).all()  # outside the window: black, white
    inside = (hu > -150) & (hu < 230)
    expected = np.clip((hu - 39.5) / 399 + 0.5, 0, 1) * 255
    assert np.abs(gray[inside].astype(float) - expected[inside]).max() <= 1
    assert header_size(path) == (50, 40, "DICOM MONOCHROME2")
    assert header_size(path.read_bytes()) == (50, 40, "DICOM MONOCHROME2")  # an upload's bytes


def test_monochrome1_is_inverted_and_an_unwindowed_image_is_stretched(tmp_path):
    plain = read_image(str(write_dicom(tmp_path / "m2.dcm", _ramp())), "gray")
    inverted = read_image(str(write_dicom(tmp_path / "m1.dcm", _ramp(), photometric="MONOCHROME1")), "gray")
    assert plain[:, 0].max() < 10 and plain[:, -1].min() > 245  # the used range stretched to 0..255
    assert inverted[:, 0].min() > 245 and inverted[:, -1].max() < 10  # lowest value shown white
    assert np.abs(plain.astype(int) + inverted.astype(int) - 255).max() <= 1


def test_colour_dicom_decodes_to_rgb_and_bytes_match_files(tmp_path):
    rgb = np.zeros((30, 20, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 200, 50
    path = write_dicom(tmp_path / "photo.dcm", rgb)
    assert np.array_equal(read_image(str(path), "rgb"), rgb)
    # Try it's upload (bytes) and a dataset's file give the model the same pixels.
    assert np.array_equal(decode_resized(path.read_bytes(), 16, "rgb"), decode_resized(str(path), 16, "rgb"))


def test_files_that_are_not_one_image_are_refused_with_the_reason(tmp_path):
    cine = write_dicom(tmp_path / "cine.dcm", _ramp(), frames=3)
    with pytest.raises(ImageReadError, match="a DICOM with 3 frames") as err:
        open_image(cine)
    assert err.value.kind == "not_image"
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\0" * 200)
    with pytest.raises(ImageReadError, match="not a DICOM file"):
        open_image(fake)
    whole = write_dicom(tmp_path / "whole.dcm", _ramp()).read_bytes()
    with pytest.raises(ImageReadError, match="pixel data is damaged or truncated"):  # not "install a decoder"
        open_image(whole[:-1000])


def test_a_folder_of_dicom_files_is_a_dataset(tmp_path):
    root = tmp_path / "scans"
    rng = np.random.default_rng(0)
    for label, level in (("normal", 800), ("abnormal", 3000)):
        for i in range(6):
            pixels = np.clip(rng.normal(level, 200, (24, 24)), 0, 4095).astype(np.uint16)
            name = f"IM{i:06d}" if i < 3 else f"{label}_{i}.dcm"  # exports often have no extension at all
            write_dicom(root / label / name, pixels, window=(2000, 4000))
    write_dicom(root / "normal" / "volume.dcm", _ramp(), frames=2)
    (root / "normal" / "notes").write_text("not an image")
    spec = load_dataset(DataConfig(source=str(root)))
    assert spec.classes == ["abnormal", "normal"] and len(spec.items) == 12
    skipped = {Path(s.path).name: s.reason for s in spec.report.skipped}
    assert "a DICOM with 2 frames" in skipped["volume.dcm"] and "not an image file type" in skipped["notes"]
    assert {r["mode"] for r in image_properties(spec)} == {"DICOM MONOCHROME2"}
    bright = [decode_resized(it.path, 16, "gray").mean() for it in spec.items if spec.classes[it.label] == "abnormal"]
    dark = [decode_resized(it.path, 16, "gray").mean() for it in spec.items if spec.classes[it.label] == "normal"]
    assert min(bright) > max(dark) + 50  # the window keeps the classes' brightness apart (no per-image stretch)
