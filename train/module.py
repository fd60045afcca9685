"""The Module that training uses: momentum restored on resume, validation each image once."""
from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable

import mxnet as mx

from config.environment import scoped_env
from evaluate.scoring import score_unpadded
from train.distributed import pull_weights
from train.ema import WeightAverage

# the key of a .states file that also holds the raw weights of a run with --ema
WEIGHT_AVERAGE_KEY = "mxdet_weight_average"


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
    * ``ema_decay`` > 0 keeps :attr:`weight_average` (:mod:`train.ema`), created
      with the optimizer; its raw weights and step travel in the ``.states`` file.
    * ``checkpoint_symbol`` is the graph checkpoints hold (a bfloat16 run trains a
      converted graph and saves the float32 one it came from).
    * ``scores_after(epoch)`` False makes :meth:`score` skip that epoch's validation
      (``--val-interval``): nothing is run, logged or passed to the callbacks.
    """

    def __init__(self, *args, optimizer_states: str | None = None,
                 batch_begin_callback: Callable[[], None] | None = None, update_on_kvstore: bool | None = None,
                 ema_decay: float = 0.0, checkpoint_symbol: mx.sym.Symbol | None = None,
                 scores_after: Callable[[int], bool] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpoint_symbol = checkpoint_symbol if checkpoint_symbol is not None else self.symbol
        self._optimizer_states_file = optimizer_states
        self._batch_begin_callback = batch_begin_callback
        self._want_update_on_kvstore = update_on_kvstore
        self._ema_decay = ema_decay
        self.weight_average: WeightAverage | None = None
        self._scores_after = scores_after

    def forward_backward(self, data_batch: mx.io.DataBatch) -> None:
        if self._batch_begin_callback is not None:
            self._batch_begin_callback()
        super().forward_backward(data_batch)

    def score(self, eval_data, eval_metric, num_batch=None, batch_end_callback=None, score_end_callback=None,
              reset=True, epoch=0, sparse_row_id_fn=None):
        assert self.binded and self.params_initialized
        if self._scores_after is not None and not self._scores_after(epoch):
            return []
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
        # a resumed --ema run trains on from its raw weights: they must be in place before the kvstore
        # copies the weights (with updates on the kvstore, its copy is what the next step starts from)
        resumed_average = self._load_raw_weights()
        # mxnet's _create_kvstore reads this variable and nothing else to decide where updates run
        wanted = self._want_update_on_kvstore
        with scoped_env("MXNET_UPDATE_ON_KVSTORE", None if wanted is None else "1" if wanted else "0"):
            super().init_optimizer(*args, **kwargs)
        if self._kvstore is not None and "dist" in self._kvstore.type and not self._update_on_kvstore:
            pull_weights(self)
        if self._ema_decay > 0:
            self.weight_average = WeightAverage(self, self._ema_decay)
            if resumed_average is not None:
                self.weight_average.average, self.weight_average.step = resumed_average
        if self._optimizer_states_file:
            self.load_optimizer_states(self._optimizer_states_file)
            self.logger.info("Restored optimizer state from %s", self._optimizer_states_file)
            self._optimizer_states_file = None

    def _saved_weight_average(self) -> dict | None:
        """The ``{'step', 'raw'}`` an ``--ema`` run saved in the resumed ``.states`` file, if any."""
        if not self._optimizer_states_file:
            return None
        with open(self._optimizer_states_file, "rb") as f:
            saved = pickle.load(f)
        return saved[WEIGHT_AVERAGE_KEY] if isinstance(saved, dict) and WEIGHT_AVERAGE_KEY in saved else None

    def _load_raw_weights(self) -> tuple[dict, int] | None:
        """Put the raw weights of a resumed ``--ema`` checkpoint into the module; returns ``(average, step)``:
        the loaded checkpoint (the average) and its update count, or None for any other start."""
        state = self._saved_weight_average()
        if state is None:
            return None
        args, auxs = self.get_params()
        average = {name: value.copy() for name, value in {**args, **auxs}.items()}
        aux_names = set(self._exec_group.aux_names)
        raw = {name: mx.nd.array(value) for name, value in state["raw"].items()}
        self.set_params({k: v for k, v in raw.items() if k not in aux_names},
                        {k: v for k, v in raw.items() if k in aux_names}, force_init=True)
        return average, int(state["step"])

    def average_weights(self, *_args) -> None:
        """Batch-end callback: fold the updated weights into :attr:`weight_average` (with ``--ema``)."""
        if self.weight_average is not None:
            self.weight_average.update()

    def save_optimizer_states(self, fname: str) -> None:
        """mxnet's optimizer state; with ``--ema`` wrapped with the raw weights and the average's step."""
        super().save_optimizer_states(fname)
        if self.weight_average is None:
            return
        with open(fname, "rb") as f:
            optimizer = f.read()
        raw = {name: array.asnumpy() for name, array in self.weight_average.raw_params().items()}
        with open(fname, "wb") as f:
            pickle.dump({WEIGHT_AVERAGE_KEY: {"step": self.weight_average.step, "raw": raw}, "optimizer": optimizer},
                        f, protocol=pickle.HIGHEST_PROTOCOL)

    def load_optimizer_states(self, fname: str) -> None:
        """mxnet's optimizer state, from a plain file or from one that an ``--ema`` run wrapped."""
        with open(fname, "rb") as f:
            saved = pickle.load(f)
        if not (isinstance(saved, dict) and WEIGHT_AVERAGE_KEY in saved):
            super().load_optimizer_states(fname)
            return
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "optimizer.states")
            with open(path, "wb") as f:
                f.write(saved["optimizer"])
            super().load_optimizer_states(path)
