"""Smoke runs of tools/benchmark.py on the toy network (tiny shapes; speeds are not checked)."""
import json
import math
import os

import mxnet  # noqa: F401  (loaded before main() so that --threads is refused, see below)
import pytest

import evaluate.quantization as benchmark_quantize
from config.cpu import cpu_model, isa_summary
from config.environment import scoped_env
from config.errors import UserError
from tools import benchmark


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_benchmark_returns_a_positive_speed(mode):
    speed = benchmark.benchmark("toy", 64, batch_size=2, mode=mode, num_classes=2, iterations=2, warmup=1)
    assert math.isfinite(speed) and speed > 0


def test_random_labels_are_valid_boxes():
    label = benchmark._random_label(4, benchmark.np.random.default_rng(0))
    assert label.shape == (4, benchmark.OBJECTS_PER_IMAGE, 6)
    assert ((label[:, :, 1:3] < label[:, :, 3:5]) & (label[:, :, 1:3] >= 0)).all()
    assert ((label[:, :, 0] >= 0) & (label[:, :, 0] < 1)).all()


def test_batch_size_zero_sweeps_one_to_32(capsys):
    assert benchmark.main(["-n", "toy", "-w", "64", "-b", "0", "--num-class", "2",
                           "--iterations", "1", "--warmup", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("OMP_NUM_THREADS=")
    assert [int(line.split(" batch ")[1].split(":")[0]) for line in lines[1:]] == [1, 2, 4, 8, 16, 32]
    assert all(" precision fp32 " in line for line in lines[1:])
    assert all(line.endswith("warm-up)") and "images/sec" in line for line in lines[1:])


@pytest.mark.parametrize("argv, flag", [(["-b", "-1"], "--batch-size"), (["-b", "1,x"], "--batch-size"),
                                        (["--iterations", "0"], "--iterations"), (["--gpus", "x"], "--gpus"),
                                        (["--threads", "0"], "--threads"),
                                        (["--precision", "bf8"], "--precision bf8"),
                                        (["--dtype", "float16"], "--dtype float16"),
                                        (["--precision", "int8", "--mode", "train"], "--precision int8")])
def test_bad_flags_are_user_errors(argv, flag):
    with pytest.raises(UserError, match=f"^{flag}"):
        benchmark.parse_args(argv)


def test_unknown_network_and_late_threads_are_user_errors():
    with pytest.raises(UserError, match="^--network"):
        benchmark.main(["-n", "nosuch", "-b", "1"])
    with pytest.raises(UserError, match="^--threads"):  # mxnet is loaded by now: too late for OMP_NUM_THREADS
        benchmark.main(["-n", "toy", "--threads", "1"])


def test_distributed_benchmark_reads_epoch_times_and_sizes_the_traffic():
    from tools.benchmark_dist import bytes_per_step, epoch_seconds

    log = ("12:00:01 Epoch[0] Time cost=9.000\n[rank 1] 12:00:01 Epoch[0] Time cost=9.100\n"
           "12:00:05 Epoch[1] Time cost=4.000\n12:00:09 Epoch[2] Time cost=2.000\n")
    assert epoch_seconds(log) == [4.0, 2.0]  # the first epoch is not timed
    # SSD300: every one of its 26,285,486 parameters as float32, up and down
    assert bytes_per_step("vgg16_reduced", 300) == 26_285_486 * 4 * 2


def test_every_precision_is_timed_in_one_run_with_its_latency(capsys, monkeypatch):
    quantized = []
    quantize_graph = benchmark_quantize.quantize_graph

    def recording(*args, **kwargs):
        qsym, qargs, qauxs = quantize_graph(*args, **kwargs)
        quantized.append(sum(n.get("attrs", {}).get("quantized") == "true"
                             for n in json.loads(qsym.tojson())["nodes"]))
        return qsym, qargs, qauxs

    monkeypatch.setattr(benchmark_quantize, "quantize_graph", recording)
    assert benchmark.main(["-n", "toy", "-w", "64", "-b", "1,2", "--num-class", "2", "--iterations", "1",
                           "--warmup", "0", "--precision", "fp32-unfused,fp32,int8,onnx"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"cpu {cpu_model()}, isa {isa_summary()}," in lines[0]
    runs = [(line.split(" precision ")[1].split()[0], int(line.split(" batch ")[1].split(":")[0]))
            for line in lines[1:]]
    assert runs == [(p, b) for b in (1, 2) for p in ("fp32-unfused", "fp32", "int8", "onnx")]
    assert quantized == [11, 11]  # the toy's convolutions but the first are INT8
    for line in lines[1:]:
        speed = float(line.split(": ")[1].split(" images/sec")[0])
        latency = float(line.split("latency ")[1].split(" ms")[0])
        batch = int(line.split(" batch ")[1].split(":")[0])
        assert latency == pytest.approx(1000 * batch / speed, rel=0.01, abs=0.1)


def test_subgraph_backend_none_binds_without_the_mkldnn_backend(monkeypatch):
    import mxnet as mx

    from symbol.symbol_factory import get_symbol

    monkeypatch.delenv("MXNET_SUBGRAPH_BACKEND", raising=False)
    graphs = {}
    for backend in (None, "NONE"):
        module = mx.mod.Module(get_symbol("toy", 64, num_classes=2), label_names=None)
        with scoped_env("MXNET_SUBGRAPH_BACKEND", backend):
            module.bind([("data", (1, 3, 64, 64))], for_training=False)
        graphs[backend] = module._exec_group.execs[0].debug_str()
    assert "_sg_mkldnn_conv" in graphs[None] and "_sg_mkldnn_conv" not in graphs["NONE"]
    assert "MXNET_SUBGRAPH_BACKEND" not in os.environ


def test_dtype_names_are_the_precisions(monkeypatch):
    """--dtype float32,bfloat16 is --precision fp32,bf16; bf16 trains too, where the CPU has the kernels."""
    monkeypatch.setattr(benchmark, "require_bfloat16", lambda flag: None)
    args = benchmark.parse_args(["--mode", "train", "--dtype", "float32,bfloat16"])
    assert args.precisions == ["fp32", "bf16"]


def test_bf16_on_a_cpu_without_it_is_one_line(monkeypatch, tmp_path):
    import config.cpu

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name : Some AVX2 CPU\nflags : fpu sse avx2 fma\n")
    monkeypatch.setattr(config.cpu, "CPUINFO", str(cpuinfo))
    with pytest.raises(UserError, match="^--precision bf16: this CPU .Some AVX2 CPU. lacks avx512f"):
        benchmark.parse_args(["--precision", "fp32,bf16"])
