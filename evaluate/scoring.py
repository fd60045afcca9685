"""Scoring detections, the one path every detector family goes through.

:func:`score_images` turns per-image detections and labels into the VOC AP table
(and, on request, COCO AP): SSD checkpoints, exported ONNX models and Faster
R-CNN differ only in how the ``(detections, labels)`` pairs are produced
(:func:`module_images` for a bound SSD graph or an onnxruntime model,
:func:`evaluate.rcnn_detect.rcnn_images` for Faster R-CNN).

``Module.score`` (which ``Module.fit`` uses for validation) feeds every
batch whole to the metric, including the padding ``DetRecordIter`` adds to
the last batch, so up to ``batch_size - 1`` images count twice.
:func:`unpadded_outputs` trims ``batch.pad`` rows from the outputs and labels
first; training validation (:func:`score_unpadded`) and evaluate.py both use
it, so the mAP logged during training equals evaluate.py's on the same checkpoint.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import mxnet as mx
import numpy as np

from evaluate.eval_metric import MApMetric, VOC07MApMetric, as_numpy

# on_image(index, detections [n, 6], labels [m, 6]): one call per scored image, in scoring order
ImageCallback = Callable[[int, np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class MetricOptions:
    """How detections are scored: the VOC07 11-point or the area AP, the IoU a match must exceed,
    whether difficult objects count, and whether COCO AP (pycocotools) is computed as well."""

    voc07: bool = True
    ovp_thresh: float = 0.5
    use_difficult: bool = False
    coco: bool = False

    @classmethod
    def of_config(cls, cfg) -> MetricOptions:
        """The options a training run's config (``config.train_config.TrainConfig``) validates with."""
        return cls(voc07=cfg.voc07_metric, ovp_thresh=cfg.ovp_thresh, use_difficult=cfg.use_difficult)


def make_metric(options: MetricOptions, class_names: Sequence[str] | None = None, pred_idx: int = 0) -> MApMetric:
    """The VOC metric of ``options`` (:class:`VOC07MApMetric` or :class:`MApMetric`) reading ``preds[pred_idx]``."""
    metric_cls = VOC07MApMetric if options.voc07 else MApMetric
    return metric_cls(options.ovp_thresh, options.use_difficult, list(class_names) if class_names else None,
                      pred_idx=pred_idx)


def image_rows(detections, labels) -> tuple[np.ndarray, np.ndarray]:
    """One image's detections and labels as the scorer sees them (float32, padding rows dropped).

    ``detections`` [K, 6] ``[cls, score, x1, y1, x2, y2]`` and ``labels`` [M, >=5]
    ``[cls, x1, y1, x2, y2, (difficult)]``, normalised, rows with ``cls < 0`` being
    padding. Returns ``([n, 6], [m, 6])``: labels without a difficult column get 0 there,
    extra label columns are dropped (the metrics read only these six).
    """
    dets = np.asarray(as_numpy(detections), dtype=np.float32).reshape(-1, 6)
    gt = np.asarray(as_numpy(labels), dtype=np.float32)
    gt = gt.reshape(-1, gt.shape[-1]) if gt.size else np.zeros((0, 6), dtype=np.float32)
    if gt.shape[1] < 6:
        gt = np.hstack([gt, np.zeros((gt.shape[0], 6 - gt.shape[1]), dtype=np.float32)])
    return dets[dets[:, 0] >= 0], gt[gt[:, 0] >= 0, :6]


def update_metrics(metrics: Sequence[mx.metric.EvalMetric], detections: np.ndarray, labels: np.ndarray) -> None:
    """Add one image (rows as :func:`image_rows` returns them) to metrics that read ``labels[0]``/``preds[0]``."""
    for metric in metrics:
        metric.update([labels[None]], [detections[None]])


def score_images(
    images: Iterable[tuple[np.ndarray, np.ndarray]],
    options: MetricOptions = MetricOptions(),
    class_names: Sequence[str] | None = None,
    num_classes: int | None = None,
    image_sizes: Sequence[tuple[int, int]] | None = None,
    on_image: ImageCallback | None = None,
) -> dict:
    """Score ``(detections, labels)`` pairs, one per image (see :func:`image_rows` for the rows).

    Returns ``{'aps': {class name: AP}, 'mAP', 'metric', 'images'}``; ``metric`` is the VOC
    metric itself (``metric.pr_curves()`` gives the precision/recall curves). With
    ``options.coco`` also ``'coco'``: the 12 COCO summary numbers by name, boxes scaled by
    ``image_sizes`` (one ``(width, height)`` per image, in the order of ``images``) over
    ``num_classes`` classes. ``on_image(index, detections [n, 6], labels [m, 6])`` is called
    for each image as it is scored.
    """
    metric = make_metric(options, class_names)
    metrics: list[mx.metric.EvalMetric] = [metric]
    if options.coco:
        from evaluate.coco_eval import COCOMApMetric

        if image_sizes is None:
            raise ValueError("score_images: COCO AP needs the image sizes")
        metrics.append(COCOMApMetric(num_classes=num_classes, pred_idx=0, image_sizes=image_sizes))
    count = 0
    for detections, labels in images:
        dets, gt = image_rows(detections, labels)
        if on_image is not None:
            on_image(count, dets, gt)
        update_metrics(metrics, dets, gt)
        count += 1
    names, values = metric.get()
    aps = {name: float(value) for name, value in zip(names, values) if name != "mAP"}
    result = {"aps": aps, "mAP": float(values[-1]), "metric": metric, "images": count}
    if options.coco:
        result["coco"] = dict(zip(*metrics[1].get()))
    return result


def unpadded_outputs(module: mx.mod.BaseModule, data_iter: mx.io.DataIter, num_batch: int | None = None,
                     reset: bool = True) -> Iterator[tuple[int, int, list, list]]:
    """``(batch number, images, labels, outputs)`` of ``module`` (inference mode) over ``data_iter``: the
    padded tail of the last batch is cut off, ``images`` is what is left; ``num_batch`` caps the batches.

    ``module`` needs only ``forward`` and ``get_outputs`` (an onnxruntime model qualifies).
    """
    if reset:
        data_iter.reset()
    for nbatch, batch in enumerate(data_iter):
        if num_batch is not None and nbatch >= num_batch:
            break
        module.forward(batch, is_train=False)
        keep = batch.data[0].shape[0] - (batch.pad or 0)
        yield nbatch, keep, [label[:keep] for label in batch.label], [out[:keep] for out in module.get_outputs()]


def module_images(module: mx.mod.BaseModule, data_iter: mx.io.DataIter, num_batch: int | None = None,
                  pred_idx: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """SSD's detections: ``(det_out [K, 6], labels [M, >=5])`` per image of ``data_iter``, each image once.

    ``pred_idx`` is the output holding ``det_out`` (0 in the test graph, 3 in the training graph).
    """
    for _, _, labels, outputs in unpadded_outputs(module, data_iter, num_batch):
        yield from zip(outputs[pred_idx].asnumpy(), labels[0].asnumpy())


def score_unpadded(module: mx.mod.BaseModule, data_iter: mx.io.DataIter, metrics: Sequence[mx.metric.EvalMetric],
                   num_batch: int | None = None, reset: bool = True,
                   batch_end_callback: Callable | None = None, epoch: int = 0) -> int:
    """``Module.score`` without the repeats: run ``module`` over ``data_iter``, update ``metrics`` (any
    ``EvalMetric``, fed whole batches); returns the images scored.

    ``num_batch`` caps the batches. ``batch_end_callback`` receives
    ``mx.model.BatchEndParam`` like ``Module.score``'s (its ``eval_metric`` is
    the first metric).
    """
    images = 0
    for nbatch, keep, labels, outputs in unpadded_outputs(module, data_iter, num_batch, reset):
        for metric in metrics:
            metric.update(labels, outputs)
        images += keep
        if batch_end_callback is not None:
            param = mx.model.BatchEndParam(epoch=epoch, nbatch=nbatch, eval_metric=metrics[0], locals=locals())
            for callback in batch_end_callback if isinstance(batch_end_callback, list) else [batch_end_callback]:
                callback(param)
    return images
