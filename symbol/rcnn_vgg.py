"""Faster R-CNN with a VGG-16 backbone (the original example/rcnn ``symnet/symbol_vgg.py``).

Layer names match the original (``conv1_1`` .. ``relu5_3``, ``fc6``, ``fc7``), so
ImageNet VGG-16 weights (``model/vgg16-0000.params``) load by name. The RPN,
proposal sampling and ROI head are shared with the other backbones
(``symbol/rcnn_head.py``); :data:`VGG16` is the backbone, and ``get_vgg_train`` /
``get_vgg_test`` keep the original signatures::

    get_vgg_train(anchor_scales, anchor_ratios, rpn_feature_stride, rpn_pre_topk, rpn_post_topk,
                  rpn_nms_thresh, rpn_min_size, rpn_batch_rois, num_classes, rcnn_feature_stride,
                  rcnn_pooled_size, rcnn_batch_size, rcnn_batch_rois, rcnn_fg_fraction,
                  rcnn_fg_overlap, rcnn_bbox_stds)
    get_vgg_test(anchor_scales, anchor_ratios, rpn_feature_stride, rpn_pre_topk, rpn_post_topk,
                 rpn_nms_thresh, rpn_min_size, num_classes, rcnn_feature_stride,
                 rcnn_pooled_size, rcnn_batch_size)
"""
from __future__ import annotations

from collections.abc import Sequence

import mxnet as mx

from symbol.rcnn_head import RCNNBackbone, original_builders

# (number of 3x3 convs, filters) per group; a 2x2 max pool follows each group but the last
VGG16_GROUPS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


def vgg_conv_feature(data: mx.sym.Symbol, groups: Sequence[tuple[int, int]]) -> mx.sym.Symbol:
    """VGG-style stack ``conv{g}_{i}`` / ``relu{g}_{i}``, ``pool{g}`` after every group but the last.

    With five groups the output has stride 16: [B, groups[-1][1], H/16, W/16].
    """
    body = data
    for group, (num_convs, num_filter) in enumerate(groups, start=1):
        for index in range(1, num_convs + 1):
            body = mx.sym.Convolution(
                data=body, kernel=(3, 3), pad=(1, 1), num_filter=num_filter, workspace=2048,
                name=f"conv{group}_{index}",
            )
            body = mx.sym.Activation(data=body, act_type="relu", name=f"relu{group}_{index}")
        if group < len(groups):
            body = mx.sym.Pooling(data=body, pool_type="max", kernel=(2, 2), stride=(2, 2), name=f"pool{group}")
    return body


def fc_top_feature(roi_pool: mx.sym.Symbol, num_hidden: int, dropout: float) -> mx.sym.Symbol:
    """``flatten`` -> ``fc6`` -> ``relu6`` (-> ``drop6``) -> ``fc7`` -> ``relu7`` (-> ``drop7``): [N, num_hidden]."""
    body = mx.sym.Flatten(data=roi_pool, name="flatten")
    for layer in (6, 7):
        body = mx.sym.FullyConnected(data=body, num_hidden=num_hidden, name=f"fc{layer}")
        body = mx.sym.Activation(data=body, act_type="relu", name=f"relu{layer}")
        if dropout > 0:
            body = mx.sym.Dropout(data=body, p=dropout, name=f"drop{layer}")
    return body


def get_vgg_feature(data: mx.sym.Symbol) -> mx.sym.Symbol:
    """VGG-16 ``conv1_1`` .. ``relu5_3``: [B, 512, H/16, W/16]."""
    return vgg_conv_feature(data, VGG16_GROUPS)


def get_vgg_top_feature(roi_pool: mx.sym.Symbol) -> mx.sym.Symbol:
    """``fc6`` / ``fc7`` with 4096 units and dropout 0.5 on [N, 512, 7, 7] ROIs: [N, 4096]."""
    return fc_top_feature(roi_pool, num_hidden=4096, dropout=0.5)


VGG16 = RCNNBackbone(get_vgg_feature, get_vgg_top_feature, rpn_num_filter=512)
get_vgg_train, get_vgg_test = original_builders(VGG16)
