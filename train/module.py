"""The Module that training uses: momentum restored on resume, validation each image once."""
from __future__ import annotations

from collections.abc import Callable

import mxnet as mx

from config.environment import scoped_env
from evaluate.scoring import score_unpadded
from train.distributed import pull_weights


class ResumableModule(mx.mod.Module):
    """The Module that training uses: momentum restored on resume, validation each image once.

    * ``Module.fit`` creates the optimizer itself, so :meth:`init_optimizer` is
      the one place where the state of a resumed run can be restored before
      the first update.
    * :meth:`score`, which ``fit`` validates with, trims the padding of the
      last batch (:func:`evaluate.scoring.score_unpadded`).
    * ``batch_begin_callback`` is called before every training batch (``fit``
      has no such hook): the progress line times batches from their real start.
    * ``update_on_kvstore`` (None: mxnet's choice) says where the optimizer runs;
      a distributed sync run updates on the workers and starts them all from
      rank 0's weights (:mod:`train.distributed`).
    """

    def __init__(self, *args, optimizer_states: str | None = None,
                 batch_begin_callback: Callable[[], None] | None = None, update_on_kvstore: bool | None = None,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self._optimizer_states_file = optimizer_states
        self._batch_begin_callback = batch_begin_callback
        self._want_update_on_kvstore = update_on_kvstore

    def forward_backward(self, data_batch: mx.io.DataBatch) -> None:
        if self._batch_begin_callback is not None:
            self._batch_begin_callback()
        super().forward_backward(data_batch)

    def score(self, eval_data, eval_metric, num_batch=None, batch_end_callback=None, score_end_callback=None,
              reset=True, epoch=0, sparse_row_id_fn=None):
        assert self.binded and self.params_initialized
        if not isinstance(eval_metric, mx.metric.EvalMetric):
            eval_metric = mx.metric.create(eval_metric)
        eval_metric.reset()
        score_unpadded(self, eval_data, [eval_metric], num_batch, reset, batch_end_callback, epoch)
        if score_end_callback:
            param = mx.model.BatchEndParam(epoch=epoch, nbatch=num_batch, eval_metric=eval_metric, locals=locals())
            for callback in score_end_callback if isinstance(score_end_callback, list) else [score_end_callback]:
                callback(param)
        return eval_metric.get_name_value()

    def init_optimizer(self, *args, **kwargs) -> None:
        # mxnet's _create_kvstore reads this variable and nothing else to decide where updates run
        wanted = self._want_update_on_kvstore
        with scoped_env("MXNET_UPDATE_ON_KVSTORE", None if wanted is None else "1" if wanted else "0"):
            super().init_optimizer(*args, **kwargs)
        if self._kvstore is not None and "dist" in self._kvstore.type and not self._update_on_kvstore:
            pull_weights(self)
        if self._optimizer_states_file:
            self.load_optimizer_states(self._optimizer_states_file)
            self.logger.info("Restored optimizer state from %s", self._optimizer_states_file)
            self._optimizer_states_file = None
