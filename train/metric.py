"""SSD training metric: the two MultiBox losses, as Module.fit reports them."""
from __future__ import annotations

from collections.abc import Sequence

import mxnet as mx
import numpy as np

from evaluate.eval_metric import as_numpy


class MultiBoxMetric(mx.metric.EvalMetric):
    """Mean cross-entropy and box loss per counted anchor.

    ``update`` reads the training graph's outputs:

    * ``preds[0]`` cls_prob [B, C+1, N] (softmax over background + C classes);
    * ``preds[1]`` loc_loss, any shape (the smooth-L1 or GIoU terms, already masked);
    * ``preds[2]`` cls_label [B, N] (class + 1 for positives, 0 for mined
      negatives, -1 for anchors left out of the loss).

    With ``n`` the number of anchors with label >= 0,
    ``CrossEntropy = sum(-log(p[label] + eps)) / n`` over those anchors and
    ``SmoothL1 = sum(loc_loss) / n``. ``get()`` returns
    ``(['CrossEntropy', 'SmoothL1'], [ce, smooth_l1])``; ``nan`` before any
    anchor was counted. ``loc_name`` names the box loss (``'GIoU'`` for the
    GIoU head) in place of ``'SmoothL1'``.

    The metric keeps global statistics next to the local ones, so
    ``Speedometer(auto_reset=True)`` (which calls ``reset_local``) resets only
    its window and ``Module.fit`` logs the whole epoch's mean at the end of
    each epoch. Differences from the original: docs/upstream.md.
    """

    def __init__(self, eps: float = 1e-8, loc_name: str = "SmoothL1") -> None:
        self.eps = float(eps)
        self.names = ["CrossEntropy", loc_name]
        super().__init__("MultiBox", has_global_stats=True)

    def reset(self) -> None:
        """Clear the local and global sums."""
        self.reset_local()
        self.global_sum_metric = [0.0, 0.0]
        self.global_num_inst = [0, 0]

    def reset_local(self) -> None:
        """Clear the sums since the last local reset (the Speedometer window)."""
        self.sum_metric = [0.0, 0.0]
        self.num_inst = [0, 0]

    def update(self, labels: Sequence, preds: Sequence) -> None:
        """Add one batch; ``labels`` are unused (the targets come from the graph)."""
        cls_prob = as_numpy(preds[0])
        loc_loss = as_numpy(preds[1])
        cls_label = as_numpy(preds[2]).reshape(-1)
        counted = np.flatnonzero(cls_label >= 0)
        # [B, C+1, N] -> [B*N, C+1], anchors in the same order as cls_label
        prob = cls_prob.transpose((0, 2, 1)).reshape(-1, cls_prob.shape[1])
        target_prob = prob[counted, cls_label[counted].astype(np.int64)].astype(np.float64)
        sums = (float(np.sum(-np.log(target_prob + self.eps))), float(np.sum(loc_loss, dtype=np.float64)))
        for i, value in enumerate(sums):
            self.sum_metric[i] += value
            self.global_sum_metric[i] += value
            self.num_inst[i] += counted.size
            self.global_num_inst[i] += counted.size

    @staticmethod
    def _means(sums: list[float], counts: list[int]) -> list[float]:
        return [s / n if n else float("nan") for s, n in zip(sums, counts)]

    def get(self) -> tuple[list[str], list[float]]:
        """``(['CrossEntropy', 'SmoothL1'], values)`` since the last local reset."""
        return list(self.names), self._means(self.sum_metric, self.num_inst)

    def get_global(self) -> tuple[list[str], list[float]]:
        """``(['CrossEntropy', 'SmoothL1'], values)`` since the last full reset."""
        return list(self.names), self._means(self.global_sum_metric, self.global_num_inst)
