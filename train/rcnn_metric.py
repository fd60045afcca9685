"""Training metrics of Faster R-CNN (the original ``symnet/metric.py``).

They read the outputs of the training graph, ``preds = [rpn_cls_prob
[B, 2, A*fh, fw], rpn_bbox_loss [B, 4A, fh, fw], cls_prob [B, R, C],
bbox_loss [B, R, 4C], rcnn_label [B, R]]``, and the loader's labels
``labels = [label [B, A*fh*fw], bbox_target, bbox_weight [B, 4A, fh, fw]]``.
Anchors labelled -1 are ignored.
"""
from __future__ import annotations

import mxnet as mx
import numpy as np

RPN_CLS_PROB, RPN_BBOX_LOSS, RCNN_CLS_PROB, RCNN_BBOX_LOSS, RCNN_LABEL = range(5)
RPN_LABEL, RPN_BBOX_TARGET, RPN_BBOX_WEIGHT = range(3)


def _rpn_probs_and_labels(labels: list, preds: list) -> tuple[np.ndarray, np.ndarray]:
    """RPN probabilities [n, 2] and labels [n] of the anchors not labelled -1."""
    prob = preds[RPN_CLS_PROB].asnumpy()
    prob = prob.reshape(prob.shape[0], 2, -1).transpose(0, 2, 1).reshape(-1, 2)
    label = labels[RPN_LABEL].asnumpy().reshape(-1).astype(np.int64)
    keep = label != -1
    return prob[keep], label[keep]


def _rcnn_probs_and_labels(preds: list) -> tuple[np.ndarray, np.ndarray]:
    """R-CNN probabilities [n, C] and labels [n] of the sampled ROIs."""
    prob = preds[RCNN_CLS_PROB].asnumpy()
    return prob.reshape(-1, prob.shape[-1]), preds[RCNN_LABEL].asnumpy().reshape(-1).astype(np.int64)


class _ProbMetric(mx.metric.EvalMetric):
    """Accuracy (``kind="acc"``) or log loss of the ``"rpn"`` or ``"rcnn"`` classifier."""

    def __init__(self, name: str, stage: str, kind: str) -> None:
        super().__init__(name)
        self._stage, self._kind = stage, kind

    def update(self, labels: list, preds: list) -> None:
        if self._stage == "rpn":
            prob, label = _rpn_probs_and_labels(labels, preds)
        else:
            prob, label = _rcnn_probs_and_labels(preds)
        if self._kind == "acc":
            self.sum_metric += float(np.sum(prob.argmax(axis=1) == label))
        else:
            picked = prob[np.arange(label.size), label]
            self.sum_metric += float(np.sum(-np.log(picked + 1e-14)))
        self.num_inst += label.size


class RPNAcc(_ProbMetric):
    """Fraction of sampled anchors (label 0/1) classified right."""

    def __init__(self) -> None:
        super().__init__("RPNAcc", "rpn", "acc")


class RPNLogLoss(_ProbMetric):
    """Mean -log p(label) over the sampled anchors."""

    def __init__(self) -> None:
        super().__init__("RPNLogLoss", "rpn", "logloss")


class RCNNAcc(_ProbMetric):
    """Fraction of sampled ROIs classified right."""

    def __init__(self) -> None:
        super().__init__("RCNNAcc", "rcnn", "acc")


class RCNNLogLoss(_ProbMetric):
    """Mean -log p(label) over the sampled ROIs."""

    def __init__(self) -> None:
        super().__init__("RCNNLogLoss", "rcnn", "logloss")


class RPNL1Loss(mx.metric.EvalMetric):
    """Summed RPN smooth-L1 loss per foreground anchor (bbox_weight > 0 counts 4 per anchor)."""

    def __init__(self) -> None:
        super().__init__("RPNL1Loss")

    def update(self, labels: list, preds: list) -> None:
        self.sum_metric += float(np.sum(preds[RPN_BBOX_LOSS].asnumpy()))
        self.num_inst += int(np.sum(labels[RPN_BBOX_WEIGHT].asnumpy() > 0)) // 4


class RCNNL1Loss(mx.metric.EvalMetric):
    """Summed R-CNN smooth-L1 loss per foreground ROI (label != 0)."""

    def __init__(self) -> None:
        super().__init__("RCNNL1Loss")

    def update(self, labels: list, preds: list) -> None:
        self.sum_metric += float(np.sum(preds[RCNN_BBOX_LOSS].asnumpy()))
        self.num_inst += int(np.sum(preds[RCNN_LABEL].asnumpy() != 0))


def rcnn_metrics() -> mx.metric.CompositeEvalMetric:
    """The six training metrics of the original, in its order."""
    composite = mx.metric.CompositeEvalMetric()
    for metric in (RPNAcc(), RPNLogLoss(), RPNL1Loss(), RCNNAcc(), RCNNLogLoss(), RCNNL1Loss()):
        composite.add(metric)
    return composite
