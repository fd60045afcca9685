"""``train.py --dtype bfloat16``: close to float32 where the CPU has the kernels, one line where it has not.

The comparison trains the toy SSD twice from the same seed on a set it learns in seconds (mAP near 0.3),
once in float32 and once in bfloat16, and compares the losses, the weights and the validation mAP.
Measured on an AMD EPYC with avx512_bf16 (2026-12-04): after 14 epochs the final cross-entropy
differed by 1.2%, SmoothL1 by 0.7% and the mAP by 3.8 points (0.297 against 0.259; it moves by 4
points from one epoch to the next). The tolerances are 10%, 20% and 10 points.
"""
import math
import os
import re

import mxnet as mx
import numpy as np
import pytest
from helpers import checkpoint_weights, history, load_script, train_toy

import config.cpu
from config.cpu import BFLOAT16_FLAGS, bfloat16_unavailable, has_bfloat16
from config.errors import UserError

needs_bf16 = pytest.mark.skipif(not has_bfloat16(), reason=f"needs native bfloat16: {bfloat16_unavailable()}")
AVX2_CPUINFO = "processor : 0\nmodel name : An AVX2 CPU\nflags : fpu sse sse2 avx avx2 fma f16c\n"


@pytest.fixture(scope="module")
def both_runs(learnable, tmp_path_factory):
    """``{dtype: prefix}`` of the same 14-epoch run in float32 and bfloat16."""
    runs = {}
    for dtype in ("float32", "bfloat16"):
        prefix = str(tmp_path_factory.mktemp(dtype) / "ssd")
        train_toy(learnable, prefix, 14, data_shape=128, batch_size=16, lr=0.05, warmup_epochs=1, lr_steps="12",
                  augment="none", val_path=learnable.val_rec, seed=1, keep=0, dtype=dtype, frequent=1000)
        runs[dtype] = prefix
    return runs


@pytest.mark.slow
@needs_bf16
def test_bfloat16_trains_like_float32(both_runs):
    fp32, bf16 = (history(both_runs[d]) for d in ("float32", "bfloat16"))
    for name, tolerance in (("train_CrossEntropy", 0.10), ("train_SmoothL1", 0.20)):
        first, last = float(fp32[0][name]), float(fp32[-1][name])
        assert float(bf16[-1][name]) < first / 2  # it learned
        assert float(bf16[-1][name]) == pytest.approx(last, rel=tolerance), name
    fp32_map, bf16_map = float(fp32[-1]["val_mAP"]), float(bf16[-1]["val_mAP"])
    assert fp32_map > 0.25 and abs(bf16_map - fp32_map) < 0.1
    weights = checkpoint_weights(both_runs["bfloat16"], 14, auxs=True)
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in weights.values())


@pytest.mark.slow
@needs_bf16
def test_bfloat16_checkpoint_is_float32_and_evaluates_in_both_precisions(both_runs, learnable, capsys):
    prefix = both_runs["bfloat16"]
    saved = mx.nd.load(f"{prefix}-0014.params")
    assert {v.dtype for v in saved.values()} == {np.float32}
    with open(f"{prefix}-symbol.json") as f:
        graph = f.read()
    assert "amp_cast" not in graph and "__dtype__" not in graph  # the float32 graph a float32 run saves
    evaluate = load_script("evaluate")
    maps = {}
    for dtype in ("float32", "bfloat16"):
        evaluate.main(["--prefix", prefix, "--epoch", "14", "--rec-path", learnable.val_rec, "--dtype", dtype])
        maps[dtype] = float(capsys.readouterr().out.strip().splitlines()[-1].split("=")[1])
    logged = float(history(prefix)[-1]["val_mAP"])
    assert maps["float32"] == pytest.approx(logged, abs=0.05)  # trained in bfloat16, scored in float32
    assert maps["bfloat16"] == pytest.approx(logged, abs=0.05)  # the test graph converts a little differently


@pytest.mark.slow
@needs_bf16
def test_resume_in_the_other_dtype(both_runs, learnable, tmp_path):
    """A float32 checkpoint trains on in bfloat16: the weights and optimizer state load unchanged."""
    prefix = str(tmp_path / "ssd")
    train_toy(learnable, prefix, 1, data_shape=128, batch_size=16, lr=0.02, lr_steps="", augment="none", seed=1)
    train_toy(learnable, prefix, 2, data_shape=128, batch_size=16, lr=0.02, lr_steps="", augment="none", seed=1,
              resume="auto", dtype="bfloat16")
    assert math.isfinite(float(history(prefix)[-1]["train_CrossEntropy"]))
    assert os.path.isfile(f"{prefix}-0002.states")


EPYC_CPUINFO = "processor : 0\nmodel name : AMD EPYC\nflags : avx2 fma " + " ".join(BFLOAT16_FLAGS) + "\n"


@pytest.mark.parametrize("cpuinfo_text, isa_cap, expected", [
    # a fake AVX2 cpuinfo stands in for the machine's
    (AVX2_CPUINFO, None, r"^--dtype bfloat16: this CPU \(An AVX2 CPU\) lacks avx512f, .*avx512_bf16: "),
    # every flag, but oneDNN capped: its bfloat16 convolutions would fail to bind
    (EPYC_CPUINFO, "AVX2", r"^--dtype bfloat16: DNNL_MAX_CPU_ISA=AVX2 caps oneDNN below its bfloat16 kernels "
                           r"\(AVX512_CORE_BF16\); unset it or use float32$"),
], ids=["avx2-cpu", "isa-cap"])
def test_without_native_bfloat16_it_is_one_line_before_anything_is_read(learnable, tmp_path, monkeypatch,
                                                                         cpuinfo_text, isa_cap, expected):
    """Runs on every CPU."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(cpuinfo_text)
    monkeypatch.setattr(config.cpu, "CPUINFO", str(cpuinfo))
    if isa_cap:
        monkeypatch.setenv("DNNL_MAX_CPU_ISA", isa_cap)
    else:
        monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    out = tmp_path / "run"
    with pytest.raises(UserError) as error:
        load_script("train").main(["--network", "toy", "--data-shape", "128", "--train-path", learnable.train_rec,
                                   "--num-class", "2", "--class-names", "a,b", "--pretrained", "", "--freeze", "",
                                   "--val-path", "", "--gpus", "", "--prefix", str(out / "ssd"), "--log", "",
                                   "--dtype", "bfloat16"])
    message = str(error.value)
    assert re.search(expected, message) and "\n" not in message, message
    assert not out.exists() or not any(out.iterdir())  # nothing written (the --prefix folder may be made)


@pytest.mark.slow
@needs_bf16
def test_bfloat16_on_two_cpu_contexts(learnable, tmp_path):
    """--cpus 2: the batch split over two contexts, each binding the converted graph; float32 checkpoint."""
    prefix = str(tmp_path / "ssd")
    train_toy(learnable, prefix, 1, ctx=[mx.cpu(0), mx.cpu(1)], data_shape=128, batch_size=16, lr=0.02, lr_steps="",
              augment="none", seed=1, dtype="bfloat16")
    weights = checkpoint_weights(prefix, 1, auxs=True)
    assert all(w.dtype == np.float32 and np.isfinite(w).all() for w in weights.values())
    assert math.isfinite(float(history(prefix)[-1]["train_CrossEntropy"]))
