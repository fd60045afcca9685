"""Every ``--network`` name in one table: its family (``'ssd'`` or ``'rcnn'``) and what builds it.

* An SSD entry (:class:`SSDNetwork`) holds a config function of :mod:`symbol.ssd_presets`
  (``config(data_shape)`` gives the :func:`symbol.symbol_builder.get_symbol_train` keywords) and
  the network's default ``--data-shape``; the config's ``network`` key names the base network,
  looked up in :data:`BASE_NETWORKS`. :mod:`symbol.symbol_factory` builds its graphs.
* A Faster R-CNN entry (:class:`RCNNNetwork`) holds the backbone (:class:`symbol.rcnn_head.RCNNBackbone`)
  and the values it overrides in :class:`config.train_config.RCNNConfig` (the per-network defaults
  of the original ``train.py``). :mod:`symbol.rcnn_factory` builds its graphs.

Look a name up with :func:`get_network`; list names with :func:`network_names`::

    entry = get_network("faster_rcnn_small")      # entry.family == RCNN
    network_names(SSD)                            # ('vgg16_reduced', 'inceptionv3', ...)

Add a network with one line in :data:`NETWORKS` (see ``symbol/README.md``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar

import mxnet as mx

from config.errors import UserError
from symbol import inceptionv3, mobilenet, resnet, ssd_presets, toy, vgg16_reduced
from symbol.rcnn_head import RCNNBackbone
from symbol.rcnn_resnet import RESNET50, RESNET101
from symbol.rcnn_small import SMALL
from symbol.rcnn_vgg import VGG16

SSD, RCNN = "ssd", "rcnn"
FAMILIES = (SSD, RCNN)

# SSD base networks by the name an SSD config gives as ``network``: get_symbol(num_classes, **kwargs)
BASE_NETWORKS: Mapping[str, Callable[..., mx.sym.Symbol]] = MappingProxyType({
    "vgg16_reduced": vgg16_reduced.get_symbol,
    "inceptionv3": inceptionv3.get_symbol,
    "resnet": resnet.get_symbol,
    "mobilenet": mobilenet.get_symbol,
    "toy": toy.get_symbol,
})


@dataclass(frozen=True)
class SSDNetwork:
    """An SSD ``--network``: ``config(data_shape)`` -> builder keywords, and its usual input size."""

    name: str
    config: ssd_presets.ConfigFunction
    default_data_shape: int
    family: ClassVar[str] = SSD


@dataclass(frozen=True)
class RCNNNetwork:
    """A Faster R-CNN ``--network``: its backbone and the :class:`RCNNConfig` values it overrides."""

    name: str
    backbone: RCNNBackbone
    defaults: dict[str, Any] = field(default_factory=dict)
    family: ClassVar[str] = RCNN


Network = SSDNetwork | RCNNNetwork

_IMAGENET_MEANS = (123.68, 116.779, 103.939)
# The ResNet models normalise their input with the ``bn_data`` layer: means 0, stds 1.
_RESNET_DEFAULTS = dict(
    img_pixel_means=(0.0, 0.0, 0.0), img_pixel_stds=(1.0, 1.0, 1.0),
    net_fixed_params=("conv0", "stage1", "gamma", "beta"), rcnn_pooled_size=(14, 14),
)

_ENTRIES: tuple[Network, ...] = (
    SSDNetwork("vgg16_reduced", ssd_presets.vgg16_reduced, default_data_shape=300),
    SSDNetwork("inceptionv3", ssd_presets.inceptionv3, default_data_shape=512),
    SSDNetwork("resnet50", ssd_presets.resnet50, default_data_shape=512),
    SSDNetwork("resnet101", ssd_presets.resnet101, default_data_shape=512),
    SSDNetwork("mobilenet", ssd_presets.mobilenet, default_data_shape=512),
    SSDNetwork("toy", ssd_presets.toy, default_data_shape=256),
    RCNNNetwork("faster_rcnn_vgg16", VGG16, dict(
        pretrained="model/vgg16-0000.params", img_pixel_means=_IMAGENET_MEANS,
        img_pixel_stds=(1.0, 1.0, 1.0), net_fixed_params=("conv1", "conv2"), rcnn_pooled_size=(7, 7),
    )),
    RCNNNetwork("faster_rcnn_resnet50", RESNET50, dict(
        pretrained="model/resnet-50-0000.params", **_RESNET_DEFAULTS,
    )),
    RCNNNetwork("faster_rcnn_resnet101", RESNET101, dict(
        pretrained="model/resnet-101-0000.params", **_RESNET_DEFAULTS,
    )),
    # trained from scratch on small images: unit-variance input, smaller anchors (32..256 px)
    RCNNNetwork("faster_rcnn_small", SMALL, dict(
        pretrained="", img_pixel_means=_IMAGENET_MEANS, img_pixel_stds=(58.395, 57.12, 57.375),
        net_fixed_params=(), rcnn_pooled_size=(7, 7), img_short_side=300, img_long_side=500,
        rpn_anchor_scales=(2, 4, 8, 16),
    )),
)
# every --network name -> its entry, in the order above
NETWORKS: Mapping[str, Network] = MappingProxyType({entry.name: entry for entry in _ENTRIES})


def network_names(family: str | None = None) -> tuple[str, ...]:
    """Names of ``family`` (``SSD`` or ``RCNN``; None: both), in table order."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown network family {family!r}; families: {', '.join(FAMILIES)}")
    return tuple(name for name, entry in NETWORKS.items() if family in (None, entry.family))


def get_network(name: str, family: str | None = None) -> Network:
    """The entry of ``--network name``; with ``family``, it must be of that family.

    An unknown name raises :class:`UserError` naming ``--network``: without ``family`` it lists the
    names of both families (SSD first, each sorted); with one, the names of that family, in the
    words the SSD and Faster R-CNN lookups always used.
    """
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown network family {family!r}; families: {', '.join(FAMILIES)}")
    entry = NETWORKS.get(name)
    if entry is not None and family in (None, entry.family):
        return entry
    if family == SSD:
        raise UserError(f"--network: unknown network {name!r}; known networks: "
                        f"{', '.join(sorted(network_names(SSD)))}")
    if family == RCNN:
        raise UserError(f"--network: unknown Faster R-CNN network {name!r}; choose from "
                        f"{', '.join(network_names(RCNN))}")
    known = sorted(network_names(SSD)) + sorted(network_names(RCNN))
    raise UserError(f"--network {name}: unknown network; known: {', '.join(known)}")


def get_base_network(name: str) -> Callable[..., mx.sym.Symbol]:
    """``get_symbol(num_classes, **kwargs)`` of the SSD base network ``name`` (a config's ``network``)."""
    try:
        return BASE_NETWORKS[name]
    except KeyError:
        raise UserError(f"--network: no base network {name!r}; base networks: {', '.join(BASE_NETWORKS)}") from None
