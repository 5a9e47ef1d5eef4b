"""What the data explorer and the Train page say about the images themselves."""

from __future__ import annotations

import numpy as np

from medcls.config import DataConfig
from medcls.data import load_dataset
from medcls.data.explore import enlargement_note, image_properties, typical_side


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
