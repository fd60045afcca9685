"""Look at a .rec the way training sees it: a grid of images after the training augmentation, with their boxes.

    python tools/browse_data.py --rec data/train.rec --augment ssd --num 16 --out grid.png
    python tools/browse_data.py --rec data/train.rec --network toy --data-shape 128 --stats --out grid.png

The images come from ``dataset.iterator.DetRecordIter`` with the augmentation preset of
``train.py --augment`` (config/augmentation.py) at ``--data-shape``, with mean 0 and std 1 so the
pixels are the augmented image itself. Boxes are drawn in their class's colour and named;
difficult objects (which training leaves out) are drawn dashed. ``--stats`` also writes
``labels.png`` beside ``--out``: objects per class, objects per image, and the boxes' normalised
width/height with the network's anchor shapes over them.
"""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence

import numpy as np

from config.cli import ArgumentParser, parse_class_names, require_writable_dir
from config.errors import UserError, run_cli
from evaluate.anchor_fit import write_label_stats

__all__ = ["augmented_batch", "draw_grid", "grid_origin", "main", "write_label_stats", "CLASS_COLOURS"]

# RGB, saturated and far apart; class k uses CLASS_COLOURS[k % len]
CLASS_COLOURS = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
                 (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40), (128, 0, 0), (0, 0, 128))
BACKGROUND = (235, 235, 235)
PAD = 4  # pixels between and around the cells
CAPTION = 14  # pixels of the caption strip above each image


def grid_columns(num: int) -> int:
    """Columns of a grid of ``num`` images (about square)."""
    return max(1, math.ceil(math.sqrt(num)))


def grid_origin(index: int, num: int, data_shape: int) -> tuple[int, int]:
    """``(x, y)`` of the top-left pixel of image ``index`` in the grid of ``num`` images."""
    columns = grid_columns(num)
    row, column = divmod(index, columns)
    return PAD + column * (data_shape + PAD), PAD + row * (data_shape + CAPTION + PAD) + CAPTION


def augmented_batch(rec: str, augment: str = "ssd", num: int = 16, seed: int = 0, data_shape: int = 300
                    ) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """The first ``num`` images ``DetRecordIter`` yields with ``train.py --augment augment --seed seed``.

    Returns ``(images [n, S, S, 3] uint8 RGB, labels, record ids)`` with ``n = min(num, images in
    rec)``; ``labels[i]`` is ``[k, 6]`` rows ``(cls, xmin, ymin, xmax, ymax, difficult)`` normalised
    (a label without a difficult column reads 0).
    """
    from config.augmentation import TRAIN_AUGMENTATIONS
    from dataset.iterator import DetRecordIter

    if augment not in TRAIN_AUGMENTATIONS:
        raise UserError(f"--augment {augment}: choose from {', '.join(TRAIN_AUGMENTATIONS)}")
    settings = dict(TRAIN_AUGMENTATIONS[augment], seed=seed)  # seed: shuffle order and draws, as train.py
    it = DetRecordIter(rec, num, data_shape, mean_pixels=(0, 0, 0), std_pixels=(1, 1, 1), verbose=False,
                       **settings)
    batch = it.next()
    real = num - batch.pad
    data = batch.data[0].asnumpy()[:real]
    images = np.clip(np.round(data.transpose(0, 2, 3, 1)), 0, 255).astype(np.uint8)
    labels = []
    for rows in batch.label[0].asnumpy()[:real]:
        rows = rows[rows[:, 0] >= 0]
        out = np.zeros((rows.shape[0], 6), dtype=np.float64)
        out[:, :min(6, rows.shape[1])] = rows[:, :6]
        labels.append(out)
    return images, labels, [int(i) for i in np.asarray(batch.index)[:real]]


def _dashed_line(canvas: np.ndarray, p1: tuple[int, int], p2: tuple[int, int], colour, thickness: int,
                 dash: int = 4) -> None:
    import cv2

    length = max(abs(p2[0] - p1[0]), abs(p2[1] - p1[1]))
    for start in range(0, length + 1, 2 * dash):
        end = min(start + dash - 1, length)
        a = (p1[0] + (p2[0] - p1[0]) * start // max(length, 1), p1[1] + (p2[1] - p1[1]) * start // max(length, 1))
        b = (p1[0] + (p2[0] - p1[0]) * end // max(length, 1), p1[1] + (p2[1] - p1[1]) * end // max(length, 1))
        cv2.line(canvas, a, b, colour, thickness)


def box_pixels(box: Sequence[float], data_shape: int) -> tuple[int, int, int, int]:
    """Inclusive pixel corners of a normalised box at ``data_shape``: the rectangle the grid draws."""
    x1, y1 = (int(round(v * data_shape)) for v in box[:2])
    x2, y2 = (int(round(v * data_shape)) - 1 for v in box[2:4])
    return x1, y1, max(x1, x2), max(y1, y2)


def draw_grid(images: np.ndarray, labels: Sequence[np.ndarray], class_names: Sequence[str] | None = None,
              captions: Sequence[str] | None = None) -> np.ndarray:
    """Tile ``images`` [n, S, S, 3] (RGB uint8) with their ``labels`` drawn: ``[H, W, 3]`` RGB uint8.

    Image ``i`` sits at :func:`grid_origin`; a box is the rectangle :func:`box_pixels` gives, in
    ``CLASS_COLOURS[cls]``, solid, or dashed for a difficult object, with the class name at its
    top-left corner.
    """
    import cv2

    num, size = len(images), images.shape[1]
    columns = grid_columns(num)
    rows = math.ceil(num / columns)
    canvas = np.empty((PAD + rows * (size + CAPTION + PAD), PAD + columns * (size + PAD), 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    thickness = 1 if size < 256 else 2
    for index, (image, objects) in enumerate(zip(images, labels)):
        x0, y0 = grid_origin(index, num, size)
        canvas[y0:y0 + size, x0:x0 + size] = image
        if captions:
            cv2.putText(canvas, captions[index], (x0, y0 - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (40, 40, 40), 1,
                        cv2.LINE_AA)
        cell = canvas[y0:y0 + size, x0:x0 + size]  # a view: drawing is clipped to the image
        for obj in objects:
            cls = int(obj[0])
            colour = CLASS_COLOURS[cls % len(CLASS_COLOURS)]
            x1, y1, x2, y2 = box_pixels(obj[1:5], size)
            if len(obj) > 5 and obj[5] > 0:
                for p1, p2 in (((x1, y1), (x2, y1)), ((x2, y1), (x2, y2)), ((x2, y2), (x1, y2)), ((x1, y2), (x1, y1))):
                    _dashed_line(cell, p1, p2, colour, thickness)
            else:
                cv2.rectangle(cell, (x1, y1), (x2, y2), colour, thickness)
            name = class_names[cls] if class_names and 0 <= cls < len(class_names) else str(cls)
            if len(obj) > 5 and obj[5] > 0:
                name += " (diff.)"
            # the name sits just inside the top edge, right of the left edge, so both edges stay visible
            cv2.putText(cell, name, (x1 + thickness + 2, y1 + thickness + 10), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                        colour, 1, cv2.LINE_AA)
    return canvas


def write_png(path: str, rgb: np.ndarray) -> str:
    """Write an RGB image atomically (one-line :class:`UserError` if it cannot be written)."""
    import cv2

    from config.fileio import atomic_write

    def write(tmp: str) -> None:
        if not cv2.imwrite(tmp, np.ascontiguousarray(rgb[:, :, ::-1])):
            raise OSError(f"OpenCV could not write {tmp}")

    return atomic_write(path, write)


def build_parser() -> argparse.ArgumentParser:
    from config.train_config import SSDConfig

    p = ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rec", required=True, help="the .rec to look at")
    p.add_argument("--augment", default="ssd", choices=("ssd", "flip", "none"),
                   help="train.py's --augment preset (default: %(default)s)")
    p.add_argument("--num", type=int, default=16, help="images in the grid (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="train.py's --seed: shuffle order and augmentation draws (default: %(default)s)")
    p.add_argument("--network", default=SSDConfig.network,
                   help="network whose anchors --stats draws (default: %(default)s)")
    p.add_argument("--data-shape", type=int, default=None, help="input side in pixels (default: the network's)")
    p.add_argument("--class-names", default=None, help="comma separated class names, or a file with one a line")
    p.add_argument("--stats", action="store_true", help="also write labels.png (label summary) beside --out")
    p.add_argument("--out", required=True, help="the grid PNG to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.num < 1:
        raise UserError(f"--num {args.num}: must be at least 1")
    if args.data_shape is not None and args.data_shape < 16:
        raise UserError(f"--data-shape {args.data_shape}: must be at least 16 pixels")
    if not args.out.lower().endswith(".png"):
        raise UserError(f"--out {args.out}: must end with .png")
    require_writable_dir("--out", args.out)
    class_names = parse_class_names(args.class_names) if args.class_names else None
    from evaluate.anchor_fit import read_record_objects, ssd_anchor_shapes
    from symbol.symbol_factory import DEFAULT_DATA_SHAPES

    if args.stats and args.network not in DEFAULT_DATA_SHAPES:
        raise UserError(f"--network: unknown SSD network {args.network!r}; known networks: "
                        f"{', '.join(sorted(DEFAULT_DATA_SHAPES))}")
    data_shape = args.data_shape or DEFAULT_DATA_SHAPES.get(args.network, 300)
    records = read_record_objects(args.rec)  # one-line errors for a bad .rec
    objects = np.concatenate(records) if records else np.zeros((0, 6))
    classes = objects[:, 0].astype(np.int64)
    if class_names is not None and classes.size and classes.max() >= len(class_names):
        raise UserError(f"--class-names lists {len(class_names)} names, but {args.rec} has class id {classes.max()}")
    images, labels, ids = augmented_batch(args.rec, args.augment, args.num, args.seed, data_shape)
    grid = draw_grid(images, labels, class_names, captions=[f"record {i}" for i in ids])
    print(f"wrote {write_png(args.out, grid)}: {len(images)} images of {args.rec} at {data_shape}x{data_shape}, "
          f"--augment {args.augment} --seed {args.seed}")
    if args.stats:
        path = os.path.join(os.path.dirname(os.path.abspath(args.out)), "labels.png")
        anchors = ssd_anchor_shapes(args.network, data_shape)
        image = np.concatenate([np.full(len(r), k) for k, r in enumerate(records)]).astype(np.int64)
        write_label_stats(objects[:, 1:5], classes, image, class_names, anchors, path, difficult=objects[:, 5] > 0,
                          title=f"{args.rec}: {classes.size} objects; anchors of {args.network} at {data_shape}",
                          num_images=len(records))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
