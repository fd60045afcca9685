"""``proposal_target``: sample the R-CNN training ROIs and their targets (numpy CustomOp).

Used in the training graph as::

    group = mx.sym.Custom(rois=rois, gt_boxes=gt_boxes, op_type='proposal_target',
                          num_classes=21, batch_images=1, batch_rois=128,
                          fg_fraction=0.25, fg_overlap=0.5, box_stds=(0.1, 0.1, 0.2, 0.2))

Inputs: ``rois`` [R, 5] rows ``[batch_index, x1, y1, x2, y2]`` (MultiProposal's
output) and ``gt_boxes`` [batch_images, M, 5] (or [M, 5] for one image) rows
``[x1, y1, x2, y2, cls]`` in pixels, classes 1-based (0 is background),
padding rows with ``cls = -1``.

Outputs, with ``N = batch_images * batch_rois``: ``rois`` [N, 5], ``label`` [N],
``bbox_target`` [N, 4 * num_classes] (class-specific
``bbox_transform(roi, gt) / box_stds`` in columns ``4*cls .. 4*cls+3``) and
``bbox_weight`` [N, 4 * num_classes] (1 in those columns). Backward returns a
zero gradient: the graph is cut here, as in the original.

Sampling per image: append the GT boxes to the ROIs; foreground = max IoU >=
``fg_overlap``, at most ``round(fg_fraction * batch_rois)`` drawn without
replacement; background = max IoU < ``fg_overlap`` fills the rest without
replacement. When there are too few background ROIs the rest is drawn again
from the background ROIs *with* replacement; an image without any background
ROI fills the rest from its foreground ROIs (keeping their labels), and an
image without GT boxes gets background rows only.

The random draws use a ``numpy.random.RandomState`` seeded by the op parameter
``seed`` or else the environment variable ``MXDET_RCNN_SEED`` (unseeded when
neither is set), so tests can fix them. A seed names one stream for the whole
process: Module re-creates the operator on every reshape (each batch of a new
image size), and a fresh ``RandomState(seed)`` each time would replay the same
draws for every batch. :func:`reset_seeded_streams` starts them again.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import ast
import os
from collections.abc import Sequence

import mxnet as mx
import numpy as np

from dataset.bbox import bbox_transform, iou_matrix


def sample_rois(
    rois: np.ndarray,
    gt_boxes: np.ndarray,
    num_classes: int,
    rois_per_image: int,
    fg_rois_per_image: int,
    fg_overlap: float,
    box_stds: Sequence[float],
    rng: np.random.RandomState,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``rois_per_image`` ROIs of one image.

    ``rois`` [R, 5] (all with the same batch index), ``gt_boxes`` [M, 5] real
    objects only (classes >= 1). Returns ``rois`` [n, 5], ``label`` [n],
    ``bbox_target`` and ``bbox_weight`` [n, 4 * num_classes], ``n = rois_per_image``.
    """
    if gt_boxes.shape[0] == 0:
        overlaps = np.zeros((rois.shape[0], 1))
        gt_boxes = np.zeros((1, 5))  # a dummy box nobody overlaps: every ROI is background
    else:
        overlaps = iou_matrix(rois[:, 1:], gt_boxes[:, :4], pixel_offset=1.0)
    gt_assignment = overlaps.argmax(axis=1)
    max_overlaps = overlaps[np.arange(rois.shape[0]), gt_assignment]

    fg_pool = np.flatnonzero(max_overlaps >= fg_overlap)
    bg_pool = np.flatnonzero(max_overlaps < fg_overlap)
    num_fg = min(fg_rois_per_image, fg_pool.size)
    fg = rng.choice(fg_pool, size=num_fg, replace=False)
    num_bg = min(rois_per_image - num_fg, bg_pool.size)
    bg = rng.choice(bg_pool, size=num_bg, replace=False)
    num_missing = rois_per_image - num_fg - num_bg
    if num_missing > 0:
        # too few candidates: repeat background ROIs (or, lacking any, foreground ones)
        pool = bg_pool if bg_pool.size else fg_pool
        extra = rng.choice(pool, size=num_missing, replace=True)
        if bg_pool.size:
            bg = np.concatenate([bg, extra])
        else:
            fg = np.concatenate([fg, extra])
    keep = np.concatenate([fg, bg]).astype(np.int64)

    label = gt_boxes[gt_assignment[keep], 4].copy()
    label[fg.size:] = 0
    sampled = rois[keep]
    targets = bbox_transform(sampled[:, 1:], gt_boxes[gt_assignment[keep], :4], box_stds, pixel_offset=1.0)

    bbox_target = np.zeros((keep.size, 4 * num_classes), dtype=np.float32)
    bbox_weight = np.zeros_like(bbox_target)
    fg_rows = np.arange(fg.size)
    columns = 4 * label[: fg.size].astype(np.int64)[:, None] + np.arange(4)[None, :]
    bbox_target[fg_rows[:, None], columns] = targets[: fg.size]
    bbox_weight[fg_rows[:, None], columns] = 1.0
    return sampled, label, bbox_target, bbox_weight


_SEEDED_STREAMS: dict[int, np.random.RandomState] = {}


def _random_stream(seed: int | None) -> np.random.RandomState:
    """The process-wide stream of ``seed``, or a fresh unseeded one."""
    if seed is None:
        return np.random.RandomState()
    return _SEEDED_STREAMS.setdefault(seed, np.random.RandomState(seed))


def reset_seeded_streams() -> None:
    """Restart every seeded stream from its seed (tests call this for repeatable runs)."""
    _SEEDED_STREAMS.clear()


class ProposalTargetOperator(mx.operator.CustomOp):
    """Forward: :func:`sample_rois` per image; backward: zero gradients."""

    def __init__(
        self,
        num_classes: int,
        batch_images: int,
        batch_rois: int,
        fg_fraction: float,
        fg_overlap: float,
        box_stds: Sequence[float],
        seed: int | None,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.batch_images = batch_images
        self.batch_rois = batch_rois
        self.fg_rois = int(round(fg_fraction * batch_rois))
        self.fg_overlap = fg_overlap
        self.box_stds = box_stds
        self.rng = _random_stream(seed)

    def forward(self, is_train, req, in_data, out_data, aux):
        all_rois = in_data[0].asnumpy().astype(np.float64)
        all_gt = in_data[1].asnumpy().astype(np.float64).reshape(self.batch_images, -1, 5)
        outputs = [[], [], [], []]
        for image in range(self.batch_images):
            gt = all_gt[image]
            gt = gt[gt[:, 4] >= 0]
            rois = all_rois[all_rois[:, 0] == image]
            gt_rois = np.hstack([np.full((gt.shape[0], 1), image, dtype=np.float64), gt[:, :4]])
            sampled = sample_rois(
                np.vstack([rois, gt_rois]), gt, self.num_classes, self.batch_rois, self.fg_rois,
                self.fg_overlap, self.box_stds, self.rng,
            )
            for store, value in zip(outputs, sampled):
                store.append(value)
        for index, parts in enumerate(outputs):
            self.assign(out_data[index], req[index], mx.nd.array(np.concatenate(parts)))

    def backward(self, req, out_grad, in_data, out_data, in_grad, aux):
        for index, grad in enumerate(in_grad):
            self.assign(grad, req[index], 0)


def _parse_seed(seed: str | None) -> int | None:
    text = seed if seed not in (None, "None", "") else os.environ.get("MXDET_RCNN_SEED")
    return None if text in (None, "") else int(text)


@mx.operator.register("proposal_target")
class ProposalTargetProp(mx.operator.CustomOpProp):
    """Shapes of ``proposal_target``; parameters arrive as strings (mxnet passes ``str(value)``)."""

    def __init__(
        self,
        num_classes: str,
        batch_images: str,
        batch_rois: str,
        fg_fraction: str = "0.25",
        fg_overlap: str = "0.5",
        box_stds: str = "(0.1, 0.1, 0.2, 0.2)",
        seed: str | None = None,
    ) -> None:
        super().__init__(need_top_grad=False)
        self._num_classes = int(num_classes)
        self._batch_images = int(batch_images)
        self._batch_rois = int(batch_rois)
        self._fg_fraction = float(fg_fraction)
        self._fg_overlap = float(fg_overlap)
        self._box_stds = tuple(float(v) for v in ast.literal_eval(box_stds))
        self._seed = _parse_seed(seed)

    def list_arguments(self):
        return ["rois", "gt_boxes"]

    def list_outputs(self):
        return ["rois_output", "label", "bbox_target", "bbox_weight"]

    def infer_shape(self, in_shape):
        num = self._batch_images * self._batch_rois
        out = [(num, 5), (num,), (num, 4 * self._num_classes), (num, 4 * self._num_classes)]
        return in_shape, out, []

    def create_operator(self, ctx, shapes, dtypes):
        return ProposalTargetOperator(
            self._num_classes, self._batch_images, self._batch_rois, self._fg_fraction,
            self._fg_overlap, self._box_stds, self._seed,
        )

    def declare_backward_dependency(self, out_grad, in_data, out_data):
        return []
