"""Inception-v3 (Szegedy et al., "Rethinking the Inception Architecture"), as in the original
example/ssd ``inceptionv3.py`` and the MXNet ``Inception-7`` weights.

Every conv is ``{name}{suffix}_conv2d`` -> ``{name}{suffix}_batchnorm`` -> ``{name}{suffix}_relu``;
block outputs are ``ch_concat_{block}_chconcat`` (the SSD config uses ``mixed_7`` and ``mixed_10``).
"""
from __future__ import annotations

import mxnet as mx


def conv(data: mx.sym.Symbol, num_filter: int, kernel: tuple[int, int] = (1, 1), stride: tuple[int, int] = (1, 1),
         pad: tuple[int, int] = (0, 0), name: str = "", suffix: str = "") -> mx.sym.Symbol:
    """Conv (no bias) + BatchNorm (fixed gamma) + ReLU."""
    body = mx.sym.Convolution(data=data, num_filter=num_filter, kernel=kernel, stride=stride, pad=pad,
                              no_bias=True, name=f"{name}{suffix}_conv2d")
    body = mx.sym.BatchNorm(data=body, fix_gamma=True, name=f"{name}{suffix}_batchnorm")
    return mx.sym.Activation(data=body, act_type="relu", name=f"{name}{suffix}_relu")


def _pool(data: mx.sym.Symbol, pool_type: str, stride: int, pad: int, name: str) -> mx.sym.Symbol:
    return mx.sym.Pooling(data=data, kernel=(3, 3), stride=(stride, stride), pad=(pad, pad),
                          pool_type=pool_type, name=name)


def _concat(towers: list[mx.sym.Symbol], name: str) -> mx.sym.Symbol:
    return mx.sym.Concat(*towers, name=f"ch_concat_{name}_chconcat")


def _inception_a(data, num_1x1, num_3x3_red, num_3x3_1, num_3x3_2, num_5x5_red, num_5x5, pool, proj, name):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled projection towers (spatial size kept)."""
    tower_1x1 = conv(data, num_1x1, name=f"{name}_conv")
    tower_5x5 = conv(data, num_5x5_red, name=f"{name}_tower", suffix="_conv")
    tower_5x5 = conv(tower_5x5, num_5x5, kernel=(5, 5), pad=(2, 2), name=f"{name}_tower", suffix="_conv_1")
    tower_3x3 = conv(data, num_3x3_red, name=f"{name}_tower_1", suffix="_conv")
    tower_3x3 = conv(tower_3x3, num_3x3_1, kernel=(3, 3), pad=(1, 1), name=f"{name}_tower_1", suffix="_conv_1")
    tower_3x3 = conv(tower_3x3, num_3x3_2, kernel=(3, 3), pad=(1, 1), name=f"{name}_tower_1", suffix="_conv_2")
    pooling = _pool(data, pool, 1, 1, f"{pool}_pool_{name}_pool")
    cproj = conv(pooling, proj, name=f"{name}_tower_2", suffix="_conv")
    return _concat([tower_1x1, tower_5x5, tower_3x3, cproj], name)


def _inception_b(data, num_3x3, num_d3x3_red, num_d3x3_1, num_d3x3_2, name):
    """First grid reduction (stride 2): 3x3, double 3x3 and max-pool towers."""
    tower_3x3 = conv(data, num_3x3, kernel=(3, 3), stride=(2, 2), name=f"{name}_conv")
    tower_d3x3 = conv(data, num_d3x3_red, name=f"{name}_tower", suffix="_conv")
    tower_d3x3 = conv(tower_d3x3, num_d3x3_1, kernel=(3, 3), pad=(1, 1), name=f"{name}_tower", suffix="_conv_1")
    tower_d3x3 = conv(tower_d3x3, num_d3x3_2, kernel=(3, 3), stride=(2, 2), name=f"{name}_tower",
                      suffix="_conv_2")
    pooling = _pool(data, "max", 2, 0, f"max_pool_{name}_pool")
    return _concat([tower_3x3, tower_d3x3, pooling], name)


def _inception_c(data, num_1x1, num_d7_red, num_d7_1, num_d7_2, num_q7_red, num_q7_1, num_q7_2, num_q7_3,
                num_q7_4, pool, proj, name):
    """17x17 block with factorised 7x7 towers (spatial size kept)."""
    tower_1x1 = conv(data, num_1x1, name=f"{name}_conv")
    tower_d7 = conv(data, num_d7_red, name=f"{name}_tower", suffix="_conv")
    tower_d7 = conv(tower_d7, num_d7_1, kernel=(1, 7), pad=(0, 3), name=f"{name}_tower", suffix="_conv_1")
    tower_d7 = conv(tower_d7, num_d7_2, kernel=(7, 1), pad=(3, 0), name=f"{name}_tower", suffix="_conv_2")
    tower_q7 = conv(data, num_q7_red, name=f"{name}_tower_1", suffix="_conv")
    for index, (filters, kernel, pad) in enumerate(((num_q7_1, (7, 1), (3, 0)), (num_q7_2, (1, 7), (0, 3)),
                                                    (num_q7_3, (7, 1), (3, 0)), (num_q7_4, (1, 7), (0, 3))),
                                                   start=1):
        tower_q7 = conv(tower_q7, filters, kernel=kernel, pad=pad, name=f"{name}_tower_1", suffix=f"_conv_{index}")
    pooling = _pool(data, pool, 1, 1, f"{pool}_pool_{name}_pool")
    cproj = conv(pooling, proj, name=f"{name}_tower_2", suffix="_conv")
    return _concat([tower_1x1, tower_d7, tower_q7, cproj], name)


def _inception_d(data, num_3x3_red, num_3x3, num_d7_3x3_red, num_d7_1, num_d7_2, num_d7_3x3, pool, name):
    """Second grid reduction (stride 2)."""
    tower_3x3 = conv(data, num_3x3_red, name=f"{name}_tower", suffix="_conv")
    tower_3x3 = conv(tower_3x3, num_3x3, kernel=(3, 3), stride=(2, 2), name=f"{name}_tower", suffix="_conv_1")
    tower_d7 = conv(data, num_d7_3x3_red, name=f"{name}_tower_1", suffix="_conv")
    tower_d7 = conv(tower_d7, num_d7_1, kernel=(1, 7), pad=(0, 3), name=f"{name}_tower_1", suffix="_conv_1")
    tower_d7 = conv(tower_d7, num_d7_2, kernel=(7, 1), pad=(3, 0), name=f"{name}_tower_1", suffix="_conv_2")
    tower_d7 = conv(tower_d7, num_d7_3x3, kernel=(3, 3), stride=(2, 2), name=f"{name}_tower_1", suffix="_conv_3")
    pooling = _pool(data, pool, 2, 0, f"{pool}_pool_{name}_pool")
    return _concat([tower_3x3, tower_d7, pooling], name)


def _inception_e(data, num_1x1, num_d3_red, num_d3_1, num_d3_2, num_3x3_d3_red, num_3x3, num_3x3_d3_1,
                num_3x3_d3_2, pool, proj, name):
    """8x8 block with split 1x3/3x1 towers (spatial size kept)."""
    tower_1x1 = conv(data, num_1x1, name=f"{name}_conv")
    tower_d3 = conv(data, num_d3_red, name=f"{name}_tower", suffix="_conv")
    tower_d3_a = conv(tower_d3, num_d3_1, kernel=(1, 3), pad=(0, 1), name=f"{name}_tower", suffix="_mixed_conv")
    tower_d3_b = conv(tower_d3, num_d3_2, kernel=(3, 1), pad=(1, 0), name=f"{name}_tower", suffix="_mixed_conv_1")
    tower_3x3 = conv(data, num_3x3_d3_red, name=f"{name}_tower_1", suffix="_conv")
    tower_3x3 = conv(tower_3x3, num_3x3, kernel=(3, 3), pad=(1, 1), name=f"{name}_tower_1", suffix="_conv_1")
    tower_3x3_a = conv(tower_3x3, num_3x3_d3_1, kernel=(1, 3), pad=(0, 1), name=f"{name}_tower_1",
                       suffix="_mixed_conv")
    tower_3x3_b = conv(tower_3x3, num_3x3_d3_2, kernel=(3, 1), pad=(1, 0), name=f"{name}_tower_1",
                       suffix="_mixed_conv_1")
    pooling = _pool(data, pool, 1, 1, f"{pool}_pool_{name}_pool")
    cproj = conv(pooling, proj, name=f"{name}_tower_2", suffix="_conv")
    return _concat([tower_1x1, tower_d3_a, tower_d3_b, tower_3x3_a, tower_3x3_b, cproj], name)


def get_symbol(num_classes: int = 1000, **kwargs) -> mx.sym.Symbol:
    """Trunk up to ``ch_concat_mixed_10_chconcat``: ``[B, 3, H, W]`` -> ``[B, 2048, ~H/32, ~W/32]``.

    The classifier (global pool, fc1) of the original is left out as SSD never uses it;
    ``num_classes`` is accepted for the common base-network interface and unused.
    """
    data = mx.sym.Variable(name="data")
    # stage 1
    body = conv(data, 32, kernel=(3, 3), stride=(2, 2), name="conv")
    body = conv(body, 32, kernel=(3, 3), name="conv_1")
    body = conv(body, 64, kernel=(3, 3), pad=(1, 1), name="conv_2")
    body = _pool(body, "max", 2, 0, "pool")
    # stage 2
    body = conv(body, 80, kernel=(1, 1), name="conv_3")
    body = conv(body, 192, kernel=(3, 3), name="conv_4")
    body = _pool(body, "max", 2, 0, "pool1")
    # stage 3
    body = _inception_a(body, 64, 64, 96, 96, 48, 64, "avg", 32, "mixed")
    body = _inception_a(body, 64, 64, 96, 96, 48, 64, "avg", 64, "mixed_1")
    body = _inception_a(body, 64, 64, 96, 96, 48, 64, "avg", 64, "mixed_2")
    body = _inception_b(body, 384, 64, 96, 96, "mixed_3")
    # stage 4
    body = _inception_c(body, 192, 128, 128, 192, 128, 128, 128, 128, 192, "avg", 192, "mixed_4")
    body = _inception_c(body, 192, 160, 160, 192, 160, 160, 160, 160, 192, "avg", 192, "mixed_5")
    body = _inception_c(body, 192, 160, 160, 192, 160, 160, 160, 160, 192, "avg", 192, "mixed_6")
    body = _inception_c(body, 192, 192, 192, 192, 192, 192, 192, 192, 192, "avg", 192, "mixed_7")
    body = _inception_d(body, 192, 320, 192, 192, 192, 192, "max", "mixed_8")
    # stage 5
    body = _inception_e(body, 320, 384, 384, 384, 448, 384, 384, 384, "avg", 192, "mixed_9")
    return _inception_e(body, 320, 384, 384, 384, 448, 384, 384, 384, "max", 192, "mixed_10")
