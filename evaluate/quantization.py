"""INT8 post-training quantization of a trained SSD with MKLDNN (example/ssd's ``quantization.py``).

:func:`quantize` (command line: ``tools/quantize.py``) writes ``<prefix>-quantized-symbol.json``,
``<prefix>-quantized-0000.params`` and ``<prefix>-quantized-ssd.json``: the run config of
the checkpoint with ``prebuilt_graph`` set, so that evaluate.py and demo.py load the saved (quantized)
graph instead of rebuilding the FP32 one from ``network``; its NMS settings are the checkpoint's, built into the graph.

The FP32 test graph goes through the ``MKLDNN_QUANTIZE`` subgraph backend (conv + BN + ReLU
fused), then ``mx.contrib.quantization.quantize_model``, then the backend again (the quantized
fused ops). The calibration modes are ``none`` (ranges computed at run time), ``naive`` (min/max
of each layer's output over the calibration batches, the default) and ``entropy``
(KL-divergence thresholds); the calibration batches are the record's first ones in order, so one
command gives one model. The first convolution, the prediction heads and everything from the
heads to ``MultiBoxDetection`` (transposes, flattens, the concats, softmax, the multibox ops)
stay FP32; :func:`excluded_layers` finds them in the graph, so every ``--network`` works.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os

import config  # noqa: F401  (thread defaults before mxnet loads)
from config.errors import UserError

CALIB_MODES = ("none", "naive", "entropy")
QUANTIZED_DTYPES = ("auto", "int8", "uint8")
# ops that are not convolutions but pass a quantized tensor on (what quantize_model may quantize)
CONV_OPS = ("Convolution", "_sg_mkldnn_conv")
QUANTIZED_SUFFIX = "-quantized"


def _graph_nodes(symbol) -> list[dict]:
    return json.loads(symbol.tojson())["nodes"]


def _inner_ops(node: dict) -> list[tuple[str, str]]:
    """``(op, name)`` of a node, or of the nodes fused into it (an ``_sg_mkldnn_*`` subgraph)."""
    if node.get("subgraphs"):
        return [(n["op"], n["name"]) for sub in node["subgraphs"] for n in sub["nodes"] if n["op"] != "null"]
    return [(node["op"], node["name"])]


def excluded_layers(fused) -> list[str]:
    """Names of the nodes of ``fused`` (a graph after ``get_backend_symbol('MKLDNN_QUANTIZE')``) that stay FP32.

    The layers the original example kept FP32, found in the graph so that any network works: the
    first convolution (the raw pixels need their full range), the loc/cls prediction
    convolutions (``*_pred_conv``: their outputs are the box offsets and class scores) and
    every node downstream of a head or of a ``MultiBoxPrior`` (transpose, Flatten, the concats,
    softmax, ``MultiBoxDetection``): they only move or decode the predictions.
    """
    nodes = _graph_nodes(fused)
    excluded: set[int] = set()
    first_conv = next((i for i, n in enumerate(nodes) if any(op == "Convolution" for op, _ in _inner_ops(n))), None)
    if first_conv is not None:
        excluded.add(first_conv)
    for i, node in enumerate(nodes):  # nodes are in topological order: inputs come first
        inner = _inner_ops(node)
        is_head = any(op == "Convolution" and name.endswith("_pred_conv") for op, name in inner)
        is_prior = any(op == "_contrib_MultiBoxPrior" for op, _ in inner)
        below_excluded = any(src in excluded and nodes[src]["op"] != "null" and src != first_conv
                             for src, *_ in node.get("inputs", []))
        if is_head or is_prior or below_excluded:
            excluded.add(i)
    return [nodes[i]["name"] for i in sorted(excluded)]


class _DataOnly:
    """A ``DetRecordIter`` seen without labels: quantize_model's calibration module binds what
    the iterator provides, and the test graph has no ``label`` input. Built lazily (mxnet's
    ``DataIter`` base class is imported by :func:`quantize`)."""

    @staticmethod
    def wrap(inner):
        import mxnet as mx

        class DataOnly(mx.io.DataIter):
            def __init__(self):
                super().__init__(inner.batch_size)

            @property
            def provide_data(self):
                return inner.provide_data

            @property
            def provide_label(self):
                return []

            def reset(self):
                inner.reset()

            def next(self):
                batch = inner.next()
                return mx.io.DataBatch(data=batch.data, label=None, pad=batch.pad)

        return DataOnly()


def quantize_graph(symbol, arg_params: dict, aux_params: dict, calib_data=None, calib_mode: str = "naive",
                   num_calib_examples: int = 0, quantized_dtype: str = "auto",
                   logger: logging.Logger | None = None) -> tuple:
    """``(int8 symbol, arg_params, aux_params)`` of an FP32 test graph; ``calib_data`` is an ``mx.io.DataIter``
    of ``data`` batches only (None with ``calib_mode='none'``).

    The graph goes through the ``MKLDNN_QUANTIZE`` backend (conv + BN + ReLU fused), ``quantize_model``
    with :func:`excluded_layers` kept FP32, and the backend again: ``quantize_model`` leaves
    quantize/requantize pairs between the quantized ops, which the second pass folds into the fused
    INT8 convolutions (what the original did).
    """
    import mxnet as mx
    from mxnet.contrib.quantization import quantize_model

    fused = symbol.get_backend_symbol("MKLDNN_QUANTIZE")
    qsym, qargs, qauxs = quantize_model(
        sym=fused, arg_params=arg_params, aux_params=aux_params, data_names=("data",), label_names=None,
        ctx=mx.cpu(), excluded_sym_names=excluded_layers(fused), calib_mode=calib_mode, calib_data=calib_data,
        num_calib_examples=num_calib_examples, quantized_dtype=quantized_dtype, logger=logger)
    return qsym.get_backend_symbol("MKLDNN_QUANTIZE"), qargs, qauxs


def quantize(prefix: str, epoch: int, calib_rec: str, calib_mode: str = "naive", num_calib_batches: int = 5,
             batch_size: int = 32, quantized_dtype: str = "auto", out_prefix: str | None = None,
             logger: logging.Logger | None = None) -> str:
    """Quantize checkpoint ``prefix-epoch`` and save it as ``out_prefix`` epoch 0; returns ``out_prefix``.

    The calibration images are the first ``num_calib_batches * batch_size`` of ``calib_rec``,
    preprocessed as the run config says (data shape, mean/std pixels): ``[batch_size, 3, S, S]``.
    """
    from config.augmentation import VALIDATION
    from config.run_config import load_fp32_ssd_run, save_run_config
    from dataset.iterator import DetRecordIter
    from evaluate.checkpoint import save_params
    from evaluate.ssd_model import load_test_model

    run = load_fp32_ssd_run(prefix, "tools/quantize.py")
    if calib_mode not in CALIB_MODES:
        raise UserError(f"--calib-mode {calib_mode}: expected one of {', '.join(CALIB_MODES)}")
    for flag, value in (("--num-calib-batches", num_calib_batches), ("--batch-size", batch_size)):
        if value <= 0:
            raise UserError(f"{flag} {value}: must be positive")
    if not os.path.isfile(calib_rec):
        raise UserError(f"--calib-rec {calib_rec}: file not found")
    out_prefix = out_prefix or prefix + QUANTIZED_SUFFIX
    symbol, arg_params, aux_params = load_test_model(
        run.network, prefix, epoch, run.data_shape, run.num_classes, run.nms_thresh, run.force_suppress, run.nms_topk)
    calib_data = None
    if calib_mode != "none":
        records = DetRecordIter(calib_rec, batch_size, (3, run.data_shape, run.data_shape),
                                mean_pixels=run.mean_pixels, std_pixels=run.std_pixels,
                                label_pad_width=run.label_width, **VALIDATION)
        calib_data = _DataOnly.wrap(records)
    qsym, qargs, qauxs = quantize_graph(symbol, arg_params, aux_params, calib_data, calib_mode,
                                        num_calib_batches * batch_size, quantized_dtype, logger)
    save_params(out_prefix, 0, qsym, qargs, qauxs)
    save_run_config(dataclasses.replace(run, prefix=out_prefix, prebuilt_graph=True))
    return out_prefix
