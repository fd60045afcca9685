"""RPN anchors for Faster R-CNN: generation (py-faster-rcnn layout) and target assignment.

Boxes are pixel corner rows ``[x1, y1, x2, y2]`` with inclusive ends
(``pixel_offset=1``, a box ``[0, 0, 15, 15]`` is 16 pixels wide), as in
py-faster-rcnn.

Anchor order: for a feature map of ``feat_height x feat_width`` and ``A`` base
anchors, row ``k * A + a`` is base anchor ``a`` shifted to cell ``k = y * feat_width + x``.
:func:`anchor_targets_to_rpn_layout` turns per-anchor rows into the layout the
RPN outputs use (``rpn_cls_score`` channel ``a`` at cell ``(y, x)``).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dataset.bbox import bbox_transform, iou_matrix


def _whctrs(anchors: np.ndarray) -> tuple:
    """Width, height and centre of inclusive-end boxes [N, 4]."""
    w = anchors[:, 2] - anchors[:, 0] + 1
    h = anchors[:, 3] - anchors[:, 1] + 1
    return w, h, anchors[:, 0] + 0.5 * (w - 1), anchors[:, 1] + 0.5 * (h - 1)


def _mkanchors(ws: np.ndarray, hs: np.ndarray, x_ctr: np.ndarray, y_ctr: np.ndarray) -> np.ndarray:
    """Boxes [N, 4] of widths ``ws`` and heights ``hs`` around the given centres."""
    return np.stack(
        [x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1), x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)],
        axis=1,
    )


def base_anchors(base_size: int, ratios: Sequence[float], scales: Sequence[float]) -> np.ndarray:
    """py-faster-rcnn's ``generate_anchors``: [len(ratios) * len(scales), 4].

    Start from ``[0, 0, base_size - 1, base_size - 1]``; for each aspect ratio
    (h/w) keep the area and round the sides, then multiply the sides by each
    scale. Rows are ordered ratio-major, scale-minor.
    """
    base = np.array([[0, 0, base_size - 1, base_size - 1]], dtype=np.float64)
    w, h, x_ctr, y_ctr = _whctrs(base)
    ratios = np.asarray(ratios, dtype=np.float64)
    scales = np.asarray(scales, dtype=np.float64)
    # ratio enumeration: same area, rounded sides
    ws = np.round(np.sqrt(w * h / ratios))
    hs = np.round(ws * ratios)
    # scale enumeration for every ratio anchor (ratio-major order)
    ws_all = (ws[:, None] * scales[None, :]).ravel()
    hs_all = (hs[:, None] * scales[None, :]).ravel()
    return _mkanchors(ws_all, hs_all, np.full_like(ws_all, x_ctr[0]), np.full_like(hs_all, y_ctr[0]))


class AnchorGenerator:
    """All anchors of a feature map of stride ``feat_stride``."""

    def __init__(
        self,
        feat_stride: int = 16,
        anchor_scales: Sequence[float] = (8, 16, 32),
        anchor_ratios: Sequence[float] = (0.5, 1, 2),
    ) -> None:
        self.feat_stride = int(feat_stride)
        self.base_anchors = base_anchors(self.feat_stride, anchor_ratios, anchor_scales)

    @property
    def num_anchors(self) -> int:
        """A, the number of anchors per feature-map cell."""
        return self.base_anchors.shape[0]

    def generate(self, feat_height: int, feat_width: int) -> np.ndarray:
        """Anchors [feat_height * feat_width * A, 4] in image pixels (see module doc for the order)."""
        shift_x = np.arange(feat_width) * self.feat_stride
        shift_y = np.arange(feat_height) * self.feat_stride
        sx, sy = np.meshgrid(shift_x, shift_y)
        shifts = np.stack([sx.ravel(), sy.ravel(), sx.ravel(), sy.ravel()], axis=1)
        return (shifts[:, None, :] + self.base_anchors[None, :, :]).reshape(-1, 4)


class AnchorSampler:
    """Assign RPN training labels and regression targets to anchors.

    Only anchors inside the image (within ``allowed_border``) are labelled.
    Foreground: IoU >= ``fg_overlap`` with some GT, or tied for a GT's best
    overlap when that overlap is > 0 (a GT no inside anchor touches makes no
    foreground); background: best IoU < ``bg_overlap``. At most
    ``fg_fraction * batch_rois`` foreground anchors are kept and background
    fills the rest of ``batch_rois``. With no GT, up to ``batch_rois`` inside
    anchors (all of them when fewer lie inside) become background.
    Differences from the original: docs/upstream.md.
    """

    def __init__(
        self,
        allowed_border: float = 0,
        batch_rois: int = 256,
        fg_fraction: float = 0.5,
        fg_overlap: float = 0.7,
        bg_overlap: float = 0.3,
        seed: int | None = None,
    ) -> None:
        self.allowed_border = allowed_border
        self.batch_rois = int(batch_rois)
        self.max_fg = int(fg_fraction * batch_rois)
        self.fg_overlap = fg_overlap
        self.bg_overlap = bg_overlap
        self.rng = np.random.RandomState(seed)

    def assign(
        self, anchors: np.ndarray, gt_boxes: np.ndarray, im_height: float, im_width: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Labels and targets for ``anchors`` [N, 4] given ``gt_boxes`` [M, 5] rows ``[x1, y1, x2, y2, cls]``.

        Rows with ``cls < 0`` (padding) are ignored; real classes are >= 1.
        Returns ``label`` [N] (1 FG, 0 BG, -1 ignored), ``bbox_target`` [N, 4]
        (``bbox_transform`` with stds 1, non-zero on FG only) and
        ``bbox_weight`` [N, 4] (1 on FG rows).
        """
        anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
        gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 5)
        gt_boxes = gt_boxes[gt_boxes[:, 4] >= 0]
        num_anchors = anchors.shape[0]
        label = np.full(num_anchors, -1.0, dtype=np.float32)
        bbox_target = np.zeros((num_anchors, 4), dtype=np.float32)
        bbox_weight = np.zeros((num_anchors, 4), dtype=np.float32)

        border = self.allowed_border
        inside = np.flatnonzero(
            (anchors[:, 0] >= -border)
            & (anchors[:, 1] >= -border)
            & (anchors[:, 2] < im_width + border)
            & (anchors[:, 3] < im_height + border)
        )
        if inside.size == 0:
            return label, bbox_target, bbox_weight
        if gt_boxes.shape[0] == 0:
            bg = self.rng.choice(inside, size=min(self.batch_rois, inside.size), replace=False)
            label[bg] = 0
            return label, bbox_target, bbox_weight

        overlaps = iou_matrix(anchors[inside], gt_boxes[:, :4], pixel_offset=1.0)  # [n_inside, M]
        argmax_gt = overlaps.argmax(axis=1)
        max_overlaps = overlaps[np.arange(inside.size), argmax_gt]
        gt_max = overlaps.max(axis=0)
        # every anchor tied for the best overlap of some GT (ties kept, as py-faster-rcnn)
        is_best = ((overlaps == gt_max[None, :]) & (gt_max[None, :] > 0)).any(axis=1)

        inside_label = np.full(inside.size, -1.0, dtype=np.float32)
        inside_label[max_overlaps < self.bg_overlap] = 0
        inside_label[is_best | (max_overlaps >= self.fg_overlap)] = 1

        fg = np.flatnonzero(inside_label == 1)
        if fg.size > self.max_fg:
            inside_label[self.rng.choice(fg, size=fg.size - self.max_fg, replace=False)] = -1
        num_bg = self.batch_rois - int(np.sum(inside_label == 1))
        bg = np.flatnonzero(inside_label == 0)
        if bg.size > num_bg:
            inside_label[self.rng.choice(bg, size=bg.size - num_bg, replace=False)] = -1

        fg = np.flatnonzero(inside_label == 1)
        label[inside] = inside_label
        fg_anchor = inside[fg]
        bbox_target[fg_anchor] = bbox_transform(anchors[fg_anchor], gt_boxes[argmax_gt[fg], :4])
        bbox_weight[fg_anchor] = 1.0
        return label, bbox_target, bbox_weight


def anchor_targets_to_rpn_layout(
    label: np.ndarray, bbox_target: np.ndarray, bbox_weight: np.ndarray, feat_height: int, feat_width: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reorder per-anchor rows (generator order) into the RPN output layout.

    ``label`` [K*A] -> [A * feat_height * feat_width], the label
    ``SoftmaxOutput(multi_output=True)`` expects for ``rpn_cls_score_reshape``
    [B, 2, A * feat_height, feat_width]; ``bbox_target`` / ``bbox_weight``
    [K*A, 4] -> [4A, feat_height, feat_width] like ``rpn_bbox_pred``.
    """
    num_anchors = label.size // (feat_height * feat_width)
    label = label.reshape(feat_height, feat_width, num_anchors).transpose(2, 0, 1).reshape(-1)

    def to_maps(rows: np.ndarray) -> np.ndarray:
        return rows.reshape(feat_height, feat_width, 4 * num_anchors).transpose(2, 0, 1)

    return label, to_maps(bbox_target), to_maps(bbox_weight)
