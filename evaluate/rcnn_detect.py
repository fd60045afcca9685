"""Faster R-CNN inference: turn the test graph's outputs into detections.

Detection rows are ``[cls, score, x1, y1, x2, y2]`` with **0-based object
classes** (the R-CNN background class 0 is dropped and class ``j`` becomes
``j - 1``), the convention of SSD's ``det_out`` that the VOC metric reads.
:func:`im_detect` gives original-image pixels (inclusive ends);
:func:`normalise_boxes` converts them to the normalised coordinates of the
``.rec`` labels (``x2n = (x2 + 1) / width``, see ``dataset/rcnn_loader.py``).

:class:`RCNNDetector` binds on the context it is given.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import mxnet as mx
import numpy as np

from dataset.bbox import bbox_pred, clip_boxes, nms
from dataset.rcnn_loader import TestLoader
from evaluate.scoring import image_rows, update_metrics

logger = logging.getLogger(__name__)


def im_detect(
    rois: np.ndarray,
    scores: np.ndarray,
    bbox_deltas: np.ndarray,
    im_info: Sequence[float],
    bbox_stds: Sequence[float],
    nms_thresh: float = 0.3,
    conf_thresh: float = 1e-3,
    max_per_image: int = 100,
) -> np.ndarray:
    """Detections [N, 6] of one image from the test graph's outputs.

    ``rois`` [R, 5] (or [R, 4]) in resized-image pixels, ``scores`` [R, C]
    (class 0 = background), ``bbox_deltas`` [R, 4C], ``im_info`` ``(height,
    width, scale)``. Boxes: deltas applied with ``bbox_stds``, clipped to the
    resized image, divided by ``scale``. Per class ``j >= 1``: scores
    ``> conf_thresh``, greedy NMS at ``nms_thresh`` (IoU with +1). Then the
    ``max_per_image`` best rows over all classes are kept (0 keeps all, as
    the original). Rows are ordered by class, then by falling score.
    """
    rois = np.asarray(rois, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    height, width, scale = (float(v) for v in im_info[:3])
    boxes = bbox_pred(rois[:, -4:], np.asarray(bbox_deltas, dtype=np.float64), bbox_stds)
    boxes = clip_boxes(boxes, (height, width)) / scale

    per_class = []
    for cls in range(1, scores.shape[1]):
        inds = np.flatnonzero(scores[:, cls] > conf_thresh)
        dets = np.hstack([boxes[inds, 4 * cls: 4 * cls + 4], scores[inds, cls: cls + 1]])
        dets = dets[nms(dets, nms_thresh)]
        per_class.append(np.hstack([np.full((dets.shape[0], 1), cls - 1.0), dets[:, 4:5], dets[:, :4]]))
    detections = np.concatenate(per_class) if per_class else np.zeros((0, 6))
    if 0 < max_per_image < detections.shape[0]:
        best = np.argsort(-detections[:, 1], kind="stable")[:max_per_image]
        detections = detections[np.sort(best)]
    return detections


def normalise_boxes(detections: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel detections [N, 6] of a ``height x width`` image -> normalised corners (a copy)."""
    out = np.array(detections, dtype=np.float64, copy=True)
    out[:, 2:6] = (out[:, 2:6] + np.array([0.0, 0.0, 1.0, 1.0])) / np.array([width, height, width, height])
    return out


class RCNNDetector:
    """The test graph bound for inference on one device.

    ``ctx`` is a context or a list of them; only the first is used, because
    the test graph runs one image at a time (``rcnn_batch_size`` 1).
    """

    def __init__(
        self,
        symbol: mx.sym.Symbol,
        arg_params: dict,
        aux_params: dict,
        ctx: mx.Context | Sequence[mx.Context],
        max_side: int,
        bbox_stds: Sequence[float] = (0.1, 0.1, 0.2, 0.2),
        nms_thresh: float = 0.3,
        conf_thresh: float = 1e-3,
        max_per_image: int = 100,
    ) -> None:
        self.ctx = ctx if isinstance(ctx, mx.Context) else list(ctx)[0]
        self.bbox_stds = bbox_stds
        self.nms_thresh, self.conf_thresh, self.max_per_image = nms_thresh, conf_thresh, max_per_image
        self.mod = mx.mod.Module(symbol, data_names=["data", "im_info"], label_names=None, context=self.ctx)
        # bind the largest image once; smaller ones reshape into the same memory
        self.mod.bind(data_shapes=[("data", (1, 3, max_side, max_side)), ("im_info", (1, 3))],
                      for_training=False)
        self.mod.set_params(arg_params, aux_params, allow_missing=False, allow_extra=True)

    @classmethod
    def from_config(cls, cfg, num_classes: int, arg_params: dict, aux_params: dict,
                    ctx: mx.Context | Sequence[mx.Context]) -> RCNNDetector:
        """Test graph of ``cfg.network`` with ``cfg``'s test settings (``symbol/rcnn_factory.py``)."""
        from symbol.rcnn_factory import get_rcnn_test

        return cls(get_rcnn_test(cfg.network, num_classes, cfg), arg_params, aux_params, ctx,
                   cfg.img_long_side, cfg.rcnn_bbox_stds, cfg.rcnn_nms_thresh, cfg.rcnn_conf_thresh,
                   cfg.max_per_image)

    def detect(self, data: mx.nd.NDArray, im_info: mx.nd.NDArray) -> np.ndarray:
        """Detections [N, 6] (original-image pixels) of one image ``data`` [1, 3, H, W]."""
        self.mod.forward(mx.io.DataBatch(data=[data, im_info], provide_data=[
            mx.io.DataDesc("data", data.shape), mx.io.DataDesc("im_info", im_info.shape)]), is_train=False)
        rois, cls_prob, bbox_deltas = (out.asnumpy() for out in self.mod.get_outputs())
        return im_detect(rois, cls_prob[0], bbox_deltas[0], im_info.asnumpy()[0], self.bbox_stds,
                         self.nms_thresh, self.conf_thresh, self.max_per_image)


def rcnn_images(
    model: RCNNDetector | mx.mod.BaseModule | tuple[dict, dict],
    rec_path: str,
    cfg,
    num_classes: int,
    ctx: mx.Context | Sequence[mx.Context] = mx.cpu(),
    num_images: int | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Faster R-CNN's detections: ``(detections [n, 6], labels [m, 6])`` per image of ``rec_path``
    (its first ``num_images`` if given), in record order.

    ``model`` is a ready :class:`RCNNDetector`, a module (e.g. the training
    one: its parameters are copied into the test graph) or ``(arg_params,
    aux_params)``; ``cfg`` is the run's config made ready for testing
    (``evaluate.evaluate_rcnn.inference_config``). Detections are normalised
    ``[cls, score, x1, y1, x2, y2]``, labels the normalised ground truth
    ``[cls, x1, y1, x2, y2, difficult]``: what :func:`evaluate.scoring.score_images` takes.
    """
    if isinstance(model, RCNNDetector):
        detector = model
    else:
        arg_params, aux_params = model.get_params() if isinstance(model, mx.mod.BaseModule) else model
        detector = RCNNDetector.from_config(cfg, num_classes, arg_params, aux_params, ctx)
    loader = TestLoader.from_config(rec_path, cfg)
    count = 0
    for batch in loader:
        if num_images is not None and count >= num_images:
            break
        dets = detector.detect(batch.data[0].as_in_context(detector.ctx), batch.data[1].as_in_context(detector.ctx))
        gt = batch.label[0].asnumpy()[0]
        count += 1
        yield normalise_boxes(dets, *batch.orig_shape), gt[gt[:, 0] >= 0]
    logger.info("%s: detected %d images", rec_path, count)


def detect_rec(
    model: RCNNDetector | mx.mod.BaseModule | tuple[dict, dict],
    rec_path: str,
    cfg,
    num_classes: int,
    ctx: mx.Context | Sequence[mx.Context] = mx.cpu(),
    num_images: int | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """:func:`rcnn_images` as two lists: the detections [n, 6] and the labels [m, 6] of every image."""
    pairs = list(rcnn_images(model, rec_path, cfg, num_classes, ctx, num_images))
    return [dets for dets, _ in pairs], [gt for _, gt in pairs]


def update_metric(metric: mx.metric.EvalMetric, detections: list[np.ndarray], labels: list[np.ndarray]) -> None:
    """Feed per-image detections/labels (as from :func:`detect_rec`) to a metric reading ``preds[0]``,
    as :func:`evaluate.scoring.score_images` does."""
    for dets, gt in zip(detections, labels):
        update_metrics([metric], *image_rows(dets, gt))
