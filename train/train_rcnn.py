"""Faster R-CNN end-to-end training with ``Module.fit`` (the original example/rcnn ``train.py``).

The same machinery as SSD's ``train_net``: :class:`train.loop.ResumableModule`
(momentum restored on resume), :class:`train.loop.EpochRecorder` (checkpoint +
optimizer state every epoch, history row, ``<prefix>-best``),
:class:`train.progress.ProgressLogger` (ETA, NaN guard), ``--resume auto``.

Kept from the original: one image per device (``rcnn_batch_size`` images per
device, 1 by default), SGD with momentum and weight decay,
``rescale_grad = 1 / batch``, ``clip_gradient = 5``, the LR multiplied by
``lr_factor`` at each epoch of ``lr_steps``, new layers N(0, 0.01) and
``bbox_pred`` N(0, 0.001), the parameters of ``cfg.net_fixed_params`` frozen,
and the six metrics RPNAcc .. RCNNL1Loss.

Changed or added: data comes from the SSD ``.rec`` files
(:class:`dataset.rcnn_loader.AnchorLoader`; images without objects are
skipped and counted); ``kv_store`` is a parameter (the original hard-coded
'device'); validation VOC07 mAP after every epoch on the test graph; the run's
:class:`symbol.rcnn_factory.RCNNConfig` is saved as ``<prefix>-rcnn.json`` so
that evaluate.py and demo.py rebuild the same test graph and preprocessing;
without pretrained weights nothing is frozen (random layers must learn).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import mxnet as mx

from config.errors import UserError
from dataset.rcnn_loader import AnchorLoader, feat_shape_from_symbol
from evaluate.evaluate_rcnn import inference_config, score_detections
from evaluate.rcnn_detect import detect_rec
from symbol.rcnn_factory import RCNNConfig, fixed_param_names, get_network, get_rcnn_train, rcnn_initializer
from train import checkpoint
from train.loop import EpochRecorder, ResumableModule, devices_label, load_resume, logging_to
from train.progress import ProgressLogger, TrainingHistory
from train.rcnn_checkpoint import save_run_config
from train.rcnn_metric import rcnn_metrics
from train.train_net import check_params_match, get_lr_scheduler

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


def train_rcnn(
    network: str, train_path: str, num_classes: int, cfg: RCNNConfig, prefix: str, ctx: Sequence[mx.Context],
    begin_epoch: int, end_epoch: int, resume, pretrained: str, epoch: int, frequent: int, lr: float,
    lr_steps: str, lr_factor: float, momentum: float, wd: float, val_path: str = "",
    class_names: Sequence[str] | None = None, kv_store: str = "local", seed: int | None = None,
    warmup_epochs: float = 0.0, log_file: str | None = None, *, voc07_metric: bool = True,
    ovp_thresh: float = 0.5, use_difficult: bool = False,
) -> dict:
    """Train Faster R-CNN ``network``; returns ``{'prefix', 'begin_epoch', 'end_epoch', 'best_map'}``.

    ``num_classes`` counts object classes (the graph adds background).
    ``prefix`` is used as given (train.py appends ``_<network>``). ``resume``
    is an epoch, -1, or 'auto'. ``pretrained`` is a weights file (or a
    checkpoint prefix with ``epoch``), '' to start from scratch; names it does
    not hold are initialised. One batch is ``cfg.rcnn_batch_size`` images on
    each device of ``ctx``. ``val_path`` ('' for none) is scored after every
    epoch on ``ctx[0]`` with the VOC07 (or, ``voc07_metric=False``, area) mAP.
    ``seed`` fixes the initialisation, the image order and flips, and the
    anchor sampling; the ROI sampling of ``proposal_target`` stays random.
    """
    ctx, begin_epoch = list(ctx), int(begin_epoch)
    with logging_to(log_file) as logger:
        get_network(network)  # an unknown name is a one-line error before anything is read
        if num_classes < 1:
            raise UserError(f"--num-class {num_classes}: need at least one object class")
        if val_path and not os.path.isfile(val_path):
            raise UserError(f"--val-path {val_path}: file not found")
        if seed is not None:
            mx.random.seed(seed)

        symbol = get_rcnn_train(network, num_classes, cfg)
        batch_size = cfg.rcnn_batch_size * len(ctx)
        loader = AnchorLoader.from_config(train_path, cfg, feat_shape_from_symbol(symbol), batch_size=batch_size,
                                          seed=seed)
        if loader.num_skipped:
            logger.info("Skipped %d of %d training images without objects", loader.num_skipped,
                        loader.num_skipped + len(loader.keys))
        input_shapes = {desc.name: desc.shape for desc in loader.provide_data + loader.provide_label}

        ctx_str = devices_label(ctx)
        resume, args, auxs, source, states_file = load_resume(prefix, resume, ctx, logger)
        if resume > 0:
            begin_epoch = resume
        elif pretrained:
            args, auxs, source = load_pretrained(pretrained, epoch)
            logger.info("Start training with %s from pretrained weights %s", ctx_str, source)
        else:
            logger.info("Start training from scratch with %s", ctx_str)
            args, auxs, source = None, None, ""
        if args is not None:
            check_params_match(symbol, args, auxs, input_shapes, source, num_classes)

        # frozen layers keep pretrained features; from scratch every layer must learn
        frozen = fixed_param_names(symbol, cfg.net_fixed_params) if pretrained else []
        if frozen:
            logger.info("Fixed parameters: [%s]", ",".join(frozen))
        elif cfg.net_fixed_params:
            logger.info("No pretrained weights: --net-fixed-params %s not applied", list(cfg.net_fixed_params))

        config_file = save_run_config(prefix, cfg, num_classes, class_names)
        logger.info("Run configuration: %s", config_file)
        if begin_epoch >= end_epoch:
            logger.info("Nothing to do: already at epoch %d of %d", begin_epoch, end_epoch)
            return {"prefix": prefix, "begin_epoch": begin_epoch, "end_epoch": end_epoch,
                    "best_map": checkpoint.best_score(prefix)}

        batches_per_epoch = len(loader)
        learning_rate, lr_scheduler = get_lr_scheduler(lr, lr_steps, lr_factor, batches_per_epoch * batch_size,
                                                       batch_size, begin_epoch, warmup_epochs)
        optimizer_params = {
            "learning_rate": learning_rate, "momentum": momentum, "wd": wd, "lr_scheduler": lr_scheduler,
            "clip_gradient": 5.0, "rescale_grad": 1.0 / batch_size,
        }
        mod = ResumableModule(symbol, data_names=DATA_NAMES, label_names=LABEL_NAMES, logger=logger, context=ctx,
                              fixed_param_names=frozen or None, optimizer_states=states_file)

        validate = None
        if val_path:
            eval_cfg = inference_config(cfg)

            def validate(module: mx.mod.BaseModule) -> float:
                detections, labels = detect_rec(module, val_path, eval_cfg, num_classes, ctx[0])
                scores = score_detections(detections, labels, class_names, voc07_metric, ovp_thresh, use_difficult)
                return scores["mAP"]

        train_metric = rcnn_metrics()
        history = TrainingHistory(prefix, begin_epoch)
        recorder = EpochRecorder(mod, prefix, train_metric, history, logger, validate=validate)
        progress = ProgressLogger(batch_size, frequent, batches_per_epoch, begin_epoch, end_epoch, logger)

        mod.fit(
            loader, eval_metric=train_metric, batch_end_callback=progress, epoch_end_callback=recorder.epoch_end,
            optimizer="sgd", optimizer_params=optimizer_params, kvstore=mx.kvstore.create(kv_store),
            begin_epoch=begin_epoch, num_epoch=end_epoch, initializer=rcnn_initializer(),
            arg_params=args, aux_params=auxs, allow_missing=True,
        )
        best = recorder.best if recorder.best >= 0 else None
        logger.info("Training finished: checkpoints %s-NNNN.params, config %s, history %s", prefix, config_file,
                    history.csv_path)
        return {"prefix": prefix, "begin_epoch": begin_epoch, "end_epoch": end_epoch, "best_map": best}
