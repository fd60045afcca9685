"""tools/benchmark.py on the toy network at tiny shapes.

Speeds are not measured against the wall clock (the machine is shared): :class:`StepClock` stands in
for the benchmark's clock and makes every step take :data:`STEP_SECONDS`, so the images per second it
reports follow from what it ran, and the tests check that they do, step by step and graph by graph.
"""
import importlib.util
import json
import os
import subprocess

import mxnet as mx  # loaded before main() so that --threads is refused, see below
import pytest
from helpers import script_command

import config.cpu
import evaluate.onnx_detector as onnx_detector
from config.cpu import bfloat16_unavailable, has_bfloat16
from config.environment import scoped_env
from config.errors import UserError
from tools import benchmark

STEP_SECONDS = 0.25
HAS_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="needs onnx and onnxruntime, the 'onnx' extra: "
                                "pip install -e '.[onnx]'")
needs_bf16 = pytest.mark.skipif(not has_bfloat16(), reason=f"needs native bfloat16: {bfloat16_unavailable()}")
AVX2_CPUINFO = "processor : 0\nmodel name : Some AVX2 CPU\nflags : fpu sse avx2 fma\n"


class StepClock:
    """The benchmark's ``time``: a clock that only a step moves, by :data:`STEP_SECONDS`.

    ``steps`` holds ``(images, runner)`` per step (a forward pass of a Module, a run of an onnxruntime
    session); ``reads`` the number of steps taken at each reading of the clock.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self.steps: list[tuple[int, object]] = []
        self.reads: list[int] = []

    def perf_counter(self) -> float:
        self.reads.append(len(self.steps))
        return self.now

    def step(self, images: int, runner: object) -> None:
        self.steps.append((images, runner))
        self.now += STEP_SECONDS

    def timed(self, start: int = 0) -> tuple[list, list]:
        """(steps before the clock started, steps between its two readings) of the ``start``-th timing."""
        tic, toc = self.reads[2 * start], self.reads[2 * start + 1]
        timed = self.steps[tic:toc]
        runner = timed[-1][1]
        return [s for s in self.steps[:tic] if s[1] is runner], timed


@pytest.fixture
def clock(monkeypatch) -> StepClock:
    """Every Module forward pass and onnxruntime run of the benchmark is a step of a :class:`StepClock`."""
    clock = StepClock()
    monkeypatch.setattr(benchmark, "time", clock)
    forward = mx.mod.Module.forward

    def stepping_forward(self, data_batch, is_train=None):
        forward(self, data_batch, is_train)
        clock.step(data_batch.data[0].shape[0], self)

    monkeypatch.setattr(mx.mod.Module, "forward", stepping_forward)
    session_of = onnx_detector.inference_session

    def stepping_session(*args, **kwargs):
        session = session_of(*args, **kwargs)
        run = session.run

        def stepping_run(outputs, inputs):
            result = run(outputs, inputs)
            clock.step(inputs["data"].shape[0], session)
            return result

        session.run = stepping_run
        return session

    monkeypatch.setattr(onnx_detector, "inference_session", stepping_session)
    return clock


def graph_ops(module: mx.mod.Module) -> list[dict]:
    """The nodes of the graph a Module runs, casts included."""
    return json.loads(module.symbol.tojson(remove_amp_cast=False))["nodes"]


def bfloat16_casts(module: mx.mod.Module) -> int:
    return sum(node["op"] == "amp_cast" and node.get("attrs", {}).get("dtype") == "bfloat16"
               for node in graph_ops(module))


def quantized_nodes(module: mx.mod.Module) -> int:
    return sum(node.get("attrs", {}).get("quantized") == "true" for node in graph_ops(module))


def fused(module: mx.mod.Module) -> bool:
    """Whether MKLDNN's subgraph backend fused the bound graph's convolutions."""
    return "_sg_mkldnn_conv" in module._exec_group.execs[0].debug_str()


def rows(out: str) -> list[dict]:
    """The result lines of main's output as ``{'precision', 'batch', 'speed', 'latency', 'batches', 'warmup'}``."""
    found = []
    for line in out.splitlines()[1:]:
        found.append({"precision": line.split(" precision ")[1].split()[0],
                      "batch": int(line.split(" batch ")[1].split(":")[0]),
                      "speed": float(line.split(": ")[1].split(" images/sec")[0]),
                      "latency": float(line.split("latency ")[1].split(" ms")[0]),
                      "batches": int(line.split("(")[1].split(" batches")[0]),
                      "warmup": int(line.split(" after ")[1].split(" warm-up")[0])})
    return found


# --- what is timed --------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "infer"])
def test_speed_is_the_timed_images_over_the_timed_seconds(mode, clock, monkeypatch):
    """3 images a batch, 2 warm-up and 4 timed batches: 12 images in 4 steps of 0.25 s, 12 images/sec."""
    updates = []
    update = mx.mod.Module.update

    def recording_update(self):
        updates.append(self)
        update(self)

    monkeypatch.setattr(mx.mod.Module, "update", recording_update)
    speed = benchmark.benchmark("toy", 64, batch_size=3, mode=mode, num_classes=2, iterations=4, warmup=2)
    warm, timed = clock.timed()
    assert [images for images, _ in warm] == [3, 3] and [images for images, _ in timed] == [3, 3, 3, 3]
    assert speed == pytest.approx(4 * 3 / (4 * STEP_SECONDS))
    module = timed[0][1]
    # training steps update the weights once a batch; inference leaves them alone
    assert updates == ([module] * 6 if mode == "train" else [])
    assert module.for_training == (mode == "train")


def test_random_labels_are_valid_boxes():
    label = benchmark._random_label(4, benchmark.np.random.default_rng(0))
    assert label.shape == (4, benchmark.OBJECTS_PER_IMAGE, 6)
    assert ((label[:, :, 1:3] < label[:, :, 3:5]) & (label[:, :, 1:3] >= 0)).all()
    assert ((label[:, :, 0] >= 0) & (label[:, :, 0] < 1)).all()


def test_batch_size_zero_sweeps_one_to_32(capsys, clock):
    assert benchmark.main(["-n", "toy", "-w", "64", "-b", "0", "--num-class", "2",
                           "--iterations", "1", "--warmup", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("OMP_NUM_THREADS=")
    assert [row["batch"] for row in rows("\n".join(lines))] == [1, 2, 4, 8, 16, 32]
    assert [images for images, _ in clock.steps] == [1, 2, 4, 8, 16, 32]
    assert all(" precision fp32 " in line and line.endswith("warm-up)") for line in lines[1:])


# --- one row per precision, each timing its own graph ------------------------------------------------
def test_each_precision_row_times_its_own_graph(capsys, clock, monkeypatch, tmp_path):
    """fp32-unfused, fp32 and int8 at batches 1 and 2 in one run: rows in order, each speed and latency
    from its own timed steps, each on the graph it names; the header names the CPU from /proc/cpuinfo."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(AVX2_CPUINFO)
    monkeypatch.setattr(config.cpu, "CPUINFO", str(cpuinfo))
    timed = []
    benchmark_one = benchmark.benchmark

    def recording(*args, **kwargs):
        speed = benchmark_one(*args, **kwargs)
        timed.append(clock.timed(len(timed)))
        return speed

    monkeypatch.setattr(benchmark, "benchmark", recording)
    precisions = ("fp32-unfused", "fp32", "int8")
    assert benchmark.main(["-n", "toy", "-w", "64", "-b", "1,2", "--num-class", "2", "--iterations", "3",
                           "--warmup", "1", "--precision", ",".join(precisions)]) == 0
    out = capsys.readouterr().out
    assert (", cpu Some AVX2 CPU, isa avx2 fma (no avx512f, avx512_vnni, avx_vnni, avx512_bf16, amx_bf16, "
            "amx_int8), load average ") in out.splitlines()[0]
    found = rows(out)
    assert [(row["precision"], row["batch"]) for row in found] == [(p, b) for b in (1, 2) for p in precisions]
    for row, (warm, steps) in zip(found, timed):
        batch = row["batch"]
        assert (row["batches"], row["warmup"]) == (3, 1)
        assert [images for images, _ in warm] == [batch] and [images for images, _ in steps] == [batch] * 3
        assert row["speed"] == pytest.approx(batch / STEP_SECONDS, abs=0.005)
        assert row["latency"] == pytest.approx(1000 * STEP_SECONDS, abs=0.05)
        module = steps[0][1]
        assert bfloat16_casts(module) == 0
        if row["precision"] == "int8":
            assert quantized_nodes(module) == 11  # the toy's convolutions but the first are INT8
        else:
            assert quantized_nodes(module) == 0
            assert fused(module) == (row["precision"] == "fp32")


@needs_bf16
@pytest.mark.parametrize("mode", ["train", "infer"])
def test_bf16_times_the_bfloat16_graph(mode, clock):
    benchmark.benchmark("toy", 64, batch_size=2, mode=mode, num_classes=2, iterations=1, warmup=0, precision="bf16")
    benchmark.benchmark("toy", 64, batch_size=2, mode=mode, num_classes=2, iterations=1, warmup=0, precision="fp32")
    (_, [(_, bf16)]), (_, [(_, fp32)]) = clock.timed(0), clock.timed(1)
    assert bfloat16_casts(bf16) > 0 and bfloat16_casts(fp32) == 0


@needs_onnx
def test_onnx_times_onnxruntime_runs(capsys, clock):
    assert benchmark.main(["-n", "toy", "-w", "64", "-b", "2", "--num-class", "2", "--iterations", "3",
                           "--warmup", "1", "--precision", "onnx"]) == 0
    [row] = rows(capsys.readouterr().out)
    warm, steps = clock.timed()
    runner = steps[0][1]
    assert not isinstance(runner, mx.mod.Module) and type(runner).__name__ == "InferenceSession"
    assert [images for images, _ in warm] == [2] and [images for images, _ in steps] == [2, 2, 2]
    assert row["speed"] == pytest.approx(2 / STEP_SECONDS, abs=0.005)


def test_onnx_without_onnxruntime_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(UserError, match=r"^--precision onnx: needs onnx and onnxruntime: pip install -e '\.\[onnx\]'$"):
        benchmark.benchmark("toy", 64, batch_size=1, num_classes=2, iterations=1, warmup=0, precision="onnx")


def test_subgraph_backend_none_binds_without_the_mkldnn_backend(monkeypatch):
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


# --- flags --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, flag", [(["-b", "-1"], "--batch-size"), (["-b", "1,x"], "--batch-size"),
                                        (["--iterations", "0"], "--iterations"), (["--gpus", "x"], "--gpus"),
                                        (["--threads", "0"], "--threads"),
                                        (["--precision", "bf8"], "--precision bf8"),
                                        (["--dtype", "float16"], "--dtype float16"),
                                        (["--precision", "int8", "--mode", "train"], "--precision int8")])
def test_bad_flags_are_user_errors(argv, flag):
    with pytest.raises(UserError, match=f"^{flag}") as err:
        benchmark.parse_args(argv)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_bad_flags_from_the_command_line_are_one_line_before_any_work(tmp_path):
    cases = {"--batch-size": ["-b", "1,x"], "--iterations": ["--iterations", "0"],
             "--precision bf8": ["--precision", "bf8"], "--network": ["-n", "nosuch", "-b", "1"]}
    running = {flag: subprocess.Popen(script_command("tools/benchmark.py") + argv, cwd=tmp_path, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for flag, argv in cases.items()}
    for flag, process in running.items():
        stdout, stderr = process.communicate(timeout=300)
        assert process.returncode == 2, stderr
        assert len(stderr.splitlines()) == 1 and stderr.startswith(f"error: {flag}"), stderr
        # an unknown network is found when its graph is built, after the header; the flags before anything
        assert len(stdout.splitlines()) == (1 if flag == "--network" else 0)


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


def test_dtype_names_are_the_precisions(monkeypatch):
    """--dtype float32,bfloat16 is --precision fp32,bf16; bf16 trains too, where the CPU has the kernels."""
    monkeypatch.setattr(benchmark, "require_bfloat16", lambda flag: None)
    args = benchmark.parse_args(["--mode", "train", "--dtype", "float32,bfloat16"])
    assert args.precisions == ["fp32", "bf16"]


def test_bf16_on_a_cpu_without_it_is_one_line(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(AVX2_CPUINFO)
    monkeypatch.setattr(config.cpu, "CPUINFO", str(cpuinfo))
    with pytest.raises(UserError, match="^--precision bf16: this CPU .Some AVX2 CPU. lacks avx512f"):
        benchmark.parse_args(["--precision", "fp32,bf16"])
