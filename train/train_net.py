"""SSD training with ``Module.fit``: the original ``train_net`` and what it lacked.

Kept from example/ssd (seed 003): the signature, resume / finetune / pretrained
start, the freeze regex, the multi-factor LR schedule pre-decayed on resume,
Monitor, the log file, a checkpoint every epoch, validation mAP on ``det_out``.

Fixed: ``train_list``/``val_list`` reach the iterators (apache/mxnet#8165);
``nms_thresh``, ``force_suppress`` and ``nms_topk`` reach the graph (the
original passed ``force_nms``, which was ignored).

Added: optimizer state saved with every checkpoint and restored on resume;
``resume='auto'``; linear warm-up; a ``<prefix>-best`` checkpoint by validation
mAP; a progress line with ETA; ``<prefix>-metrics.csv`` and ``<prefix>-curves.png``;
clear errors when ``num_classes`` disagrees with a checkpoint.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence

import mxnet as mx

from config.config import AUGMENTATIONS, cfg
from config.errors import UserError
from dataset.iterator import DetRecordIter
from evaluate.eval_metric import MApMetric, VOC07MApMetric
from symbol.symbol_factory import get_symbol_train
from train import checkpoint
from train.loop import EpochRecorder, ResumableModule, devices_label, load_resume, logging_to
from train.metric import MultiBoxMetric
from train.progress import ProgressLogger, TrainingHistory


def get_lr_scheduler(
    learning_rate: float, lr_refactor_step: str, lr_refactor_ratio: float, num_example: int,
    batch_size: int, begin_epoch: int, warmup_epochs: float = 0.0,
) -> tuple:
    """(learning rate, scheduler) for epochs ``begin_epoch`` onwards.

    ``lr_refactor_step`` is a comma list of epochs ('80, 160'). Steps already
    passed when resuming are applied to the starting rate, as the original did;
    the remaining ones become a ``MultiFactorScheduler`` counted in batches.
    ``warmup_epochs`` > 0 ramps the rate linearly from 0 over that many epochs.
    """
    if lr_refactor_ratio <= 0:
        raise UserError(f"--lr-factor {lr_refactor_ratio}: must be positive")
    try:
        steps_epochs = [int(s) for s in str(lr_refactor_step).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--lr-steps {lr_refactor_step!r}: expected comma separated epochs") from None
    epoch_size = max(1, num_example // batch_size)
    lr = learning_rate
    if lr_refactor_ratio < 1:
        for step in steps_epochs:
            if begin_epoch >= step:
                lr *= lr_refactor_ratio
        if lr != learning_rate:
            logging.getLogger().info("Adjusted learning rate to %s for epoch %d", lr, begin_epoch)
        steps = [epoch_size * (s - begin_epoch) for s in steps_epochs if s > begin_epoch]
    else:
        steps = []
    warmup_steps = int(epoch_size * max(0.0, warmup_epochs - begin_epoch))
    warmup = {}
    if warmup_steps > 0:
        warmup = dict(warmup_steps=warmup_steps, warmup_mode="linear",
                      warmup_begin_lr=learning_rate * begin_epoch / warmup_epochs)
    if steps:
        return lr, mx.lr_scheduler.MultiFactorScheduler(step=steps, factor=lr_refactor_ratio, base_lr=lr,
                                                        **warmup)
    if warmup:
        # a constant rate after the ramp: FactorScheduler with factor 1 never decays
        return lr, mx.lr_scheduler.FactorScheduler(step=10 ** 9, factor=1.0, base_lr=lr, **warmup)
    return lr, None


def check_params_match(net: mx.sym.Symbol, args: dict, auxs: dict, input_shapes: dict, source: str,
                       num_classes: int) -> None:
    """Raise a one-line error when loaded params do not fit ``net``.

    A mismatch in a class-prediction layer means ``--num-class`` disagrees with
    the checkpoint (zhreshold/mxnet-ssd#124: a 20-class SSD loaded for 3 classes).
    """
    arg_shapes, _, aux_shapes = net.infer_shape(**input_shapes)
    expected = dict(zip(net.list_arguments(), arg_shapes))
    expected.update(zip(net.list_auxiliary_states(), aux_shapes))

    def is_class_layer(name: str) -> bool:  # SSD's *_cls_pred_conv, Faster R-CNN's cls_score
        return "cls_pred" in name or name.startswith("cls_score")

    # class layers first: a different class count also changes the box layers of
    # Faster R-CNN, and it should be reported as what it is
    params = sorted(list(args.items()) + list(auxs.items()), key=lambda item: not is_class_layer(item[0]))
    for name, value in params:
        want = expected.get(name)
        if want is None or tuple(value.shape) == tuple(want):
            continue
        if is_class_layer(name):
            raise UserError(
                f"--num-class {num_classes} disagrees with {source}: its layer {name} has shape "
                f"{tuple(value.shape)}, this network needs {tuple(want)}"
            )
        raise UserError(f"{source}: parameter {name} has shape {tuple(value.shape)}, "
                        f"this network needs {tuple(want)}")


def train_net(
    net: str, train_path: str, num_classes: int, batch_size: int, data_shape, mean_pixels,
    resume, finetune: int, pretrained: str, epoch: int, prefix: str, ctx: Sequence[mx.Context],
    begin_epoch: int, end_epoch: int, frequent: int, learning_rate: float, momentum: float,
    weight_decay: float, lr_refactor_step: str, lr_refactor_ratio: float, freeze_layer_pattern: str = "",
    num_example: int = 10000, label_pad_width: int = 350, nms_thresh: float = 0.45,
    force_nms: bool = False, ovp_thresh: float = 0.5, use_difficult: bool = False,
    class_names: list | None = None, voc07_metric: bool = False, nms_topk: int = 400,
    force_suppress: bool = False, train_list: str = "", val_path: str = "", val_list: str = "",
    iter_monitor: int = 0, monitor_pattern: str = ".*", log_file: str | None = None,
    kv_store: str = "local", *, std_pixels=None, warmup_epochs: float = 0.0, cls_loss: str = "softmax",
    seed: int | None = None, augment: str = "ssd",
) -> dict:
    """Train an SSD network; returns ``{'prefix', 'begin_epoch', 'end_epoch', 'best_map'}``.

    Parameters are those of example/ssd's ``train_net`` (``prefix`` is used as
    given: the caller appends ``_<network>_<shape>``). ``resume`` may be 'auto'.
    ``force_nms`` is the original's name for ``force_suppress``; either turns it on.
    ``augment`` picks the training augmentation: 'ssd' (``cfg.train``, the
    original's crop samplers, padding, colour jitter and mirror), 'flip' (mirror
    only) or 'none'.
    """
    with logging_to(log_file) as logger:
        if seed is not None:
            mx.random.seed(seed)
            import numpy as np

            np.random.seed(seed)

        if isinstance(data_shape, int):
            data_shape = (3, data_shape, data_shape)
        if len(data_shape) != 3 or data_shape[0] != 3:
            raise UserError(f"--data-shape {data_shape}: expected an int or (3, height, width)")
        if isinstance(mean_pixels, (int, float)):
            mean_pixels = [mean_pixels] * 3
        if len(mean_pixels) != 3:
            raise UserError("--mean-r/g/b: must provide all three RGB mean values")
        ctx = list(ctx)

        if augment not in AUGMENTATIONS:
            raise UserError(f"--augment {augment}: choose from {', '.join(AUGMENTATIONS)}")
        train_iter = DetRecordIter(train_path, batch_size, data_shape, mean_pixels=mean_pixels,
                                   std_pixels=std_pixels, label_pad_width=label_pad_width,
                                   path_imglist=train_list, **cfg[AUGMENTATIONS[augment]])
        val_iter = None
        if val_path:
            val_iter = DetRecordIter(val_path, batch_size, data_shape, mean_pixels=mean_pixels,
                                     std_pixels=std_pixels, label_pad_width=label_pad_width,
                                     path_imglist=val_list, **cfg.valid)

        symbol = get_symbol_train(net, data_shape[1], num_classes=num_classes, nms_thresh=nms_thresh,
                                  force_suppress=force_suppress or force_nms, nms_topk=nms_topk,
                                  cls_loss=cls_loss)
        input_shapes = {"data": (batch_size,) + tuple(data_shape), "label": train_iter.provide_label[0][1]}

        fixed_param_names = None
        if freeze_layer_pattern.strip():
            pattern = re.compile(freeze_layer_pattern)
            fixed_param_names = [name for name in symbol.list_arguments() if pattern.match(name)]

        begin_epoch = int(begin_epoch)
        ctx_str = devices_label(ctx)
        resume, args, auxs, source, states_file = load_resume(prefix, resume, ctx, logger)
        if resume > 0:
            check_params_match(symbol, args, auxs, input_shapes, source, num_classes)
            begin_epoch = resume
        elif finetune > 0:
            logger.info("Start finetuning with %s from epoch %d", ctx_str, finetune)
            _, args, auxs = checkpoint.load_checkpoint(prefix, finetune, flag="--finetune")
            check_params_match(symbol, args, auxs, input_shapes, checkpoint.params_path(prefix, finetune),
                               num_classes)
            begin_epoch = finetune
            # as the original: everything loaded is frozen except the prediction layers
            fixed_param_names = [k for k in args if "pred" not in k]
        elif pretrained:
            pretrained_file = checkpoint.params_path(pretrained, epoch)
            if not os.path.isfile(pretrained_file):
                raise UserError(f"--pretrained {pretrained} --epoch {epoch}: {pretrained_file} does not exist; "
                                "pass --pretrained '' to train from scratch")
            logger.info("Start training with %s from pretrained model %s", ctx_str, pretrained)
            _, args, auxs = checkpoint.load_checkpoint(pretrained, epoch, flag="--pretrained/--epoch")
            check_params_match(symbol, args, auxs, input_shapes, checkpoint.params_path(pretrained, epoch),
                               num_classes)
        else:
            logger.info("Experimental: start training from scratch with %s", ctx_str)
            args, auxs, fixed_param_names = None, None, None

        if fixed_param_names:
            logger.info("Freezed parameters: [%s]", ",".join(fixed_param_names))
        if begin_epoch >= end_epoch:
            logger.info("Nothing to do: already at epoch %d of %d", begin_epoch, end_epoch)
            return {"prefix": prefix, "begin_epoch": begin_epoch, "end_epoch": end_epoch,
                    "best_map": checkpoint.best_score(prefix)}

        learning_rate, lr_scheduler = get_lr_scheduler(learning_rate, lr_refactor_step, lr_refactor_ratio,
                                                       num_example, batch_size, begin_epoch, warmup_epochs)
        optimizer_params = {
            "learning_rate": learning_rate, "momentum": momentum, "wd": weight_decay,
            "lr_scheduler": lr_scheduler, "clip_gradient": None,
            "rescale_grad": 1.0 / len(ctx) if ctx else 1.0,
        }
        mod = ResumableModule(symbol, label_names=("label",), logger=logger, context=ctx,
                              fixed_param_names=fixed_param_names, optimizer_states=states_file)

        train_metric = MultiBoxMetric()
        metric_cls = VOC07MApMetric if voc07_metric else MApMetric
        valid_metric = metric_cls(ovp_thresh, use_difficult, class_names, pred_idx=3)
        history = TrainingHistory(prefix, begin_epoch)
        recorder = EpochRecorder(mod, prefix, train_metric, history, logger, scored_by_fit=val_iter is not None)
        batches_per_epoch = -(-num_example // batch_size)  # the iterator pads the last batch
        progress = ProgressLogger(batch_size, frequent, batches_per_epoch, begin_epoch, end_epoch, logger)
        monitor = mx.mon.Monitor(iter_monitor, pattern=monitor_pattern) if iter_monitor > 0 else None

        mod.fit(
            train_iter, val_iter, eval_metric=train_metric, validation_metric=valid_metric,
            batch_end_callback=progress, epoch_end_callback=recorder.epoch_end,
            eval_end_callback=recorder.eval_end if val_iter is not None else None,
            optimizer="sgd", optimizer_params=optimizer_params, kvstore=mx.kvstore.create(kv_store),
            begin_epoch=begin_epoch, num_epoch=end_epoch, initializer=mx.init.Xavier(),
            arg_params=args, aux_params=auxs, allow_missing=True, monitor=monitor,
        )
        best = recorder.best if recorder.best >= 0 else None
        logger.info("Training finished: checkpoints %s-NNNN.params, history %s, curves %s", prefix,
                    history.csv_path, history.png_path)
        return {"prefix": prefix, "begin_epoch": begin_epoch, "end_epoch": end_epoch, "best_map": best}
