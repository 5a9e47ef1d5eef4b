"""Bagged models: k models that each learn from every train + val image, validate none, and predict together."""

from __future__ import annotations

import numpy as np
import pytest

from medcls.config import ConfigError
from medcls.inference.proba import predict_proba
from medcls.models.ensemble import FoldEnsemble
from medcls.training.bagging import train_bagged
from medcls.training.crossval import fit
from medcls.training.engine import Callback
from medcls.training.pipeline import prepare_data


class Spy(Callback):
    """What each member trains and validates on."""

    def __init__(self, seen):
        self.seen = seen

    def on_fit_start(self, trainer):
        self.seen.append((len(trainer.train_data), len(trainer.val_data)))


def test_each_bagged_model_learns_from_every_train_and_val_image_and_validates_none(class_dataset, synth):
    seen: list[tuple[int, int]] = []
    cfg = synth.config(class_dataset, bagged_models=2, epochs=2)
    data = prepare_data(cfg)
    result = train_bagged(cfg, data, callbacks_for=lambda member, members: [Spy(seen)])
    pooled = len(data.train) + len(data.val)
    assert seen == [(pooled, 0), (pooled, 0)]
    assert isinstance(result.model, FoldEnsemble) and len(result.model.members) == 2
    assert result.member_epochs == (2, 2) and not result.cancelled and result.cv is None
    assert set(result.metrics) == {"test"} and result.metrics["test"].n == len(data.test)
    assert len(result.data.train) == pooled and len(result.data.val) == 0
    # Seeds seed, seed + 1: the members differ, and the ensemble answers with their mean.
    first, second = (predict_proba(m, data.test.images) for m in result.model.members)
    assert not np.allclose(first, second)
    np.testing.assert_allclose(result.probs["test"], predict_proba(result.model, data.test.images, tta=cfg.tta),
                               atol=1e-5)


def test_fit_trains_bagged_models_when_asked(class_dataset, synth):
    result = fit(synth.config(class_dataset, bagged_models=2, epochs=1))
    assert len(result.model.members) == 2 and result.member_epochs == (1, 1) and result.cv is None


def test_a_stop_in_the_second_bagged_model_keeps_both_so_far(class_dataset, synth):
    state = {"fits": 0}

    class StopInModelTwo(Callback):
        def on_fit_start(self, trainer):
            state["fits"] += 1

        def on_epoch_end(self, trainer, record):
            state["stop"] = state["fits"] == 2

    cfg = synth.config(class_dataset, bagged_models=3, epochs=3)
    result = train_bagged(cfg, callbacks_for=lambda member, members: [StopInModelTwo()],
                          should_cancel=lambda: state.get("stop", False))
    assert result.cancelled and len(result.model.members) == 2 and result.member_epochs == (3, 1)
    assert "test" in result.metrics


def test_bagged_models_are_refused_alone_or_beside_folds_and_choose_no_epoch(class_dataset, synth):
    with pytest.raises(ConfigError, match="0 \\(none\\) or at least 2"):
        synth.config(class_dataset, bagged_models=1)
    with pytest.raises(ConfigError, match="not both"):
        synth.config(class_dataset, bagged_models=2, folds=3)
    # Nothing is validated, so the best epoch (and its patience and metric) does not apply: the last is kept.
    with pytest.raises(ConfigError, match="Checkpoint kept has no effect here: it applies only when bagged models is 0"):
        synth.config(class_dataset, bagged_models=2, checkpoint="best")
    cfg = synth.config(class_dataset, checkpoint="best", patience=2).with_options(strict=False, bagged_models=2)
    assert cfg.keeps_last() and cfg.stopping_patience() == 0
    # The automatic fold ensemble does not apply either.
    assert "small_data_ensemble" not in cfg.applicable()
