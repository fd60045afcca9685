"""Distributed training over mxnet's parameter server, on 127.0.0.1 (train/distributed.py, tools/launch.py).

Every job runs the toy SSD at 64 px (or faster_rcnn_small) on the shared
24 synthetic images, or on a set it learns (:func:`helpers.learnable_rec`).
Each test starts its processes with an environment marker
(``MXDET_TEST_JOB``) and, pass or fail, kills every process that carries
it: no scheduler, server or worker outlives its test.

How "both workers end with the same weights" is checked: at every epoch end
of a sync job the workers exchange SHA-256 digests of their weights through
the kvstore and each logs ``weights identical on 2 workers (sha256 ...)``
(a product check: a mismatch stops the job). The test reads that line from
both ranks and recomputes the digest from rank 0's checkpoint, so rank 1's
weights are compared bit for bit without rank 1 writing any file.

Ports: the scheduler's port is found free by binding and releasing it, so
another process can take it before the scheduler binds it. The scheduler
then fails with ps-lite's ``bind failed``; the tests read that from its
output and start the whole job again on a new port
(:func:`run_job`, :func:`start_job`, and the hand-started job of the watchdog test).

No test bounds a duration: each waits for an event (a log line, an exit, the
last process gone) with a generous timeout that only a hung job reaches.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator

import mxnet as mx
import numpy as np
import pytest
from helpers import (
    ROOT,
    checkpoint_weights,
    history,
    logged_epochs,
    read_lst,
    script_command,
    train_args,
    train_toy,
)

from config.cpu import bfloat16_unavailable, has_bfloat16
from dataset.recordio import shard_of_records
from evaluate import checkpoint
from tools import launch
from train.distributed import EqualBatches, batches_per_worker, digest_of_params

DIGEST = re.compile(r"(\[rank (\d)\] )?\S* ?Epoch\[(\d+)\] weights identical on 2 workers \(sha256 ([0-9a-f]{64})\)")
RECORDS = re.compile(r"(?:\[rank \d\] )?Epoch\[(\d+)\] rank (\d) records: ([\d,]*) \| repeated: ([\d,]*)")
JOINED = r"Distributed: rank {rank} of 2 workers.*\(pid (\d+)\)"
# ps-lite's scheduler when another process holds its port: "Check failed: my_node_.port != -1 ... bind failed"
PORT_TAKEN = re.compile(r"my_node_\.port != -1.*bind failed")
LAUNCH_ATTEMPTS = 4
# the longest a test waits for one event (a line, an exit, the end of a job): reached only by a hung job
EVENT_TIMEOUT_S = 300
JOB_TIMEOUT_S = 600
# the launcher reaps every process it started before it exits: one still there this long after is a leak
GONE_TIMEOUT_S = 60
# tools/launch.py with the scheduler's port chosen by the test instead of its own free_port(): the test
# knows the port, and starts the job again on another one when the scheduler found it taken
LAUNCH_ON_PORT = ("import sys; sys.path.insert(0, {root!r}); from tools import launch; "
                  "launch.free_port = lambda: {port}; sys.exit(launch.main(sys.argv[1:]))")


# --- process hygiene ---------------------------------------------------------------------------------
def marked_pids(marker: str) -> list[int]:
    """Processes whose environment holds ``MXDET_TEST_JOB=<marker>``."""
    pids = []
    needle = f"MXDET_TEST_JOB={marker}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def wait_until(condition: Callable[[], object], what: str, timeout: float = EVENT_TIMEOUT_S) -> object:
    """``condition()``'s first true value, polled every 0.1 s; an AssertionError naming ``what`` if it
    stays false for ``timeout`` seconds (a hung job, never a slow one)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


@contextlib.contextmanager
def job_marker():
    """A fresh marker; on the way out every process carrying it is killed (and reaped if ours)."""
    marker = uuid.uuid4().hex
    try:
        yield marker
    finally:
        kill_marked(marker)


def kill_marked(marker: str) -> None:
    """SIGKILL every process that carries ``marker``; wait (at most 10 s) until they are gone."""
    for pid in marked_pids(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while marked_pids(marker) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(-1, os.WNOHANG)
        time.sleep(0.1)


def job_env(marker: str, **extra: str) -> dict:
    env = dict(os.environ, MXDET_TEST_JOB=marker, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **extra)
    env.pop("MXNET_UPDATE_ON_KVSTORE", None)
    return env


class Output:
    """A child's pipe read line by line by a thread as it is written, and waits on those lines."""

    def __init__(self, stream):
        self.lines: list[str] = []
        self.closed = False
        self._changed = threading.Condition()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream) -> None:
        for line in stream:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self.closed = True
            self._changed.notify_all()

    def find(self, pattern: str | re.Pattern, start: int = 0) -> re.Match | None:
        """The first line from line ``start`` on that matches ``pattern``, or None."""
        regex = re.compile(pattern)
        return next((m for m in map(regex.search, self.lines[start:]) if m), None)

    def wait_for(self, pattern: str | re.Pattern, start: int = 0, timeout: float = EVENT_TIMEOUT_S) -> re.Match | None:
        """:meth:`find`, waiting until the line comes or the pipe closes (the process exited): None then."""
        with self._changed:
            if not self._changed.wait_for(lambda: self.find(pattern, start) or self.closed, timeout):
                raise AssertionError(f"no line matching {pattern!r} in {timeout:g} s:\n{self.text()[-3000:]}")
            return self.find(pattern, start)

    def text(self) -> str:
        """What was read so far; once the pipe has closed (wait with ``wait_for('$^')``), all of it."""
        return "".join(self.lines)


def train_argv(rec, prefix: str, **flags) -> list[str]:
    """``python train.py ...`` of a job's processes: the toy at 64 without augmentation (``network=
    'faster_rcnn_small'``: that network), lr 0.01, a progress line every batch, the log beside the
    checkpoints (not in the repository, the jobs' working directory); ``flags`` add or replace flags as
    :func:`helpers.train_args` takes them."""
    settings = dict(frequent=1, lr=0.01, log=os.path.join(os.path.dirname(prefix), "train.log"))
    if flags.get("network", "toy") == "toy":
        settings.update(label_width=max(350, rec.label_width), augment="none")
    else:  # the SSD-only flags of train_args' baseline are refused for Faster R-CNN
        settings.update(data_shape=None, freeze=None)
    return script_command("train.py") + train_args(rec, prefix, **{**settings, **flags})


def launch_argv(num_workers: int, command: list[str], port: int) -> list[str]:
    """tools/launch.py (:data:`LAUNCH_ON_PORT`): ``num_workers`` workers and 1 server running ``command``."""
    return [sys.executable, "-c", LAUNCH_ON_PORT.format(root=ROOT, port=port), "-n", str(num_workers), "-s", "1",
            "--launcher", "local", "--", *command]


def ports(first: int | None = None) -> Iterator[int]:
    """``first`` (if given), then ports found free by bind-then-release, :data:`LAUNCH_ATTEMPTS` in all."""
    found = iter(launch.free_port, None)
    return itertools.islice(itertools.chain([first] if first else [], found), LAUNCH_ATTEMPTS)


def run_job(marker: str, command: list[str], timeout: float = JOB_TIMEOUT_S, first_port: int | None = None,
            **env: str) -> subprocess.CompletedProcess:
    """A 2-worker job to its end; started again on a new port while the scheduler finds its port taken.
    The result's ``ports`` lists the ports tried, the last one the job's."""
    tried = []
    for port in ports(first_port):
        tried.append(port)
        done = subprocess.run(launch_argv(2, command, port), env=job_env(marker, **env), capture_output=True,
                              text=True, timeout=timeout, cwd=ROOT)
        if not PORT_TAKEN.search(done.stderr):
            break
        kill_marked(marker)
    done.ports = tried
    return done


def joined_or_ended(process: subprocess.Popen, expected: list[tuple[Output, str]]) -> Callable[[], bool]:
    """A condition for :func:`wait_until`: ``process`` (a launcher, a scheduler) has exited, or each output
    has a line matching its pattern (the 'Distributed: rank N' line of a worker that joined)."""
    return lambda: process.poll() is not None or all(output.find(pattern) for output, pattern in expected)


def start_job(marker: str, command: list[str]) -> tuple[subprocess.Popen, Output]:
    """A 2-worker job started (its own session) and running: both workers have joined (their
    'Distributed: rank N' lines), on a new port when the scheduler found its port taken."""
    for port in ports():
        job = subprocess.Popen(launch_argv(2, command, port), env=job_env(marker), stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, start_new_session=True)
        output = Output(job.stderr)
        wait_until(joined_or_ended(job, [(output, JOINED.format(rank=rank)) for rank in (0, 1)]),
                   "both workers to join, or the launcher to exit")
        if job.poll() is None:
            return job, output
        output.wait_for("$^")  # the end of its output
        assert PORT_TAKEN.search(output.text()), f"the job ended before both workers joined:\n{output.text()[-3000:]}"
        kill_marked(marker)
    raise AssertionError(f"the scheduler found its port taken {LAUNCH_ATTEMPTS} times")


def digests(output: str) -> dict[tuple[int, int], str]:
    """{(rank, epoch): digest} from the 'weights identical' lines."""
    found = {}
    for line in output.splitlines():
        match = DIGEST.search(line)
        if match:
            found[(int(match.group(2) or 0), int(match.group(3)))] = match.group(4)
    return found


def checkpoint_digest(prefix: str, epoch: int) -> str:
    saved = mx.nd.load(checkpoint.params_path(prefix, epoch))
    args = {key[4:]: value for key, value in saved.items() if key.startswith("arg:")}
    return digest_of_params(args, list(args))


def save_start(folder, num_classes: int) -> str:
    """A fixed start for the toy at 64 (Xavier, seed 5) saved as ``<folder>/start-0000.params``: what
    ``--pretrained <prefix> --epoch 0`` loads. Returns the prefix."""
    from symbol.symbol_factory import get_symbol_train

    symbol = get_symbol_train("toy", 64, num_classes=num_classes)
    module = mx.mod.Module(symbol, label_names=("label",), context=mx.cpu())
    module.bind([("data", (4, 3, 64, 64))], [("label", (4, 58, 6))])
    mx.random.seed(5)
    module.init_params(mx.init.Xavier())
    start = str(folder / "start")
    module.save_checkpoint(start, 0)
    return start


# --- no processes --------------------------------------------------------------------------------------
@pytest.mark.parametrize("parts", [2, 3])
def test_shards_are_what_image_det_record_iter_reads(synthetic_rec, parts):
    """shard_of_records predicts the records ImageDetRecordIter(num_parts, part_index) reads (byte ranges)."""
    ids = list(read_lst(synthetic_rec.train_lst))  # record order
    predicted = shard_of_records(synthetic_rec.train_rec, parts)
    for part in range(parts):
        it = mx.io.ImageDetRecordIter(path_imgrec=synthetic_rec.train_rec, batch_size=4, data_shape=(3, 32, 32),
                                      num_parts=parts, part_index=part, round_batch=False, label_pad_width=350)
        read = []
        for batch in it:
            read += [int(i) for i in batch.index[:4 - batch.pad]]
        assert read == [ids[k] for k in range(len(ids)) if predicted[k] == part]


def test_equal_batches_repeats_a_shorter_shard():
    data = mx.nd.arange(5).reshape((5, 1))
    inner = mx.io.NDArrayIter(data, batch_size=2, last_batch_handle="pad")
    wrapped = EqualBatches(inner, batches_per_worker([5, 7], 2), logger=__import__("logging").getLogger())
    for _ in range(2):
        wrapped.reset()
        assert sum(1 for _ in wrapped) == 4  # ceil(7 / 2): the longer shard's count
    assert batches_per_worker([5, 7], 2, drop_last=True) == 3


def test_launcher_passes_the_command_untouched():
    args, command = launch.parse_args(["-n", "2", "-s", "1", "--launcher", "local", "--", "python", "train.py",
                                       "--log", "x.log", "-n", "5"])
    assert (args.num_workers, args.num_servers, args.launcher) == (2, 1, "local")
    assert command == ["python", "train.py", "--log", "x.log", "-n", "5"]
    with pytest.raises(SystemExit):
        launch.parse_args(["-n", "2", "python", "train.py"])


def test_dist_kvstore_outside_a_job_is_a_one_line_error(monkeypatch):
    from config.errors import UserError
    from train.distributed import Cluster

    monkeypatch.delenv("DMLC_ROLE", raising=False)
    with pytest.raises(UserError, match="start the job with tools/launch.py"):
        Cluster("dist_sync")


# --- jobs ------------------------------------------------------------------------------------------------
# a job's command that only joins: the scheduler and the server serve from mxnet's import, each worker
# creates its kvstore, says its rank and leaves
JOIN_ONLY = "import mxnet as mx; print('joined as rank', mx.kv.create('dist_sync').rank, flush=True)"


@pytest.mark.slow
def test_a_job_whose_port_is_taken_starts_again_on_another():
    """The race bind-then-release leaves open, made certain: the first port offered is held by a listening
    socket. The scheduler fails to bind it; run_job reads that from the output and starts the whole job
    again on a new port, where both workers join."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with job_marker() as marker:
            done = run_job(marker, [sys.executable, "-c", JOIN_ONLY], first_port=taken)
            assert done.returncode == 0, done.stderr[-3000:]
            wait_until(lambda: not marked_pids(marker), "the job's processes to be gone", GONE_TIMEOUT_S)
    assert done.ports[0] == taken and len(done.ports) == 2
    assert taken not in done.ports[1:]
    assert sorted(re.findall(r"joined as rank (\d)", done.stderr)) == ["0", "1"]


@pytest.mark.slow
def test_dist_sync_two_epochs_shards_and_one_writer(synthetic_rec, tmp_path):
    """1 server + 2 workers, 2 epochs: exit 0; disjoint shards covering the set each epoch; the same
    weights on both workers (digests, and rank 0's checkpoint); only rank 0 wrote files."""
    prefix = str(tmp_path / "ssd")
    files = prefix + "_toy_64"
    command = train_argv(synthetic_rec, prefix, val_path=synthetic_rec.val_rec, batch_size=4, end_epoch=2,
                         kv_store="dist_sync", log=tmp_path / "train.log")
    with job_marker() as marker:
        done = run_job(marker, command, MXDET_LOG_RECORDS="1")
        assert done.returncode == 0, done.stderr[-3000:]
        assert not marked_pids(marker)
    output = done.stderr
    all_ids = set(read_lst(synthetic_rec.train_lst))
    for epoch in range(2):
        used = {}
        for match in RECORDS.finditer(output):
            if int(match.group(1)) == epoch:
                used[int(match.group(2))] = [int(i) for i in match.group(3).split(",") if i]
        assert set(used) == {0, 1}
        assert len(used[0]) == len(used[1]) == len(all_ids) // 2
        assert not set(used[0]) & set(used[1])
        assert set(used[0]) | set(used[1]) == all_ids
    found = digests(output)
    assert set(found) == {(0, 0), (1, 0), (0, 1), (1, 1)}, output[-3000:]
    for epoch in range(2):
        assert found[(0, epoch)] == found[(1, epoch)]
        assert checkpoint_digest(files, epoch + 1) == found[(0, epoch)]
    # one writer: rank 0's files only, and rank 1 logged no write
    expected = {f"{files}-{e:04d}.{ext}" for e in (1, 2) for ext in ("params", "states")}
    expected |= {f"{files}-{name}" for name in ("symbol.json", "ssd.json", "metrics.csv", "curves.png",
                                                 "best-0000.params", "best-symbol.json", "best.json",
                                                 "best-ssd.json", "anchors.txt", "labels.png")}
    assert {str(p) for p in tmp_path.iterdir()} == expected | {str(tmp_path / "train.log")}
    rank1 = [line for line in output.splitlines() if "[rank 1]" in line]
    assert rank1 and not [line for line in rank1 if "Saved" in line or "Validation" in line]
    with open(tmp_path / "train.log") as f:
        assert "[rank 1]" not in f.read()
    assert logged_epochs(files) == [1, 2]


def equal_size_rec(source_rec: str, count: int, out_dir) -> str:
    """``count`` records of ``source_rec`` with their images padded (bytes after the JPEG end marker,
    which decoders ignore) to one length: dmlc's byte-range shards then split them by count."""
    reader = mx.recordio.MXRecordIO(source_rec, "r")
    records = [mx.recordio.unpack(reader.read()) for _ in range(count)]
    reader.close()
    # the label sits in the record too: pad each image so that the packed records are equally long
    longest = max(len(mx.recordio.pack(header, image)) for header, image in records)
    rec, idx = str(out_dir / "equal.rec"), str(out_dir / "equal.idx")
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    for key, (header, image) in enumerate(records):
        padding = longest - len(mx.recordio.pack(header, image))
        writer.write_idx(key, mx.recordio.pack(header, image + b"\0" * padding))
    writer.close()
    return rec


@pytest.mark.slow
@pytest.mark.parametrize("kv_store", ["dist_sync", "dist_device_sync"])
def test_two_workers_equal_one_process_with_two_devices(synthetic_rec, tmp_path, monkeypatch, kv_store):
    """2 workers x 1 device at batch 4 == 1 process x 2 CPU devices at batch 8, weights within 1e-5 after one
    step: worker k's batch is slice k of the single process's batch. Both workers end with the same weights
    (digests of rank 0 and rank 1 equal rank 0's checkpoint), and the optimizer state is saved."""
    from config.augmentation import TRAIN_AUGMENTATIONS

    rec = equal_size_rec(synthetic_rec.train_rec, 8, tmp_path)
    assert shard_of_records(rec, 2) == [0] * 4 + [1] * 4
    start = save_start(tmp_path, synthetic_rec.num_classes)  # a fixed start that both runs load

    dist = str(tmp_path / "dist_toy_64")
    command = train_argv(synthetic_rec, str(tmp_path / "dist"), train_path=rec, pretrained=start, epoch=0, end_epoch=1,
                         momentum=0, wd=0, lr=0.1, seed=1, batch_size=4, kv_store=kv_store, log=tmp_path / "train.log")
    with job_marker() as marker:
        done = run_job(marker, command)
        assert done.returncode == 0, done.stderr[-3000:]
    found = digests(done.stderr)
    assert set(found) == {(0, 0), (1, 0)}, done.stderr[-3000:]
    assert found[(0, 0)] == found[(1, 0)] == checkpoint_digest(dist, 1)
    assert checkpoint.states_loadable(checkpoint.states_path(dist, 1))

    # the reference: one process, two devices, the same 8 images as one batch in record order
    monkeypatch.setitem(TRAIN_AUGMENTATIONS["none"], "shuffle", False)
    train_toy(synthetic_rec, str(tmp_path / "single"), 1, ctx=[mx.cpu(0), mx.cpu(1)], train_path=rec, label_width=350,
              batch_size=8, pretrained=start, lr=0.1, momentum=0.0, wd=0.0, augment="none", seed=1, frequent=1)
    _, dist_args, _ = checkpoint.load_checkpoint(dist, 1)
    _, single_args, _ = checkpoint.load_checkpoint(str(tmp_path / "single"), 1)
    _, start_args, _ = checkpoint.load_checkpoint(start, 0)
    moved = max(float(np.abs(single_args[k].asnumpy() - start_args[k].asnumpy()).max()) for k in single_args)
    assert moved > 1e-3  # the step did something
    for name, value in single_args.items():
        np.testing.assert_allclose(dist_args[name].asnumpy(), value.asnumpy(), atol=1e-5, rtol=0, err_msg=name)


def training_map(rec, prefix: str, epoch: int) -> float:
    """The VOC mAP (IoU 0.5) of checkpoint ``prefix-epoch`` of the toy at 64 on ``rec``'s 128 training images:
    the set it trained on, larger than the validation set and so a steadier measure of what it learned."""
    from evaluate.evaluate_net import evaluate_net

    result = evaluate_net("toy", rec.train_rec, rec.num_classes, [123, 117, 104], 64, prefix, epoch,
                          class_names=rec.classes, label_pad_width=350)
    assert result["images"] == 128
    return result["mAP"]


@pytest.mark.slow
def test_dist_async_learns_with_momentum_on_the_servers(learnable, tmp_path):
    """dist_async (updates on the server, pushed one worker at a time): 4 epochs of 2 workers at batch 4 from a
    fixed start, the rate / 10 for the last. The weights stay finite, the training losses fall, and the mAP
    on the training images beats the start's (measured: 0.005 at the start, 0.026-0.042 after in nine runs;
    the order of the workers' pushes differs from run to run). The servers hold the momentum and the
    schedule: no optimizer state is written, the log says so, and the rate logged for each epoch is the
    schedule's (the worker's own optimizer never steps)."""
    start = save_start(tmp_path, learnable.num_classes)
    prefix = str(tmp_path / "ssd")
    files = prefix + "_toy_64"
    command = train_argv(learnable, prefix, pretrained=start, epoch=0, end_epoch=4, batch_size=4, lr=0.02, seed=1,
                         lr_steps=3, kv_store="dist_async", log=tmp_path / "train.log")
    with job_marker() as marker:
        done = run_job(marker, command)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "resumed run restarts it" in done.stderr
    assert checkpoint.saved_epochs(files) == [1, 2, 3, 4]
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".states")]
    weights = checkpoint_weights(files, 4, auxs=True)
    assert all(np.isfinite(value).all() for value in weights.values())
    rows = history(files)
    assert [float(row["lr"]) for row in rows] == pytest.approx([0.02, 0.02, 0.02, 0.002])
    assert float(rows[-1]["train_CrossEntropy"]) < 0.6 * float(rows[0]["train_CrossEntropy"]), rows
    assert float(rows[-1]["train_SmoothL1"]) < float(rows[0]["train_SmoothL1"]), rows
    untrained, trained = training_map(learnable, start, 0), training_map(learnable, files, 4)
    assert trained > 3 * untrained, (untrained, trained)


@pytest.mark.slow
def test_killed_worker_stops_the_job_then_resume_auto_finishes(synthetic_rec, tmp_path):
    """SIGKILL one worker mid-epoch: the launcher stops the rest with one line naming it (the workers'
    own watchdog is off: only the launcher can end the job), and nothing is left running; --resume auto
    then finishes the run from rank 0's last checkpoint."""
    prefix = str(tmp_path / "ssd")
    files = prefix + "_toy_64"
    command = train_argv(synthetic_rec, prefix, batch_size=2, end_epoch=2, kv_store="dist_sync", resume="auto",
                         seed=0, dist_timeout=0, log=tmp_path / "train.log")
    with job_marker() as marker:
        job, output = start_job(marker, command)
        try:
            victim = int(output.find(JOINED.format(rank=1)).group(1))
            assert output.wait_for(r"\[rank 1\] Epoch\[1\] Batch \[2/"), output.text()[-3000:]
            killed_at = len(output.lines)
            os.kill(victim, signal.SIGKILL)
            job.wait(timeout=EVENT_TIMEOUT_S)
            output.wait_for("$^")  # the end of its output
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        assert job.returncode == 1, output.text()[-3000:]
        stopped = output.find(r"error: worker 1 \(pid (\d+)\) died \(SIGKILL\); stopped the job", killed_at)
        assert stopped and int(stopped.group(1)) == victim, output.text()[-3000:]
        wait_until(lambda: not marked_pids(marker), "the job's processes to be gone", GONE_TIMEOUT_S)
    assert checkpoint.saved_epochs(files) == [1]

    with job_marker() as marker:
        done = run_job(marker, command)
        assert done.returncode == 0, done.stderr[-3000:]
    assert "Resume training with (cpu(0)) from epoch 1" in done.stderr
    assert logged_epochs(files) == [1, 2]


@pytest.mark.slow
def test_watchdog_stops_a_worker_whose_peer_died_and_ranks_start_from_rank0(synthetic_rec, tmp_path):
    """Without the launcher (as on several machines): workers given different --seed start from rank 0's
    weights (identical digests after epoch 1); then one worker is killed and the other stops itself
    after --dist-timeout without a finished batch, with one line."""
    prefix = str(tmp_path / "ssd")
    with job_marker() as marker:
        for port in ports():
            base = job_env(marker, DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(port), DMLC_NUM_SERVER="1",
                           DMLC_NUM_WORKER="2", DMLC_NODE_HOST="127.0.0.1", DMLC_INTERFACE="lo")
            procs, outputs = {}, {}
            for role, name, seed in (("scheduler", "scheduler", 0), ("server", "server", 0), ("worker", "w1", 1),
                                     ("worker", "w2", 2)):
                command = train_argv(synthetic_rec, prefix, batch_size=2, end_epoch=3, kv_store="dist_sync",
                                     seed=seed, dist_timeout=8, log=tmp_path / "train.log")
                procs[name] = subprocess.Popen(command, env=dict(base, DMLC_ROLE=role), stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL if role == "server" else subprocess.PIPE,
                                               text=True, cwd=ROOT)
                if role != "server":
                    outputs[name] = Output(procs[name].stderr)
            scheduler = procs["scheduler"]
            wait_until(joined_or_ended(scheduler, [(outputs[w], JOINED.format(rank=r"\d")) for w in ("w1", "w2")]),
                       "both workers to join, or the scheduler to exit")
            if scheduler.poll() is None:
                break
            outputs["scheduler"].wait_for("$^")
            assert PORT_TAKEN.search(outputs["scheduler"].text()), outputs["scheduler"].text()[-3000:]
            kill_marked(marker)
        else:
            raise AssertionError(f"the scheduler found its port taken {LAUNCH_ATTEMPTS} times")
        try:
            # both workers' digests after epoch 0 (the same), then w2 killed
            seen = {name: outputs[name].wait_for(r"Epoch\[0\] weights identical on 2 workers") for name in ("w1", "w2")}
            assert all(seen.values()), outputs["w1"].text()[-2000:] + outputs["w2"].text()[-2000:]
            assert DIGEST.search(seen["w1"].string).group(4) == DIGEST.search(seen["w2"].string).group(4)
            killed_at = len(outputs["w1"].lines)
            procs["w2"].kill()
            survivor = procs["w1"]
            survivor.wait(timeout=EVENT_TIMEOUT_S)
            outputs["w1"].wait_for("$^")
            assert survivor.returncode != 0
            stopped = outputs["w1"].find(r"error: rank \d: no batch finished for (\d+) s \(--dist-timeout 8\)",
                                         killed_at)
            assert stopped, outputs["w1"].text()[-2000:]
            assert int(stopped.group(1)) >= 8  # not before --dist-timeout
        finally:
            for proc in procs.values():
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()


@pytest.mark.slow
def test_faster_rcnn_dist_sync_one_epoch_same_weights(synthetic_rec, tmp_path):
    rec = synthetic_rec
    prefix = str(tmp_path / "rcnn")
    command = train_argv(rec, prefix, network="faster_rcnn_small", epochs=1, kv_store="dist_sync", seed=0,
                         img_short_side=112, img_long_side=160, rpn_anchor_scales="(2,4,8)", rpn_pre_nms_topk=1000,
                         rpn_post_nms_topk=200, rcnn_batch_rois=64)
    with job_marker() as marker:
        done = run_job(marker, command)
        assert done.returncode == 0, done.stderr[-3000:]
    found = digests(done.stderr)
    assert found[(0, 0)] == found[(1, 0)]
    assert checkpoint_digest(prefix + "_faster_rcnn_small", 1) == found[(0, 0)]


@pytest.mark.slow
@pytest.mark.skipif(not has_bfloat16(), reason=f"needs native bfloat16: {bfloat16_unavailable()}")
def test_dist_sync_in_bfloat16_keeps_the_workers_identical(synthetic_rec, tmp_path):
    """--dtype bfloat16 under the parameter server: float32 weights pushed and pulled, identical on both ranks."""
    prefix = str(tmp_path / "ssd")
    command = train_argv(synthetic_rec, prefix, batch_size=6, end_epoch=1, kv_store="dist_sync", dtype="bfloat16",
                         log=tmp_path / "train.log")
    with job_marker() as marker:
        done = run_job(marker, command)
        assert done.returncode == 0, done.stderr[-3000:]
    found = digests(done.stderr)
    assert found[(0, 0)] == found[(1, 0)] == checkpoint_digest(prefix + "_toy_64", 1)
    assert "Training in bfloat16" in done.stderr
