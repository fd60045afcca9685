"""The one training engine: a family adapter says what to train, :func:`run_training` trains it.

``train_ssd`` (:mod:`train.train_net`) and ``train_rcnn`` (:mod:`train.train_rcnn`)
are short adapters. A :class:`Family` supplies what differs between SSD and
Faster R-CNN: checks and record scans, the graph, the start weights other
than a resume, the iterators, the metrics, the validation and the optimizer's
gradient settings. The engine owns everything else, in this order:

1. the cluster (``--kv-store``), the log file, the seed;
2. the family's checks and graph (:meth:`Family.prepare`);
3. the start: ``--resume`` (every rank on rank 0's choice), else the family's
   own start (finetune, pretrained, scratch), and the shapes checked; then the
   anchor coverage of the training objects (:meth:`Family.check_data`);
4. the iterators, equal batch counts across workers, the run config;
5. the learning-rate schedule counted in real batches, the optimizer state;
6. ``Module.fit`` with the progress line, the divergence guard, the
   watchdog, and the epoch-end work (validation, history row, ``-best``,
   checkpoint, pruning).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import mxnet as mx

from config.cpu import require_bfloat16
from config.errors import UserError
from config.fileio import atomic_open
from config.output_lock import output_lock
from config.run_config import save_run_config
from config.train_config import TrainConfig
from evaluate import checkpoint
from evaluate.anchor_fit import CoverageReport
from symbol.precision import to_bfloat16
from train.callbacks import DivergenceGuard, EpochRecorder
from train.distributed import Cluster, EqualBatches, epoch_end_callback, load_resume_everywhere
from train.logs import logging_to
from train.module import ResumableModule
from train.progress import ProgressLogger, TrainingHistory
from train.schedule import make_lr_scheduler

DTYPES = ("float32", "bfloat16")


@dataclass
class Start:
    """Where a run starts: its first epoch, the loaded weights (None: initialise all), the frozen names,
    and the optimizer state file of a resumed checkpoint."""

    begin_epoch: int
    args: dict | None = None
    auxs: dict | None = None
    frozen: list[str] | None = None
    states_file: str | None = None


@dataclass
class TrainData:
    """One worker's training batches: the iterator and how many batches every worker runs per epoch
    (the longest shard's count, so that no ``dist_sync`` worker waits for ever)."""

    batches: mx.io.DataIter
    batches_per_epoch: int


@dataclass
class Validation:
    """How a run is validated after every epoch: by ``Module.fit`` on ``data`` with ``metric`` (a graph
    whose training outputs hold the detections), or by ``score(module) -> mAP``; neither: not at all."""

    data: mx.io.DataIter | None = None
    metric: mx.metric.EvalMetric | None = None
    score: Callable[[mx.mod.BaseModule], float] | None = None


@dataclass
class FitSettings:
    """The family's part of ``Module.fit``: input names, images per step (for the speed), gradient
    clipping, the gradient scale of one process (before the worker count), the initializer, a Monitor."""

    data_names: Sequence[str]
    label_names: Sequence[str]
    batch_size: int
    rescale_grad: float
    initializer: mx.init.Initializer
    clip_gradient: float | None = None
    monitor: mx.mon.Monitor | None = None
    frozen_label: str = "Frozen parameters"


class Family:
    """What one detector family gives the engine. Subclasses set ``name`` ('ssd' or 'rcnn') and ``config``,
    and implement each step."""

    name: str
    config: TrainConfig

    def scope(self) -> AbstractContextManager:
        """Held for the whole run (Faster R-CNN seeds its ``proposal_target`` op here)."""
        return nullcontext()

    def prepare(self, cluster: Cluster, logger: logging.Logger) -> tuple[mx.sym.Symbol, dict]:
        """Check the settings and records; return ``(training graph, {input name: shape})``."""
        raise NotImplementedError

    def start(self, symbol: mx.sym.Symbol, input_shapes: dict, ctx: list, logger: logging.Logger) -> Start:
        """The start when not resuming: finetune, pretrained weights or scratch."""
        raise NotImplementedError

    def frozen_on_resume(self, symbol: mx.sym.Symbol) -> list[str] | None:
        """The names a resumed run keeps frozen."""
        raise NotImplementedError

    def check_data(self, cluster: Cluster, logger: logging.Logger) -> None:
        """Report how well the anchors fit the training objects (:func:`record_anchor_fit`)."""
        raise NotImplementedError

    def data(self, cluster: Cluster, logger: logging.Logger) -> TrainData:
        """This worker's training batches."""
        raise NotImplementedError

    def validation(self, cluster: Cluster, ctx: list) -> Validation:
        """The validation of rank 0 (other ranks: :class:`Validation` with nothing)."""
        raise NotImplementedError

    def train_metric(self) -> mx.metric.EvalMetric:
        raise NotImplementedError

    def fit_settings(self, ctx: list) -> FitSettings:
        raise NotImplementedError


def record_anchor_fit(prefix: str, report: CoverageReport, warnings: list[str], cluster: Cluster,
                      logger: logging.Logger, warn: bool = True) -> None:
    """Log the anchor coverage of the training objects in one line (and its warnings), and keep the
    whole report as ``<prefix>-anchors.txt`` (rank 0)."""
    bands = ", ".join(f"{band.label} px {100 * band.share:.0f}%" for band in report.bands if band.count)
    logger.info("Anchor coverage: %.1f%% of %d training objects have an anchor of IoU %s %g (%s)",
                100 * report.share if report.total else 0.0, report.total, report.rule, report.threshold, bands)
    for line in warnings if warn else []:
        logger.warning("warning: %s", line)
    if cluster.writer:
        with atomic_open(f"{prefix}-anchors.txt") as f:
            f.write("\n".join(report.lines() + warnings) + "\n")


def _start(family: Family, cluster: Cluster, symbol: mx.sym.Symbol, input_shapes: dict, ctx: list,
           logger: logging.Logger) -> Start:
    """A resume (every rank loads rank 0's choice) or the family's own start; loaded shapes checked."""
    config = family.config
    resume, args, auxs, source, states_file = load_resume_everywhere(cluster, config.prefix, config.resume, ctx,
                                                                     logger)
    if resume > 0:
        checkpoint.check_params_fit(symbol, args, auxs, input_shapes, source, config.num_classes)
        return Start(resume, args, auxs, family.frozen_on_resume(symbol), states_file)
    return family.start(symbol, input_shapes, ctx, logger)


def run_training(family: Family, ctx: Sequence[mx.Context]) -> dict:
    """Train ``family.config``; returns ``{'prefix', 'begin_epoch', 'end_epoch', 'best_map'}``.

    ``config.prefix`` is used as given. With a ``dist_*`` ``config.kv_store``
    each worker trains on its shard and rank 0 alone writes files and
    validates (:mod:`train.distributed`).
    """
    ctx, config = list(ctx), family.config
    if config.dtype not in DTYPES:
        raise UserError(f"--dtype {config.dtype}: choose from {', '.join(DTYPES)}")
    if config.dtype == "bfloat16":  # before anything is read or written: a CPU without it fails in one line
        if any(c.device_type != "cpu" for c in ctx):
            raise UserError("--dtype bfloat16: runs on CPUs only (mxnet 1.9's GPU mixed precision is float16)")
        require_bfloat16()
    cluster = Cluster(config.kv_store)
    # one process writes a prefix (rank 0 of a distributed job); a second run on it is refused, --resume included
    writing = output_lock(config.prefix, f"--prefix {config.prefix}") if cluster.writer else nullcontext()
    with writing, logging_to(cluster.log_file(config.log_file)) as logger, family.scope():
        cluster.tag_logs(logger)
        lr = cluster.describe(logger, config.lr, config.lr_scale_workers)
        if config.seed is not None:
            mx.random.seed(config.seed)
        symbol, input_shapes = family.prepare(cluster, logger)
        # weights before iterators: a missing or corrupt file is one line, before mxnet's iterator logs
        start = _start(family, cluster, symbol, input_shapes, ctx, logger)
        family.check_data(cluster, logger)  # the first files of the run: after every check that can refuse it
        data = family.data(cluster, logger)
        batches = EqualBatches(data.batches, data.batches_per_epoch, logger, cluster.rank) \
            if cluster.distributed else data.batches
        validation = family.validation(cluster, ctx) if cluster.writer else Validation()
        fit = family.fit_settings(ctx)
        if start.frozen:
            logger.info("%s: [%s]", fit.frozen_label, ",".join(start.frozen))
        logger.info("Run configuration: %s", save_run_config(config) if cluster.writer else "(written by rank 0)")
        if start.begin_epoch >= config.end_epoch:
            logger.info("Nothing to do: checkpoint %04d is --end-epoch %d or later", start.begin_epoch,
                        config.end_epoch)
            return {"prefix": config.prefix, "begin_epoch": start.begin_epoch, "end_epoch": config.end_epoch,
                    "best_map": checkpoint.best_score(config.prefix)}

        lr_scheduler = make_lr_scheduler(config, lr, cluster.schedule_batches(data.batches_per_epoch),
                                         start.begin_epoch, logger)
        optimizer_params = {"learning_rate": lr, "momentum": config.momentum, "wd": config.wd,
                            "lr_scheduler": lr_scheduler, "clip_gradient": fit.clip_gradient,
                            "rescale_grad": cluster.rescale_grad(fit.rescale_grad)}
        states_file = start.states_file
        if states_file and cluster.update_on_kvstore:
            logger.info("dist_async: optimizer state of %s not loaded (the servers hold momentum)", states_file)
            states_file = None
        # the logged rate comes from the schedule: under dist_async the worker's own optimizer never steps
        progress = ProgressLogger(fit.batch_size, config.frequent, data.batches_per_epoch, start.begin_epoch,
                                  config.end_epoch, logger, lr_of=lr_scheduler.lr_at)
        train_symbol = symbol
        if config.dtype == "bfloat16":
            # float32 weights, optimizer state, multibox ops and losses; bfloat16 convolutions (symbol.precision)
            train_symbol = to_bfloat16(symbol, family.name, [*fit.data_names, *fit.label_names])
            logger.info("Training in bfloat16 (float32 weights, optimizer state, losses and multibox ops)")
        mod = ResumableModule(train_symbol, data_names=fit.data_names, label_names=fit.label_names, logger=logger,
                              context=ctx, fixed_param_names=start.frozen or None, optimizer_states=states_file,
                              batch_begin_callback=progress.batch_begin,
                              update_on_kvstore=cluster.update_on_kvstore, ema_decay=config.ema,
                              checkpoint_symbol=symbol, scores_after=config.validates_after)
        train_metric = family.train_metric()
        history = TrainingHistory(config.prefix, start.begin_epoch)
        recorder = EpochRecorder(mod, config, train_metric, history, progress,
                                 scored_by_fit=validation.data is not None, validate=validation.score,
                                 writer=cluster.writer, save_states=not cluster.update_on_kvstore)
        cluster.start_watchdog(config.dist_timeout)
        mod.fit(
            batches, validation.data, eval_metric=train_metric, validation_metric=validation.metric,
            batch_end_callback=[DivergenceGuard(mod, config.prefix, config.frequent, data.batches_per_epoch),
                                mod.average_weights, progress, cluster.beat],
            epoch_end_callback=epoch_end_callback(cluster, mod, recorder.epoch_end, logger),
            eval_end_callback=recorder.eval_end if validation.data is not None else None,
            eval_batch_end_callback=cluster.beat if validation.data is not None else None,
            optimizer="sgd", optimizer_params=optimizer_params, kvstore=cluster.kv,
            begin_epoch=start.begin_epoch, num_epoch=config.end_epoch, initializer=fit.initializer,
            arg_params=start.args, aux_params=start.auxs, allow_missing=True, monitor=fit.monitor,
        )
        logger.info("Training finished: checkpoints %s-NNNN.params, history %s, curves %s", config.prefix,
                    history.csv_path, history.png_path)
        return {"prefix": config.prefix, "begin_epoch": start.begin_epoch, "end_epoch": config.end_epoch,
                "best_map": recorder.best if recorder.best >= 0 else None}
