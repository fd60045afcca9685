"""Pascal VOC mean average precision as ``mx.metric.EvalMetric`` (for Module.score / Module.fit).

The metrics read the detector output ``det_out`` [batch, num_det, 6], rows
``[cls, score, xmin, ymin, xmax, ymax]`` (``cls = -1`` for rows the detection
layer filtered out), and the labels [batch, max_obj, >=5], rows ``[cls, xmin,
ymin, xmax, ymax, (difficult)]`` padded with -1 rows. Matching follows the VOC
devkit, per image and class:

* detections are taken in descending score order (ties keep their order);
* a detection matches the ground-truth box it overlaps most, and only when
  that IoU is *strictly* above ``ovp_thresh`` (IoU exactly 0.5 is a miss);
* the first detection matched to a box is a true positive, later ones are
  false positives, as are detections matching nothing;
* a detection matched to a ``difficult`` box counts as neither, and
  difficult boxes are not counted as positives, unless ``use_difficult``;
* a class with no ground truth in the image makes all its detections there
  false positives.

Labels normalised as dataset/pascal_voc.py does (a box's continuous extent,
``(xmin - 1) / width`` to ``xmax / width``) give exactly the devkit's +1 pixel
IoUs, so these metrics agree with :func:`evaluate.eval_voc.voc_eval`
(tests/evaluate/test_eval_voc.py checks this on random scenes).

Images without any valid label (``cls >= 0``) are skipped, as in the
original; the file-based devkit evaluation would count detections on them as
false positives. AP values come from :func:`evaluate.eval_voc.voc_ap`. The mAP
averages the classes that have ground truth; a class without ground truth
reports AP ``nan``.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import mxnet as mx
import numpy as np

from dataset.bbox import iou_matrix
from evaluate.eval_voc import voc_ap


def as_numpy(array) -> np.ndarray:
    """An ``mx.nd.NDArray`` (or anything array-like) as a numpy array."""
    return array.asnumpy() if isinstance(array, mx.nd.NDArray) else np.asarray(array)


def match_detections(
    scores: np.ndarray,
    boxes: np.ndarray,
    gt_boxes: np.ndarray,
    gt_ignore: np.ndarray,
    ovp_thresh: float,
    pixel_offset: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Match one image's detections of one class to its ground truth.

    ``scores`` [K], ``boxes`` [K, 4] are the detections, ``gt_boxes`` [G, 4]
    the ground truth and ``gt_ignore`` [G] (bool) marks boxes whose matches
    count neither way (difficult ones). Returns ``(scores, is_tp)``, both
    over the detections that count, in descending score order; ``is_tp`` is
    True for a true positive and False for a false positive.
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-scores, kind="stable")
    scores, boxes = scores[order], boxes[order]
    if len(gt_boxes) == 0:
        return scores, np.zeros(len(scores), dtype=bool)
    overlaps = iou_matrix(boxes, gt_boxes, pixel_offset)  # [K, G]
    best_gt = overlaps.argmax(axis=1)
    best_iou = overlaps[np.arange(len(boxes)), best_gt]
    taken = np.zeros(len(gt_boxes), dtype=bool)
    counted = np.ones(len(scores), dtype=bool)
    is_tp = np.zeros(len(scores), dtype=bool)
    for k, (gt_index, iou) in enumerate(zip(best_gt, best_iou)):
        if iou <= ovp_thresh:
            continue  # a miss: false positive
        if gt_ignore[gt_index]:
            counted[k] = False
        elif not taken[gt_index]:
            is_tp[k] = True
            taken[gt_index] = True
    return scores[counted], is_tp[counted]


class MApMetric(mx.metric.EvalMetric):
    """VOC2010+ mean average precision: the area under the precision envelope.

    Parameters
    ----------
    ovp_thresh : a match needs IoU strictly above this.
    use_difficult : count difficult boxes as ordinary ground truth.
    class_names : names of the classes, index = class id; without them the
        per-class results are named by class id.
    pred_idx : which output of the network is ``det_out`` (3 in the training
        graph, 0 in the inference graph).
    roc_output_path : if set, :meth:`get` also writes one precision/recall
        PNG per class into this folder (see :mod:`evaluate.pr_curve`).
    pixel_offset : 0 for normalised coordinates (SSD, no +1); 1 for pixel
        coordinates with the VOC devkit's ``width = x2 - x1 + 1``.

    :meth:`get` returns ``(names, values)``: one AP per class (``nan`` for a
    class without ground truth) and ``'mAP'`` last, the mean over the classes
    that have ground truth. Results accumulate over :meth:`update` calls until
    :meth:`reset`.
    """

    use_07_metric = False

    def __init__(
        self,
        ovp_thresh: float = 0.5,
        use_difficult: bool = False,
        class_names: Sequence[str] | None = None,
        pred_idx: int = 0,
        roc_output_path: str | None = None,
        pixel_offset: float = 0.0,
    ) -> None:
        self.ovp_thresh = float(ovp_thresh)
        self.use_difficult = bool(use_difficult)
        self.class_names = list(class_names) if class_names is not None else None
        self.pred_idx = int(pred_idx)
        self.roc_output_path = roc_output_path
        self.pixel_offset = float(pixel_offset)
        super().__init__("mAP")

    def reset(self) -> None:
        """Forget every image seen so far."""
        super().reset()
        self._scores: dict[int, list[np.ndarray]] = defaultdict(list)
        self._is_tp: dict[int, list[np.ndarray]] = defaultdict(list)
        self._num_positives: dict[int, int] = defaultdict(int)

    def reset_local(self) -> None:
        """AP has no running window: the local and global results are the same."""
        self.reset()

    def update(self, labels: Sequence, preds: Sequence) -> None:
        """Add a batch: ``labels[0]`` [B, max_obj, >=5] and ``preds[pred_idx]`` [B, N, 6]."""
        label_batch = as_numpy(labels[0])
        det_batch = as_numpy(preds[self.pred_idx])
        for label, dets in zip(label_batch, det_batch):
            self._update_image(label, dets)

    def _update_image(self, label: np.ndarray, dets: np.ndarray) -> None:
        gt = label[label[:, 0] >= 0]
        if gt.shape[0] == 0:
            return
        gt_cls = gt[:, 0].astype(int)
        if gt.shape[1] >= 6 and not self.use_difficult:
            gt_ignore = gt[:, 5] > 0
        else:
            gt_ignore = np.zeros(gt.shape[0], dtype=bool)
        dets = dets[dets[:, 0] >= 0]
        det_cls = dets[:, 0].astype(int)
        for cid in np.union1d(gt_cls, det_cls).tolist():
            gt_mask = gt_cls == cid
            self._num_positives[cid] += int(np.sum(~gt_ignore[gt_mask]))
            class_dets = dets[det_cls == cid]
            if class_dets.shape[0] == 0:
                continue
            scores, is_tp = match_detections(
                class_dets[:, 1],
                class_dets[:, 2:6],
                gt[gt_mask, 1:5],
                gt_ignore[gt_mask],
                self.ovp_thresh,
                self.pixel_offset,
            )
            self._scores[cid].append(scores)
            self._is_tp[cid].append(is_tp)

    def _class_ids(self) -> list[int]:
        seen = set(self._num_positives)
        if self.class_names is not None:
            seen |= set(range(len(self.class_names)))
        return sorted(seen)

    def _class_name(self, cid: int) -> str:
        if self.class_names is not None and cid < len(self.class_names):
            return self.class_names[cid]
        return str(cid)

    def _recall_precision(self, cid: int) -> tuple[np.ndarray, np.ndarray]:
        """Cumulative recall and precision [D] of class ``cid`` over all images."""
        scores = np.concatenate(self._scores[cid]) if self._scores[cid] else np.zeros(0)
        is_tp = np.concatenate(self._is_tp[cid]) if self._is_tp[cid] else np.zeros(0, dtype=bool)
        # stable: equal scores keep image order, then per-image score order
        order = np.argsort(-scores, kind="stable")
        tp = np.cumsum(is_tp[order])
        fp = np.cumsum(~is_tp[order])
        recall = tp / float(self._num_positives[cid])
        precision = tp / np.maximum(tp + fp, 1)
        return recall, precision

    def pr_curves(self) -> dict[str, tuple[np.ndarray, np.ndarray, float]]:
        """``{class name: (precision [D], recall [D], AP)}`` for every class with ground truth."""
        curves = {}
        for cid in self._class_ids():
            if self._num_positives.get(cid, 0) > 0:
                recall, precision = self._recall_precision(cid)
                curves[self._class_name(cid)] = (precision, recall, voc_ap(recall, precision, self.use_07_metric))
        return curves

    def average_precisions(self) -> dict[str, float]:
        """``{class name: AP}`` for every class (``nan`` where there is no ground truth)."""
        curves = self.pr_curves()
        names = [self._class_name(cid) for cid in self._class_ids()]
        return {name: curves[name][2] if name in curves else float("nan") for name in names}

    def get(self) -> tuple[list[str], list[float]]:
        """``(names, values)``: per-class APs, then ``'mAP'``."""
        aps = self.average_precisions()
        with_gt = [ap for ap in aps.values() if not np.isnan(ap)]
        mean_ap = float(np.mean(with_gt)) if with_gt else float("nan")
        if self.roc_output_path is not None:
            # matplotlib is loaded only when plots are asked for
            from evaluate.pr_curve import plot_pr_curves

            plot_pr_curves(self.pr_curves(), self.roc_output_path)
        return list(aps) + ["mAP"], [float(ap) for ap in aps.values()] + [mean_ap]


class VOC07MApMetric(MApMetric):
    """VOC2007 mean average precision: the 11-point interpolated AP.

    Same parameters and matching as :class:`MApMetric`; the AP of a class is
    ``sum_t max(precision[recall >= t]) / 11`` over ``t = 0, 0.1, ..., 1``.
    """

    use_07_metric = True
