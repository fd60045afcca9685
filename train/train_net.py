"""SSD training with ``Module.fit``: the original ``train_net`` and what it lacked.

:func:`train_ssd` does the work from one :class:`config.train_config.SSDConfig`;
:func:`train_net` keeps example/ssd's signature (seed 003) as a thin wrapper.

Kept from example/ssd: resume / finetune / pretrained start, the freeze
regex, the multi-factor LR schedule, Monitor, the log file, a checkpoint every
epoch, validation mAP on ``det_out``.

Fixed: ``train_list``/``val_list`` reach the iterators (apache/mxnet#8165);
``nms_thresh``, ``force_suppress`` and ``nms_topk`` reach the graph (the
original passed ``force_nms``, which was ignored); validation counts each
image once (``Module.score`` counted the padded tail of the last batch
twice); the LR schedule counts the batches the iterator yields
(``ceil(images / batch)``, not ``images // batch``, so steps fire at their
epoch and a resumed run matches a straight one).

Added: optimizer state saved with every checkpoint and restored on resume;
``resume='auto'``; linear warm-up; a ``<prefix>-best`` checkpoint by validation
mAP; only the newest ``keep`` checkpoints kept; a progress line with ETA;
``<prefix>-metrics.csv`` and ``<prefix>-curves.png``; ``<prefix>-ssd.json``,
the run config evaluate.py / demo.py / deploy.py read; clear errors when
``num_classes`` disagrees with a checkpoint.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Sequence

import mxnet as mx

from config.augmentation import TRAIN_AUGMENTATIONS, VALIDATION
from config.errors import UserError
from config.run_config import save_run_config
from config.train_config import SSDConfig
from dataset.iterator import DetRecordIter
from dataset.recordio import scan_labels, shard_sizes
from evaluate import checkpoint
from evaluate.eval_metric import MApMetric, VOC07MApMetric
from symbol.symbol_factory import get_symbol_train
from train.distributed import (
    Cluster,
    EqualBatches,
    batches_per_worker,
    epoch_end_callback,
    load_resume_everywhere,
)
from train.loop import (
    DivergenceGuard,
    EpochRecorder,
    ResumableModule,
    devices_label,
    logging_to,
    make_lr_scheduler,
)
from train.metric import MultiBoxMetric
from train.progress import ProgressLogger, TrainingHistory


def finetune_params(symbol: mx.sym.Symbol, args: dict, auxs: dict, input_shapes: dict,
                    logger: logging.Logger) -> tuple[dict, dict, list[str]]:
    """Seed 003's finetune rule: ``(args, auxs, frozen names)`` for ``symbol``.

    Every loaded parameter whose shape differs from the new graph is dropped
    (logged as ``Removed <name>``) and initialised afresh: this is how a
    20-class VOC model becomes a 3-class one. Every other loaded argument is
    frozen except the prediction layers (names containing ``pred``).
    """
    mismatched = checkpoint.shape_mismatches(symbol, {**args, **auxs}, input_shapes)
    for name in sorted(mismatched):
        logger.info("Removed %s", name)
    args = {k: v for k, v in args.items() if k not in mismatched}
    auxs = {k: v for k, v in auxs.items() if k not in mismatched}
    frozen = [name for name in symbol.list_arguments() if name in args and "pred" not in name]
    return args, auxs, frozen


def _start_weights(symbol: mx.sym.Symbol, config: SSDConfig, input_shapes: dict, ctx: list,
                   logger: logging.Logger, cluster: Cluster) -> tuple:
    """``(begin_epoch, args, auxs, frozen names, optimizer states file)`` from resume, finetune,
    pretrained, or scratch (in that order of precedence, as the original)."""
    frozen = None
    if config.freeze_pattern.strip():
        pattern = re.compile(config.freeze_pattern)
        frozen = [name for name in symbol.list_arguments() if pattern.match(name)]
    ctx_str = devices_label(ctx)
    resume, args, auxs, source, states_file = load_resume_everywhere(cluster, config.prefix, config.resume, ctx,
                                                                     logger)
    if resume > 0:
        checkpoint.check_params_fit(symbol, args, auxs, input_shapes, source, config.num_classes)
        return resume, args, auxs, frozen, states_file
    if config.finetune > 0:
        _, args, auxs = checkpoint.load_checkpoint(config.prefix, config.finetune, flag="--finetune")
        logger.info("Start finetuning with %s from epoch %d", ctx_str, config.finetune)
        args, auxs, frozen = finetune_params(symbol, args, auxs, input_shapes, logger)
        return config.finetune, args, auxs, frozen, None
    if config.pretrained:
        pretrained_file = checkpoint.params_path(config.pretrained, config.pretrained_epoch)
        if not os.path.isfile(pretrained_file):
            raise UserError(f"--pretrained {config.pretrained} --epoch {config.pretrained_epoch}: {pretrained_file} "
                            "does not exist; pass --pretrained '' to train from scratch")
        _, args, auxs = checkpoint.load_checkpoint(config.pretrained, config.pretrained_epoch,
                                                   flag="--pretrained/--epoch")
        logger.info("Start training with %s from pretrained model %s", ctx_str, config.pretrained)
        checkpoint.check_params_fit(symbol, args, auxs, input_shapes, pretrained_file, config.num_classes)
        return config.begin_epoch, args, auxs, frozen, None
    logger.info("Experimental: start training from scratch with %s", ctx_str)
    return config.begin_epoch, None, None, None, None


def train_ssd(config: SSDConfig, ctx: Sequence[mx.Context]) -> dict:
    """Train an SSD network; returns ``{'prefix', 'begin_epoch', 'end_epoch', 'best_map'}``.

    ``config.prefix`` is used as given (train.py appends ``_<network>_<shape>``).
    Batches are ``config.batch_size`` images split over ``ctx``; with a ``dist_*``
    ``config.kv_store`` that is per worker, each worker reads its shard of the
    record, and rank 0 alone writes files and validates (:mod:`train.distributed`).
    """
    ctx = list(ctx)
    cluster = Cluster(config.kv_store)
    with logging_to(cluster.log_file(config.log_file)) as logger:
        cluster.tag_logs(logger)
        lr = cluster.describe(logger, config.lr, config.lr_scale_workers)
        if config.seed is not None:
            mx.random.seed(config.seed)
        if config.augment not in TRAIN_AUGMENTATIONS:
            raise UserError(f"--augment {config.augment}: choose from {', '.join(TRAIN_AUGMENTATIONS)}")
        if config.batch_size < 1:
            raise UserError(f"--batch-size {config.batch_size}: must be at least 1")
        # the records are read through once before anything else: a cut .rec or a class id the
        # network has no output for is a one-line error now, not a C++ trace epochs later
        num_images = scan_labels(config.train_path, config.train_list, config.num_classes)
        if config.val_path:
            scan_labels(config.val_path, config.val_list, config.num_classes)
        if config.num_example > 0 and config.num_example != num_images:
            raise UserError(f"--num-example {config.num_example}: {config.train_list or config.train_path} holds "
                            f"{num_images} images; leave --num-example out (-1) to count them")
        data_shape = (3, config.data_shape, config.data_shape)
        symbol = get_symbol_train(config.network, config.data_shape, num_classes=config.num_classes,
                                  nms_thresh=config.nms_thresh, force_suppress=config.force_suppress,
                                  nms_topk=config.nms_topk, cls_loss=config.cls_loss)
        # the label's shape does not change any parameter's; this one is what --label-width gives
        label_shape = (config.batch_size, max(1, (config.label_width - 2) // 6), 6)
        input_shapes = {"data": (config.batch_size,) + data_shape, "label": label_shape}
        # weights before iterators: a missing or corrupt file is one line, before mxnet's iterator logs
        begin_epoch, args, auxs, frozen, states_file = _start_weights(symbol, config, input_shapes, ctx, logger,
                                                                      cluster)
        iter_args = dict(mean_pixels=config.mean_pixels, std_pixels=config.std_pixels,
                         label_pad_width=config.label_width)
        train_settings = dict(TRAIN_AUGMENTATIONS[config.augment])
        if config.seed is not None:
            train_settings["seed"] = config.seed  # shuffle order and augmentation draws
        shards = [num_images]
        if cluster.distributed:
            # each worker reads its own contiguous part of the .rec (see train/distributed.py)
            shards = shard_sizes(config.train_path, cluster.num_workers)
            if min(shards) < 1:
                raise UserError(f"{config.train_path}: {num_images} images cannot be shared by "
                                f"{cluster.num_workers} workers (shards of {shards} images)")
            train_settings.update(num_parts=cluster.num_workers, part_index=cluster.rank)
        train_iter = DetRecordIter(config.train_path, config.batch_size, data_shape, path_imglist=config.train_list,
                                   **iter_args, **train_settings)
        # the iterator pads the last batch; every worker runs as many batches as the longest shard needs
        batches_per_epoch = batches_per_worker(shards, config.batch_size)
        if cluster.distributed:
            train_iter = EqualBatches(train_iter, batches_per_epoch, logger, cluster.rank)
        val_iter = None
        if config.val_path and cluster.writer:  # rank 0 validates for the job
            val_iter = DetRecordIter(config.val_path, config.batch_size, data_shape, path_imglist=config.val_list,
                                     **iter_args, **VALIDATION)
        if frozen:
            logger.info("Freezed parameters: [%s]", ",".join(frozen))
        if cluster.writer:
            logger.info("Run configuration: %s", save_run_config(config))
        if begin_epoch >= config.end_epoch:
            logger.info("Nothing to do: already at epoch %d of %d", begin_epoch, config.end_epoch)
            return {"prefix": config.prefix, "begin_epoch": begin_epoch, "end_epoch": config.end_epoch,
                    "best_map": checkpoint.best_score(config.prefix)}

        schedule_batches = cluster.schedule_batches(batches_per_epoch)
        lr_scheduler = make_lr_scheduler(lr, config.lr_steps, config.lr_factor, schedule_batches,
                                         begin_epoch, config.warmup_epochs, logger)
        optimizer_params = {
            "learning_rate": lr, "momentum": config.momentum, "wd": config.wd,
            "lr_scheduler": lr_scheduler, "clip_gradient": None,
            # each device's loss is normalised by its own slice: the step is the mean over all slices
            "rescale_grad": cluster.rescale_grad(1.0 / len(ctx) if ctx else 1.0),
        }
        if states_file and cluster.update_on_kvstore:
            logger.info("dist_async: optimizer state of %s not loaded (the servers hold momentum)", states_file)
            states_file = None
        progress = ProgressLogger(config.batch_size, config.frequent, batches_per_epoch, begin_epoch,
                                  config.end_epoch, logger, lr_of=lambda: mod._optimizer.learning_rate)
        mod = ResumableModule(symbol, label_names=("label",), logger=logger, context=ctx,
                              fixed_param_names=frozen or None, optimizer_states=states_file,
                              batch_begin_callback=progress.batch_begin,
                              update_on_kvstore=cluster.update_on_kvstore)

        train_metric = MultiBoxMetric()
        metric_cls = VOC07MApMetric if config.voc07_metric else MApMetric
        valid_metric = metric_cls(config.ovp_thresh, config.use_difficult, config.class_names, pred_idx=3)
        history = TrainingHistory(config.prefix, begin_epoch)
        recorder = EpochRecorder(mod, config.prefix, train_metric, history, progress, logger, keep=config.keep,
                                 scored_by_fit=val_iter is not None, writer=cluster.writer,
                                 save_states=not cluster.update_on_kvstore)
        monitor = mx.mon.Monitor(config.iter_monitor, pattern=config.monitor_pattern) \
            if config.iter_monitor > 0 else None

        cluster.start_watchdog(config.dist_timeout)
        mod.fit(
            train_iter, val_iter, eval_metric=train_metric, validation_metric=valid_metric,
            batch_end_callback=[DivergenceGuard(mod, config.prefix), progress, cluster.beat],
            epoch_end_callback=epoch_end_callback(cluster, mod, recorder.epoch_end, logger),
            eval_end_callback=recorder.eval_end if val_iter is not None else None,
            eval_batch_end_callback=cluster.beat if val_iter is not None else None,
            optimizer="sgd", optimizer_params=optimizer_params, kvstore=cluster.kv,
            begin_epoch=begin_epoch, num_epoch=config.end_epoch, initializer=mx.init.Xavier(),
            arg_params=args, aux_params=auxs, allow_missing=True, monitor=monitor,
        )
        best = recorder.best if recorder.best >= 0 else None
        logger.info("Training finished: checkpoints %s-NNNN.params, history %s, curves %s", config.prefix,
                    history.csv_path, history.png_path)
        return {"prefix": config.prefix, "begin_epoch": begin_epoch, "end_epoch": config.end_epoch,
                "best_map": best}


def train_net(
    net: str, train_path: str, num_classes: int, batch_size: int, data_shape, mean_pixels,
    resume, finetune: int, pretrained: str, epoch: int, prefix: str, ctx: Sequence[mx.Context],
    begin_epoch: int, end_epoch: int, frequent: int, learning_rate: float, momentum: float,
    weight_decay: float, lr_refactor_step: str, lr_refactor_ratio: float, freeze_layer_pattern: str = "",
    num_example: int = -1, label_pad_width: int = 350, nms_thresh: float = 0.45,
    force_nms: bool = False, ovp_thresh: float = 0.5, use_difficult: bool = False,
    class_names: list | None = None, voc07_metric: bool = False, nms_topk: int = 400,
    force_suppress: bool = False, train_list: str = "", val_path: str = "", val_list: str = "",
    iter_monitor: int = 0, monitor_pattern: str = ".*", log_file: str | None = None,
    kv_store: str = "local", **extra,
) -> dict:
    """example/ssd's ``train_net`` signature (seed 003) over :func:`train_ssd`.

    ``data_shape`` is an int or ``(3, S, S)``; ``mean_pixels`` a number or three;
    ``force_nms`` is the original's name for ``force_suppress`` (either turns
    it on). ``extra`` takes the :class:`SSDConfig` fields that the original
    did not have (``std_pixels``, ``warmup_epochs``, ``cls_loss``, ``seed``,
    ``augment``, ``keep``). Unlike the original, ``prefix`` is used as given.
    """
    if not isinstance(data_shape, int):
        if len(data_shape) != 3 or data_shape[0] != 3 or data_shape[1] != data_shape[2]:
            raise UserError(f"--data-shape {data_shape}: expected an int or (3, S, S)")
        data_shape = data_shape[1]
    if isinstance(mean_pixels, (int, float)):
        mean_pixels = [mean_pixels] * 3
    if len(mean_pixels) != 3:
        raise UserError("--mean-r/g/b: must provide all three RGB mean values")
    known = {field.name for field in dataclasses.fields(SSDConfig)}
    unknown = sorted(set(extra) - known)
    if unknown:
        raise TypeError(f"train_net() got unexpected keyword arguments {unknown}")
    config = SSDConfig(
        network=net, train_path=train_path, num_classes=num_classes, batch_size=batch_size, data_shape=data_shape,
        mean_pixels=tuple(mean_pixels), resume=str(resume), finetune=finetune, pretrained=pretrained,
        pretrained_epoch=epoch, prefix=prefix, begin_epoch=begin_epoch, end_epoch=end_epoch, frequent=frequent,
        lr=learning_rate, momentum=momentum, wd=weight_decay, lr_steps=lr_refactor_step,
        lr_factor=lr_refactor_ratio, freeze_pattern=freeze_layer_pattern, num_example=num_example,
        label_width=label_pad_width, nms_thresh=nms_thresh, force_suppress=force_suppress or force_nms,
        ovp_thresh=ovp_thresh, use_difficult=use_difficult, class_names=class_names, voc07_metric=voc07_metric,
        nms_topk=nms_topk, train_list=train_list, val_path=val_path, val_list=val_list, iter_monitor=iter_monitor,
        monitor_pattern=monitor_pattern, log_file=log_file, kv_store=kv_store, **extra,
    )
    config.std_pixels = tuple(config.std_pixels) if config.std_pixels is not None else (1.0, 1.0, 1.0)
    return train_ssd(config, ctx)
