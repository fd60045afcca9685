"""Score and run a trained Faster R-CNN: what evaluate.py and demo.py do for faster_rcnn_* networks.

The run's :class:`config.train_config.RCNNConfig` comes from
``<prefix>-rcnn.json`` (:mod:`evaluate.run_settings`, written by train.py),
so the test graph and the preprocessing are the training run's.
evaluate.py scores it through :func:`evaluate.evaluation.evaluate_model`
(:class:`evaluate.evaluation.RCNNSource`), with the scorer SSD uses
(:func:`evaluate.scoring.score_images`) on normalised boxes, so both families
print the same table. The model runs on the context it is given.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence

import mxnet as mx
import numpy as np

from config.train_config import RCNNConfig
from dataset.rcnn_loader import preprocess, resize_scale
from evaluate import scoring
from evaluate.checkpoint import check_params_fit, load_checkpoint, params_path
from evaluate.rcnn_detect import RCNNDetector
from evaluate.scoring import MetricOptions
from symbol.rcnn_factory import get_rcnn_test


def inference_config(cfg: RCNNConfig, **overrides) -> RCNNConfig:
    """``cfg`` for the test graph: one image per batch, then ``overrides`` (``None`` values skipped).

    A run may train ``rcnn_batch_size`` > 1 images per device; the test graph
    always takes one.
    """
    return dataclasses.replace(cfg, rcnn_batch_size=1,
                               **{key: value for key, value in overrides.items() if value is not None})


def add_rcnn_test_args(parser: argparse.ArgumentParser) -> None:
    """example/rcnn's test.py / demo.py flags, for evaluate.py and demo.py."""
    group = parser.add_argument_group("Faster R-CNN", "for --network faster_rcnn_*")
    group.add_argument("--rcnn-nms-thresh", type=float, default=RCNNConfig.rcnn_nms_thresh,
                       help="per-class NMS threshold of the detections (default: the run's)")
    group.add_argument("--rcnn-conf-thresh", type=float, default=RCNNConfig.rcnn_conf_thresh,
                       help="detections scoring this or less are dropped (default: the run's)")
    group.add_argument("--max-per-image", type=int, default=RCNNConfig.max_per_image,
                       help="best detections kept per image, 0 keeps all as the original (default: the run's)")


def load_rcnn_weights(cfg: RCNNConfig, prefix: str, epoch: int, num_classes: int) -> tuple[dict, dict]:
    """(arg_params, aux_params) of checkpoint ``prefix-epoch``, checked against the run's test graph."""
    _, args, auxs = load_checkpoint(prefix, epoch, flag="--prefix/--epoch")
    symbol = get_rcnn_test(cfg.network, num_classes, cfg)
    input_shapes = {"data": (1, 3, cfg.img_short_side, cfg.img_long_side), "im_info": (1, 3)}
    check_params_fit(symbol, args, auxs, input_shapes, params_path(prefix, epoch), num_classes, require_all=True)
    return args, auxs


def score_detections(
    detections: Sequence[np.ndarray], labels: Sequence[np.ndarray], class_names: Sequence[str] | None = None,
    voc07_metric: bool = True, ovp_thresh: float = 0.5, use_difficult: bool = False,
) -> dict:
    """``{'aps': {class name: AP}, 'mAP', 'metric', 'images'}`` of per-image detections and labels
    (:func:`evaluate.scoring.score_images` on the pairs).

    Both are lists of normalised [n, 6] arrays, as :func:`evaluate.rcnn_detect.detect_rec`
    returns them: detections ``[cls, score, x1, y1, x2, y2]``, labels ``[cls, x1, y1, x2, y2, difficult]``.
    """
    options = MetricOptions(voc07=voc07_metric, ovp_thresh=ovp_thresh, use_difficult=use_difficult)
    return scoring.score_images(zip(detections, labels), options, class_names)


class RCNNImageDetector:
    """Faster R-CNN on raw BGR images, with demo.py's detector interface (``detect`` / ``timed_detect``).

    Images are resized and normalised as in training (``cfg``'s sides, means
    and stds) and run one at a time on ``ctx``.
    """

    def __init__(self, cfg: RCNNConfig, num_classes: int, arg_params: dict, aux_params: dict,
                 ctx: mx.Context = mx.cpu()):
        self.cfg = cfg
        self.detector = RCNNDetector.from_config(cfg, num_classes, arg_params, aux_params, ctx)

    def detect(self, images_bgr: Sequence[np.ndarray], thresh: float = 0.0) -> list:
        """Detections per image: [N, 6] rows ``[cls, score, x1, y1, x2, y2]`` in that image's pixels,
        scores >= ``thresh``."""
        results = []
        ctx = self.detector.ctx
        for image in images_bgr:
            height, width = image.shape[:2]
            scale = resize_scale(height, width, self.cfg.img_short_side, self.cfg.img_long_side)
            data = preprocess(image, scale, self.cfg.img_pixel_means, self.cfg.img_pixel_stds, flip=False)
            im_info = mx.nd.array([[data.shape[1], data.shape[2], scale]], ctx=ctx)
            dets = self.detector.detect(mx.nd.array(data[None], ctx=ctx), im_info)
            results.append(dets[dets[:, 1] >= thresh])
        return results

    def timed_detect(self, images_bgr: Sequence[np.ndarray], thresh: float = 0.0) -> tuple:
        """``(detections, seconds)`` for :meth:`detect`."""
        tic = time.time()
        dets = self.detect(images_bgr, thresh)
        return dets, time.time() - tic
