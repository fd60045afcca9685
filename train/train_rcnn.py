"""Faster R-CNN end-to-end training (example/rcnn's ``train.py``): the family adapter of :mod:`train.engine`.

One batch is ``rcnn_batch_size`` images on each device; data comes from the SSD ``.rec`` files
(:class:`dataset.rcnn_loader.AnchorLoader`, images without objects skipped and counted); the run is
validated (VOC07 mAP) after every epoch on the test graph. Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence

import mxnet as mx

from config.environment import scoped_env
from config.errors import UserError
from config.train_config import RCNNConfig
from dataset.rcnn_loader import AnchorLoader, feat_shape_from_symbol
from dataset.recordio import scan_labels
from evaluate import checkpoint
from evaluate.anchor_fit import check_rcnn_anchors, read_record_boxes, write_label_stats
from evaluate.evaluate_rcnn import inference_config, score_detections
from evaluate.rcnn_detect import detect_rec
from symbol.proposal_target import reset_seeded_streams
from symbol.rcnn_factory import fixed_param_names, get_rcnn_train, rcnn_initializer
from symbol.registry import RCNN, get_network
from train.distributed import Cluster, batches_per_worker
from train.engine import Family, FitSettings, Start, TrainData, Validation, record_anchor_fit, run_training
from train.logs import devices_label
from train.rcnn_metric import rcnn_metrics

DATA_NAMES = ("data", "im_info", "gt_boxes")
LABEL_NAMES = ("label", "bbox_target", "bbox_weight")


def load_pretrained(pretrained: str, epoch: int) -> tuple[dict, dict, str]:
    """(arg_params, aux_params, path) of ImageNet or R-CNN weights.

    ``pretrained`` is a ``.params`` file (the original's ``model/vgg16-0000.params``)
    or a checkpoint prefix completed by ``epoch``.
    """
    path = pretrained if os.path.isfile(pretrained) else checkpoint.params_path(pretrained, epoch)
    if not os.path.isfile(path):
        raise UserError(f"--pretrained {pretrained}: file not found (nor {path}); "
                        "pass --pretrained '' to train from scratch")
    loaded = mx.nd.load(path)
    if not isinstance(loaded, dict):
        raise UserError(f"--pretrained {path}: holds no named parameters")
    args = {key.split(":", 1)[-1]: value for key, value in loaded.items() if not key.startswith("aux:")}
    auxs = {key[4:]: value for key, value in loaded.items() if key.startswith("aux:")}
    return args, auxs, path


class RCNNFamily(Family):
    """Faster R-CNN on :class:`AnchorLoader`: one image per device, validated on the test graph."""

    name = "rcnn"

    def __init__(self, config: RCNNConfig, num_devices: int):
        self.config = config
        self.batch_size = config.rcnn_batch_size * num_devices
        self.loader: AnchorLoader | None = None

    def scope(self) -> contextlib.AbstractContextManager:
        return _proposal_target_seed(self.config.seed)

    def prepare(self, cluster: Cluster, logger: logging.Logger) -> tuple[mx.sym.Symbol, dict]:
        cfg = self.config
        get_network(cfg.network, RCNN)  # an unknown name is a one-line error before anything is read
        if cfg.num_classes < 1:
            raise UserError(f"--num-class {cfg.num_classes}: need at least one object class")
        if cfg.val_path and not os.path.isfile(cfg.val_path):
            raise UserError(f"--val-path {cfg.val_path}: file not found")
        scan_labels(cfg.train_path, num_classes=cfg.num_classes)
        if cfg.val_path:
            scan_labels(cfg.val_path, num_classes=cfg.num_classes)
        symbol = get_rcnn_train(cfg.network, cfg.num_classes, cfg)
        # the loader's shapes are the graph's input shapes, so it is made before the weights are checked
        self.loader = AnchorLoader.from_config(cfg.train_path, cfg, feat_shape_from_symbol(symbol),
                                               batch_size=self.batch_size, seed=cfg.seed,
                                               num_parts=cluster.num_workers, part_index=cluster.rank)
        if min(self.loader.shard_sizes) < self.batch_size:
            raise UserError(f"{cfg.train_path}: shards of {self.loader.shard_sizes} images with objects for "
                            f"{cluster.num_workers} workers; each needs at least a batch of {self.batch_size}")
        self.feat_shape = feat_shape_from_symbol(symbol)
        if self.loader.num_skipped:
            logger.info("Skipped %d of %d training images without objects", self.loader.num_skipped,
                        self.loader.num_skipped + sum(self.loader.shard_sizes))
        return symbol, {desc.name: desc.shape for desc in self.loader.provide_data + self.loader.provide_label}

    def check_data(self, cluster: Cluster, logger: logging.Logger) -> None:
        cfg = self.config
        report, lines = check_rcnn_anchors(cfg.train_path, cfg, self.feat_shape)
        # logged, not warned: the RPN also trains each object's best anchor, whatever its IoU, and with three
        # scales on a stride-16 grid few objects reach IoU 0.7
        record_anchor_fit(cfg.prefix, report, lines, cluster, logger, warn=False)
        if cluster.writer:
            boxes, classes, difficult, image_index = read_record_boxes(cfg.train_path)
            write_label_stats(boxes, classes, image_index, cfg.class_names, None, f"{cfg.prefix}-labels.png",
                              difficult=difficult, title=cfg.network)

    def frozen_on_resume(self, symbol: mx.sym.Symbol) -> list[str]:
        # frozen layers keep pretrained features; from scratch every layer must learn
        return fixed_param_names(symbol, self.config.net_fixed_params) if self.config.pretrained else []

    def start(self, symbol: mx.sym.Symbol, input_shapes: dict, ctx: list, logger: logging.Logger) -> Start:
        cfg = self.config
        if not cfg.pretrained:
            logger.info("Start training from scratch with %s", devices_label(ctx))
            if cfg.net_fixed_params:
                logger.info("No pretrained weights: --net-fixed-params %s not applied", list(cfg.net_fixed_params))
            return Start(int(cfg.begin_epoch), frozen=[])
        args, auxs, source = load_pretrained(cfg.pretrained, cfg.pretrained_epoch)
        logger.info("Start training with %s from pretrained weights %s", devices_label(ctx), source)
        checkpoint.check_params_fit(symbol, args, auxs, input_shapes, source, cfg.num_classes)
        return Start(int(cfg.begin_epoch), args, auxs, self.frozen_on_resume(symbol))

    def data(self, cluster: Cluster, logger: logging.Logger) -> TrainData:
        # every worker runs as many batches as the longest shard (incomplete batches dropped, as the original)
        return TrainData(self.loader, batches_per_worker(self.loader.shard_sizes, self.batch_size, drop_last=True))

    def validation(self, cluster: Cluster, ctx: list) -> Validation:
        cfg = self.config
        if not cfg.val_path:
            return Validation()
        eval_cfg = inference_config(cfg)

        def score(module: mx.mod.BaseModule) -> float:
            detections, labels = detect_rec(module, cfg.val_path, eval_cfg, cfg.num_classes, ctx[0])
            return score_detections(detections, labels, cfg.class_names, cfg.voc07_metric, cfg.ovp_thresh,
                                    cfg.use_difficult)["mAP"]

        return Validation(score=score)

    def train_metric(self) -> mx.metric.EvalMetric:
        return rcnn_metrics()

    def fit_settings(self, ctx: list) -> FitSettings:
        return FitSettings(data_names=DATA_NAMES, label_names=LABEL_NAMES, batch_size=self.batch_size,
                           rescale_grad=1.0 / self.batch_size, initializer=rcnn_initializer(), clip_gradient=5.0,
                           frozen_label="Fixed parameters")


def train_rcnn(cfg: RCNNConfig, ctx: Sequence[mx.Context]) -> dict:
    """Train Faster R-CNN ``cfg.network``; returns ``{'prefix', 'begin_epoch', 'end_epoch', 'best_map'}``.

    ``cfg.num_classes`` counts object classes (the graph adds background).
    ``cfg.prefix`` is used as given (train.py appends ``_<network>``).
    ``cfg.resume`` is an epoch, -1, or 'auto'. ``cfg.pretrained`` is a weights
    file (or a checkpoint prefix with ``cfg.pretrained_epoch``), '' to start
    from scratch; names it does not hold are initialised. One batch is
    ``cfg.rcnn_batch_size`` images on each device of ``ctx``. ``cfg.val_path``
    ('' for none) is scored after every epoch on ``ctx[0]``. ``cfg.seed``
    fixes the initialisation, the image order and flips, the anchor sampling
    and the ROI sampling of ``proposal_target``. With a ``dist_*`` ``cfg.kv_store``
    each worker trains on every W-th image and rank 0 alone writes and validates
    (:mod:`train.distributed`).
    """
    ctx = list(ctx)
    return run_training(RCNNFamily(cfg, len(ctx)), ctx)


@contextlib.contextmanager
def _proposal_target_seed(seed: int | None) -> Iterator[None]:
    """Seed ``proposal_target``'s ROI sampling for the run (the op reads ``MXDET_RCNN_SEED``
    when its operators are created) and restart its stream, so one seed repeats a run."""
    with scoped_env("MXDET_RCNN_SEED", None if seed is None else str(seed)):
        if seed is not None:
            reset_seeded_streams()
        yield
