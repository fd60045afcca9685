"""SSD building blocks shared by every network: extra feature layers and prediction heads.

Shapes use B = batch, C = number of object classes (background excluded),
A_k = anchors per position on feature map k (``len(sizes_k) - 1 + len(ratios_k)``),
N = total anchors over all feature maps.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

from collections.abc import Sequence

import mxnet as mx
import numpy as np

# First-layer anchor size used when ``sizes`` is given as one [min, max] range: the first-layer
# size of every 6-layer preset in ssd_presets.
RANGE_START_SIZE = 0.1


def conv_act_layer(from_layer: mx.sym.Symbol, name: str, num_filter: int, kernel: tuple[int, int] = (1, 1),
                   pad: tuple[int, int] = (0, 0), stride: tuple[int, int] = (1, 1),
                   act_type: str = "relu") -> mx.sym.Symbol:
    """Convolution named ``{name}_conv`` followed by an activation named ``{name}_{act_type}``."""
    conv = mx.sym.Convolution(data=from_layer, kernel=kernel, pad=pad, stride=stride,
                              num_filter=num_filter, name=f"{name}_conv")
    return mx.sym.Activation(data=conv, act_type=act_type, name=f"{name}_{act_type}")


def multi_layer_feature(body: mx.sym.Symbol, from_layers: Sequence[str], num_filters: Sequence[int],
                        strides: Sequence[int], pads: Sequence[int], min_filter: int = 128
                        ) -> list[mx.sym.Symbol]:
    """Pick the feature maps SSD predicts from, appending extra down-sampling layers.

    A non-empty entry of ``from_layers`` names a layer of ``body`` (its ``<name>_output``).
    An empty entry ``''`` appends, on top of the previous feature map, a 1x1 conv with
    ``max(min_filter, num_filters[k] // 2)`` filters + ReLU (``multi_feat_{k}_conv_1x1_*``) and a
    3x3 conv with ``num_filters[k]`` filters, stride ``strides[k]`` and pad ``pads[k]`` + ReLU
    (``multi_feat_{k}_conv_3x3_*``). Each returned symbol is ``[B, channels_k, H_k, W_k]``.
    """
    if not from_layers or not from_layers[0].strip():
        raise ValueError("from_layers must start with a layer of the base network")
    if not len(from_layers) == len(num_filters) == len(strides) == len(pads):
        raise ValueError("from_layers, num_filters, strides and pads must have the same length")
    internals = body.get_internals()
    available = set(internals.list_outputs())
    layers: list[mx.sym.Symbol] = []
    for k, (from_layer, num_filter, stride, pad) in enumerate(zip(from_layers, num_filters, strides, pads)):
        from_layer = from_layer.strip()
        if from_layer:
            if f"{from_layer}_output" not in available:
                raise ValueError(f"base network has no layer named {from_layer!r}")
            layers.append(internals[f"{from_layer}_output"])
            continue
        if num_filter <= 0:
            raise ValueError(f"extra layer {k} needs a positive number of filters, got {num_filter}")
        conv_1x1 = conv_act_layer(layers[-1], f"multi_feat_{k}_conv_1x1", max(min_filter, num_filter // 2))
        conv_3x3 = conv_act_layer(conv_1x1, f"multi_feat_{k}_conv_3x3", num_filter, kernel=(3, 3),
                                  pad=(pad, pad), stride=(stride, stride))
        layers.append(conv_3x3)
    return layers


def _per_layer_sizes(sizes: Sequence, num_layers: int) -> list[list[float]]:
    """Anchor sizes ``[[min, max], ...]`` of ``num_layers`` layers.

    A flat ``[min, max]`` range is spread linearly over layers 2 .. ``num_layers``; the first
    layer gets :data:`RANGE_START_SIZE`. Differences from the original: docs/upstream.md.
    """
    if len(sizes) == 2 and not isinstance(sizes[0], (list, tuple)):
        low, high = float(sizes[0]), float(sizes[1])
        if not 0 < low < high < 1:
            raise ValueError(f"a size range needs 0 < min < max < 1, got {list(sizes)}")
        spread = np.linspace(low, high, num=num_layers - 1).tolist()
        min_sizes = [RANGE_START_SIZE] + spread
        max_sizes = spread + [spread[-1] + RANGE_START_SIZE]
        return [[lo, hi] for lo, hi in zip(min_sizes, max_sizes)]
    return [list(size) for size in sizes]


def _format_tuple(values: Sequence[float]) -> str:
    return "(" + ",".join(str(v) for v in values) + ")"


def clamp_anchor_centre_form(anchors: mx.sym.Symbol, name: str) -> mx.sym.Symbol:
    """Corner anchors ``[1, N, 4]`` with their centre form ``(cx, cy, w, h)`` clamped to [0, 1]: ``[1, N, 4]``.

    ssd.pytorch's ``PriorBox`` with ``clip=True`` (``clamp_(0, 1)`` on its ``[cx, cy, w, h]`` rows) and
    GluonCV's ``SSDAnchorGenerator(clip=True)`` do this: an anchor wider or taller than the image keeps its
    centre and becomes as wide or tall as the image; every other anchor is unchanged. MultiBoxPrior's own
    ``clip`` cuts the corners at the border instead, which also shrinks and moves every anchor that merely
    crosses it, so it cannot reproduce those anchors.
    """
    corners = mx.sym.reshape(anchors, shape=(0, -1, 2, 2), name=f"{name}_corners")  # [1, N, tl|br, x|y]
    centre = mx.sym.mean(corners, axis=2, name=f"{name}_centre")  # [1, N, 2]
    bottom_right = mx.sym.slice_axis(anchors, axis=2, begin=2, end=4, name=f"{name}_bottom_right")
    half = mx.sym.elemwise_sub(bottom_right, centre, name=f"{name}_half_size")  # [1, N, 2]: (w/2, h/2)
    centre = mx.sym.clip(centre, 0.0, 1.0, name=f"{name}_centre_clamped")
    half = mx.sym.clip(half, 0.0, 0.5, name=f"{name}_half_size_clamped")  # w, h in [0, 1]
    return mx.sym.concat(mx.sym.elemwise_sub(centre, half, name=f"{name}_top_left"),
                         mx.sym.elemwise_add(centre, half, name=f"{name}_bottom_right_clamped"),
                         dim=2, name=name)


def multibox_layer(from_layers: Sequence[mx.sym.Symbol], num_classes: int, sizes: Sequence = (.2, .95),
                   ratios: Sequence = (1,), normalization: int | Sequence[int] = -1,
                   num_channels: Sequence[int] = (), clip: bool = False, interm_layer: int = 0,
                   steps: Sequence[float] = (), anchor_clip: bool = False) -> list[mx.sym.Symbol]:
    """Location and class prediction heads plus anchors for every feature map.

    Parameters
    ----------
    from_layers : feature maps from :func:`multi_layer_feature`, each ``[B, ch_k, H_k, W_k]``.
    num_classes : object classes without background (background becomes class 0).
    sizes : ``[[min, max], ...]`` per layer, or one flat ``[min, max]`` range spread over the layers.
    ratios : ``[r1, r2, ...]`` for all layers, or one list per layer.
    normalization : per-layer (or one for all) initial L2-norm scale; ``-1`` disables it.
        A normalised layer gets ``L2Normalization(mode='channel')`` times a learnable scale
        ``{name}_scale`` of shape ``[1, ch_k, 1, 1]`` (initialised to the value, wd_mult 0.1).
    num_channels : channel count of each layer, aligned with ``from_layers`` (the ``num_filters``
        list of the config); only read for normalised layers, whose scale shape needs it, and
        read per layer, so any layer may be the normalised one.
    clip : clip anchors to the image (MultiBoxPrior's ``clip``: corners cut at the border).
    interm_layer : if > 0, a 3x3 conv + ReLU with this many filters before the heads.
    steps : per-layer anchor step (normalised to the image); empty = ``1 / feature size``.
    anchor_clip : clamp each anchor's centre form ``(cx, cy, w, h)`` to [0, 1]
        (:func:`clamp_anchor_centre_form`: ssd.pytorch's ``PriorBox(clip=True)``).

    Returns
    -------
    ``[loc_preds, cls_preds, anchor_boxes]``: ``multibox_loc_pred`` ``[B, N*4]``,
    ``multibox_cls_pred`` ``[B, C+1, N]`` and ``multibox_anchors`` ``[1, N, 4]``
    (corner format, normalised). Anchors are ordered layer by layer, then row-major over
    positions, then anchor index, matching the flattened heads.
    """
    num_layers = len(from_layers)
    if num_layers == 0:
        raise ValueError("from_layers must not be empty")
    if num_classes <= 0:
        raise ValueError(f"num_classes must be positive, got {num_classes}")
    if not ratios:
        raise ValueError("ratios must not be empty")
    if not isinstance(ratios[0], (list, tuple)):
        ratios = [list(ratios)] * num_layers
    sizes = _per_layer_sizes(sizes, num_layers)
    normalization = ([normalization] * num_layers if isinstance(normalization, (int, float))
                     else list(normalization))
    if steps and len(steps) != num_layers:
        raise ValueError("provide steps for all layers or leave them empty")
    for name, values in (("ratios", ratios), ("sizes", sizes), ("normalization", normalization)):
        if len(values) != num_layers:
            raise ValueError(f"{name} has {len(values)} entries for {num_layers} layers")

    loc_pred_layers, cls_pred_layers, anchor_layers = [], [], []
    num_classes += 1  # background is label 0
    for k, from_layer in enumerate(from_layers):
        from_name = from_layer.name
        if normalization[k] > 0:
            if k >= len(num_channels) or num_channels[k] <= 0:
                raise ValueError(f"layer {from_name} is normalised but its channel count is not given")
            from_layer = mx.sym.L2Normalization(data=from_layer, mode="channel", name=f"{from_name}_norm")
            scale = mx.sym.Variable(name=f"{from_name}_scale", shape=(1, num_channels[k], 1, 1),
                                    init=mx.init.Constant(normalization[k]), attr={"__wd_mult__": "0.1"})
            from_layer = mx.sym.broadcast_mul(lhs=scale, rhs=from_layer)
        if interm_layer > 0:
            from_layer = mx.sym.Convolution(data=from_layer, kernel=(3, 3), stride=(1, 1), pad=(1, 1),
                                            num_filter=interm_layer, name=f"{from_name}_inter_conv")
            from_layer = mx.sym.Activation(data=from_layer, act_type="relu", name=f"{from_name}_inter_relu")

        size, ratio = sizes[k], ratios[k]
        if not size or not ratio:
            raise ValueError(f"layer {from_name} needs at least one size and one ratio")
        num_anchors = len(size) - 1 + len(ratio)

        # heads: [B, A*4, H, W] / [B, A*(C+1), H, W] -> channels-last -> flattened per image
        for kind, num_outputs, collected in (("loc", num_anchors * 4, loc_pred_layers),
                                             ("cls", num_anchors * num_classes, cls_pred_layers)):
            bias = mx.sym.Variable(name=f"{from_name}_{kind}_pred_conv_bias",
                                   init=mx.init.Constant(0.0), attr={"__lr_mult__": "2.0"})
            pred = mx.sym.Convolution(data=from_layer, bias=bias, kernel=(3, 3), stride=(1, 1), pad=(1, 1),
                                      num_filter=num_outputs, name=f"{from_name}_{kind}_pred_conv")
            pred = mx.sym.transpose(pred, axes=(0, 2, 3, 1))
            collected.append(mx.sym.Flatten(data=pred))

        step = (steps[k], steps[k]) if steps else (-1.0, -1.0)
        anchors = mx.sym.contrib.MultiBoxPrior(from_layer, sizes=_format_tuple(size),
                                               ratios=_format_tuple(ratio), clip=clip, steps=step,
                                               name=f"{from_name}_anchors")
        if anchor_clip:
            anchors = clamp_anchor_centre_form(anchors, f"{from_name}_anchors_clamped")
        anchor_layers.append(mx.sym.Flatten(data=anchors))

    loc_preds = mx.sym.Concat(*loc_pred_layers, num_args=num_layers, dim=1, name="multibox_loc_pred")
    cls_preds = mx.sym.Concat(*cls_pred_layers, num_args=num_layers, dim=1)
    cls_preds = mx.sym.Reshape(data=cls_preds, shape=(0, -1, num_classes))
    cls_preds = mx.sym.transpose(cls_preds, axes=(0, 2, 1), name="multibox_cls_pred")
    anchor_boxes = mx.sym.Concat(*anchor_layers, num_args=num_layers, dim=1)
    anchor_boxes = mx.sym.Reshape(data=anchor_boxes, shape=(0, -1, 4), name="multibox_anchors")
    return [loc_preds, cls_preds, anchor_boxes]
