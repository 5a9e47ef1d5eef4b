"""Dying like a killed worker in the middle of training: nothing is recorded on the way out."""

from __future__ import annotations

from medcls.training.engine import Callback


class KillInMember(Callback):
    """Raises KeyboardInterrupt in the first training batch of epoch ``epoch`` of an ensemble's model ``member``
    (from 0)."""

    def __init__(self, member: int, epoch: int = 1):
        self.member, self.epoch, self.current = member, epoch, 0

    def on_fold_start(self, fold, folds) -> None:
        self.current = fold

    def on_batch_end(self, trainer, event) -> None:
        if self.current == self.member and event.phase == "train" and event.epoch == self.epoch \
                and event.batch == 1:
            raise KeyboardInterrupt
