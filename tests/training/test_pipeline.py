"""train_in_memory: the pipeline from config to trained model, without a run store."""

from __future__ import annotations

import pytest
import torch

from medcls.training.pipeline import train_in_memory


@pytest.mark.parametrize("strategy", ["none", "weighted_loss", "weighted_sampler", "oversample"])
def test_every_imbalance_strategy_trains(class_dataset, synth, strategy):
    result = train_in_memory(synth.config(class_dataset, imbalance=strategy, epochs=1))
    assert len(result.fit.history) == 1
    weight = result.trainer.loss_fn.weight
    assert (weight is not None) == (strategy == "weighted_loss")



def test_learning_rate_schedules_are_applied(class_dataset, synth):
    lrs = lambda r: [h.lr for h in r.fit.history]  # noqa: E731
    step = train_in_memory(synth.config(class_dataset, epochs=3, scheduler="step", step_size=1, gamma=0.5, lr=0.01))
    assert lrs(step) == pytest.approx([0.01, 0.005, 0.0025])
    constant = train_in_memory(synth.config(class_dataset, epochs=2, scheduler="none", lr=0.01))
    assert lrs(constant) == pytest.approx([0.01, 0.01])
    cosine = train_in_memory(synth.config(class_dataset, epochs=3, scheduler="cosine", lr=0.01, optimizer="sgd"))
    assert lrs(cosine)[0] == pytest.approx(0.01) and lrs(cosine)[2] < lrs(cosine)[1] < 0.01



def test_train_in_memory_returns_the_best_weights(class_dataset, synth):
    result = train_in_memory(synth.config(class_dataset, epochs=3))
    best = result.checkpoint.state
    live = result.model.state_dict()
    assert all(torch.equal(live[k], best[k]) for k in best)



def test_a_run_without_validation_images_trains_every_epoch_and_keeps_the_last(class_dataset, synth):
    # Before: every epoch scored 0 on no images, so the first epoch's weights were kept and early stopping ended
    # the run at half its epochs.
    # Even a run set to keep its best epoch, with early stopping after one epoch without progress:
    result = train_in_memory(synth.config(class_dataset, epochs=4, checkpoint="best", patience=1, val_fraction=0.0))
    assert len(result.data.val) == 0 and "val" not in result.metrics
    assert [h.epoch for h in result.fit.history] == [1, 2, 3, 4] and not result.fit.stopped_early
    assert result.fit.best_epoch == 4 and not any(h.validated for h in result.fit.history)
    kept, live = result.checkpoint.state, result.trainer.eval_model.state_dict()
    assert all(torch.equal(live[k], kept[k]) for k in kept)  # the last epoch's (averaged) weights


def test_keeping_the_last_epoch_trains_every_epoch_and_keeps_its_weights(class_dataset, synth):
    cfg = synth.config(class_dataset, epochs=4, checkpoint="last")
    assert cfg.patience == 5 and cfg.stopping_patience() == 0  # patience does not apply: no early stopping
    result = train_in_memory(cfg)
    assert len(result.data.val) and all(h.validated for h in result.fit.history)  # still validated: curves, a check
    assert [h.epoch for h in result.fit.history] == [1, 2, 3, 4] and result.fit.best_epoch == 4
    kept, live = result.checkpoint.state, result.trainer.eval_model.state_dict()
    assert all(torch.equal(live[k], kept[k]) for k in kept)


def test_focus_class_and_focus_recall_selection(class_dataset, synth):
    result = train_in_memory(synth.config(class_dataset, focus_class="MALIGNANT", select_metric="focus_recall",
                                          checkpoint="best", epochs=1))
    assert result.data.focus_class == "malignant"
    record = result.fit.history[0]
    assert record.score == record.val_recall["malignant"]


def test_a_limited_balanced_epoch_is_explained_in_the_run_notes(tmp_path, synth):
    data = synth.class_folders(tmp_path / "skewed", {"benign": 60, "malignant": 6, "normal": 4})
    result = train_in_memory(synth.config(data, epochs=1, imbalance="oversample", small_data_ensemble=False))
    assert any("each epoch draws the next share" in note for note in result.notes)
    assert len(result.trainer.sampler) == 2 * len(result.data.train)


def test_a_weight_averaging_decay_the_run_never_reaches_changes_nothing_and_the_run_says_so(class_dataset, synth):
    # Two epochs of a tiny dataset take a handful of steps: the warm-up reaches neither 0.995 nor 0.999.
    runs = {decay: train_in_memory(synth.config(class_dataset, epochs=2, ema_decay=decay, precision="fp32"))
            for decay in (0.995, 0.999, 0.15)}
    state = {decay: r.model.state_dict() for decay, r in runs.items()}
    assert all(torch.equal(state[0.995][k], state[0.999][k]) for k in state[0.995])  # the note's claim
    assert not all(torch.equal(state[0.995][k], state[0.15][k]) for k in state[0.995])  # a reached decay changes it
    note = next(n for n in runs[0.999].notes if n.startswith("Weight averaging"))
    planned = 2 * runs[0.999].trainer.batches_per_epoch()
    assert "a decay of 0.999 is reached only after 8,990 training steps" in note
    assert f"this run plans only {planned:,}." in note and planned < 8990
    assert not any(n.startswith("Weight averaging") for n in runs[0.15].notes)  # reached after 1 step


def test_the_default_decay_and_long_enough_runs_have_no_averaging_note():
    from medcls.config import TrainConfig
    from medcls.training.pipeline import averaging_note

    cfg = TrainConfig()  # 20 epochs
    assert averaging_note(cfg, steps_per_epoch=1) is None  # the default is not a choice to explain
    assert averaging_note(cfg.with_options(ema_decay=0.0), steps_per_epoch=1) is None  # off
    assert averaging_note(cfg.with_options(ema_decay=0.995), steps_per_epoch=90) is None  # 1,800 > 1,790 steps
    assert averaging_note(cfg.with_options(ema_decay=0.995), steps_per_epoch=89) is not None  # 1,780 < 1,790
