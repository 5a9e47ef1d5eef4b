"""Model registry and the built-in models.

``create_model(name, num_classes=..., image_size=..., in_channels=...)`` builds any
registered model; ``list_models()`` names them. Every model declares its own typed
options (``CNNOptions``, ``ResNetOptions``). Importing this package registers the
built-in models.
"""

from . import cnn, resnet  # noqa: F401  (registers the models)
from ._registry import (
                        ModelEntry,
                        UnknownModelError,
                        create_model,
                        list_models,
                        model_entry,
                        model_option_types,
                        register_model,
)
from .base import ClassifierModel, count_parameters
from .cnn import CNNOptions, ConfigurableCNN
from .resnet import ResNetOptions, ResNetTransfer, WeightsUnavailableError

__all__ = [
    "ModelEntry", "UnknownModelError", "create_model", "list_models", "model_entry", "model_option_types",
    "register_model", "ClassifierModel", "count_parameters", "CNNOptions", "ConfigurableCNN", "ResNetOptions",
    "ResNetTransfer", "WeightsUnavailableError",
]
