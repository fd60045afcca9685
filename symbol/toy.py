"""ToySSD: the small SSD of the gluon tutorial (chapter "SSD", pikachu data), as a symbol.

The body is three down-sampling blocks (16, 32, 64 filters), each two Conv3x3-BN-ReLU then a
2x2 max-pool. SSD predicts from five scales: the body output, three more 128-filter
down-sampling blocks, and a global max-pool on top. At 256x256 the scales are 32, 16, 8, 4
and 1 pixels wide. The five scale outputs, which the ``toy`` config lists as its
``from_layers``, are ``stage3_pool``, ``stage4_pool``, ``stage5_pool``, ``stage6_pool`` and
``global_pool``.
"""
from __future__ import annotations

import mxnet as mx

BODY_FILTERS = (16, 32, 64)
SCALE_FILTERS = 128
NUM_DOWNSAMPLERS = 3  # between the body output and the global pool
SCALE_LAYERS = ("stage3_pool", "stage4_pool", "stage5_pool", "stage6_pool", "global_pool")


def down_sample(data: mx.sym.Symbol, num_filter: int, name: str) -> mx.sym.Symbol:
    """Two (Conv3x3 pad 1 -> BatchNorm -> ReLU) then 2x2 max-pool: ``[B, C, H, W]`` -> ``[B, num_filter, H/2, W/2]``.

    Layers are ``{name}_conv{i}``, ``{name}_bn{i}``, ``{name}_relu{i}`` (i = 1, 2) and ``{name}_pool``.
    """
    body = data
    for i in (1, 2):
        body = mx.sym.Convolution(data=body, kernel=(3, 3), pad=(1, 1), num_filter=num_filter, name=f"{name}_conv{i}")
        body = mx.sym.BatchNorm(data=body, fix_gamma=False, name=f"{name}_bn{i}")
        body = mx.sym.Activation(data=body, act_type="relu", name=f"{name}_relu{i}")
    return mx.sym.Pooling(data=body, pool_type="max", kernel=(2, 2), stride=(2, 2), name=f"{name}_pool")


def get_symbol(num_classes: int = 1000, **kwargs) -> mx.sym.Symbol:
    """All five scales, ending in ``global_pool`` ``[B, 128, 1, 1]``; input ``data`` ``[B, 3, H, W]``.

    ``num_classes`` is accepted for the common base-network interface and unused: the
    prediction heads are added by :func:`symbol.ssd_heads.multibox_layer`.
    """
    body = mx.sym.Variable(name="data")
    filters = BODY_FILTERS + (SCALE_FILTERS,) * NUM_DOWNSAMPLERS
    for stage, num_filter in enumerate(filters, start=1):
        body = down_sample(body, num_filter, f"stage{stage}")
    return mx.sym.Pooling(data=body, pool_type="max", kernel=(1, 1), global_pool=True, name="global_pool")
