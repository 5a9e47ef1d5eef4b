"""Model registry and the built-in models.

``create_model(name, num_classes=..., image_size=..., in_channels=...)`` builds any
registered model; ``list_models()`` names them. Importing this package registers
the built-in models.
"""

from . import cnn, resnet  # noqa: F401  (registers the models)
from ._registry import ModelEntry, UnknownModelError, create_model, list_models, model_entry, register_model
from .base import ClassifierModel, count_parameters
from .cnn import CNN_PRESETS, CNNSpec, ConfigurableCNN, cnn_spec
from .resnet import ResNetTransfer, WeightsUnavailableError

__all__ = [
    "ModelEntry", "UnknownModelError", "create_model", "list_models", "model_entry", "register_model",
    "ClassifierModel", "count_parameters", "CNN_PRESETS", "CNNSpec", "ConfigurableCNN", "cnn_spec",
    "ResNetTransfer", "WeightsUnavailableError",
]
