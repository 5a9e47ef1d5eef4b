"""The warm-up a standby training process and the timing probe pay before a run arrives."""

from __future__ import annotations

import sys

from medcls.training.warmup import warm_up


def test_the_warm_up_uses_the_training_stack_and_leaves_the_end_of_run_part_to_a_waiting_run(monkeypatch):
    import medcls.analysis.metrics as metrics

    calls = {"epoch": 0, "final": 0}
    real_epoch = metrics.epoch_metrics

    def epoch(*args, **kwargs):
        calls["epoch"] += 1
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(metrics, "epoch_metrics", epoch)
    monkeypatch.setattr(metrics, "classification_metrics", lambda *a, **k: calls.__setitem__("final", 1))
    warm_up()
    assert calls == {"epoch": 1, "final": 1}
    assert "torch._dynamo" in sys.modules  # the first optimizer step's import, paid here
    calls.update(epoch=0, final=0)
    warm_up(run_waiting=lambda: True)  # a run arrived: what the first epoch needs, nothing more
    assert calls == {"epoch": 1, "final": 0}
