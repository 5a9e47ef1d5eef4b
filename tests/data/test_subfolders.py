"""Subfolders below class folders (patients, studies) and a split that cuts across them."""

from pathlib import Path

from medcls.config import DataConfig
from medcls.data.sources import load_dataset
from medcls.data.subfolders import subfolder_note, subfolder_splits
from tests.conftest import write_class_folders, write_image


def _patients(root: Path, per_class: int = 4, images: int = 5) -> Path:
    """root/<class>/patient<k>/img<i>.png: several images of each patient."""
    for c, name in enumerate(("benign", "malignant")):
        for k in range(per_class):
            for i in range(images):
                write_image(root / name / f"patient{c}{k}" / f"img{i}.png", 16, seed=c * 100 + k * 10 + i)
    return root


def test_a_split_that_puts_a_patient_folder_in_two_splits_is_named(tmp_path: Path):
    spec = load_dataset(DataConfig(source=str(_patients(tmp_path / "d"))))
    folders = subfolder_splits(spec)
    assert len(folders) == 8 and all(name.count("/") == 1 for name in folders)  # 'benign/patient00', ...
    cut = [name for name, splits in folders.items() if len(splits) > 1]
    assert cut   # 40 images split by image: some patient's images land in two splits
    note = subfolder_note(spec)
    assert note.startswith(f"The images sit in 8 subfolder(s) below their class folders (one per patient or study, "
                           f"perhaps), and the split puts the images of {len(cut)} of them in more than one split "
                           f"(such as {sorted(cut)[0]}: ")
    assert "Tick 'Keep subfolders in one split' (--group-subfolders" in note


def test_images_directly_in_their_class_folders_get_no_note(tmp_path: Path):
    spec = load_dataset(DataConfig(source=str(write_class_folders(tmp_path / "flat", {"a": 10, "b": 10}))))
    assert subfolder_splits(spec) == {} and subfolder_note(spec) is None


def test_split_folders_holding_whole_patients_get_no_note_and_one_patient_in_two_do(tmp_path: Path):
    root = tmp_path / "s"
    for split, patients in (("train", ("p1", "p2")), ("val", ("p3",)), ("test", ("p4",))):
        for name in ("benign", "malignant"):
            for patient in patients:
                for i in range(3):
                    write_image(root / split / name / patient / f"{i}.png", 16, seed=i)
    assert subfolder_note(load_dataset(DataConfig(source=str(root)))) is None
    write_image(root / "test" / "benign" / "p1" / "9.png", 16, seed=9)   # p1 is in train too
    note = subfolder_note(load_dataset(DataConfig(source=str(root))))
    assert "the images of 1 of them in more than one split (such as benign/p1: train and test)" in note


def test_one_subfolder_a_class_is_a_container_not_patients(tmp_path: Path):
    for name in ("a", "b"):
        for i in range(10):
            write_image(tmp_path / "d" / name / "images" / f"{i}.png", 16, seed=i)
    spec = load_dataset(DataConfig(source=str(tmp_path / "d")))
    assert len(subfolder_splits(spec)) == 2 and subfolder_note(spec) is None


def test_keeping_subfolders_in_one_split_keeps_each_patient_whole(tmp_path: Path):
    root = _patients(tmp_path / "d", per_class=6, images=4)
    spec = load_dataset(DataConfig(source=str(root), group_subfolders=True))
    assert all(len(splits) == 1 for splits in subfolder_splits(spec).values()) and subfolder_note(spec) is None
    assert {it.split for it in spec.items} == {"train", "val", "test"}   # 6 patients a class: all three splits
    assert "each subfolder's images kept in the same split (48 images in 12 subfolder(s))" in \
        " ".join(spec.report.notes)
    flat = load_dataset(DataConfig(source=str(write_class_folders(tmp_path / "flat", {"a": 6, "b": 6})),
                                   group_subfolders=True))
    assert "no image is in a subfolder below its class folder" in " ".join(flat.report.notes)
    # two patient folders a class are too few groups to split: the class stays in train, and the report says why
    few = load_dataset(DataConfig(source=str(_patients(tmp_path / "few", per_class=2)), group_subfolders=True))
    assert {it.split for it in few.items} == {"train"}
    assert any("cannot be split with subfolders kept together: its 10 images form 2 group(s) of subfolders" in w
               for w in few.report.warnings)


def test_subfolders_and_near_copies_kept_together_join_into_one_group(tmp_path: Path):
    """A patient folder and a copy of one of its images filed elsewhere end up in one split."""
    import shutil

    from medcls.data.splits import split_groups
    root = _patients(tmp_path / "d", per_class=3, images=3)
    shutil.copy(root / "benign" / "patient00" / "img0.png", root / "benign" / "patient02" / "copy.png")
    paths = sorted(str(p) for p in root.rglob("*.png"))
    grouping = split_groups(DataConfig(source=str(root), group_subfolders=True, group_duplicates=True), paths,
                            str(root), "class_folders")
    group_of = dict(zip(paths, grouping.groups.tolist()))
    assert grouping.kinds == ("subfolders", "near-duplicates")
    assert group_of[str(root / "benign" / "patient00" / "img1.png")] == \
        group_of[str(root / "benign" / "patient02" / "img2.png")]   # joined through the copy
    assert group_of[str(root / "benign" / "patient01" / "img0.png")] != \
        group_of[str(root / "benign" / "patient00" / "img0.png")]
