"""Faster R-CNN trained and scored on a CPU in about 20 minutes, on data this script makes itself.

The R-CNN counterpart of tools/quickstart.py; every step is the command a user
would type, printed before it runs:

1. generate a synthetic VOC-layout set (3 classes, 1,000 train / 200 val);
2. pack it to RecordIO with tools/prepare_dataset.py;
3. train ``faster_rcnn_small`` from scratch with train.py (no per-epoch
   validation, so the whole budget goes to training);
4. score VOC07 mAP on the validation split with evaluate.py.

It ends with the mAP, the training minutes and the seconds per iteration (one
image per iteration). Objects span 12% to 60% of the shorter image side, which
at the 300-pixel short side is 36 to 180 pixels: inside the 32..256-pixel
anchors of the default ``--anchor-scales (2,4,8,16)`` (stride 16).
Measured with the defaults on an otherwise idle 2-core CPU: 10 epochs (10,000
iterations, 0.065 s each) in 10.8 minutes, VOC07 mAP 0.884 on the 200
validation images (18 minutes with other jobs keeping the load near 7).

The size flags shrink the run, e.g. to a smoke test of every step in well under a minute::

    python tools/train_rcnn_small.py --out /tmp/rcnn_smoke --num-train 8 --num-val 4 --epochs 1 \
        --min-side 96 --max-side 128 --img-short-side 96 --img-long-side 128
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time

from config.cli import require_number
from config.errors import UserError, run_cli
from dataset.synthetic import SynthSettings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NETWORK = "faster_rcnn_small"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked: a size out of range is a one-line error naming its flag before any step runs."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "output", "rcnn_small"), help="where everything goes")
    p.add_argument("--reuse-data", action="store_true", help="keep the data of an earlier run in --out")
    p.add_argument("--classes", type=int, default=3, help="object classes in the synthetic set")
    p.add_argument("--num-train", type=int, default=1000, help="training images")
    p.add_argument("--num-val", type=int, default=200, help="validation images")
    p.add_argument("--min-side", type=int, default=240, help="smallest generated image side in pixels")
    p.add_argument("--max-side", type=int, default=400, help="largest generated image side in pixels")
    p.add_argument("--min-size", type=float, default=0.12, help="smallest object, fraction of the shorter side")
    p.add_argument("--max-size", type=float, default=0.6, help="largest object, fraction of the shorter side")
    p.add_argument("--max-objects", type=int, default=6, help="each image has 1..N objects")
    p.add_argument("--epochs", type=int, default=10, help="training epochs")
    p.add_argument("--lr", type=float, default=0.01, help="learning rate")
    p.add_argument("--lr-steps", default="8", help="epochs at which the learning rate drops 10x")
    p.add_argument("--img-short-side", type=int, default=300, help="training and test short side")
    p.add_argument("--img-long-side", type=int, default=500, help="training and test long side cap")
    p.add_argument("--anchor-scales", default="(2,4,8,16)", help="RPN anchor scales (x16 pixels)")
    p.add_argument("--validate", action="store_true", help="also score the validation set after every epoch")
    p.add_argument("--seed", type=int, default=7, help="data and initialisation seed")
    args = p.parse_args(argv)
    # make_synthetic's own ranges, so that a bad size stops here and not as a failed step
    SynthSettings(classes=args.classes, num_train=args.num_train, num_val=args.num_val, min_size=args.min_size,
                  max_size=args.max_size, min_side=args.min_side, max_side=args.max_side,
                  max_objects=args.max_objects).check()
    # training needs a training image, and the final score a validation image
    for flag, value in (("--num-train", args.num_train), ("--num-val", args.num_val), ("--epochs", args.epochs),
                        ("--img-short-side", args.img_short_side), ("--img-long-side", args.img_long_side)):
        require_number(flag, value, 1)
    require_number("--lr", args.lr, 0, above=True)
    return args


def run(cmd: list[str], steps: list[tuple[str, float]], capture: bool = False) -> str:
    """Run one step from the repository root; a failure stops the script with its exit status."""
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    tic = time.time()
    result = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE if capture else None, text=True)
    steps.append((os.path.basename(cmd[1]), time.time() - tic))
    if capture:
        print(result.stdout, end="")
    if result.returncode != 0:
        raise UserError(f"step failed (exit {result.returncode}): {' '.join(cmd[:2])}")
    return result.stdout or ""


def images_with_objects(lst_path: str) -> int:
    """Images of an im2rec detection .lst with a non-difficult object: what the training loader uses."""
    count = 0
    with open(lst_path) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            label = [float(v) for v in fields[1:-1]]
            header, width = int(label[0]), int(label[1])
            objects = [label[i:i + width] for i in range(header, len(label), width)]
            count += any(obj[0] >= 0 and (width < 6 or obj[5] == 0) for obj in objects)
    return count


def main(argv: list[str] | None = None) -> None:
    """Generate, pack, train and score; print the mAP, the times and where the files are."""
    args = parse_args(argv)
    py = sys.executable
    out = os.path.abspath(args.out)
    data_dir = os.path.join(out, "data")
    names = os.path.join(data_dir, "synth.names")
    train_rec, val_rec = os.path.join(data_dir, "train.rec"), os.path.join(data_dir, "val.rec")
    model_prefix = os.path.join(out, "model", "rcnn")
    steps: list = []

    if not (args.reuse_data and os.path.isfile(train_rec) and os.path.isfile(val_rec)):
        run([py, "tools/make_synthetic.py", "--out", data_dir, "--classes", str(args.classes),
             "--num-train", str(args.num_train), "--num-val", str(args.num_val), "--seed", str(args.seed),
             "--min-side", str(args.min_side), "--max-side", str(args.max_side), "--min-size", str(args.min_size),
             "--max-size", str(args.max_size), "--max-objects", str(args.max_objects)], steps)
        for split in ("train", "val"):
            run([py, "tools/prepare_dataset.py", "--dataset", "pascal", "--year", "synth", "--set", split,
                 "--root", os.path.join(data_dir, "VOCdevkit"), "--target", os.path.join(data_dir, f"{split}.lst"),
                 "--class-names", names] + (["--no-shuffle"] if split == "val" else []), steps)

    common = ["--network", NETWORK, "--num-class", str(args.classes), "--class-names", names, "--gpus", ""]
    train_tic = time.time()
    run([py, "train.py", *common, "--train-path", train_rec, "--val-path", val_rec if args.validate else "",
         "--pretrained", "", "--prefix", model_prefix, "--epochs", str(args.epochs), "--lr", str(args.lr),
         "--lr-decay-epoch", args.lr_steps, "--img-short-side", str(args.img_short_side),
         "--img-long-side", str(args.img_long_side), "--rpn-anchor-scales", args.anchor_scales,
         "--log-interval", "100", "--seed", str(args.seed), "--log", os.path.join(out, "train.log")], steps)
    train_seconds = time.time() - train_tic
    iterations = args.epochs * images_with_objects(os.path.join(data_dir, "train.lst"))

    prefix = f"{model_prefix}_{NETWORK}"
    output = run([py, "evaluate.py", *common, "--rec-path", val_rec, "--prefix", prefix,
                  "--epoch", str(args.epochs)], steps, capture=True)
    match = re.search(r"^mAP = ([0-9.]+)$", output, re.MULTILINE)
    if match is None:
        raise UserError("evaluate.py printed no 'mAP = ' line")

    print(f"\nFaster R-CNN ({NETWORK}, from scratch, CPU) on synthetic data: VOC07 mAP = {match.group(1)}")
    print(f"  training: {args.epochs} epochs, {iterations} iterations in {train_seconds / 60:.1f} min "
          f"({train_seconds / iterations:.3f} s/iteration{', validation included' if args.validate else ''})")
    for name, seconds in steps:
        print(f"  {name:<22} {seconds / 60:5.1f} min")
    print(f"  checkpoints: {prefix}-NNNN.params, config {prefix}-rcnn.json, log {os.path.join(out, 'train.log')}")


if __name__ == "__main__":
    run_cli(main)
