"""Run a trained SSD on raw images (example/ssd's ``detect/detector.py``) and draw the results."""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import cv2
import mxnet as mx
import numpy as np


def kept_in_pixels(dets: np.ndarray, image: np.ndarray, thresh: float) -> np.ndarray:
    """``[N, 6]`` detection rows of one image, normalised, to the rows kept (cls >= 0, score >= ``thresh``)
    with boxes in ``image``'s pixels."""
    dets = dets[(dets[:, 0] >= 0) & (dets[:, 1] >= thresh)].copy()
    height, width = image.shape[:2]
    dets[:, 2:6] *= np.array([width, height, width, height], dtype=np.float32)
    return dets


class ImageDetector:
    """Batched SSD inference on BGR images of any size, whatever runs the network.

    Parameters
    ----------
    data_shape : side length the network takes (images are resized to it, as
        the iterator's ``resize_mode='force'`` does in training)
    mean_pixels, std_pixels : RGB normalisation used in training
    batch_size : images per forward pass

    A subclass supplies :meth:`forward`: ``[n, 3, S, S]`` (n <= ``batch_size``) -> ``[n, K, 6]`` rows
    ``[cls, score, xmin, ymin, xmax, ymax]`` (normalised, cls -1 = suppressed).
    """

    def __init__(self, data_shape: int, mean_pixels: Sequence[float], std_pixels: Sequence[float] | None = None,
                 batch_size: int = 1):
        self.data_shape = int(data_shape)
        self.batch_size = batch_size
        self.mean = np.asarray(mean_pixels, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std_pixels if std_pixels is not None else (1, 1, 1), dtype=np.float32).reshape(3, 1, 1)

    def preprocess(self, image_bgr: np.ndarray) -> np.ndarray:
        """BGR HxWx3 uint8 -> normalised RGB [3, data_shape, data_shape] float32."""
        resized = cv2.resize(image_bgr, (self.data_shape, self.data_shape), interpolation=cv2.INTER_LINEAR)
        rgb = resized[:, :, ::-1].astype(np.float32).transpose(2, 0, 1)
        return (rgb - self.mean) / self.std

    def forward(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def detect(self, images_bgr: Sequence[np.ndarray], thresh: float = 0.0) -> list:
        """Detections per image: [N, 6] rows ``[cls, score, x1, y1, x2, y2]`` in that image's pixels.

        Rows the graph suppressed (cls < 0) and scores below ``thresh`` are dropped.
        """
        results = []
        for start in range(0, len(images_bgr), self.batch_size):
            chunk = images_bgr[start:start + self.batch_size]
            output = self.forward(np.stack([self.preprocess(image) for image in chunk]))
            results += [kept_in_pixels(dets, image, thresh) for image, dets in zip(chunk, output)]
        return results

    def timed_detect(self, images_bgr: Sequence[np.ndarray], thresh: float = 0.0) -> tuple:
        """``(detections, seconds)`` for :meth:`detect`."""
        tic = time.time()
        dets = self.detect(images_bgr, thresh)
        return dets, time.time() - tic


class Detector(ImageDetector):
    """:class:`ImageDetector` over an MXNet test graph ``symbol`` with its weights, bound on ``ctx``."""

    def __init__(self, symbol: mx.sym.Symbol, arg_params: dict, aux_params: dict, data_shape: int,
                 mean_pixels: Sequence[float], std_pixels: Sequence[float] | None = None,
                 batch_size: int = 1, ctx: mx.Context | None = None):
        super().__init__(data_shape, mean_pixels, std_pixels, batch_size)
        self.mod = mx.mod.Module(symbol, data_names=("data",), label_names=None, context=ctx or mx.cpu())
        self.mod.bind(data_shapes=[("data", (batch_size, 3, self.data_shape, self.data_shape))], for_training=False)
        self.mod.set_params(arg_params, aux_params, allow_missing=False, allow_extra=True)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        # the module is bound to batch_size images: a short last chunk is padded with zeros
        padded = np.zeros((self.batch_size,) + batch.shape[1:], dtype=np.float32)
        padded[:len(batch)] = batch
        self.mod.forward(mx.io.DataBatch([mx.nd.array(padded)]), is_train=False)
        return self.mod.get_outputs()[0].asnumpy()[:len(batch)]


def class_color(cls: int) -> tuple:
    """A stable, saturated BGR colour per class id."""
    hue = int(cls * 47) % 180
    hsv = np.uint8([[[hue, 220, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])


def draw_detections(image_bgr: np.ndarray, dets: Iterable, class_names: Sequence[str] | None = None
                    ) -> np.ndarray:
    """A copy of ``image_bgr`` with each ``[cls, score, x1, y1, x2, y2]`` row drawn: box, name, score."""
    canvas = image_bgr.copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 200))
    for cls, score, x1, y1, x2, y2 in np.asarray(list(dets)).reshape(-1, 6):
        cls = int(cls)
        color = class_color(cls)
        p1, p2 = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(canvas, p1, p2, color, thickness)
        name = class_names[cls] if class_names and cls < len(class_names) else str(cls)
        text = f"{name} {score:.2f}"
        scale = 0.4 * thickness
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        top = max(p1[1] - th - base, 0)
        cv2.rectangle(canvas, (p1[0], top), (p1[0] + tw, top + th + base), color, -1)
        cv2.putText(canvas, text, (p1[0], top + th), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def format_detections(dets: np.ndarray, class_names: Sequence[str] | None = None) -> str:
    """One ``name score [x1, y1, x2, y2]`` line per detection."""
    lines = []
    for cls, score, x1, y1, x2, y2 in np.asarray(dets).reshape(-1, 6):
        cls = int(cls)
        name = class_names[cls] if class_names and cls < len(class_names) else str(cls)
        lines.append(f"  {name:<12} {score:.3f}  [{x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}]")
    return "\n".join(lines) if lines else "  (no detections)"
