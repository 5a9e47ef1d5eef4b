"""How images are stored: the stretch of high bit-depth images, and classes whose files were made differently."""

from pathlib import Path

import numpy as np
from PIL import Image

from medcls.config import DataConfig
from medcls.data.explore import image_properties
from medcls.data.imageio import decode_resized, file_format
from medcls.data.sources import load_dataset
from medcls.data.storage import high_bit_note, stored_by_class_note
from tests.conftest import write_class_folders


def _rows(**per_class: list[tuple[str, str]]) -> list[dict]:
    """image_properties-like rows: per class, (format, mode) of each image."""
    return [{"width": 64, "height": 64, "class": name, "format": fmt, "mode": mode}
            for name, kinds in per_class.items() for fmt, mode in kinds]


def test_file_format_names_the_kind_of_file():
    assert file_format("/d/a/x.JPG") == "JPEG" == file_format("y.jpeg")
    assert file_format("z.tiff") == "TIFF" == file_format("z.tif")
    assert file_format("s.png") == "PNG" and file_format("scan.dcm") == "DICOM" and file_format("noext") == "no suffix"
    assert file_format("/d/blood.npz::train/3") == "npz array"


def test_high_bit_images_are_said_to_be_stretched_each_by_its_own_range():
    mixed = _rows(a=[("PNG", "I;16")] * 3 + [("PNG", "L")] * 7)
    note = high_bit_note(mixed)
    assert note.startswith("3 of the 10 images hold more than 8 bits a value (16-bit gray).")
    assert "not on one scale" in note and "0.5th to 99.5th percentile" in note
    every = high_bit_note(_rows(a=[("TIFF", "F")] * 4), of=900)
    assert every.startswith("All 4 images sampled from 900 hold more than 8 bits a value (32-bit float).")
    assert "overall brightness or contrast between images does not reach the model" in every
    assert high_bit_note(_rows(a=[("PNG", "L")] * 5)) is None


def test_what_the_note_says_of_the_stretch_holds(tmp_path: Path):
    """Two 16-bit images, one four times as bright, reach the network with the same levels."""
    dim = np.random.default_rng(0).integers(500, 8000, (32, 32)).astype("<u2")
    Image.fromarray(dim).save(tmp_path / "dim.png")
    Image.fromarray(dim * 4).save(tmp_path / "bright.png")
    a, b = (decode_resized(str(tmp_path / name), 32, "gray") for name in ("dim.png", "bright.png"))
    assert a.max() == 255 and np.array_equal(a, b)


def test_a_class_whose_files_were_made_differently_is_named():
    note = stored_by_class_note(_rows(benign=[("PNG", "L")] * 20, malignant=[("JPEG", "L")] * 9 + [("PNG", "L")],
                                      normal=[("PNG", "L")] * 10))
    assert note.startswith("The classes' files were made differently: 90% of the malignant images are JPEG files, "
                           "against 0% of the other classes' images.")
    assert "Check that every class comes from the same sources" in note
    by_mode = stored_by_class_note(_rows(a=[("PNG", "RGB")] * 8, b=[("PNG", "L")] * 8, c=[("PNG", "L")] * 8))
    assert "100% of the a images are RGB colour, against 0% of the other classes' images." in by_mode
    both = stored_by_class_note(_rows(a=[("PNG", "L")] * 8, b=[("JPEG", "L")] * 8, c=[("PNG", "I;16")] * 8))
    assert "100% of the b images are JPEG files, against 0% of the other classes' images; 100% of the c images " \
           "are 16-bit gray, against 0% of the other classes' images." in both   # each class that stands out
    sized = [{**r, "width": 500, "height": 400} if r["class"] == "c" else r
             for r in _rows(a=[("PNG", "L")] * 8, b=[("PNG", "L")] * 8, c=[("PNG", "L")] * 8)]
    assert "100% of the c images are 500 × 400 px, against 0% of the other classes' images" in \
        stored_by_class_note(sized)   # another scanner's resolution: a shortcut too
    two = stored_by_class_note(_rows(a=[("PNG", "L")] * 8, b=[("JPEG", "L")] * 8))
    assert two.count(" images are ") == 1   # of two classes, the second's difference is the first's mirror image


def test_classes_stored_alike_or_too_few_to_judge_get_no_warning():
    alike = _rows(a=[("PNG", "L"), ("JPEG", "RGB")] * 6, b=[("JPEG", "RGB"), ("PNG", "L")] * 6)
    assert stored_by_class_note(alike) is None
    assert stored_by_class_note(_rows(a=[("JPEG", "L")] * 3, b=[("PNG", "L")] * 30)) is None  # 3 images: too few
    assert stored_by_class_note([]) is None


def test_image_properties_carry_each_images_class_and_format(tmp_path: Path):
    root = write_class_folders(tmp_path / "d", {"cat": 6}, suffix=".jpg")
    write_class_folders(root, {"dog": 6})
    spec = load_dataset(DataConfig(source=str(root)))
    rows = image_properties(spec)
    assert {(r["class"], r["format"]) for r in rows} == {("cat", "JPEG"), ("dog", "PNG")}
    assert "100% of the cat images are JPEG files" in stored_by_class_note(rows) or \
        "100% of the dog images are PNG files" in stored_by_class_note(rows)
