"""Generate a synthetic object-detection data set in the real Pascal VOC layout (see :mod:`dataset.synthetic`).

    python tools/make_synthetic.py --out data/synth --classes 3 --num-train 2000 --num-val 200
"""
from __future__ import annotations

import argparse

from config.errors import run_cli
from dataset.synthetic import SHAPE_NAMES, make_synthetic


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Writes OUT/synth.names and OUT/VOCdevkit/VOCsynth/{JPEGImages,Annotations,ImageSets/Main}.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--classes", type=int, default=3, help=f"number of classes (shapes), 1..{len(SHAPE_NAMES)}")
    parser.add_argument("--num-train", type=int, default=2000, help="images in train.txt")
    parser.add_argument("--num-val", type=int, default=200, help="images in val.txt (test.txt is the same)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same files")
    parser.add_argument("--min-size", type=float, default=0.04, help="smallest object, fraction of the image side")
    parser.add_argument("--max-size", type=float, default=0.70, help="largest object, fraction of the image side")
    parser.add_argument("--min-side", type=int, default=200, help="smallest image width/height in pixels")
    parser.add_argument("--max-side", type=int, default=500, help="largest image width/height in pixels")
    parser.add_argument("--max-objects", type=int, default=8, help="each image has 1..N objects")
    parser.add_argument("--quality", type=int, default=90, help="JPEG quality")
    parser.add_argument("--truncation", type=float, default=1.0,
                        help="share of objects that may reach past the image border (0..1)")
    parser.add_argument("--workers", type=int, default=0, help="processes (0: one per core)")
    return parser.parse_args(argv)
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    make_synthetic(
        args.out, classes=args.classes, num_train=args.num_train, num_val=args.num_val, seed=args.seed,
        min_size=args.min_size, max_size=args.max_size, min_side=args.min_side, max_side=args.max_side,
        max_objects=args.max_objects, quality=args.quality, truncation=args.truncation, workers=args.workers or None,
        log=lambda line: print(line, flush=True),
    )
    return 0
if __name__ == "__main__":
    run_cli(main)
