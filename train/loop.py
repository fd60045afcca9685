"""Pieces of the training loop shared by SSD (train_net) and Faster R-CNN (train_rcnn).

``Module.fit`` drives both; these plug into it: a Module that restores the
saved momentum and validates each image once, the learning-rate schedule
counted in the batches the iterator really yields, and the epoch-end work
(validation score, history row, best checkpoint, checkpoint, pruning).
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Callable, Iterator

import mxnet as mx

from config.environment import scoped_env
from config.errors import UserError
from evaluate import checkpoint
from evaluate.scoring import score_unpadded
from train.progress import ProgressLogger, TrainingHistory
from train.schedule import EpochLRScheduler, parse_lr_steps  # noqa: F401  (their home was here)


class LogFileHandler(logging.FileHandler):
    """A log file whose write errors (a full disk) stop the run with one line naming the file;
    logging's own handler prints a traceback per record and carries on."""

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise UserError(f"{self.baseFilename}: cannot write the log ({reason})")


@contextlib.contextmanager
def logging_to(log_file: str | None) -> Iterator[logging.Logger]:
    """The root logger at INFO, also writing to ``log_file`` while the block runs."""
    log_format, date_format = "%(asctime)s %(message)s", "%H:%M:%S"
    logging.basicConfig(format=log_format, datefmt=date_format)
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    handler = None
    if log_file:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
            handler = LogFileHandler(log_file)
        except OSError as err:
            raise UserError(f"--log {log_file}: cannot write ({err.strerror})") from None
        handler.setFormatter(logging.Formatter(log_format, "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
    try:
        yield logger
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            with contextlib.suppress(OSError):  # a full disk was reported already
                handler.close()


def devices_label(ctx) -> str:
    """``(cpu(0),cpu(1))``: the devices as the logs name them."""
    return "(" + ",".join(str(c) for c in ctx) + ")"


def load_resume(prefix: str, resume, ctx, logger: logging.Logger, clean: bool = True) -> tuple:
    """Resolve ``--resume`` (an epoch, -1, or 'auto') and load that checkpoint.

    Returns ``(epoch, arg_params, aux_params, params_file, states_file)``; epoch
    is -1 and the rest None when not resuming. 'auto' takes the newest
    checkpoint that loads: one that exists but cannot be read (cut short by a
    crash outside the toolkit, a full disk, a copy) is reported and the one
    before it is tried. ``states_file`` is None (with a warning) when the
    checkpoint has no usable optimizer state, e.g. one written by the original example.
    ``clean`` False leaves temporaries alone (a distributed job's ranks other than 0: rank 0 owns the files).
    """
    for path in checkpoint.remove_stale_temporaries(prefix) if clean else []:
        logger.info("Removed %s, left by a run that was killed", path)
    auto = str(resume).strip().lower() == "auto"
    epoch = checkpoint.resolve_resume(resume, prefix)
    if epoch <= 0:
        return -1, None, None, None, None
    candidates = [e for e in reversed(checkpoint.saved_epochs(prefix)) if e <= epoch] if auto else [epoch]
    for epoch in candidates:
        try:
            _, args, auxs = checkpoint.load_checkpoint(prefix, epoch, flag="--resume")
            break
        except checkpoint.CorruptCheckpointError as err:
            if not auto:
                raise
            logger.warning("warning: %s; --resume auto takes the epoch before it", err)
    else:
        logger.warning("warning: no checkpoint of %s loads: starting from the beginning", prefix)
        return -1, None, None, None, None
    logger.info("Resume training with %s from epoch %d", devices_label(ctx), epoch)
    states_file = checkpoint.states_path(prefix, epoch)
    if not os.path.isfile(states_file):
        logger.warning("No optimizer state saved with epoch %d: momentum restarts from zero", epoch)
        states_file = None
    elif not checkpoint.states_loadable(states_file):
        logger.warning("warning: %s cannot be loaded (cut short): momentum restarts from zero", states_file)
        states_file = None
    return epoch, args, auxs, checkpoint.params_path(prefix, epoch), states_file


class DivergenceGuard:
    """Batch-end callback that stops a diverging run before a checkpoint can hold NaN.

    After every batch it checks the running losses and the weights (one
    reduction over the first device's parameters). A loss can stay finite for
    batches after the weights have gone NaN, and the epoch's checkpoint is
    written right after its last batch, so checking losses alone let NaN
    weights reach disk, where ``--resume auto`` would take them.
    """

    def __init__(self, module: mx.mod.Module, prefix: str):
        self.module = module
        self.prefix = prefix

    def __call__(self, param) -> None:
        done = param.nbatch + 1
        where = f"epoch {param.epoch} batch {done}"
        for name, value in (param.eval_metric.get_global_name_value() if param.eval_metric else []):
            if not math.isfinite(value):
                self._stop(f"{name} became {value} at {where}")
        arrays = [copies[0] for copies in self.module._exec_group.param_arrays]
        total = mx.nd.add_n(*[mx.nd.sum(mx.nd.abs(array)).as_in_context(mx.cpu()) for array in arrays])
        if not math.isfinite(float(total.asscalar())):
            self._stop(f"the weights became NaN or infinite at {where}")

    def _stop(self, what: str) -> None:
        epochs = checkpoint.saved_epochs(self.prefix)
        last = f"; the last checkpoint, {checkpoint.params_path(self.prefix, epochs[-1])}, is finite" if epochs else ""
        raise UserError(f"training diverged: {what}{last}; lower --lr, or check the data "
                        "(boxes with xmin >= xmax)")


def make_lr_scheduler(lr: float, lr_steps: str, lr_factor: float, batches_per_epoch: int, begin_epoch: int,
                      warmup_epochs: float, logger: logging.Logger) -> EpochLRScheduler:
    """The run's :class:`EpochLRScheduler`; logs the rate a resumed run starts at, as the original did."""
    scheduler = EpochLRScheduler(lr, parse_lr_steps(lr_steps), lr_factor, batches_per_epoch, begin_epoch,
                                 warmup_epochs)
    start = scheduler.lr_at(begin_epoch)
    if begin_epoch > 0 and start != lr:
        logger.info("Adjusted learning rate to %s for epoch %d", start, begin_epoch)
    return scheduler


class ResumableModule(mx.mod.Module):
    """The Module that training uses: momentum restored on resume, validation each image once.

    * ``Module.fit`` creates the optimizer itself, so :meth:`init_optimizer` is
      the one place where the state of a resumed run can be restored before
      the first update.
    * :meth:`score`, which ``fit`` validates with, trims the padding of the
      last batch (:func:`evaluate.scoring.score_unpadded`).
    * ``batch_begin_callback`` is called before every training batch (``fit``
      has no such hook): the progress line times batches from their real start.
    * ``update_on_kvstore`` (None: mxnet's choice) says where the optimizer runs;
      a distributed sync run updates on the workers and starts them all from
      rank 0's weights (:mod:`train.distributed`).
    """

    def __init__(self, *args, optimizer_states: str | None = None,
                 batch_begin_callback: Callable[[], None] | None = None, update_on_kvstore: bool | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._optimizer_states_file = optimizer_states
        self._batch_begin_callback = batch_begin_callback
        self._want_update_on_kvstore = update_on_kvstore

    def forward_backward(self, data_batch: mx.io.DataBatch) -> None:
        if self._batch_begin_callback is not None:
            self._batch_begin_callback()
        super().forward_backward(data_batch)

    def score(self, eval_data, eval_metric, num_batch=None, batch_end_callback=None, score_end_callback=None,
              reset=True, epoch=0, sparse_row_id_fn=None):
        assert self.binded and self.params_initialized
        if not isinstance(eval_metric, mx.metric.EvalMetric):
            eval_metric = mx.metric.create(eval_metric)
        eval_metric.reset()
        score_unpadded(self, eval_data, [eval_metric], num_batch, reset, batch_end_callback, epoch)
        if score_end_callback:
            param = mx.model.BatchEndParam(epoch=epoch, nbatch=num_batch, eval_metric=eval_metric, locals=locals())
            for callback in score_end_callback if isinstance(score_end_callback, list) else [score_end_callback]:
                callback(param)
        return eval_metric.get_name_value()

    def init_optimizer(self, *args, **kwargs) -> None:
        # mxnet's _create_kvstore reads this variable and nothing else to decide where updates run
        wanted = self._want_update_on_kvstore
        with scoped_env("MXNET_UPDATE_ON_KVSTORE", None if wanted is None else "1" if wanted else "0"):
            super().init_optimizer(*args, **kwargs)
        if self._kvstore is not None and "dist" in self._kvstore.type and not self._update_on_kvstore:
            from train.distributed import pull_weights

            pull_weights(self)
        if self._optimizer_states_file:
            self.load_optimizer_states(self._optimizer_states_file)
            self.logger.info("Restored optimizer state from %s", self._optimizer_states_file)
            self._optimizer_states_file = None


class EpochRecorder:
    """Epoch-end work, in this order: validation, history row, best checkpoint by mAP, checkpoint +
    optimizer state, pruning to the newest ``keep`` (see :meth:`_finish` for why).

    Validation comes either from ``Module.fit``'s own scoring (pass
    :meth:`eval_end` as ``eval_end_callback``; SSD scores ``det_out``) or from
    ``validate(module) -> mAP`` called at each epoch end (Faster R-CNN,
    whose test graph differs from its training graph). With neither, the row
    has no mAP.

    ``writer`` False (ranks other than 0 of a distributed job) makes it do
    nothing: rank 0 alone writes and validates. ``save_states`` False skips
    the optimizer state (``dist_async`` keeps it on the servers).
    """

    def __init__(self, mod: mx.mod.Module, prefix: str, train_metric: mx.metric.EvalMetric,
                 history: TrainingHistory, progress: ProgressLogger, logger: logging.Logger, keep: int = 0,
                 scored_by_fit: bool = False, validate: Callable[[mx.mod.Module], float] | None = None,
                 writer: bool = True, save_states: bool = True):
        self.writer = writer
        self.save_states = save_states
        self.mod = mod
        self.prefix = prefix
        self.progress = progress
        self.keep = keep
        self.train_metric = train_metric
        self.history = history
        self.logger = logger
        self.scored_by_fit = scored_by_fit
        self.validate = validate
        best = checkpoint.best_score(prefix)
        self.best = -1.0 if best is None else best
        self._row: dict = {}

    def epoch_end(self, epoch: int, symbol, arg_params, aux_params) -> None:
        if not self.writer:
            return
        # the rate the optimizer used for the epoch's first batch
        self._row = {"epoch": epoch + 1, "lr": f"{self.progress.epoch_lr.get(epoch, float('nan')):.8g}"}
        for name, value in self.train_metric.get_global_name_value():
            self._row[f"train_{name}"] = f"{value:.6f}"
        self._params = (symbol, arg_params, aux_params)
        if self.validate is not None:
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
            self.logger.info("New best validation mAP %.4f at epoch %d: %s-best", score, epoch + 1, self.prefix)
        checkpoint.save_checkpoint(self.prefix, epoch + 1, *self._params, self.mod if self.save_states else None)
        self.logger.info('Saved checkpoint to "%s"', checkpoint.params_path(self.prefix, epoch + 1))
        for removed in checkpoint.prune_checkpoints(self.prefix, self.keep):
            self.logger.info("Pruned epoch %d (--keep %d)", removed, self.keep)
