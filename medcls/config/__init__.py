"""Typed, frozen run configuration; every option is declared once (help, label, group, bounds, when it applies).

- :mod:`.options`: how an option is declared (``option``, ``when``, the form groups);
- :mod:`.schema`: ``TrainConfig``, ``DataConfig``, ``AugmentConfig`` (a model's own options are declared by
  the model, see :mod:`medcls.models`);
- :mod:`.table`: every option by flat name (``option_table``);
- :mod:`.describe`: values and differences in words;
- :mod:`.serialize`: JSON and text to typed values, and configs of earlier versions.
"""

from .describe import (
                       Difference,
                       applies_text,
                       describe_differences,
                       differences,
                       format_value,
                       label,
                       sentence_label,
                       settings_rows,
)
from .options import (
                       GROUPS,
                       MAX_SEED,
                       Condition,
                       ConfigError,
                       Group,
                       Option,
                       check_fields,
                       check_value,
                       option,
                       option_of,
                       when,
)
from .schema import (
                       IMBALANCE_STRATEGIES,
                       MAX_OVERSAMPLE,
                       OPTIMIZERS,
                       SCHEDULERS,
                       SELECT_METRICS,
                       AugmentConfig,
                       DataConfig,
                       TrainConfig,
)
from .table import MODEL_SECTION, OptionSpec, option_spec, option_table

__all__ = [
    "Difference", "applies_text", "describe_differences", "differences", "format_value", "label", "sentence_label",
    "settings_rows", "GROUPS", "MAX_SEED", "Condition", "ConfigError", "Group", "Option", "check_value", "option",
    "option_of", "when", "IMBALANCE_STRATEGIES", "MAX_OVERSAMPLE", "OPTIMIZERS", "SCHEDULERS", "SELECT_METRICS",
    "AugmentConfig", "DataConfig", "TrainConfig", "check_fields", "MODEL_SECTION", "OptionSpec", "option_spec",
    "option_table",
]
