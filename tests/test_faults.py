"""Faults a user can cause: a run killed at any moment, a checkpoint cut short, a run that diverges.

Each time, ``--resume auto`` must finish the run from the last complete checkpoint, the history
must list each epoch once, and no checkpoint on disk may hold NaN.
"""
from __future__ import annotations

import csv
import logging
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from config.errors import UserError
from evaluate import checkpoint
from train.train_net import train_net

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 4


def train_argv(rec, prefix: str, *extra: str) -> list[str]:
    return [sys.executable, os.path.join(ROOT, "train.py"), "--network", "toy", "--data-shape", "64",
            "--train-path", rec.train_rec, "--val-path", rec.val_rec, "--num-class", "3",
            "--class-names", rec.names_file, "--pretrained", "", "--freeze", "", "--gpus", "", "--log", "",
            "--batch-size", "8", "--end-epoch", str(EPOCHS), "--lr", "0.01", "--lr-steps", "3",
            "--prefix", prefix, "--resume", "auto", "--seed", "0", "--keep", "2", *extra]


def history_epochs(files: str) -> list[int]:
    with open(files + "-metrics.csv") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_killed_ten_times_then_resume_auto_finishes(synthetic_rec, tmp_path):
    """SIGKILL at 10 random moments (start-up, training, validation, checkpoint writes), each followed by
    the same command with --resume auto; then one run to the end."""
    prefix = str(tmp_path / "ssd")
    files = prefix + "_toy_64"
    argv = train_argv(synthetic_rec, prefix)
    rng = random.Random(0)
    for _ in range(10):
        process = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 6.0))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if process.returncode == 0:  # it finished before the kill: start over to keep killing runs
            for name in os.listdir(tmp_path):
                os.remove(tmp_path / name)
    # a write cut by a kill leaves <file>.tmp<PID>; the next run removes those of dead processes
    stale = f"{files}-0001.params.tmp999999.params"
    with open(stale, "wb") as f:
        f.write(b"half a checkpoint")
    finished = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert checkpoint.saved_epochs(files) == [EPOCHS - 1, EPOCHS]
    assert history_epochs(files) == list(range(1, EPOCHS + 1))
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]
    _, args, auxs = checkpoint.load_checkpoint(files, EPOCHS)
    assert all(np.isfinite(v.asnumpy()).all() for v in {**args, **auxs}.values())


class Killed(Exception):
    """Stands for SIGKILL at a chosen moment of an in-process run."""


@pytest.mark.parametrize("moment", ["validation", "checkpoint write"])
def test_killed_after_training_an_epoch_repeats_it_and_keeps_every_row(synthetic_rec, tmp_path, monkeypatch, moment):
    """Killed while epoch 2 is validated, or while its checkpoint is written: --resume auto must train
    epoch 2 again, and the history list epochs 1, 2, 3 once each. When the checkpoint was saved before
    validation, a kill during validation left checkpoint 2 without its row, and the resumed run
    started at epoch 3: the history read 1, 3."""
    from data_helpers import load_script

    import train.module

    prefix = str(tmp_path / "ssd")
    files = prefix + "_toy_64"
    argv = train_argv(synthetic_rec, prefix, "--end-epoch", "3")[2:]
    calls = []
    score_unpadded, save_checkpoint = train.module.score_unpadded, checkpoint.save_checkpoint

    def validation(*args, **kwargs):
        calls.append("validation")
        if moment == "validation" and calls.count("validation") == 2:
            raise Killed
        return score_unpadded(*args, **kwargs)

    def checkpoint_write(prefix, epoch, *args, **kwargs):
        if moment == "checkpoint write" and epoch == 2:
            raise Killed
        return save_checkpoint(prefix, epoch, *args, **kwargs)

    monkeypatch.setattr(train.module, "score_unpadded", validation)
    monkeypatch.setattr(checkpoint, "save_checkpoint", checkpoint_write)
    with pytest.raises(Killed):
        load_script("train").main(argv)
    assert history_epochs(files) == ([1] if moment == "validation" else [1, 2])
    monkeypatch.undo()
    load_script("train").main(argv)
    assert history_epochs(files) == [1, 2, 3]
    assert checkpoint.saved_epochs(files) == [2, 3]


def test_resume_auto_falls_back_from_a_truncated_checkpoint(synthetic_rec, tmp_path, caplog):
    prefix = str(tmp_path / "ssd")
    run = dict(net="toy", train_path=synthetic_rec.train_rec, num_classes=3, batch_size=8, data_shape=64,
               mean_pixels=[123, 117, 104], finetune=-1, pretrained="", epoch=0, prefix=prefix, ctx=None,
               begin_epoch=0, frequent=100, learning_rate=0.01, momentum=0.9, weight_decay=0.0005,
               lr_refactor_step="", lr_refactor_ratio=0.1, label_pad_width=synthetic_rec.label_width,
               class_names=synthetic_rec.classes, seed=0)
    import mxnet as mx

    run["ctx"] = [mx.cpu()]
    train_net(resume=-1, end_epoch=2, **run)
    newest = checkpoint.params_path(prefix, 2)
    data = open(newest, "rb").read()
    with open(newest, "wb") as f:
        f.write(data[: len(data) // 2])
    caplog.set_level(logging.INFO)
    result = train_net(resume="auto", end_epoch=3, **run)
    assert result["begin_epoch"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{newest}: cannot be loaded" in m and "takes the epoch before it" in m for m in warnings)
    assert checkpoint.saved_epochs(prefix) == [1, 2, 3]
    checkpoint.load_checkpoint(prefix, 2)  # rewritten whole
    # asked for by number, the same file is a one-line error naming it
    with open(newest, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(UserError, match=f"{newest}: cannot be loaded"):
        train_net(resume=2, end_epoch=3, **run)


def test_a_diverging_run_stops_and_leaves_only_finite_checkpoints(synthetic_rec, tmp_path):
    """Epoch 1 trains at lr 0.01, then the rate is multiplied by 1e30: the weights blow up in epoch 2."""
    prefix = str(tmp_path / "ssd")
    argv = train_argv(synthetic_rec, prefix, "--lr-steps", "1", "--lr-factor", "1e30", "--end-epoch", "3",
                      "--val-path", "", "--keep", "0")
    argv.remove("--resume"), argv.remove("auto")
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: training diverged: ") and "at epoch 1 batch" in error
    assert f"the last checkpoint, {prefix}_toy_64-0001.params, is finite" in error
    assert checkpoint.saved_epochs(prefix + "_toy_64") == [1]
    _, args, auxs = checkpoint.load_checkpoint(prefix + "_toy_64", 1)
    assert all(np.isfinite(v.asnumpy()).all() for v in {**args, **auxs}.values())


@pytest.fixture
def small_disk(tmp_path):
    """A 14 MiB tmpfs: room for one epoch of the toy at 64 (8.4 MB of params and momentum), not two."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=14M", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(synthetic_rec, small_disk):
    prefix = str(small_disk / "ssd")
    argv = train_argv(synthetic_rec, prefix, "--val-path", "", "--keep", "0")
    proc = subprocess.run(argv, cwd=small_disk, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    files = prefix + "_toy_64"
    assert lines[-1].startswith(f"error: {files}-0002.")
    assert "cannot write (" in lines[-1] and "the previous version, if any, is unchanged" in lines[-1]
    assert "Traceback" not in proc.stderr
    assert checkpoint.saved_epochs(files) == [1]
    checkpoint.load_checkpoint(files, 1)
    assert not [name for name in os.listdir(small_disk) if ".tmp" in name]


def test_a_failed_write_names_the_file_and_leaves_the_old_one(tmp_path):
    """What a full disk does to the metrics CSV, the curves or a list: the old file stays, no temporary."""
    import errno

    from config.fileio import atomic_open

    path = tmp_path / "ssd-metrics.csv"
    path.write_text("epoch,lr\n1,0.1\n")
    with pytest.raises(UserError, match=f"{path}: cannot write \\(No space left on device\\)"):
        with atomic_open(str(path)) as f:
            f.write("epoch,lr\n")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert path.read_text() == "epoch,lr\n1,0.1\n"
    assert os.listdir(tmp_path) == ["ssd-metrics.csv"]


def test_a_log_that_cannot_be_written_stops_with_one_line():
    """/dev/full answers every write with ENOSPC, as a full disk does."""
    from train.logs import logging_to

    with pytest.raises(UserError, match="/dev/full: cannot write the log \\(No space left on device\\)"):
        with logging_to("/dev/full") as logger:
            logger.info("a line")
