"""Faster R-CNN graphs and run configurations by ``--network`` name (the run configuration is
:class:`config.train_config.RCNNConfig`).

The names, their backbones and the per-network defaults of the original ``train.py``
(pretrained file, pixel means/stds, fixed parameters, ROI pool size, image sides) are the
Faster R-CNN entries of :mod:`symbol.registry`; ``NETWORKS`` is a read-only view of them.
Typical use::

    cfg = make_config("faster_rcnn_vgg16", lr=0.01)      # network defaults, then overrides
    train_sym = get_rcnn_train(cfg.network, num_classes=20, cfg=cfg)
    test_sym = get_rcnn_test(cfg.network, num_classes=20, cfg=cfg)

``num_classes`` always counts the object classes (SSD's ``--num-class``
convention, 20 for VOC); the graphs add the background class, so the
original ``--rcnn-num-classes 21`` is ``num_classes + 1`` here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import mxnet as mx

from config.train_config import RCNNConfig
from symbol import registry
from symbol.rcnn_head import RCNNTestSettings, RCNNTrainSettings, build_rcnn_test, build_rcnn_train
from symbol.registry import RCNNNetwork

NETWORKS: Mapping[str, RCNNNetwork] = MappingProxyType(
    {name: registry.NETWORKS[name] for name in registry.network_names(registry.RCNN)}
)


def get_network(network: str) -> RCNNNetwork:
    """The registry entry of ``network``; unknown names raise :class:`UserError` naming ``--network``."""
    return registry.get_network(network, registry.RCNN)


def make_config(network: str, **overrides) -> RCNNConfig:
    """Defaults, then ``network``'s overrides, then ``overrides`` (``None`` values are skipped)."""
    cfg = RCNNConfig(network=network, **get_network(network).defaults)
    return dataclasses.replace(cfg, **{key: value for key, value in overrides.items() if value is not None})


def inference_settings(cfg: RCNNConfig, num_classes: int) -> RCNNTestSettings:
    """The test graph's settings: ``cfg``'s test-time RPN top-k, ``num_classes + 1`` classes."""
    return RCNNTestSettings(
        anchor_scales=cfg.rpn_anchor_scales, anchor_ratios=cfg.rpn_anchor_ratios,
        rpn_feature_stride=cfg.rpn_feat_stride, rpn_pre_topk=cfg.test_rpn_pre_nms_topk,
        rpn_post_topk=cfg.test_rpn_post_nms_topk, rpn_nms_thresh=cfg.rpn_nms_thresh,
        rpn_min_size=cfg.rpn_min_size, num_classes=num_classes + 1,
        rcnn_feature_stride=cfg.rcnn_feat_stride, rcnn_pooled_size=cfg.rcnn_pooled_size,
        rcnn_batch_size=cfg.rcnn_batch_size,
    )


def train_settings(cfg: RCNNConfig, num_classes: int) -> RCNNTrainSettings:
    """The training graph's settings: ``cfg``'s training RPN top-k and sampling, ``num_classes + 1`` classes."""
    shared = dataclasses.asdict(inference_settings(cfg, num_classes))
    shared.update(rpn_pre_topk=cfg.rpn_pre_nms_topk, rpn_post_topk=cfg.rpn_post_nms_topk)
    return RCNNTrainSettings(
        **shared, rpn_batch_rois=cfg.rpn_batch_rois, rcnn_batch_rois=cfg.rcnn_batch_rois,
        rcnn_fg_fraction=cfg.rcnn_fg_fraction, rcnn_fg_overlap=cfg.rcnn_fg_overlap, rcnn_bbox_stds=cfg.rcnn_bbox_stds,
    )


def get_rcnn_train(network: str, num_classes: int, cfg: RCNNConfig) -> mx.sym.Symbol:
    """Training graph of ``network`` for ``num_classes`` object classes.

    Inputs ``data, im_info, gt_boxes``; labels ``label, bbox_target, bbox_weight``;
    outputs ``[rpn_cls_prob, rpn_bbox_loss, cls_prob, bbox_loss, rcnn_label]``.
    """
    return build_rcnn_train(get_network(network).backbone, train_settings(cfg, num_classes))


def get_rcnn_test(network: str, num_classes: int, cfg: RCNNConfig) -> mx.sym.Symbol:
    """Test graph of ``network`` (test-time RPN top-k); inputs ``data, im_info``;
    outputs ``[rois, cls_prob, bbox_pred]`` with ``num_classes + 1`` classes."""
    return build_rcnn_test(get_network(network).backbone, inference_settings(cfg, num_classes))


def fixed_param_names(symbol: mx.sym.Symbol, patterns: Sequence[str]) -> list[str]:
    """Arguments of ``symbol`` whose name contains any of ``patterns`` (the original's substring rule)."""
    return [name for name in symbol.list_arguments() if any(pattern in name for pattern in patterns)]


_NEW_LAYER_WEIGHTS = r"(rpn_conv_3x3|rpn_cls_score|rpn_bbox_pred|cls_score)_weight$"


def rcnn_initializer() -> mx.init.Initializer:
    """The original's init for new layers, Xavier for everything else.

    RPN layers and ``cls_score`` weights ~ N(0, 0.01), ``bbox_pred`` ~ N(0, 0.001),
    biases 0. Backbone layers that no pretrained file provides (e.g. the small
    network, trained from scratch) get MSRA-style Xavier; BN gamma/beta and
    moving statistics get Xavier's defaults (1, 0, 0, 1).
    """
    return mx.init.Mixed(
        [r"bbox_pred_weight$", _NEW_LAYER_WEIGHTS, ".*"],
        [mx.init.Normal(0.001), mx.init.Normal(0.01),
         mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2)],
    )

