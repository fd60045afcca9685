"""Faster R-CNN data iterators over the SSD detection ``.rec`` files.

The records are those of ``im2rec --pack-label`` (``tools/prepare_dataset.py``):
the header label is ``[2, 6, cls, x1, y1, x2, y2, difficult, ...]`` — header
width, object width, then one row per object with 0-based classes and
coordinates normalised by the image size (``x1 = first column / width``,
``x2 = (last column + 1) / width``).

R-CNN works in pixels with inclusive ends (``pixel_offset=1``), so an object
becomes ``x1 = x1n * W``, ``x2 = x2n * W - 1`` (then times the resize scale),
and its class becomes ``cls + 1`` (0 is background). :func:`normalise_boxes`
in ``evaluate/rcnn_detect.py`` undoes this for the VOC metric.

* :class:`AnchorLoader` — training batches ``data = [data, im_info, gt_boxes]``
  and ``label = [label, bbox_target, bbox_weight]`` with RPN targets from
  :class:`dataset.rcnn_anchor.AnchorSampler`.
* :class:`TestLoader` — one image per batch, ``data = [data, im_info]``, and the
  normalised ground truth as the batch label for the VOC metric.

Preprocessing (both): resize so the short side is ``short_side`` unless the
long side would pass ``long_side``, BGR -> RGB, ``(x - mean) / std``, CHW.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import mxnet as mx
import numpy as np

from config.errors import UserError
from config.train_config import RCNNConfig
from dataset.rcnn_anchor import AnchorGenerator, AnchorSampler, anchor_targets_to_rpn_layout
from dataset.recordio import detection_objects

logger = logging.getLogger(__name__)

FeatShapeFn = Callable[[int, int], tuple[int, int]]


class DetRecord:
    """Random access to a detection ``.rec`` + ``.idx`` pair; labels are read once at open.

    ``keys`` lists the record ids in file order; ``objects[key]`` is [n, 6]
    rows ``[cls, x1, y1, x2, y2, difficult]`` (normalised, 0-based classes;
    a missing difficult column reads as 0).
    """

    def __init__(self, rec_path: str) -> None:
        idx_path = os.path.splitext(rec_path)[0] + ".idx"
        for path in (rec_path, idx_path):
            if not os.path.isfile(path):
                raise UserError(f"{path}: no such file (pack the .rec with im2rec, which writes the .idx)")
        self.rec_path = rec_path
        self._record = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "r")
        self.keys: list[int] = sorted(self._record.keys)
        self.objects: dict[int, np.ndarray] = {
            key: detection_objects(mx.recordio.unpack(self._record.read_idx(key))[0].label, self.rec_path, key)
            for key in self.keys
        }

    def read_image(self, key: int) -> np.ndarray:
        """The decoded BGR image [H, W, 3] (uint8) of record ``key``."""
        header, image = mx.recordio.unpack_img(self._record.read_idx(key), cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(f"{self.rec_path}: record {key}: image cannot be decoded")
        return image


def resize_scale(height: int, width: int, short_side: int, long_side: int) -> float:
    """Scale that brings the short side to ``short_side`` without the long side passing ``long_side``."""
    scale = short_side / min(height, width)
    if round(scale * max(height, width)) > long_side:
        scale = long_side / max(height, width)
    return scale


def preprocess(
    image_bgr: np.ndarray, scale: float, means: Sequence[float], stds: Sequence[float], flip: bool
) -> np.ndarray:
    """Resize by ``scale``, mirror if ``flip``, BGR -> RGB, ``(x - mean) / std``: [3, H', W'] float32."""
    height, width = image_bgr.shape[:2]
    size = (int(round(width * scale)), int(round(height * scale)))
    image = cv2.resize(image_bgr, size, interpolation=cv2.INTER_LINEAR)
    if flip:
        image = image[:, ::-1]
    rgb = image[:, :, ::-1].astype(np.float32)
    rgb = (rgb - np.asarray(means, dtype=np.float32)) / np.asarray(stds, dtype=np.float32)
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def objects_to_gt_boxes(
    objects: np.ndarray, height: int, width: int, scale: float, resized_width: int, flip: bool
) -> np.ndarray:
    """Normalised objects [n, 6] of a ``height x width`` image -> gt_boxes [n, 5] in resized pixels.

    Rows ``[x1, y1, x2, y2, cls + 1]`` with inclusive ends; ``flip`` mirrors
    them in an image ``resized_width`` pixels wide (``x1' = W' - 1 - x2``).
    """
    boxes = objects[:, 1:5] * np.array([width, height, width, height], dtype=np.float64)
    boxes[:, 2:] -= 1.0
    boxes *= scale
    if flip:
        boxes[:, [0, 2]] = resized_width - 1 - boxes[:, [2, 0]]
    return np.hstack([boxes, objects[:, :1] + 1.0])


def feat_shape_from_symbol(symbol: mx.sym.Symbol, output: str = "rpn_cls_score_output") -> FeatShapeFn:
    """``fn(height, width) -> (feat_height, feat_width)`` of the RPN score map, inferred from ``symbol``."""
    feature = symbol.get_internals()[output]
    cache: dict[tuple[int, int], tuple[int, int]] = {}

    def feat_shape(height: int, width: int) -> tuple[int, int]:
        if (height, width) not in cache:
            _, out_shapes, _ = feature.infer_shape(data=(1, 3, height, width))
            cache[(height, width)] = tuple(out_shapes[0][2:])
        return cache[(height, width)]

    return feat_shape


@dataclass(frozen=True)
class LoaderOptions:
    """How :class:`AnchorLoader` walks the records; the image and anchor settings come from the ``RCNNConfig``.

    ``batch_size`` images per batch; ``shuffle`` the order and ``flip`` half of the images at
    random (from ``seed``); ``use_difficult`` keeps difficult objects; ``gt_boxes`` has at least
    ``max_gt`` rows; ``num_parts`` / ``part_index`` pick a distributed worker's shard.
    """

    batch_size: int = 1
    shuffle: bool = True
    flip: bool = True
    use_difficult: bool = False
    max_gt: int = 100
    seed: int | None = None
    num_parts: int = 1
    part_index: int = 0


class AnchorLoader(mx.io.DataIter):
    """Training batches for the Faster R-CNN graph, read from a detection ``.rec``.

    The image sides and pixel means/stds (``cfg.img_*``) and the RPN anchors and their
    sampling (``cfg.rpn_*``) come from the run's ``RCNNConfig``; batching, order, flips and
    sharding from ``options`` (:class:`LoaderOptions`). One batch holds ``batch_size``
    images (the original used one per device), zero-padded to the largest of them:

    * ``data`` [B, 3, H, W]; ``im_info`` [B, 3] rows ``(height, width, scale)``
      of each resized image; ``gt_boxes`` [B, G, 5] rows ``[x1, y1, x2, y2, cls]``
      (pixels, classes 1-based) padded with -1 rows, ``G = max(max_gt, objects)``;
    * ``label`` [B, A*fh*fw] (1 FG, 0 BG, -1 ignored), ``bbox_target`` and
      ``bbox_weight`` [B, 4A, fh, fw], where ``fh x fw = feat_shape(H, W)``.

    ``provide_data`` / ``provide_label`` give the largest shapes (a
    ``long_side`` square image) to bind with; every batch carries its own
    ``provide_data`` / ``provide_label``, which ``Module.forward`` reshapes to.
    Images without objects (difficult ones count as none unless
    ``use_difficult``) are skipped and counted in ``num_skipped``. The last
    incomplete batch of an epoch is dropped, as in the original.

    ``num_parts`` / ``part_index`` (a distributed job's workers and rank) keep
    every ``num_parts``-th image with objects, starting at ``part_index``:
    disjoint shards whose sizes differ by at most one; ``shard_sizes`` lists them all.
    """

    def __init__(
        self, rec_path: str, feat_shape: FeatShapeFn, cfg: RCNNConfig, options: LoaderOptions | None = None
    ) -> None:
        options = options or LoaderOptions()
        batch_size, num_parts = options.batch_size, options.num_parts
        super().__init__(batch_size)
        self.record = DetRecord(rec_path)
        self.feat_shape = feat_shape
        self.short_side, self.long_side = cfg.img_short_side, cfg.img_long_side
        self.pixel_means, self.pixel_stds = cfg.img_pixel_means, cfg.img_pixel_stds
        self.generator = AnchorGenerator(cfg.rpn_feat_stride, cfg.rpn_anchor_scales, cfg.rpn_anchor_ratios)
        self.sampler = AnchorSampler(
            cfg.rpn_allowed_border, cfg.rpn_batch_rois, cfg.rpn_fg_fraction, cfg.rpn_fg_overlap, cfg.rpn_bg_overlap,
            seed=options.seed,
        )
        self.shuffle, self.flip, self.max_gt = options.shuffle, options.flip, options.max_gt
        self.rng = np.random.RandomState(options.seed)

        self.objects = {
            key: objects if options.use_difficult else objects[objects[:, 5] == 0]
            for key, objects in self.record.objects.items()
        }
        usable = [key for key in self.record.keys if self.objects[key].shape[0] > 0]
        self.num_skipped = len(self.record.keys) - len(usable)
        self.shard_sizes = [len(usable[part::num_parts]) for part in range(num_parts)]
        self.keys = usable[options.part_index::num_parts]
        if self.num_skipped:
            logger.info("%s: skipped %d of %d images without objects", rec_path, self.num_skipped,
                        len(self.record.keys))
        if len(self.keys) < batch_size:
            raise UserError(f"{rec_path}: {len(self.keys)} images with objects, fewer than one batch")
        self._order: list[int] = []
        self._cursor = 0
        self.reset()

    @classmethod
    def from_config(cls, rec_path: str, cfg: RCNNConfig, feat_shape: FeatShapeFn, batch_size: int = 1,
                    seed: int | None = None, num_parts: int = 1, part_index: int = 0) -> AnchorLoader:
        """The training loader of ``cfg`` (``batch_size`` images per batch, shuffled and flipped).

        Difficult objects are dropped (``LoaderOptions.use_difficult`` False), whatever
        ``cfg.use_difficult`` says: that flag is about validation.
        """
        options = LoaderOptions(batch_size=batch_size, seed=seed, num_parts=num_parts, part_index=part_index)
        return cls(rec_path, feat_shape, cfg, options)

    def __len__(self) -> int:
        """Batches per epoch."""
        return len(self.keys) // self.batch_size

    def _descs(self, height: int, width: int, num_gt: int) -> tuple[list, list]:
        batch = self.batch_size
        feat_height, feat_width = self.feat_shape(height, width)
        num_anchors = self.generator.num_anchors
        data = [
            mx.io.DataDesc("data", (batch, 3, height, width)),
            mx.io.DataDesc("im_info", (batch, 3)),
            mx.io.DataDesc("gt_boxes", (batch, num_gt, 5)),
        ]
        label = [
            mx.io.DataDesc("label", (batch, num_anchors * feat_height * feat_width)),
            mx.io.DataDesc("bbox_target", (batch, 4 * num_anchors, feat_height, feat_width)),
            mx.io.DataDesc("bbox_weight", (batch, 4 * num_anchors, feat_height, feat_width)),
        ]
        return data, label

    @property
    def provide_data(self) -> list:
        return self._descs(self.long_side, self.long_side, self.max_gt)[0]

    @property
    def provide_label(self) -> list:
        return self._descs(self.long_side, self.long_side, self.max_gt)[1]

    def reset(self) -> None:
        self._order = list(self.rng.permutation(self.keys)) if self.shuffle else list(self.keys)
        self._cursor = 0

    def next(self) -> mx.io.DataBatch:
        if self._cursor + self.batch_size > len(self._order):
            raise StopIteration
        keys = self._order[self._cursor: self._cursor + self.batch_size]
        self._cursor += self.batch_size
        return self.load_batch(keys)

    def load_batch(self, keys: Sequence[int]) -> mx.io.DataBatch:
        """The batch of records ``keys`` (random flips drawn from the loader's RNG)."""
        images, im_info, gt_list = [], [], []
        for key in keys:
            image = self.record.read_image(key)
            height, width = image.shape[:2]
            scale = resize_scale(height, width, self.short_side, self.long_side)
            flip = self.flip and self.rng.rand() < 0.5
            data = preprocess(image, scale, self.pixel_means, self.pixel_stds, flip)
            images.append(data)
            im_info.append((data.shape[1], data.shape[2], scale))
            gt_list.append(objects_to_gt_boxes(self.objects[key], height, width, scale, data.shape[2], flip))

        height = max(image.shape[1] for image in images)
        width = max(image.shape[2] for image in images)
        num_gt = max([self.max_gt] + [gt.shape[0] for gt in gt_list])
        batch = len(keys)
        data = np.zeros((batch, 3, height, width), dtype=np.float32)
        gt_boxes = np.full((batch, num_gt, 5), -1.0, dtype=np.float32)
        for index, (image, gt) in enumerate(zip(images, gt_list)):
            data[index, :, : image.shape[1], : image.shape[2]] = image
            gt_boxes[index, : gt.shape[0]] = gt

        feat_height, feat_width = self.feat_shape(height, width)
        anchors = self.generator.generate(feat_height, feat_width)
        targets = [
            anchor_targets_to_rpn_layout(
                *self.sampler.assign(anchors, gt, info[0], info[1]), feat_height, feat_width
            )
            for gt, info in zip(gt_list, im_info)
        ]
        label, bbox_target, bbox_weight = (np.stack(parts) for parts in zip(*targets))
        data_descs, label_descs = self._descs(height, width, num_gt)
        return mx.io.DataBatch(
            data=[mx.nd.array(data), mx.nd.array(np.asarray(im_info, dtype=np.float32)), mx.nd.array(gt_boxes)],
            label=[mx.nd.array(label), mx.nd.array(bbox_target), mx.nd.array(bbox_weight)],
            pad=0, index=list(keys), provide_data=data_descs, provide_label=label_descs,
        )


class TestLoader(mx.io.DataIter):
    """Evaluation batches of one image, in file order, without flips.

    Each batch has ``data = [data [1, 3, H, W], im_info [1, 3]]``, ``label =
    [gt [1, n, 6]]`` — the record's objects ``[cls, x1, y1, x2, y2, difficult]``
    (normalised, 0-based classes, every object kept; one row of -1 when there
    are none) — ``index = [record key]`` and ``orig_shape = (height, width)``
    of the stored image, needed to normalise the detections.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        rec_path: str,
        short_side: int = 600,
        long_side: int = 1000,
        pixel_means: Sequence[float] = (0.0, 0.0, 0.0),
        pixel_stds: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__(1)
        self.record = DetRecord(rec_path)
        self.short_side, self.long_side = short_side, long_side
        self.pixel_means, self.pixel_stds = pixel_means, pixel_stds
        self._cursor = 0

    @classmethod
    def from_config(cls, rec_path: str, cfg: RCNNConfig) -> TestLoader:
        """The evaluation loader of ``cfg``'s image sides and pixel means/stds."""
        return cls(rec_path, cfg.img_short_side, cfg.img_long_side, cfg.img_pixel_means, cfg.img_pixel_stds)

    def __len__(self) -> int:
        return len(self.record.keys)

    @property
    def provide_data(self) -> list:
        return [mx.io.DataDesc("data", (1, 3, self.long_side, self.long_side)), mx.io.DataDesc("im_info", (1, 3))]

    @property
    def provide_label(self) -> list:
        return []

    def reset(self) -> None:
        self._cursor = 0

    def next(self) -> mx.io.DataBatch:
        if self._cursor >= len(self.record.keys):
            raise StopIteration
        key = self.record.keys[self._cursor]
        self._cursor += 1
        image = self.record.read_image(key)
        height, width = image.shape[:2]
        scale = resize_scale(height, width, self.short_side, self.long_side)
        data = preprocess(image, scale, self.pixel_means, self.pixel_stds, flip=False)
        im_info = np.array([[data.shape[1], data.shape[2], scale]], dtype=np.float32)
        objects = self.record.objects[key]
        gt = objects[None] if objects.shape[0] else np.full((1, 1, 6), -1.0)
        batch = mx.io.DataBatch(
            data=[mx.nd.array(data[None]), mx.nd.array(im_info)], label=[mx.nd.array(gt)], pad=0, index=[key],
            provide_data=[mx.io.DataDesc("data", (1,) + data.shape), mx.io.DataDesc("im_info", (1, 3))],
        )
        batch.orig_shape = (height, width)
        return batch
