"""Classification losses for the SSD training graph.

``softmax_cross_entropy_output`` is the original's head (``SoftmaxOutput`` on the mined
anchors), with optional label smoothing. ``softmax_focal_output`` is the softmax focal loss of the gluon SSD tutorial
(``-alpha * (1 - p_t)**gamma * log(p_t)``, alpha 0.25, gamma 2; Lin et al. 2017), written
with symbolic operators so that it runs inside a ``Module`` on CPU and GPU alike.
"""
from __future__ import annotations

import mxnet as mx
import numpy as np

# p_t is clipped from below so that log(p_t) and its gradient stay finite.
MIN_PROBABILITY = 1e-12


def softmax_cross_entropy_output(cls_preds: mx.sym.Symbol, cls_target: mx.sym.Symbol, label_smoothing: float = 0.0,
                                 name: str = "cls_prob") -> mx.sym.Symbol:
    """The original's classifier head: softmax cross-entropy over the class axis.

    ``cls_preds`` ``[B, C+1, N]`` and ``cls_target`` ``[B, N]`` as :func:`softmax_focal_output`.
    Returns ``softmax(cls_preds, axis=1)`` ``[B, C+1, N]``; the gradient with respect to ``cls_preds``
    is ``(p - t) / V`` on the V anchors with target >= 0 (the positives and the mined negatives), 0
    on the others. ``t`` is one-hot, or with ``label_smoothing`` a > 0 (mxnet's ``smooth_alpha``)
    ``1 - a`` on the target class and ``a / C`` on each of the other C classes: the classifier stops
    pushing its scores apart once the target class holds ``1 - a``. At 0 the node is the original's
    exactly.
    """
    if not label_smoothing:
        return mx.sym.SoftmaxOutput(data=cls_preds, label=cls_target, ignore_label=-1, use_ignore=True,
                                    grad_scale=1., multi_output=True, normalization="valid", name=name)
    # mxnet 1.9's SoftmaxOutput ignores smooth_alpha with multi_output: one row per anchor instead
    by_anchor = mx.sym.transpose(cls_preds, axes=(0, 2, 1))  # [B, N, C+1]
    rows = by_anchor.reshape((-3, -2))  # [B*N, C+1]
    prob = mx.sym.SoftmaxOutput(data=rows, label=cls_target.reshape((-1,)), ignore_label=-1, use_ignore=True,
                                grad_scale=1., normalization="valid", smooth_alpha=label_smoothing,
                                name=f"{name}_smoothed")
    # back to [B, C+1, N], the shape the metrics and MultiBoxDetection read
    return mx.sym.transpose(mx.sym.reshape_like(prob, by_anchor), axes=(0, 2, 1), name=name)


def softmax_focal_output(cls_preds: mx.sym.Symbol, cls_target: mx.sym.Symbol, num_classes: int,
                         alpha: float = 0.25, gamma: float = 2.0, name: str = "cls_prob") -> mx.sym.Symbol:
    """Class probabilities that back-propagate the softmax focal loss.

    Parameters
    ----------
    cls_preds : class scores ``[B, C+1, N]`` (C object classes + background, N anchors).
    cls_target : per-anchor target ``[B, N]``: 0 background, k > 0 class k-1, -1 ignored.
    num_classes : C, the number of object classes without background.

    Returns
    -------
    A loss head named ``name`` whose forward value is ``softmax(cls_preds, axis=1)``
    ``[B, C+1, N]``, exactly what ``SoftmaxOutput(multi_output=True)`` returns, so metrics and
    ``MultiBoxDetection`` read it unchanged. Its gradient with respect to ``cls_preds`` is that of

        FL = sum over anchors with target >= 0 of -alpha * (1 - p_t)**gamma * log(p_t),
        divided by max(1, number of anchors with target > 0 in the batch),

    where p_t is the probability of the anchor's target class. The loss is normalised by the
    positive anchors, as in RetinaNet, because focal loss is meant to see every background
    anchor (the builder turns hard negative mining off for it), so dividing by the valid
    anchors would shrink the gradient by the thousands of easy negatives.
    """
    prob = mx.sym.softmax(cls_preds, axis=1)
    valid = cls_target >= 0
    # ignored anchors pick class 0 here and are masked out below
    p_target = mx.sym.pick(prob, mx.sym.relu(cls_target), axis=1)
    p_target = mx.sym.clip(p_target, MIN_PROBABILITY, 1.0)
    focal = -alpha * ((1.0 - p_target) ** gamma) * mx.sym.log(p_target) * valid
    num_positive = mx.sym.BlockGrad(mx.sym.maximum(mx.sym.sum(cls_target > 0), 1.0))
    loss = mx.sym.broadcast_div(focal, num_positive)  # [B, N]
    # Value: prob + 0. Gradient: MakeLoss seeds grad_scale into each of the C+1 channels; the
    # broadcast over the channel axis sums them back to 1 per anchor, which flows into `loss`
    # only (the probabilities and the subtracted copy are blocked).
    zero_with_loss_gradient = mx.sym.expand_dims(loss - mx.sym.BlockGrad(loss), axis=1)
    carrier = mx.sym.broadcast_add(mx.sym.BlockGrad(prob), zero_with_loss_gradient)
    return mx.sym.MakeLoss(carrier, grad_scale=1.0 / (num_classes + 1), normalization="null", name=name)


def focal_loss_value(prob, cls_target, alpha: float = 0.25, gamma: float = 2.0) -> float:
    """The loss :func:`softmax_focal_output` minimises, from its output, in numpy.

    ``prob`` is ``[B, C+1, N]`` (the ``cls_prob`` output) and ``cls_target`` ``[B, N]``
    (the ``cls_label`` output); both may be numpy arrays or NDArrays. For logging and tests.
    """
    prob = prob.asnumpy() if hasattr(prob, "asnumpy") else np.asarray(prob)
    target = cls_target.asnumpy() if hasattr(cls_target, "asnumpy") else np.asarray(cls_target)
    valid = target >= 0
    picked = np.take_along_axis(prob, np.maximum(target, 0).astype(np.int64)[:, None, :], axis=1)[:, 0, :]
    picked = np.clip(picked, MIN_PROBABILITY, 1.0)
    per_anchor = -alpha * (1.0 - picked) ** gamma * np.log(picked) * valid
    return float(per_anchor.sum() / max(1, int((target > 0).sum())))
