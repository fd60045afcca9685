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
:class:`config.train_config.RCNNConfig` is saved as ``<prefix>-rcnn.json`` so
that evaluate.py and demo.py rebuild the same test graph and preprocessing;
without pretrained weights nothing is frozen (random layers must learn).
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence

import mxnet as mx

from config.environment import scoped_env
from config.errors import UserError
from config.run_config import save_run_config
from config.train_config import RCNNConfig
from dataset.rcnn_loader import AnchorLoader, feat_shape_from_symbol
from dataset.recordio import scan_labels
from evaluate import checkpoint
from evaluate.checkpoint import check_params_fit
from evaluate.evaluate_rcnn import inference_config, score_detections
from evaluate.rcnn_detect import detect_rec
from symbol.proposal_target import reset_seeded_streams
from symbol.rcnn_factory import fixed_param_names, get_network, get_rcnn_train, rcnn_initializer
from train.distributed import Cluster, EqualBatches, batches_per_worker, epoch_end_callback, load_resume_everywhere
from train.loop import (
    DivergenceGuard,
    EpochRecorder,
    ResumableModule,
    devices_label,
    logging_to,
    make_lr_scheduler,
)
from train.progress import ProgressLogger, TrainingHistory
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
    cluster = Cluster(cfg.kv_store)
    with logging_to(cluster.log_file(cfg.log_file)) as logger, _proposal_target_seed(cfg.seed):
        cluster.tag_logs(logger)
        lr = cluster.describe(logger, cfg.lr, cfg.lr_scale_workers)
        get_network(cfg.network)  # an unknown name is a one-line error before anything is read
        if cfg.num_classes < 1:
            raise UserError(f"--num-class {cfg.num_classes}: need at least one object class")
        if cfg.val_path and not os.path.isfile(cfg.val_path):
            raise UserError(f"--val-path {cfg.val_path}: file not found")
        if cfg.seed is not None:
            mx.random.seed(cfg.seed)

        scan_labels(cfg.train_path, num_classes=cfg.num_classes)
        if cfg.val_path:
            scan_labels(cfg.val_path, num_classes=cfg.num_classes)
        symbol = get_rcnn_train(cfg.network, cfg.num_classes, cfg)
        batch_size = cfg.rcnn_batch_size * len(ctx)
        loader = AnchorLoader.from_config(cfg.train_path, cfg, feat_shape_from_symbol(symbol), batch_size=batch_size,
                                          seed=cfg.seed, num_parts=cluster.num_workers, part_index=cluster.rank)
        # every worker runs as many batches as the longest shard (incomplete batches dropped, as the original)
        batches_per_epoch = batches_per_worker(loader.shard_sizes, batch_size, drop_last=True)
        if min(loader.shard_sizes) < batch_size:
            raise UserError(f"{cfg.train_path}: shards of {loader.shard_sizes} images with objects for "
                            f"{cluster.num_workers} workers; each needs at least a batch of {batch_size}")
        train_data = EqualBatches(loader, batches_per_epoch, logger, cluster.rank) if cluster.distributed else loader
        if loader.num_skipped:
            logger.info("Skipped %d of %d training images without objects", loader.num_skipped,
                        loader.num_skipped + sum(loader.shard_sizes))
        input_shapes = {desc.name: desc.shape for desc in loader.provide_data + loader.provide_label}

        ctx_str = devices_label(ctx)
        begin_epoch = int(cfg.begin_epoch)
        resume, args, auxs, source, states_file = load_resume_everywhere(cluster, cfg.prefix, cfg.resume, ctx, logger)
        if resume > 0:
            begin_epoch = resume
        elif cfg.pretrained:
            args, auxs, source = load_pretrained(cfg.pretrained, cfg.pretrained_epoch)
            logger.info("Start training with %s from pretrained weights %s", ctx_str, source)
        else:
            logger.info("Start training from scratch with %s", ctx_str)
            args, auxs, source = None, None, ""
        if args is not None:
            check_params_fit(symbol, args, auxs, input_shapes, source, cfg.num_classes)

        # frozen layers keep pretrained features; from scratch every layer must learn
        frozen = fixed_param_names(symbol, cfg.net_fixed_params) if cfg.pretrained else []
        if frozen:
            logger.info("Fixed parameters: [%s]", ",".join(frozen))
        elif cfg.net_fixed_params:
            logger.info("No pretrained weights: --net-fixed-params %s not applied", list(cfg.net_fixed_params))

        config_file = save_run_config(cfg) if cluster.writer else "(written by rank 0)"
        logger.info("Run configuration: %s", config_file)
        if begin_epoch >= cfg.end_epoch:
            logger.info("Nothing to do: already at epoch %d of %d", begin_epoch, cfg.end_epoch)
            return {"prefix": cfg.prefix, "begin_epoch": begin_epoch, "end_epoch": cfg.end_epoch,
                    "best_map": checkpoint.best_score(cfg.prefix)}

        schedule_batches = cluster.schedule_batches(batches_per_epoch)
        lr_scheduler = make_lr_scheduler(lr, cfg.lr_steps, cfg.lr_factor, schedule_batches, begin_epoch,
                                         cfg.warmup_epochs, logger)
        optimizer_params = {
            "learning_rate": lr, "momentum": cfg.momentum, "wd": cfg.wd, "lr_scheduler": lr_scheduler,
            "clip_gradient": 5.0, "rescale_grad": cluster.rescale_grad(1.0 / batch_size),
        }
        if states_file and cluster.update_on_kvstore:
            logger.info("dist_async: optimizer state of %s not loaded (the servers hold momentum)", states_file)
            states_file = None
        progress = ProgressLogger(batch_size, cfg.frequent, batches_per_epoch, begin_epoch, cfg.end_epoch, logger,
                                  lr_of=lambda: mod._optimizer.learning_rate)
        mod = ResumableModule(symbol, data_names=DATA_NAMES, label_names=LABEL_NAMES, logger=logger, context=ctx,
                              fixed_param_names=frozen or None, optimizer_states=states_file,
                              batch_begin_callback=progress.batch_begin,
                              update_on_kvstore=cluster.update_on_kvstore)

        validate = None
        if cfg.val_path and cluster.writer:  # rank 0 validates for the job
            eval_cfg = inference_config(cfg)

            def validate(module: mx.mod.BaseModule) -> float:
                detections, labels = detect_rec(module, cfg.val_path, eval_cfg, cfg.num_classes, ctx[0])
                scores = score_detections(detections, labels, cfg.class_names, cfg.voc07_metric, cfg.ovp_thresh,
                                          cfg.use_difficult)
                return scores["mAP"]

        train_metric = rcnn_metrics()
        history = TrainingHistory(cfg.prefix, begin_epoch)
        recorder = EpochRecorder(mod, cfg.prefix, train_metric, history, progress, logger, keep=cfg.keep,
                                 validate=validate, writer=cluster.writer, save_states=not cluster.update_on_kvstore)

        cluster.start_watchdog(cfg.dist_timeout)
        mod.fit(
            train_data, eval_metric=train_metric,
            batch_end_callback=[DivergenceGuard(mod, cfg.prefix), progress, cluster.beat],
            epoch_end_callback=epoch_end_callback(cluster, mod, recorder.epoch_end, logger),
            optimizer="sgd", optimizer_params=optimizer_params, kvstore=cluster.kv,
            begin_epoch=begin_epoch, num_epoch=cfg.end_epoch, initializer=rcnn_initializer(),
            arg_params=args, aux_params=auxs, allow_missing=True,
        )
        best = recorder.best if recorder.best >= 0 else None
        logger.info("Training finished: checkpoints %s-NNNN.params, config %s, history %s", cfg.prefix, config_file,
                    history.csv_path)
        return {"prefix": cfg.prefix, "begin_epoch": begin_epoch, "end_epoch": cfg.end_epoch, "best_map": best}


@contextlib.contextmanager
def _proposal_target_seed(seed: int | None) -> Iterator[None]:
    """Seed ``proposal_target``'s ROI sampling for the run (the op reads ``MXDET_RCNN_SEED``
    when its operators are created) and restart its stream, so one seed repeats a run."""
    with scoped_env("MXDET_RCNN_SEED", None if seed is None else str(seed)):
        if seed is not None:
            reset_seeded_streams()
        yield
