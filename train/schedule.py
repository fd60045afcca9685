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
import math

from config.errors import UserError
from config.train_config import TrainConfig

LR_SCHEDULES = ("step", "cosine")


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

    With ``cosine_end_epoch`` set, the steps give way to a cosine decay: after
    the warm-up the rate falls from ``base_lr`` to ``floor`` along half a cosine
    period that ends with the last batch of epoch ``cosine_end_epoch - 1``.

    The optimizer calls it with its update count in this process; a run
    resumed at ``begin_epoch`` adds the batches already done, so the rate of
    every batch is the same as in an uninterrupted run.
    """

    def __init__(self, base_lr: float, step_epochs: list[int], factor: float, batches_per_epoch: int,
                 begin_epoch: int = 0, warmup_epochs: float = 0.0, cosine_end_epoch: int | None = None,
                 floor: float = 0.0):
        self.base_lr = base_lr  # mxnet's Optimizer sets it again to its learning_rate
        if factor <= 0:
            raise UserError(f"--lr-factor {factor}: must be positive")
        self.step_epochs = sorted(step_epochs)
        self.factor = factor
        self.batches_per_epoch = max(1, int(batches_per_epoch))
        self.begin_epoch = int(begin_epoch)
        self.warmup_batches = max(0.0, warmup_epochs) * self.batches_per_epoch
        self.cosine_batches = None if cosine_end_epoch is None else cosine_end_epoch * self.batches_per_epoch
        self.floor = floor

    def lr_at(self, epoch: int, batch: int = 0) -> float:
        """The rate of batch ``batch`` (0-based) of epoch ``epoch``."""
        done = epoch * self.batches_per_epoch + batch
        if self.cosine_batches is None:
            lr = self.base_lr * self.factor ** sum(epoch >= step for step in self.step_epochs)
        else:
            # 0 at the first batch after the warm-up, 1 at the run's last batch
            span = max(self.cosine_batches - 1 - self.warmup_batches, 1.0)
            progress = min(max((done - self.warmup_batches) / span, 0.0), 1.0)
            lr = self.floor + (self.base_lr - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if done < self.warmup_batches:
            lr *= min(1.0, (done + 1) / self.warmup_batches)
        return lr

    def __call__(self, num_update: int) -> float:
        done = self.begin_epoch * self.batches_per_epoch + max(int(num_update), 1) - 1
        return self.lr_at(*divmod(done, self.batches_per_epoch))


def make_lr_scheduler(config: TrainConfig, lr: float, batches_per_epoch: int, begin_epoch: int,
                      logger: logging.Logger) -> EpochLRScheduler:
    """The run's :class:`EpochLRScheduler` (``config.lr_schedule`` 'step' or 'cosine'); logs the rate a resumed
    run starts at, as the original did."""
    if config.lr_schedule not in LR_SCHEDULES:
        raise UserError(f"--lr-schedule {config.lr_schedule}: choose from {', '.join(LR_SCHEDULES)}")
    cosine = config.lr_schedule == "cosine"
    scheduler = EpochLRScheduler(lr, [] if cosine else parse_lr_steps(config.lr_steps), config.lr_factor,
                                 batches_per_epoch, begin_epoch, config.warmup_epochs,
                                 cosine_end_epoch=config.end_epoch if cosine else None, floor=config.lr_floor)
    start = scheduler.lr_at(begin_epoch)
    if begin_epoch > 0 and start != lr:
        logger.info("Adjusted learning rate to %s for epoch %d", start, begin_epoch)
    return scheduler
