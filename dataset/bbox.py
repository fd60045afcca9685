"""Pure numpy box maths shared by the data side, the metrics and the detectors.

Boxes are corner rows ``[x1, y1, x2, y2]``. Two conventions exist and both are
needed:

* normalised SSD coordinates in [0, 1], where a box's width is ``x2 - x1``
  (``pixel_offset=0``);
* Pascal VOC / py-faster-rcnn pixel coordinates, where a box's width is
  ``x2 - x1 + 1`` (``pixel_offset=1``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def box_area(boxes: np.ndarray, pixel_offset: float = 0.0) -> np.ndarray:
    """Areas of ``boxes`` [N, 4] -> [N]; degenerate boxes have area 0."""
    boxes = np.asarray(boxes, dtype=np.float64)
    w = np.maximum(boxes[:, 2] - boxes[:, 0] + pixel_offset, 0.0)
    h = np.maximum(boxes[:, 3] - boxes[:, 1] + pixel_offset, 0.0)
    return w * h


def iou_matrix(boxes_a: np.ndarray, boxes_b: np.ndarray, pixel_offset: float = 0.0) -> np.ndarray:
    """Intersection over union of every pair: [N, 4] x [M, 4] -> [N, M]."""
    a = np.asarray(boxes_a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(ix2 - ix1 + pixel_offset, 0.0) * np.maximum(iy2 - iy1 + pixel_offset, 0.0)
    union = box_area(a, pixel_offset)[:, None] + box_area(b, pixel_offset)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou


def _center_form(boxes: np.ndarray, pixel_offset: float) -> tuple:
    w = boxes[:, 2] - boxes[:, 0] + pixel_offset
    h = boxes[:, 3] - boxes[:, 1] + pixel_offset
    cx = boxes[:, 0] + 0.5 * (w - pixel_offset)
    cy = boxes[:, 1] + 0.5 * (h - pixel_offset)
    return cx, cy, w, h


def bbox_transform(
    ex_rois: np.ndarray,
    gt_rois: np.ndarray,
    box_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    pixel_offset: float = 1.0,
) -> np.ndarray:
    """Regression targets that move ``ex_rois`` [N, 4] onto ``gt_rois`` [N, 4].

    Returns [N, 4] rows ``(dx, dy, dw, dh) / box_stds`` with
    ``dx = (gx - ex) / ew`` and ``dw = log(gw / ew)``: py-faster-rcnn's
    encoding with ``pixel_offset=1``, SSD's with ``pixel_offset=0`` and
    ``box_stds`` = the variances (.1, .1, .2, .2).
    """
    ex = np.asarray(ex_rois, dtype=np.float64).reshape(-1, 4)
    gt = np.asarray(gt_rois, dtype=np.float64).reshape(-1, 4)
    ex_cx, ex_cy, ex_w, ex_h = _center_form(ex, pixel_offset)
    gt_cx, gt_cy, gt_w, gt_h = _center_form(gt, pixel_offset)
    # ex widths are positive for any real anchor; guard log/div against zeros
    ex_w = np.maximum(ex_w, 1e-14)
    ex_h = np.maximum(ex_h, 1e-14)
    targets = np.stack(
        [
            (gt_cx - ex_cx) / ex_w,
            (gt_cy - ex_cy) / ex_h,
            np.log(np.maximum(gt_w, 1e-14) / ex_w),
            np.log(np.maximum(gt_h, 1e-14) / ex_h),
        ],
        axis=1,
    )
    return targets / np.asarray(box_stds, dtype=np.float64)


def bbox_pred(
    boxes: np.ndarray,
    deltas: np.ndarray,
    box_stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
    pixel_offset: float = 1.0,
) -> np.ndarray:
    """Apply ``deltas`` [N, 4K] (K boxes per row, e.g. one per class) to ``boxes`` [N, 4].

    The inverse of :func:`bbox_transform`; returns [N, 4K] corner boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    deltas = np.asarray(deltas, dtype=np.float64)
    if boxes.shape[0] == 0:
        return np.zeros((0, deltas.shape[1]))
    cx, cy, w, h = _center_form(boxes, pixel_offset)
    d = deltas.reshape(deltas.shape[0], -1, 4) * np.asarray(box_stds, dtype=np.float64)
    pcx = d[:, :, 0] * w[:, None] + cx[:, None]
    pcy = d[:, :, 1] * h[:, None] + cy[:, None]
    # clip log-space deltas so an untrained head cannot overflow exp()
    pw = np.exp(np.minimum(d[:, :, 2], 10.0)) * w[:, None]
    ph = np.exp(np.minimum(d[:, :, 3], 10.0)) * h[:, None]
    half = 0.5 * pixel_offset
    out = np.stack(
        [
            pcx - 0.5 * pw + half,
            pcy - 0.5 * ph + half,
            pcx + 0.5 * pw - half,
            pcy + 0.5 * ph - half,
        ],
        axis=2,
    )
    return out.reshape(deltas.shape[0], -1)


def clip_boxes(boxes: np.ndarray, im_shape: Sequence[int]) -> np.ndarray:
    """Clip pixel boxes [N, 4K] to an image of shape ``(height, width)``."""
    boxes = np.array(boxes, dtype=np.float64, copy=True)
    h, w = im_shape[:2]
    boxes[:, 0::4] = np.clip(boxes[:, 0::4], 0, w - 1)
    boxes[:, 1::4] = np.clip(boxes[:, 1::4], 0, h - 1)
    boxes[:, 2::4] = np.clip(boxes[:, 2::4], 0, w - 1)
    boxes[:, 3::4] = np.clip(boxes[:, 3::4], 0, h - 1)
    return boxes


def nms(dets: np.ndarray, thresh: float, pixel_offset: float = 1.0) -> np.ndarray:
    """Greedy non-maximum suppression.

    ``dets`` is [N, 5] rows ``[x1, y1, x2, y2, score]``. Returns the indices kept,
    highest score first. A box is dropped when its IoU with a kept box is
    strictly above ``thresh``.
    """
    dets = np.asarray(dets, dtype=np.float64).reshape(-1, 5)
    order = np.argsort(-dets[:, 4], kind="stable")
    boxes = dets[:, :4]
    areas = box_area(boxes, pixel_offset)
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        xx1 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.maximum(xx2 - xx1 + pixel_offset, 0.0) * np.maximum(yy2 - yy1 + pixel_offset, 0.0)
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-14)
        order = rest[iou <= thresh]
    return np.asarray(keep, dtype=np.int64)
