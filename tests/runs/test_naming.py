"""Run and dataset names: short, and telling datasets apart."""

from __future__ import annotations

import pytest

from medcls.runs.naming import dataset_name


@pytest.mark.parametrize("source, name", [
    ("", "phantoms"),
    ("/data/busi", "busi"),
    ("/data/busi/", "busi"),
    ("/data/busi/split.csv", "busi"),            # a manifest is named after its folder
    ("/data/pneumoniamnist.npz", "pneumoniamnist"),
    ("manifest.csv", "manifest"),
])
def test_a_dataset_is_named_after_its_folder_or_file(source, name):
    assert dataset_name(source) == name


@pytest.mark.parametrize("source, name", [
    ("/x/derm/data", "derm/data"),
    ("/x/chest_xray/train/", "chest_xray/train"),
    ("/x/ham10000/Images", "ham10000/Images"),
    ("/x/skin/data.npz", "skin/data"),
    ("/x/ham10000/images/labels.csv", "ham10000/images"),
    ("images", "images"),                          # nothing above it to tell
])
def test_a_generic_folder_name_keeps_its_parent(source, name):
    # 'data', 'images' or 'train' alone would give two datasets one name, and tell a user nothing
    assert dataset_name(source) == name


def test_bagged_models_are_named_so_that_they_differ_from_the_default_beside_them():
    from medcls.config import TrainConfig
    from medcls.runs.naming import default_run_name

    busi = TrainConfig().with_options(source="/data/busi", image_size=192)
    assert default_run_name(busi) == "busi · small_cnn · oversample · 192 px"
    assert default_run_name(busi.with_options(bagged_models=3)) == "busi · small_cnn · oversample · 192 px · 3 bagged"


def test_an_upload_is_named_as_the_person_uploaded_it(tmp_path, monkeypatch):
    # The uploads folder keeps each upload under a name with its content hash (medcls.data.uploads); a run trained on
    # 'breast.npz' was named '3b1e3ae009f0-breast · small_cnn · …' after it.
    from medcls.data.uploads import Uploads

    monkeypatch.setenv("MEDCLS_DATA_DIR", str(tmp_path / "data"))
    uploads = Uploads()
    npz = uploads.add_npz(b"not read here", "breast.npz")
    assert npz.name != "breast.npz" and dataset_name(str(npz)) == "breast"
    assert uploads.file_name_of(npz) == "breast.npz"
    skin = uploads.root / "skin-0123456789ab"  # a .zip unpacked: '<name>-<content hash>'
    (skin / "data").mkdir(parents=True)
    assert dataset_name(str(skin)) == "skin" and dataset_name(str(skin / "data")) == "skin/data"
    assert uploads.file_name_of(skin / "data") == "skin.zip"
    assert dataset_name(str(tmp_path / "scans-0123456789ab")) == "scans-0123456789ab"  # not an upload: as it is
