"""bfloat16 graphs (symbol/precision.py) and the CPU checks behind them (config/cpu.py).

The graph tests that only convert, infer types and bind run on any CPU: neither needs a
bfloat16 kernel. Those that run the converted graph need oneDNN's bfloat16 kernels and skip,
naming the flags, on CPUs without them (config.cpu.BFLOAT16_FLAGS).
"""
import json
import os
import re
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from config import cpu
from config.errors import UserError
from symbol import symbol_factory
from symbol.precision import BFLOAT16, FLOAT32_OPS, bfloat16_outputs, float32_graph, float32_node_names, to_bfloat16
from symbol.rcnn_factory import get_rcnn_test, get_rcnn_train, make_config, rcnn_initializer

needs_bfloat16 = pytest.mark.skipif(not cpu.has_bfloat16(),
                                    reason=f"needs native bfloat16: {cpu.bfloat16_unavailable()}")

MULTIBOX_OPS = ("_contrib_MultiBoxPrior", "_contrib_MultiBoxTarget", "_contrib_MultiBoxDetection")
TOY_SHAPE = 128
RCNN_DATA = ("data", "im_info", "gt_boxes")
RCNN_LABELS = ("label", "bbox_target", "bbox_weight")


def _nodes(sym):
    return json.loads(sym.tojson(remove_amp_cast=False))["nodes"]


def _types(sym):
    """``{internal output: dtype}`` with float32 inputs."""
    internals = sym.get_internals()
    _, types, _ = internals.infer_type(**{name: np.float32 for name in sym.list_arguments()})
    return {name: np.dtype(dtype) for name, dtype in zip(internals.list_outputs(), types)}


def _toy_train():
    return symbol_factory.get_symbol_train("toy", TOY_SHAPE, num_classes=3)


def _fixed_batch(batch_size=4):
    """Random images and three valid boxes per image: ``[B, 3, 128, 128]``, ``[B, 3, 6]``."""
    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, (batch_size, 3, TOY_SHAPE, TOY_SHAPE)).astype(np.float32)
    corner = rng.uniform(0, 0.7, (batch_size, 3, 2))
    label = np.zeros((batch_size, 3, 6), np.float32)
    label[:, :, 0] = rng.integers(0, 3, (batch_size, 3))
    label[:, :, 1:3], label[:, :, 3:5] = corner, corner + rng.uniform(0.15, 0.3, (batch_size, 3, 2))
    return mx.io.DataBatch([mx.nd.array(data)], [mx.nd.array(label)])


def _ssd_module(sym, batch, seed=0):
    """A Module bound as train/loop.py binds it (data and label shapes only), Xavier weights from ``seed``."""
    mod = mx.mod.Module(sym, data_names=["data"], label_names=["label"], context=mx.cpu())
    mod.bind([("data", batch.data[0].shape)], [("label", batch.label[0].shape)], for_training=True)
    mx.random.seed(seed)
    mod.init_params(initializer=mx.init.Xavier(magnitude=2))
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01, "momentum": 0.9, "wd": 0.0005})
    return mod


def _losses(outputs):
    """Cross-entropy over the valid anchors and smooth-L1 per positive anchor, from the SSD training outputs."""
    cls_prob, loc_loss, cls_label = (out.asnumpy() for out in outputs[:3])
    valid = cls_label >= 0
    picked = np.take_along_axis(cls_prob, np.maximum(cls_label, 0).astype(np.int64)[:, None, :], axis=1)[:, 0]
    cross_entropy = -np.log(np.maximum(picked[valid], 1e-12)).mean()
    return float(cross_entropy), float(loc_loss.sum() / max(1, (cls_label > 0).sum()))


def _train(sym, batch, steps):
    mod = _ssd_module(sym, batch)
    history = []
    for _ in range(steps):
        mod.forward(batch, is_train=True)
        history.append(_losses(mod.get_outputs()))
        mod.backward()
        mod.update()
    return mod, history


# --- to_bfloat16: the graph ----------------------------------------------------------------------


@pytest.mark.parametrize("graph", ["train", "test"])
def test_ssd_outputs_are_float32_and_the_body_bfloat16(graph):
    sym = _toy_train() if graph == "train" else symbol_factory.get_symbol("toy", TOY_SHAPE, num_classes=3)
    bf16 = to_bfloat16(sym)
    assert bf16.list_outputs() == sym.list_outputs() and bf16.list_arguments() == sym.list_arguments()
    _, out_types, _ = bf16.infer_type(**{name: np.float32 for name in bf16.list_arguments()})
    assert [np.dtype(t) for t in out_types] == [np.float32] * len(sym.list_outputs())
    lowered = set(bfloat16_outputs(bf16))
    assert {"stage1_conv1_output", "stage1_bn1_output", "stage3_pool_output"} <= lowered
    assert not bfloat16_outputs(sym)


def _io_types(sym, node_name):
    """dtypes of the inputs and of the outputs of node ``node_name`` with float32 variables."""
    internals = sym.get_internals()
    outputs = [name for name in internals.list_outputs() if name.startswith(node_name + "_")]
    inputs = internals[outputs[0]].get_children()
    _, in_types, _ = inputs.infer_type(**{name: np.float32 for name in inputs.list_arguments()})
    types = _types(sym)
    return [np.dtype(t) for t in in_types], [types[name] for name in outputs]


@pytest.mark.parametrize("graph", ["train", "test"])
def test_multibox_ops_see_and_give_float32(graph):
    sym = _toy_train() if graph == "train" else symbol_factory.get_symbol("toy", TOY_SHAPE, num_classes=3)
    bf16 = to_bfloat16(sym)
    multibox = [node["name"] for node in _nodes(bf16) if node["op"] in MULTIBOX_OPS]
    assert len(multibox) == (7 if graph == "train" else 6)  # 5 priors, target (training), detection
    for name in multibox:
        in_types, out_types = _io_types(bf16, name)
        assert in_types and set(in_types) == set(out_types) == {np.dtype(np.float32)}, name
    # the feature map under each prior is bfloat16: the prior gets it through a cast
    assert _types(bf16)["stage3_pool_output"] == BFLOAT16


def test_multibox_prior_cannot_take_bfloat16():
    """Why MultiBoxPrior is kept float32: AMP's own choice (a type-neutral op) fails the conversion."""
    from mxnet.contrib import amp

    with pytest.raises(mx.MXNetError, match="operator stage3_pool_anchors:.*Unsupported data type 12"):
        amp.convert_symbol(_toy_train(), target_dtype="bfloat16", cast_optional_params=False)


def test_input_graph_is_left_alone_and_float32_graph_gives_it_back():
    sym = _toy_train()
    before = sym.tojson()
    bf16 = to_bfloat16(sym)
    assert sym.tojson() == before
    assert "__dtype__" in bf16.tojson()  # the marks Module needs ...
    assert float32_graph(bf16).tojson() == before  # ... and nothing else differs once the casts are dropped


def test_unknown_family_or_input_is_a_user_error():
    with pytest.raises(UserError, match="unknown graph family 'yolo'"):
        to_bfloat16(_toy_train(), family="yolo")
    with pytest.raises(UserError, match="the graph has no input im_info; its inputs: data, "):
        to_bfloat16(_toy_train(), data_names=["data", "im_info"])


def test_rcnn_keeps_proposals_roi_pooling_and_proposal_target_float32():
    cfg = make_config("faster_rcnn_small")
    graphs = ((get_rcnn_train("faster_rcnn_small", 3, cfg), 5), (get_rcnn_test("faster_rcnn_small", 3, cfg), 3))
    for sym, outputs in graphs:
        bf16 = to_bfloat16(sym, family="rcnn")
        _, out_types, _ = bf16.infer_type(**{name: np.float32 for name in bf16.list_arguments()})
        assert [np.dtype(t) for t in out_types] == [np.float32] * outputs
        types = _types(bf16)
        kept = float32_node_names(sym, "rcnn")
        assert {"rois", "roi_pool"} <= set(kept)
        for name in kept:
            assert all(types[key] == np.float32 for key in types if key.startswith(name + "_")), name
        assert "conv1_1_output" in bfloat16_outputs(bf16) and "fc6_output" in bfloat16_outputs(bf16)


def test_family_lists_name_real_operators():
    known = set(mx.sym.contrib.__dict__) | set(mx.sym.__dict__)
    for ops in FLOAT32_OPS.values():
        for op in ops:
            assert op.replace("_contrib_", "") in known, op


# --- to_bfloat16: Module --------------------------------------------------------------------------


def test_module_binds_with_data_and_label_shapes_only_and_keeps_float32_params():
    sym = _toy_train()
    batch = _fixed_batch()
    from mxnet.contrib import amp

    bare = amp.convert_symbol(sym, target_dtype="bfloat16", cast_optional_params=False,
                              excluded_sym_names=float32_node_names(sym))
    with pytest.raises(RuntimeError, match="InferType pass cannot decide dtypes"):  # simple_bind wraps it
        _ssd_module(bare, batch)
    mod = _ssd_module(to_bfloat16(sym), batch)
    args, auxs = mod.get_params()
    assert set(args) == set(sym.list_arguments()) - {"data", "label"}
    assert {np.dtype(v.dtype) for v in [*args.values(), *auxs.values()]} == {np.dtype(np.float32)}
    executor = mod._exec_group.execs[0]
    assert {np.dtype(a.dtype) for a in executor.grad_arrays if a is not None} == {np.dtype(np.float32)}


@pytest.mark.slow
@needs_bfloat16
def test_training_steps_match_float32(tmp_path):
    batch = _fixed_batch()
    sym = _toy_train()
    steps = 25
    mod32, fp32 = _train(sym, batch, steps)
    mod16, bf16 = _train(to_bfloat16(sym), batch, steps)
    assert [o.dtype for o in mod16.get_outputs()] == [np.dtype(np.float32)] * 4
    # same weights at step 0: the first losses differ by bfloat16 rounding only (measured: up to 0.13%)
    np.testing.assert_allclose(bf16[0], fp32[0], rtol=0.01)
    assert bf16[0] != fp32[0]  # bfloat16 did run
    (ce0, loc0), (ce32, loc32), (ce16, loc16) = fp32[0], fp32[-1], bf16[-1]
    assert ce16 < ce0 / 4 and loc16 < loc0 / 4
    # measured over 5 weight/data seeds after 25 steps: CE within 1.3%, localisation within 12.4% of float32
    assert abs(ce16 - ce32) < 0.05 * ce32 and abs(loc16 - loc32) < 0.25 * loc32
    # float32 master weights and optimizer state; a checkpoint holds float32 arrays and the float32 graph
    assert {np.dtype(s.dtype) for s in mod16._updater.states.values()} == {np.dtype(np.float32)}
    mod16.save_checkpoint(str(tmp_path / "bf16"), 1)
    saved = mx.nd.load(str(tmp_path / "bf16-0001.params"))
    assert len(saved) == len(sym.list_arguments()) - 2 + len(sym.list_auxiliary_states())
    assert {np.dtype(v.dtype) for v in saved.values()} == {np.dtype(np.float32)}
    assert float32_graph(mx.sym.load(str(tmp_path / "bf16-symbol.json"))).tojson() == sym.tojson()


@needs_bfloat16
def test_inference_matches_float32_with_the_same_weights():
    batch = _fixed_batch()
    trained, _ = _train(_toy_train(), batch, 10)
    args, auxs = trained.get_params()
    test = symbol_factory.get_symbol("toy", TOY_SHAPE, num_classes=3)
    internals = test.get_internals()
    heads = mx.sym.Group([internals["cls_prob_output"], internals["multibox_loc_pred_output"]])
    results = []
    for sym in (heads, to_bfloat16(heads)):
        mod = mx.mod.Module(sym, label_names=None, context=mx.cpu())
        mod.bind([("data", batch.data[0].shape)], for_training=False)
        mod.set_params(args, auxs)
        mod.forward(mx.io.DataBatch(batch.data), is_train=False)
        results.append([out.asnumpy() for out in mod.get_outputs()])
    (prob32, loc32), (prob16, loc16) = results
    assert prob16.dtype == loc16.dtype == np.float32
    # measured over 4 seeds: probabilities within 0.0033, box offsets (|offset| <= 0.9) within 0.0104
    assert np.abs(prob16 - prob32).max() < 0.02 and np.abs(loc16 - loc32).max() < 0.05
    assert np.abs(prob16 - prob32).max() > 0  # bfloat16 did run


@needs_bfloat16
def test_rcnn_trains_a_few_steps_with_finite_losses(monkeypatch):
    from helpers import rcnn_train_batch

    monkeypatch.setenv("MXDET_RCNN_SEED", "0")
    cfg = make_config("faster_rcnn_small", rcnn_batch_rois=16, rpn_pre_nms_topk=600, rpn_post_nms_topk=100,
                      rpn_anchor_scales=(2, 4, 8))
    sym = to_bfloat16(get_rcnn_train("faster_rcnn_small", 2, cfg), family="rcnn")
    batch = rcnn_train_batch(sym, cfg, 128, 160)
    mod = mx.mod.Module(sym, data_names=list(RCNN_DATA), label_names=list(RCNN_LABELS), context=mx.cpu())
    mod.bind([(n, a.shape) for n, a in zip(RCNN_DATA, batch.data)],
             [(n, a.shape) for n, a in zip(RCNN_LABELS, batch.label)])
    mod.init_params(rcnn_initializer())
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01, "momentum": 0.9})
    before = mod.get_params()[0]["rpn_conv_3x3_weight"].copy()
    for _ in range(3):
        mod.forward(batch, is_train=True)
        outputs = [out.asnumpy() for out in mod.get_outputs()]
        assert all(out.dtype == np.float32 and np.isfinite(out).all() for out in outputs)
        mod.backward()
        mod.update()
    after = mod.get_params()[0]["rpn_conv_3x3_weight"]
    assert after.dtype == np.float32 and not np.array_equal(after.asnumpy(), before.asnumpy())


ISA_SCRIPT = """
import mxnet as mx, numpy as np
from mxnet.contrib import amp
conv = mx.sym.Convolution(mx.sym.var("data"), num_filter=16, kernel=(3, 3), name="conv")
bf16 = amp.convert_symbol(conv, target_dtype="bfloat16", data_names=["data"], cast_optional_params=False)
executor = bf16.simple_bind(mx.cpu(), data=(2, 16, 8, 8))
try:
    executor.forward(is_train=False)
    mx.nd.waitall()
except mx.MXNetError as err:
    print("FAILED:", str(err).strip().splitlines()[-1])
"""


@needs_bfloat16
@pytest.mark.parametrize("isa, expected", [
    ("", r"convolution,\w+:avx512_core_bf16,"),  # native kernels (brgconv or jit_bf16)
    ("AVX512_CORE", r"convolution,jit_bf16:avx512_core,"),  # emulated: what a CPU without AVX512_BF16 gets
    ("AVX2", r"FAILED: MXNetError: could not create a primitive descriptor iterator"),  # none below AVX-512
])
def test_onednn_bfloat16_convolution_by_instruction_set(isa, expected):
    """What config.cpu's flag list rests on, on this CPU with oneDNN's instruction set capped."""
    env = {**os.environ, "DNNL_VERBOSE": "1", "DNNL_MAX_CPU_ISA": isa, "MXNET_SUBGRAPH_BACKEND": "NONE"}
    result = subprocess.run([sys.executable, "-c", ISA_SCRIPT], capture_output=True, text=True, timeout=120,
                            env=env)
    assert re.search(expected, result.stdout), result.stdout[-2000:] + result.stderr[-2000:]


# --- config.cpu ----------------------------------------------------------------------------------

EPYC_FLAGS = ("fpu sse sse2 avx fma avx2 avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16 avx512vbmi "
              "avx512_vnni")
AVX2_FLAGS = "fpu sse sse2 avx fma avx2 f16c"


def _cpuinfo(tmp_path, flags, model="AMD EPYC", cpus=2):
    path = tmp_path / "cpuinfo"
    path.write_text("".join(f"processor\t: {i}\nvendor_id\t: AuthenticAMD\nmodel name\t: {model}\n"
                            f"flags\t\t: {flags}\n\n" for i in range(cpus)))
    return str(path)


def test_cpu_flags_and_model_of_the_first_cpu(tmp_path):
    path = _cpuinfo(tmp_path, EPYC_FLAGS)
    assert cpu.cpu_flags(path) == set(EPYC_FLAGS.split())
    assert cpu.cpu_model(path) == "AMD EPYC"
    assert cpu.cpu_flags(str(tmp_path / "missing")) == set() and cpu.cpu_model(str(tmp_path / "missing")) == "unknown"


def test_arm_features_line_counts_as_flags(tmp_path):
    path = tmp_path / "cpuinfo"
    path.write_text("processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd bf16 sve\n")
    assert cpu.cpu_flags(str(path)) == {"fp", "asimd", "bf16", "sve"}
    assert cpu.missing_bfloat16_flags(str(path)) == list(cpu.BFLOAT16_FLAGS)


def test_isa_summary_lists_what_the_cpu_has_and_lacks(tmp_path):
    assert cpu.isa_summary(_cpuinfo(tmp_path, "fpu sse avx2 fma avx512f avx512_vnni")) == (
        "avx2 fma avx512f avx512_vnni (no avx_vnni, avx512_bf16, amx_bf16, amx_int8)")
    assert cpu.isa_summary(_cpuinfo(tmp_path, AVX2_FLAGS)) == (
        "avx2 fma (no avx512f, avx512_vnni, avx_vnni, avx512_bf16, amx_bf16, amx_int8)")
    assert cpu.isa_summary(_cpuinfo(tmp_path, EPYC_FLAGS)) == (
        "avx2 fma avx512f avx512_vnni avx512_bf16 (no avx_vnni, amx_bf16, amx_int8)")
    assert cpu.isa_summary(str(tmp_path / "missing")) == "unknown"
    no_flags = tmp_path / "no_flags"
    no_flags.write_text("processor\t: 0\nmodel name\t: QEMU Virtual CPU\n")
    assert cpu.isa_summary(str(no_flags)) == "unknown"  # cpu_isa gives ' (no avx2, ...)' here


@pytest.fixture
def no_isa_cap(monkeypatch):
    """These tests are about the cpuinfo file: a DNNL_MAX_CPU_ISA set for the whole run must not reach them."""
    monkeypatch.delenv(cpu.ISA_CAP_VARIABLE, raising=False)


def test_require_bfloat16_passes_with_the_flags(tmp_path, no_isa_cap):
    path = _cpuinfo(tmp_path, EPYC_FLAGS)
    assert cpu.has_bfloat16(path) and cpu.missing_bfloat16_flags(path) == []
    cpu.require_bfloat16(path=path)


@pytest.mark.parametrize("flags, missing, why", [
    (AVX2_FLAGS, "avx512f, avx512bw, avx512vl, avx512dq, avx512_vnni, avx512_bf16", "no bfloat16 convolution"),
    (EPYC_FLAGS.replace(" avx512_bf16", ""), "avx512_bf16", "would emulate bfloat16"),
    (EPYC_FLAGS.replace(" avx512_bf16", "").replace(" avx512_vnni", ""), "avx512_vnni, avx512_bf16", "emulate"),
    (EPYC_FLAGS.replace(" avx512bw", ""), "avx512bw", "no bfloat16 convolution without AVX-512"),
])
def test_require_bfloat16_names_the_missing_flags(tmp_path, flags, missing, why, no_isa_cap):
    path = _cpuinfo(tmp_path, flags, model="Intel(R) Xeon(R) Gold 6148")
    with pytest.raises(UserError) as err:
        cpu.require_bfloat16("--dtype bfloat16", path=path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"--dtype bfloat16: this CPU (Intel(R) Xeon(R) Gold 6148) lacks {missing}:")
    assert why in message and message.endswith("; use float32")
    assert not cpu.has_bfloat16(path)


@pytest.mark.parametrize("cap", ["AVX2", "AVX512_CORE", "AVX512_CORE_VNNI"])
def test_an_isa_cap_below_avx512_core_bf16_turns_bfloat16_off(tmp_path, monkeypatch, cap):
    """oneDNN capped below its bfloat16 level has no native kernels, whatever the CPU's flags say."""
    path = _cpuinfo(tmp_path, EPYC_FLAGS)
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", cap)
    assert not cpu.has_bfloat16(path) and cpu.missing_bfloat16_flags(path) == []
    with pytest.raises(UserError) as err:
        cpu.require_bfloat16("--dtype bfloat16", path=path)
    assert str(err.value) == (f"--dtype bfloat16: DNNL_MAX_CPU_ISA={cap} caps oneDNN below its bfloat16 kernels "
                              "(AVX512_CORE_BF16); unset it or use float32")
    # a CPU lacking flags names them first: they are the cause whatever the cap
    with pytest.raises(UserError, match=r"lacks avx512f, .*avx512_bf16: oneDNN has no bfloat16"):
        cpu.require_bfloat16("--dtype bfloat16", path=_cpuinfo(tmp_path, AVX2_FLAGS))


@pytest.mark.parametrize("cap", ["AVX512_CORE_BF16", "AVX512_CORE_AMX", "ALL", "avx2", ""])
def test_caps_at_or_above_bfloat16_and_those_onednn_ignores_keep_it(tmp_path, monkeypatch, cap):
    """oneDNN 2.4 reads the level in upper case only: 'avx2' leaves it at the CPU's best."""
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", cap)
    path = _cpuinfo(tmp_path, EPYC_FLAGS)
    assert cpu.has_bfloat16(path)
    cpu.require_bfloat16(path=path)


def test_require_bfloat16_without_cpuinfo(tmp_path):
    with pytest.raises(UserError, match=r"^--precision bf16: cannot read the CPU flags from .*missing"):
        cpu.require_bfloat16("--precision bf16", path=str(tmp_path / "missing"))
