"""SSD layer configurations: one config function ``f(data_shape) -> dict`` per network.

Each function returns the keyword arguments of :func:`symbol.symbol_builder.get_symbol_train`
(``network`` names the base network, a key of :data:`symbol.registry.BASE_NETWORKS`). The
``--network`` names and default data shapes that select them are in :mod:`symbol.registry`.

Configs for vgg16_reduced, inceptionv3, resnet50 and resnet101 are those of apache/mxnet
v1.9.x ``example/ssd``; mobilenet is zhreshold/mxnet-ssd's; toy is the gluon tutorial's ToySSD.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from symbol.toy import SCALE_LAYERS as TOY_SCALE_LAYERS

LOG = logging.getLogger(__name__)
ConfigFunction = Callable[[int], dict[str, Any]]

# anchor sizes and aspect ratios shared by the 6-layer presets
SIZES_6 = [[.1, .141], [.2, .272], [.37, .447], [.54, .619], [.71, .79], [.88, .961]]
RATIOS_6 = [[1, 2, .5]] + [[1, 2, .5, 3, 1. / 3]] * 3 + [[1, 2, .5]] * 2
RATIOS_7 = [[1, 2, .5]] + [[1, 2, .5, 3, 1. / 3]] * 4 + [[1, 2, .5]] * 2


def get_scales(min_scale: float = 0.2, max_scale: float = 0.9, num_layers: int = 6) -> list[list[float]]:
    """Per-layer ``[size, sqrt(size * next_size)]`` anchor sizes following Wei Liu's Caffe SSD.

    The first layer gets half of ``min_scale``; the others are spaced evenly (in whole
    percent) from ``min_scale`` to ``max_scale``. ``get_scales(0.2, 0.9, 6)`` and
    ``get_scales(0.15, 0.9, 7)`` reproduce the literal 300 and 512 VGG sizes to 4 decimals.
    """
    min_percent, max_percent = int(min_scale * 100), int(max_scale * 100)
    step = (max_percent - min_percent) // (num_layers - 2)
    percents = range(min_percent, max_percent + 1, step)
    min_sizes = [int(100 * min_scale / 2) / 100] + [p / 100 for p in percents]
    max_sizes = [min_scale] + [(p + step) / 100 for p in percents]
    return [[lo, float(np.sqrt(lo * hi))] for lo, hi in zip(min_sizes[:num_layers], max_sizes[:num_layers])]


def vgg16_reduced(data_shape: int) -> dict[str, Any]:
    """SSD300 below 448 pixels (6 scales), SSD512 from 448 (7 scales).

    SSD512's last extra layer has stride 2, so its last map is 1x1, as its step of 512/512
    assumes: the map and the 24,564 anchors of Caffe's SSD512 (whose last conv is 4x4 pad 1).
    """
    if data_shape not in (300, 512):
        LOG.warning("--data-shape %d was not tested with vgg16_reduced, use with caution", data_shape)
    if data_shape >= 448:
        return dict(
            network="vgg16_reduced",
            from_layers=["relu4_3", "relu7", "", "", "", "", ""],
            num_filters=[512, -1, 512, 256, 256, 256, 256],
            strides=[-1, -1, 2, 2, 2, 2, 2],
            pads=[-1, -1, 1, 1, 1, 1, 1],
            sizes=[[.07, .1025], [.15, .2121], [.3, .3674], [.45, .5196], [.6, .6708], [.75, .8216], [.9, .9721]],
            ratios=RATIOS_7,
            normalizations=[20, -1, -1, -1, -1, -1, -1],
            steps=[s / 512 for s in (8, 16, 32, 64, 128, 256, 512)] if data_shape == 512 else [],
        )
    return dict(
        network="vgg16_reduced",
        from_layers=["relu4_3", "relu7", "", "", "", ""],
        num_filters=[512, -1, 512, 256, 256, 256],
        strides=[-1, -1, 2, 2, 1, 1],
        pads=[-1, -1, 1, 1, 0, 0],
        sizes=SIZES_6,
        ratios=RATIOS_6,
        normalizations=[20, -1, -1, -1, -1, -1],
        steps=[s / 300 for s in (8, 16, 32, 64, 100, 300)] if data_shape == 300 else [],
    )


def _six_scale_config(network: str, from_layers: list[str], **base_kwargs: Any) -> dict[str, Any]:
    """Two base layers + four extra layers, as the inceptionv3 and resnet presets."""
    return dict(
        network=network,
        from_layers=from_layers + ["", "", "", ""],
        num_filters=[-1, -1, 512, 256, 256, 128],
        strides=[-1, -1, 2, 2, 2, 2],
        pads=[-1, -1, 1, 1, 1, 1],
        sizes=SIZES_6,
        ratios=RATIOS_6,
        normalizations=-1,
        steps=[],
        **base_kwargs,
    )


def inceptionv3(data_shape: int) -> dict[str, Any]:
    """Predict from mixed_7 (stride ~16) and mixed_10 (stride ~32) plus four extra layers."""
    return _six_scale_config("inceptionv3", ["ch_concat_mixed_7_chconcat", "ch_concat_mixed_10_chconcat"])


def resnet50(data_shape: int) -> dict[str, Any]:
    """Predict from the last units of stages 3 and 4 (``_plus12``, ``_plus15``)."""
    return _six_scale_config("resnet", ["_plus12", "_plus15"], num_layers=50, image_shape="3,224,224")


def resnet101(data_shape: int) -> dict[str, Any]:
    """Predict from the last units of stages 3 and 4 (``_plus29``, ``_plus32``)."""
    return _six_scale_config("resnet", ["_plus29", "_plus32"], num_layers=101, image_shape="3,224,224")


def mobilenet(data_shape: int) -> dict[str, Any]:
    """zhreshold/mxnet-ssd's MobileNet preset: conv_12/conv_14 plus five stride-2 extra layers."""
    return dict(
        network="mobilenet",
        from_layers=["conv_12_relu", "conv_14_relu", "", "", "", "", ""],
        num_filters=[-1, -1, 512, 256, 256, 256, 256],
        strides=[-1, -1, 2, 2, 2, 2, 2],
        pads=[-1, -1, 1, 1, 1, 1, 1],
        sizes=get_scales(min_scale=0.15, max_scale=0.9, num_layers=7),
        ratios=RATIOS_7,
        normalizations=-1,
        steps=[],
    )


def toy(data_shape: int) -> dict[str, Any]:
    """The gluon tutorial's ToySSD: five scales of the ``toy`` body, three anchors per position."""
    num_scales = len(TOY_SCALE_LAYERS)
    return dict(
        network="toy",
        from_layers=list(TOY_SCALE_LAYERS),
        num_filters=[-1] * num_scales,
        strides=[-1] * num_scales,
        pads=[-1] * num_scales,
        sizes=[[.2, .272], [.37, .447], [.54, .619], [.71, .79], [.88, .961]],
        ratios=[[1, 2, .5]] * num_scales,
        normalizations=-1,
        steps=[],
    )
