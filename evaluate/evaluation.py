"""Evaluate a model on a .rec file: one entry point for SSD checkpoints, exported ONNX models and Faster R-CNN.

:func:`evaluate_model` takes one :class:`EvalSettings` (the model as
:class:`~evaluate.run_settings.InferenceSettings` describes it, the record, the
devices and the metric options). The families differ only in how detections are
produced, a source per family:

* :class:`SSDSource`: the SSD test graph (or tools/deploy.py's) bound with mxnet;
* :class:`OnnxSource`: a model written by tools/export_onnx.py, run by onnxruntime;
* :class:`RCNNSource`: the Faster R-CNN test graph, one image at a time.

Each yields ``(detections [n, 6], labels [m, 6])`` per image, normalised, and all
of them are scored by :func:`evaluate.scoring.score_images`, so the three print
the same table from the same rules. ``on_image`` hands every image's detections
and labels to the caller as they are scored.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import mxnet as mx
import numpy as np

from config.errors import UserError
from evaluate import scoring
from evaluate.run_settings import InferenceSettings
from evaluate.scoring import ImageCallback, MetricOptions

Images = Iterator[tuple[np.ndarray, np.ndarray]]


@dataclass
class EvalSettings:
    """What evaluate.py scores and how.

    ``model``: the checkpoint (``prefix`` and ``epoch``) or exported model and the settings it runs with.
    ``rec_path``: the record to score; ``list_path``: a .lst whose labels replace the record's (SSD, ONNX).
    ``ctx``: the devices (Faster R-CNN uses the first; ONNX runs on the CPU).
    ``batch_size``: images per batch (SSD, ONNX; Faster R-CNN takes one image at a time).
    ``num_batch``: score only the first this many batches (Faster R-CNN: images); None: the whole record.
    ``deploy``: run the graph tools/deploy.py wrote instead of rebuilding the test graph (SSD).
    ``metric``: VOC07 or area AP, IoU threshold, difficult objects, COCO AP.
    ``pr_dir``: if set, one precision/recall curve PNG per class is written there.
    """

    model: InferenceSettings
    rec_path: str
    epoch: int = 0
    ctx: list[mx.Context] = field(default_factory=lambda: [mx.cpu()])
    batch_size: int = 32
    list_path: str = ""
    num_batch: int | None = None
    deploy: bool = False
    metric: MetricOptions = field(default_factory=MetricOptions)
    pr_dir: str = ""


class RecordSource:
    """Detections of a graph that takes ``DetRecordIter`` batches and returns ``det_out`` (SSD, ONNX).

    A subclass loads its model on construction, so a missing or mismatched model fails before the
    record is read, and supplies :meth:`module`.
    """

    engine = ""  # appended to the log line's speed

    def __init__(self, settings: EvalSettings):
        self.settings = settings

    def module(self, data_iter: mx.io.DataIter):
        """What :func:`evaluate.scoring.module_images` runs (``forward`` / ``get_outputs``), ready for ``data_iter``."""
        raise NotImplementedError

    def images(self) -> Images:
        """Per image ``(det_out [K, 6], labels [M, >=5])``; the iterator and the module are ready on return."""
        from config.augmentation import VALIDATION
        from dataset.iterator import DetRecordIter

        settings, model = self.settings, self.settings.model
        shape = model.data_shape
        data_iter = DetRecordIter(settings.rec_path, settings.batch_size, (3, shape, shape),
                                  mean_pixels=model.mean_pixels, std_pixels=model.std_pixels,
                                  label_pad_width=model.label_width, path_imglist=settings.list_path, **VALIDATION)
        return scoring.module_images(self.module(data_iter), data_iter, settings.num_batch)


class SSDSource(RecordSource):
    """An SSD checkpoint (or its tools/deploy.py graph) bound with mxnet on ``settings.ctx``."""

    def __init__(self, settings: EvalSettings):
        from evaluate.ssd_model import load_test_model

        super().__init__(settings)
        model = settings.model
        self.symbol, self.arg_params, self.aux_params = load_test_model(
            model.network, model.prefix, settings.epoch, model.data_shape, model.num_classes, model.nms_thresh,
            model.force_suppress, model.nms_topk, settings.deploy, model.dtype)

    def module(self, data_iter: mx.io.DataIter) -> mx.mod.Module:
        mod = mx.mod.Module(self.symbol, label_names=None, logger=logging.getLogger(), context=list(self.settings.ctx))
        mod.bind(data_shapes=data_iter.provide_data, for_training=False)
        mod.set_params(self.arg_params, self.aux_params, allow_missing=False, allow_extra=True)
        return mod


class OnnxSource(RecordSource):
    """A model written by tools/export_onnx.py (``settings.model.prefix`` is the file), run by onnxruntime."""

    engine = ", onnxruntime"

    def __init__(self, settings: EvalSettings):
        from evaluate.onnx_detector import open_session

        super().__init__(settings)
        self.session, _ = open_session(settings.model.prefix)

    def module(self, data_iter: mx.io.DataIter):
        from evaluate.onnx_detector import OnnxModule

        return OnnxModule(self.session)


class RCNNSource:
    """A Faster R-CNN checkpoint's detections, one image at a time on the first device
    (:func:`evaluate.rcnn_detect.rcnn_images`)."""

    engine = ""

    def __init__(self, settings: EvalSettings):
        from evaluate.evaluate_rcnn import load_rcnn_weights

        model = settings.model
        self.settings = settings
        self.params = load_rcnn_weights(model.rcnn, model.prefix, settings.epoch, model.num_classes)

    def images(self) -> Images:
        """Per image ``(detections [n, 6], labels [m, 6])``; the detector is built on the first image."""
        from evaluate.rcnn_detect import rcnn_images

        settings, model = self.settings, self.settings.model
        return rcnn_images(self.params, settings.rec_path, model.rcnn, model.num_classes, settings.ctx,
                           settings.num_batch)


def open_source(settings: EvalSettings) -> RecordSource | RCNNSource:
    """The detection source of ``settings.model``'s family, its model loaded."""
    if settings.model.onnx:
        return OnnxSource(settings)
    if settings.model.is_rcnn:
        return RCNNSource(settings)
    return SSDSource(settings)


def record_image_sizes(rec_path: str) -> list[tuple[int, int]]:
    """``(width, height)`` of every image of ``rec_path``, in record order (what COCO's size split needs)."""
    from dataset.recordio import image_sizes

    idx_path = os.path.splitext(rec_path)[0] + ".idx"
    return image_sizes(rec_path, idx_path if os.path.isfile(idx_path) else None)


def evaluate_model(settings: EvalSettings, on_image: ImageCallback | None = None) -> dict:
    """Score ``settings.model`` on ``settings.rec_path``.

    Returns ``{'aps': {class name: AP}, 'mAP', 'metric', 'seconds', 'images'}``
    (:func:`evaluate.scoring.score_images`'s dict and the seconds spent); with
    ``settings.metric.coco`` also ``'coco'``, the 12 COCO numbers (boxes scaled to each
    image's own size, read from the .rec, so the small/medium/large split is in
    original-image pixels); with ``settings.pr_dir`` also ``'pr_files'``, the PNGs written.
    ``on_image(index, detections [n, 6], labels [m, 6])`` receives each image, normalised
    ``[cls, score, x1, y1, x2, y2]`` and ``[cls, x1, y1, x2, y2, difficult]``, in record order.
    """
    from dataset.recordio import scan_labels

    model = settings.model
    if not os.path.isfile(settings.rec_path):
        raise UserError(f"--rec-path {settings.rec_path}: file not found")
    # the model first: a missing or mismatched checkpoint then fails before the
    # record iterator has written its log lines, so the user sees one line
    source = open_source(settings)
    scan_labels(settings.rec_path, settings.list_path, model.num_classes)
    images = source.images()
    # one size per record, in the order the images are scored (a list file only replaces labels)
    sizes = record_image_sizes(settings.rec_path) if settings.metric.coco else None
    tic = time.time()
    result = scoring.score_images(images, settings.metric, model.class_names, model.num_classes, sizes, on_image)
    elapsed = time.time() - tic
    logging.getLogger().info("Evaluated %d images in %.1f s (%.1f images/sec%s)", result["images"], elapsed,
                             result["images"] / max(elapsed, 1e-9), source.engine)
    result["seconds"] = elapsed
    if settings.pr_dir:
        from evaluate.pr_curve import plot_pr_curves

        result["pr_files"] = plot_pr_curves(result["metric"].pr_curves(), settings.pr_dir)
    return result


def score_rcnn_module(module: mx.mod.BaseModule, cfg, ctx: mx.Context) -> dict:
    """Faster R-CNN validation during training: ``module``'s weights (the training graph's) in the
    test graph, on every image of ``cfg.val_path``, scored as evaluate.py scores.

    ``cfg`` is the run's ``RCNNConfig``; returns :func:`evaluate.scoring.score_images`'s dict.
    """
    from evaluate.evaluate_rcnn import inference_config
    from evaluate.rcnn_detect import rcnn_images

    images = rcnn_images(module, cfg.val_path, inference_config(cfg), cfg.num_classes, ctx)
    return scoring.score_images(images, MetricOptions.of_config(cfg), cfg.class_names)
