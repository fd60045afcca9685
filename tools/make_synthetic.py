"""Generate a synthetic object-detection data set in the real Pascal VOC layout (see :mod:`dataset.synthetic`).

    python tools/make_synthetic.py --out data/synth --classes 3 --num-train 2000 --num-val 200
"""
from __future__ import annotations

import argparse
import dataclasses

from config.errors import run_cli
from dataset.synthetic import SHAPE_NAMES, SynthSettings, make_synthetic

# one flag per SynthSettings field (--num-train for num_train), in field order; the defaults are the fields'
HELP = {
    "classes": f"number of classes (shapes), 1..{len(SHAPE_NAMES)}",
    "num_train": "images in train.txt",
    "num_val": "images in val.txt (test.txt is the same)",
    "seed": "random seed; same seed, same files",
    "min_size": "smallest object, fraction of the image side",
    "max_size": "largest object, fraction of the image side",
    "min_side": "smallest image width/height in pixels",
    "max_side": "largest image width/height in pixels",
    "max_objects": "each image has 1..N objects",
    "quality": "JPEG quality",
    "truncation": "share of objects that may reach past the image border (0..1)",
    "workers": "processes (0: one per core)",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="Writes OUT/synth.names and OUT/VOCdevkit/VOCsynth/{JPEGImages,Annotations,ImageSets/Main}.",
    )
    parser.add_argument("--out", required=True, help="output folder")
    for field in dataclasses.fields(SynthSettings):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default), default=field.default,
                            help=HELP[field.name])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = SynthSettings(**{field.name: getattr(args, field.name) for field in dataclasses.fields(SynthSettings)})
    make_synthetic(args.out, settings, log=lambda line: print(line, flush=True))
    return 0


if __name__ == "__main__":
    run_cli(main)
