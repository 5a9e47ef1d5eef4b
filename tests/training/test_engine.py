"""The training loop: epoch records, determinism, divergence, cancellation, early stopping, feature caching."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from medcls.data import to_float
from medcls.models import create_model
from medcls.training.callbacks import (
    BestCheckpoint,
    ConsoleProgress,
    EarlyStopping,
    ProgressMeter,
    WeightAveraging,
)
from medcls.training.engine import (
    Callback,
    EpochRecord,
    FitCancelled,
    NonFiniteLossError,
    TensorData,
    Trainer,
    batches_per_epoch,
)
from medcls.training.imbalance import EpochSampler
from medcls.training.pipeline import train_in_memory

CLASSES = ["benign", "malignant", "normal"]
RECORD_KEYS = {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1",
               "val_balanced_accuracy", "val_recall", "lr", "seconds", "images_per_s", "score", "best", "fold",
               "validated"}


def _data(n, seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    images = torch.randint(0, 60, (n, 1, 32, 32), dtype=torch.uint8, generator=g) + (labels * 80).to(torch.uint8).view(-1, 1, 1, 1)
    return TensorData(images, labels)


def make_trainer(*, epochs=2, lr=1e-2, n_train=24, n_val=12, batch_size=8, loss_fn=None, optimizer="adam",
                 callbacks=(), should_cancel=None, batch_norm=None):
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, image_size=32, in_channels=1,
                         **({} if batch_norm is None else {"batch_norm": batch_norm}))
    train, val = _data(n_train, 1), _data(n_val, 2)
    opt = (torch.optim.Adam if optimizer == "adam" else torch.optim.SGD)(model.parameters(), lr=lr)
    return Trainer(model, train, val, classes=CLASSES, loss_fn=loss_fn or nn.CrossEntropyLoss(), optimizer=opt,
                   scheduler=None, scheduler_interval="epoch",
                   sampler=EpochSampler(train.labels.numpy(), 3, "none", seed=0), batch_size=batch_size,
                   epochs=epochs, prepare=lambda images, train: to_float(images),
                   callbacks=[BestCheckpoint(), *callbacks], should_cancel=should_cancel)


def best_state(trainer):
    return next(cb for cb in trainer.callbacks if isinstance(cb, BestCheckpoint)).state


class Recorder(Callback):
    def __init__(self):
        self.events = []
        self.states = {}

    def on_fit_start(self, trainer):
        self.events.append("fit_start")

    def on_batch_end(self, trainer, event):
        self.events.append(f"{event.phase}_batch")

    def on_epoch_end(self, trainer, record):
        self.events.append("epoch_end")
        self.states[record.epoch] = copy.deepcopy(trainer.model.state_dict())

    def on_fit_end(self, trainer, result):
        self.events.append("fit_end")


def test_every_epoch_record_has_the_full_set_of_numbers():
    trainer = make_trainer(epochs=2)
    result = trainer.fit()
    assert [r.epoch for r in result.history] == [1, 2]
    for record in result.history:
        d = record.to_dict()
        assert set(d) == RECORD_KEYS
        assert d["train_loss"] > 0 and math.isfinite(d["train_loss"]) and math.isfinite(d["val_loss"])
        for key in ("train_accuracy", "val_accuracy", "val_macro_f1", "val_balanced_accuracy"):
            assert 0.0 <= d[key] <= 1.0, key
        assert set(d["val_recall"]) == set(CLASSES)
        assert all(v is None or 0 <= v <= 1 for v in d["val_recall"].values())
        assert d["lr"] == pytest.approx(1e-2) and d["seconds"] > 0 and d["images_per_s"] > 0
        assert d["score"] == d["val_macro_f1"]  # the default select metric
    assert result.history[0].best
    assert result.best_epoch in (1, 2) and best_state(trainer) is not None


def test_hooks_are_called_in_order():
    rec = Recorder()
    make_trainer(epochs=1, callbacks=[rec]).fit()
    assert rec.events == ["fit_start"] + ["train_batch"] * 3 + ["val_batch"] * 2 + ["epoch_end", "fit_end"]


def test_a_non_finite_loss_stops_training_with_a_clear_error():
    class NanLoss(nn.Module):
        def forward(self, logits, target):
            return nn.functional.cross_entropy(logits, target) * float("nan")

    with pytest.raises(NonFiniteLossError, match="diverged"):
        make_trainer(loss_fn=NanLoss()).fit()


def test_cancellation_between_batches_keeps_the_best_weights():
    calls = {"n": 0}

    def cancel_on_seventh_check():
        calls["n"] += 1
        return calls["n"] >= 7  # 5 checks per epoch (3 train + 2 val batches): stop in epoch 2

    rec = Recorder()
    trainer = make_trainer(epochs=5, callbacks=[rec], should_cancel=cancel_on_seventh_check)
    with pytest.raises(FitCancelled):
        trainer.fit()
    assert len(trainer.result.history) == 1 and trainer.result.best_epoch == 1
    best, after_epoch_1 = best_state(trainer), rec.states[1]
    assert all(torch.equal(best[k], after_epoch_1[k]) for k in best)
    # One batch of epoch 2 did train, so the live weights moved on; the best ones did not.
    live = trainer.model.state_dict()
    assert any(not torch.equal(live[k], best[k]) for k in best if live[k].is_floating_point())


def test_early_stopping_stops_when_the_score_stops_improving():
    # lr=0 and no batch norm: the model never changes, so the score never improves after epoch 1.
    # Patience 2 would stop after epoch 3, but never before half of the 10 epochs: it stops after epoch 5.
    trainer = make_trainer(epochs=10, lr=0.0, optimizer="sgd", batch_norm=False, callbacks=[EarlyStopping(2)])
    result = trainer.fit()
    assert len(result.history) == 5 and result.stopped_early and result.best_epoch == 1
    no_stop = make_trainer(epochs=3, lr=0.0, optimizer="sgd", batch_norm=False, callbacks=[EarlyStopping(0)]).fit()
    assert len(no_stop.history) == 3 and not no_stop.stopped_early


def test_a_last_batch_of_one_image_is_skipped():
    rec = Recorder()
    trainer = make_trainer(epochs=1, n_train=17, batch_size=8, callbacks=[rec])
    result = trainer.fit()
    assert rec.events.count("train_batch") == 2
    assert result.history[0].train_loss > 0


@pytest.mark.parametrize("n,batch,world,expected", [
    (546, 32, 1, 17),   # 17 full batches and 2 left over: the 2 wait for another epoch
    (560, 32, 1, 18),   # 16 left over is half a batch: kept
    (20, 32, 1, 1),     # fewer images than a batch: one small batch
    (546, 16, 2, 17),   # per rank: 273 images -> 17 batches of 16 and 1 left over
])
def test_batches_per_epoch_leaves_out_a_small_last_batch(n, batch, world, expected):
    assert batches_per_epoch(n, batch, world) == expected


def test_a_small_last_batch_is_not_trained():
    rec = Recorder()
    make_trainer(epochs=1, n_train=19, batch_size=8, callbacks=[rec]).fit()  # 8 + 8 + 3
    assert rec.events.count("train_batch") == 2


def test_evaluate_returns_probabilities_in_eval_mode():
    trainer = make_trainer(epochs=1)
    trainer.model.train()
    loss, probs = trainer.evaluate(trainer.val_data)
    assert probs.shape == (12, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert loss > 0 and not trainer.model.training


def test_progress_meter_reaches_one_and_console_progress_prints_epochs():
    snaps = []
    stream = io.StringIO()
    make_trainer(epochs=2, callbacks=[ProgressMeter(snaps.append, interval=0.0), ConsoleProgress(stream)]).fit()
    fractions = [s.fraction for s in snaps]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    last = snaps[-1]
    assert last.phase == "val" and last.epoch == 2 and last.images_per_s > 0 and last.eta_s == pytest.approx(0, abs=1)
    text = stream.getvalue()
    assert "epoch   1/2" in text and "epoch   2/2" in text and "*best" in text
    assert "\r" not in text and "[###" not in text  # not a terminal: one line per epoch, no progress bar
    # A fit that keeps its last epoch keeps every epoch in turn: no epoch is marked as a new best.
    stream = io.StringIO()
    trainer = make_trainer(epochs=2, callbacks=[ConsoleProgress(stream)])
    next(cb for cb in trainer.callbacks if isinstance(cb, BestCheckpoint)).keep_last = True
    trainer.fit()
    assert "epoch   2/2" in stream.getvalue() and "*best" not in stream.getvalue()


def test_console_progress_announces_each_fold():
    stream = io.StringIO()
    progress = ConsoleProgress(stream)
    for fold in range(2):
        progress.on_fold_start(fold, 2)
        make_trainer(epochs=1, callbacks=[progress]).fit()
    text = stream.getvalue()
    assert text.index("fold 1 of 2") < text.index("epoch   1/1") < text.index("fold 2 of 2")


def test_console_progress_writes_each_note_once_as_soon_as_it_is_known():
    stream = io.StringIO()
    notes = ["Trained as a 2-fold ensemble."]
    progress = ConsoleProgress(stream, notes=lambda: notes)
    for fold in range(2):
        progress.on_fold_start(fold, 2)
        if fold == 1:
            notes.append("The batch size was lowered.")
        make_trainer(epochs=1, callbacks=[progress]).fit()
    text = stream.getvalue()
    assert text.count("note: Trained as a 2-fold ensemble.") == 1 and text.count("note: The batch size") == 1
    assert text.index("note: Trained") < text.index("fold 1 of 2")
    assert text.index("fold 2 of 2") < text.index("note: The batch size") < text.rindex("epoch   1/1")
    assert progress.shown_notes == notes


def test_console_progress_draws_a_bar_on_a_terminal_only():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    stream = Terminal()
    make_trainer(epochs=1, callbacks=[ConsoleProgress(stream)]).fit()
    assert "\r[" in stream.getvalue() and "epoch   1/1" in stream.getvalue()


def test_time_left_comes_from_measured_epochs_once_one_has_finished():
    snaps = []
    trainer = make_trainer(epochs=4, callbacks=[ProgressMeter(snaps.append, interval=0.0)])
    trainer.fit()
    first_of_epoch_3 = next(s for s in snaps if s.epoch == 3 and s.phase == "train")
    measured = sorted(h.seconds for h in trainer.result.history[:2])[1]  # the median of two: the larger
    assert first_of_epoch_3.eta_s == pytest.approx(2 * measured, rel=0.5)


def test_early_stopping_callback_logic():
    class FakeTrainer:
        should_stop = False
        epochs = 10

        class result:
            best_epoch = 2

    record = EpochRecord(5, 0, 0, 0, 0, 0, 0, {}, 0, 0, 0, 0, False)
    fake = FakeTrainer()
    EarlyStopping(4).on_epoch_end(fake, record)
    assert not fake.should_stop
    EarlyStopping(3).on_epoch_end(fake, record)
    assert fake.should_stop
    early = FakeTrainer()
    early.epochs = 12  # epoch 5 is before half of 12 epochs: no stop yet, however long the plateau
    EarlyStopping(1).on_epoch_end(early, record)
    assert not early.should_stop


def test_a_tied_score_keeps_the_epoch_with_the_lower_validation_loss():
    from medcls.training.callbacks import improves
    from medcls.training.engine import FitResult

    def record(epoch, score, val_loss):
        return EpochRecord(epoch, 0, 0, val_loss, 0, score, 0, {}, 0, 0, 0, score, False)

    result = FitResult()
    keeper = BestCheckpoint()

    class FakeTrainer:
        eval_model = model = nn.Linear(2, 2)

    FakeTrainer.result = result
    # an easy validation set: every image right from epoch 1, while the loss keeps falling
    for rec in [record(1, 1.0, 0.31), record(2, 1.0, 0.02), record(3, 1.0, 0.05), record(4, 0.9, 0.001)]:
        result.history.append(rec)
        keeper.on_epoch_end(FakeTrainer, rec)
    assert result.best_epoch == 2 and [r.best for r in result.history] == [True, True, False, False]
    assert improves(record(5, 1.0, 0.01), result)          # the same score, surer
    assert not improves(record(5, 1.0, 0.02), result)      # an exact tie keeps the earlier epoch
    assert not improves(record(5, 1.0, 0.0195), result)    # so does a loss lower by less than the margin
    assert not improves(record(5, 0.99, 0.0), result)      # a lower score never wins on loss



def test_early_stopping_ends_a_run_whose_loss_only_creeps_towards_zero():
    """Every validation image right from epoch 2 on, the loss falling by ever less: the run stops after its
    patience instead of counting each 0.0001 as progress (it used to run to its last epoch)."""
    from medcls.training.engine import FitResult

    class FakeTrainer:
        eval_model = model = nn.Linear(2, 2)
        epochs, should_stop = 10, False
        result = FitResult()

    keeper, stopper = BestCheckpoint(), EarlyStopping(3)
    losses = [0.3, 0.01, 0.002, 0.0009, 0.0004, 0.0002, 0.0001, 0.00005, 0.00002, 0.00001]
    for epoch, loss in enumerate(losses, start=1):
        rec = EpochRecord(epoch, 0, 0, loss, 0, 1.0, 0, {}, 0, 0, 0, 1.0, False)
        FakeTrainer.result.history.append(rec)
        keeper.on_epoch_end(FakeTrainer, rec)
        stopper.on_epoch_end(FakeTrainer, rec)
        if FakeTrainer.should_stop:
            break
    assert FakeTrainer.result.best_epoch == 4  # 0.0009 is 0.0011 below 0.002; later drops are under 0.001
    assert epoch == 7 and FakeTrainer.should_stop


# --- through train_in_memory -------------------------------------------------------------

def test_a_tiny_run_is_deterministic_for_a_seed(class_dataset, synth):
    cfg = synth.config(class_dataset, epochs=2)
    a = train_in_memory(cfg)
    b = train_in_memory(cfg)
    losses = lambda r: [(h.train_loss, h.val_loss) for h in r.fit.history]  # noqa: E731
    assert losses(a) == losses(b)
    assert np.array_equal(a.probs["test"], b.probs["test"])
    c = train_in_memory(cfg.with_options(seed=1))
    assert losses(c) != losses(a)


def test_a_seed_trains_the_same_run_whether_or_not_this_machine_has_measured_its_precision(
        class_dataset, synth, monkeypatch, isolated_env):
    import medcls.training.hardware as hardware

    monkeypatch.setattr(hardware, "bf16_supported", lambda: True)  # so that 'auto' measures, on any CPU
    monkeypatch.setattr(hardware, "cores_used_by_others", lambda before, after: 0.0)  # and remembers it
    cfg = synth.config(class_dataset, epochs=2, precision="auto", dropout=0.5)
    probe_file = isolated_env / "cache" / "precision_probe.json"
    assert not probe_file.exists()
    measured = train_in_memory(cfg)  # times fp32 and bf16 steps before its first epoch
    assert probe_file.exists()
    remembered = train_in_memory(cfg)  # reads the answer
    assert remembered.precision == measured.precision
    losses = lambda r: [(h.train_loss, h.val_loss) for h in r.fit.history]  # noqa: E731
    assert losses(measured) == losses(remembered)  # the probe drew nothing from the run's random streams
    assert np.array_equal(measured.probs["test"], remembered.probs["test"])


@pytest.mark.parametrize("tta", [False, True])
def test_feature_caching_for_a_frozen_resnet_gives_the_same_kind_of_record(class_dataset, synth, tta):
    cfg = synth.config(class_dataset, model="resnet18", weights="random", finetune="head", feature_views=2,
                       epochs=2, tta=tta)
    result = train_in_memory(cfg)
    trainer = result.trainer
    assert trainer.model is result.model.head                # only the head trains ...
    n_train = len(result.data.train)
    assert tuple(trainer.train_data.inputs.shape) == (n_train, 2, 512)  # ... on cached features (2 views)
    # Evaluation features: the image, plus its mirror with test-time augmentation.
    assert tuple(trainer.val_data.inputs.shape) == (len(result.data.val), 2 if tta else 1, 512)
    assert len(trainer.result.history) == 2
    assert set(trainer.result.history[0].to_dict()) == RECORD_KEYS
    assert result.precision == "fp32"
    assert set(result.metrics) == {"val", "test"}
    assert np.allclose(result.probs["test"].sum(1), 1.0, atol=1e-5)
    # The full model (backbone + trained head) reproduces the cached-feature predictions.
    result.model.eval()
    with torch.inference_mode():
        x = to_float(result.data.test.images)
        direct = torch.softmax(result.model(x), 1)
        if tta:
            direct = (direct + torch.softmax(result.model(x.flip(-1)), 1)) / 2
    assert np.allclose(direct.numpy(), result.probs["test"], atol=1e-4)


def test_without_feature_caching_the_whole_model_sees_images(class_dataset, synth):
    cfg = synth.config(class_dataset, model="resnet18", weights="random", finetune="head", feature_cache=False,
                       epochs=1)
    result = train_in_memory(cfg)
    assert result.trainer.model is result.model
    assert result.trainer.train_data.inputs.dtype == torch.uint8 and result.trainer.train_data.inputs.ndim == 4


def test_weight_averaging_is_what_gets_validated_and_kept():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, image_size=32, in_channels=1)
    train, val = _data(24, 1), _data(12, 2)
    trainer = Trainer(model, train, val, classes=CLASSES, loss_fn=nn.CrossEntropyLoss(),
                      optimizer=torch.optim.Adam(model.parameters(), lr=1e-2), scheduler=None,
                      scheduler_interval="epoch", sampler=EpochSampler(train.labels.numpy(), 3, "none", seed=0),
                      batch_size=8, epochs=2, prepare=lambda images, train: to_float(images),
                      callbacks=[WeightAveraging(0.9), BestCheckpoint()])
    trainer.fit()
    averaged, live = trainer.eval_model.state_dict(), model.state_dict()
    weight = "features.0.weight"
    assert not torch.equal(averaged[weight], live[weight]), "the average must differ from the last step"
    best_epoch = trainer.result.best_epoch
    assert best_epoch >= 1
    if best_epoch == 2:  # the kept weights are the average at the best epoch
        assert torch.equal(best_state(trainer)[weight], averaged[weight])
    # The averaged weights are what validation saw: re-evaluating them reproduces the last record.
    _, probs = trainer.evaluate(val)
    assert trainer.result.history[-1].val_accuracy == pytest.approx(float((probs.argmax(1) == val.labels.numpy()).mean()))


def test_weight_averaging_follows_the_warm_up_formula_for_weights_and_statistics():
    """a_0 = w_0, then a_n = d_n a_(n-1) + (1 - d_n) w_n with d_n = ema_decay_at(decay, n), for parameters and
    batch-norm statistics alike; step counters follow the model; a resumed average continues the same way."""
    from medcls.training.callbacks import ema_decay_at

    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=3, image_size=32, in_channels=1)
    averaging = WeightAveraging(0.9)
    average = averaging.start(model)
    expected: dict[str, torch.Tensor] = {}
    for n in range(4):
        with torch.no_grad():  # as an optimizer step and a forward pass in training would change them
            for tensor in list(model.parameters()) + [b for b in model.buffers() if b.is_floating_point()]:
                tensor.add_(torch.randn_like(tensor))
            for b in model.buffers():
                if not b.is_floating_point():
                    b.add_(1)
        averaging.update(model)
        d = ema_decay_at(0.9, n)
        for name, value in model.state_dict().items():
            if not value.is_floating_point():
                continue
            expected[name] = value.clone() if n == 0 else d * expected[name] + (1 - d) * value
    state = average.state_dict()
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(state[name], expected[name], atol=1e-6), name
        else:
            assert torch.equal(state[name], value), name
    assert any(name.endswith("running_mean") for name in expected)  # batch-norm statistics were checked too

    resumed = WeightAveraging(0.9)
    resumed.load_state_dict(averaging.state_dict())
    resumed.start(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    resumed.update(model)
    averaging.update(model)
    for a, b in zip(resumed.average.state_dict().values(), averaging.average.state_dict().values()):
        assert torch.equal(a, b)


def test_the_averages_decay_warms_up_to_the_decay_set():
    from medcls.training.callbacks import ema_decay_at, ema_steps_to_reach

    assert ema_decay_at(0.99, 0) == pytest.approx(0.1)  # the first update keeps 90% of the new weights
    assert ema_decay_at(0.99, 80) == pytest.approx(0.9)  # a window of (10 + n) / 9 steps: 10 at step 80
    assert ema_decay_at(0.99, 10_000) == 0.99  # capped at the decay set
    for decay in (0.5, 0.9, 0.99, 0.999):
        n = ema_steps_to_reach(decay)
        assert ema_decay_at(1.0, n) >= decay > ema_decay_at(1.0, n - 1)
    assert ema_steps_to_reach(0.99) == 890


# --- resuming -------------------------------------------------------------------------------------------------

def test_a_fit_continued_from_its_state_matches_one_that_never_stopped():
    """State after epoch 2 (through torch.save/load with weights_only), loaded into a fresh trainer: epochs 3
    and 4 come out as in an uninterrupted fit (weights, average, optimizer moments, random streams)."""
    def trainer(epochs):
        gen = torch.Generator().manual_seed(5)

        def prepare(images, train):  # augmentation-like noise from the generator, dropout from torch's stream
            x = to_float(images)
            return x + 0.05 * torch.rand(x.shape, generator=gen) if train else x

        t = make_trainer(epochs=epochs, callbacks=[WeightAveraging(0.9)])
        t.prepare, t.generator = prepare, gen
        return t

    whole = trainer(4)
    whole.fit()
    first = trainer(4)
    first.epochs = 2
    first.fit()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    state = torch.load(io.BytesIO(buf.getvalue()), weights_only=True)
    torch.manual_seed(123)  # a new process: other random state until the saved one is loaded
    second = trainer(4)
    second.load_state_dict(state)
    result = second.fit()
    assert [r.epoch for r in result.history] == [1, 2, 3, 4]
    assert [r.val_loss for r in result.history] == pytest.approx([r.val_loss for r in whole.result.history],
                                                                 abs=1e-6)
    for a, b in zip(second.model.state_dict().values(), whole.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6)
    assert result.best_epoch == whole.result.best_epoch


def test_a_fit_resumed_after_early_stopping_had_decided_trains_no_further():
    t = make_trainer(epochs=6)
    t.fit()
    state = t.state_dict()
    state["result"]["should_stop"], state["result"]["stopped_early"] = True, True
    state["epoch"] = 3
    resumed = make_trainer(epochs=6)
    resumed.load_state_dict(state)
    result = resumed.fit()
    assert len(result.history) == 3 and result.stopped_early


def test_the_final_test_evaluation_keeps_the_heartbeat_going_but_not_the_progress():
    from medcls.runs.records import Progress
    from medcls.training.callbacks import Heartbeat

    beats, progress = [], []
    heart = Heartbeat(lambda: beats.append(1), interval=0.0)
    meter = ProgressMeter(progress.append, interval=0.0)
    t = make_trainer(epochs=1, callbacks=[heart, meter])
    t.fit()
    before = len(beats), len(progress)
    t.evaluate(_data(24, 3))  # as train_in_memory tests the kept checkpoint
    assert len(beats) > before[0] and len(progress) == before[1]
    assert all(isinstance(p, Progress) for p in progress)
