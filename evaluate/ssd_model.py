"""An SSD checkpoint made ready for inference: its test graph and weights (evaluate.py, demo.py, tools/deploy.py).

The test graph is rebuilt from the network name with the checkpoint's NMS
settings (and the anchors of a converted model, kept in its run config), or
read from the JSON tools/deploy.py wrote; a class count that does not fit the
weights is a one-line error.
"""
from __future__ import annotations

import os

from config.cpu import require_bfloat16
from config.errors import UserError
from config.run_config import load_run_config
from evaluate.checkpoint import check_params_fit, load_checkpoint
from symbol.precision import to_bfloat16
from symbol.symbol_factory import get_symbol

# the keys of SSDConfig.graph_overrides: get_symbol keywords that replace the network preset's
GRAPH_OVERRIDE_KEYS = ("sizes", "ratios", "steps", "anchor_clip", "clip_detections")


def model_prefix(prefix: str, network: str, data_shape: int) -> str:
    """The original's rule: a prefix ending in '_' gets ``<network>_<data_shape>`` appended."""
    return f"{prefix}{network}_{data_shape}" if prefix.endswith("_") else prefix


def deploy_prefix(prefix: str) -> str:
    """Where ``tools/deploy.py`` writes the deployed model of ``prefix``."""
    directory, base = os.path.split(prefix)
    return os.path.join(directory, f"deploy_{base}")


def saved_graph_overrides(prefix: str, data_shape: int) -> dict:
    """The graph settings saved in the run config beside ``prefix`` (``SSDConfig.graph_overrides``), or ``{}``.

    A converted model (tools/convert_weights.py) keeps its own toolkit's anchors and box decoding
    this way; a model trained here has none and uses the network's preset. Those anchors are for the
    run config's data shape: another ``data_shape`` is a one-line error.
    """
    run = load_run_config(prefix)
    overrides = getattr(run, "graph_overrides", None) or {}
    if overrides and data_shape != run.data_shape:
        raise UserError(f"--data-shape {data_shape}: {prefix}-ssd.json holds anchors for data shape {run.data_shape}")
    unknown = sorted(set(overrides) - set(GRAPH_OVERRIDE_KEYS))
    if unknown:
        raise UserError(f"{prefix}-ssd.json: unknown graph_overrides key {unknown[0]!r} "
                        f"(known: {', '.join(GRAPH_OVERRIDE_KEYS)})")
    return dict(overrides)


def load_test_model(network: str, prefix: str, epoch: int, data_shape: int, num_classes: int,
                    nms_thresh: float = 0.45, force_suppress: bool = False, nms_topk: int = 400,
                    deploy: bool = False, dtype: str = "float32") -> tuple:
    """(test symbol, arg_params, aux_params) for a checkpoint, or its deployed copy.

    With ``deploy`` the symbol is the JSON written by tools/deploy.py (no loss
    layers); otherwise the test graph is rebuilt from ``network``, with the graph
    settings of the run config beside ``prefix`` if it has any (:func:`saved_graph_overrides`),
    and the training checkpoint's weights are loaded into it. A class count that does
    not fit the weights is a one-line error. ``dtype`` 'bfloat16' converts the graph to bfloat16
    convolutions with float32 weights (:func:`symbol.precision.to_bfloat16`; needs an AVX-512 BF16 CPU).
    """
    model_prefix = deploy_prefix(prefix)
    if getattr(load_run_config(prefix), "prebuilt_graph", False):
        # a saved inference graph (tools/quantize.py): rebuilding it from ``network`` would lose the INT8 ops
        if deploy:
            raise UserError(f"--deploy: {prefix} is itself a saved inference graph; drop --deploy")
        symbol, args, auxs = load_checkpoint(prefix, epoch, flag="--prefix/--epoch")
        if symbol is None:
            raise UserError(f"{prefix}-symbol.json: not found; {prefix}-ssd.json says the graph is saved there")
    elif deploy:
        if not os.path.isfile(f"{model_prefix}-symbol.json"):
            raise UserError(f"--deploy: {model_prefix}-symbol.json not found; run tools/deploy.py first")
        symbol, args, auxs = load_checkpoint(model_prefix, epoch, flag="--prefix/--epoch")
    else:
        _, args, auxs = load_checkpoint(prefix, epoch, flag="--prefix/--epoch")
        symbol = get_symbol(network, data_shape, num_classes=num_classes, nms_thresh=nms_thresh,
                            force_suppress=force_suppress, nms_topk=nms_topk,
                            **saved_graph_overrides(prefix, data_shape))
    source = f"{model_prefix if deploy else prefix}-{epoch:04d}.params"
    check_params_fit(symbol, args, auxs, {"data": (1, 3, data_shape, data_shape)}, source, num_classes,
                     require_all=True)
    if dtype == "bfloat16":
        require_bfloat16()
        symbol = to_bfloat16(symbol, "ssd", ["data"])
    elif dtype != "float32":
        raise UserError(f"--dtype {dtype}: choose float32 or bfloat16")
    return symbol, args, auxs
