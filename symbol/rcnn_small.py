"""A small Faster R-CNN that trains from scratch on a 2-core CPU in minutes.

A narrow VGG-like backbone (filters 16-32-64-128,
four 2x2 pools -> stride 16) with the shared RPN / ROI head
(``symbol/rcnn_head.py``), a 128-filter RPN conv and a 256-unit fc6/fc7 head
without dropout. Meant for synthetic data at a short side of ~300 pixels
(the ``faster_rcnn_small`` defaults in ``symbol/registry.py``); at
300x400 the convolutions cost about 1 GMAC per image. Receptive field: 134
pixels at ``relu5_2``, 166 after the RPN conv.

:data:`SMALL` is the backbone; ``get_small_train`` / ``get_small_test`` take the original arguments
(see ``rcnn_vgg``).

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import mxnet as mx

from symbol.rcnn_head import RCNNBackbone, original_builders
from symbol.rcnn_vgg import fc_top_feature, vgg_conv_feature

SMALL_GROUPS = ((1, 16), (1, 32), (2, 64), (2, 128), (2, 128))
SMALL_RPN_FILTERS = 128
SMALL_FC_HIDDEN = 256


def get_small_feature(data: mx.sym.Symbol) -> mx.sym.Symbol:
    """``conv1_1`` .. ``relu5_2``: [B, 128, H/16, W/16]."""
    return vgg_conv_feature(data, SMALL_GROUPS)


def get_small_top_feature(roi_pool: mx.sym.Symbol) -> mx.sym.Symbol:
    """``fc6`` / ``fc7`` with 256 units, no dropout: [N, 256]."""
    return fc_top_feature(roi_pool, num_hidden=SMALL_FC_HIDDEN, dropout=0.0)


SMALL = RCNNBackbone(get_small_feature, get_small_top_feature, rpn_num_filter=SMALL_RPN_FILTERS)
get_small_train, get_small_test = original_builders(SMALL)
