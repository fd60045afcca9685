"""VGG16 with fc6/fc7 turned into (dilated) convolutions: the SSD base network.

Layer names match the original (and the ``vgg16_reduced`` pretrained weights):
``conv{g}_{i}`` / ``relu{g}_{i}``, ``pool1..5``, ``fc6`` -> ``relu6``, ``fc7`` -> ``relu7``.
"""
from __future__ import annotations

import mxnet as mx

# (group, number of 3x3 convs, filters)
CONV_GROUPS = ((1, 2, 64), (2, 2, 128), (3, 3, 256), (4, 3, 512), (5, 3, 512))


def get_symbol(num_classes: int = 1000, **kwargs) -> mx.sym.Symbol:
    """The feature trunk up to ``relu7``: ``data`` ``[B, 3, H, W]`` -> ``[B, 1024, H/16, W/16]``.

    ``pool3`` uses the 'full' (ceil) convention, so 300 gives 38x38 at ``relu4_3`` and
    19x19 at ``relu7``. ``pool5`` is 3x3 stride 1 pad 1 and ``fc6`` a 3x3 conv with dilation 6,
    so the last two blocks keep the resolution. The ImageNet classifier (fc8) of the original
    is left out: SSD never uses it. ``num_classes`` is accepted for the common base-network
    interface ``get_symbol(num_classes, **kwargs)`` and unused.
    """
    body = mx.sym.Variable(name="data")
    for group, num_convs, num_filter in CONV_GROUPS:
        for i in range(1, num_convs + 1):
            body = mx.sym.Convolution(data=body, kernel=(3, 3), pad=(1, 1), num_filter=num_filter,
                                      name=f"conv{group}_{i}")
            body = mx.sym.Activation(data=body, act_type="relu", name=f"relu{group}_{i}")
        if group == 5:
            body = mx.sym.Pooling(data=body, pool_type="max", kernel=(3, 3), stride=(1, 1), pad=(1, 1),
                                  name="pool5")
        else:
            # 'full' on pool3 rounds 75 up to 38, as Caffe's SSD did
            convention = "full" if group == 3 else "valid"
            body = mx.sym.Pooling(data=body, pool_type="max", kernel=(2, 2), stride=(2, 2),
                                  pooling_convention=convention, name=f"pool{group}")
    body = mx.sym.Convolution(data=body, kernel=(3, 3), pad=(6, 6), dilate=(6, 6), num_filter=1024, name="fc6")
    body = mx.sym.Activation(data=body, act_type="relu", name="relu6")
    body = mx.sym.Convolution(data=body, kernel=(1, 1), pad=(0, 0), num_filter=1024, name="fc7")
    return mx.sym.Activation(data=body, act_type="relu", name="relu7")
