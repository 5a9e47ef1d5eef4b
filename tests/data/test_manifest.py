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
        lines.append(f"HAM_{i % 18:07d},ISIC_{i:07d},{dx},histo,50.0,male,back")  # 2 images a lesion
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    return root


def test_hams_table_gives_its_classes_and_finds_images_named_without_their_extension(ham):
    spec = _load(ham / "HAM10000_metadata.csv")
    assert spec.classes == ["bkl", "mel", "nv"] and len(spec.items) == 36 and not spec.report.skipped
    assert {it.path.rsplit("/", 2)[-2] for it in spec.items} == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert any("paths from 'image_id', classes from 'dx', patients from 'lesion_id'" in n for n in spec.report.notes)
    assert "Images named without their file extension (36 of its rows): each was matched to the one image of " \
           "that name below ham/." in spec.report.notes


def test_a_patient_column_is_kept_in_one_split_as_a_patients_folder_is(ham):
    # HAM10000 has two or more images of many lesions: split by image, a lesion lands in train and in test.
    spec = _load(ham / "HAM10000_metadata.csv")
    assert spec.group_column == "lesion_id" and len(set(spec.group_of.values())) == 18
    note = subfolder_note(spec)
    assert note.startswith("The manifest's column 'lesion_id' says whose each image is (18 lesion_id values: a "
                           "patient's, a study's or a lesion's), and the split puts the images of ")
    assert ": train and test)" in note  # the example is one that reaches the test images
    assert "to keep each lesion_id's images together" in note  # not the two folders found by name
    kept = load_dataset(DataConfig(source=str(ham / "HAM10000_metadata.csv"), group_subfolders=True))
    splits_of = {}
    for item in kept.items:
        splits_of.setdefault(kept.group_of[item.path], set()).add(item.split)
    assert all(len(s) == 1 for s in splits_of.values()) and subfolder_note(kept) is None
    assert any("each lesion_id's images kept in the same split (36 images of 18 lesion_id values)" in n
               for n in kept.report.notes)


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


def test_isic_2020s_and_aptos_tables_read_their_own_column_names(tmp_path, synth):
    # ISIC 2020: benign_malignant over target (the same as 0/1) and diagnosis (mostly 'unknown'); patient_id over
    # lesion_id (a patient's lesions belong in one split too).
    isic = tmp_path / "isic2020"
    lines = ["image_name,patient_id,lesion_id,sex,age_approx,anatom_site_general_challenge,diagnosis,"
             "benign_malignant,target"]
    for i in range(24):
        synth.image(isic / "train" / f"ISIC_{i:07d}.jpg", 24, seed=i)
        kind = "malignant" if i % 4 == 0 else "benign"
        lines.append(f"ISIC_{i:07d},IP_{i // 3},IL_{i},male,45,torso,unknown,{kind},{int(kind == 'malignant')}")
    (isic / "train.csv").write_text("\n".join(lines) + "\n")
    spec = _load(isic / "train.csv")
    assert spec.classes == ["benign", "malignant"] and spec.group_column == "patient_id"
    assert any("paths from 'image_name', classes from 'benign_malignant', patients from 'patient_id'" in n
               for n in spec.report.notes)
    # APTOS 2019 (Kaggle): id_code and diagnosis (grades 0-4), images in train_images/ as .png.
    aptos = tmp_path / "aptos"
    lines = ["id_code,diagnosis"]
    for i in range(20):
        synth.image(aptos / "train_images" / f"{i:04x}abc.png", 24, seed=i)
        lines.append(f"{i:04x}abc,{i % 5}")
    (aptos / "train.csv").write_text("\n".join(lines) + "\n")
    spec = _load(aptos / "train.csv")
    assert spec.classes == ["0", "1", "2", "3", "4"] and len(spec.items) == 20 and not spec.report.skipped
