"""Images per second of an SSD graph on random data (example/ssd ``benchmark_score.py``).

    python tools/benchmark.py --network vgg16_reduced --data-shape 300 --batch-size 8 --mode infer
    python tools/benchmark.py -n toy -w 256 -b 0 --mode train      # sweep batch 1, 2, 4, ..., 32
    python tools/benchmark.py -n toy -w 128 -b 1,8 --precision fp32-unfused,fp32,bf16,int8,onnx
    python tools/benchmark.py -n vgg16_reduced -w 300 -b 8 --mode train --dtype float32,bfloat16

``--mode infer`` times forward passes of the test graph (``[B, N, 6]`` detections);
``--mode train`` times forward, backward and an SGD update of the training graph with
random labels, as one step of ``train.py`` without data loading. The original timed
inference only, 100 passes after 5 warm-up passes; the defaults here are shorter because a
CPU takes seconds per batch for the VGG graphs.

``--precision`` (several, comma-separated, are timed in one process one after the other):
``fp32`` is the graph as evaluate.py and demo.py bind it on the CPU (mxnet's MKLDNN subgraph
backend: convolution + BatchNorm + ReLU fused), ``fp32-unfused`` the same with
``MXNET_SUBGRAPH_BACKEND=NONE``, ``bf16`` the graph ``--dtype bfloat16`` runs (bfloat16
convolutions, float32 weights; training too), ``int8`` the graph tools/quantize.py writes (naive
calibration on the random batch itself: the speed does not depend on the ranges), ``onnx`` the
model tools/export_onnx.py writes, run by onnxruntime on the CPU with ``OMP_NUM_THREADS`` threads.
``--dtype float32,bfloat16`` is the same as ``--precision fp32,bf16``. Each line gives images/sec
and the latency of one batch. The header names the CPU model and its vector instruction sets,
which decide what INT8 and BF16 can gain (VNNI for INT8, AVX512_BF16/AMX for BF16).

CPU speed depends on ``OMP_NUM_THREADS``, which mxnet reads once when it loads: the toolkit
defaults it to the number of cores, ``--threads K`` sets it to K, and the value in effect is
printed. The 1-minute load average is printed too: other processes on the machine skew
the figures.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np

from config.cpu import cpu_model, isa_summary, require_bfloat16
from config.environment import scoped_env
from config.errors import UserError, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BATCH_SWEEP = (1, 2, 4, 8, 16, 32)
MODES = ("train", "infer")
PRECISIONS = ("fp32", "fp32-unfused", "bf16", "int8", "onnx")
TRAIN_PRECISIONS = ("fp32", "bf16")
DTYPE_PRECISIONS = {"float32": "fp32", "bfloat16": "bf16"}  # --dtype names
OBJECTS_PER_IMAGE = 3
LABEL_WIDTH = 6  # cls, xmin, ymin, xmax, ymax, difficult: what DetRecordIter yields


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Images per second of an SSD graph on random data.")
    parser.add_argument("-n", "--network", default="vgg16_reduced", help="network name (symbol_factory.NETWORKS)")
    parser.add_argument("-w", "--data-shape", type=int, default=None,
                        help="input side in pixels (default: the network's usual size, 300 for vgg16_reduced)")
    parser.add_argument("-b", "--batch-size", default="0",
                        help="batch size, or several comma-separated; 0 sweeps " + ", ".join(map(str, BATCH_SWEEP)))
    parser.add_argument("--mode", choices=MODES, default="infer", help="infer: forward of the test graph; "
                        "train: forward, backward and update of the training graph")
    precision = parser.add_mutually_exclusive_group()
    precision.add_argument("--precision", default="fp32",
                           help="precision(s), comma-separated: " + ", ".join(PRECISIONS) +
                           f" (training: {', '.join(TRAIN_PRECISIONS)})")
    precision.add_argument("--dtype", default=None,
                           help="train.py's names: float32, bfloat16, comma-separated (= --precision fp32, bf16)")
    parser.add_argument("--num-class", type=int, default=20, help="object classes (without background)")
    parser.add_argument("--iterations", type=int, default=20, help="timed batches per batch size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (memory, MKLDNN caches)")
    devices = parser.add_mutually_exclusive_group()
    devices.add_argument("--threads", type=int, default=None,
                         help="run on the CPU with this many OpenMP threads (sets OMP_NUM_THREADS)")
    devices.add_argument("--gpus", default="", help="comma-separated GPU ids, e.g. 0; empty: CPU")
    args = parser.parse_args(argv)
    try:
        args.batch_sizes = [int(b) for b in args.batch_size.split(",")]
    except ValueError as err:
        raise UserError(f"--batch-size: expected integers, got {args.batch_size!r}") from err
    if args.batch_sizes == [0]:
        args.batch_sizes = list(BATCH_SWEEP)
    if args.dtype is not None:
        unknown = [d for d in args.dtype.split(",") if d.strip() not in DTYPE_PRECISIONS]
        if unknown:
            raise UserError(f"--dtype {unknown[0]}: expected float32 or bfloat16")
        args.precision = ",".join(DTYPE_PRECISIONS[d.strip()] for d in args.dtype.split(","))
    args.precisions = [p.strip() for p in args.precision.split(",")]
    for precision in args.precisions:
        check_precision(precision, args.mode)
    for flag, value, minimum in (("--batch-size", min(args.batch_sizes), 1), ("--iterations", args.iterations, 1),
                                 ("--warmup", args.warmup, 0), ("--num-class", args.num_class, 1),
                                 ("--threads", args.threads, 1)):
        if value is not None and value < minimum:
            raise UserError(f"{flag}: must be at least {minimum}, got {value}")
    try:
        args.gpu_ids = [int(i) for i in args.gpus.split(",") if i.strip()]
    except ValueError as err:
        raise UserError(f"--gpus: expected comma-separated integers, got {args.gpus!r}") from err
    return args


def check_precision(precision: str, mode: str) -> None:
    """A one-line error for a precision that is not one of :data:`PRECISIONS`, or not one of
    :data:`TRAIN_PRECISIONS` in training, or bf16 on a CPU that lacks its kernels."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if mode == "train" and precision not in TRAIN_PRECISIONS:
        raise UserError(f"--precision {precision}: only {' or '.join(TRAIN_PRECISIONS)} with --mode train "
                        "(INT8 and ONNX are inference formats)")
    if precision == "bf16":
        require_bfloat16("--precision bf16")


def _random_label(batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """``[B, OBJECTS_PER_IMAGE, 6]`` labels: random classes and valid corner boxes."""
    corners = rng.uniform(0.0, 1.0, size=(batch_size, OBJECTS_PER_IMAGE, 2, 2))
    low, high = corners.min(axis=2), corners.max(axis=2)
    label = rng.uniform(0.0, 1.0, size=(batch_size, OBJECTS_PER_IMAGE, LABEL_WIDTH))
    label[:, :, 1:3], label[:, :, 3:5] = low, high + 0.05
    label[:, :, 5] = 0
    return label


def _inference_step(network: str, data_shape: int, num_classes: int, precision: str, data: np.ndarray,
                    context: list) -> Callable[[], None]:
    """One forward pass of the test graph on ``data`` ``[B, 3, S, S]`` in ``precision``, Xavier weights."""
    import mxnet as mx

    from symbol import symbol_factory
    from symbol.precision import to_bfloat16

    symbol = symbol_factory.get_symbol(network, data_shape, num_classes=num_classes)
    shapes = [("data", data.shape)]
    fp32 = mx.mod.Module(symbol, label_names=None, context=context)
    # mxnet reads MXNET_SUBGRAPH_BACKEND when it binds: NONE binds the graph unfused
    with scoped_env("MXNET_SUBGRAPH_BACKEND", "NONE" if precision == "fp32-unfused" else None):
        fp32.bind(shapes, for_training=False)
    fp32.init_params(initializer=mx.init.Xavier(magnitude=2))
    batch = mx.io.DataBatch([mx.nd.array(data)])
    if precision in ("fp32", "fp32-unfused"):
        return lambda: fp32.forward(batch, is_train=False)
    arg_params, aux_params = fp32.get_params()
    if precision == "bf16":  # the float32 weights, as evaluate.py --dtype bfloat16 runs them
        bf16 = mx.mod.Module(to_bfloat16(symbol, "ssd", ["data"]), label_names=None, context=context)
        bf16.bind(shapes, for_training=False)
        bf16.set_params(arg_params, aux_params)
        return lambda: bf16.forward(batch, is_train=False)
    # the INT8 graph and the ONNX model are made from the FP32 module's weights, as the tools make them
    if precision == "onnx":
        return _onnx_step(symbol, arg_params, aux_params, network, data_shape, num_classes, data)
    from evaluate.quantization import quantize_graph

    calibration = mx.io.NDArrayIter(data, batch_size=len(data))
    qsym, qargs, qauxs = quantize_graph(symbol, arg_params, aux_params, calibration, "naive", len(data))
    int8 = mx.mod.Module(qsym, label_names=None, context=context)
    int8.bind(shapes, for_training=False)
    int8.set_params(qargs, qauxs)
    return lambda: int8.forward(batch, is_train=False)


def _onnx_step(symbol, arg_params: dict, aux_params: dict, network: str, data_shape: int, num_classes: int,
               data: np.ndarray) -> Callable[[], None]:
    """One onnxruntime run of tools/export_onnx.py's model of ``symbol`` with ``OMP_NUM_THREADS`` threads."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("--precision onnx: needs onnx and onnxruntime: pip install -e '.[onnx]'") from None
    from config.train_config import SSDConfig
    from evaluate.onnx_detector import inference_session
    from evaluate.onnx_export import onnx_model

    run = SSDConfig(network=network, data_shape=data_shape, num_classes=num_classes)
    model = onnx_model(symbol, arg_params, aux_params, run, "random Xavier weights")
    session = inference_session(model.SerializeToString(), int(os.environ.get("OMP_NUM_THREADS") or 0))
    inputs = {"data": data.astype(np.float32)}
    return lambda: session.run(None, inputs)


def benchmark(network: str, data_shape: int, batch_size: int, mode: str = "infer", num_classes: int = 20,
              iterations: int = 20, warmup: int = 2, gpu_ids: list[int] | None = None,
              precision: str = "fp32") -> float:
    """Images per second over ``iterations`` batches of ``batch_size`` random images, after ``warmup``.

    ``mode='infer'`` binds the test graph and runs forward passes in ``precision`` (see the module
    docstring); ``mode='train'`` binds the training graph (``for_training=True``) with random labels
    ``[B, 3, 6]`` and runs forward, backward and an SGD update (lr 0.002, momentum 0.9, wd 0.0005, as
    train.py).
    """
    # mxnet is imported here, not at module level, so that main() can set OMP_NUM_THREADS first
    import mxnet as mx

    from symbol import symbol_factory
    from symbol.precision import to_bfloat16

    if mode not in MODES:
        raise UserError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    check_precision(precision, mode)
    if gpu_ids and mx.context.num_gpus() == 0:
        raise UserError("--gpus: this mxnet build has no CUDA GPUs available; leave --gpus empty")
    if gpu_ids and precision != "fp32":
        raise UserError(f"--precision {precision}: CPU only; leave --gpus empty")
    context = [mx.gpu(i) for i in gpu_ids] if gpu_ids else [mx.cpu()]
    data_shapes = [("data", (batch_size, 3, data_shape, data_shape))]
    rng = np.random.default_rng(0)
    data = rng.uniform(-128, 128, size=data_shapes[0][1]).astype(np.float32)
    if mode == "train":
        sym = symbol_factory.get_symbol_train(network, data_shape, num_classes=num_classes)
        if precision == "bf16":
            sym = to_bfloat16(sym, "ssd")
        batch = mx.io.DataBatch([mx.nd.array(data)], [mx.nd.array(_random_label(batch_size, rng))])
        module = mx.mod.Module(sym, data_names=["data"], label_names=["label"], context=context)
        module.bind(data_shapes=data_shapes, label_shapes=[("label", (batch_size, OBJECTS_PER_IMAGE, LABEL_WIDTH))],
                    for_training=True)
        module.init_params(initializer=mx.init.Xavier(magnitude=2))
        module.init_optimizer(optimizer="sgd", optimizer_params={
            "learning_rate": 0.002, "momentum": 0.9, "wd": 0.0005})

        def step() -> None:
            module.forward(batch, is_train=True)
            module.backward()
            module.update()
            # read an output, as Module.fit's metric does: without a read mxnet may leave the BatchNorm
            # statistics' updates unfinished, and the time of the step uncounted
            module.get_outputs()[0].wait_to_read()
    else:
        step = _inference_step(network, data_shape, num_classes, precision, data, context)

    for _ in range(warmup):
        step()
    mx.nd.waitall()
    tic = time.perf_counter()
    for _ in range(iterations):
        step()
    mx.nd.waitall()  # the engine is asynchronous: wait for the last batch before stopping the clock
    return iterations * batch_size / (time.perf_counter() - tic)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        if "mxnet" in sys.modules:
            raise UserError("--threads: mxnet is already loaded in this process; set OMP_NUM_THREADS instead")
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import config  # noqa: F401  (fills in the toolkit's thread defaults before mxnet loads)
    from symbol.symbol_factory import DEFAULT_DATA_SHAPES

    # an unknown --network is reported by symbol_factory on the first benchmark() call
    data_shape = args.data_shape or DEFAULT_DATA_SHAPES.get(args.network, 300)
    device = f"gpu {args.gpus}" if args.gpu_ids else "cpu"
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')} (cores: {os.cpu_count()}), "
          f"device {device}, cpu {cpu_model()}, isa {isa_summary()}, load average {os.getloadavg()[0]:.2f}")
    for batch_size in args.batch_sizes:
        for precision in args.precisions:
            speed = benchmark(args.network, data_shape, batch_size, args.mode, args.num_class, args.iterations,
                              args.warmup, args.gpu_ids, precision)
            print(f"network {args.network} data-shape {data_shape} mode {args.mode} precision {precision} "
                  f"batch {batch_size}: {speed:.2f} images/sec, latency {1000 * batch_size / speed:.1f} ms/batch "
                  f"({args.iterations} batches after {args.warmup} warm-up)", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
