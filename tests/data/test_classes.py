"""Class names across splits: case-insensitive, aliases, and the seed's cancer/malignant mismatch."""

from __future__ import annotations

import pytest

from medcls.config import DataConfig
from medcls.data import ClassResolver, DataError, default_focus_class, load_dataset
from medcls.data.classes import parse_aliases


@pytest.fixture
def seed_like_dataset(tmp_path, synth):
    """The seed notebook's layout: train/ and val/ say 'cancer', test/ says 'malignant'."""
    return synth.split_folders(tmp_path / "seed", {
        "train": {"benign": 8, "cancer": 8, "normal": 8},
        "val": {"benign": 2, "cancer": 2, "normal": 2},
        "test": {"benign": 2, "malignant": 2, "normal": 2},
    })


def test_mismatched_class_names_stop_loading_with_a_fix(seed_like_dataset):
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(source=str(seed_like_dataset)))
    message = str(info.value)
    assert "malignant" in message and "cancer" in message
    assert "malignant=cancer" in message
    assert "test" in message


def test_an_alias_merges_the_classes(seed_like_dataset):
    spec = load_dataset(DataConfig(source=str(seed_like_dataset), class_aliases=("malignant=cancer",)))
    assert spec.classes == ["benign", "cancer", "normal"]
    cancer = spec.classes.index("cancer")
    test_cancer = [it for it in spec.split("test") if it.label == cancer]
    assert len(test_cancer) == 2 and all("/malignant/" in it.path for it in test_cancer)
    assert spec.counts()["train"]["cancer"] == 8


def test_aliases_match_case_insensitively(seed_like_dataset):
    spec = load_dataset(DataConfig(source=str(seed_like_dataset), class_aliases=("MALIGNANT = Cancer",)))
    assert len(spec.classes) == 3


def test_class_names_match_case_insensitively_and_train_spelling_wins(tmp_path, synth):
    root = synth.split_folders(tmp_path / "d", {
        "train": {"Benign": 6, "Malignant": 6},
        "val": {"benign": 2, "MALIGNANT": 2},
        "test": {"benign": 2, "malignant": 2},
    })
    spec = load_dataset(DataConfig(source=str(root)))
    assert spec.classes == ["Benign", "Malignant"]
    counts = spec.counts()
    assert counts["val"] == {"Benign": 2, "Malignant": 2} and counts["test"] == {"Benign": 2, "Malignant": 2}


def test_resolver_directly():
    resolver = ClassResolver(["malignant=cancer"])
    classes = resolver.resolve({"train": ["cancer", "benign"], "test": ["Malignant", "benign"]})
    assert classes == ["benign", "cancer"]
    assert resolver.canonical("Malignant") == "cancer"
    assert resolver.canonical(" benign ") == "benign"
    with pytest.raises(DataError, match="not a class in train"):
        ClassResolver().resolve({"train": ["a", "b"], "val": ["a", "b", "c", "d"]})


def test_parse_aliases_normalises_and_refuses_bad_entries():
    assert parse_aliases(["Malignant = Cancer", "Tumour=malignant"]) == {"malignant": "cancer",
                                                                          "tumour": "malignant"}
    with pytest.raises(DataError, match="alias=class"):
        parse_aliases(["malignant"])


def test_default_focus_class():
    assert default_focus_class(["benign", "malignant", "normal"]) == "malignant"
    assert default_focus_class(["cancer", "non-cancer"]) == "cancer"
    assert default_focus_class(["benign", "normal"], {"benign": 40, "normal": 7}) == "normal"  # the rarest


@pytest.mark.parametrize("classes, counts, focus", [
    (["NORMAL", "PNEUMONIA"], {"NORMAL": 1341, "PNEUMONIA": 3875}, "PNEUMONIA"),  # the finding, though common
    (["glioma", "meningioma", "notumor", "pituitary"], {"notumor": 5}, "glioma"),   # never the no-tumour class
    (["abnormal", "normal"], {"abnormal": 90, "normal": 10}, "abnormal"),          # 'abnormal' is not 'normal'
    (["COVID", "Lung_Opacity", "Normal", "Viral Pneumonia"], None, "COVID"),
    (["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"], {"df": 115, "mel": 1113, "nv": 6705}, "mel"),  # HAM10000
    (["camel", "melon"], {"camel": 9, "melon": 3}, "melon"),                       # 'mel' only as a word
    (["no_tumor", "yes"], {"no_tumor": 10, "yes": 50}, "no_tumor"),                # no finding named: the rarest
    (["benign tumour", "normal"], {"benign tumour": 3, "normal": 9}, "benign tumour"),
    (["adipose", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"], None,  # PathMNIST
     "colorectal adenocarcinoma epithelium"),
    (["tumor-adjacent tissue", "tumor"], None, "tumor"),
])
def test_the_default_focus_is_the_finding_to_catch_in_common_medical_datasets(classes, counts, focus):
    assert default_focus_class(classes, counts) == focus


def test_the_focus_note_says_which_class_is_tracked_and_why():
    from medcls.config import ConfigError
    from medcls.data.classes import focus_note, resolve_focus_class

    assert focus_note(["benign", "malignant", "normal"], "") == \
        "Here that is malignant: its recall is tracked on every epoch."
    rare = focus_note(["cat", "dog"], "", {"cat": 40, "dog": 7})
    assert "no such class" in rare and "the rarest, dog," in rare         # no cancer here: not "cancer recall"
    assert focus_note(["benign", "malignant"], "BENIGN").startswith("Here it is benign, as chosen")
    assert resolve_focus_class(["benign", "malignant"], " Malignant ") == "malignant"
    with pytest.raises(ConfigError, match="'tumour' is not in this dataset .classes: benign, malignant."):
        focus_note(["benign", "malignant"], "tumour")


def test_a_class_named_by_a_number_is_quoted_in_the_focus_note():
    from medcls.data.classes import focus_note

    assert "the rarest, '2', is the focus class" in focus_note(["0", "1", "2"], "", {"0": 90, "1": 20, "2": 9})
