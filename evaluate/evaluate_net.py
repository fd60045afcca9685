"""Score a trained SSD on a .rec file with the VOC metric: example/ssd's ``evaluate_net``, kept with its
signature over :func:`evaluate.evaluation.evaluate_model`.

The whole record is scored unless ``num_batch`` caps it; ``nms_thresh`` and
``force_nms`` reach the graph's ``MultiBoxDetection``.

The SSD model helpers that lived here are in :mod:`evaluate.ssd_model`; the
names stay importable from this module.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

from collections.abc import Sequence

import mxnet as mx

from evaluate.evaluation import EvalSettings, evaluate_model
from evaluate.run_settings import InferenceSettings
from evaluate.scoring import MetricOptions
from evaluate.ssd_model import (  # noqa: F401  (the names callers import from here)
    GRAPH_OVERRIDE_KEYS,
    deploy_prefix,
    load_test_model,
    saved_graph_overrides,
)


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
    curves feed ``--plot-pr``). The same as :func:`evaluate.evaluation.evaluate_model`
    with these settings.
    """
    model = InferenceSettings(
        prefix=model_prefix, network=net, num_classes=num_classes, class_names=class_names, data_shape=data_shape,
        mean_pixels=mean_pixels, std_pixels=std_pixels, nms_thresh=nms_thresh, nms_topk=nms_topk,
        force_suppress=force_nms, label_width=label_pad_width)
    options = MetricOptions(voc07=voc07_metric, ovp_thresh=ovp_thresh, use_difficult=use_difficult, coco=coco)
    return evaluate_model(EvalSettings(model, path_imgrec, epoch, list(ctx), batch_size, path_imglist, num_batch,
                                       deploy_net, options))
