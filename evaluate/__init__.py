"""Evaluation loops and detection metrics (VOC07 11-point, VOC area, COCO)."""
import config  # noqa: F401  (sets thread defaults before mxnet loads)
