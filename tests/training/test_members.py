"""An ensemble's members: what an interrupted run keeps of the finished ones, and when it refuses to keep them."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from medcls.data.spec import DataError
from medcls.inference.proba import predict_proba
from medcls.training.crossval import cross_validate, fold_assignment, pool_of, subset
from medcls.training.members import kept_history, kept_members, members_resumed_note, members_state
from medcls.training.pipeline import prepare_data


@pytest.fixture
def finished_folds(class_dataset, synth):
    cfg = synth.config(class_dataset, folds=2, epochs=2, checkpoint="best")
    data = prepare_data(cfg)
    kept: list = []
    result = cross_validate(cfg, data, on_member_end=lambda members: kept.append(members_state(members)))
    return cfg, data, result, kept


def test_the_state_after_the_first_fold_gives_that_fold_back_as_it_was(finished_folds):
    cfg, data, result, states = finished_folds
    assert [len(s["members"]) for s in states] == [1, 2]  # saved after each fold
    state = states[0]
    pool = pool_of(data)
    assignment = fold_assignment(cfg, pool, data.classes)
    parts = [replace(data, train=subset(pool, np.flatnonzero(assignment != fold)),
                     val=subset(pool, np.flatnonzero(assignment == fold))) for fold in (0, 1)]
    (member,) = kept_members(state, cfg, parts)
    first = result.model.members[0]
    images = data.test.images
    assert np.allclose(predict_proba(member.model, images), predict_proba(first, images), atol=1e-6)
    assert member.precision == state["precision"] and member.fit.best_epoch == result.cv.scores[0].best_epoch
    assert [h.epoch for h in member.fit.history] == [1, 2][:result.cv.scores[0].epochs]
    assert member.probs["val"] == pytest.approx(state["members"][0]["val_probs"].numpy())
    assert member.metrics["val"].macro_f1 == pytest.approx(result.cv.scores[0].macro_f1)
    assert {h.fold for h in kept_history(state)} == {1}


def test_a_state_of_other_data_or_more_models_than_the_run_trains_is_refused(finished_folds):
    cfg, data, result, states = finished_folds
    changed = {**states[0], "data_fingerprint": "another dataset"}
    with pytest.raises(DataError, match="dataset changed since this run started"):
        kept_members(changed, cfg, [data, data])
    with pytest.raises(DataError, match="holds 2 finished models, more than the 1 it trains"):
        kept_members(states[1], cfg, [data])
    wrong_shape = {**states[0], "members": [{**states[0]["members"][0], "weights": {"w": torch.zeros(1)}}]}
    with pytest.raises(DataError, match="models of another shape"):
        kept_members(wrong_shape, cfg, [data, data])


def test_the_resume_note_names_what_was_kept_and_what_trains_next():
    assert members_resumed_note(1, 3, "fold") == ("Resumed after fold 1 of 3: the finished model was kept as it "
                                                  "was, and fold 2 started from its first epoch.")
    assert members_resumed_note(2, 3, "bagged model").startswith("Resumed after bagged model 2 of 3: the 2 "
                                                                 "finished models were kept as they were")
    assert members_resumed_note(3, 3, "fold") == ("Resumed after its last fold (3 of 3): the 3 finished models "
                                                  "were kept and tested.")
