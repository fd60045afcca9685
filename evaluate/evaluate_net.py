"""Score a trained SSD on a .rec file with the VOC metric (example/ssd's evaluate_net).

Differences from the original, each a fix: the whole record is scored unless
``num_batch`` caps it (the original scored 5 batches); ``nms_thresh`` and
``force_suppress`` reach the graph; errors are one line.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence

import mxnet as mx

from config.augmentation import VALIDATION
from config.errors import UserError
from config.run_config import load_run_config
from dataset.iterator import DetRecordIter
from dataset.recordio import scan_labels
from evaluate.checkpoint import check_params_fit, load_checkpoint
from evaluate.eval_metric import MApMetric, VOC07MApMetric
from evaluate.scoring import score_unpadded
from symbol.symbol_factory import get_symbol

# the keys of SSDConfig.graph_overrides: get_symbol keywords that replace the network preset's
GRAPH_OVERRIDE_KEYS = ("sizes", "ratios", "steps", "anchor_clip", "clip_detections")


def model_prefix(prefix: str, network: str, data_shape: int) -> str:
    """The original's rule: a prefix ending in '_' gets ``<network>_<data_shape>`` appended."""
    return f"{prefix}{network}_{data_shape}" if prefix.endswith("_") else prefix


def deploy_prefix(prefix: str) -> str:
    """Where ``tools/deploy.py`` writes the deployed model of ``prefix``."""
    directory, base = os.path.split(prefix)
    return os.path.join(directory, f"deploy_{base}")


def saved_graph_overrides(prefix: str, data_shape: int) -> dict:
    """The graph settings saved in the run config beside ``prefix`` (``SSDConfig.graph_overrides``), or ``{}``.

    A converted model (tools/convert_weights.py) keeps its own toolkit's anchors and box decoding
    this way; a model trained here has none and uses the network's preset. Those anchors are for the
    run config's data shape: another ``data_shape`` is a one-line error.
    """
    run = load_run_config(prefix)
    overrides = getattr(run, "graph_overrides", None) or {}
    if overrides and data_shape != run.data_shape:
        raise UserError(f"--data-shape {data_shape}: {prefix}-ssd.json holds anchors for data shape {run.data_shape}")
    unknown = sorted(set(overrides) - set(GRAPH_OVERRIDE_KEYS))
    if unknown:
        raise UserError(f"{prefix}-ssd.json: unknown graph_overrides key {unknown[0]!r} "
                        f"(known: {', '.join(GRAPH_OVERRIDE_KEYS)})")
    return dict(overrides)


def load_test_model(network: str, prefix: str, epoch: int, data_shape: int, num_classes: int,
                    nms_thresh: float = 0.45, force_suppress: bool = False, nms_topk: int = 400,
                    deploy: bool = False) -> tuple:
    """(test symbol, arg_params, aux_params) for a checkpoint, or its deployed copy.

    With ``deploy`` the symbol is the JSON written by tools/deploy.py (no loss
    layers); otherwise the test graph is rebuilt from ``network``, with the graph
    settings of the run config beside ``prefix`` if it has any (:func:`saved_graph_overrides`),
    and the training checkpoint's weights are loaded into it. A class count that does
    not fit the weights is a one-line error.
    """
    model_prefix = deploy_prefix(prefix)
    if getattr(load_run_config(prefix), "prebuilt_graph", False):
        # a saved inference graph (tools/quantize.py): rebuilding it from ``network`` would lose the INT8 ops
        if deploy:
            raise UserError(f"--deploy: {prefix} is itself a saved inference graph; drop --deploy")
        symbol, args, auxs = load_checkpoint(prefix, epoch, flag="--prefix/--epoch")
        if symbol is None:
            raise UserError(f"{prefix}-symbol.json: not found; {prefix}-ssd.json says the graph is saved there")
    elif deploy:
        if not os.path.isfile(f"{model_prefix}-symbol.json"):
            raise UserError(f"--deploy: {model_prefix}-symbol.json not found; run tools/deploy.py first")
        symbol, args, auxs = load_checkpoint(model_prefix, epoch, flag="--prefix/--epoch")
    else:
        _, args, auxs = load_checkpoint(prefix, epoch, flag="--prefix/--epoch")
        symbol = get_symbol(network, data_shape, num_classes=num_classes, nms_thresh=nms_thresh,
                            force_suppress=force_suppress, nms_topk=nms_topk,
                            **saved_graph_overrides(prefix, data_shape))
    source = f"{model_prefix if deploy else prefix}-{epoch:04d}.params"
    check_params_fit(symbol, args, auxs, {"data": (1, 3, data_shape, data_shape)}, source, num_classes,
                     require_all=True)
    return symbol, args, auxs


def evaluate_net(
    net: str, path_imgrec: str, num_classes: int, mean_pixels: Sequence[float], data_shape: int,
    model_prefix: str, epoch: int, ctx: Sequence[mx.Context] = (mx.cpu(),), batch_size: int = 32,
    path_imglist: str = "", nms_thresh: float = 0.45, force_nms: bool = False, ovp_thresh: float = 0.5,
    use_difficult: bool = False, class_names: list | None = None, voc07_metric: bool = False,
    *, num_batch: int | None = None, deploy_net: bool = False, std_pixels=None, nms_topk: int = 400,
    label_pad_width: int = 350, coco: bool = False,
) -> dict:
    """Evaluate ``model_prefix-epoch`` on ``path_imgrec``.

    Returns ``{'aps': {name: ap}, 'mAP', 'metric', 'seconds', 'images'}``, and
    with ``coco`` also ``'coco'``: the 12 COCO summary numbers by name
    (pycocotools; boxes are scaled to each packed image's own size, read from
    the .rec, so the small/medium/large split is in original-image pixels as
    in the COCO API).

    ``metric`` is the metric object itself (its per-class precision/recall
    curves feed ``--plot-pr``).
    """
    logger = logging.getLogger()
    if not os.path.isfile(path_imgrec):
        raise UserError(f"--rec-path {path_imgrec}: file not found")
    # the model first: a missing or mismatched checkpoint then fails before the
    # record iterator has written its log lines, so the user sees one line
    symbol, args, auxs = load_test_model(net, model_prefix, epoch, data_shape, num_classes, nms_thresh,
                                         force_nms, nms_topk, deploy_net)
    scan_labels(path_imgrec, path_imglist, num_classes)
    data_shape_3 = (3, data_shape, data_shape)
    eval_iter = DetRecordIter(path_imgrec, batch_size, data_shape_3, mean_pixels=mean_pixels,
                              std_pixels=std_pixels, label_pad_width=label_pad_width,
                              path_imglist=path_imglist, **VALIDATION)
    mod = mx.mod.Module(symbol, label_names=None, logger=logger, context=list(ctx))
    mod.bind(data_shapes=eval_iter.provide_data, for_training=False)
    mod.set_params(args, auxs, allow_missing=False, allow_extra=True)

    metric_cls = VOC07MApMetric if voc07_metric else MApMetric
    metric = metric_cls(ovp_thresh, use_difficult, class_names, pred_idx=0)
    metrics = [metric]
    if coco:
        from dataset.recordio import image_sizes
        from evaluate.coco_eval import COCOMApMetric

        # COCO splits small/medium/large by area in original-image pixels: one
        # (width, height) per record, in the record order the iterator yields
        # (a path_imglist only replaces labels); the loop below feeds the metric
        # real images only, so the sizes stay aligned even with pad or num_batch
        idx_path = os.path.splitext(path_imgrec)[0] + ".idx"
        sizes = image_sizes(path_imgrec, idx_path if os.path.isfile(idx_path) else None)
        metrics.append(COCOMApMetric(num_classes=num_classes, pred_idx=0, image_sizes=sizes))
    # each image once: Module.score would count the padded tail of the last batch twice
    tic = time.time()
    images = score_unpadded(mod, eval_iter, metrics, num_batch)
    elapsed = time.time() - tic
    names, values = metric.get()
    logger.info("Evaluated %d images in %.1f s (%.1f images/sec)", images, elapsed, images / max(elapsed, 1e-9))
    aps = {name: float(value) for name, value in zip(names, values) if name != "mAP"}
    result = {"aps": aps, "mAP": float(values[-1]), "metric": metric, "seconds": elapsed, "images": images}
    if coco:
        result["coco"] = dict(zip(*metrics[1].get()))
    return result
