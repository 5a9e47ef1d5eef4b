"""Test images that are copies of training images: found by the Data explorer's rule, and the score without them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medcls.analysis import copies as copies_module
from medcls.analysis.copies import copied_test_images, copies_sentence, metrics_without, run_copies_sentence
from medcls.analysis.metrics import classification_metrics


def re_export(source: Path, target: Path, brighter: int = 12) -> Path:
    """The same picture saved again a little brighter, as a JPEG: other bytes and pixels, the same scan."""
    gray = np.asarray(Image.open(source).convert("L"), dtype=np.int16)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(gray + brighter, 0, 255).astype(np.uint8)).save(target, format="JPEG", quality=95)
    return target


@pytest.fixture
def split_items(tmp_path, synth) -> list[tuple[str, str]]:
    """train/val/test folders (10/3/3 a class), plus a test image copied from train and one from validation."""
    root = synth.split_folders(tmp_path / "splits", {"train": {c: 10 for c in synth.classes},
                                                     "val": {c: 3 for c in synth.classes},
                                                     "test": {c: 3 for c in synth.classes}})
    items = [(str(p), p.relative_to(root).parts[0]) for p in sorted(root.rglob("*.png"))]
    from_train = re_export(root / "train" / "benign" / "benign (4).png", root / "test" / "benign" / "again.jpg")
    from_val = re_export(root / "val" / "normal" / "normal (1).png", root / "test" / "normal" / "again.jpg")
    return items + [(str(from_train), "test"), (str(from_val), "test")]


def test_test_images_with_a_copy_in_train_or_validation_are_found(split_items):
    found = copied_test_images(split_items)
    assert sorted(Path(p).parent.name for p in found) == ["benign", "normal"]
    assert all(Path(p).name == "again.jpg" for p in found)  # the test images that are new are not taken for copies


def test_nothing_is_checked_without_a_test_split_or_beyond_the_limit(split_items, monkeypatch):
    assert copied_test_images([(p, s) for p, s in split_items if s != "test"]) is None
    monkeypatch.setattr(copies_module, "MAX_CHECKED_IMAGES", len(split_items) - 1)
    assert copied_test_images(split_items) is None


def test_the_score_without_the_copies_and_the_sentence():
    classes = ["benign", "malignant"]
    paths = ["a", "b", "c", "d"]
    y_true = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])  # c and d wrong
    whole = classification_metrics(y_true, probs, classes)
    without = metrics_without(paths, y_true, probs, classes, ["a", "b"])  # the two right answers were copies
    assert without.n == 2 and without.accuracy == 0.0 and whole.accuracy == 0.5
    assert metrics_without(paths, y_true, probs, classes, paths) is None
    text = copies_sentence(4, ["a", "b"], whole, without, "malignant")
    assert text.startswith("2 of the 4 test images (50%) have a near copy among the images this run learned from")
    assert (f"On the 2 test images without a copy: macro-F1 0.000 (against {whole.macro_f1:.3f} on all 4), "
            "malignant recall 0.000 (against 0.500).") in text
    assert "1 of the 4 test images (25%) has a near copy" in copies_sentence(4, ["a"], whole, without)
    assert copies_sentence(4, [], whole, whole) == ""
    assert "this test split says nothing about new images" in copies_sentence(4, paths, whole, None)
    many = 1000 * paths
    whole = classification_metrics(np.tile(y_true, 1000), np.tile(probs, (1000, 1)), classes)
    without = metrics_without(many, np.tile(y_true, 1000), np.tile(probs, (1000, 1)), classes, ["a"])
    text = copies_sentence(4000, 1000 * ["a"], whole, without)
    assert text.startswith("1,000 of the 4,000 test images (25%) have") and "On the 3,000 test images" in text, text
    assert "on all 4,000)" in text
    assert "did not simply remember" not in text  # the copies were the right answers here


def test_the_sentence_says_when_the_copies_lowered_the_score():
    classes = ["benign", "malignant"]
    paths = ["a", "b", "c", "d", "e", "f"]
    y_true = np.array([0, 1, 1, 0, 1, 0])
    right, wrong = [0.9, 0.1], [0.1, 0.9]
    probs = np.array([right, [0.8, 0.2], right[::-1], right, right[::-1], wrong])  # b (malignant) missed, f wrong
    whole = classification_metrics(y_true, probs, classes)
    # b, a copy of a malignant training image, was missed: without it both scores are higher.
    both = copies_sentence(6, ["b"], whole, metrics_without(paths, y_true, probs, classes, ["b"]), "malignant")
    assert both.endswith(" Here macro-F1 and malignant recall are higher without the copies: the model answered the "
                         "copies worse than the new images, so it did not simply remember them.")
    # With two right benign answers among the copies too, only malignant recall is higher without them.
    copies = ["a", "b", "d"]
    recall = copies_sentence(6, copies, whole, metrics_without(paths, y_true, probs, classes, copies), "malignant")
    assert " Here malignant recall is higher without the copies:" in recall


def test_a_run_records_its_copied_test_images_and_says_what_they_do(split_items, synth, store, capsys):
    from medcls.jobs.execute import execute_run

    root = Path(split_items[0][0]).parents[2]
    # One model that keeps its last epoch learns from its training images only: a copy in validation is no leak.
    last = store.create(synth.config(root))
    assert execute_run(store, last).state == "finished"
    assert sorted(Path(p).parent.name for p in store.metrics(last).test_copies) == ["benign"]
    # One that keeps its best epoch chooses it by the validation images: their copies count too.
    run_id = store.create(synth.config(root, checkpoint="best"))
    assert execute_run(store, run_id).state == "finished"
    recorded = store.metrics(run_id).test_copies
    assert sorted(Path(p).parent.name for p in recorded) == ["benign", "normal"]
    sentence = run_copies_sentence(store, run_id)
    assert sentence.startswith("2 of the 11 test images (18%) have a near copy") and "On the 9 test images" in sentence
    # The run card and the command line say the same.
    from medcls.cli.main import _print_copies
    from medcls.figures.report import run_card_html
    assert "2 of the 11 test images (18%) have a near copy" in run_card_html(store, run_id)
    _print_copies(store, run_id)
    assert capsys.readouterr().out == f"note: {sentence}\n"
    # A run recorded before the check (no field) says nothing rather than something untrue.
    metrics_file = store.path(run_id) / "metrics.json"
    raw = json.loads(metrics_file.read_text())
    raw.pop("test_copies")
    metrics_file.write_text(json.dumps(raw))
    assert store.metrics(run_id).test_copies is None and run_copies_sentence(store, run_id) == ""
