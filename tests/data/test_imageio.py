"""Defensive decoding: every Pillow mode to 8-bit gray/RGB, clear errors for broken files."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from medcls.data.imageio import (
    ImageReadError,
    decode_resized,
    header_size,
    is_grayscale,
    is_image_name,
    is_mask_name,
    open_image,
    read_image,
    resize_square,
    to_uint8,
)

MODES = ["L", "RGB", "RGBA", "P", "I;16", "CMYK", "LA", "1", "F"]


def _image(mode: str, size=(20, 16)) -> Image.Image:
    gray = (np.linspace(0, 255, size[0] * size[1]).reshape(size[1], size[0])).astype(np.uint8)
    if mode == "I;16":
        return Image.fromarray(gray.astype("<u2") * 257)
    if mode == "F":
        return Image.fromarray(gray.astype(np.float32) / 255.0, "F")
    return Image.fromarray(gray, "L").convert(mode)


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_decodes_to_a_consistent_channel_layout(mode):
    img = _image(mode)
    assert img.mode == mode
    gray = to_uint8(img, "gray")
    rgb = to_uint8(img, "rgb")
    assert gray.dtype == np.uint8 and gray.shape == (16, 20)
    assert rgb.dtype == np.uint8 and rgb.shape == (16, 20, 3)
    if mode not in ("1",):  # 1-bit images only have two levels
        assert gray.max() - gray.min() > 200  # the gradient survives (high bit depth is stretched, not clipped)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "CMYK"])
def test_modes_round_trip_through_files(tmp_path, mode):
    suffix = ".jpg" if mode == "CMYK" else ".tif" if mode == "I;16" else ".png"
    path = tmp_path / f"img_{mode.replace(';', '')}{suffix}"
    _image(mode).save(path)
    arr = decode_resized(str(path), 12, "rgb")
    assert arr.shape == (3, 12, 12) and arr.dtype == np.uint8
    assert decode_resized(str(path), 12, "gray").shape == (1, 12, 12)


def test_webp_files_decode_to_their_pixels(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (24, 24, 3), dtype=np.uint8)
    path = tmp_path / "scan.webp"
    Image.fromarray(pixels).save(path, lossless=True)
    assert is_image_name(path.name)
    assert np.array_equal(decode_resized(str(path), 24, "rgb"), pixels.transpose(2, 0, 1))


def test_sixteen_bit_images_are_stretched_to_the_full_8_bit_range():
    small_range = Image.fromarray(np.arange(100, dtype="<u2").reshape(10, 10) + 1000)
    arr = to_uint8(small_range, "gray")
    assert arr.min() == 0 and arr.max() == 255


def test_transparent_pixels_become_black():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[:2, :, 3] = 255  # top half opaque white, bottom half transparent white
    arr = to_uint8(Image.fromarray(rgba, "RGBA"), "gray")
    assert (arr[:2] == 255).all() and (arr[2:] == 0).all()


def test_open_image_accepts_bytes_and_paths(tmp_path):
    buf = io.BytesIO()
    _image("L").save(buf, format="PNG")
    path = tmp_path / "x.png"
    path.write_bytes(buf.getvalue())
    from_bytes = np.asarray(open_image(buf.getvalue()))
    from_path = np.asarray(open_image(path))
    assert np.array_equal(from_bytes, from_path)


def test_exif_rotation_is_applied(tmp_path):
    img = Image.fromarray(np.zeros((10, 30, 3), np.uint8), "RGB")  # 30 wide, 10 tall
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif.tobytes())
    assert open_image(path).size == (10, 30)
    # The header's size is the size decoded (the Data explorer's shapes, Try it's caption), not the stored one.
    assert header_size(path) == (10, 30, "RGB") and header_size(path.read_bytes()) == (10, 30, "RGB")
    exif[0x0112] = 3  # a half turn keeps the shape
    img.save(path, exif=exif.tobytes())
    assert header_size(path) == (30, 10, "RGB") == open_image(path).size + ("RGB",)


def _truncated_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()[: len(buf.getvalue()) // 2]


@pytest.mark.parametrize("content, reason", [
    (b"", "empty (0 bytes)"),
    (b"this is a text file, not a jpeg\n", "not an image"),
    (None, "corrupt or truncated"),
])
def test_broken_files_raise_image_read_error_naming_file_and_reason(tmp_path, content, reason):
    path = tmp_path / "broken scan (1).jpg"
    path.write_bytes(_truncated_png() if content is None else content)
    with pytest.raises(ImageReadError) as info:
        open_image(path)
    assert reason in info.value.reason
    assert str(path) in str(info.value) and info.value.name == str(path)
    with pytest.raises(ImageReadError):
        open_image(path.read_bytes(), name="upload.jpg")


def test_missing_tiny_and_bomb_images_are_refused(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        open_image(tmp_path / "nope.png")
    tiny = tmp_path / "tiny.png"
    Image.new("L", (1, 1)).save(tiny)
    with pytest.raises(ImageReadError, match="only 1x1"):
        open_image(tiny)
    big = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(big)
    with pytest.raises(ImageReadError, match=r"too large: 0\.01 megapixels \(limit 0\.005\)") as info:
        open_image(big, max_pixels=5000)
    assert info.value.kind == "too_large"
    assert open_image(big).size == (100, 100)


def test_names_extensions_and_masks():
    for name in ["a.png", "B.PNG", "c.Jpg", "d.jpeg", "e.BMP", "f.tif", "g.TIFF", "h.webp", "benign (3).png"]:
        assert is_image_name(name), name
    for name in ["a.txt", "b.gif", "c", "d.png.bak"]:
        assert not is_image_name(name), name
    assert is_mask_name("benign (3)_mask.png") and is_mask_name("x_MASK_1.png")
    assert not is_mask_name("benign (3).png")


def test_resize_and_decode_resized_layouts():
    arr = np.zeros((10, 20, 3), np.uint8)
    assert resize_square(arr, 8).shape == (8, 8, 3)
    same = np.ones((8, 8), np.uint8)
    assert resize_square(same, 8) is same



def _large_jpeg(path, rotate_exif: bool = False) -> np.ndarray:
    """A smooth 640 x 480 colour JPEG (an X-ray or photo far larger than the model's input); its full decode."""
    y, x = np.mgrid[0:480, 0:640]
    rgb = np.stack([(x * 255 // 639), (y * 255 // 479), ((x + y) * 255 // 1118)], axis=-1).astype(np.uint8)
    exif = Image.Exif()
    if rotate_exif:
        exif[0x0112] = 6
    Image.fromarray(rgb).save(path, quality=95, exif=exif.tobytes())
    return np.asarray(open_image(path))


@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_a_large_jpeg_decodes_reduced_to_what_the_model_needs(tmp_path, color):
    path = tmp_path / "large.jpg"
    _large_jpeg(path)
    reduced = open_image(path, at_least=100, color=color)
    assert reduced.size == (160, 120)  # 1/4 scale: the smallest whose sides stay >= 100 (1/8 would be 80 x 60)
    assert reduced.mode == ("L" if color == "gray" else "RGB")
    assert open_image(path).size == (640, 480) and open_image(path, at_least=480).size == (640, 480)
    # What the model sees hardly differs from shrinking the whole image (mean under 2 of 255 levels).
    whole = resize_square(to_uint8(open_image(path), color), 50)
    fast = decode_resized(str(path), 50, color)
    assert fast.shape == ((1, 50, 50) if color == "gray" else (3, 50, 50))
    fast = fast[0] if color == "gray" else fast.transpose(1, 2, 0)
    assert np.abs(fast.astype(float) - whole).mean() < 2


def test_reduced_decoding_keeps_the_exif_rotation_and_other_formats_whole(tmp_path):
    _large_jpeg(tmp_path / "phone.jpg", rotate_exif=True)
    assert open_image(tmp_path / "phone.jpg", at_least=100).size == (120, 160)  # turned upright after reducing
    Image.fromarray(np.zeros((480, 640), np.uint8)).save(tmp_path / "scan.png")
    assert open_image(tmp_path / "scan.png", at_least=100).size == (640, 480)


def test_uploads_and_files_decode_to_the_same_pixels(tmp_path):
    """Try it (bytes) and training (a file) must show the model the same pixels for the same JPEG."""
    path = tmp_path / "large.jpg"
    _large_jpeg(path)
    for color in ("gray", "rgb"):
        assert np.array_equal(decode_resized(path.read_bytes(), 64, color), decode_resized(str(path), 64, color))


def test_is_grayscale_tolerates_noise_but_not_colour():
    gray = np.repeat(np.random.default_rng(0).integers(0, 255, (32, 32, 1), dtype=np.uint8), 3, axis=2)
    assert is_grayscale(gray)
    noisy = gray.astype(np.int16)
    noisy[..., 0] += 3  # JPEG-like channel wobble within tolerance
    assert is_grayscale(np.clip(noisy, 0, 255).astype(np.uint8))
    colourful = gray.copy()
    colourful[..., 0] = 255
    colourful[..., 2] = 0
    assert not is_grayscale(colourful)
    assert is_grayscale(gray[..., 0])


def test_npz_members_decode_including_float_images(tmp_path):
    path = tmp_path / "toy.npz"
    images = np.random.default_rng(0).random((3, 28, 28)).astype(np.float32)  # 0..1 floats
    np.savez(path, train_images=images, train_labels=np.zeros((3, 1)))
    arr = read_image(f"{path}::train/1", "gray")
    assert arr.dtype == np.uint8 and arr.shape == (28, 28)
    assert np.array_equal(arr, np.round(images[1].astype(np.float64) * 255).astype(np.uint8))  # rounded
    assert decode_resized(f"{path}::train/2", 16, "rgb").shape == (3, 16, 16)
