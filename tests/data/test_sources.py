"""Dataset discovery: split folders, class folders, manifests, MedMNIST .npz, odd files."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from medcls.config import DataConfig
from medcls.data import DataError, decode_dataset, detect_layout, load_dataset
from medcls.settings import PathNotAllowedError


def _load(source, **kw):
    return load_dataset(DataConfig(source=str(source), **kw))


def _per_split_class(spec):
    return {split: dict(counts) for split, counts in spec.counts().items()}


def _truncated_png(size=48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (size, size), dtype=np.uint8)).save(buf, format="PNG")
    data = buf.getvalue()
    return data[: len(data) * 2 // 3]


# --- split folders -------------------------------------------------------------

def test_split_folders_keep_their_splits(split_dataset):
    spec = _load(split_dataset)
    assert spec.layout == "split_folders" and detect_layout(split_dataset) == "split_folders"
    assert spec.classes == ["benign", "malignant", "normal"]
    counts = _per_split_class(spec)
    assert counts["train"] == {"benign": 10, "malignant": 10, "normal": 10}
    assert counts["val"] == counts["test"] == {"benign": 3, "malignant": 3, "normal": 3}
    for it in spec.items:  # the folder decides the split and the class
        assert f"/{it.split}/{spec.classes[it.label]}/" in it.path


def test_alternative_split_folder_names_and_unknown_folders(tmp_path, synth):
    root = synth.split_folders(tmp_path / "d", {"training": {"a": 6, "b": 6}, "validation": {"a": 2, "b": 2},
                                                "testing": {"a": 2, "b": 2}, "extra": {"a": 2, "b": 2}})
    spec = _load(root)
    assert {s: sum(c.values()) for s, c in spec.counts().items()} == {"train": 12, "val": 4, "test": 4}
    assert any("extra" in w for w in spec.report.warnings)


@pytest.mark.parametrize("missing", ["val", "test"])
def test_missing_val_or_test_is_carved_from_train_stratified_and_seeded(tmp_path, synth, missing):
    splits = {"train": {"a": 20, "b": 10}, "val": {"a": 4, "b": 2}, "test": {"a": 4, "b": 2}}
    del splits[missing]
    root = synth.split_folders(tmp_path / "d", splits)
    spec = _load(root, split_seed=3)
    carved = spec.split(missing)
    counts = Counter(spec.classes[it.label] for it in carved)
    assert counts["a"] >= 1 and counts["b"] >= 1               # stratified: every class is represented
    assert counts["a"] > counts["b"]                            # ... in proportion
    assert all("/train/" in it.path for it in carved)           # taken from train, not invented
    assert any(f"No {missing} split found" in n for n in spec.report.notes)
    again = _load(root, split_seed=3)
    assert [(i.path, i.split) for i in again.items] == [(i.path, i.split) for i in spec.items]
    other = _load(root, split_seed=11)
    assert {i.path for i in other.split(missing)} != {i.path for i in carved}


def test_only_train_folder_gets_both_val_and_test(tmp_path, synth):
    root = synth.split_folders(tmp_path / "d", {"train": {"a": 20, "b": 20}})
    spec = _load(root)
    sizes = {s: len(spec.split(s)) for s in ("train", "val", "test")}
    assert sizes["val"] > 0 and sizes["test"] > 0 and sum(sizes.values()) == 40
    assert not {i.path for i in spec.split("val")} & {i.path for i in spec.split("test")}


# --- class folders ------------------------------------------------------------------

def test_class_folders_get_a_stratified_seeded_70_15_15_split(tmp_path, synth):
    root = synth.class_folders(tmp_path / "d", {"benign": 20, "malignant": 20, "normal": 40})
    spec = _load(root, split_seed=5)
    assert spec.layout == "class_folders"
    counts = _per_split_class(spec)
    assert counts["train"] == {"benign": 14, "malignant": 14, "normal": 28}
    assert counts["val"] == {"benign": 3, "malignant": 3, "normal": 6}
    assert counts["test"] == {"benign": 3, "malignant": 3, "normal": 6}
    assert [(i.path, i.split) for i in _load(root, split_seed=5).items] == [(i.path, i.split) for i in spec.items]
    assert [i.split for i in _load(root, split_seed=6).items] != [i.split for i in spec.items]
    assert any("stratified" in n for n in spec.report.notes)


def test_all_image_extensions_in_any_case_and_odd_names_are_found(tmp_path, synth):
    root = tmp_path / "d"
    names = ["benign (1).png", "benign (2).PNG", "benign [3].Jpg", "benign 4.jpeg", "benign-5.BMP",
             "benign_6.tif", "benign 7.TIFF"]
    for i, name in enumerate(names):
        synth.image(root / "benign" / name, 24, seed=i)
    synth.class_folders(root, {"malignant": 7})
    spec = _load(root)
    found = {p.rsplit("/", 1)[-1] for p in (i.path for i in spec.items)}
    assert set(names) <= found
    assert spec.report.skipped == []
    decoded = decode_dataset(spec, 16)
    assert len(decoded.spec.items) == 14 and decoded.images.shape == (14, 1, 16, 16)


def test_masks_are_skipped_by_default_and_included_on_request(tmp_path, synth):
    root = synth.class_folders(tmp_path / "d", {"benign": 6, "malignant": 6})
    synth.image(root / "benign" / "benign (0)_mask.png", 24)
    synth.image(root / "malignant" / "malignant (0)_mask_1.png", 24)
    spec = _load(root)
    name = lambda path: path.rsplit("/", 1)[-1]  # noqa: E731  (the tmp folder name also says "mask")
    assert not any("_mask" in name(i.path) for i in spec.items)
    assert len(spec.items) == 12
    assert not any("_mask" in name(s.path) for s in spec.report.skipped)  # excluded, not reported as bad
    assert any("_mask" in n for n in spec.report.notes)
    with_masks = _load(root, include_masks=True)
    assert sum("_mask" in name(i.path) for i in with_masks.items) == 2


def test_bad_files_are_listed_with_reasons_and_the_rest_loads(tmp_path, synth):
    root = synth.class_folders(tmp_path / "d", {"benign": 8, "malignant": 8})
    (root / "benign" / "empty.png").write_bytes(b"")
    (root / "benign" / "notes.jpg").write_text("this is not a jpeg")
    (root / "malignant" / "truncated.png").write_bytes(_truncated_png())
    (root / "malignant" / "readme.txt").write_text("about the data")
    (root / "malignant" / ".DS_Store").write_bytes(b"\x00")
    spec = _load(root)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in spec.report.skipped}
    assert "empty (0 bytes)" in reasons["empty.png"]
    assert "not an image" in reasons["notes.jpg"]
    assert "not an image file type (.txt; medcls reads PNG, JPEG" in reasons["readme.txt"]
    assert ".DS_Store" not in reasons
    # The truncated file has a readable header: it is found now and dropped when decoded.
    decoded = decode_dataset(spec, 16)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in decoded.spec.report.skipped}
    assert "corrupt or truncated" in reasons["truncated.png"]
    assert len(decoded.spec.items) == 16
    assert not any(bad in i.path for i in decoded.spec.items for bad in ("empty", "notes", "truncated"))


def test_stray_images_and_links_outside_the_dataset_are_skipped(tmp_path, synth):
    root = synth.class_folders(tmp_path / "d", {"a": 6, "b": 6})
    synth.image(root / "stray.png", 24)
    outside = synth.image(tmp_path / "elsewhere" / "secret.png", 24)
    (root / "a" / "link.png").symlink_to(outside)
    spec = _load(root)
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in spec.report.skipped}
    assert "outside any class folder" in reasons["stray.png"]
    assert "outside the dataset folder" in reasons["link.png"]
    assert len(spec.items) == 12


def test_tiny_classes_warn(tmp_path, synth):
    root = synth.split_folders(tmp_path / "d", {"train": {"a": 10, "b": 2}, "val": {"a": 2, "b": 1},
                                                "test": {"a": 2, "b": 1}})
    spec = _load(root)
    assert any("'b' has only 2 training image" in w for w in spec.report.warnings)


# --- manifests -----------------------------------------------------------------------

def _manifest_dataset(tmp_path, synth, header="path,label,split", with_split=True):
    root = tmp_path / "m"
    lines = [header]
    for c, name in enumerate(["Benign", "malignant"]):
        for i in range(10):
            rel = f"imgs/{name.lower()} ({i}).png"
            synth.image(root / rel, 24, seed=c * 50 + i)
            split = "train" if i < 6 else "val" if i < 8 else "test"
            lines.append(f"{rel},{name}" + (f",{split}" if with_split else ""))
    (root / "split.csv").write_text("\n".join(lines) + "\n")
    return root


def test_manifest_with_split_column(tmp_path, synth):
    root = _manifest_dataset(tmp_path, synth)
    spec = _load(root)
    assert spec.layout == "manifest"
    assert spec.classes == ["Benign", "malignant"]
    assert {s: sum(c.values()) for s, c in spec.counts().items()} == {"train": 12, "val": 4, "test": 4}
    assert _load(root / "split.csv").counts() == spec.counts()  # the .csv itself works as the source


def test_manifest_without_split_column_is_split_automatically(tmp_path, synth):
    root = _manifest_dataset(tmp_path, synth, header="Filename,Class", with_split=False)
    spec = _load(root)
    assert all(sum(c.values()) > 0 for c in spec.counts().values())
    assert any("No split given" in n for n in spec.report.notes)


def test_manifest_problems_are_reported_per_row(tmp_path, synth):
    root = _manifest_dataset(tmp_path, synth)
    synth.image(root / "imgs" / "extra.png", 24)
    with open(root / "split.csv", "a") as handle:
        handle.write("imgs/missing.png,Benign,train\n")
        handle.write("imgs/benign (0).png,Benign,train\n")   # duplicate
        handle.write("imgs/extra.png,Benign,holdout\n")
        handle.write("notes.txt,Benign,train\n")
        handle.write(",Benign,train\n")
    spec = _load(root)
    reasons = " | ".join(f"{s.path}: {s.reason}" for s in spec.report.skipped)
    assert "does not exist" in reasons
    assert "duplicate row" in reasons
    assert "unknown split 'holdout'" in reasons
    assert "not an image file type" in reasons
    assert "missing path or label" in reasons
    assert len(spec.items) == 20


def test_manifest_needs_path_and_label_columns(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    (root / "labels.csv").write_text("picture,kind\na.png,x\n")
    with pytest.raises(DataError, match="'path' and 'label'.*image_id.*dx"):
        _load(root)


# --- MedMNIST .npz ---------------------------------------------------------------------

def _npz(path, splits=("train", "val", "test"), n=(18, 6, 6), classes=3, channels=None):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in zip(splits, n):
        shape = (count, 28, 28) if channels is None else (count, 28, 28, channels)
        arrays[f"{split}_images"] = rng.integers(0, 255, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes).reshape(-1, 1)
    np.savez(path, **arrays)
    return path


def test_npz_with_all_splits_and_default_class_names(tmp_path):
    path = _npz(tmp_path / "toy.npz")
    spec = _load(path)
    assert spec.layout == "npz" and spec.classes == ["class_0", "class_1", "class_2"]
    assert {s: sum(c.values()) for s, c in spec.counts().items()} == {"train": 18, "val": 6, "test": 6}
    decoded = decode_dataset(spec, 16)
    assert decoded.images.shape == (30, 1, 16, 16)


def test_npz_with_given_class_names_and_known_medmnist_names(tmp_path):
    path = _npz(tmp_path / "toy.npz")
    spec = _load(path, class_names=("benign", "malignant", "normal"))
    assert spec.classes == ["benign", "malignant", "normal"]
    with pytest.raises(DataError, match="3 classes but 2 class names"):
        _load(path, class_names=("a", "b"))
    breast = _npz(tmp_path / "breastmnist.npz", classes=2)
    assert _load(breast).classes == ["malignant", "normal, benign"]


@pytest.mark.parametrize("name", ["breastmnist_224.npz", "3b1e3ae009f0-breastmnist.npz"])
def test_medmnist_names_survive_size_suffixes_and_the_uploads_folders_hash(tmp_path, name):
    # MedMNIST+ files carry their size; the app keeps an upload as '<content hash>-<name>'. Both were 'class_0'.
    assert _load(_npz(tmp_path / name, classes=2)).classes == ["malignant", "normal, benign"]
    organs = _load(_npz(tmp_path / "organmnist_axial.npz", classes=11, n=(33, 11, 11)))
    assert organs.classes[:2] == ["bladder", "femur-left"] and len(organs.classes) == 11


def test_npz_colour_images_and_missing_splits(tmp_path):
    path = _npz(tmp_path / "rgb.npz", splits=("train",), n=(30,), channels=3)
    spec = _load(path, color="rgb")
    assert len(spec.split("val")) > 0 and len(spec.split("test")) > 0
    assert decode_dataset(spec, 16, "rgb").images.shape == (30, 3, 16, 16)


def test_npz_errors_are_explained(tmp_path):
    no_train = tmp_path / "bad.npz"
    np.savez(no_train, images=np.zeros((2, 28, 28)))
    with pytest.raises(DataError, match="train_images"):
        _load(no_train)
    mismatch = tmp_path / "mismatch.npz"
    np.savez(mismatch, train_images=np.zeros((4, 28, 28)), train_labels=np.zeros((3, 1)))
    with pytest.raises(DataError, match="4 images but train_labels has 3"):
        _load(mismatch)
    garbage = tmp_path / "garbage.npz"
    garbage.write_text("not a zip")
    with pytest.raises(DataError, match="not a readable .npz"):
        _load(garbage)


# --- errors and access control -----------------------------------------------------------

def test_unusable_sources_raise_data_error(tmp_path, synth):
    with pytest.raises(DataError, match="not found"):
        _load(tmp_path / "nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="No images found"):
        _load(empty)
    one = synth.class_folders(tmp_path / "one", {"only": 10})
    with pytest.raises(DataError, match="at least two classes"):
        _load(one)
    text = tmp_path / "data.txt"
    text.write_text("x")
    with pytest.raises(DataError, match="not a .csv manifest or .npz"):
        _load(text)
    broken = tmp_path / "broken"
    (broken / "a").mkdir(parents=True)
    (broken / "a" / "x.png").write_bytes(b"")
    with pytest.raises(DataError, match="No usable images"):
        _load(broken)


def test_data_roots_restrict_where_datasets_may_come_from(tmp_path, synth, monkeypatch):
    root = synth.class_folders(tmp_path / "allowed" / "d", {"a": 6, "b": 6})
    monkeypatch.setenv("MEDCLS_DATA_ROOTS", str(tmp_path / "other"))
    with pytest.raises(PathNotAllowedError):
        _load(root)
    monkeypatch.setenv("MEDCLS_DATA_ROOTS", str(tmp_path / "allowed"))
    assert len(_load(root).items) == 12


def test_default_source_is_the_synthetic_phantom_dataset(phantom_cache):
    spec = load_dataset(DataConfig())
    assert spec.synthetic
    assert set(spec.classes) == {"normal", "benign", "malignant"}
    assert all(sum(c.values()) > 0 for c in spec.counts().values())
    assert "SYNTHETIC" in spec.report.notes[0]
    assert str(phantom_cache) in spec.root


def test_class_too_small_to_split_warns(tmp_path, synth):
    root = synth.class_folders(tmp_path / "d", {"a": 20, "b": 20, "rare": 2})
    spec = _load(root)
    assert spec.counts()["train"]["rare"] == 2
    assert any("'rare' is too small to split" in w for w in spec.report.warnings)


def test_the_summary_says_of_each_class_when_a_split_holds_the_same_number_of_every_class():
    from medcls.data.spec import DatasetSpec, Item

    classes = [f"shape{i:02d}" for i in range(15)]
    items = [Item(f"/d/{c}/{i}.png", k, "train") for k, c in enumerate(classes) for i in range(4)]
    items += [Item(f"/d/{c}/t{i}.png", k, "test") for k, c in enumerate(classes) for i in range(2 if k else 3)]
    summary = DatasetSpec("/d", "class_folders", classes, items).summary()
    assert summary.startswith("91 images, 15 classes (train: 4 of each class; val: none; test: ")
    assert "test: 3 shape00, 2 shape01," in summary   # unequal: each class named with its count
    two = DatasetSpec("/d", "class_folders", ["a", "b"], [Item("/d/a.png", 0, "train"), Item("/d/b.png", 1, "train")])
    assert "train: 1 a, 1 b" in two.summary()         # two classes read as well named
    large = DatasetSpec("/d", "class_folders", ["a", "b"], [Item(f"/d/{i}.png", i % 2, "train") for i in range(2400)])
    assert large.summary() == "2,400 images, 2 classes (train: 1,200 a, 1,200 b; val: none; test: none)"


def test_a_folder_wrapped_around_the_class_folders_is_named_as_the_dataset_to_choose(tmp_path):
    from tests.conftest import write_class_folders

    write_class_folders(tmp_path / "data" / "images", {"benign": 6, "malignant": 6})
    with pytest.raises(DataError) as caught:
        load_dataset(DataConfig(source=str(tmp_path / "data")))
    message = str(caught.value)
    assert message.startswith("Only one class (images) has training images")
    assert message.endswith(f"The folder images holds folders of its own (benign, malignant): if those are the "
                            f"classes, choose {tmp_path / 'data' / 'images'} as the dataset.")
    # one real class and nothing inside it: no hint
    write_class_folders(tmp_path / "one", {"benign": 6})
    with pytest.raises(DataError) as caught:
        load_dataset(DataConfig(source=str(tmp_path / "one")))
    assert "holds folders of its own" not in str(caught.value)


def test_classes_named_by_numbers_do_not_read_as_counts():
    from medcls.data.spec import DatasetSpec, Item

    items = [Item(f"/d/{i}.png", i % 3, "train") for i in range(7)]
    summary = DatasetSpec("/d", "class_folders", ["0", "1", "2b"], items).summary()
    assert "train: 3 of '0', 2 of '1', 2 of '2b';" in summary
