"""Mixed precision graphs: bfloat16 compute with float32 master weights, for CPUs with AVX512_BF16.

:func:`to_bfloat16` rewrites an SSD or Faster R-CNN graph (training or test) with mxnet's AMP
(``mxnet.contrib.amp.convert_symbol``): what AMP's bfloat16 lists allow (``Convolution``,
``FullyConnected``, and the type-neutral ops between them: ``BatchNorm``, ``Pooling``, ReLU,
``Concat``) runs in bfloat16; everything else gets ``amp_cast`` back to float32 in front of it.
The variables (weights, BatchNorm statistics, inputs) stay float32: each forward casts the float32
weights to bfloat16 (``amp_cast``, whose backward casts the gradient back), so the optimizer updates
float32 weights with float32 state and checkpoints hold float32 arrays, as in a float32 run.

Kept in float32 on purpose (their inputs are cast to float32; see :data:`FLOAT32_OPS`):

* ``MultiBoxPrior``: its type inference accepts float32 only (AMP fails with
  "Unsupported data type 12" without this), and the anchors are the box coordinates every loss
  and detection is measured against;
* ``MultiBoxTarget`` and ``MultiBoxDetection``: anchor matching, box encoding, decoding and NMS;
  a bfloat16 coordinate has 8 significant bits (steps of 1/256 near 1.0, 2 pixels at 512);
* Faster R-CNN's ``MultiProposal``/``Proposal``, ``ROIPooling``/``ROIAlign`` and the Python op
  ``proposal_target`` (``Custom``), for the same reason;
* the loss heads (``SoftmaxOutput``, ``softmax``, ``MakeLoss``, ``smooth_l1``), which AMP's own
  lists keep in float32 already: every output of a converted graph is float32.

``Module`` binds a graph with the dtypes of its data and labels only; the weights of a converted
graph reach their first consumer through an ``amp_cast``, from which mxnet cannot infer a type
("InferType pass cannot decide dtypes"). :func:`to_bfloat16` therefore tells AMP which inputs are
data; AMP then marks every other variable float32 (``__dtype__``, the attribute
``mx.sym.Variable(dtype=...)`` sets), and the plain ``Module(...).bind(data_shapes, label_shapes)``
works.

``Symbol.save``/``tojson`` drop the casts (mxnet's ``remove_amp_cast=True``), so a checkpoint's
``-symbol.json`` is the float32 graph plus those ``__dtype__`` marks; :func:`float32_graph` drops
the marks as well and gives back the graph :func:`to_bfloat16` started from.
"""
from __future__ import annotations

import json
from collections.abc import Sequence

import mxnet as mx
import numpy as np

from config.errors import UserError

# mxnet's type code of float32, the value mx.sym.Variable(dtype='float32') stores in __dtype__
FLOAT32_CODE = "0"
DTYPE_ATTR = "__dtype__"
# how mxnet's numpy side spells bfloat16 (mxnet.contrib.amp.amp.bfloat16)
BFLOAT16 = np.dtype([("bfloat16", np.uint16)])

SSD_FLOAT32_OPS = (
    "_contrib_MultiBoxPrior", "_contrib_MultiBoxTarget", "_contrib_MultiBoxDetection",
    "SoftmaxOutput", "softmax", "MakeLoss", "smooth_l1",
)
RCNN_FLOAT32_OPS = (
    "_contrib_MultiProposal", "_contrib_Proposal", "ROIPooling", "_contrib_ROIAlign", "Custom",
    "SoftmaxOutput", "softmax", "MakeLoss", "smooth_l1",
)
# family -> the operators whose nodes stay float32 (AMP's excluded_sym_names)
FLOAT32_OPS: dict[str, tuple[str, ...]] = {"ssd": SSD_FLOAT32_OPS, "rcnn": RCNN_FLOAT32_OPS}
# family -> the inputs Module feeds (symbol_builder's and rcnn_head's data and label names)
DATA_NAMES: dict[str, tuple[str, ...]] = {
    "ssd": ("data", "label"),
    "rcnn": ("data", "im_info", "gt_boxes", "label", "bbox_target", "bbox_weight"),
}


def _nodes(symbol: mx.sym.Symbol) -> list[dict]:
    """The graph's nodes as mxnet serialises them, casts included."""
    return json.loads(symbol.tojson(remove_amp_cast=False))["nodes"]


def float32_node_names(symbol: mx.sym.Symbol, family: str = "ssd") -> list[str]:
    """Names of the nodes of ``symbol`` that :func:`to_bfloat16` keeps float32 by their operator."""
    if family not in FLOAT32_OPS:
        raise UserError(f"precision: unknown graph family {family!r}; choose one of {', '.join(FLOAT32_OPS)}")
    ops = set(FLOAT32_OPS[family])
    return [node["name"] for node in _nodes(symbol) if node["op"] in ops]


def to_bfloat16(symbol: mx.sym.Symbol, family: str = "ssd", data_names: Sequence[str] | None = None
                ) -> mx.sym.Symbol:
    """``symbol`` with bfloat16 compute where AMP allows it; every variable and output stays float32.

    ``family`` (``'ssd'`` or ``'rcnn'``) picks the operators kept float32 (:data:`FLOAT32_OPS`).
    ``data_names`` are the inputs Module feeds (data and labels; default: the family's
    :data:`DATA_NAMES` that ``symbol`` takes); every other variable is a parameter, which AMP marks
    float32 (``__dtype__``) so that Module can bind. The inputs, outputs and their shapes are those
    of ``symbol``, which is not modified; bind the result with ``mx.mod.Module`` exactly as
    ``symbol``, with float32 data and labels. Converting runs on any CPU; running the result needs
    oneDNN's bfloat16 kernels (:func:`config.cpu.require_bfloat16`).
    """
    from mxnet.contrib import amp

    excluded = float32_node_names(symbol, family)
    inputs = symbol.list_inputs()
    if data_names is None:
        data_names = [name for name in DATA_NAMES[family] if name in inputs]
    unknown = [name for name in data_names if name not in inputs]
    if unknown:
        raise UserError(f"precision: the graph has no input {', '.join(unknown)}; its inputs: {', '.join(inputs)}")
    # with data_names given, AMP marks the other variables with their type (as amp.convert_model does)
    return amp.convert_symbol(symbol, target_dtype="bfloat16", excluded_sym_names=excluded,
                              data_names=list(data_names), cast_optional_params=False)


def float32_graph(symbol: mx.sym.Symbol) -> mx.sym.Symbol:
    """The float32 graph of a :func:`to_bfloat16` result: casts and float32 ``__dtype__`` marks removed.

    Variables marked with another type keep their mark. Applied to a float32 graph without marks
    it returns an equal graph.
    """
    graph = json.loads(symbol.tojson())  # remove_amp_cast=True
    for node in graph["nodes"]:
        attrs = node.get("attrs")
        if node["op"] == "null" and attrs and attrs.get(DTYPE_ATTR) == FLOAT32_CODE:
            del attrs[DTYPE_ATTR]
            if not attrs:
                del node["attrs"]
    return mx.sym.load_json(json.dumps(graph))


def bfloat16_outputs(symbol: mx.sym.Symbol) -> list[str]:
    """Internal outputs of ``symbol`` that are bfloat16 when every variable is float32 (type inference only)."""
    internals = symbol.get_internals()
    types = {name: np.float32 for name in symbol.list_arguments()}
    _, out_types, _ = internals.infer_type(**types)
    return [name for name, dtype in zip(internals.list_outputs(), out_types) if np.dtype(dtype) == BFLOAT16]
