"""tools/export_onnx.py and ``evaluate.py`` / ``demo.py --onnx``: onnxruntime against FP32 MXNet.

Detections are compared as sets of kept rows (cls >= 0): the same boxes, equal classes, scores and
boxes within 1e-4. The one admitted difference is a near-tie at the ``nms_topk`` cut (two anchors
whose scores differ in the 7th digit swap places across it); such rows are counted, and anything
else fails (see ``helpers.compare_kept``).

The quick-start-like model is compared on all 50 validation images (cheap at 128 px); SSD300 (random
weights, 300 px, about 1 s a forward pass per image and runtime on a CPU) on its first 4, two batches of 2
through one mxnet module and one onnxruntime session: each image keeps some 120 rows, so some 500 rows
are compared, and every image must bring at least 100 of them. Each model is exported once per session
(``exported``) and shared by the module's tests through a module-scoped fixture.

Every SSD network of the registry is exported and matched too (``test_every_registered_network_exports``),
with random weights at a small input side, BatchNorm scales of fix_gamma layers moved from 1 as training
moves them. Needs the ``onnx`` extra; without it the module is skipped.
"""
from __future__ import annotations

import json
import os
import shutil
import types

import mxnet as mx
import numpy as np
import pytest
from helpers import batches_of, compare_kept, load_script, mxnet_raw, quickstart_like, ssd300_random, topk_cut

from config.errors import UserError

NEEDS_ONNX = "needs the onnx extra (pip install -e '.[onnx]')"
onnx = pytest.importorskip("onnx", reason=NEEDS_ONNX)
onnxruntime = pytest.importorskip("onnxruntime", reason=NEEDS_ONNX)

from config.run_config import load_run_config, save_run_config  # noqa: E402
from config.train_config import SSDConfig  # noqa: E402
from evaluate.onnx_detector import OnnxDetector, open_session  # noqa: E402
from evaluate.onnx_export import detection_nodes, export_onnx  # noqa: E402
from symbol.registry import SSD, get_network, network_names  # noqa: E402


def exported(build, name: str, base) -> types.SimpleNamespace:
    """The model ``build(base)`` makes, with ``onnx``: its export under ``base`` (made once per session)."""
    model = build(str(base))
    model.onnx = str(base / f"{name}.onnx")
    if not os.path.isfile(model.onnx):
        export_onnx(model.checkpoint, model.epoch, model.onnx)
    return model


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    return exported(quickstart_like, "quick", tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def ssd300(tmp_path_factory):
    return exported(ssd300_random, "ssd300", tmp_path_factory.getbasetemp())


def compare_model(model, batch_size: int, images: int | None = None) -> dict:
    """Totals of :func:`compare_kept` over the first ``images`` validation images of ``model`` (None: all),
    in batches of ``batch_size``; ``fewest`` is the smallest number of rows matched in one image."""
    run = load_run_config(model.checkpoint)
    paths = model.val_images[:images]
    batches = batches_of(paths, run.data_shape, run.mean_pixels, run.std_pixels, batch_size)
    reference, _ = mxnet_raw(model.checkpoint, model.epoch, batches)
    session, _ = open_session(model.onnx)
    ours = [row for batch in batches for row in session.run(["detections"], {"data": batch})[0]]
    assert len(reference) == len(ours) == len(paths)
    totals = {"images": len(ours), "matched": 0, "unexplained": 0, "near_cut": 0}
    per_image = []
    for raw_mx, raw_onnx in zip(reference, ours):
        assert raw_onnx.shape == (min(run.nms_topk, raw_mx.shape[0]), 6)
        result = compare_kept(raw_mx, raw_onnx, topk_cut(raw_onnx, run.nms_topk))
        for key, value in result.items():
            totals[key] += value
        per_image.append(result["matched"])
    return {**totals, "fewest": min(per_image)}


@pytest.mark.slow
def test_metadata_input_and_output(quick):
    model = onnx.load(quick.onnx)
    meta = {p.key: p.value for p in model.metadata_props}
    settings = json.loads(meta["mxdet"])
    run = load_run_config(quick.checkpoint)
    assert settings["class_names"] == ["circle", "square", "triangle"] == run.class_names
    assert settings["data_shape"] == 128
    assert (settings["mean_pixels"], settings["std_pixels"]) == ([123, 117, 104], [1, 1, 1])
    assert (settings["nms_thresh"], settings["nms_topk"], settings["force_suppress"]) == (0.45, 400, False)
    assert json.loads(meta["class_names"]) == run.class_names and "RGB" in meta["preprocessing"]
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["detections"]
    ops = {node.op_type for node in model.graph.node}
    assert {"NonMaxSuppression", "TopK", "Exp"} <= ops and not any("MultiBox" in op for op in ops)


@pytest.mark.slow
def test_quick_model_detections_equal_mxnet(quick):
    totals = compare_model(quick, batch_size=10)
    assert totals["images"] == 50
    assert totals["unexplained"] == 0, totals
    assert totals["matched"] > 1000, totals  # thousands of kept rows compared, not a handful
    assert totals["near_cut"] <= 2, totals


@pytest.mark.slow
def test_ssd300_random_detections_equal_mxnet(ssd300):
    """SSD300's whole detection on 4 images, two batches of 2 (a batch dimension above 1, twice through one
    session): the same kept rows (measured 126, 146, 117 and 120 a image, none near the cut)."""
    totals = compare_model(ssd300, batch_size=2, images=4)
    assert totals["images"] == 4
    assert totals["unexplained"] == 0, totals
    assert totals["matched"] > 400 and totals["fewest"] >= 100, totals  # every image: 100+ real detections
    assert totals["near_cut"] <= 2, totals


@pytest.mark.slow
def test_evaluate_onnx_map_equals_mxnet(quick, capsys):
    evaluate_script = load_script("evaluate")
    maps = []
    for argv in (["--prefix", quick.checkpoint, "--epoch", str(quick.epoch)], ["--onnx", quick.onnx]):
        capsys.readouterr()
        evaluate_script.main(argv + ["--rec-path", quick.val_rec, "--batch-size", "8"])
        maps.append(float(capsys.readouterr().out.strip().splitlines()[-1].split("=")[1]))
    assert maps[0] > 0.02  # a trained model, not noise
    assert abs(maps[0] - maps[1]) <= 1e-4, maps


@pytest.mark.slow
def test_demo_onnx_prints_what_mxnet_prints(quick, capsys):
    demo_script = load_script("demo")
    images = ",".join(quick.val_images[:4])
    outputs = []
    for argv in (["--prefix", quick.checkpoint, "--epoch", str(quick.epoch), "--cpu"], ["--onnx", quick.onnx]):
        capsys.readouterr()
        assert demo_script.main(argv + ["--images", images, "--no-timer", "--thresh", "0.2"]) == 0
        outputs.append(capsys.readouterr().out)
    assert outputs[0] == outputs[1]
    assert outputs[0].count("detections") == 4


@pytest.mark.slow
@pytest.mark.parametrize("script, argv, flag", [
    ("evaluate", ["--prefix", "x"], "--prefix"), ("evaluate", ["--nms", "0.3"], "--nms"),
    ("evaluate", ["--gpus", ""], "--gpus"), ("evaluate", ["--class-names", "a,b,c"], "--class-names"),
    ("demo", ["--cpu"], "--cpu"), ("demo", ["--no-force"], "--no-force"), ("demo", ["--data-shape", "256"],
                                                                              "--data-shape"),
])
def test_flags_that_onnx_replaces_are_refused(quick, script, argv, flag):
    module = load_script(script)
    base = ["--rec-path", quick.val_rec] if script == "evaluate" else ["--images", quick.val_images[0]]
    with pytest.raises(UserError, match=f"^{flag}: not with --onnx"):
        module.main(["--onnx", quick.onnx] + base + argv)


@pytest.mark.slow
def test_preprocessing_is_the_checkpoints(quick):
    """The metadata's input size and pixel statistics give the preprocessing the checkpoint's run config gives."""
    import cv2

    from evaluate.detector import ImageDetector

    image = cv2.imread(quick.val_images[0])
    run = load_run_config(quick.checkpoint)
    ours = OnnxDetector(quick.onnx)
    assert np.array_equal(ours.preprocess(image),
                          ImageDetector(run.data_shape, run.mean_pixels, run.std_pixels).preprocess(image))


@pytest.mark.slow
def test_missing_model_is_one_line(quick):
    with pytest.raises(UserError, match="^--onnx /nonexistent.onnx: file not found"):
        OnnxDetector("/nonexistent.onnx")


def run_detection_graph(cls_prob: np.ndarray, loc: np.ndarray, anchors: np.ndarray, nms: float, topk: int,
                        force: bool, clip: bool = True) -> np.ndarray:
    """The exporter's decoding + NMS alone, on given ``cls_prob [B, C+1, N]`` and ``loc [B, 4N]``."""
    from onnx import TensorProto, helper

    num_classes = cls_prob.shape[1] - 1
    nodes, inits = detection_nodes(num_classes, anchors, (0.1, 0.1, 0.2, 0.2), nms, topk, force, clip=clip)
    graph = helper.make_graph(nodes, "det", [
        helper.make_tensor_value_info("multibox_loc_pred", TensorProto.FLOAT, [None, loc.shape[1]]),
        helper.make_tensor_value_info("cls_prob", TensorProto.FLOAT, [None, num_classes + 1, anchors.shape[0]])],
        [helper.make_tensor_value_info("detections", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["detections"], {"multibox_loc_pred": loc, "cls_prob": cls_prob})[0]


@pytest.mark.parametrize("nms, topk, force, clip", [(0.45, 400, False, True), (0.3, 50, False, True),
                                                     (0.5, -1, True, True), (0.45, 20, True, True),
                                                     (0.0, 400, False, True), (0.45, 400, False, False)])
def test_decoding_and_nms_match_multibox_detection(nms, topk, force, clip):
    """Random scores, offsets and anchors (no network): the kept rows are MultiBoxDetection's exactly."""
    rng = np.random.default_rng(int(nms * 100) + topk)
    batch, classes, anchors_n = 3, 5, 600
    logits = rng.normal(0, 2, size=(batch, classes + 1, anchors_n)).astype(np.float32)
    cls_prob = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    loc = rng.normal(0, 1, size=(batch, 4 * anchors_n)).astype(np.float32)
    centres = rng.uniform(0, 1, size=(anchors_n, 2))
    sizes = rng.uniform(0.05, 0.5, size=(anchors_n, 2))
    anchors = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1).astype(np.float32)
    reference = mx.nd.contrib.MultiBoxDetection(
        mx.nd.array(cls_prob), mx.nd.array(loc), mx.nd.array(anchors[None]), nms_threshold=nms,
        force_suppress=force, nms_topk=topk, variances=(0.1, 0.1, 0.2, 0.2), clip=clip).asnumpy()
    ours = run_detection_graph(cls_prob, loc, anchors, nms, topk, force, clip)
    assert ours.shape == (batch, anchors_n if topk <= 0 or nms == 0 else topk, 6)
    for raw_mx, raw_onnx in zip(reference, ours):
        result = compare_kept(raw_mx, raw_onnx, None, tol=1e-6)
        assert result["unexplained"] == 0 and result["matched"] == int((raw_mx[:, 0] >= 0).sum()), result
        assert result["matched"] > 10


def test_a_network_with_an_op_mx2onnx_lacks_is_one_line(tmp_path):
    from evaluate.onnx_export import _export_heads

    data = mx.sym.Variable("data")
    feature = mx.sym.contrib.AdaptiveAvgPooling2D(data, output_size=4, name="pool")  # no mx2onnx converter
    loc = mx.sym.Flatten(feature, name="multibox_loc_pred")
    cls_prob = mx.sym.softmax(mx.sym.Reshape(feature, shape=(0, 3, -1)), axis=1, name="cls_prob")
    symbol = mx.sym.Group([loc, cls_prob])
    with pytest.raises(UserError, match="^--network fake: cannot be exported to ONNX: mx2onnx 1.9.1 cannot "
                                        "convert the op _contrib_AdaptiveAvgPooling2D "):
        _export_heads(symbol, {}, {}, 32, "fake", str(tmp_path / "x.onnx"))


# --- every registered SSD network -----------------------------------------------------------------------
SWEEP_SHAPE = 128  # the sweep's input side; a network whose layers do not fit it runs at its default side
SWEEP_CLASSES = ("a", "b", "c")
PROB_TOL = 2e-5  # class probabilities (cls_prob, every anchor and class): absolute
LOC_TOL = 1e-4  # box offsets (multibox_loc_pred, of about 0.5 after the heads are rescaled): absolute


def sweep_shape(name: str) -> int:
    """:data:`SWEEP_SHAPE` where ``name``'s layers fit it, else its default ``--data-shape``
    (vgg16_reduced: its SSD300 layout needs 272 pixels or more; it runs at 300)."""
    from symbol.symbol_factory import get_symbol

    try:
        get_symbol(name, SWEEP_SHAPE, num_classes=len(SWEEP_CLASSES))
    except UserError:
        return get_network(name, SSD).default_data_shape
    return SWEEP_SHAPE


def random_checkpoint(name: str, shape: int, image: np.ndarray, prefix: str) -> None:
    """``prefix``: ``name`` at ``shape`` with random weights (seed 0) and a run config.

    Convolutions get He-scaled Gaussian weights (Xavier's default average fan shrinks the depthwise
    layers of mobilenet to nothing); BatchNorm gets random scales, shifts and running statistics, so
    its conversion is exercised (the scales of fix_gamma layers too, which mxnet ignores: weight decay
    moves a trained checkpoint's away from 1, and the export must still compute with 1). Each
    prediction head is then rescaled on ``image`` to offsets of about 0.5 and class logits of about 2:
    confident, varied detections rather than near-uniform ones.
    """
    from evaluate.checkpoint import save_params
    from symbol.symbol_factory import get_symbol

    symbol = get_symbol(name, shape, num_classes=len(SWEEP_CLASSES))
    internals = symbol.get_internals()
    heads = [arg[:-len("_weight")] for arg in symbol.list_arguments() if arg.endswith("_pred_conv_weight")]
    module = mx.mod.Module(mx.sym.Group([symbol] + [internals[f"{head}_output"] for head in heads]),
                           label_names=None)
    module.bind([("data", image.shape)], for_training=False)
    mx.random.seed(0)
    module.init_params(mx.init.Xavier(rnd_type="gaussian", factor_type="in", magnitude=2))
    args, auxs = module.get_params()
    rng = np.random.default_rng(0)
    for params, suffix, low, high in ((args, "_gamma", 0.5, 1.5), (args, "_beta", -0.1, 0.1),
                                      (auxs, "_moving_mean", -0.1, 0.1), (auxs, "_moving_var", 0.5, 1.5)):
        for key in [key for key in params if key.endswith(suffix)]:
            params[key] = mx.nd.array(rng.uniform(low, high, params[key].shape))
    module.set_params(args, auxs)
    module.forward(mx.io.DataBatch([mx.nd.array(image)]), is_train=False)
    for head, output in zip(heads, module.get_outputs()[1:]):
        target = 0.5 if head.endswith("_loc_pred_conv") else 2.0
        args[f"{head}_weight"] *= target / float(output.asnumpy().std())
        args[f"{head}_bias"][:] = 0
    save_params(prefix, 0, symbol, args, auxs)
    save_run_config(SSDConfig(network=name, data_shape=shape, num_classes=len(SWEEP_CLASSES),
                              class_names=list(SWEEP_CLASSES), prefix=prefix, nms_thresh=0.45, nms_topk=400))


def mxnet_heads_and_detections(prefix: str, image: np.ndarray) -> list[np.ndarray]:
    """The checkpoint's test graph (as evaluate.py loads it) on ``image``: detections, cls_prob, loc."""
    from evaluate.ssd_model import load_test_model

    run = load_run_config(prefix)
    symbol, args, auxs = load_test_model(run.network, prefix, 0, run.data_shape, run.num_classes, run.nms_thresh,
                                         run.force_suppress, run.nms_topk)
    internals = symbol.get_internals()
    module = mx.mod.Module(mx.sym.Group([symbol, internals["cls_prob_output"], internals["multibox_loc_pred_output"]]),
                           label_names=None)
    module.bind([("data", image.shape)], for_training=False)
    module.set_params(args, auxs)
    module.forward(mx.io.DataBatch([mx.nd.array(image)]), is_train=False)
    return [output.asnumpy() for output in module.get_outputs()]


def onnx_heads_and_detections(model, image: np.ndarray) -> list[np.ndarray]:
    """The exported model (an ``onnx.ModelProto``, changed here) on ``image``: detections, and its cls_prob
    and loc tensors as extra outputs."""
    from onnx import TensorProto, helper

    for name in ("cls_prob", "multibox_loc_pred"):
        model.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(["detections", "cls_prob", "multibox_loc_pred"], {"data": image})


@pytest.mark.slow
@pytest.mark.parametrize("name", network_names(SSD))
def test_every_registered_network_exports(name, synthetic_voc, tmp_path):
    """Each SSD ``--network`` exports, and onnxruntime gives MXNet's class probabilities (within
    :data:`PROB_TOL`), box offsets (:data:`LOC_TOL`) and kept detections (1e-4) on one image, batch 1."""
    import cv2

    from evaluate.detector import ImageDetector

    shape = sweep_shape(name)
    run = SSDConfig()
    bgr = cv2.imread(synthetic_voc.image_path(synthetic_voc.split("val")[0]))
    image = ImageDetector(shape, run.mean_pixels, run.std_pixels).preprocess(bgr)[None]
    prefix = str(tmp_path / f"ssd_{name}_{shape}")
    try:
        random_checkpoint(name, shape, image, prefix)
        model = onnx.load(export_onnx(prefix, 0, str(tmp_path / f"{name}.onnx")))
        assert json.loads({p.key: p.value for p in model.metadata_props}["mxdet"])["network"] == name
        det_mx, prob_mx, loc_mx = mxnet_heads_and_detections(prefix, image)
        det_onnx, prob_onnx, loc_onnx = onnx_heads_and_detections(model, image)
    finally:  # the larger networks leave some 400 MB of weights behind
        shutil.rmtree(tmp_path)
    assert prob_onnx.shape == prob_mx.shape and loc_onnx.shape == loc_mx.shape
    assert np.abs(prob_onnx - prob_mx).max() <= PROB_TOL
    assert np.abs(loc_onnx - loc_mx).max() <= LOC_TOL
    assert prob_mx[:, 1:].max() > 0.9 and np.abs(loc_mx).max() > 1  # not a flat, featureless output
    result = compare_kept(det_mx[0], det_onnx[0], topk_cut(det_onnx[0], 400))
    assert result["unexplained"] == 0 and result["near_cut"] <= 2, result
    assert result["matched"] >= 50, result
