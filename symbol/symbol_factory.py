"""SSD graphs by ``--network`` name: the preset's builder arguments and the train/test graphs built from them.

The names, their config functions (:mod:`symbol.ssd_presets`) and default data shapes are the
SSD entries of :mod:`symbol.registry`. ``NETWORKS`` (name -> config function) and
``DEFAULT_DATA_SHAPES`` (name -> usual input size) are read-only views of those entries.
"""
from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import mxnet as mx

from config.errors import UserError
from symbol import registry, symbol_builder
from symbol.ssd_presets import ConfigFunction

_PRESETS = [registry.NETWORKS[name] for name in registry.network_names(registry.SSD)]
NETWORKS: Mapping[str, ConfigFunction] = MappingProxyType({preset.name: preset.config for preset in _PRESETS})
DEFAULT_DATA_SHAPES: Mapping[str, int] = MappingProxyType(
    {preset.name: preset.default_data_shape for preset in _PRESETS}
)


def get_config(network: str, data_shape: int, **kwargs: Any) -> dict[str, Any]:
    """Builder arguments for ``network`` at ``data_shape``, with ``kwargs`` overriding them.

    Raises :class:`UserError` naming ``--network`` for an unknown network and ``--data-shape``
    for a non-positive shape.
    """
    preset = registry.get_network(network, registry.SSD)
    if data_shape <= 0:
        raise UserError(f"--data-shape: must be a positive number of pixels, got {data_shape}")
    config = preset.config(data_shape)
    config.update(kwargs)
    return config


def check_data_shape(sym: mx.sym.Symbol, network: str, data_shape: int) -> None:
    """Raise :class:`UserError` naming ``--data-shape`` unless ``sym`` accepts a square input of that size.

    Shape inference refuses, for instance, a feature map that shrank below a kernel or a
    pooling window, and concatenated branches whose sizes differ; the message names the layer.
    """
    data = (1, 3, data_shape, data_shape)
    shapes = {"data": data, "label": (1, 1, 5)} if "label" in sym.list_arguments() else {"data": data}
    try:
        # mxnet prints the argument shapes before raising; the error message says enough
        with contextlib.redirect_stdout(io.StringIO()):
            sym.infer_shape(**shapes)
    except mx.base.MXNetError as err:
        raise UserError(f"--data-shape: {data_shape} does not fit network {network}: "
                        f"{_shape_error_reason(err)}") from err


def _shape_error_reason(err: Exception) -> str:
    """``layer <name>: <reason>`` from mxnet's "Error in operator <name>: [time] file: Check failed: ...: reason"."""
    first_line = str(err).strip().splitlines()[0]
    match = re.search(r"Error in operator (\S+?):", first_line)
    reason = first_line.rsplit(": ", 1)[-1].strip()
    return f"layer {match.group(1)}: {reason}" if match else first_line


def get_symbol_train(network: str, data_shape: int, **kwargs: Any) -> mx.sym.Symbol:
    """Training graph of ``network`` (see :func:`symbol.symbol_builder.get_symbol_train`).

    ``kwargs`` must include ``num_classes`` and may override any config entry or pass
    ``nms_thresh``, ``force_suppress``, ``nms_topk``, ``cls_loss``, ``label_smoothing``, ``loc_loss``,
    ``anchor_clip``, ``clip_detections``.
    """
    sym = symbol_builder.get_symbol_train(**get_config(network, data_shape, **kwargs))
    check_data_shape(sym, network, data_shape)
    return sym


def get_symbol(network: str, data_shape: int, **kwargs: Any) -> mx.sym.Symbol:
    """Test graph of ``network`` (see :func:`symbol.symbol_builder.get_symbol`), output ``[B, N, 6]``."""
    sym = symbol_builder.get_symbol(**get_config(network, data_shape, **kwargs))
    check_data_shape(sym, network, data_shape)
    return sym
