"""AppTest: the data explorer's "Duplicates and leaks" section and the sidebar's group-aware split."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from apphelpers import as_read, open_on_folder, write_tiny_dataset
from PIL import Image

from app.text import escape_markdown
from medcls.data.health import clear_hash_memory


@pytest.fixture(autouse=True)
def _fresh_hash_memory():
    clear_hash_memory()
    yield
    clear_hash_memory()


def _write_split(root: Path, per_class: int, seed: int) -> None:
    """Distinct images (random 6x6 patterns blown up to 32 px) in class folders."""
    rng = np.random.default_rng(seed)
    for name in ("bright", "dark"):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            small = rng.integers(0, 256, (6, 6)).astype(np.uint8)
            Image.fromarray(small).resize((32, 32), Image.Resampling.BICUBIC).save(root / name / f"{name} ({i}).png")


def _fixed_split(root: Path) -> Path:
    """train/ val/ test/ folders of distinct images (16 / 6 / 6), no copies yet."""
    for split, per_class, seed in (("train", 8, 1), ("test", 3, 2), ("val", 3, 3)):
        _write_split(root / split, per_class, seed)
    return root


def _data_page(folder: Path):
    """The data explorer on a folder dataset (the built-in phantoms are never generated)."""
    return open_on_folder(folder)  # the default page


def _captions(at) -> list[str]:
    return [as_read(img.caption) for element in at.get("image") for img in element.proto.imgs]


def _random_split_leak(at) -> tuple[str, str]:
    """How many test images a random split would leak, as the caption says it, and its noun (singular for 1)."""
    found = [m.groups() for c in at.caption if (m := re.search(r"about (\d+) test (images?) would have", c.value))]
    assert len(found) == 1, found
    assert (found[0][0] == "1") == (found[0][1] == "image"), found  # "1 test image", "0 test images"
    return found[0]


def _table(at):
    return next(df.value for df in at.dataframe if "splits" in df.value.columns)


def test_conflicts_and_leaks_of_a_fixed_split_are_flagged(app_env, tmp_path):
    root = _fixed_split(tmp_path / "fixed")
    # The same picture in train and in test (a leak), and under both classes in train (a conflict).
    shutil.copy(root / "train" / "bright" / "bright (5).png", root / "test" / "bright" / "leaked.png")
    shutil.copy(root / "train" / "dark" / "dark (2).png", root / "train" / "bright" / "mislabelled.png")

    at = _data_page(root)
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Duplicate groups"] == "2" and metrics["Label conflicts"] == "1"
    assert metrics["Test images with a copy in train"] == "1 of 7"
    # The example names the copies that carry the different labels (escaped: file names are user text).
    example = f"{escape_markdown('mislabelled.png (bright)')} = {escape_markdown('dark (2).png (dark)')}"
    assert any("One picture appears under two or more classes" in e.value and example in e.value for e in at.error), \
        [e.value for e in at.error]
    assert any(as_read(w.value).replace("**", "").startswith("Split leak: 1 of 7 test images (14%) has a near-duplicate in train. Test "
                                           "scores on this split are optimistic.") for w in at.warning)
    assert any("this dataset's own split" in c.value for c in at.caption)
    assert _random_split_leak(at) == ("0", "images")

    # Conflicts are shown first; the other views list the leak and everything.
    assert at.radio(key="health_view").value == "Label conflicts"
    table = _table(at)
    assert len(table) == 1 and table.iloc[0]["classes"] == "bright, dark"
    assert "mislabelled.png · bright · train" in _captions(at)
    at.radio(key="health_view").set_value("Across splits").run()
    table = _table(at)
    assert len(table) == 1 and table.iloc[0]["splits"] == "train, test"
    assert table.iloc[0]["kind"] == "exact copies"
    at.radio(key="health_view").set_value("All groups").run()
    assert len(_table(at)) == 2

    # The dataset's own split leaks: one click makes a split in which copies stay together.
    at.button(key="health_fix_split").click().run()
    assert not at.exception
    assert at.session_state["data_config"]["own_split"] is True
    assert at.session_state["data_config"]["group_duplicates"] is True
    assert {m.label: m.value for m in at.metric}["Test images with a copy in train"].startswith("0 of")
    assert not any("Split leak" in w.value for w in at.warning)
    assert any("this split (made by medcls)" in c.value for c in at.caption)


def test_a_leak_into_validation_only_does_not_call_the_test_scores_optimistic(app_env, tmp_path):
    root = _fixed_split(tmp_path / "fixed")
    shutil.copy(root / "train" / "bright" / "bright (5).png", root / "val" / "bright" / "leaked.png")

    at = _data_page(root)
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Test images with a copy in train"] == "0 of 6"
    leaks = [as_read(w.value).replace("**", "") for w in at.warning if "Split leak" in w.value]
    assert leaks == ["Split leak: 1 validation image has a near-duplicate in train (no test image has). Validation "
                     "scores (and a best epoch picked by them) are optimistic."], leaks


def test_a_copy_of_a_test_image_among_the_validation_images_is_named_for_ensembles_of_small_datasets(app_env, tmp_path):
    root = _fixed_split(tmp_path / "fixed")
    shutil.copy(root / "test" / "dark" / "dark (1).png", root / "val" / "dark" / "again.png")

    at = _data_page(root)
    assert not at.exception
    leaks = [as_read(w.value).replace("**", "") for w in at.warning if "Split leak" in w.value]
    assert leaks == ["Split leak: no test or validation image has a near-duplicate in train. Fold or bagged "
                     "models (the default for a small dataset) learn from the validation images too: 1 of the 6 test "
                     "images has a near-duplicate among train + validation."], leaks
    assert not [s for s in at.success if "near-duplicate" in s.value or "No duplicate" in s.value]  # not "no leak"


def test_a_dataset_without_copies_says_so_once_without_a_line_of_zero_counts(app_env, tmp_path):
    at = _data_page(write_tiny_dataset(tmp_path / "plain", per_class=10))
    assert not at.exception
    assert any(s.value.startswith("No duplicate images found among 20 images") for s in at.success)
    assert not any("would have a near-duplicate" in c.value for c in at.caption)


def test_the_sidebar_option_gives_a_split_without_leaks(app_env, tmp_path):
    root = write_tiny_dataset(tmp_path / "pairs", per_class=10)
    for name in ("bright", "dark"):
        for i in range(10):
            shutil.copy(root / name / f"{name} ({i}).png", root / name / f"{name} ({i}) again.png")

    at = _data_page(root)
    assert not at.exception
    assert any("Split leak" in w.value for w in at.warning), "a random split of 20 pairs should leak"
    assert any("Keep near-duplicates in one split" in w.value for w in at.warning)  # the fix is named
    assert int(_random_split_leak(at)[0]) >= 1  # 20 pairs: some land on both sides of a random split
    assert any("this split (made by medcls)" in c.value for c in at.caption)

    at.sidebar.checkbox(key="data_group_duplicates").check().run()
    assert not at.exception
    assert not any("Split leak" in w.value for w in at.warning)
    assert any("near-duplicates are kept in one split" in s.value for s in at.success)
    assert {m.label: m.value for m in at.metric}["Test images with a copy in train"].startswith("0 of")
    assert at.session_state["data_config"]["group_duplicates"] is True


def test_leak_counts_are_written_as_counts_with_thousands_separated():
    # ':g' wrote 1500 test images as '1500' beside '10,000 images', and a million as '1e+06'.
    from app.health import _leak_words
    from medcls.data.health import Leak

    words = _leak_words(Leak(test_in_train=1200.0, val_in_train=3.0, test_in_val=0.0, test_images=1500.0,
                             val_images=1500.0, test_in_learning=1_000_000.0))
    assert "1,200 of 1,500 test images (80%) and 3 validation images have a near-duplicate" in words, words
    assert "1,000,000 of the 1,500 test images" in words, words
