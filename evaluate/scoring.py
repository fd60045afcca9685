"""Scoring a bound module over a data iterator, each image counted once.

``Module.score`` (which ``Module.fit`` uses for validation) feeds every
batch whole to the metric, including the padding ``DetRecordIter`` adds to
the last batch, so up to ``batch_size - 1`` images count twice. This loop
trims ``batch.pad`` rows from the outputs and labels first. Training
validation (:class:`train.loop.ResumableModule`) and evaluate.py both use it,
so the mAP logged during training equals evaluate.py's on the same checkpoint.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import mxnet as mx


def score_unpadded(module: mx.mod.BaseModule, data_iter: mx.io.DataIter, metrics: Sequence[mx.metric.EvalMetric],
                   num_batch: int | None = None, reset: bool = True,
                   batch_end_callback: Callable | None = None, epoch: int = 0) -> int:
    """Run ``module`` (inference mode) over ``data_iter`` and update ``metrics``; returns the images scored.

    ``num_batch`` caps the batches. ``batch_end_callback`` receives
    ``mx.model.BatchEndParam`` like ``Module.score``'s (its ``eval_metric`` is
    the first metric).
    """
    if reset:
        data_iter.reset()
    images = 0
    for nbatch, batch in enumerate(data_iter):
        if num_batch is not None and nbatch >= num_batch:
            break
        module.forward(batch, is_train=False)
        keep = batch.data[0].shape[0] - (batch.pad or 0)
        outputs = [out[:keep] for out in module.get_outputs()]
        labels = [label[:keep] for label in batch.label]
        for metric in metrics:
            metric.update(labels, outputs)
        images += keep
        if batch_end_callback is not None:
            param = mx.model.BatchEndParam(epoch=epoch, nbatch=nbatch, eval_metric=metrics[0], locals=locals())
            for callback in batch_end_callback if isinstance(batch_end_callback, list) else [batch_end_callback]:
                callback(param)
    return images
