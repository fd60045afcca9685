"""Assemble SSD training and test graphs from a base network and a layer configuration.

Layer and output names follow the original example/ssd, so checkpoints and metrics that
look them up by name keep working: ``cls_prob``, ``loc_loss``, ``cls_label``, ``det_out``
(training), ``detection`` (test), ``multibox_target``, ``multibox_{loc,cls}_pred``,
``multibox_anchors``.

In the training graph, difficult objects are dropped from ``label`` before ``MultiBoxTarget``
(:func:`drop_difficult_objects`), as the Faster R-CNN loader drops them from ``gt_boxes``.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

from collections.abc import Sequence

import mxnet as mx

from config.errors import UserError
from config.train_config import CLS_LOSSES, LOC_LOSS_METRIC_NAMES
from symbol.losses import giou_loss_output, softmax_cross_entropy_output, softmax_focal_output
from symbol.registry import get_base_network
from symbol.ssd_heads import multi_layer_feature, multibox_layer

VARIANCES = (0.1, 0.1, 0.2, 0.2)
LOC_LOSSES = tuple(LOC_LOSS_METRIC_NAMES)


def _heads(network: str, num_classes: int, from_layers: Sequence[str], num_filters: Sequence[int],
           strides: Sequence[int], pads: Sequence[int], sizes: Sequence, ratios: Sequence,
           normalizations: int | Sequence[int], steps: Sequence[float], min_filter: int,
           base_kwargs: dict, anchor_clip: bool = False) -> list[mx.sym.Symbol]:
    body = get_base_network(network)(num_classes, **base_kwargs)
    layers = multi_layer_feature(body, from_layers, num_filters, strides, pads, min_filter=min_filter)
    return multibox_layer(layers, num_classes, sizes=sizes, ratios=ratios, normalization=normalizations,
                          num_channels=num_filters, clip=False, interm_layer=0, steps=steps,
                          anchor_clip=anchor_clip)


def _detection(cls_prob: mx.sym.Symbol, loc_preds: mx.sym.Symbol, anchor_boxes: mx.sym.Symbol,
               nms_thresh: float, force_suppress: bool, nms_topk: int, clip_detections: bool = True
               ) -> mx.sym.Symbol:
    """``MultiBoxDetection`` named ``detection``: ``[B, N, 6]`` rows (cls, score, xmin, ymin, xmax, ymax).

    ``clip_detections`` (MultiBoxDetection's ``clip``) cuts decoded boxes at the image border before NMS.
    """
    return mx.sym.contrib.MultiBoxDetection(cls_prob, loc_preds, anchor_boxes, name="detection",
                                            nms_threshold=nms_thresh, force_suppress=force_suppress,
                                            variances=VARIANCES, nms_topk=nms_topk, clip=clip_detections)


def drop_difficult_objects(label: mx.sym.Symbol, prefix: str = "multibox_label") -> mx.sym.Symbol:
    """``label`` ``[B, M, W]`` (``W >= 5``) with difficult objects turned into padding: ``[B, M, W]``.

    A row is dropped when its column 5 (``difficult``: VOC difficult, COCO crowd) is non-zero,
    the rule of ``dataset/rcnn_loader.py`` (``objects[objects[:, 5] == 0]``); a label of width 5
    has no such column and keeps every object. Dropped rows and padding (``cls < 0``) become all
    ``-1`` and move behind the kept objects, which keep their order. ``MultiBoxTarget`` then sees
    exactly the label the kept objects alone would give:

    * its CPU kernel stops at the first row with ``cls == -1`` and checks that the row's
      coordinates are ``-1`` too, so a ``-1`` row in front of a kept object would hide that
      object (or fail the check) -- hence the reordering;
    * its GPU kernel skips ``cls == -1`` rows in the bipartite matching but still matches by
      overlap against every row -- hence the ``-1`` coordinates (a zero-area box overlaps nothing).

    Built from shape-agnostic ops (``M`` and ``W`` are unknown when the graph is built), without
    parameters, and behind ``BlockGrad``: nothing flows back into ``label``.
    """
    cls = mx.sym.slice_axis(label, axis=2, begin=0, end=1, name=f"{prefix}_cls")  # [B, M, 1]
    zeros = mx.sym.zeros_like(cls, name=f"{prefix}_zeros")  # [B, M, 1]
    # appending a zero column gives every label a column 5: the difficult flag, or 0 at width 5
    widened = mx.sym.concat(label, zeros, dim=2, name=f"{prefix}_widened")  # [B, M, W+1]
    difficult = mx.sym.slice_axis(widened, axis=2, begin=5, end=6, name=f"{prefix}_difficult")  # [B, M, 1]
    drop = mx.sym.broadcast_logical_or(
        mx.sym.broadcast_not_equal(difficult, zeros, name=f"{prefix}_is_difficult"),
        mx.sym.broadcast_lesser(cls, zeros, name=f"{prefix}_is_padding"),
        name=f"{prefix}_drop")  # [B, M, 1], 1 = drop
    minus_one = mx.sym.negative(mx.sym.ones_like(label, name=f"{prefix}_ones"), name=f"{prefix}_minus_one")
    masked = mx.sym.where(mx.sym.broadcast_like(drop, label, name=f"{prefix}_drop_wide"), minus_one, label,
                          name=f"{prefix}_masked")  # [B, M, W]
    # stable partition by sort key drop * M + row: kept rows first, each group in its original order
    rows = mx.sym.contrib.arange_like(label, axis=1, name=f"{prefix}_rows")  # [M]
    num_rows = mx.sym.sum(mx.sym.ones_like(rows, name=f"{prefix}_row_ones"), name=f"{prefix}_num_rows")  # [1]
    drop_rows = mx.sym.reshape(drop, shape=(0, -1), name=f"{prefix}_drop_flat")  # [B, M]
    key = mx.sym.broadcast_add(mx.sym.broadcast_mul(drop_rows, num_rows, name=f"{prefix}_drop_offset"), rows,
                               name=f"{prefix}_key")  # [B, M]
    order = mx.sym.argsort(key, axis=1, name=f"{prefix}_order")  # [B, M]
    images = mx.sym.reshape(mx.sym.contrib.arange_like(label, axis=0, name=f"{prefix}_images"), shape=(-1, 1),
                            name=f"{prefix}_images_column")  # [B, 1]
    images = mx.sym.broadcast_like(images, order, name=f"{prefix}_images_wide")  # [B, M]
    indices = mx.sym.stack(images, order, axis=0, name=f"{prefix}_indices")  # [2, B, M]
    kept_first = mx.sym.gather_nd(masked, indices, name=f"{prefix}_reordered")  # [B, M, W]
    return mx.sym.BlockGrad(kept_first, name=f"{prefix}_kept")


def get_symbol_train(network: str, num_classes: int, from_layers: Sequence[str], num_filters: Sequence[int],
                     strides: Sequence[int], pads: Sequence[int], sizes: Sequence, ratios: Sequence,
                     normalizations: int | Sequence[int] = -1, steps: Sequence[float] = (),
                     min_filter: int = 128, nms_thresh: float = 0.5, force_suppress: bool = False,
                     nms_topk: int = 400, cls_loss: str = "softmax", label_smoothing: float = 0.0,
                     loc_loss: str = "smooth_l1", anchor_clip: bool = False, clip_detections: bool = True,
                     **kwargs) -> mx.sym.Symbol:
    """SSD training graph, inputs ``data`` ``[B, 3, H, W]`` and ``label`` ``[B, M, >=5]``.

    ``label`` rows are ``(cls, xmin, ymin, xmax, ymax, ...)`` normalised to [0, 1], padded with
    ``cls = -1``.

    Difficult objects (column 5 non-zero: VOC difficult, COCO crowd) are ignored as matches, as
    the Faster R-CNN side does: :func:`drop_difficult_objects` removes them before
    ``MultiBoxTarget``, exactly as if they were not in the label: no anchor is matched to them,
    and anchors that cover them count as unmatched (hard negative mining may pick them as
    background). An image whose objects are all difficult trains like one without objects. A
    label of width 5 is used as it is.

    Parameters are those of the original ``symbol_builder.get_symbol_train``:
    ``network`` names the base network (a key of :data:`symbol.registry.BASE_NETWORKS`, whose
    ``get_symbol(num_classes, **kwargs)`` builds it);
    ``from_layers``/``num_filters``/``strides``/``pads`` go to :func:`multi_layer_feature`;
    ``sizes``/``ratios``/``normalizations``/``steps`` to :func:`multibox_layer`; remaining
    ``kwargs`` (e.g. ``num_layers``, ``image_shape``) to the base network.

    ``cls_loss`` selects the classifier loss: ``'softmax'`` (the original: cross-entropy on the
    positives and 3:1 hard-mined negatives) or ``'focal'`` (:func:`symbol.losses.softmax_focal_output`
    on every anchor, without negative mining). Both give the same ``cls_prob`` output.
    ``label_smoothing`` (softmax only) smooths the cross-entropy's targets
    (:func:`symbol.losses.softmax_cross_entropy_output`); 0, the default, is the original's loss.
    ``loc_loss`` selects the box loss: ``'smooth_l1'`` (the original: smooth L1 of the encoded
    offsets) or ``'giou'`` (:func:`symbol.losses.giou_loss_output`: ``1 - GIoU`` of the decoded boxes).

    ``anchor_clip`` clamps the anchors' centre form ``(cx, cy, w, h)`` to [0, 1], as ssd.pytorch's
    ``PriorBox(clip=True)`` does (:func:`symbol.ssd_heads.clamp_anchor_centre_form`); False (the default)
    keeps MultiBoxPrior's anchors as they are, the original's graph. ``clip_detections`` False keeps
    decoded boxes that cross the image border whole through NMS, as ssd.pytorch's ``Detect`` and
    GluonCV's SSD do; True (the default, the original's) cuts them at the border first.

    Returns ``Group([cls_prob, loc_loss, cls_label, det_out])``:
    ``cls_prob`` ``[B, C+1, N]`` class probabilities (the classification loss head),
    ``loc_loss`` ``[B, N*4]`` smooth-L1 terms, or ``[B, N]`` GIoU losses (the localisation loss head),
    ``cls_label`` ``[B, N]`` anchor targets (-1 ignored, no gradient),
    ``det_out`` ``[B, N, 6]`` decoded detections (no gradient), where ``nms_thresh``,
    ``force_suppress`` and ``nms_topk`` reach ``MultiBoxDetection``.
    """
    if cls_loss not in CLS_LOSSES:
        raise UserError(f"--cls-loss: unknown loss {cls_loss!r}; choose one of {', '.join(CLS_LOSSES)}")
    if loc_loss not in LOC_LOSSES:
        raise UserError(f"--loc-loss: unknown loss {loc_loss!r}; choose one of {', '.join(LOC_LOSSES)}")
    if not 0 <= label_smoothing < 1:
        raise UserError(f"--label-smoothing: {label_smoothing} is outside [0, 1)")
    if label_smoothing and cls_loss != "softmax":
        raise UserError(f"--label-smoothing: smooths the softmax cross-entropy; --cls-loss {cls_loss} has none")
    label = mx.sym.Variable("label")
    loc_preds, cls_preds, anchor_boxes = _heads(network, num_classes, from_layers, num_filters, strides, pads,
                                                sizes, ratios, normalizations, steps, min_filter, kwargs,
                                                anchor_clip)
    # focal loss replaces hard negative mining: every unmatched anchor is a background target
    negative_mining_ratio = 3 if cls_loss == "softmax" else -1
    loc_target, loc_target_mask, cls_target = mx.sym.contrib.MultiBoxTarget(
        anchor_boxes, drop_difficult_objects(label), cls_preds, overlap_threshold=.5, ignore_label=-1,
        negative_mining_ratio=negative_mining_ratio, minimum_negative_samples=0,
        negative_mining_thresh=.5, variances=VARIANCES, name="multibox_target")
    if cls_loss == "softmax":
        cls_prob = softmax_cross_entropy_output(cls_preds, cls_target, label_smoothing, name="cls_prob")
    else:
        cls_prob = softmax_focal_output(cls_preds, cls_target, num_classes, name="cls_prob")
    if loc_loss == "smooth_l1":
        loc_terms = mx.sym.smooth_l1(data=loc_target_mask * (loc_preds - loc_target), scalar=1.0, name="loc_loss_")
        loc_head = mx.sym.MakeLoss(loc_terms, grad_scale=1., normalization="valid", name="loc_loss")
    else:
        loc_head = giou_loss_output(loc_preds, loc_target, loc_target_mask, anchor_boxes, VARIANCES, name="loc_loss")
    # monitoring outputs, no gradient
    cls_label = mx.sym.MakeLoss(data=cls_target, grad_scale=0, name="cls_label")
    det = _detection(cls_prob, loc_preds, anchor_boxes, nms_thresh, force_suppress, nms_topk, clip_detections)
    det = mx.sym.MakeLoss(data=det, grad_scale=0, name="det_out")
    return mx.sym.Group([cls_prob, loc_head, cls_label, det])


def get_symbol(network: str, num_classes: int, from_layers: Sequence[str], num_filters: Sequence[int],
               sizes: Sequence, ratios: Sequence, strides: Sequence[int], pads: Sequence[int],
               normalizations: int | Sequence[int] = -1, steps: Sequence[float] = (), min_filter: int = 128,
               nms_thresh: float = 0.5, force_suppress: bool = False, nms_topk: int = 400,
               anchor_clip: bool = False, clip_detections: bool = True, **kwargs) -> mx.sym.Symbol:
    """SSD test graph: ``data`` ``[B, 3, H, W]`` to ``detection`` ``[B, N, 6]``.

    Rows are ``(cls, score, xmin, ymin, xmax, ymax)``, coordinates normalised to [0, 1];
    ``cls = -1`` marks rows removed by the score threshold or NMS. Parameters as
    :func:`get_symbol_train` (without ``label`` and losses); the class scores ``[B, C+1, N]`` go
    through ``softmax(axis=1)`` named ``cls_prob``, the op of the original (the same values as the
    deprecated ``SoftmaxActivation(mode='channel')``). ``cls_loss``, ``label_smoothing`` and ``loc_loss``
    keywords (accepted so that one config serves both graphs) have no effect here.
    """
    for training_only in ("cls_loss", "label_smoothing", "loc_loss"):
        kwargs.pop(training_only, None)
    loc_preds, cls_preds, anchor_boxes = _heads(network, num_classes, from_layers, num_filters, strides, pads,
                                                sizes, ratios, normalizations, steps, min_filter, kwargs,
                                                anchor_clip)
    cls_prob = mx.sym.softmax(data=cls_preds, axis=1, name="cls_prob")
    return _detection(cls_prob, loc_preds, anchor_boxes, nms_thresh, force_suppress, nms_topk, clip_detections)
