"""medcls: train, compare and try image classifiers on medical images, fast on a CPU.

The library behind the medcls dashboard and command line. It never imports
Streamlit. Main entry points:

- :class:`medcls.config.TrainConfig`: everything a run needs, with plain-language help.
- :func:`medcls.data.load_dataset` / :func:`medcls.data.decode_dataset`: datasets.
- :func:`medcls.models.create_model` / :func:`medcls.models.list_models`: the model registry.
- :func:`medcls.training.execute_run`: train a run into the :class:`medcls.runs.RunStore`.
- :func:`medcls.predict.load_predictor`: class probabilities for one image.
"""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
