"""Faster R-CNN networks by name and their defaults (the run configuration is :class:`config.train_config.RCNNConfig`).

``NETWORKS`` maps a ``--network`` name to its graph builders and the per-network
defaults of the original ``train.py`` (pretrained file, pixel means/stds,
fixed parameters, ROI pool size, image sides). Typical use::

    cfg = make_config("faster_rcnn_vgg16", lr=0.01)      # network defaults, then overrides
    train_sym = get_rcnn_train(cfg.network, num_classes=20, cfg=cfg)
    test_sym = get_rcnn_test(cfg.network, num_classes=20, cfg=cfg)

``num_classes`` always counts the object classes (SSD's ``--num-class``
convention, 20 for VOC); the graphs add the background class, so the
original ``--rcnn-num-classes 21`` is ``num_classes + 1`` here.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import mxnet as mx

from config.errors import UserError
from config.train_config import RCNNConfig
from symbol.rcnn_resnet import get_resnet50_test, get_resnet50_train, get_resnet101_test, get_resnet101_train
from symbol.rcnn_small import get_small_test, get_small_train
from symbol.rcnn_vgg import get_vgg_test, get_vgg_train


@dataclass(frozen=True)
class RCNNNetwork:
    """Graph builders of one network and the config values it overrides."""

    get_train: Callable[..., mx.sym.Symbol]
    get_test: Callable[..., mx.sym.Symbol]
    defaults: dict = field(default_factory=dict)


_IMAGENET_MEANS = (123.68, 116.779, 103.939)
# The ResNet models normalise their input with the ``bn_data`` layer: means 0, stds 1.
_RESNET_DEFAULTS = dict(
    img_pixel_means=(0.0, 0.0, 0.0), img_pixel_stds=(1.0, 1.0, 1.0),
    net_fixed_params=("conv0", "stage1", "gamma", "beta"), rcnn_pooled_size=(14, 14),
)

NETWORKS: dict[str, RCNNNetwork] = {
    "faster_rcnn_vgg16": RCNNNetwork(get_vgg_train, get_vgg_test, dict(
        pretrained="model/vgg16-0000.params", img_pixel_means=_IMAGENET_MEANS,
        img_pixel_stds=(1.0, 1.0, 1.0), net_fixed_params=("conv1", "conv2"), rcnn_pooled_size=(7, 7),
    )),
    "faster_rcnn_resnet50": RCNNNetwork(get_resnet50_train, get_resnet50_test, dict(
        pretrained="model/resnet-50-0000.params", **_RESNET_DEFAULTS,
    )),
    "faster_rcnn_resnet101": RCNNNetwork(get_resnet101_train, get_resnet101_test, dict(
        pretrained="model/resnet-101-0000.params", **_RESNET_DEFAULTS,
    )),
    # trained from scratch on small images: unit-variance input, smaller anchors (32..256 px)
    "faster_rcnn_small": RCNNNetwork(get_small_train, get_small_test, dict(
        pretrained="", img_pixel_means=_IMAGENET_MEANS, img_pixel_stds=(58.395, 57.12, 57.375),
        net_fixed_params=(), rcnn_pooled_size=(7, 7), img_short_side=300, img_long_side=500,
        rpn_anchor_scales=(2, 4, 8, 16),
    )),
}


def get_network(network: str) -> RCNNNetwork:
    """The registry entry of ``network``; unknown names raise :class:`UserError` naming ``--network``."""
    try:
        return NETWORKS[network]
    except KeyError:
        raise UserError(
            f"--network: unknown Faster R-CNN network {network!r}; choose from {', '.join(NETWORKS)}"
        ) from None


def make_config(network: str, **overrides) -> RCNNConfig:
    """Defaults, then ``network``'s overrides, then ``overrides`` (``None`` values are skipped)."""
    cfg = RCNNConfig(network=network, **get_network(network).defaults)
    return dataclasses.replace(cfg, **{key: value for key, value in overrides.items() if value is not None})


def get_rcnn_train(network: str, num_classes: int, cfg: RCNNConfig) -> mx.sym.Symbol:
    """Training graph of ``network`` for ``num_classes`` object classes.

    Inputs ``data, im_info, gt_boxes``; labels ``label, bbox_target, bbox_weight``;
    outputs ``[rpn_cls_prob, rpn_bbox_loss, cls_prob, bbox_loss, rcnn_label]``.
    """
    return get_network(network).get_train(
        anchor_scales=cfg.rpn_anchor_scales, anchor_ratios=cfg.rpn_anchor_ratios,
        rpn_feature_stride=cfg.rpn_feat_stride, rpn_pre_topk=cfg.rpn_pre_nms_topk,
        rpn_post_topk=cfg.rpn_post_nms_topk, rpn_nms_thresh=cfg.rpn_nms_thresh,
        rpn_min_size=cfg.rpn_min_size, rpn_batch_rois=cfg.rpn_batch_rois, num_classes=num_classes + 1,
        rcnn_feature_stride=cfg.rcnn_feat_stride, rcnn_pooled_size=cfg.rcnn_pooled_size,
        rcnn_batch_size=cfg.rcnn_batch_size, rcnn_batch_rois=cfg.rcnn_batch_rois,
        rcnn_fg_fraction=cfg.rcnn_fg_fraction, rcnn_fg_overlap=cfg.rcnn_fg_overlap,
        rcnn_bbox_stds=cfg.rcnn_bbox_stds,
    )


def get_rcnn_test(network: str, num_classes: int, cfg: RCNNConfig) -> mx.sym.Symbol:
    """Test graph of ``network`` (test-time RPN top-k); inputs ``data, im_info``;
    outputs ``[rois, cls_prob, bbox_pred]`` with ``num_classes + 1`` classes."""
    return get_network(network).get_test(
        anchor_scales=cfg.rpn_anchor_scales, anchor_ratios=cfg.rpn_anchor_ratios,
        rpn_feature_stride=cfg.rpn_feat_stride, rpn_pre_topk=cfg.test_rpn_pre_nms_topk,
        rpn_post_topk=cfg.test_rpn_post_nms_topk, rpn_nms_thresh=cfg.rpn_nms_thresh,
        rpn_min_size=cfg.rpn_min_size, num_classes=num_classes + 1,
        rcnn_feature_stride=cfg.rcnn_feat_stride, rcnn_pooled_size=cfg.rcnn_pooled_size,
        rcnn_batch_size=cfg.rcnn_batch_size,
    )


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

