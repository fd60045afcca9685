"""``Module.fit`` callbacks of every run: the divergence guard and the epoch-end work."""
from __future__ import annotations

import math
from collections.abc import Callable

import mxnet as mx

from config.errors import UserError
from config.train_config import TrainConfig
from evaluate import checkpoint
from train.progress import ProgressLogger, TrainingHistory


class DivergenceGuard:
    """Batch-end callback that stops a diverging run before a checkpoint can hold NaN.

    After every batch it checks the running losses; after every ``every``-th batch and the
    epoch's last (``batches_per_epoch``) also the weights (one reduction over the first
    device's parameters). A loss can stay finite for batches after the weights have gone NaN,
    and the epoch's checkpoint is written right after its last batch, so checking losses alone
    let NaN weights reach disk, where ``--resume auto`` would take them. The weight check
    costs about 6% of a small network's step, hence not after every batch.
    """

    def __init__(self, module: mx.mod.Module, prefix: str, every: int = 1, batches_per_epoch: int | None = None):
        self.module = module
        self.prefix = prefix
        self.every = max(1, every)
        self.batches_per_epoch = batches_per_epoch

    def __call__(self, param) -> None:
        done = param.nbatch + 1
        where = f"Epoch[{param.epoch}] batch {done}"
        for name, value in (param.eval_metric.get_global_name_value() if param.eval_metric else []):
            if not math.isfinite(value):
                self._stop(f"{name} became {value} at {where}")
        if done % self.every and done != self.batches_per_epoch:
            return
        arrays = [copies[0] for copies in self.module._exec_group.param_arrays]
        total = mx.nd.add_n(*[mx.nd.sum(mx.nd.abs(array)).as_in_context(mx.cpu()) for array in arrays])
        if not math.isfinite(float(total.asscalar())):
            self._stop(f"the weights became NaN or infinite at {where}")

    def _stop(self, what: str) -> None:
        epochs = checkpoint.saved_epochs(self.prefix)
        last = f"; the last checkpoint, {checkpoint.params_path(self.prefix, epochs[-1])}, is finite" if epochs else ""
        raise UserError(f"training diverged: {what}{last}; lower --lr, or check the data "
                        "(boxes with xmin >= xmax)")


class EpochRecorder:
    """Epoch-end work, in this order: validation, history row, best checkpoint by mAP, checkpoint +
    optimizer state, pruning to the newest ``keep`` (see :meth:`_finish` for why).

    ``config`` gives the prefix, how many checkpoints to keep (``keep``) and the epochs to
    validate after (``validates_after``). Validation comes either from ``Module.fit``'s own scoring (pass
    :meth:`eval_end` as ``eval_end_callback``; SSD scores ``det_out``) or from
    ``validate(module) -> mAP`` called at each epoch end (Faster R-CNN,
    whose test graph differs from its training graph). With neither, the row
    has no mAP, and so has an epoch that ``validates_after(epoch)`` skips (``--val-interval``).

    ``writer`` False (ranks other than 0 of a distributed job) makes it do
    nothing: rank 0 alone writes and validates. ``save_states`` False skips
    the optimizer state (``dist_async`` keeps it on the servers).
    """

    def __init__(self, mod: mx.mod.Module, config: TrainConfig, train_metric: mx.metric.EvalMetric,
                 history: TrainingHistory, progress: ProgressLogger,
                 scored_by_fit: bool = False, validate: Callable[[mx.mod.Module], float] | None = None,
                 writer: bool = True, save_states: bool = True):
        self.writer = writer
        self.validates_after = config.validates_after
        self.save_states = save_states
        self.mod = mod
        self.prefix = config.prefix
        self.progress = progress
        self.keep = config.keep
        self.train_metric = train_metric
        self.history = history
        self.logger = progress.logger
        self.scored_by_fit = scored_by_fit
        self.validate = validate
        best = checkpoint.best_score(self.prefix)
        self.best = -1.0 if best is None else best
        self._row: dict = {}

    def epoch_end(self, epoch: int, symbol, arg_params, aux_params) -> None:
        if not self.writer:
            return
        average = getattr(self.mod, "weight_average", None)
        if average is not None:  # validate, keep and save the average (train.ema); _finish puts the raw back
            arg_params, aux_params = average.swap_in()
        # the rate the optimizer used for the epoch's first batch
        self._row = {"epoch": epoch + 1, "lr": f"{self.progress.epoch_lr.get(epoch, float('nan')):.8g}"}
        for name, value in self.train_metric.get_global_name_value():
            self._row[f"train_{name}"] = f"{value:.6f}"
        self._params = (getattr(self.mod, "checkpoint_symbol", symbol), arg_params, aux_params)
        if not self.validates_after(epoch):
            self._finish(epoch, None)
        elif self.validate is not None:
            score = float(self.validate(self.mod))
            self.logger.info("Epoch[%d] Validation-mAP=%f", epoch, score)
            self._finish(epoch, score)
        elif not self.scored_by_fit:
            self._finish(epoch, None)

    def eval_end(self, param) -> None:
        if not self.writer:
            return
        names, values = param.eval_metric.get()
        self._finish(param.epoch, float(dict(zip(names, values)).get("mAP", values[-1])))

    def _finish(self, epoch: int, score: float | None) -> None:
        """The epoch's history row, best checkpoint and checkpoint, in that order.

        The checkpoint comes last, after validation: ``--resume auto`` starts after the newest
        checkpoint and keeps only the history rows up to it, so a run killed before the checkpoint
        repeats the epoch and rewrites its row, while a checkpoint saved before its row (as when the
        checkpoint preceded validation) would leave that epoch out of the history for good.
        """
        if score is not None:
            self._row["val_mAP"] = f"{score:.8f}"
        self.history.add(self._row)
        if score is not None and score > self.best:
            self.best = score
            checkpoint.save_best(self.prefix, epoch + 1, score, *self._params)
            self.logger.info("New best validation mAP %.4f (checkpoint %04d, after Epoch[%d]): %s-best", score,
                             epoch + 1, epoch, self.prefix)
        checkpoint.save_checkpoint(self.prefix, epoch + 1, *self._params, self.mod if self.save_states else None)
        self.logger.info('Saved checkpoint to "%s"', checkpoint.params_path(self.prefix, epoch + 1))
        for removed in checkpoint.prune_checkpoints(self.prefix, self.keep):
            self.logger.info("Pruned checkpoint %04d (--keep %d)", removed, self.keep)
        if getattr(self.mod, "weight_average", None) is not None:
            self.mod.weight_average.swap_out()
