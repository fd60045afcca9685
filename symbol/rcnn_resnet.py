"""Faster R-CNN with a pre-activation ResNet-50/101 backbone (example/rcnn ``symnet/symbol_resnet.py``).

Every BatchNorm uses ``use_global_stats=True``: with one image per device the
batch statistics are useless, so BN is frozen to the pretrained moving
averages (``gamma``/``beta`` are in the default fixed parameters too). The RPN
sits on stage 3 (stride 16); stage 4 runs on the 14x14 ROI pool (stride 2 ->
7x7), followed by BN + ReLU and global average pooling. Layer names follow
MXNet's ImageNet ResNet models (``bn_data``, ``conv0``, ``stage{s}_unit{u}_*``,
``bn1``), so ``model/resnet-{50,101}-0000.params`` load by name.

:data:`RESNET50` / :data:`RESNET101` are the backbones (:func:`resnet_backbone` makes
one for other unit counts); ``get_resnet50_train`` / ``get_resnet101_train`` (and
``*_test``) take the original arguments (see ``rcnn_vgg``).
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import mxnet as mx

from symbol.rcnn_head import RCNNBackbone, original_builders

BN_EPS = 2e-5
RESNET50_UNITS = (3, 4, 6, 3)
RESNET101_UNITS = (3, 4, 23, 3)
FILTER_LIST = (256, 512, 1024, 2048)


def _bn(data: mx.sym.Symbol, name: str, fix_gamma: bool = False) -> mx.sym.Symbol:
    return mx.sym.BatchNorm(data=data, fix_gamma=fix_gamma, eps=BN_EPS, use_global_stats=True, name=name)


def residual_unit(
    data: mx.sym.Symbol, num_filter: int, stride: tuple[int, int], dim_match: bool, name: str
) -> mx.sym.Symbol:
    """Pre-activation bottleneck: (BN, ReLU, conv) x3 with 1x1 / 3x3 (stride) / 1x1 convs.

    The shortcut is the input when ``dim_match``, else a strided 1x1 conv of the first activation.
    """
    bottleneck = num_filter // 4
    act1 = mx.sym.Activation(data=_bn(data, f"{name}_bn1"), act_type="relu", name=f"{name}_relu1")
    conv1 = mx.sym.Convolution(data=act1, num_filter=bottleneck, kernel=(1, 1), stride=(1, 1), pad=(0, 0),
                               no_bias=True, name=f"{name}_conv1")
    act2 = mx.sym.Activation(data=_bn(conv1, f"{name}_bn2"), act_type="relu", name=f"{name}_relu2")
    conv2 = mx.sym.Convolution(data=act2, num_filter=bottleneck, kernel=(3, 3), stride=stride, pad=(1, 1),
                               no_bias=True, name=f"{name}_conv2")
    act3 = mx.sym.Activation(data=_bn(conv2, f"{name}_bn3"), act_type="relu", name=f"{name}_relu3")
    conv3 = mx.sym.Convolution(data=act3, num_filter=num_filter, kernel=(1, 1), stride=(1, 1), pad=(0, 0),
                               no_bias=True, name=f"{name}_conv3")
    if dim_match:
        shortcut = data
    else:
        shortcut = mx.sym.Convolution(data=act1, num_filter=num_filter, kernel=(1, 1), stride=stride,
                                      no_bias=True, name=f"{name}_sc")
    return mx.sym.elemwise_add(conv3, shortcut, name=f"{name}_plus")


def residual_stage(
    data: mx.sym.Symbol, stage: int, num_units: int, num_filter: int, stride: tuple[int, int]
) -> mx.sym.Symbol:
    """``num_units`` residual units named ``stage{stage}_unit{u}``; the first changes width/stride."""
    body = residual_unit(data, num_filter, stride, False, name=f"stage{stage}_unit1")
    for unit in range(2, num_units + 1):
        body = residual_unit(body, num_filter, (1, 1), True, name=f"stage{stage}_unit{unit}")
    return body


def get_resnet_feature(data: mx.sym.Symbol, units: Sequence[int], filter_list: Sequence[int]) -> mx.sym.Symbol:
    """``bn_data`` .. stage 3: [B, filter_list[2], H/16, W/16]."""
    data_bn = _bn(data, "bn_data", fix_gamma=True)
    conv0 = mx.sym.Convolution(data=data_bn, num_filter=64, kernel=(7, 7), stride=(2, 2), pad=(3, 3),
                               no_bias=True, name="conv0")
    relu0 = mx.sym.Activation(data=_bn(conv0, "bn0"), act_type="relu", name="relu0")
    body = mx.sym.Pooling(data=relu0, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max", name="pool0")
    body = residual_stage(body, 1, units[0], filter_list[0], (1, 1))
    body = residual_stage(body, 2, units[1], filter_list[1], (2, 2))
    return residual_stage(body, 3, units[2], filter_list[2], (2, 2))


def get_resnet_top_feature(
    roi_pool: mx.sym.Symbol, units: Sequence[int], filter_list: Sequence[int]
) -> mx.sym.Symbol:
    """Stage 4 on the ROI pool [N, 1024, 14, 14], BN + ReLU, global average pool: [N, 2048, 1, 1]."""
    body = residual_stage(roi_pool, 4, units[3], filter_list[3], (2, 2))
    relu1 = mx.sym.Activation(data=_bn(body, "bn1"), act_type="relu", name="relu1")
    return mx.sym.Pooling(data=relu1, global_pool=True, kernel=(7, 7), pool_type="avg", name="pool1")


def resnet_backbone(units: Sequence[int], filter_list: Sequence[int] = FILTER_LIST) -> RCNNBackbone:
    """The backbone of a ResNet with ``units`` residual units per stage (RPN conv of 512 filters)."""
    feature = partial(get_resnet_feature, units=units, filter_list=filter_list)
    top = partial(get_resnet_top_feature, units=units, filter_list=filter_list)
    return RCNNBackbone(feature, top, rpn_num_filter=512)


RESNET50 = resnet_backbone(RESNET50_UNITS)
RESNET101 = resnet_backbone(RESNET101_UNITS)
get_resnet50_train, get_resnet50_test = original_builders(RESNET50)
get_resnet101_train, get_resnet101_test = original_builders(RESNET101)

