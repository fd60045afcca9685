"""The parts of the Faster R-CNN graph every backbone shares: RPN, proposals, ROI head.

A backbone (:class:`RCNNBackbone`) supplies ``conv_feature(data) -> conv_feat``
(the shared feature map, stride ``rpn_feature_stride``), ``top_feature(roi_pool)
-> [num_rois, D]`` and the RPN conv width; :func:`build_rcnn_train` and
:func:`build_rcnn_test` build the rest with the original example/rcnn's layer
names from :class:`RCNNTrainSettings` / :class:`RCNNTestSettings`, whose fields
are the original ``get_vgg_train`` / ``get_vgg_test`` arguments.
:func:`original_builders` gives each backbone module its ``get_<net>_train`` /
``get_<net>_test`` with those original signatures.

Here ``num_classes`` counts the background class (21 for VOC), as in the
original; ``symbol/rcnn_factory.py`` takes object classes and adds one.

Inputs of the training graph: ``data`` [B, 3, H, W], ``im_info`` [B, 3] rows
``(height, width, scale)``, ``gt_boxes`` [B, M, 5] rows ``[x1, y1, x2, y2, cls]``
(pixels, classes 1-based, padding rows -1); labels ``label``
[B, A*fh*fw], ``bbox_target`` and ``bbox_weight`` [B, 4A, fh, fw] (A anchors
per cell, feature map fh x fw). The test graph takes ``data`` and ``im_info``.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import mxnet as mx

import symbol.proposal_target  # noqa: F401  (registers the 'proposal_target' CustomOp)

SymbolFn = Callable[[mx.sym.Symbol], mx.sym.Symbol]


@dataclass(frozen=True)
class RCNNBackbone:
    """What a backbone adds to the shared graph.

    ``conv_feature``: ``data`` [B, 3, H, W] -> shared feature map [B, C, H/16, W/16];
    ``top_feature``: ROI pool [N, C, ph, pw] -> per-ROI feature [N, D];
    ``rpn_num_filter``: filters of the 3x3 RPN conv.
    """

    conv_feature: SymbolFn
    top_feature: SymbolFn
    rpn_num_filter: int


@dataclass(frozen=True)
class RCNNTestSettings:
    """Settings of the test graph, in the order and with the names of the original ``get_vgg_test``.

    ``num_classes`` counts the background class; ``rpn_pre_topk`` / ``rpn_post_topk`` are the
    proposals kept before / after NMS per image.
    """

    anchor_scales: Sequence[float]
    anchor_ratios: Sequence[float]
    rpn_feature_stride: int
    rpn_pre_topk: int
    rpn_post_topk: int
    rpn_nms_thresh: float
    rpn_min_size: int
    num_classes: int
    rcnn_feature_stride: int
    rcnn_pooled_size: Sequence[int]
    rcnn_batch_size: int

    @property
    def num_anchors(self) -> int:
        """Anchors per feature-map cell: scales x ratios."""
        return len(self.anchor_scales) * len(self.anchor_ratios)


@dataclass(frozen=True)
class RCNNTrainSettings(RCNNTestSettings):
    """Settings of the training graph: the test ones plus the RPN and ROI sampling (original names)."""

    rpn_batch_rois: int
    rcnn_batch_rois: int
    rcnn_fg_fraction: float
    rcnn_fg_overlap: float
    rcnn_bbox_stds: Sequence[float]


# the original get_vgg_train's argument order (RCNNTrainSettings lists the test fields first)
ORIGINAL_TRAIN_ARGUMENTS = (
    "anchor_scales", "anchor_ratios", "rpn_feature_stride", "rpn_pre_topk", "rpn_post_topk", "rpn_nms_thresh",
    "rpn_min_size", "rpn_batch_rois", "num_classes", "rcnn_feature_stride", "rcnn_pooled_size",
    "rcnn_batch_size", "rcnn_batch_rois", "rcnn_fg_fraction", "rcnn_fg_overlap", "rcnn_bbox_stds",
)
_TRAIN_SIGNATURE = inspect.Signature(
    [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in ORIGINAL_TRAIN_ARGUMENTS]
)


def rpn_head(conv_feat: mx.sym.Symbol, num_anchors: int, rpn_num_filter: int) -> tuple:
    """3x3 RPN conv then the 1x1 scores and deltas.

    Returns ``rpn_cls_score_reshape`` [B, 2, A*fh, fw] and ``rpn_bbox_pred`` [B, 4A, fh, fw].
    """
    rpn_conv = mx.sym.Convolution(
        data=conv_feat, kernel=(3, 3), pad=(1, 1), num_filter=rpn_num_filter, name="rpn_conv_3x3"
    )
    rpn_relu = mx.sym.Activation(data=rpn_conv, act_type="relu", name="rpn_relu")
    rpn_cls_score = mx.sym.Convolution(
        data=rpn_relu, kernel=(1, 1), pad=(0, 0), num_filter=2 * num_anchors, name="rpn_cls_score"
    )
    # [B, 2A, fh, fw] -> [B, 2, A*fh, fw]: channel 0 = background, 1 = object
    rpn_cls_score_reshape = mx.sym.Reshape(data=rpn_cls_score, shape=(0, 2, -1, 0), name="rpn_cls_score_reshape")
    rpn_bbox_pred = mx.sym.Convolution(
        data=rpn_relu, kernel=(1, 1), pad=(0, 0), num_filter=4 * num_anchors, name="rpn_bbox_pred"
    )
    return rpn_cls_score_reshape, rpn_bbox_pred


def proposals(
    rpn_cls_score_reshape: mx.sym.Symbol, rpn_bbox_pred: mx.sym.Symbol, im_info: mx.sym.Symbol,
    settings: RCNNTestSettings,
) -> mx.sym.Symbol:
    """Softmax over (background, object), then ``MultiProposal``: ``rois`` [B*rpn_post_topk, 5].

    ``rpn_cls_score_reshape`` [B, 2, A*fh, fw], ``rpn_bbox_pred`` [B, 4A, fh, fw], ``im_info`` [B, 3].
    """
    rpn_cls_act = mx.sym.softmax(data=rpn_cls_score_reshape, axis=1, name="rpn_cls_act")
    rpn_cls_act_reshape = mx.sym.Reshape(
        data=rpn_cls_act, shape=(0, 2 * settings.num_anchors, -1, 0), name="rpn_cls_act_reshape"
    )
    return mx.sym.contrib.MultiProposal(
        cls_prob=rpn_cls_act_reshape,
        bbox_pred=rpn_bbox_pred,
        im_info=im_info,
        feature_stride=settings.rpn_feature_stride,
        scales=tuple(settings.anchor_scales),
        ratios=tuple(settings.anchor_ratios),
        rpn_pre_nms_top_n=settings.rpn_pre_topk,
        rpn_post_nms_top_n=settings.rpn_post_topk,
        threshold=settings.rpn_nms_thresh,
        rpn_min_size=settings.rpn_min_size,
        name="rois",
    )


def roi_head(
    conv_feat: mx.sym.Symbol,
    rois: mx.sym.Symbol,
    top_feature: SymbolFn,
    num_classes: int,
    rcnn_feature_stride: int,
    rcnn_pooled_size: Sequence[int],
) -> tuple:
    """ROIPooling + the backbone's top feature: ``cls_score`` [N, C] and ``bbox_pred`` [N, 4C]."""
    roi_pool = mx.sym.ROIPooling(
        data=conv_feat,
        rois=rois,
        pooled_size=tuple(rcnn_pooled_size),
        spatial_scale=1.0 / rcnn_feature_stride,
        name="roi_pool",
    )
    top_feat = top_feature(roi_pool)
    cls_score = mx.sym.FullyConnected(data=top_feat, num_hidden=num_classes, name="cls_score")
    bbox_pred = mx.sym.FullyConnected(data=top_feat, num_hidden=num_classes * 4, name="bbox_pred")
    return cls_score, bbox_pred


def build_rcnn_train(backbone: RCNNBackbone, settings: RCNNTrainSettings) -> mx.sym.Symbol:
    """The end-to-end training graph.

    Outputs: ``rpn_cls_prob`` [B, 2, A*fh, fw], ``rpn_bbox_loss`` [B, 4A, fh, fw],
    ``cls_prob`` [B, R, C], ``bbox_loss`` [B, R, 4C] and the sampled ROI
    ``label`` [B, R] (BlockGrad), with ``R = rcnn_batch_rois`` and ``B = rcnn_batch_size``.
    """
    num_classes, batch_size, batch_rois = settings.num_classes, settings.rcnn_batch_size, settings.rcnn_batch_rois
    conv_feat = backbone.conv_feature(mx.sym.Variable(name="data"))
    im_info = mx.sym.Variable(name="im_info")
    gt_boxes = mx.sym.Variable(name="gt_boxes")
    rpn_label = mx.sym.Variable(name="label")
    rpn_bbox_target = mx.sym.Variable(name="bbox_target")
    rpn_bbox_weight = mx.sym.Variable(name="bbox_weight")

    rpn_cls_score_reshape, rpn_bbox_pred = rpn_head(conv_feat, settings.num_anchors, backbone.rpn_num_filter)
    rpn_cls_prob = mx.sym.SoftmaxOutput(
        data=rpn_cls_score_reshape, label=rpn_label, multi_output=True, normalization="valid",
        use_ignore=True, ignore_label=-1, name="rpn_cls_prob",
    )
    rpn_bbox_loss_ = rpn_bbox_weight * mx.sym.smooth_l1(
        data=(rpn_bbox_pred - rpn_bbox_target), scalar=3.0, name="rpn_bbox_loss_"
    )
    rpn_bbox_loss = mx.sym.MakeLoss(data=rpn_bbox_loss_, grad_scale=1.0 / settings.rpn_batch_rois,
                                    name="rpn_bbox_loss")

    rois = proposals(rpn_cls_score_reshape, rpn_bbox_pred, im_info, settings)
    group = mx.sym.Custom(
        rois=rois, gt_boxes=gt_boxes, op_type="proposal_target", num_classes=num_classes,
        batch_images=batch_size, batch_rois=batch_rois, fg_fraction=settings.rcnn_fg_fraction,
        fg_overlap=settings.rcnn_fg_overlap, box_stds=tuple(settings.rcnn_bbox_stds), name="proposal_target",
    )
    rois, label, bbox_target, bbox_weight = group[0], group[1], group[2], group[3]

    cls_score, bbox_pred = roi_head(
        conv_feat, rois, backbone.top_feature, num_classes, settings.rcnn_feature_stride, settings.rcnn_pooled_size
    )
    cls_prob = mx.sym.SoftmaxOutput(data=cls_score, label=label, normalization="batch", name="cls_prob")
    bbox_loss_ = bbox_weight * mx.sym.smooth_l1(data=(bbox_pred - bbox_target), scalar=1.0, name="bbox_loss_")
    bbox_loss = mx.sym.MakeLoss(data=bbox_loss_, grad_scale=1.0 / batch_rois, name="bbox_loss")

    label = mx.sym.Reshape(data=label, shape=(batch_size, -1), name="label_reshape")
    cls_prob = mx.sym.Reshape(data=cls_prob, shape=(batch_size, -1, num_classes), name="cls_prob_reshape")
    bbox_loss = mx.sym.Reshape(data=bbox_loss, shape=(batch_size, -1, 4 * num_classes), name="bbox_loss_reshape")
    label = mx.sym.BlockGrad(label, name="rcnn_label")
    return mx.sym.Group([rpn_cls_prob, rpn_bbox_loss, cls_prob, bbox_loss, label])


def build_rcnn_test(backbone: RCNNBackbone, settings: RCNNTestSettings) -> mx.sym.Symbol:
    """The test graph: ``rois`` [B*rpn_post_topk, 5] (resized-image pixels),
    ``cls_prob`` [B, rpn_post_topk, C] and ``bbox_pred`` [B, rpn_post_topk, 4C]."""
    num_classes, batch_size = settings.num_classes, settings.rcnn_batch_size
    conv_feat = backbone.conv_feature(mx.sym.Variable(name="data"))
    im_info = mx.sym.Variable(name="im_info")
    rpn_cls_score_reshape, rpn_bbox_pred = rpn_head(conv_feat, settings.num_anchors, backbone.rpn_num_filter)
    rois = proposals(rpn_cls_score_reshape, rpn_bbox_pred, im_info, settings)
    cls_score, bbox_pred = roi_head(
        conv_feat, rois, backbone.top_feature, num_classes, settings.rcnn_feature_stride, settings.rcnn_pooled_size
    )
    cls_prob = mx.sym.softmax(data=cls_score, name="cls_prob")
    cls_prob = mx.sym.Reshape(data=cls_prob, shape=(batch_size, -1, num_classes), name="cls_prob_reshape")
    bbox_pred = mx.sym.Reshape(data=bbox_pred, shape=(batch_size, -1, 4 * num_classes), name="bbox_pred_reshape")
    return mx.sym.Group([rois, cls_prob, bbox_pred])


def original_builders(backbone: RCNNBackbone) -> tuple[Callable[..., mx.sym.Symbol], Callable[..., mx.sym.Symbol]]:
    """``(get_train, get_test)`` of ``backbone`` with the original example/rcnn signatures.

    ``get_train(anchor_scales, anchor_ratios, rpn_feature_stride, rpn_pre_topk, rpn_post_topk,
    rpn_nms_thresh, rpn_min_size, rpn_batch_rois, num_classes, rcnn_feature_stride,
    rcnn_pooled_size, rcnn_batch_size, rcnn_batch_rois, rcnn_fg_fraction, rcnn_fg_overlap,
    rcnn_bbox_stds)`` and ``get_test`` with the fields of :class:`RCNNTestSettings`, by position
    or by name, as ``symnet/symbol_vgg.py``'s ``get_vgg_train`` / ``get_vgg_test``.
    """
    def get_train(*args, **kwargs) -> mx.sym.Symbol:
        arguments = _TRAIN_SIGNATURE.bind(*args, **kwargs).arguments
        return build_rcnn_train(backbone, RCNNTrainSettings(**arguments))

    def get_test(*args, **kwargs) -> mx.sym.Symbol:
        return build_rcnn_test(backbone, RCNNTestSettings(*args, **kwargs))

    get_train.__signature__ = _TRAIN_SIGNATURE  # what inspect.signature and help() show
    get_test.__signature__ = inspect.signature(RCNNTestSettings)
    return get_train, get_test
