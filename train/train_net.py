"""SSD training: the family adapter of :mod:`train.engine`, and example/ssd's ``train_net``.

:func:`train_ssd` trains from one :class:`config.train_config.SSDConfig`;
:func:`train_net` keeps example/ssd's signature as a thin wrapper over it.
Differences from the original are listed in docs/upstream.md.
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
from config.train_config import LOC_LOSS_METRIC_NAMES, SSDConfig
from dataset.iterator import DetRecordIter
from dataset.recordio import scan_labels, shard_sizes
from evaluate import checkpoint
from evaluate.anchor_fit import read_record_boxes, ssd_anchor_shapes, ssd_coverage_report, write_label_stats
from evaluate.anchor_fit import warnings as anchor_warnings
from evaluate.eval_metric import MApMetric, VOC07MApMetric
from symbol.symbol_factory import get_symbol_train
from train.distributed import Cluster, batches_per_worker
from train.engine import Family, FitSettings, Start, TrainData, Validation, record_anchor_fit, run_training
from train.logs import devices_label
from train.metric import MultiBoxMetric


def finetune_params(symbol: mx.sym.Symbol, args: dict, auxs: dict, input_shapes: dict,
                    logger: logging.Logger) -> tuple[dict, dict, list[str]]:
    """example/ssd's finetune rule: ``(args, auxs, frozen names)`` for ``symbol``.

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


class SSDFamily(Family):
    """SSD on ``DetRecordIter``: the batch is split over the devices, ``Module.fit`` validates ``det_out``."""

    name = "ssd"

    def __init__(self, config: SSDConfig):
        self.config = config
        self.num_images = 0
        self.label_pad_width = config.label_width
        self.data_shape = (3, config.data_shape, config.data_shape)

    def prepare(self, cluster: Cluster, logger: logging.Logger) -> tuple[mx.sym.Symbol, dict]:
        config = self.config
        if config.augment not in TRAIN_AUGMENTATIONS:
            raise UserError(f"--augment {config.augment}: choose from {', '.join(TRAIN_AUGMENTATIONS)}")
        if config.batch_size < 1:
            raise UserError(f"--batch-size {config.batch_size}: must be at least 1")
        # the records are read through once before anything else: a cut .rec or a class id the
        # network has no output for is a one-line error now, not a C++ trace epochs later
        train = scan_labels(config.train_path, config.train_list, config.num_classes)
        self.num_images = train.images
        widest = train.widest
        if config.val_path:
            widest = max(widest, scan_labels(config.val_path, config.val_list, config.num_classes).widest)
        # labels are padded to the widest one, not beyond: MultiBoxTarget's CPU kernel scans every padding
        # row, and at --label-width 350 (58 rows) for images of a few objects it took a quarter of a toy
        # step; the targets are the same. A width below the widest stays an error (DetRecordIter).
        self.label_pad_width = min(config.label_width, widest) if widest else config.label_width
        if config.num_example > 0 and config.num_example != self.num_images:
            raise UserError(f"--num-example {config.num_example}: {config.train_list or config.train_path} holds "
                            f"{self.num_images} images; leave --num-example out (-1) to count them")
        symbol = get_symbol_train(config.network, config.data_shape, num_classes=config.num_classes,
                                  nms_thresh=config.nms_thresh, force_suppress=config.force_suppress,
                                  nms_topk=config.nms_topk, cls_loss=config.cls_loss,
                                  label_smoothing=config.label_smoothing, loc_loss=config.loc_loss,
                                  **(config.graph_overrides or {}))
        # the label's shape does not change any parameter's; this one is what the padding gives
        label_shape = (config.batch_size, max(1, (self.label_pad_width - 2) // 6), 6)
        return symbol, {"data": (config.batch_size,) + self.data_shape, "label": label_shape}

    def check_data(self, cluster: Cluster, logger: logging.Logger) -> None:
        """The anchor coverage of the training objects, and ``<prefix>-labels.png`` (the labels and anchor shapes)."""
        config = self.config
        anchors = {k: v for k, v in (config.graph_overrides or {}).items() if k in ("sizes", "ratios", "steps")}
        boxes, classes, difficult, image_index = read_record_boxes(config.train_path)
        report = ssd_coverage_report(boxes[~difficult], config.network, config.data_shape, rec=config.train_path,
                                     anchors="custom" if anchors else "preset", **anchors)
        record_anchor_fit(config.prefix, report, anchor_warnings(report), cluster, logger)
        if cluster.writer:
            shapes = ssd_anchor_shapes(config.network, config.data_shape, anchors.get("sizes"), anchors.get("ratios"))
            write_label_stats(boxes, classes, image_index, config.class_names, shapes, f"{config.prefix}-labels.png",
                              difficult=difficult, num_images=self.num_images,
                              title=f"{config.network} at {config.data_shape}")

    def _freeze_pattern(self, symbol: mx.sym.Symbol) -> list[str] | None:
        if not self.config.freeze_pattern.strip():
            return None
        pattern = re.compile(self.config.freeze_pattern)
        return [name for name in symbol.list_arguments() if pattern.match(name)]

    def frozen_on_resume(self, symbol: mx.sym.Symbol) -> list[str] | None:
        return self._freeze_pattern(symbol)

    def start(self, symbol: mx.sym.Symbol, input_shapes: dict, ctx: list, logger: logging.Logger) -> Start:
        """Finetune, pretrained or scratch, in that order of precedence (as the original)."""
        config = self.config
        if config.finetune > 0:
            _, args, auxs = checkpoint.load_checkpoint(config.prefix, config.finetune, flag="--finetune")
            logger.info("Start finetuning with %s from epoch %d", devices_label(ctx), config.finetune)
            args, auxs, frozen = finetune_params(symbol, args, auxs, input_shapes, logger)
            return Start(config.finetune, args, auxs, frozen)
        if config.pretrained:
            pretrained_file = checkpoint.params_path(config.pretrained, config.pretrained_epoch)
            if not os.path.isfile(pretrained_file):
                raise UserError(f"--pretrained {config.pretrained} --epoch {config.pretrained_epoch}: "
                                f"{pretrained_file} does not exist; pass --pretrained '' to train from scratch")
            _, args, auxs = checkpoint.load_checkpoint(config.pretrained, config.pretrained_epoch,
                                                       flag="--pretrained/--epoch")
            logger.info("Start training with %s from pretrained model %s", devices_label(ctx), config.pretrained)
            checkpoint.check_params_fit(symbol, args, auxs, input_shapes, pretrained_file, config.num_classes)
            return Start(config.begin_epoch, args, auxs, self._freeze_pattern(symbol))
        logger.info("Experimental: start training from scratch with %s", devices_label(ctx))
        return Start(config.begin_epoch)

    def data(self, cluster: Cluster, logger: logging.Logger) -> TrainData:
        config = self.config
        settings = dict(TRAIN_AUGMENTATIONS[config.augment])
        if config.seed is not None:
            settings["seed"] = config.seed  # shuffle order and augmentation draws
        shards = [self.num_images]
        if cluster.distributed:
            # each worker reads its own contiguous part of the .rec (see train/distributed.py)
            shards = shard_sizes(config.train_path, cluster.num_workers)
            if min(shards) < 1:
                raise UserError(f"{config.train_path}: {self.num_images} images cannot be shared by "
                                f"{cluster.num_workers} workers (shards of {shards} images)")
            settings.update(num_parts=cluster.num_workers, part_index=cluster.rank)
        batches = DetRecordIter(config.train_path, config.batch_size, self.data_shape, path_imglist=config.train_list,
                                **self._iterator_args(), **settings)
        # the iterator pads the last batch; every worker runs as many batches as the longest shard needs
        return TrainData(batches, batches_per_worker(shards, config.batch_size))

    def _iterator_args(self) -> dict:
        config = self.config
        return dict(mean_pixels=config.mean_pixels, std_pixels=config.std_pixels, label_pad_width=self.label_pad_width)

    def validation(self, cluster: Cluster, ctx: list) -> Validation:
        config = self.config
        if not config.val_path:
            return Validation()
        data = DetRecordIter(config.val_path, config.batch_size, self.data_shape, path_imglist=config.val_list,
                             **self._iterator_args(), **VALIDATION)
        metric_class = VOC07MApMetric if config.voc07_metric else MApMetric
        return Validation(data, metric_class(config.ovp_thresh, config.use_difficult, config.class_names, pred_idx=3))

    def train_metric(self) -> mx.metric.EvalMetric:
        return MultiBoxMetric(loc_name=LOC_LOSS_METRIC_NAMES[self.config.loc_loss])

    def fit_settings(self, ctx: list) -> FitSettings:
        config = self.config
        monitor = mx.mon.Monitor(config.iter_monitor, pattern=config.monitor_pattern) \
            if config.iter_monitor > 0 else None
        # each device's loss is normalised by its own slice: the step is the mean over all slices
        return FitSettings(data_names=("data",), label_names=("label",), batch_size=config.batch_size,
                           rescale_grad=1.0 / len(ctx) if ctx else 1.0, initializer=mx.init.Xavier(),
                           monitor=monitor, frozen_label="Freezed parameters")


def train_ssd(config: SSDConfig, ctx: Sequence[mx.Context]) -> dict:
    """Train an SSD network; returns ``{'prefix', 'begin_epoch', 'end_epoch', 'best_map'}``.

    ``config.prefix`` is used as given (train.py appends ``_<network>_<shape>``).
    Batches are ``config.batch_size`` images split over ``ctx``; with a ``dist_*``
    ``config.kv_store`` that is per worker, each worker reads its shard of the
    record, and rank 0 alone writes files and validates (:mod:`train.distributed`).
    """
    return run_training(SSDFamily(config), ctx)


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
    """example/ssd's ``train_net`` signature over :func:`train_ssd`.

    ``data_shape`` is an int or ``(3, S, S)``; ``mean_pixels`` a number or three;
    ``force_nms`` is the original's name for ``force_suppress`` (either turns
    it on). ``extra`` takes the other :class:`SSDConfig` fields (``std_pixels``,
    ``warmup_epochs``, ``cls_loss``, ``seed``, ``augment``, ``keep``, ``ema``, ...).
    ``prefix`` is used as given.
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
