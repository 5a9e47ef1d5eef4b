"""Data health: near-duplicate detection, grouping, leak counts, the hash cache, group-aware splits."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import medcls.data.fingerprints as fingerprints
import medcls.data.health as health
from medcls.config import DataConfig
from medcls.data import load_dataset
from medcls.data.health import (
    check_duplicates,
    clear_hash_memory,
    duplicate_group_ids,
    group_ids,
    image_hashes,
    made_own_split,
    near_duplicate_pairs,
    random_split_leak,
    split_leak,
)


@pytest.fixture(autouse=True)
def _fresh_hash_memory():
    """Hashes are kept in memory per process by file contents; each test starts without them."""
    clear_hash_memory()
    yield
    clear_hash_memory()


def pattern(seed: int, size: int = 96) -> np.ndarray:
    """A distinct, structured gray image: a random 6x6 pattern blown up smoothly."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 6)).astype(np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))


def save(arr: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def near_copy(source: Path, target: Path) -> Path:
    """A resized, re-encoded JPEG copy: different bytes and pixels, the same picture."""
    img = Image.open(source).convert("L")
    img = img.resize((int(img.width * 0.8), int(img.height * 0.8)), Image.Resampling.BILINEAR)
    target.parent.mkdir(parents=True, exist_ok=True)
    img.save(target, quality=60)
    return target


@pytest.fixture
def distinct(tmp_path) -> Path:
    """Two class folders of 8 distinct images each."""
    root = tmp_path / "distinct"
    for c, name in enumerate(("benign", "malignant")):
        for i in range(8):
            save(pattern(100 * c + i), root / name / f"{name} ({i}).png")
    return root


def test_a_planted_near_duplicate_is_found_across_classes(distinct):
    near_copy(distinct / "benign" / "benign (0).png", distinct / "malignant" / "copy.jpg")
    spec = load_dataset(DataConfig(source=str(distinct)))
    report = check_duplicates(spec)
    assert len(report.groups) == 1, [[it.path for it in g.items] for g in report.groups]
    group = report.groups[0]
    assert {Path(it.path).name for it in group.items} == {"benign (0).png", "copy.jpg"}
    assert not group.identical and group.conflict
    assert [spec.classes[k] for k in group.labels] == ["benign", "malignant"]
    assert report.conflicts == [group] and report.duplicated_images == 2 and report.redundant_images == 1
    assert report.checked == 17 and not report.failures


def test_distinct_images_are_not_grouped(distinct):
    spec = load_dataset(DataConfig(source=str(distinct)))
    report = check_duplicates(spec)
    assert report.groups == []
    assert len(set(report.group_of.tolist())) == len(spec.items)


def test_an_exact_copy_is_marked_identical_and_a_split_leak(distinct):
    shutil.copy(distinct / "benign" / "benign (3).png", distinct / "benign" / "again.png")
    spec = load_dataset(DataConfig(source=str(distinct)))
    report = check_duplicates(spec)
    assert len(report.groups) == 1 and report.groups[0].identical and not report.groups[0].conflict
    assert report.groups[0].max_distance == 0
    assert report.groups[0].leak == (len({it.split for it in report.groups[0].items}) > 1)


def test_unreadable_files_are_listed_not_grouped(tmp_path):
    good = [save(pattern(i), tmp_path / f"{i}.png") for i in range(3)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    also_broken = tmp_path / "broken2.png"
    also_broken.write_bytes(b"not a png")  # same content as the first broken file
    paths = [str(p) for p in good + [broken, also_broken]]
    table = image_hashes(paths)
    assert table.ok.tolist() == [True, True, True, False, False]
    assert [p for p, _ in table.failures] == [str(broken), str(also_broken)]
    assert duplicate_group_ids(paths) == [0, 1, 2, 3, 4]  # broken files are never "duplicates" of each other


def test_pairs_and_groups_match_a_brute_force_check(monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2 ** 63, 40, dtype=np.uint64)
    # Near copies: flip 1..12 random bits of some hashes.
    copies = []
    for i in range(20):
        flips = rng.choice(64, size=i % 13, replace=False)
        copies.append(int(base[i]) ^ int(sum(1 << int(b) for b in flips)))
    hashes = np.concatenate([base, np.array(copies, dtype=np.uint64)])
    monkeypatch.setattr(health, "_BLOCK", 7)  # exercise block boundaries
    first, second, dist = near_duplicate_pairs(hashes, 10)
    expected = {(i, j) for i in range(len(hashes)) for j in range(i + 1, len(hashes))
                if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 10}
    assert set(zip(first.tolist(), second.tolist())) == expected
    assert all(d == bin(int(hashes[a]) ^ int(hashes[b])).count("1") for a, b, d in zip(first, second, dist))
    groups = group_ids(len(hashes), first, second)
    for i in range(20):
        assert (groups[i] == groups[40 + i]) == (i % 13 <= 10)


def test_groups_are_transitive():
    groups = group_ids(5, np.array([0, 1]), np.array([1, 2]))  # 0-1 and 1-2: one group of three
    assert groups[0] == groups[1] == groups[2] and len({groups[0], groups[3], groups[4]}) == 3


def test_split_leak_counts():
    groups = [0, 0, 1, 1, 2, 2, 3, 4]
    splits = ["train", "test", "val", "test", "train", "val", "test", "train"]
    leak = split_leak(groups, splits)
    assert (leak.test_in_train, leak.val_in_train, leak.test_in_val) == (1, 1, 1)
    assert (leak.test_images, leak.val_images) == (3, 2)
    assert leak.test_share == pytest.approx(1 / 3)
    assert leak.test_in_learning == 2  # the test images of groups 0 (train) and 1 (val): once each
    both = split_leak([0, 0, 0], ["train", "val", "test"])
    assert (both.test_in_train, both.test_in_val, both.test_in_learning) == (1, 1, 1)  # not counted twice


def test_a_random_split_leaks_and_a_grouped_split_does_not():
    from medcls.data.splits import stratified_split

    groups = np.repeat(np.arange(60), 2)  # 60 pairs of duplicates
    labels = np.repeat(np.arange(60) % 3, 2)
    leak = random_split_leak(groups, labels, 0.15, 0.15, seeds=range(3))
    assert leak.test_in_train > 5  # about 70% of the ~18 test images have their twin in train
    assert random_split_leak(np.arange(120), labels, seeds=range(3)).test_in_train == 0
    grouped, _ = stratified_split(labels, 0.15, 0.15, seed=0, groups=groups)
    assert split_leak(groups, grouped).test_in_train == 0


def test_hashes_are_cached_by_file_contents(tmp_path, monkeypatch):
    paths = [save(pattern(i), tmp_path / f"img{i}.png") for i in range(4)]
    decoded: list[str] = []
    real = fingerprints.read_image

    def counting(path, color):
        decoded.append(Path(path).name)
        return real(path, color)

    monkeypatch.setattr(fingerprints, "read_image", counting)
    first = image_hashes([str(p) for p in paths])
    assert sorted(decoded) == ["img0.png", "img1.png", "img2.png", "img3.png"]

    decoded.clear()
    clear_hash_memory()  # a new process: the disk cache answers
    again = image_hashes([str(p) for p in paths])
    assert decoded == [] and again.phash.tolist() == first.phash.tolist()

    copy = tmp_path / "renamed copy.png"
    shutil.copy(paths[0], copy)  # same contents under another name: no new work
    save(pattern(99), paths[1])  # new contents under an old name: hashed again
    table = image_hashes([str(p) for p in paths] + [str(copy)])
    assert decoded == ["img1.png"]
    assert table.phash[4] == first.phash[0] and table.phash[1] != first.phash[1]


def test_progress_reports_every_image(tmp_path):
    paths = [str(save(pattern(i), tmp_path / f"{i}.png")) for i in range(20)]
    calls: list[tuple[int, int]] = []
    image_hashes(paths, progress=lambda done, total: calls.append((done, total)))
    assert calls[0] == (0, 20) and calls[-1] == (20, 20)
    calls.clear()
    image_hashes(paths, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(20, 20)]  # all cached


def _dataset_with_pairs(root: Path, pairs_per_class: int = 10) -> Path:
    for c, name in enumerate(("benign", "malignant")):
        for i in range(pairs_per_class):
            original = save(pattern(1000 * c + i), root / name / f"{name} ({i}).png")
            near_copy(original, root / name / f"{name} ({i}) copy.jpg")
    return root


def test_group_duplicates_keeps_near_duplicates_in_one_split(tmp_path):
    root = _dataset_with_pairs(tmp_path / "pairs")
    spec = load_dataset(DataConfig(source=str(root), group_duplicates=True, split_seed=1))
    by_stem: dict[str, set[str]] = {}
    for it in spec.items:
        by_stem.setdefault(Path(it.path).stem.removesuffix(" copy"), set()).add(it.split)
    assert len(by_stem) == 20 and all(len(s) == 1 for s in by_stem.values()), by_stem
    assert {it.split for it in spec.items} == {"train", "val", "test"}
    assert any("near-duplicates kept in the same split (20 image(s)" in n for n in spec.report.notes)
    assert made_own_split(spec)
    report = check_duplicates(spec)
    assert len(report.groups) == 20 and not report.leaks
    assert split_leak(report.group_of, [it.split for it in spec.items]).test_in_train == 0

    # Without the option, the same split seed separates some pairs (this is what the option prevents).
    plain = load_dataset(DataConfig(source=str(root), split_seed=1))
    assert check_duplicates(plain).leaks


def test_a_class_whose_images_are_all_copies_of_one_stays_in_train_and_the_report_says_why(tmp_path):
    root = _dataset_with_pairs(tmp_path / "pairs")
    original = save(pattern(999), root / "cyst" / "cyst (0).png")
    for i in range(1, 4):  # the same scan four times over: one group of near copies
        near_copy(original, root / "cyst" / f"cyst ({i}).jpg")
    spec = load_dataset(DataConfig(source=str(root), group_duplicates=True, split_seed=1))
    assert {it.split for it in spec.items if "cyst" in it.path} == {"train"}
    assert ("Class 'cyst' cannot be split with near-duplicates kept together: its 4 images form 1 group(s) of near "
            "copies, so all stay in train and it has no validation or test images.") in spec.report.warnings


def test_made_own_split_is_false_for_a_given_split(tmp_path):
    for split in ("train", "val", "test"):
        for c, name in enumerate(("a", "b")):
            for i in range(3):
                save(pattern(hash((split, name, i)) % 10_000), tmp_path / split / name / f"{i}.png")
    assert not made_own_split(load_dataset(DataConfig(source=str(tmp_path))))


def test_npz_members_are_checked_too(tmp_path):
    images = {split: np.stack([pattern(100 * s + i, 28) for i in range(6)]) for s, split in
              enumerate(("train", "val", "test"))}
    images["test"][2] = images["train"][4]  # the same picture in train and test
    path = tmp_path / "toy.npz"
    np.savez(path, **{f"{s}_images": a for s, a in images.items()},
             **{f"{s}_labels": np.array([0, 1] * 3) for s in images})
    spec = load_dataset(DataConfig(source=str(path)))
    report = check_duplicates(spec)
    assert len(report.groups) == 1 and report.groups[0].identical
    assert sorted(it.path.rsplit("::", 1)[1] for it in report.groups[0].items) == ["test/2", "train/4"]
    assert split_leak(report.group_of, [it.split for it in spec.items]).test_in_train == 1
