"""Running a model written by tools/export_onnx.py with onnxruntime: ``evaluate.py --onnx`` and ``demo.py --onnx``.

The model carries what it needs in its metadata (network, input size, classes, pixel statistics,
NMS settings): :func:`onnx_settings` turns it into the :class:`~evaluate.run_settings.InferenceSettings`
the scripts use for checkpoints, so the flags that would set those are refused with ``--onnx``
(:func:`refuse_with_onnx`). Preprocessing is :class:`evaluate.detector.Detector`'s, and evaluation
goes through the one scoring path (:class:`evaluate.evaluation.OnnxSource`), so an ONNX model and its
checkpoint are scored identically.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np

from config.cli import refuse_given
from config.errors import UserError
from evaluate.detector import ImageDetector
from evaluate.onnx_export import METADATA_KEY
from evaluate.run_settings import InferenceSettings

# evaluate.py/demo.py dests that --onnx replaces: the model's metadata sets them, or it cannot use them
ONNX_MODEL_FLAGS = ("prefix", "epoch", "network", "num_class", "class_names", "data_shape", "mean_r", "mean_g",
                    "mean_b", "std_r", "std_g", "std_b", "nms_thresh", "nms_topk", "force_nms", "deploy_net",
                    "coco", "rcnn_nms_thresh", "rcnn_conf_thresh", "max_per_image", "dtype")
ONNX_DEVICE_FLAGS = ("gpus", "cpus", "cpu", "gpu_id")


def refuse_with_onnx(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """A one-line error for a flag that ``--onnx`` makes meaningless (``args.given`` from parse_known_given)."""
    refuse_given(parser, args, [d for d in ONNX_MODEL_FLAGS if hasattr(args, d)],
                 "not with --onnx: the model's metadata sets its network, classes, input size, preprocessing "
                 "and NMS (re-export it with tools/export_onnx.py to change them)")
    refuse_given(parser, args, [d for d in ONNX_DEVICE_FLAGS if hasattr(args, d)],
                 "not with --onnx: onnxruntime runs the model on the CPU")


def inference_session(model: str | bytes, threads: int = 0):
    """An onnxruntime CPU session of a model file or a serialized model; ``threads`` 0: onnxruntime's choice."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # warnings about unused initializers are not the user's business
    options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def open_session(path: str):
    """``(onnxruntime.InferenceSession, metadata settings dict)`` of an exported model; one-line errors."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise UserError("--onnx: needs onnxruntime: pip install -e '.[onnx]'") from None
    if not os.path.isfile(path):
        raise UserError(f"--onnx {path}: file not found")
    try:
        session = inference_session(path)
    except Exception as err:  # onnxruntime raises its own exception types for unreadable models
        raise UserError(f"--onnx {path}: cannot be loaded by onnxruntime ({str(err).splitlines()[0]})") from None
    meta = session.get_modelmeta().custom_metadata_map
    if METADATA_KEY not in meta:
        raise UserError(f"--onnx {path}: no '{METADATA_KEY}' metadata; export the model with tools/export_onnx.py")
    return session, json.loads(meta[METADATA_KEY])


def onnx_settings(path: str) -> InferenceSettings:
    """The :class:`InferenceSettings` an exported model's metadata describes (``prefix`` is the file)."""
    _, meta = open_session(path)
    return InferenceSettings(
        prefix=path, network=meta["network"], num_classes=int(meta["num_classes"]), class_names=meta["class_names"],
        data_shape=int(meta["data_shape"]), mean_pixels=tuple(meta["mean_pixels"]),
        std_pixels=tuple(meta["std_pixels"]), nms_thresh=float(meta["nms_thresh"]), nms_topk=int(meta["nms_topk"]),
        force_suppress=bool(meta["force_suppress"]), label_width=int(meta["label_width"]), onnx=True)


class OnnxModule:
    """The part of ``mx.mod.Module`` that :func:`evaluate.scoring.module_images` uses, over onnxruntime."""

    def __init__(self, session):
        self.session = session
        self._outputs: list = []

    def run(self, data: np.ndarray) -> np.ndarray:
        """``data [B, 3, S, S]`` float32 -> ``detections [B, K, 6]``."""
        return self.session.run(["detections"], {"data": np.ascontiguousarray(data, dtype=np.float32)})[0]

    def forward(self, batch, is_train: bool = False) -> None:
        import mxnet as mx

        self._outputs = [mx.nd.array(self.run(batch.data[0].asnumpy()))]

    def get_outputs(self) -> list:
        return self._outputs


class OnnxDetector(ImageDetector):
    """:class:`evaluate.detector.ImageDetector` over an exported model, with the input size and pixel
    statistics of its metadata."""

    def __init__(self, path: str, batch_size: int = 1):
        self.session, meta = open_session(path)
        super().__init__(int(meta["data_shape"]), meta["mean_pixels"], meta["std_pixels"], batch_size)
        self.module = OnnxModule(self.session)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        return self.module.run(batch)
