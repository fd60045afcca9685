"""Faults a user can cause: a run killed at any moment, a checkpoint cut short, a run that diverges.

Each time, ``--resume auto`` must finish the run from the last complete checkpoint, the history
must list each epoch once, and no checkpoint on disk may hold NaN. Kills are driven by the run's own
progress (a log line, the first bytes of a checkpoint write), never by a timer, so each one lands at
the stage it is meant for, whatever the machine's speed.
"""
from __future__ import annotations

import logging
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import types

import mxnet as mx
import numpy as np
import pytest
from helpers import ROOT, checkpoint_weights, load_script, logged_epochs, script_command, train_args, train_toy

from config.errors import UserError
from evaluate import checkpoint
from train.callbacks import DivergenceGuard

EPOCHS = 4
# the longest any single event of a killed run is awaited (a log line, the first bytes of a write, an exit);
# only reached when the event never comes
EVENT_TIMEOUT_S = 300
# the first 8 bytes of every file mx.nd.save writes: the NDArray list magic 0x112, little-endian uint64
NDARRAY_LIST_MAGIC = (0x112).to_bytes(8, "little")
# train.py with its training images in record order (what in-process tests get by patching
# TRAIN_AUGMENTATIONS): a resumed run then trains on the batches an uninterrupted run trains on, and
# the weights of the two can be compared
IN_RECORD_ORDER = ("import runpy, sys; sys.path.insert(0, {root!r}); "
                   "from config.augmentation import TRAIN_AUGMENTATIONS; "
                   "TRAIN_AUGMENTATIONS['none']['shuffle'] = False; "
                   "sys.argv[0] = {script!r}; runpy.run_path(sys.argv[0], run_name='__main__')")


def train_argv(rec, prefix: str, **flags) -> list[str]:
    """``python train.py ...``: the toy at 64 for ``EPOCHS`` epochs with validation, ``--resume auto``,
    ``--keep 2``; ``flags`` add or replace flags as :func:`helpers.train_args` takes them."""
    settings = dict(val_path=rec.val_rec, batch_size=8, end_epoch=EPOCHS, lr=0.01, lr_steps=3, resume="auto",
                    seed=0, keep=2)
    return script_command("train.py") + train_args(rec, prefix, **{**settings, **flags})


class KilledRun:
    """``argv`` (a train.py command line) in a subprocess, its log read line by line as it is written.

    The reading thread sends SIGKILL the moment a line matches ``kill_at`` (no hand-over to another
    thread that the scheduler could delay), or :meth:`kill` does it on another event. :meth:`finish`
    waits for the exit and returns the status: ``-SIGKILL`` proves that the kill met a live process,
    since one that had exited by itself would report its own status.
    """

    def __init__(self, argv: list[str], cwd, kill_at: str | None = None):
        self.kill_at = re.compile(kill_at) if kill_at else None
        self.killed_after: str | None = None  # the line the kill followed
        self.lines: list[str] = []
        self.process = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                        env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.append(line)
            if self.kill_at is not None and self.killed_after is None and self.kill_at.search(line):
                self.kill()
                self.killed_after = line

    def kill(self) -> None:
        """SIGKILL now."""
        os.kill(self.process.pid, signal.SIGKILL)

    def finish(self) -> int:
        """The exit status, once the process has exited and its output is read."""
        self.process.wait(timeout=EVENT_TIMEOUT_S)
        self._reader.join(timeout=EVENT_TIMEOUT_S)
        return self.process.returncode

    def output(self) -> str:
        """The log lines read so far (all of them after :meth:`finish`)."""
        return "".join(self.lines)


def kill_inside_write(run: KilledRun, path: str) -> bytes:
    """SIGKILL ``run`` in the middle of writing ``path``: a FIFO stands where its temporary file will be
    (``<path>.tmp<PID>``, :func:`config.fileio.temporary_path`), so the write blocks once the pipe is full;
    the kill follows the first bytes that come through. Returns those bytes."""
    fifo = f"{path}.tmp{run.process.pid}{os.path.splitext(path)[1]}"
    os.mkfifo(fifo)
    # opened without waiting for a writer; select() reports nothing until the writer's first bytes arrive
    fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    deadline = time.monotonic() + EVENT_TIMEOUT_S
    try:
        while True:
            readable, _, _ = select.select([fd], [], [], 0.5)
            data = os.read(fd, 1 << 16) if readable else b""
            if data:
                run.kill()
                return data
            if run.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no write of {path} came before the run exited or {EVENT_TIMEOUT_S} s "
                                     f"passed:\n{run.output()[-3000:]}")
            if readable:  # the writer came and went without a byte: not what a checkpoint write does
                time.sleep(0.1)
    finally:
        os.close(fd)


@pytest.mark.slow
def test_killed_in_a_batch_in_a_checkpoint_write_and_after_an_epoch_then_resume_auto_matches_a_straight_run(
        synthetic_rec, tmp_path):
    """SIGKILL at three moments that each run's own output announces: right after a batch's progress line,
    inside the params write of a checkpoint (its optimizer state already written), right after an epoch's
    'Saved checkpoint' line. After each, the same command with --resume auto; the last one finishes, and its
    weights are those of the same command never interrupted (the data in record order: resumed runs promise
    the weights of a straight run when the batches are the same)."""
    epochs = 3
    flags = dict(end_epoch=epochs, lr_steps=2, augment="none", frequent=1)

    def command(folder: str) -> list[str]:
        (tmp_path / folder).mkdir()
        argv = train_argv(synthetic_rec, str(tmp_path / folder / "ssd"), **flags)
        return [sys.executable, "-c", IN_RECORD_ORDER.format(root=ROOT, script=argv[1])] + argv[2:]

    started: list[KilledRun] = []

    def start(argv: list[str], cwd, kill_at: str | None = None) -> KilledRun:
        started.append(KilledRun(argv, cwd, kill_at))
        return started[-1]

    try:
        # the uninterrupted run, alongside
        straight = start(command("straight"), tmp_path)
        argv = command("run")
        files = str(tmp_path / "run" / "ssd_toy_64")

        # 1. right after the progress line of epoch 2's second batch (of 3): checkpoint 1 only
        run = start(argv, tmp_path, kill_at=r"Epoch\[1\] Batch \[2/3\]")
        assert run.finish() == -signal.SIGKILL, run.output()[-3000:]
        assert run.killed_after is not None
        assert checkpoint.saved_epochs(files) == [1] and logged_epochs(files) == [1]
        assert not os.path.exists(checkpoint.states_path(files, 2))

        # 2. inside the write of checkpoint 2's params: the optimizer state is complete, the params are not there,
        # and the row of epoch 2 is in the history (it is written before the checkpoint)
        run = start(argv, tmp_path)
        first_bytes = kill_inside_write(run, checkpoint.params_path(files, 2))
        assert run.finish() == -signal.SIGKILL, run.output()[-3000:]
        assert first_bytes.startswith(NDARRAY_LIST_MAGIC)
        assert "Resume training with (cpu(0)) from epoch 1\n" in run.output()
        assert checkpoint.saved_epochs(files) == [1] and logged_epochs(files) == [1, 2]
        assert checkpoint.states_loadable(checkpoint.states_path(files, 2))
        leftover = [name for name in os.listdir(tmp_path / "run") if ".tmp" in name]
        assert leftover == [f"ssd_toy_64-0002.params.tmp{run.process.pid}.params"]

        # 3. right after epoch 2's 'Saved checkpoint' line; this run removed the dead run's temporary file
        saved = re.escape(f'Saved checkpoint to "{checkpoint.params_path(files, 2)}"')
        run = start(argv, tmp_path, kill_at=saved)
        assert run.finish() == -signal.SIGKILL, run.output()[-3000:]
        assert run.killed_after is not None
        assert f"Removed {tmp_path / 'run' / leftover[0]}, left by a run that was killed" in run.output()
        assert checkpoint.saved_epochs(files) == [1, 2] and logged_epochs(files) == [1, 2]

        # 4. to the end
        run = start(argv, tmp_path)
        assert run.finish() == 0, run.output()[-3000:]
        assert "Resume training with (cpu(0)) from epoch 2\n" in run.output()
        assert checkpoint.saved_epochs(files) == [epochs - 1, epochs]
        assert logged_epochs(files) == list(range(1, epochs + 1))
        assert not [name for name in os.listdir(tmp_path / "run") if ".tmp" in name]
        resumed = checkpoint_weights(files, epochs, auxs=True)
        assert all(np.isfinite(v).all() for v in resumed.values())

        assert straight.finish() == 0, straight.output()[-3000:]
        expected = checkpoint_weights(str(tmp_path / "straight" / "ssd_toy_64"), epochs)
        assert max(float(np.abs(resumed[k] - expected[k]).max()) for k in expected) < 1e-5
    finally:  # a failed stage leaves no run behind
        for left in started:
            if left.process.poll() is None:
                left.kill()
                left.process.wait()


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


def test_the_weight_check_runs_every_nth_batch_and_after_each_epochs_last(tmp_path):
    """NaN weights behind finite losses: seen after batches 4 and 8 (every 4th) and 10, the last before the
    checkpoint, of a 10-batch epoch; a NaN loss after any batch."""
    weights = types.SimpleNamespace(_exec_group=types.SimpleNamespace(param_arrays=[[mx.nd.array([1.0, np.nan])]]))
    guard = DivergenceGuard(weights, str(tmp_path / "ssd"), every=4, batches_per_epoch=10)

    def stops_after(nbatch: int, metric=None) -> bool:
        try:
            guard(types.SimpleNamespace(nbatch=nbatch, epoch=0, eval_metric=metric))
        except UserError as err:
            assert str(err).startswith("training diverged: ")
            return True
        return False

    assert [n + 1 for n in range(10) if stops_after(n)] == [4, 8, 10]
    finite = types.SimpleNamespace(_exec_group=types.SimpleNamespace(param_arrays=[[mx.nd.array([1.0])]]))
    guard.module = finite
    nan_loss = types.SimpleNamespace(get_global_name_value=lambda: [("CrossEntropy", float("nan"))])
    assert [n + 1 for n in range(10) if stops_after(n, nan_loss)] == list(range(1, 11))


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
