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
    assert subfolder_splits(spec) == {} and subfolder_note(spec) is None
    # kept together anyway, the containers would keep every class in train: they are not patients, so nothing is
    kept = load_dataset(DataConfig(source=str(tmp_path / "d"), group_subfolders=True))
    assert {it.split for it in kept.items} == {"train", "val", "test"} and not kept.report.warnings
    assert "no subfolders to keep together: each class's images sit directly in its folder, or all in one" in \
        " ".join(kept.report.notes)


def test_a_container_class_beside_a_class_of_patients_is_split_by_image(tmp_path: Path):
    """Only the class whose images all sit in one folder is split image by image; the other keeps its patients."""
    root = tmp_path / "d"
    for i in range(12):
        write_image(root / "a" / "images" / f"{i}.png", 16, seed=i)
    for k in range(6):
        for i in range(3):
            write_image(root / "b" / f"p{k}" / f"{i}.png", 16, seed=100 + k * 10 + i)
    spec = load_dataset(DataConfig(source=str(root), group_subfolders=True))
    assert set(subfolder_splits(spec)) == {f"b/p{k}" for k in range(6)}
    assert all(len(splits) == 1 for splits in subfolder_splits(spec).values())
    assert {it.split for it in spec.items if "/a/" in it.path} == {"train", "val", "test"}


def test_keeping_subfolders_in_one_split_keeps_each_patient_whole(tmp_path: Path):
    root = _patients(tmp_path / "d", per_class=6, images=4)
    spec = load_dataset(DataConfig(source=str(root), group_subfolders=True))
    assert all(len(splits) == 1 for splits in subfolder_splits(spec).values()) and subfolder_note(spec) is None
    assert {it.split for it in spec.items} == {"train", "val", "test"}   # 6 patients a class: all three splits
    assert "each subfolder's images kept in the same split (48 images in 12 subfolder(s))" in \
        " ".join(spec.report.notes)
    flat = load_dataset(DataConfig(source=str(write_class_folders(tmp_path / "flat", {"a": 6, "b": 6})),
                                   group_subfolders=True))
    assert "no subfolders to keep together: each class's images sit directly in its folder" in " ".join(flat.report.notes)
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
    labels = [0 if "/benign/" in path else 1 for path in paths]
    grouping = split_groups(DataConfig(source=str(root), group_subfolders=True, group_duplicates=True), paths,
                            labels, str(root), "class_folders")
    group_of = dict(zip(paths, grouping.groups.tolist()))
    assert grouping.kinds == ("subfolders", "near-duplicates")
    assert group_of[str(root / "benign" / "patient00" / "img1.png")] == \
        group_of[str(root / "benign" / "patient02" / "img2.png")]   # joined through the copy
    assert group_of[str(root / "benign" / "patient01" / "img0.png")] != \
        group_of[str(root / "benign" / "patient00" / "img0.png")]


# --- manifests: the folders their paths name ------------------------------------------------------------------

def _patient_manifest(root: Path, nested: bool, split_column: bool = True) -> Path:
    """root/split.csv naming p<k>/img<i>.png (or <class>/p<k>/img<i>.png), five patients a class, and a given
    split that puts patient 0 of each class in train and in test."""
    lines = ["path,label,split" if split_column else "path,label"]
    for c, name in enumerate(("benign", "malignant")):
        for k in range(5):
            for i in range(4):
                rel = f"{name}/p{c}{k}/img{i}.png" if nested else f"p{c}{k}/img{i}.png"
                write_image(root / rel, 16, seed=c * 100 + k * 10 + i)
                split = "test" if (k == 0 and i == 3) or k == 4 else "val" if k == 3 else "train"
                lines.append(f"{rel},{name},{split}" if split_column else f"{rel},{name}")
    (root / "split.csv").write_text("\n".join(lines) + "\n")
    return root


def test_a_manifests_patient_folders_cut_by_its_split_are_named(tmp_path: Path):
    for nested in (False, True):
        root = _patient_manifest(tmp_path / f"m{nested}", nested)
        spec = load_dataset(DataConfig(source=str(root)))
        assert spec.layout == "manifest" and len(subfolder_splits(spec)) == 10
        first = "benign/p00" if nested else "p00"
        note = subfolder_note(spec)
        assert note.startswith("The images sit in 10 folder(s) that the manifest's paths name (one per "
                               "patient or study, perhaps), and the split puts the images of 2 of them in more than one split "
                               f"(such as {first}: train and test)")
        # the .csv itself as the source reads the same folders
        assert subfolder_splits(load_dataset(DataConfig(source=str(root / "split.csv")))) == subfolder_splits(spec)


def test_a_manifest_of_class_folders_has_no_patients(tmp_path: Path):
    """BUSI's split.csv names benign/benign (1).png: one folder a class, a container."""
    root = tmp_path / "m"
    lines = ["path,label,split"]
    for name in ("benign", "malignant"):
        for i in range(10):
            write_image(root / name / f"{name} ({i}).png", 16, seed=i)
            lines.append(f"{name}/{name} ({i}).png,{name},{('train', 'val', 'test')[i % 3]}")
    (root / "split.csv").write_text("\n".join(lines) + "\n")
    spec = load_dataset(DataConfig(source=str(root)))
    assert subfolder_splits(spec) == {} and subfolder_note(spec) is None


def test_keeping_a_manifests_patient_folders_together(tmp_path: Path):
    root = _patient_manifest(tmp_path / "m", nested=False, split_column=False)
    spec = load_dataset(DataConfig(source=str(root), group_subfolders=True))
    assert {it.split for it in spec.items} == {"train", "val", "test"}
    assert all(len(splits) == 1 for splits in subfolder_splits(spec).values()) and subfolder_note(spec) is None
    assert "each subfolder's images kept in the same split (40 images in 10 subfolder(s))" in \
        " ".join(spec.report.notes)
    # its own split set aside ('Make my own split'): the given split's cut patients are whole again
    own = load_dataset(DataConfig(source=str(_patient_manifest(tmp_path / "g", nested=True)), group_subfolders=True,
                                  own_split=True))
    assert subfolder_note(own) is None and all(len(s) == 1 for s in subfolder_splits(own).values())
