"""What a user sees while training: a progress line with ETA, and the history
(``<prefix>-metrics.csv`` and ``<prefix>-curves.png``) written after each epoch."""
from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable

from config.fileio import atomic_open, atomic_write


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


class ProgressLogger:
    """Batch-end callback: speed, running metrics, and ETA for the epoch and the run.

    Replaces ``mx.callback.Speedometer`` (same ``Speed: N samples/sec`` field).
    :class:`train.callbacks.DivergenceGuard` stops a run whose losses or weights
    become NaN.

    Times count from the real start of a batch: pass :meth:`batch_begin` to
    :class:`train.module.ResumableModule` (the first line of an epoch used to
    report ``Speed: 16000000000.00 samples/sec``, timed from its own end).
    ``lr_of(epoch)`` gives the rate of an epoch's first batch, logged and kept in
    ``epoch_lr``.
    """

    def __init__(self, batch_size: int, frequent: int, batches_per_epoch: int | None,
                 begin_epoch: int, end_epoch: int, logger: logging.Logger | None = None,
                 lr_of: Callable[[int], float] | None = None):
        self.batch_size = batch_size
        self.frequent = max(1, frequent)
        self.batches_per_epoch = batches_per_epoch
        self.begin_epoch = begin_epoch
        self.end_epoch = end_epoch
        self.logger = logger or logging.getLogger()
        self.lr_of = lr_of
        self.epoch_lr: dict[int, float] = {}
        self._epoch = None
        self._batch_tic: float | None = None
        self._epoch_tic = 0.0
        self._window_tic = 0.0
        self._window_start = 0

    def batch_begin(self) -> None:
        self._batch_tic = time.time()

    def __call__(self, param) -> None:
        now = time.time()
        if param.epoch != self._epoch:
            start = self._batch_tic if self._batch_tic is not None else now
            self._epoch, self._epoch_tic, self._window_tic, self._window_start = param.epoch, start, start, 0
            if self.lr_of is not None:
                self.epoch_lr[param.epoch] = self.lr_of(param.epoch)
                self.logger.info("Epoch[%d] Learning rate %.8g", param.epoch, self.epoch_lr[param.epoch])
        done = param.nbatch + 1
        if done % self.frequent and not param.locals.get("end_of_batch", False):
            return
        speed = (done - self._window_start) * self.batch_size / max(now - self._window_tic, 1e-9)
        self._window_tic, self._window_start = now, done
        names_values = param.eval_metric.get_global_name_value() if param.eval_metric else []
        metrics = "\t".join(f"{name}={value:.6f}" for name, value in names_values)
        total = self.batches_per_epoch
        if total:
            per_batch = (now - self._epoch_tic) / done
            epoch_left = per_batch * max(total - done, 0)
            run_left = epoch_left + per_batch * total * (self.end_epoch - param.epoch - 1)
            where = f"Batch [{done}/{total}]"
            eta = f"\tETA epoch {format_duration(epoch_left)}, run {format_duration(run_left)}"
        else:
            where, eta = f"Batch [{done}]", ""
        self.logger.info("Epoch[%d] %s\tSpeed: %.2f samples/sec\t%s%s",
                         param.epoch, where, speed, metrics, eta)


class TrainingHistory:
    """One CSV row per epoch (train metrics, validation mAP, lr, time) and a PNG of the curves.

    On resume, rows for epochs at or after ``begin_epoch`` are dropped, so the
    file always describes the run that produced the current checkpoints.
    """

    def __init__(self, prefix: str, begin_epoch: int):
        self.csv_path = f"{prefix}-metrics.csv"
        self.png_path = f"{prefix}-curves.png"
        self.rows = []
        if begin_epoch > 0 and os.path.isfile(self.csv_path):
            with open(self.csv_path, newline="") as f:
                # rows are numbered like checkpoints: row N is the state after N epochs
                self.rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= begin_epoch]

    def add(self, row: dict) -> None:
        self.rows.append({k: v for k, v in row.items()})
        self._write_csv()
        self._plot()

    def _write_csv(self) -> None:
        fields = []
        for row in self.rows:
            fields += [k for k in row if k not in fields]
        with atomic_open(self.csv_path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(self.rows)

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        epochs = [int(r["epoch"]) for r in self.rows]
        loss_keys = [k for k in self.rows[-1] if k.startswith("train_")]
        fig, (ax_loss, ax_map) = plt.subplots(1, 2, figsize=(10, 4))
        for key in loss_keys:
            ax_loss.plot(epochs, [float(r.get(key) or "nan") for r in self.rows], marker="o",
                         label=key[len("train_"):])
        ax_loss.set(xlabel="epoch", ylabel="training loss", title="Training loss")
        ax_loss.legend()
        validated = [r for r in self.rows if r.get("val_mAP")]  # --val-interval skips epochs
        ax_map.plot([int(r["epoch"]) for r in validated], [float(r["val_mAP"]) for r in validated], marker="o",
                    color="tab:green")
        ax_map.set(xlabel="epoch", ylabel="mAP", title="Validation mAP", ylim=(0, 1))
        fig.tight_layout()
        atomic_write(self.png_path, lambda tmp: fig.savefig(tmp, dpi=80))
        plt.close(fig)
