"""Faults a user can cause: a run killed at any moment, a checkpoint cut short, a run that diverges.

Each time, ``--resume auto`` must finish the run from the last complete checkpoint, the history
must list each epoch once, and no checkpoint on disk may hold NaN.
"""
from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import time

import numpy as np
import pytest
from helpers import load_script, logged_epochs, script_command, train_args, train_toy

from config.errors import UserError
from evaluate import checkpoint

EPOCHS = 4


def train_argv(rec, prefix: str, **flags) -> list[str]:
    """``python train.py ...``: the toy at 64 for ``EPOCHS`` epochs with validation, ``--resume auto``,
    ``--keep 2``; ``flags`` add or replace flags as :func:`helpers.train_args` takes them."""
    settings = dict(val_path=rec.val_rec, batch_size=8, end_epoch=EPOCHS, lr=0.01, lr_steps=3, resume="auto",
                    seed=0, keep=2)
    return script_command("train.py") + train_args(rec, prefix, **{**settings, **flags})


@pytest.mark.slow
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
    assert logged_epochs(files) == list(range(1, EPOCHS + 1))
    assert not [name for name in os.listdir(tmp_path) if ".tmp" in name]
    _, args, auxs = checkpoint.load_checkpoint(files, EPOCHS)
    assert all(np.isfinite(v.asnumpy()).all() for v in {**args, **auxs}.values())


class Killed(Exception):
    """Stands for SIGKILL at a chosen moment of an in-process run."""


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["validation", "checkpoint write"])
def test_killed_after_training_an_epoch_repeats_it_and_keeps_every_row(synthetic_rec, tmp_path, monkeypatch, moment):
    """Killed while epoch 2 is validated, or while its checkpoint is written: --resume auto must train
    epoch 2 again, and the history list epochs 1, 2, 3 once each. When the checkpoint was saved before
    validation, a kill during validation left checkpoint 2 without its row, and the resumed run
    started at epoch 3: the history read 1, 3."""
    import train.module

    prefix = str(tmp_path / "ssd")
    files = prefix + "_toy_64"
    argv = train_argv(synthetic_rec, prefix, end_epoch=3)[2:]
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
    assert logged_epochs(files) == ([1] if moment == "validation" else [1, 2])
    monkeypatch.undo()
    load_script("train").main(argv)
    assert logged_epochs(files) == [1, 2, 3]
    assert checkpoint.saved_epochs(files) == [2, 3]


@pytest.mark.slow
def test_resume_auto_falls_back_from_a_truncated_checkpoint(synthetic_rec, tmp_path, caplog):
    prefix = str(tmp_path / "ssd")
    run = dict(batch_size=8, lr=0.01, seed=0)
    train_toy(synthetic_rec, prefix, 2, **run)
    newest = checkpoint.params_path(prefix, 2)
    data = open(newest, "rb").read()
    with open(newest, "wb") as f:
        f.write(data[: len(data) // 2])
    caplog.set_level(logging.INFO)
    result = train_toy(synthetic_rec, prefix, 3, resume="auto", **run)
    assert result["begin_epoch"] == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{newest}: cannot be loaded" in m and "takes the epoch before it" in m for m in warnings)
    assert checkpoint.saved_epochs(prefix) == [1, 2, 3]
    checkpoint.load_checkpoint(prefix, 2)  # rewritten whole
    # asked for by number, the same file is a one-line error naming it
    with open(newest, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(UserError, match=f"{newest}: cannot be loaded"):
        train_toy(synthetic_rec, prefix, 3, resume="2", **run)


@pytest.mark.slow
def test_a_diverging_run_stops_and_leaves_only_finite_checkpoints(synthetic_rec, tmp_path):
    """Epoch 1 trains at lr 0.01, then the rate is multiplied by 1e30: the weights blow up in epoch 2."""
    prefix = str(tmp_path / "ssd")
    argv = train_argv(synthetic_rec, prefix, lr_steps=1, lr_factor="1e30", end_epoch=3, val_path="", keep=0,
                      resume=None)
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    error = proc.stderr.strip().splitlines()[-1]
    assert error.startswith("error: training diverged: ") and "at Epoch[1] batch" in error
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


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(synthetic_rec, small_disk):
    prefix = str(small_disk / "ssd")
    argv = train_argv(synthetic_rec, prefix, val_path="", keep=0)
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
