"""Manifests as public datasets ship them: HAM10000's metadata, ISIC's one-column-per-class table."""

import pytest

from medcls.config import DataConfig
from medcls.data.sources import load_dataset
from medcls.data.subfolders import subfolder_note


def _load(source):
    return load_dataset(DataConfig(source=str(source)))


@pytest.fixture
def ham(tmp_path, synth):
    """HAM10000's layout: images in two folders that are not classes, the classes in a table that names each
    image without its extension (``image_id``) and its class as ``dx``."""
    root = tmp_path / "ham"
    lines = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for i in range(36):
        dx = ("nv", "mel", "bkl")[i % 3]
        synth.image(root / f"HAM10000_images_part_{1 + i % 2}" / f"ISIC_{i:07d}.jpg", 24, seed=i,
                    level=60 + 50 * (i % 3))
        lines.append(f"HAM_{i // 2:07d},ISIC_{i:07d},{dx},histo,50.0,male,back")
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_hams_table_gives_its_classes_and_finds_images_named_without_their_extension(ham):
    spec = _load(ham / "HAM10000_metadata.csv")
    assert spec.classes == ["bkl", "mel", "nv"] and len(spec.items) == 36 and not spec.report.skipped
    assert {it.path.rsplit("/", 2)[-2] for it in spec.items} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert any("paths from 'image_id', classes from 'dx'" in n for n in spec.report.notes)
    assert "Images named without their file extension (36 of its rows): each was matched to the one image of " \
           "that name below ham/." in spec.report.notes
    # The two folders it found them in are no patients': no note offers to keep them in one split.
    assert subfolder_note(spec) is None


def test_the_folder_says_that_its_table_holds_the_classes_its_subfolders_do_not(ham):
    # Read as class folders, the two image folders would be the classes: the report says where the classes are.
    spec = _load(ham)
    assert spec.classes == ["HAM10000_images_part_1", "HAM10000_images_part_2"]
    warning = next(w for w in spec.report.warnings if "HAM10000_metadata.csv" in w)
    assert "paths from 'image_id', classes from 'dx'" in warning and "give the .csv itself" in warning


def test_an_image_name_that_matches_two_files_is_skipped_with_both_named(ham, synth):
    synth.image(ham / "extra" / "ISIC_0000003.png", 24)
    spec = _load(ham / "HAM10000_metadata.csv")
    skipped = {s.path: s.reason for s in spec.report.skipped}
    assert len(spec.items) == 35
    reason = skipped["ISIC_0000003 (HAM10000_metadata.csv line 5)"]
    assert reason.startswith("2 images are named ISIC_0000003.*") and "extra/ISIC_0000003.png" in reason


def test_one_column_per_class_reads_the_class_holding_1(tmp_path, synth):
    # ISIC 2019's ground truth: one column per class, 1.0 in the image's class; UNK never holds one.
    root = tmp_path / "isic"
    lines = ["image,MEL,NV,BCC,UNK"]
    for i in range(30):
        synth.image(root / f"ISIC_{i:07d}.jpg", 24, seed=i)
        lines.append(f"ISIC_{i:07d}," + ",".join("1.0" if i % 3 == k else "0.0" for k in range(3)) + ",0.0")
    (root / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(lines) + "\n")
    spec = _load(root / "ISIC_2019_Training_GroundTruth.csv")
    assert spec.classes == ["BCC", "MEL", "NV"] and len(spec.items) == 30
    assert sum(1 for it in spec.items if spec.classes[it.label] == "MEL") == 10
    assert any("classes from one column each (MEL, NV, BCC, UNK)" in n for n in spec.report.notes)
    # A row with two classes marked is not one image's class: the table is not read as one column per class.
    (root / "ISIC_2019_Training_GroundTruth.csv").write_text("\n".join(lines + ["ISIC_0000000,1.0,1.0,0.0,0.0"]))
    with pytest.raises(Exception, match="needs columns 'path' and 'label'"):
        _load(root / "ISIC_2019_Training_GroundTruth.csv")
