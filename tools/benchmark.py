"""Images per second of an SSD graph on random data (example/ssd ``benchmark_score.py``).

    python tools/benchmark.py --network vgg16_reduced --data-shape 300 --batch-size 8 --mode infer
    python tools/benchmark.py -n toy -w 256 -b 0 --mode train      # sweep batch 1, 2, 4, ..., 32

``--mode infer`` times forward passes of the test graph (``[B, N, 6]`` detections);
``--mode train`` times forward, backward and an SGD update of the training graph with
random labels, as one step of ``train.py`` without data loading. The original timed
inference only, 100 passes after 5 warm-up passes; the defaults here are shorter because a
CPU takes seconds per batch for the VGG graphs.

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

import numpy as np

from config.errors import UserError, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BATCH_SWEEP = (1, 2, 4, 8, 16, 32)
MODES = ("train", "infer")
OBJECTS_PER_IMAGE = 3
LABEL_WIDTH = 6  # cls, xmin, ymin, xmax, ymax, difficult: what DetRecordIter yields


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Images per second of an SSD graph on random data.")
    parser.add_argument("-n", "--network", default="vgg16_reduced", help="network name (symbol_factory.NETWORKS)")
    parser.add_argument("-w", "--data-shape", type=int, default=None,
                        help="input side in pixels (default: the network's usual size, 300 for vgg16_reduced)")
    parser.add_argument("-b", "--batch-size", type=int, default=0,
                        help="batch size; 0 sweeps " + ", ".join(map(str, BATCH_SWEEP)))
    parser.add_argument("--mode", choices=MODES, default="infer", help="infer: forward of the test graph; "
                        "train: forward, backward and update of the training graph")
    parser.add_argument("--num-class", type=int, default=20, help="object classes (without background)")
    parser.add_argument("--iterations", type=int, default=20, help="timed batches per batch size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed batches first (memory, MKLDNN caches)")
    devices = parser.add_mutually_exclusive_group()
    devices.add_argument("--threads", type=int, default=None,
                         help="run on the CPU with this many OpenMP threads (sets OMP_NUM_THREADS)")
    devices.add_argument("--gpus", default="", help="comma-separated GPU ids, e.g. 0; empty: CPU")
    args = parser.parse_args(argv)
    for flag, value, minimum in (("--batch-size", args.batch_size, 0), ("--iterations", args.iterations, 1),
                                 ("--warmup", args.warmup, 0), ("--num-class", args.num_class, 1),
                                 ("--threads", args.threads, 1)):
        if value is not None and value < minimum:
            raise UserError(f"{flag}: must be at least {minimum}, got {value}")
    try:
        args.gpu_ids = [int(i) for i in args.gpus.split(",") if i.strip()]
    except ValueError as err:
        raise UserError(f"--gpus: expected comma-separated integers, got {args.gpus!r}") from err
    return args


def _random_label(batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """``[B, OBJECTS_PER_IMAGE, 6]`` labels: random classes and valid corner boxes."""
    corners = rng.uniform(0.0, 1.0, size=(batch_size, OBJECTS_PER_IMAGE, 2, 2))
    low, high = corners.min(axis=2), corners.max(axis=2)
    label = rng.uniform(0.0, 1.0, size=(batch_size, OBJECTS_PER_IMAGE, LABEL_WIDTH))
    label[:, :, 1:3], label[:, :, 3:5] = low, high + 0.05
    label[:, :, 5] = 0
    return label


def benchmark(network: str, data_shape: int, batch_size: int, mode: str = "infer", num_classes: int = 20,
              iterations: int = 20, warmup: int = 2, gpu_ids: list[int] | None = None) -> float:
    """Images per second over ``iterations`` batches of ``batch_size`` random images, after ``warmup``.

    ``mode='infer'`` binds the test graph and runs forward passes; ``mode='train'`` binds the
    training graph (``for_training=True``) with random labels ``[B, 3, 6]`` and runs forward,
    backward and an SGD update (lr 0.002, momentum 0.9, wd 0.0005, as train.py).
    """
    # mxnet is imported here, not at module level, so that main() can set OMP_NUM_THREADS first
    import mxnet as mx

    from symbol import symbol_factory

    if mode not in MODES:
        raise UserError(f"--mode: expected one of {', '.join(MODES)}, got {mode!r}")
    if gpu_ids and mx.context.num_gpus() == 0:
        raise UserError("--gpus: this mxnet build has no CUDA GPUs available; leave --gpus empty")
    context = [mx.gpu(i) for i in gpu_ids] if gpu_ids else [mx.cpu()]
    data_shapes = [("data", (batch_size, 3, data_shape, data_shape))]
    rng = np.random.default_rng(0)
    data = [mx.nd.array(rng.uniform(-128, 128, size=data_shapes[0][1]))]
    if mode == "train":
        sym = symbol_factory.get_symbol_train(network, data_shape, num_classes=num_classes)
        label_shapes = [("label", (batch_size, OBJECTS_PER_IMAGE, LABEL_WIDTH))]
        batch = mx.io.DataBatch(data, [mx.nd.array(_random_label(batch_size, rng))])
        module = mx.mod.Module(sym, data_names=["data"], label_names=["label"], context=context)
    else:
        sym = symbol_factory.get_symbol(network, data_shape, num_classes=num_classes)
        label_shapes = None
        batch = mx.io.DataBatch(data, None)
        module = mx.mod.Module(sym, data_names=["data"], label_names=None, context=context)
    module.bind(data_shapes=data_shapes, label_shapes=label_shapes, for_training=mode == "train")
    module.init_params(initializer=mx.init.Xavier(magnitude=2))
    if mode == "train":
        module.init_optimizer(optimizer="sgd", optimizer_params={
            "learning_rate": 0.002, "momentum": 0.9, "wd": 0.0005})

    def step() -> None:
        module.forward(batch, is_train=mode == "train")
        if mode == "train":
            module.backward()
            module.update()

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
          f"device {device}, load average {os.getloadavg()[0]:.2f}")
    batch_sizes = BATCH_SWEEP if args.batch_size == 0 else (args.batch_size,)
    for batch_size in batch_sizes:
        speed = benchmark(args.network, data_shape, batch_size, args.mode, args.num_class, args.iterations,
                          args.warmup, args.gpu_ids)
        print(f"network {args.network} data-shape {data_shape} mode {args.mode} batch {batch_size}: "
              f"{speed:.2f} images/sec ({args.iterations} batches after {args.warmup} warm-up)", flush=True)
    return 0


if __name__ == "__main__":
    run_cli(main)
