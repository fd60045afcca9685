"""The learning-rate schedule of both families, free of mxnet imports.

``dist_async`` sends the optimizer, schedule included, to the parameter
servers, which unpickle it while ``import mxnet`` is still running (a server
process runs inside that import). A schedule class that subclassed
``mx.lr_scheduler.LRScheduler`` could not be imported there (a circular
import); this one is duck-typed as mxnet's ``Optimizer`` uses it: a
``base_lr`` attribute and ``__call__(num_update)``.
"""
from __future__ import annotations

import logging

from config.errors import UserError


def parse_lr_steps(lr_steps: str) -> list[int]:
    """``'80, 160'`` -> ``[80, 160]``; a one-line error naming ``--lr-steps`` otherwise."""
    try:
        return [int(s) for s in str(lr_steps).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--lr-steps {lr_steps!r}: expected comma separated epochs") from None


class EpochLRScheduler:
    """The learning rate as a function of (epoch, batch), counted in the batches the iterator yields.

    ``base_lr`` is multiplied by ``factor`` once for every epoch of
    ``step_epochs`` reached; during the first ``warmup_epochs`` it ramps
    linearly: batch ``k`` (0-based, counted from the run's start) gets
    ``(k + 1) / (warmup_epochs * batches_per_epoch)`` of it, as mxnet's linear
    warm-up does. ``batches_per_epoch`` must be the iterator's real count,
    ``ceil(images / batch)``: with ``images // batch`` (the original) every
    step fires early and a resumed run drifts from a straight one.

    The optimizer calls it with its update count in this process; a run
    resumed at ``begin_epoch`` adds the batches already done, so the rate of
    every batch is the same as in an uninterrupted run.
    """

    def __init__(self, base_lr: float, step_epochs: list[int], factor: float, batches_per_epoch: int,
                 begin_epoch: int = 0, warmup_epochs: float = 0.0):
        self.base_lr = base_lr  # mxnet's Optimizer sets it again to its learning_rate
        if factor <= 0:
            raise UserError(f"--lr-factor {factor}: must be positive")
        self.step_epochs = sorted(step_epochs)
        self.factor = factor
        self.batches_per_epoch = max(1, int(batches_per_epoch))
        self.begin_epoch = int(begin_epoch)
        self.warmup_batches = max(0.0, warmup_epochs) * self.batches_per_epoch

    def lr_at(self, epoch: int, batch: int = 0) -> float:
        """The rate of batch ``batch`` (0-based) of epoch ``epoch``."""
        lr = self.base_lr * self.factor ** sum(epoch >= step for step in self.step_epochs)
        done = epoch * self.batches_per_epoch + batch
        if done < self.warmup_batches:
            lr *= min(1.0, (done + 1) / self.warmup_batches)
        return lr

    def __call__(self, num_update: int) -> float:
        done = self.begin_epoch * self.batches_per_epoch + max(int(num_update), 1) - 1
        return self.lr_at(*divmod(done, self.batches_per_epoch))


def make_lr_scheduler(lr: float, lr_steps: str, lr_factor: float, batches_per_epoch: int, begin_epoch: int,
                      warmup_epochs: float, logger: logging.Logger) -> EpochLRScheduler:
    """The run's :class:`EpochLRScheduler`; logs the rate a resumed run starts at, as the original did."""
    scheduler = EpochLRScheduler(lr, parse_lr_steps(lr_steps), lr_factor, batches_per_epoch, begin_epoch,
                                 warmup_epochs)
    start = scheduler.lr_at(begin_epoch)
    if begin_epoch > 0 and start != lr:
        logger.info("Adjusted learning rate to %s for epoch %d", start, begin_epoch)
    return scheduler
