"""Classification and localisation losses for the SSD training graph.

``softmax_cross_entropy_output`` is the original's head (``SoftmaxOutput`` on the mined
anchors), with optional label smoothing. ``softmax_focal_output`` is the softmax focal loss of the gluon SSD tutorial
(``-alpha * (1 - p_t)**gamma * log(p_t)``, alpha 0.25, gamma 2; Lin et al. 2017), written
with symbolic operators so that it runs inside a ``Module`` on CPU and GPU alike.
``giou_loss_output`` is the generalised-IoU box loss (Rezatofighi et al. 2019) in place of the
original's smooth L1 on the encoded offsets.
"""
from __future__ import annotations

from collections.abc import Sequence

import mxnet as mx
import numpy as np

# p_t is clipped from below so that log(p_t) and its gradient stay finite.
MIN_PROBABILITY = 1e-12
# the largest encoded log-scale a decoded width or height may take (torchvision's bbox_xform_clip,
# log(1000 / 16)): an untrained head's exp() cannot overflow
MAX_LOG_SCALE = float(np.log(1000.0 / 16))
# keeps the IoU's and the enclosing box's divisions finite for degenerate boxes
AREA_EPS = 1e-9


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


def _decode(offsets: list[mx.sym.Symbol], anchors: list[mx.sym.Symbol], variances: Sequence[float]
            ) -> list[mx.sym.Symbol]:
    """Corner boxes ``[xmin, ymin, xmax, ymax]`` (each ``[B, N]``) from encoded offsets ``[dx, dy, dw, dh]``.

    ``anchors`` are the corners ``[1, N]`` each; the decoding is MultiBoxDetection's:
    ``cx = acx + dx * v0 * aw``, ``w = aw * exp(dw * v2)``.
    """
    ax0, ay0, ax1, ay1 = anchors
    aw, ah = ax1 - ax0, ay1 - ay0
    acx, acy = (ax0 + ax1) * 0.5, (ay0 + ay1) * 0.5
    dx, dy, dw, dh = offsets
    cx = mx.sym.broadcast_add(acx, mx.sym.broadcast_mul(dx * variances[0], aw))
    cy = mx.sym.broadcast_add(acy, mx.sym.broadcast_mul(dy * variances[1], ah))
    half_w = mx.sym.broadcast_mul(mx.sym.exp(mx.sym.clip(dw * variances[2], -MAX_LOG_SCALE, MAX_LOG_SCALE)), aw) * 0.5
    half_h = mx.sym.broadcast_mul(mx.sym.exp(mx.sym.clip(dh * variances[3], -MAX_LOG_SCALE, MAX_LOG_SCALE)), ah) * 0.5
    return [cx - half_w, cy - half_h, cx + half_w, cy + half_h]


def giou_loss_output(loc_preds: mx.sym.Symbol, loc_target: mx.sym.Symbol, loc_target_mask: mx.sym.Symbol,
                     anchor_boxes: mx.sym.Symbol, variances: Sequence[float], name: str = "loc_loss"
                     ) -> mx.sym.Symbol:
    """The generalised-IoU loss ``1 - GIoU`` of the matched anchors' decoded boxes.

    Parameters
    ----------
    loc_preds : predicted offsets ``[B, N*4]`` (dx, dy, dw, dh per anchor).
    loc_target : ``MultiBoxTarget``'s encoded ground truth ``[B, N*4]``, 0 on unmatched anchors.
    loc_target_mask : ``[B, N*4]``, 1 on the four entries of each matched anchor, else 0.
    anchor_boxes : ``MultiBoxPrior``'s corners ``[1, N, 4]``, normalised to [0, 1].
    variances : the offsets' encoding variances (``MultiBoxTarget``'s).

    Returns
    -------
    A loss head named ``name``, value ``[B, N]``: ``1 - GIoU(pred, truth)`` on matched anchors, 0
    elsewhere, where ``GIoU = IoU - (C - U) / C`` with U the union and C the area of the smallest box
    enclosing both. The gradient reaches ``loc_preds`` only and is divided by the number of matched
    anchors in the batch (``normalization='valid'``: the non-zero terms), as the smooth-L1 head is by
    its non-zero terms. Unlike the smooth L1 on offsets, the loss is scale-invariant and still pulls
    a predicted box that does not overlap its object (IoU 0) towards it.
    """
    def columns(flat: mx.sym.Symbol) -> list[mx.sym.Symbol]:
        # [B, N*4] -> four [B, N]
        return list(mx.sym.split(flat.reshape((0, -1, 4)), num_outputs=4, axis=2, squeeze_axis=True))

    anchors = list(mx.sym.split(anchor_boxes, num_outputs=4, axis=2, squeeze_axis=True))  # four [1, N]
    px0, py0, px1, py1 = _decode(columns(loc_preds), anchors, variances)
    tx0, ty0, tx1, ty1 = _decode(columns(mx.sym.BlockGrad(loc_target)), anchors, variances)
    matched = mx.sym.BlockGrad(mx.sym.slice_axis(loc_target_mask.reshape((0, -1, 4)), axis=2, begin=0, end=1)
                               .reshape((0, -1)))  # [B, N]
    inter_w = mx.sym.relu(mx.sym.minimum(px1, tx1) - mx.sym.maximum(px0, tx0))
    inter_h = mx.sym.relu(mx.sym.minimum(py1, ty1) - mx.sym.maximum(py0, ty0))
    inter = inter_w * inter_h
    union = (px1 - px0) * (py1 - py0) + (tx1 - tx0) * (ty1 - ty0) - inter
    enclosing = (mx.sym.maximum(px1, tx1) - mx.sym.minimum(px0, tx0)) * (
        mx.sym.maximum(py1, ty1) - mx.sym.minimum(py0, ty0))
    giou = inter / (union + AREA_EPS) - (enclosing - union) / (enclosing + AREA_EPS)
    return mx.sym.MakeLoss((1.0 - giou) * matched, grad_scale=1., normalization="valid", name=name)

