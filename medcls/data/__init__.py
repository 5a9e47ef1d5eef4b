"""Datasets: discovery, defensive decoding, the decoded-image cache, augmentation, phantoms."""

from .augment import BatchAugment, to_float
from .cache import DecodedDataset, DecodedSplit, decode_dataset
from .classes import ClassResolver, default_focus_class
from .imageio import IMAGE_FORMATS, IMAGE_SUFFIXES, ImageReadError, open_image, to_uint8
from .sources import detect_layout, load_dataset, synthetic_root
from .spec import SPLITS, DataError, DataReport, DatasetSpec, Item, Skipped

__all__ = [
    "BatchAugment", "to_float", "DecodedDataset", "DecodedSplit", "decode_dataset", "ClassResolver",
    "default_focus_class", "IMAGE_FORMATS", "IMAGE_SUFFIXES", "ImageReadError", "open_image", "to_uint8", "detect_layout",
    "load_dataset", "synthetic_root", "SPLITS", "DataError", "DataReport", "DatasetSpec", "Item", "Skipped",
]
