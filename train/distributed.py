"""Data-parallel training over several processes through mxnet's parameter server (``--kv-store dist_*``).

``tools/launch.py`` starts a scheduler, servers and workers (``DMLC_ROLE``,
``DMLC_PS_ROOT_URI`` ...); every worker runs ``train.py`` with the same
flags. What this module adds to ``Module.fit`` (see README "Distributed training"):

* **The step is the mean over every slice of every worker.** For the sync
  modes the servers only sum gradients and each worker updates its own copy
  (``MXNET_UPDATE_ON_KVSTORE=0``, read by mxnet's ``model._create_kvstore``):
  momentum stays local and identical everywhere, so it is saved and restored
  like a single process's. ``rescale_grad`` gains a ``1 / num_workers``, so
  W workers x D devices at batch B compute exactly what one process with
  W x D devices computes at batch W x B (each device normalises its loss by
  its own slice). ``dist_async`` must update on the servers (a server without
  an optimizer cannot apply pushes one at a time): its momentum lives there,
  is not saved, and restarts on resume.
* **Everyone starts from rank 0's weights.** With updates on the workers,
  ``model._initialize_kvstore`` only pushes rank 0's values to the servers
  and never pulls them back (mxnet's own gap): :func:`pull_weights` does.
* **Shards.** ``ImageDetRecordIter(num_parts=W, part_index=rank)`` gives each
  worker a contiguous byte range of the ``.rec`` (dmlc's ``InputSplit``);
  :func:`shard_sizes` recomputes every worker's image count from the record
  offsets so that all of them run the same number of batches per epoch
  (:class:`EqualBatches` repeats images of a shorter shard): an unequal
  count would leave the longer shard's worker waiting forever in ``dist_sync``.
* **One writer.** Rank 0 alone writes checkpoints, ``-best``, the metrics,
  curves, run config and log file, and validates; other ranks log to stderr
  with ``[rank N]`` in each line.
* **Fail fast.** A worker that raises leaves with ``os._exit`` (a normal exit
  waits in ps-lite's exit barrier for peers that are waiting for it: a
  deadlock), and :class:`Watchdog` ends a worker that has finished no batch
  for ``--dist-timeout`` seconds (a peer or server is gone). The launcher
  stops the whole local job as soon as one process dies.
* **Same weights everywhere, checked.** At every epoch end of a sync run the
  workers exchange SHA-256 digests of their weights through the kvstore
  (:func:`check_weights_agree`); a difference stops the job.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence

import mxnet as mx
import numpy as np

from config.errors import UserError, short_mxnet_message
from train.resume import load_resume

# kvstore keys of our own, apart from the parameter names Module uses
_DIGEST_KEY = "__mxdet_weights_sha256__"
_BROADCAST_KEY = "__mxdet_broadcast_{}__"
DIGEST_BYTES = 32
# the debug log of the records each worker trained on (README "Distributed training")
LOG_RECORDS_ENV = "MXDET_LOG_RECORDS"
# this process's rank once its kvstore exists, for the one-line error of exit_hard_on_error
_rank: int | None = None


def is_distributed(kv_store: str) -> bool:
    """True for the parameter-server kvstores (``dist_sync``, ``dist_device_sync``, ``dist_async``)."""
    return str(kv_store).startswith("dist")


def is_worker_process() -> bool:
    """True in a worker that tools/launch.py (or dmlc_tracker) started."""
    return os.environ.get("DMLC_ROLE") == "worker"


class Cluster:
    """The job as one worker sees it: the kvstore, this worker's rank, the number of workers.

    ``Cluster(kv_store)`` creates the kvstore (for ``dist_*`` this connects to
    the scheduler and waits until every node has joined). Outside a
    distributed job ``rank`` is 0 and ``num_workers`` 1, and every method is
    the single-process behaviour.
    """

    def __init__(self, kv_store: str):
        self.kind = str(kv_store)
        self.distributed = is_distributed(self.kind)
        if self.distributed and not (os.environ.get("DMLC_ROLE") and os.environ.get("DMLC_PS_ROOT_URI")):
            raise UserError(f"--kv-store {self.kind}: start the job with tools/launch.py "
                            "(e.g. python tools/launch.py -n 2 -s 1 --launcher local -- python train.py ...)")
        try:
            self.kv = mx.kvstore.create(self.kind)
        except mx.base.MXNetError as err:
            raise UserError(f"--kv-store {self.kind}: {short_mxnet_message(err)}") from None
        self.rank = self.kv.rank if self.distributed else 0
        self.num_workers = self.kv.num_workers if self.distributed else 1
        global _rank
        _rank = self.rank
        self.watchdog: Watchdog | None = None

    @property
    def sync(self) -> bool:
        """A synchronous distributed job (every step waits for every worker)."""
        return self.distributed and "async" not in self.kind

    @property
    def writer(self) -> bool:
        """Whether this process writes the run's files (rank 0 only)."""
        return self.rank == 0

    @property
    def update_on_kvstore(self) -> bool | None:
        """Where the optimizer runs: False (workers) for the sync modes, True (servers) for dist_async,
        None (mxnet decides) for a single process."""
        if not self.distributed:
            return None
        return not self.sync

    def schedule_batches(self, batches_per_epoch: int) -> int:
        """Optimizer updates per epoch: dist_async's servers count every worker's push as one."""
        return batches_per_epoch * (self.num_workers if self.distributed and not self.sync else 1)

    def rescale_grad(self, per_process: float) -> float:
        """``rescale_grad`` of one process's summed device gradients, divided by the worker count when
        the servers sum every worker's gradients (sync): the step is then the mean over all slices."""
        return per_process / self.num_workers if self.sync else per_process

    def log_file(self, log_file: str | None) -> str | None:
        """The log file this process writes: rank 0's only."""
        return log_file if self.writer else None

    def describe(self, logger: logging.Logger, lr: float, lr_scale_workers: bool) -> float:
        """Log the job's layout once; returns the learning rate to use (``--lr-scale-workers``)."""
        if not self.distributed:
            return lr
        servers = os.environ.get("DMLC_NUM_SERVER", "?")
        # tools/launch.py reads this line to name a worker by its rank
        logger.info("Distributed: rank %d of %d workers, %s server(s), kvstore %s (pid %d)", self.rank,
                    self.num_workers, servers, self.kind, os.getpid())
        if not self.sync:
            logger.info("dist_async updates on the servers: optimizer state (momentum) is not saved, and "
                        "a resumed run restarts it")
        if lr_scale_workers:
            logger.info("--lr-scale-workers: learning rate %g x %d workers = %g", lr, self.num_workers,
                        lr * self.num_workers)
            return lr * self.num_workers
        return lr

    def tag_logs(self, logger: logging.Logger) -> None:
        """Put ``[rank N]`` into every log line of ranks other than 0."""
        if self.distributed and not self.writer:
            tag = f"[rank {self.rank}] "
            for handler in logger.handlers:
                handler.addFilter(_PrefixFilter(tag))

    def broadcast(self, name: str, value: float) -> float:
        """Rank 0's ``value`` on every worker (a kvstore init is pushed by rank 0 alone, then a barrier)."""
        if not self.distributed:
            return value
        key = _BROADCAST_KEY.format(name)
        self.kv.init(key, mx.nd.array([value]))
        out = mx.nd.zeros((1,))
        self.kv.pull(key, out=out)
        return float(out.asscalar())

    def start_watchdog(self, timeout: float) -> Watchdog | None:
        """Start :class:`Watchdog` (distributed runs with ``timeout`` > 0)."""
        if self.distributed and timeout > 0:
            self.watchdog = Watchdog(timeout, self.rank)
        return self.watchdog

    def beat(self, *_args) -> None:
        """A batch-end callback that tells the watchdog the run moves."""
        if self.watchdog is not None:
            self.watchdog.beat()

    @contextlib.contextmanager
    def own_work(self) -> Iterator[None]:
        """This rank's own epoch-end work (checkpoint, validation): no peer is awaited, the watchdog waits."""
        if self.watchdog is None:
            yield
            return
        with self.watchdog.paused():
            yield


class _PrefixFilter(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "_rank_tagged", False):
            record.msg = self.prefix + str(record.msg)
            record._rank_tagged = True
        return True


# --- weights ---------------------------------------------------------------------------------------
def pull_weights(module: mx.mod.Module) -> None:
    """Overwrite every device's parameters with the kvstore's (rank 0's initial values).

    Called right after ``init_optimizer`` when the workers update locally:
    ``_initialize_kvstore`` then only ``init``s the keys (rank 0 pushes) and,
    unlike the update-on-kvstore path, does not pull them back, so workers with
    different random initialisations would otherwise each train their own model.
    """
    kv = module._kvstore
    group = module._exec_group
    for index, (name, arrays) in enumerate(zip(group.param_names, group.param_arrays)):
        kv.pull(name, out=arrays, priority=-index)
    for arrays in group.param_arrays:
        for array in arrays:
            array.wait_to_read()
    module._params_dirty = True


def weights_digest(module: mx.mod.Module) -> bytes:
    """SHA-256 over the first device's parameters, in name order (float32 bytes)."""
    digest = hashlib.sha256()
    group = module._exec_group
    for name, arrays in sorted(zip(group.param_names, group.param_arrays), key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[0].asnumpy(), dtype=np.float32).tobytes())
    return digest.digest()


def digest_of_params(arg_params: dict, names: Sequence[str]) -> str:
    """:func:`weights_digest` (hex) of saved ``arg_params`` restricted to ``names``: what a checkpoint
    of a worker that logged that digest holds."""
    digest = hashlib.sha256()
    for name in sorted(names):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arg_params[name].asnumpy(), dtype=np.float32).tobytes())
    return digest.hexdigest()


def check_weights_agree(cluster: Cluster, module: mx.mod.Module, epoch: int, logger: logging.Logger) -> None:
    """Every worker's weight digest on every worker; a mismatch is a one-line error naming the ranks.

    The exchange is an all-gather through the kvstore: worker ``k`` pushes a
    vector that holds its 32 digest bytes (exact small integers in float32) in
    slot ``k`` and zeros elsewhere; the servers sum the pushes, which puts each
    worker's digest in its own slot. Only for the sync modes (async servers
    would apply the optimizer to the push).
    """
    if not cluster.sync:
        return
    width = DIGEST_BYTES * cluster.num_workers
    if not getattr(cluster, "_digest_key_ready", False):
        cluster.kv.init(_DIGEST_KEY, mx.nd.zeros((width,)))
        cluster._digest_key_ready = True
    mine = np.zeros(width, dtype=np.float32)
    own = weights_digest(module)
    start = DIGEST_BYTES * cluster.rank
    mine[start:start + DIGEST_BYTES] = np.frombuffer(own, dtype=np.uint8)
    gathered = mx.nd.zeros((width,))
    cluster.kv.pushpull(_DIGEST_KEY, mx.nd.array(mine), out=gathered)
    table = gathered.asnumpy().astype(np.uint8).reshape(cluster.num_workers, DIGEST_BYTES)
    differ = [rank for rank in range(cluster.num_workers) if table[rank].tobytes() != table[0].tobytes()]
    if differ:
        raise UserError(f"the weights of rank(s) {', '.join(map(str, differ))} differ from rank 0's after epoch "
                        f"{epoch + 1}; the workers no longer train one model")
    logger.info("Epoch[%d] weights identical on %d workers (sha256 %s)", epoch, cluster.num_workers, own.hex())


class EqualBatches(mx.io.DataIter):
    """Exactly ``num_batches`` batches of ``inner`` per epoch: a shorter shard starts over (reshuffled).

    ``dist_sync`` makes every worker wait for every other at each step, so a
    worker whose shard yields one batch fewer would leave the others waiting
    forever at the epoch's end. The repeats come from the inner iterator's next
    pass (``reset()``), so they are drawn like any other batch.

    At every epoch end it logs how many images this worker trained on; with the
    environment variable ``MXDET_LOG_RECORDS=1`` also their record ids
    (``batch.index``), a debugging aid the tests use to check the shards.
    """

    def __init__(self, inner: mx.io.DataIter, num_batches: int, logger: logging.Logger, rank: int = 0):
        super().__init__(inner.batch_size)
        self.inner = inner
        self.num_batches = int(num_batches)
        self.logger = logger
        self.rank = rank
        self._count = 0
        self._used: list[int] = []
        self._repeated: list[int] = []
        self._epoch = 0

    @property
    def provide_data(self):
        return self.inner.provide_data

    @property
    def provide_label(self):
        return self.inner.provide_label

    def __len__(self) -> int:
        return self.num_batches

    def reset(self) -> None:
        if self._count:
            self._report()
        self.inner.reset()
        self._count = 0
        self._used, self._repeated = [], []

    def next(self) -> mx.io.DataBatch:
        if self._count >= self.num_batches:
            raise StopIteration
        repeat = False
        try:
            batch = self.inner.next()
        except StopIteration:
            self.inner.reset()
            batch = self.inner.next()
            repeat = True
        self._count += 1
        real = len(batch.index) - (batch.pad or 0) if batch.index is not None else 0
        ids = [int(i) for i in list(batch.index)[:real]] if batch.index is not None else []
        (self._repeated if repeat else self._used).extend(ids)
        return batch

    def _report(self) -> None:
        self.logger.info("Epoch[%d] rank %d trained on %d images of its shard (%d repeated to match the "
                         "longest shard)", self._epoch, self.rank, len(self._used), len(self._repeated))
        if os.environ.get(LOG_RECORDS_ENV) == "1":
            self.logger.info("Epoch[%d] rank %d records: %s | repeated: %s", self._epoch, self.rank,
                             ",".join(map(str, self._used)), ",".join(map(str, self._repeated)))
        self._epoch += 1


def batches_per_worker(sizes: Sequence[int], batch_size: int, drop_last: bool = False) -> int:
    """Batches every worker runs per epoch: the longest shard's count (padded last batch, or dropped)."""
    longest = max(sizes)
    return longest // batch_size if drop_last else -(-longest // batch_size)


# --- fail fast -------------------------------------------------------------------------------------
class Watchdog:
    """Ends this worker when no batch has finished for ``timeout`` seconds.

    In ``dist_sync`` a worker or server that dies leaves the others blocked in
    push/pull for ever; ps-lite notices nothing. tools/launch.py stops a local
    job itself, but on several machines it cannot see the remote processes:
    this thread is what stops them there. The time this rank spends on its own
    epoch-end work (checkpoint, validation) does not count (:meth:`paused`); the
    time the other ranks wait for rank 0's validation does, so ``--dist-timeout``
    must exceed it.
    """

    def __init__(self, timeout: float, rank: int):
        self.timeout = float(timeout)
        self.rank = rank
        self._last = time.monotonic()
        self._paused = 0
        thread = threading.Thread(target=self._watch, name="mxdet-watchdog", daemon=True)
        thread.start()

    def beat(self) -> None:
        self._last = time.monotonic()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        self._paused += 1
        try:
            yield
        finally:
            self._paused -= 1
            self.beat()

    def _watch(self) -> None:
        while True:
            time.sleep(min(5.0, max(0.2, self.timeout / 10)))
            idle = time.monotonic() - self._last
            if not self._paused and idle > self.timeout:
                print(f"error: rank {self.rank}: no batch finished for {idle:.0f} s (--dist-timeout "
                      f"{self.timeout:g}): another worker or a server of the job is gone; stopping",
                      file=sys.stderr, flush=True)
                os._exit(1)


def exit_hard_on_error(main: Callable[[], object]) -> Callable[[], object]:
    """``main`` for a distributed worker: any error is one line and ``os._exit``.

    A normal interpreter exit destroys the kvstore, whose destructor waits in
    ps-lite's barrier for the other workers, which are waiting in push/pull
    for this one: the job would hang instead of failing. Outside a worker
    ``main`` is returned unchanged (``run_cli`` reports errors as usual).
    """
    if not is_worker_process():
        return main

    def run() -> object:
        try:
            return main()
        except BaseException as err:  # noqa: BLE001 - every way out must skip the exit barrier
            if isinstance(err, SystemExit) and not err.code:
                raise
            status = 130 if isinstance(err, KeyboardInterrupt) else 2
            if isinstance(err, (UserError, FileNotFoundError)):
                message = str(err)
            elif type(err).__name__ == "MXNetError":
                message = f"mxnet: {short_mxnet_message(err)}"
            elif isinstance(err, SystemExit):
                message, status = f"exit status {err.code}", err.code if isinstance(err.code, int) else 1
            else:
                traceback.print_exc()
                message, status = f"{type(err).__name__}: {err}", 1
            where = f"rank {_rank}: " if _rank is not None else ""
            print(f"error: {where}{message}", file=sys.stderr, flush=True)
            os._exit(status)
    return run


def load_resume_everywhere(cluster: Cluster, prefix: str, resume, ctx, logger: logging.Logger) -> tuple:
    """:func:`train.resume.load_resume` with every rank on rank 0's choice.

    Rank 0 resolves ``--resume`` (for 'auto' its newest checkpoint that loads)
    and broadcasts the epoch; the other ranks load that same epoch, so a
    checkpoint finished or removed between their start-ups cannot split the
    job. On several machines the prefix must be on a shared file system.
    """
    if not cluster.distributed:
        return load_resume(prefix, resume, ctx, logger)
    if cluster.writer:
        result = load_resume(prefix, resume, ctx, logger)
        cluster.broadcast("resume", result[0])
        return result
    epoch = int(cluster.broadcast("resume", 0))
    if epoch <= 0:
        return -1, None, None, None, None
    return load_resume(prefix, epoch, ctx, logger, clean=False)


def epoch_end_callback(cluster: Cluster, module: mx.mod.Module, work: Callable, logger: logging.Logger
                       ) -> Callable:
    """``Module.fit``'s epoch-end callback: the weight check of a sync job, then ``work`` (checkpoint,
    validation) with the watchdog paused, since this rank waits for no one meanwhile."""

    def callback(epoch: int, symbol, arg_params, aux_params) -> None:
        check_weights_agree(cluster, module, epoch, logger)
        with cluster.own_work():
            work(epoch, symbol, arg_params, aux_params)

    return callback
