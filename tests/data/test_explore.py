"""What the data explorer and the Train page say about the images themselves."""

from __future__ import annotations

import numpy as np
from PIL import Image

from medcls.config import DataConfig
from medcls.data import load_dataset
from medcls.data.explore import (
    detail_note,
    enlargement_note,
    image_properties,
    model_view_caption,
    shrink_note,
    squash_note,
    typical_side,
)


def _npz(path, side: int, n: int = 12):
    rng = np.random.default_rng(0)
    np.savez(path, train_images=rng.integers(0, 256, (n, side, side), dtype=np.uint8),
             train_labels=(np.arange(n) % 2).reshape(-1, 1), val_images=rng.integers(0, 256, (4, side, side),
                                                                                     dtype=np.uint8),
             val_labels=np.array([[0], [1], [0], [1]]))
    return path


def test_typical_side_reads_file_headers_and_npz_shapes(class_dataset, tmp_path):
    assert typical_side(load_dataset(DataConfig(source=str(class_dataset)))) == 32
    rows = image_properties(load_dataset(DataConfig(source=str(class_dataset))))
    assert len(rows) == 36 and {(r["width"], r["height"]) for r in rows} == {(32, 32)}
    assert typical_side(load_dataset(DataConfig(source=str(_npz(tmp_path / "m.npz", 28))))) == 28


def test_enlarging_small_images_is_said_with_its_cost():
    note = enlargement_note(128, 28)
    assert "typically 28 px" in note and "enlarged 4.6 times" in note and "about 21 times as many pixels" in note
    assert enlargement_note(128, 110) is None   # about the images' own size: nothing to say
    assert enlargement_note(128, 500) is None   # shrunk, not enlarged
    assert enlargement_note(128, None) is None  # unknown


def test_shrinking_large_images_a_lot_is_said_with_what_it_loses():
    note = shrink_note(128, 500)
    assert "typically 500 px" in note and "shrunk 3.9 times" in note and "stands for about 15 of theirs" in note
    assert "estimate below" in note  # the cost of a larger size is measured, not claimed
    assert shrink_note(160, 500) and "shrunk 3.1 times" in shrink_note(160, 500)
    assert shrink_note(128, 200) is None  # under twice the training size: little is lost
    assert shrink_note(128, 28) is None   # enlarged, not shrunk
    assert shrink_note(128, None) is None  # unknown
    assert enlargement_note(128, 500) is None and enlargement_note(128, 28) and not shrink_note(128, 28)


def test_images_that_are_not_square_are_said_to_be_squeezed_by_how_much():
    wide = [{"width": 800, "height": 600}] * 6 + [{"width": 640, "height": 480}] * 2
    note = squash_note(wide, 192)
    assert note.startswith("None of the 8 images is square (most often 800 × 600 px).")
    assert "to 192 × 192 px" in note and "squeezed sideways to 0.75 of their width for their height" in note
    tall = [{"width": 300, "height": 600}] + [{"width": 500, "height": 500}] * 4
    note = squash_note(tall, 128)
    assert note.startswith("1 of the 5 images is not square (300 × 600 px).")
    assert "squeezed from top to bottom to 0.50 of their height for their width" in note
    sampled = squash_note(wide, 192, of=5_000)  # the rows are a sample: the note says of how many
    assert sampled.startswith("None of the 8 images sampled from 5,000 is square")
    assert squash_note([{"width": 520, "height": 500}] * 5, 128) is None  # 4% off square: nothing to say
    # one odd image among many squares is not the dataset's shape
    assert squash_note([{"width": 800, "height": 400}] + [{"width": 256, "height": 256}] * 19, 128) is None
    assert squash_note([], 128) is None


def test_images_of_many_shapes_are_said_to_be_squeezed_each_its_own_way():
    """No 'most often 400 × 360 px' when that shape is 2 of 100: the note gives the range of shapes and squeezes."""
    varied = [{"width": 400, "height": 360}] * 2 + [{"width": 150 + 10 * i, "height": 400} for i in range(8)] + \
        [{"width": 400, "height": 200}, {"width": 256, "height": 256}]
    note = squash_note(varied, 128)
    assert note.startswith("11 of the 12 images are not square, and their shapes vary (150 to 400 px wide, 200 to "
                           "400 px tall; 3 wider than tall, 8 taller than wide).")
    assert "most often" not in note and "to 128 × 128 px" in note
    assert "keep 0.38 to 0.90 of their length along that side" in note  # 150/400 and 360/400


def test_the_sizes_read_from_files_give_the_note(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        for i in range(4):
            Image.fromarray(np.full((40, 80), i * 40, np.uint8)).save(tmp_path / name / f"{i}.png")  # 80 wide
    rows = image_properties(load_dataset(DataConfig(source=str(tmp_path))))
    assert "80 × 40 px" in squash_note(rows, 64) and "0.50 of their width" in squash_note(rows, 64)


def test_the_model_view_caption_says_how_the_image_was_squeezed_from_a_path_or_bytes(tmp_path):
    wide, square = tmp_path / "wide.png", tmp_path / "square.png"
    Image.fromarray(np.zeros((192, 256), np.uint8)).save(wide)
    Image.fromarray(np.zeros((100, 104), np.uint8)).save(square)  # 4% off square: not worth a word
    caption = model_view_caption(str(wide), 192)
    assert caption.replace("\u00a0", " ") == "as the model sees it (256 × 192 px squeezed to 192 × 192)"
    assert "256\u00a0×\u00a0192\u00a0px" in caption  # a size never breaks over two lines of a narrow caption
    in_memory = model_view_caption(wide.read_bytes(), 128).replace("\u00a0", " ")  # an upload's bytes
    assert in_memory == "as the model sees it (256 × 192 px squeezed to 128 × 128)"
    assert model_view_caption(str(square), 128) == "as the model sees it"
    assert model_view_caption(b"not an image", 128) == "as the model sees it"  # unreadable header: no claim


def test_a_validation_split_far_smaller_than_it_could_be_is_named_with_its_fix(tmp_path, split_dataset, synth):
    from medcls.data.explore import small_validation_note

    # Like the chest X-ray set's own split: a handful of validation images against many training images.
    root = synth.split_folders(tmp_path / "cxr", {"train": {"benign": 60, "malignant": 60, "normal": 60},
                                               "val": {"benign": 2, "malignant": 2, "normal": 20},
                                               "test": {"benign": 3, "malignant": 3, "normal": 3}})
    note = small_validation_note(load_dataset(DataConfig(source=str(root))))
    assert note.startswith("The validation split holds only 2 benign and 2 malignant images (24 in all, against "
                           "180 training images)")
    assert "'Make my own split' (command line: --own-split)" in note
    # A small validation split in proportion to a small dataset (3 of 13 images a class) is no news.
    assert small_validation_note(load_dataset(DataConfig(source=str(split_dataset)))) is None
    assert small_validation_note(load_dataset(DataConfig(source=str(root), own_split=True))) is None


def test_the_small_validation_note_only_offers_a_fix_that_mends_something(tmp_path, synth):
    from medcls.data.explore import small_validation_note

    # Class folders without a split, one class of a single image: medcls's own split keeps it in train (and warns),
    # so a note offering 'Make my own split' would offer the split the data already has.
    rare = synth.class_folders(tmp_path / "rare", {"benign": 30, "malignant": 30, "rare": 1})
    spec = load_dataset(DataConfig(source=str(rare)))
    assert spec.counts()["val"].get("rare", 0) == 0 and spec.counts()["val"]["benign"] > 0
    assert small_validation_note(spec) is None
    # A dataset's own split: a class of one image (no split could give it a validation image) is not named,
    # a class of 40 training images and none in val is, as "no", not "0".
    own = synth.split_folders(tmp_path / "own", {"train": {"benign": 40, "malignant": 40, "rare": 1},
                                                  "val": {"benign": 1, "malignant": 0},
                                                  "test": {"benign": 3, "malignant": 3, "rare": 0}})
    note = small_validation_note(load_dataset(DataConfig(source=str(own))))
    assert note.startswith("The validation split holds only 1 benign and no malignant images (1 in all, against 81 "
                           "training images)")
    assert "rare" not in note.split(". A run")[0]


def test_a_dataset_without_validation_images_says_what_a_run_keeps(class_dataset):
    from medcls.data.explore import NO_VALIDATION_NOTE, small_validation_note

    # Class folders without a split and a validation share of 0: no image validates.
    spec = load_dataset(DataConfig(source=str(class_dataset), val_fraction=0.0))
    assert not spec.counts()["val"] or not sum(spec.counts()["val"].values())
    assert small_validation_note(spec) == NO_VALIDATION_NOTE
    assert "keeps the last one's weights" in NO_VALIDATION_NOTE and "--val-fraction" in NO_VALIDATION_NOTE


def test_an_imbalanced_training_split_is_said_with_the_fix_training_already_applies(tmp_path, synth):
    from medcls.config import TrainConfig
    from medcls.data.explore import imbalance_sentence

    root = synth.split_folders(tmp_path / "rare", {"train": {"benign": 30, "malignant": 5},
                                                 "val": {"benign": 2, "malignant": 2},
                                                 "test": {"benign": 2, "malignant": 2}})
    sentence = imbalance_sentence(load_dataset(DataConfig(source=str(root))))
    assert sentence.startswith("Training split: benign 86%, malignant 14%. **Imbalanced: 6.0 benign images for "
                               "every malignant image.**")
    # The default already oversamples; the sentence must not send the user to switch on what is on.
    assert TrainConfig().imbalance == "oversample"
    assert "Training oversamples the rarer classes unless you change 'Imbalance strategy'" in sentence


def test_an_image_with_much_finer_or_coarser_detail_than_the_models_training_images_is_named(tmp_path):
    def png(side: int) -> bytes:
        path = tmp_path / f"{side}.png"
        Image.fromarray(np.zeros((side, side + 10), dtype=np.uint8)).save(path)
        return path.read_bytes()

    # A model of 28 px MedMNIST images (enlarged to 128 px), shown a 256 px scan: 128 / 28 = 4.6 times finer.
    finer = detail_note(png(256), trained_side=28, image_size=128)
    assert "256 px on its shorter side" in finer and "typically 28 px" in finer and "4.6 times finer" in finer
    assert "Shrunk to about 28 px first" in finer
    coarser = detail_note(png(28), trained_side=256, image_size=192)  # a BUSI model shown a MedMNIST image
    assert "only 28 px" in coarser and "6.9 times less detail" in coarser
    assert detail_note(png(500), trained_side=256, image_size=192) is None  # both fill its 192 px input
    assert detail_note(png(40), trained_side=28, image_size=128) is None    # alike
    assert detail_note(png(256), trained_side=0, image_size=128) is None    # a run that did not record its images
    assert detail_note(b"not an image", trained_side=28, image_size=128) is None
    # A picked array of a MedMNIST file, given to a model of BUSI's 256 px images at 192 px.
    spec = load_dataset(DataConfig(source=str(_npz(tmp_path / "tiny.npz", side=28))))
    assert "only 28 px" in detail_note(spec.items[0].path, trained_side=256, image_size=192)


def test_classes_named_by_numbers_are_quoted_beside_counts():
    from medcls.data.explore import imbalance_sentence
    from medcls.data.spec import DatasetSpec, Item

    items = [Item(f"/d/{i}.png", 0 if i < 10 else 1, "train") for i in range(12)]
    sentence = imbalance_sentence(DatasetSpec("/d", "class_folders", ["0", "1"], items))
    assert "Training split: '0' 83%, '1' 17%." in sentence
    assert "5.0 '0' images for every '1' image" in sentence and "ignores '1' can" in sentence
