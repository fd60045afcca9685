"""A trained SSD in ONNX, detection included: ``data [B, 3, S, S]`` -> ``detections [B, K, 6]``.

Command line: ``tools/export_onnx.py``; evaluate.py and demo.py run the model with ``--onnx``.

The backbone and the heads (everything up to ``multibox_loc_pred`` ``[B, 4N]`` and ``cls_prob``
``[B, C+1, N]``) go through mxnet's own converter (``mx.onnx.export_model``). The rest of the
test graph, ``MultiBoxDetection``, has no ONNX converter, so it is written here with
``onnx.helper`` as mxnet 1.9's ``multibox_detection.cc`` computes it:

1. the anchors (``MultiBoxPrior``, which depends only on the input size) become a constant ``[N, 4]``;
2. per anchor the best non-background class (argmax over classes 1..C, the first on ties) and its
   score; scores below 0.01 are dropped;
3. boxes decoded with the variances (0.1, 0.1, 0.2, 0.2) and clipped to [0, 1];
4. the ``nms_topk`` best rows by score (all rows when ``nms_topk`` <= 0);
5. ONNX ``NonMaxSuppression`` per class (across classes with ``force_suppress``) at ``nms_thresh``.

Output: ``detections [B, K, 6]`` rows ``[cls, score, xmin, ymin, xmax, ymax]`` normalised, K =
min(nms_topk, N), sorted by score; rows removed by the threshold or NMS have ``cls = -1`` (those under
the threshold also ``score = -1``). MXNet's output has N rows in the same layout; the kept rows
(``cls >= 0``) are the same set (tests/tools/test_onnx_export.py). Class names, the input size, the
preprocessing and the NMS settings travel in the model's metadata (``metadata_props``).
"""
from __future__ import annotations

import json
import os

import numpy as np

import config  # noqa: F401  (thread defaults before mxnet loads)
from config.errors import UserError

SCORE_THRESHOLD = 0.01  # MultiBoxDetection's ``threshold`` default, which the test graph keeps
METADATA_KEY = "mxdet"  # metadata_props key of the JSON settings evaluate.py / demo.py read
PREPROCESSING = ("RGB, resized to data_shape x data_shape (aspect not kept), float32 (pixel - mean_pixels) / "
                 "std_pixels, NCHW")


def _anchors(symbol, arg_params: dict, aux_params: dict, data_shape: int) -> np.ndarray:
    """The ``[N, 4]`` corner anchors of the graph's ``multibox_anchors`` (they depend on the input size only)."""
    import mxnet as mx

    anchors = symbol.get_internals()["multibox_anchors_output"]
    executor = anchors.simple_bind(mx.cpu(), data=(1, 3, data_shape, data_shape), grad_req="null")
    for name, array in executor.arg_dict.items():
        if name in arg_params:
            arg_params[name].copyto(array)
    for name, array in executor.aux_dict.items():
        if name in aux_params:
            aux_params[name].copyto(array)
    return executor.forward(is_train=False)[0].asnumpy()[0].astype(np.float32)


def check_detection_graph(symbol) -> dict:
    """The ``MultiBoxDetection`` node's attributes, after checking that it ends the graph and reads
    ``cls_prob``, ``multibox_loc_pred`` and ``multibox_anchors`` (what the ONNX decoding replaces)."""
    graph = json.loads(symbol.tojson())
    nodes = graph["nodes"]
    last = nodes[graph["heads"][0][0]]
    if last["op"] != "_contrib_MultiBoxDetection":
        raise UserError(f"the test graph ends in {last['op']}, not MultiBoxDetection: nothing to export")
    inputs = [nodes[i]["name"] for i, *_ in last["inputs"]]
    if inputs != ["cls_prob", "multibox_loc_pred", "multibox_anchors"]:
        raise UserError(f"MultiBoxDetection reads {inputs}; the exporter expects cls_prob, multibox_loc_pred, "
                        "multibox_anchors")
    return last.get("attrs", {})


def _export_heads(symbol, arg_params: dict, aux_params: dict, data_shape: int, network: str, path: str):
    """mx2onnx's model of ``[multibox_loc_pred, cls_prob]`` with a dynamic batch; an op it cannot
    convert is a one-line error naming the op."""
    import mxnet as mx
    import onnx

    internals = symbol.get_internals()
    heads = mx.sym.Group([internals["multibox_loc_pred_output"], internals["cls_prob_output"]])
    wanted = set(heads.list_arguments()) | set(heads.list_auxiliary_states())
    params = {k: v for k, v in {**arg_params, **aux_params}.items() if k in wanted}
    # BatchNorm with fix_gamma (mxnet's default) computes with a scale of 1 whatever the saved gamma holds, and
    # weight decay moves that saved value during training; mx2onnx 1.9.1 exports the saved value
    nodes = json.loads(heads.tojson())["nodes"]
    for node in nodes:
        if node["op"] == "BatchNorm" and node.get("attrs", {}).get("fix_gamma", "True").lower() in ("true", "1"):
            gamma = nodes[node["inputs"][1][0]]["name"]
            params[gamma] = mx.nd.ones_like(params[gamma])
    try:
        mx.onnx.export_model(heads, params, in_shapes=[(1, 3, data_shape, data_shape)], in_types=[np.float32],
                             onnx_file_path=path, dynamic=True,
                             dynamic_input_shapes=[(None, 3, data_shape, data_shape)])
    except AttributeError as err:  # mx2onnx: "No conversion function registered for op type X yet."
        message = str(err)
        if "No conversion function registered for op type" not in message:
            raise
        op = message.split("op type", 1)[1].split()[0]
        raise UserError(f"--network {network}: cannot be exported to ONNX: mx2onnx 1.9.1 has no converter for "
                        f"the op {op}") from None
    except NotImplementedError as err:  # a converter for only some settings: "<op> operator with ... not yet"
        message = " ".join(str(err).split())
        raise UserError(f"--network {network}: cannot be exported to ONNX: mx2onnx 1.9.1 cannot convert the op "
                        f"{message.split()[0]} ({message})") from None
    return onnx.load(path)


def _const(name: str, value, dtype=np.float32):
    from onnx import numpy_helper

    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def detection_nodes(num_classes: int, anchors: np.ndarray, variances, nms_thresh: float, nms_topk: int,
                    force_suppress: bool, loc: str = "multibox_loc_pred", cls_prob: str = "cls_prob",
                    out: str = "detections", clip: bool = True) -> tuple[list, list]:
    """``(nodes, initializers)`` computing ``out [B, K, 6]`` from ``loc [B, 4N]`` and ``cls_prob [B, C+1, N]``.

    Needs opset 18 or later (ReduceMax takes its axes as an input; mx2onnx 1.9.1 with onnx 1.15 writes
    opset 20). The arithmetic follows multibox_detection.cc operation by operation (``ox = px * vx * aw + ax``,
    ``ow = exp(pw * vw) * aw / 2``) so that boxes agree with mxnet's to float32 rounding. ``clip`` is the
    node's ``clip`` attribute: decoded boxes cut to [0, 1] before NMS (converted peer models turn it off).
    """
    from onnx import TensorProto, helper

    num_anchors = anchors.shape[0]
    skip_nms = not 0 < nms_thresh <= 1  # multibox_detection.cc then skips the sort, top-k and NMS
    keep_k = num_anchors if nms_topk <= 0 or skip_nms else min(nms_topk, num_anchors)
    left, top, right, bottom = (anchors[:, i] for i in range(4))
    # mxnet computes the anchor width and centre in float32 from the corners
    anchor_wh = np.stack([right - left, bottom - top], axis=1).astype(np.float32)[None]  # [1, N, 2]
    anchor_ctr = np.stack([(left + right) / np.float32(2), (top + bottom) / np.float32(2)], axis=1)[None]
    inits = [
        _const("det_anchor_wh", anchor_wh), _const("det_anchor_ctr", anchor_ctr.astype(np.float32)),
        _const("det_var_xy", np.array(variances[:2], np.float32).reshape(1, 1, 2)),
        _const("det_var_wh", np.array(variances[2:], np.float32).reshape(1, 1, 2)),
        _const("det_two", 2.0), _const("det_zero", 0.0), _const("det_one", 1.0), _const("det_minus_one", -1.0),
        _const("det_score_thresh", SCORE_THRESHOLD),
        _const("det_loc_shape", [0, -1, 4], np.int64),
        _const("det_s0", [0], np.int64), _const("det_s2", [2], np.int64), _const("det_s4", [4], np.int64),
        _const("det_s1", [1], np.int64), _const("det_sc", [num_classes + 1], np.int64),
        _const("det_axis1", [1], np.int64), _const("det_axis2", [2], np.int64),
        _const("det_k", [keep_k], np.int64), _const("det_tile4", [1, 1, 4], np.int64),
        _const("det_max_out", [keep_k], np.int64), _const("det_iou", [nms_thresh], np.float32),
        _const("det_nms_score", [0.0], np.float32),  # kept scores are >= 0.01, dropped ones -1
        _const("det_classes", np.arange(num_classes).reshape(1, num_classes, 1), np.int64),
        _const("det_sel_cols", [0, 2], np.int64),
    ]
    n = helper.make_node
    nodes = [
        # box decoding: [B, 4N] -> [B, N, 4] (px, py, pw, ph) -> corners, clipped
        n("Reshape", [loc, "det_loc_shape"], ["det_loc"]),
        n("Slice", ["det_loc", "det_s0", "det_s2", "det_axis2"], ["det_pxy"]),
        n("Slice", ["det_loc", "det_s2", "det_s4", "det_axis2"], ["det_pwh"]),
        n("Mul", ["det_pxy", "det_var_xy"], ["det_pxy_v"]),
        n("Mul", ["det_pxy_v", "det_anchor_wh"], ["det_dxy"]),
        n("Add", ["det_dxy", "det_anchor_ctr"], ["det_ctr"]),
        n("Mul", ["det_pwh", "det_var_wh"], ["det_pwh_v"]),
        n("Exp", ["det_pwh_v"], ["det_exp"]),
        n("Mul", ["det_exp", "det_anchor_wh"], ["det_wh"]),
        n("Div", ["det_wh", "det_two"], ["det_half"]),
        n("Sub", ["det_ctr", "det_half"], ["det_min_raw"]),
        n("Add", ["det_ctr", "det_half"], ["det_max_raw"]),
        n("Concat", ["det_min_raw", "det_max_raw"], ["det_boxes_raw"], axis=2),
        n("Clip", ["det_boxes_raw", "det_zero", "det_one"], ["det_boxes"]) if clip
        else n("Identity", ["det_boxes_raw"], ["det_boxes"]),  # [B, N, 4]
        # best non-background class and its score; below the threshold: dropped (score -1)
        n("Slice", [cls_prob, "det_s1", "det_sc", "det_axis1"], ["det_fg"]),  # [B, C, N]
        n("ReduceMax", ["det_fg", "det_axis1"], ["det_score"], keepdims=0),  # [B, N]
        n("ArgMax", ["det_fg"], ["det_cls"], axis=1, keepdims=0),  # [B, N] int64, first maximum on ties
        n("Less", ["det_score", "det_score_thresh"], ["det_low"]),
        n("Where", ["det_low", "det_minus_one", "det_score"], ["det_masked"]),
        # the nms_topk best rows, sorted by score (the rows MultiBoxDetection keeps before NMS)
        n("TopK", ["det_masked", "det_k"], ["det_top_score", "det_top_idx"], axis=1, largest=1, sorted=1),
        n("GatherElements", ["det_cls", "det_top_idx"], ["det_top_cls"], axis=1),  # [B, K]
        n("Unsqueeze", ["det_top_idx", "det_axis2"], ["det_top_idx3"]),
        n("Tile", ["det_top_idx3", "det_tile4"], ["det_top_idx4"]),
        n("GatherElements", ["det_boxes", "det_top_idx4"], ["det_top_boxes"], axis=1),  # [B, K, 4]
        n("Unsqueeze", ["det_top_score", "det_axis1"], ["det_top_score3"]),  # [B, 1, K]
    ]
    if force_suppress:
        nms_scores = "det_top_score3"
    else:
        # one score row per class, -1 (never selected) where the anchor's class differs: NMS per class
        nodes += [
            n("Unsqueeze", ["det_top_cls", "det_axis1"], ["det_top_cls3"]),
            n("Equal", ["det_top_cls3", "det_classes"], ["det_is_class"]),  # [B, C, K]
            n("Where", ["det_is_class", "det_top_score3", "det_minus_one"], ["det_class_scores"]),
        ]
        nms_scores = "det_class_scores"
    nodes += [
        n("NonMaxSuppression", ["det_top_boxes", nms_scores, "det_max_out", "det_iou", "det_nms_score"],
          ["det_selected"], center_point_box=0),  # [M, 3]: batch, class, row
        n("Gather", ["det_selected", "det_sel_cols"], ["det_sel_rows"], axis=1),  # [M, 2]: batch, row
        n("Shape", ["det_selected"], ["det_sel_shape"]),
        n("Slice", ["det_sel_shape", "det_s0", "det_s1", "det_s0"], ["det_num_sel"]),
        n("ConstantOfShape", ["det_num_sel"], ["det_sel_ones"], value=helper.make_tensor("one", TensorProto.FLOAT,
                                                                                          [1], [1.0])),
        n("Mul", ["det_top_score", "det_zero"], ["det_zeros"]),  # [B, K] zeros of the dynamic shape
        n("ScatterND", ["det_zeros", "det_sel_rows", "det_sel_ones"], ["det_keep"]),
        n("Greater", ["det_keep", "det_zero"], ["det_is_kept"]),
        n("Cast", ["det_top_cls"], ["det_top_cls_f"], to=TensorProto.FLOAT),
        n("Where", ["det_is_kept", "det_top_cls_f", "det_minus_one"], ["det_out_cls"]),
        n("Unsqueeze", ["det_out_cls", "det_axis2"], ["det_out_cls3"]),
        n("Unsqueeze", ["det_top_score", "det_axis2"], ["det_out_score3"]),
        n("Concat", ["det_out_cls3", "det_out_score3", "det_top_boxes"], [out], axis=2),  # [B, K, 6]
    ]
    if skip_nms:  # every row over the score threshold stays
        nodes = [node for node in nodes if node.output[0] not in (
            "det_selected", "det_sel_rows", "det_sel_shape", "det_num_sel", "det_sel_ones", "det_keep", "det_is_kept")]
        nodes.insert(-4, n("Greater", ["det_top_score", "det_zero"], ["det_is_kept"]))
    return nodes, inits


def onnx_model(symbol, arg_params: dict, aux_params: dict, run, source: str):
    """The ``onnx.ModelProto`` of a test graph with its weights and its run's settings (an
    :class:`~config.train_config.SSDConfig`) in the metadata; ``source`` names the weights there."""
    import tempfile

    import onnx
    from onnx import TensorProto, helper

    from symbol.symbol_builder import VARIANCES

    attrs = check_detection_graph(symbol)
    anchors = _anchors(symbol, arg_params, aux_params, run.data_shape)
    with tempfile.TemporaryDirectory() as work:  # mx2onnx writes its model to a file
        model = _export_heads(symbol, arg_params, aux_params, run.data_shape, run.network,
                              os.path.join(work, "heads.onnx"))
    graph = model.graph
    initializer_names = {init.name for init in graph.initializer}
    # mx2onnx lists every weight as a graph input too; the model takes only the image batch
    inputs = [value for value in graph.input if value.name not in initializer_names]
    del graph.input[:]
    graph.input.extend(inputs)
    nodes, inits = detection_nodes(run.num_classes, anchors, VARIANCES, run.nms_thresh, run.nms_topk,
                                   run.force_suppress, clip=str(attrs.get("clip", "True")).lower() in ("true", "1"))
    graph.node.extend(nodes)
    graph.initializer.extend(inits)
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("detections", TensorProto.FLOAT, ["batch", "rows", 6])])
    settings = {
        "network": run.network, "data_shape": run.data_shape, "num_classes": run.num_classes,
        "class_names": list(run.class_names) if run.class_names else None,
        "mean_pixels": list(run.mean_pixels), "std_pixels": list(run.std_pixels),
        "nms_thresh": run.nms_thresh, "nms_topk": run.nms_topk, "force_suppress": run.force_suppress,
        "label_width": run.label_width, "variances": list(VARIANCES), "score_threshold": SCORE_THRESHOLD,
        "source": source, "multibox_detection": attrs,
    }
    props = {METADATA_KEY: json.dumps(settings), "class_names": json.dumps(settings["class_names"]),
             "input": f"data [B, 3, {run.data_shape}, {run.data_shape}]", "preprocessing": PREPROCESSING,
             "mean_pixels": json.dumps(settings["mean_pixels"]), "std_pixels": json.dumps(settings["std_pixels"]),
             "output": "detections [B, K, 6]: cls, score, xmin, ymin, xmax, ymax (normalised); cls -1 = dropped"}
    del model.metadata_props[:]
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    model.producer_name = "mxdet tools/export_onnx.py"
    onnx.checker.check_model(model)
    return model


def export_onnx(prefix: str, epoch: int, out: str) -> str:
    """Write ``out``: the checkpoint's whole test graph in ONNX with its settings in the metadata."""
    import onnx

    from config.fileio import atomic_write
    from config.run_config import load_fp32_ssd_run
    from evaluate.ssd_model import load_test_model

    run = load_fp32_ssd_run(prefix, "tools/export_onnx.py")
    symbol, arg_params, aux_params = load_test_model(run.network, prefix, epoch, run.data_shape, run.num_classes,
                                                     run.nms_thresh, run.force_suppress, run.nms_topk)
    model = onnx_model(symbol, arg_params, aux_params, run, f"{prefix}-{epoch:04d}.params")
    atomic_write(out, lambda tmp: onnx.save(model, tmp))
    return out
