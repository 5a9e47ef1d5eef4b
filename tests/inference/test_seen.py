"""Did this run learn from this image? Paths and byte-identical uploads of its training and validation files."""

from __future__ import annotations

import csv
from pathlib import Path

from medcls.inference.seen import learned_from, seen_sentence


def _rows(store, run_id) -> list[dict[str, str]]:
    with open(store.file(run_id, "split.csv"), newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_training_files_are_known_by_path_and_by_their_bytes(finished_run):
    store, run_id = finished_run
    rows = _rows(store, run_id)
    train = next(r["path"] for r in rows if r["split"] == "train")
    val = next(r["path"] for r in rows if r["split"] == "val")
    test = next(r["path"] for r in rows if r["split"] == "test")
    seen = learned_from(store, run_id)
    assert seen.folds == 0 and len(seen.splits) == len(rows)
    assert seen.split_of(path=train) == (train, "train")
    # One model that keeps its last epoch (the default) chose nothing by its validation images: not learned from.
    assert not seen.chose_epoch and seen.split_of(path=val) is None
    config = store.file(run_id, "config.json")
    config.write_text(config.read_text().replace('"checkpoint": "last"', '"checkpoint": "best"'))
    best = learned_from(store, run_id)
    assert best.chose_epoch and best.split_of(path=val) == (val, "val")  # one that kept its best epoch did
    assert seen.split_of(path=test) is None  # the test images are what the model never saw
    upload = Path(train).read_bytes()
    assert seen.split_of(data=upload) == (train, "train")  # the same file uploaded again
    assert seen.split_of(data=upload[:-1] + bytes([upload[-1] ^ 1])) is None  # any other bytes are not matched
    assert seen.split_of(data=Path(test).read_bytes()) is None


def test_a_moved_training_file_is_still_known_by_its_path(finished_run):
    store, run_id = finished_run
    train = next(r["path"] for r in _rows(store, run_id) if r["split"] == "train")
    data = Path(train).read_bytes()
    Path(train).rename(train + ".moved")
    try:
        seen = learned_from(store, run_id)
        assert seen.split_of(path=train) == (train, "train") and seen.split_of(data=data) is None
    finally:
        Path(train + ".moved").rename(train)


def test_the_sentence_says_how_the_run_used_the_image():
    one = seen_sentence(("/data/benign/benign (3).png", "train"), folds=0)
    assert one.startswith("This is benign (3).png, one of the images this run learned from: this run trained on it.")
    assert "what the model remembers, not how it does on new images" in one
    assert "chose its best epoch" in seen_sentence(("/d/a.png", "val"), folds=0)
    folds = seen_sentence(("/d/a.png", "val"), folds=5)
    assert "4 of this run's 5 fold models trained on it, and the other one chose its best epoch with it" in folds
    assert seen_sentence(("/d/a.png", "train"), folds=5) == folds  # the folds split train + val alike
    last = seen_sentence(("/d/a.png", "val"), folds=5, chose_epoch=False)  # fold models that keep their last epoch
    assert "4 of this run's 5 fold models trained on it, and the other one was validated on it" in last
    # A run stopped before all its models were trained holds fewer: the sentence counts those it holds.
    bagged = seen_sentence(("/d/a.png", "train"), folds=3, bagged=True, trained=2, chose_epoch=False)
    assert "learned from: the 2 bagged models this run trained before it was stopped (of 3) learned from it." in bagged
    stopped = seen_sentence(("/d/a.png", "val"), folds=5, trained=2)
    assert ("this run was stopped after 2 of its 5 fold models, and each of them trained on it, except perhaps one "
            "that chose its best epoch with it.") in stopped
    first = seen_sentence(("/d/a.png", "val"), folds=5, trained=1, chose_epoch=False)  # not 'each of them'
    assert ("this run was stopped after the first of its 5 fold models, which trained on it unless the image is in "
            "the fifth of the images that model was validated on.") in first


def test_a_run_stopped_in_its_first_bagged_model_says_only_that_model_learned_from_the_image(store, class_dataset):
    from medcls.config import DataConfig, TrainConfig
    from medcls.jobs.execute import execute_run

    cfg = TrainConfig(data=DataConfig(source=str(class_dataset))).with_options(
        image_size=32, batch_size=8, precision="fp32", epochs=2, bagged_models=3)
    run_id = store.create(cfg)
    assert execute_run(store, run_id, should_cancel=lambda: len(store.history(run_id)) >= 1).state == "cancelled"
    seen = learned_from(store, run_id)
    assert (seen.folds, seen.bagged, seen.trained) == (3, True, 1)
    path = seen.learning_paths()[0]
    sentence = seen_sentence((path, seen.splits[path]), seen.folds, chose_epoch=seen.chose_epoch, bagged=seen.bagged,
                             trained=seen.trained)
    assert "learned from: the one bagged model this run trained before it was stopped (of 3) learned from it." \
        in sentence
    assert learned_from(*_finished(store, cfg)).trained is None  # a run that trained all its models


def _finished(store, cfg):
    from medcls.jobs.execute import execute_run

    run_id = store.create(cfg.with_options(epochs=1, bagged_models=2))
    assert execute_run(store, run_id).state == "finished"
    return store, run_id


def test_a_wrong_answer_on_an_image_the_run_trained_on_is_called_a_real_mistake():
    missed = seen_sentence(("/d/malignant (10).png", "train"), folds=0, label="malignant", answer="benign")
    assert missed.endswith("Yet it answers benign, not malignant as it is filed: training on an image does not make "
                           "a model remember it, so this mistake is a real one.")
    assert "A right answer" not in missed
    right = seen_sentence(("/d/malignant (10).png", "train"), folds=0, label="malignant", answer="malignant")
    assert right == seen_sentence(("/d/malignant (10).png", "train"), folds=0)  # right: what it remembers
    # One model only chose its best epoch with a validation image: a wrong answer there is no surprise.
    assert "Yet it answers" not in seen_sentence(("/d/a.png", "val"), folds=0, label="malignant", answer="benign")
    assert "Yet it answers benign" in seen_sentence(("/d/a.png", "val"), folds=3, label="malignant", answer="benign")


def _near_copy_bytes(path: str, brighter: int = 12) -> bytes:
    """The picture re-exported: a little brighter, saved as a JPEG (other bytes, other pixels, the same scan)."""
    import io

    import numpy as np
    from PIL import Image

    gray = np.asarray(Image.open(path).convert("L"), dtype=np.int16)
    buf = io.BytesIO()
    Image.fromarray(np.clip(gray + brighter, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def test_a_re_exported_copy_of_a_training_image_is_named_with_its_class(finished_run, tmp_path):
    from medcls.inference.seen import lookalikes

    store, run_id = finished_run
    rows = _rows(store, run_id)
    train = next(r for r in rows if r["split"] == "train")
    seen = learned_from(store, run_id)
    looks = lookalikes(seen)
    assert looks is not None and len(looks.paths) == sum(r["split"] == "train" for r in rows)  # keeps its last epoch
    copy_bytes = _near_copy_bytes(train["path"])
    assert seen.split_of(data=copy_bytes) is None  # not the same file
    copy = looks.near_copy(copy_bytes)
    assert copy is not None and copy.path == train["path"] and copy.split == "train"
    assert copy.label == train["label"] and not copy.same_pixels and copy.bits <= 10
    # A copy on disk (picked by path) is found the same way; a PNG of the same pixels is "the same picture".
    from PIL import Image
    saved = tmp_path / "elsewhere.png"
    Image.open(train["path"]).save(saved)
    same = looks.near_copy(str(saved))
    assert same is not None and same.path == train["path"] and same.same_pixels and same.bits == 0
    # The test images are other pictures: none of them is taken for a copy.
    assert all(looks.near_copy(r["path"]) is None for r in rows if r["split"] == "test")


def test_the_near_copy_sentence_names_the_copy_and_a_label_conflict():
    from medcls.inference.seen import NearCopy, near_copy_sentence

    copy = NearCopy("/d/malignant/malignant (51).png", "train", "malignant", bits=0, same_pixels=False)
    upload = near_copy_sentence(copy, folds=0)
    assert upload.startswith("This image is a near copy of malignant (51).png, a malignant image this run learned "
                             "from: this run trained on it.")
    assert "remembers" in upload and "filed" not in upload
    conflict = near_copy_sentence(copy, folds=5, label="benign")
    assert conflict.endswith(" This one is filed as benign, that one as malignant: one of the two labels is wrong, "
                             "or the case is ambiguous.")
    assert "4 of this run's 5 fold models trained on it" in conflict
    assert near_copy_sentence(copy, folds=0, label="malignant") == upload  # the same class: nothing to add
    missed = near_copy_sentence(copy, folds=3, label="malignant", answer="benign")  # BUSI's malignant (10).png
    assert "2 of this run's 3 fold models trained on it" in missed and "remembers rather than" not in missed
    assert missed.endswith("Yet it answers benign, not malignant as that image is filed: training on an image does "
                           "not make a model remember it, so this mistake is a real one.")
    assert near_copy_sentence(copy, folds=0, answer="malignant") == upload  # a right answer: as before
    # BUSI's benign (42).png is filed benign, its copy malignant (51).png malignant: answering benign is no mistake.
    agrees = near_copy_sentence(copy, folds=3, label="benign", answer="benign")
    assert "It answers benign, as this image is filed, not malignant as that one is. This one is filed as benign" in agrees
    assert "mistake" not in agrees and "remembers" not in agrees
    echoes = near_copy_sentence(copy, folds=3, label="benign", answer="malignant")
    assert "It answers malignant, as that image is filed, not benign as this one is: it may remember that one." in echoes
    neither = near_copy_sentence(copy, folds=3, label="benign", answer="normal")
    assert "Yet it answers normal, not malignant as that image is filed" in neither
    same = NearCopy("/d/a.png", "val", "", bits=0, same_pixels=True)
    assert near_copy_sentence(same, folds=0).startswith("This image is the same picture as a.png, one of the images "
                                                        "this run learned from: this run chose its best epoch")


def test_no_near_copy_check_without_training_files_on_this_machine(finished_run):
    from medcls.inference.seen import lookalikes

    store, run_id = finished_run
    seen = learned_from(store, run_id)
    moved = {path + ".gone": split for path, split in seen.splits.items()}
    assert lookalikes(type(seen)(moved, {}, 0, {})) is None


def test_an_item_read_from_elsewhere_is_known_by_its_contents(tmp_path):
    # The run read breast.npz from its path and a folder from its place; the sidebar has the upload of the same file
    # and a copy of the folder. Their items are the ones it learned from, not new images.
    from medcls.inference.seen import LearnedFrom

    npz, upload = tmp_path / "breast.npz", tmp_path / "uploads" / "3b1e3ae009f0-breast.npz"
    image, copy = tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"
    for path, data in ((npz, b"npz bytes"), (upload, b"npz bytes"), (image, b"png!"), (copy, b"png!")):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    twin = (tmp_path / "a" / "y.png")
    twin.write_bytes(b"png!")  # a byte-identical duplicate inside the run's own data: a near copy's case
    seen = LearnedFrom({f"{npz}::train/3": "train", f"{npz}::test/0": "test", str(image): "train", str(twin): "test"},
                       {4: (str(image),)}, folds=0, learning=("train",))
    assert seen.split_of(path=f"{upload}::train/3") == (f"{npz}::train/3", "train")
    assert seen.split_of(path=f"{upload}::test/0") is None       # a test image stays one
    assert seen.split_of(path=str(copy)) == (str(image), "train")
    assert seen.split_of(path=str(twin)) is None                 # its own test image, not the training file
    upload.write_bytes(b"other bytes")
    assert seen.split_of(path=f"{upload}::train/3") is None      # another file with the same name
