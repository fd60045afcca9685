"""Pieces of the training loop shared by SSD (train_net) and Faster R-CNN (train_rcnn).

``Module.fit`` drives both; these plug into it: a Module that restores the
saved momentum, and the epoch-end work (checkpoint, history row, validation
score, best checkpoint).
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator

import mxnet as mx

from train import checkpoint
from train.progress import TrainingHistory


@contextlib.contextmanager
def logging_to(log_file: str | None) -> Iterator[logging.Logger]:
    """The root logger at INFO, also writing to ``log_file`` while the block runs."""
    log_format, date_format = "%(asctime)s %(message)s", "%H:%M:%S"
    logging.basicConfig(format=log_format, datefmt=date_format)
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    handler = None
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handler = logging.FileHandler(log_file)
        handler.setFormatter(logging.Formatter(log_format, "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
    try:
        yield logger
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()


def devices_label(ctx) -> str:
    """``(cpu(0),cpu(1))``: the devices as the logs name them."""
    return "(" + ",".join(str(c) for c in ctx) + ")"


def load_resume(prefix: str, resume, ctx, logger: logging.Logger) -> tuple:
    """Resolve ``--resume`` (an epoch, -1, or 'auto') and load that checkpoint.

    Returns ``(epoch, arg_params, aux_params, params_file, states_file)``; epoch
    is -1 and the rest None when not resuming. ``states_file`` is None (with a
    warning) when the checkpoint has no saved optimizer state, e.g. one written
    by the original example.
    """
    epoch = checkpoint.resolve_resume(resume, prefix)
    if epoch <= 0:
        return -1, None, None, None, None
    logger.info("Resume training with %s from epoch %d", devices_label(ctx), epoch)
    _, args, auxs = checkpoint.load_checkpoint(prefix, epoch, flag="--resume")
    states_file = checkpoint.states_path(prefix, epoch)
    if not os.path.isfile(states_file):
        logger.warning("No optimizer state saved with epoch %d: momentum restarts from zero", epoch)
        states_file = None
    return epoch, args, auxs, checkpoint.params_path(prefix, epoch), states_file


class ResumableModule(mx.mod.Module):
    """A Module that loads saved optimizer state (momentum) as soon as its optimizer exists.

    ``Module.fit`` creates the optimizer itself, so this is the one place where
    the state of a resumed run can be restored before the first update.
    """

    def __init__(self, *args, optimizer_states: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._optimizer_states_file = optimizer_states

    def init_optimizer(self, *args, **kwargs) -> None:
        super().init_optimizer(*args, **kwargs)
        if self._optimizer_states_file:
            self.load_optimizer_states(self._optimizer_states_file)
            self.logger.info("Restored optimizer state from %s", self._optimizer_states_file)
            self._optimizer_states_file = None


class EpochRecorder:
    """Epoch-end work: checkpoint + optimizer state, history row, best checkpoint by mAP.

    Validation comes either from ``Module.fit``'s own scoring (pass
    :meth:`eval_end` as ``eval_end_callback``; SSD scores ``det_out``) or from
    ``validate(module) -> mAP`` called after each checkpoint (Faster R-CNN,
    whose test graph differs from its training graph). With neither, the row
    has no mAP.
    """

    def __init__(self, mod: mx.mod.Module, prefix: str, train_metric: mx.metric.EvalMetric,
                 history: TrainingHistory, logger: logging.Logger, scored_by_fit: bool = False,
                 validate: Callable[[mx.mod.Module], float] | None = None):
        self.mod = mod
        self.prefix = prefix
        self.train_metric = train_metric
        self.history = history
        self.logger = logger
        self.scored_by_fit = scored_by_fit
        self.validate = validate
        best = checkpoint.best_score(prefix)
        self.best = -1.0 if best is None else best
        self._row: dict = {}

    def epoch_end(self, epoch: int, symbol, arg_params, aux_params) -> None:
        checkpoint.save_checkpoint(self.prefix, epoch + 1, symbol, arg_params, aux_params, self.mod)
        self.logger.info('Saved checkpoint to "%s"', checkpoint.params_path(self.prefix, epoch + 1))
        self._row = {"epoch": epoch + 1, "lr": f"{self.mod._optimizer.learning_rate:.6g}"}
        for name, value in self.train_metric.get_global_name_value():
            self._row[f"train_{name}"] = f"{value:.6f}"
        self._params = (symbol, arg_params, aux_params)
        if self.validate is not None:
            score = float(self.validate(self.mod))
            self.logger.info("Epoch[%d] Validation-mAP=%f", epoch, score)
            self._finish(epoch, score)
        elif not self.scored_by_fit:
            self.history.add(self._row)

    def eval_end(self, param) -> None:
        names, values = param.eval_metric.get()
        self._finish(param.epoch, float(dict(zip(names, values)).get("mAP", values[-1])))

    def _finish(self, epoch: int, score: float) -> None:
        self._row["val_mAP"] = f"{score:.6f}"
        self.history.add(self._row)
        if score > self.best:
            self.best = score
            checkpoint.save_best(self.prefix, epoch + 1, score, *self._params)
            self.logger.info("New best validation mAP %.4f at epoch %d: %s-best", score, epoch + 1, self.prefix)
