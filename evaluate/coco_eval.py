"""COCO-style AP through pycocotools (optional: ``pip install -e .[coco]``).

COCO AP averages over IoU thresholds 0.50:0.05:0.95, 101 recall points and
up to 100 detections per image, and splits objects by pixel area (small <
32^2 <= medium < 96^2 <= large). The 12 summary numbers of
``COCOeval.summarize()`` come back as a dict under :data:`STAT_NAMES`.

The split is by area in the *original* image's pixels, as the COCO API
measures it, so normalised boxes must be scaled by each image's own size:
:class:`COCOMApMetric` takes one ``(width, height)`` per image
(``dataset.recordio.image_sizes`` reads them from a ``.rec``). Scaling
by the network input instead (e.g. 300x300) moves objects between the size
ranges and gives APs/APm/APl (and ARs/ARm/ARl) that do not compare with
published numbers; IoU, and so AP, AP50, AP75 and AR1/10/100, do not change.

Boxes are given in this toolkit's layout (corner rows, normalised or pixels)
and converted to COCO's ``[x, y, width, height]`` pixels without the VOC +1.
Difficult ground truth (6th label column > 0) is passed as ``iscrowd``, which
COCOeval treats as an ignore region: detections on it count neither way.
"""
from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence

import mxnet as mx
import numpy as np

from config.errors import UserError
from evaluate.eval_metric import as_numpy

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise UserError(
            "COCO AP needs pycocotools: pip install pycocotools (or pip install -e '.[coco]')"
        ) from None
    return COCO, COCOeval


def _to_pixel_xywh(boxes: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if size is not None:
        width, height = size
        boxes = boxes * np.array([width, height, width, height], dtype=np.float64)
    return np.column_stack([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]])


def coco_ap(
    detections: Sequence[np.ndarray],
    ground_truth: Sequence[np.ndarray],
    image_sizes: Sequence[tuple[int, int]] | None = None,
    num_classes: int | None = None,
) -> dict[str, float]:
    """COCO box AP of ``detections`` against ``ground_truth``, image by image.

    ``detections[i]`` is an [N, 6] array ``[cls, score, x1, y1, x2, y2]`` and
    ``ground_truth[i]`` an [M, >=5] array ``[cls, x1, y1, x2, y2,
    (difficult)]`` of image ``i``; rows with ``cls < 0`` (padding, filtered
    detections) are dropped. With ``image_sizes[i] = (width, height)`` the
    coordinates are normalised and are scaled to pixels; with ``None`` they
    already are pixels. IoU does not change under the scaling, but the
    small/medium/large split is by pixel area, so pass the original image
    sizes for official APs/APm/APl. Classes are ``0 .. num_classes-1``
    (default: every class id present).

    Returns ``{name: value}`` for the 12 :data:`STAT_NAMES`; -1 where COCOeval
    has nothing to average (no ground truth in that area range).
    """
    COCO, COCOeval = _pycocotools()
    if len(detections) != len(ground_truth):
        raise ValueError("detections and ground_truth must have one entry per image")
    if image_sizes is not None and len(image_sizes) != len(ground_truth):
        raise ValueError("image_sizes must have one entry per image")

    images, gt_anns, dt_anns = [], [], []
    class_ids: set[int] = set()
    for index, (dets, labels) in enumerate(zip(detections, ground_truth)):
        size = image_sizes[index] if image_sizes is not None else None
        width, height = size if size is not None else (0, 0)
        images.append({"id": index, "height": height, "width": width})
        labels = np.asarray(labels, dtype=np.float64)
        labels = labels[labels[:, 0] >= 0]
        crowd = labels[:, 5] > 0 if labels.shape[1] >= 6 else np.zeros(len(labels), dtype=bool)
        for row, xywh, is_crowd in zip(labels, _to_pixel_xywh(labels[:, 1:5], size), crowd):
            # COCOeval treats id 0 as "unmatched": ids start at 1
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": index,
                    "category_id": int(row[0]),
                    "bbox": xywh.tolist(),
                    "area": float(xywh[2] * xywh[3]),
                    "iscrowd": int(is_crowd),
                }
            )
            class_ids.add(int(row[0]))
        dets = np.asarray(dets, dtype=np.float64).reshape(-1, 6)
        dets = dets[dets[:, 0] >= 0]
        for row, xywh in zip(dets, _to_pixel_xywh(dets[:, 2:6], size)):
            dt_anns.append(
                {
                    "id": len(dt_anns) + 1,
                    "image_id": index,
                    "category_id": int(row[0]),
                    "bbox": xywh.tolist(),
                    "area": float(xywh[2] * xywh[3]),
                    "score": float(row[1]),
                    "iscrowd": 0,
                }
            )
            class_ids.add(int(row[0]))
    if num_classes is not None:
        class_ids = set(range(num_classes))
    categories = [{"id": cid, "name": str(cid)} for cid in sorted(class_ids)]

    # pycocotools prints progress on stdout; keep the caller's output clean
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": gt_anns, "categories": categories}
        coco_gt.createIndex()
        coco_dt = COCO()
        coco_dt.dataset = {"images": images, "annotations": dt_anns, "categories": categories}
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(STAT_NAMES, evaluator.stats)}


class COCOMApMetric(mx.metric.EvalMetric):
    """:func:`coco_ap` as an ``EvalMetric`` for ``Module.score``.

    Collects ``det_out`` (``preds[pred_idx]``, [B, N, 6]) and the labels
    ([B, max_obj, >=5]) image by image; :meth:`get` returns the 12 COCO
    summary numbers as ``(names, values)``. Coordinates are normalised and
    are scaled to pixels, which only affects the small/medium/large split:

    * ``image_sizes``: one ``(width, height)`` per image, in the order the
      images reach :meth:`update` (e.g. record order of a ``.rec``, from
      ``dataset.recordio.image_sizes``). Each ``update`` of B images takes
      the next B sizes; :meth:`reset` starts over at the first. Fewer images
      than sizes is fine (an evaluation cut short), more is a ``ValueError``.
      This gives the official COCO split.
    * ``image_size``: one ``(width, height)`` for every image (e.g. the network
      input: then the split is by input pixels, not comparable to COCO's).

    Give exactly one of the two.
    """

    def __init__(
        self,
        image_size: tuple[int, int] | None = None,
        num_classes: int | None = None,
        pred_idx: int = 0,
        *,
        image_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> None:
        if (image_size is None) == (image_sizes is None):
            raise ValueError("COCOMApMetric: give image_sizes (one per image) or image_size (one for all)")
        self.image_size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        self.image_sizes = None if image_sizes is None else [(int(w), int(h)) for w, h in image_sizes]
        self.num_classes = num_classes
        self.pred_idx = int(pred_idx)
        super().__init__("COCO")

    def reset(self) -> None:
        """Forget every image seen so far (the next ``update`` takes ``image_sizes[0]`` again)."""
        super().reset()
        self._detections: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._sizes: list[tuple[int, int]] = []

    def update(self, labels: Sequence, preds: Sequence) -> None:
        """Add a batch: ``labels[0]`` [B, max_obj, >=5] and ``preds[pred_idx]`` [B, N, 6].

        The B images take the next B entries of ``image_sizes``; pass only real
        images (trim a padded last batch), or the sizes of later images shift.
        """
        batch_labels = as_numpy(labels[0])
        count = len(batch_labels)
        if self.image_sizes is None:
            sizes = [self.image_size] * count
        else:
            start = len(self._sizes)
            if start + count > len(self.image_sizes):
                raise ValueError(f"COCOMApMetric: {start + count} images since reset but only "
                                 f"{len(self.image_sizes)} image_sizes")
            sizes = self.image_sizes[start:start + count]
        self._labels.extend(batch_labels)
        self._detections.extend(as_numpy(preds[self.pred_idx]))
        self._sizes.extend(sizes)

    def get(self) -> tuple[list[str], list[float]]:
        """``(STAT_NAMES, values)`` over all images so far."""
        if not self._labels:
            return list(STAT_NAMES), [float("nan")] * len(STAT_NAMES)
        stats = coco_ap(self._detections, self._labels, self._sizes, self.num_classes)
        return list(stats), list(stats.values())
