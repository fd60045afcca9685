"""Training speed of one process against 2 workers + 1 server on loopback, at the same per-worker batch.

    python tools/benchmark_dist.py --network toy --data-shape 128 --batch-size 8 --images 96 --epochs 3

It makes a synthetic set (``tools/make_synthetic.py`` + ``tools/prepare_dataset.py``), then runs
``train.py`` twice on it with the same flags: once alone, once under
``tools/launch.py -n 2 -s 1 --launcher local`` with ``--kv-store dist_sync``. Speeds come from
``Module.fit``'s ``Epoch[N] Time cost`` lines of the epochs after the first (start-up and the
first epoch's allocations left out): images per epoch / seconds. With two workers each reads half
the images per epoch, so the job's speed is the set's size over rank 0's epoch time.

It also prints what a worker moves per step: every learnable parameter as float32, pushed as a
gradient and pulled back (SSD300: 26,285,486 x 4 x 2 bytes), to size the network between machines.
On this 2-core machine two workers share the cores: expect the overhead, not a speed-up.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile

from config.cli import ArgumentParser
from config.errors import UserError, run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME_COST = re.compile(r"Epoch\[(\d+)\] Time cost=([0-9.]+)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-n", "--network", default="toy", help="SSD network")
    p.add_argument("-w", "--data-shape", type=int, default=128, help="input side")
    p.add_argument("-b", "--batch-size", type=int, default=8, help="batch per process / per worker")
    p.add_argument("--images", type=int, default=96, help="training images in the synthetic set")
    p.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is not timed)")
    p.add_argument("--workers", type=int, default=2, help="workers of the distributed run (1 server)")
    args = p.parse_args(argv)
    if args.epochs < 2:
        raise UserError(f"--epochs {args.epochs}: need 2 or more (the first epoch is not timed)")
    if args.images < args.workers * args.batch_size:
        raise UserError(f"--images {args.images}: fewer than one batch per worker")
    return args


def bytes_per_step(network: str, data_shape: int) -> int:
    """Bytes one worker pushes and pulls per step: every learnable parameter as float32, twice."""
    import numpy as np

    from symbol.symbol_factory import get_symbol_train

    symbol = get_symbol_train(network, data_shape, num_classes=20)
    arg_shapes, _, _ = symbol.infer_shape(data=(1, 3, data_shape, data_shape), label=(1, 1, 6))
    count = sum(int(np.prod(shape)) for name, shape in zip(symbol.list_arguments(), arg_shapes)
                if name not in ("data", "label"))
    return count * 4 * 2


def epoch_seconds(log: str) -> list[float]:
    """The ``Time cost`` of every epoch after the first, from a training log."""
    costs = {int(epoch): float(seconds) for epoch, seconds in TIME_COST.findall(log)}
    return [costs[epoch] for epoch in sorted(costs) if epoch > 0]


def run(command: list[str], what: str) -> str:
    print(f"$ {shlex.join(command)}", flush=True)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise UserError(f"{what} failed (exit {done.returncode}): {tail[0]}")
    return done.stdout + done.stderr


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="benchmark_dist_") as tmp:
        run([py, "tools/make_synthetic.py", "--out", f"{tmp}/synth", "--classes", "3", "--num-train",
             str(args.images), "--num-val", "0", "--seed", "0", "--min-side", "160", "--max-side", "240"],
            "make_synthetic")
        run([py, "tools/prepare_dataset.py", "--dataset", "pascal", "--year", "synth", "--set", "train",
             "--root", f"{tmp}/synth/VOCdevkit", "--target", f"{tmp}/train.lst", "--class-names",
             f"{tmp}/synth/synth.names"], "prepare_dataset")
        train = [py, "train.py", "--network", args.network, "--data-shape", str(args.data_shape),
                 "--train-path", f"{tmp}/train.rec", "--val-path", "", "--num-class", "3", "--class-names",
                 f"{tmp}/synth/synth.names", "--pretrained", "", "--freeze", "", "--gpus", "", "--log", "",
                 "--batch-size", str(args.batch_size), "--end-epoch", str(args.epochs), "--augment", "none",
                 "--frequent", "1000", "--lr", "0.01", "--lr-steps", ""]
        single = epoch_seconds(run(train + ["--prefix", f"{tmp}/one/ssd"], "one process"))
        launch = [py, "tools/launch.py", "-n", str(args.workers), "-s", "1", "--launcher", "local", "--"]
        dist = epoch_seconds(run(launch + train + ["--prefix", f"{tmp}/dist/ssd", "--kv-store", "dist_sync"],
                                 "distributed job"))
    one_speed = args.images / (sum(single) / len(single))
    dist_speed = args.images / (sum(dist) / len(dist))
    moved = bytes_per_step(args.network, args.data_shape)
    print(f"{args.network} {args.data_shape} batch {args.batch_size}: 1 process {one_speed:.2f} images/sec; "
          f"{args.workers} workers + 1 server (dist_sync, loopback) {dist_speed:.2f} images/sec for the job "
          f"({dist_speed / args.workers:.2f} per worker); each worker moves {moved / 1e6:.1f} MB per step "
          "(gradients up, weights down)")


if __name__ == "__main__":
    run_cli(main)
