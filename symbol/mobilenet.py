"""MobileNet v1 (Howard et al. 2017) base network, from zhreshold/mxnet-ssd ``symbol/mobilenet.py``.

Layers are ``conv_{k}`` (pointwise) and ``conv_{k}_dw`` (depthwise), each
``_conv2d`` -> ``_batchnorm`` -> ``_relu``; the SSD config predicts from ``conv_12_relu``
(stride 16) and ``conv_14_relu`` (stride 32).
"""
from __future__ import annotations

import mxnet as mx

# (block, output filters, stride of the depthwise conv) for blocks 2..14
DEPTHWISE_BLOCKS = (
    (2, 64, 1), (3, 128, 2), (4, 128, 1), (5, 256, 2), (6, 256, 1), (7, 512, 2),
    (8, 512, 1), (9, 512, 1), (10, 512, 1), (11, 512, 1), (12, 512, 1), (13, 1024, 2), (14, 1024, 1),
)


def conv(data: mx.sym.Symbol, num_filter: int, kernel: tuple[int, int] = (1, 1), stride: tuple[int, int] = (1, 1),
         pad: tuple[int, int] = (0, 0), num_group: int = 1, name: str = "") -> mx.sym.Symbol:
    """Conv (no bias, optionally grouped) + BatchNorm (fixed gamma) + ReLU, named ``{name}_*``."""
    body = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=kernel, num_group=num_group,
                              stride=stride, pad=pad, no_bias=True, name=f"{name}_conv2d")
    body = mx.sym.BatchNorm(data=body, fix_gamma=True, name=f"{name}_batchnorm")
    return mx.sym.Activation(data=body, act_type="relu", name=f"{name}_relu")


def get_symbol(num_classes: int = 1000, **kwargs) -> mx.sym.Symbol:
    """Trunk up to ``conv_14_relu``: ``[B, 3, H, W]`` -> ``[B, 1024, H/32, W/32]``.

    The classifier of the original is left out as SSD never uses it; ``num_classes`` is
    accepted for the common base-network interface and unused.
    """
    body = conv(mx.sym.Variable(name="data"), 32, kernel=(3, 3), pad=(1, 1), stride=(2, 2), name="conv_1")
    channels = 32
    for block, num_filter, stride in DEPTHWISE_BLOCKS:
        body = conv(body, channels, kernel=(3, 3), pad=(1, 1), stride=(stride, stride), num_group=channels,
                    name=f"conv_{block}_dw")
        body = conv(body, num_filter, name=f"conv_{block}")
        channels = num_filter
    return body
