"""Pre-activation ResNet (He et al., "Identity Mappings in Deep Residual Networks"), as in the
original example/ssd ``resnet.py`` and the MXNet model zoo ``resnet-50``/``resnet-101`` weights.

Unit ``j`` of stage ``i`` is named ``stage{i}_unit{j}_{bn1,relu1,conv1,...,sc}``; the residual
sum of the k-th unit overall (counting from 0) is ``_plus{k}``, the name mxnet's automatic
naming gave it in the original example, whose SSD configs pick ``_plus12``/``_plus15``
(ResNet-50) and ``_plus29``/``_plus32`` (ResNet-101), the last units of stages 3 and 4. The
sums (and the stem's max-pool, ``pool0``) are named explicitly: mxnet's automatic names count
per process, so a second graph built in the same process would have shifted them.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import mxnet as mx

UNITS_PER_STAGE = {
    18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
    152: (3, 8, 36, 3), 200: (3, 24, 36, 3), 269: (3, 30, 48, 8),
}
BN_MOMENTUM = 0.9
BN_EPS = 2e-5


def _bn_relu(data: mx.sym.Symbol, name: str, index: int) -> mx.sym.Symbol:
    bn = mx.sym.BatchNorm(data=data, fix_gamma=False, eps=BN_EPS, momentum=BN_MOMENTUM, name=f"{name}_bn{index}")
    return mx.sym.Activation(data=bn, act_type="relu", name=f"{name}_relu{index}")


def residual_unit(data: mx.sym.Symbol, num_filter: int, stride: int, dim_match: bool, name: str,
                  plus_name: str, bottle_neck: bool = True, workspace: int = 256) -> mx.sym.Symbol:
    """One pre-activation unit: ``[B, C_in, H, W]`` -> ``[B, num_filter, H/stride, W/stride]``.

    Bottleneck units use 1x1 (num_filter/4), 3x3 (num_filter/4, stride), 1x1 (num_filter);
    basic units two 3x3 convs. The shortcut is the input, or a strided 1x1 conv ``{name}_sc``
    of the first activation when the shape changes.
    """
    act1 = _bn_relu(data, name, 1)
    if bottle_neck:
        specs = ((num_filter // 4, (1, 1), 1, (0, 0)), (num_filter // 4, (3, 3), stride, (1, 1)),
                 (num_filter, (1, 1), 1, (0, 0)))
    else:
        specs = ((num_filter, (3, 3), stride, (1, 1)), (num_filter, (3, 3), 1, (1, 1)))
    body = act1
    for index, (filters, kernel, conv_stride, pad) in enumerate(specs, start=1):
        if index > 1:
            body = _bn_relu(body, name, index)
        body = mx.sym.Convolution(data=body, num_filter=filters, kernel=kernel, stride=(conv_stride, conv_stride),
                                  pad=pad, no_bias=True, workspace=workspace, name=f"{name}_conv{index}")
    if dim_match:
        shortcut = data
    else:
        shortcut = mx.sym.Convolution(data=act1, num_filter=num_filter, kernel=(1, 1), stride=(stride, stride),
                                      no_bias=True, workspace=workspace, name=f"{name}_sc")
    return mx.sym.elemwise_add(body, shortcut, name=plus_name)


def get_symbol(num_classes: int = 1000, num_layers: int = 50, image_shape: str = "3,224,224",
               conv_workspace: int = 256, **kwargs) -> mx.sym.Symbol:
    """ResNet trunk up to ``relu1`` (after the last unit): ``[B, 3, H, W]`` -> ``[B, 2048, H/32, W/32]``.

    ``image_shape`` (``"C,H,W"``) only has to be larger than 32 pixels: the ImageNet stem
    (7x7/2 conv, 3x3/2 max-pool) is the only one provided, and smaller shapes raise ValueError.
    The classifier (fc1) is left out as SSD never uses it; ``num_classes`` is accepted for the
    common base-network interface and unused.
    """
    height = int(image_shape.split(",")[1])
    if height <= 32:
        raise ValueError(f"image_shape {image_shape}: only the ImageNet stem (inputs > 32 pixels) is provided")
    if num_layers not in UNITS_PER_STAGE:
        raise ValueError(f"num_layers must be one of {sorted(UNITS_PER_STAGE)}, got {num_layers}")
    bottle_neck = num_layers >= 50
    filter_list = (64, 256, 512, 1024, 2048) if bottle_neck else (64, 64, 128, 256, 512)

    data = mx.sym.Variable(name="data")
    data = mx.sym.identity(data=data, name="id")
    data = mx.sym.BatchNorm(data=data, fix_gamma=True, eps=BN_EPS, momentum=BN_MOMENTUM, name="bn_data")
    body = mx.sym.Convolution(data=data, num_filter=filter_list[0], kernel=(7, 7), stride=(2, 2), pad=(3, 3),
                              no_bias=True, workspace=conv_workspace, name="conv0")
    body = mx.sym.BatchNorm(data=body, fix_gamma=False, eps=BN_EPS, momentum=BN_MOMENTUM, name="bn0")
    body = mx.sym.Activation(data=body, act_type="relu", name="relu0")
    body = mx.sym.Pooling(data=body, kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max", name="pool0")

    unit_index = 0
    for stage, num_units in enumerate(UNITS_PER_STAGE[num_layers], start=1):
        for unit in range(1, num_units + 1):
            first = unit == 1
            stride = 2 if first and stage > 1 else 1
            body = residual_unit(body, filter_list[stage], stride, dim_match=not first,
                                 name=f"stage{stage}_unit{unit}", plus_name=f"_plus{unit_index}",
                                 bottle_neck=bottle_neck, workspace=conv_workspace)
            unit_index += 1
    body = mx.sym.BatchNorm(data=body, fix_gamma=False, eps=BN_EPS, momentum=BN_MOMENTUM, name="bn1")
    return mx.sym.Activation(data=body, act_type="relu", name="relu1")
