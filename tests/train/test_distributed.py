"""Distributed training over mxnet's parameter server, on 127.0.0.1 (train/distributed.py, tools/launch.py).

Every job runs the toy SSD at 64 px (or faster_rcnn_small) on the shared
24 synthetic images. Each test starts its processes with an environment
marker (``MXDET_TEST_JOB``) and, pass or fail, kills every process that
carries it: no scheduler, server or worker outlives its test.

How "both workers end with the same weights" is checked: at every epoch end
of a sync job the workers exchange SHA-256 digests of their weights through
the kvstore and each logs ``weights identical on 2 workers (sha256 ...)``
(a product check: a mismatch stops the job). The test reads that line from
both ranks and recomputes the digest from rank 0's checkpoint, so rank 1's
weights are compared bit for bit without rank 1 writing any file.
"""
from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import uuid

import mxnet as mx
import numpy as np
import pytest
from helpers import ROOT, logged_epochs, read_lst, script_command, train_args, train_toy

from config.cpu import has_bfloat16
from dataset.recordio import shard_of_records
from evaluate import checkpoint
from tools import launch
from train.distributed import EqualBatches, batches_per_worker, digest_of_params

DIGEST = re.compile(r"(\[rank (\d)\] )?\S* ?Epoch\[(\d+)\] weights identical on 2 workers \(sha256 ([0-9a-f]{64})\)")
RECORDS = re.compile(r"(?:\[rank \d\] )?Epoch\[(\d+)\] rank (\d) records: ([\d,]*) \| repeated: ([\d,]*)")


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


@contextlib.contextmanager
def job_marker():
    """A fresh marker; on the way out every process carrying it is killed (and reaped if ours)."""
    marker = uuid.uuid4().hex
    try:
        yield marker
    finally:
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


def train_argv(rec, prefix: str, **flags) -> list[str]:
    """``python train.py ...`` of a job's processes: the toy at 64 without augmentation (``network=
    'faster_rcnn_small'``: that network), lr 0.01, a progress line every batch, train.py's default log
    file; ``flags`` add or replace flags as :func:`helpers.train_args` takes them."""
    settings = dict(frequent=1, lr=0.01, log=None)
    if flags.get("network", "toy") == "toy":
        settings.update(label_width=max(350, rec.label_width), augment="none")
    else:  # the SSD-only flags of train_args' baseline are refused for Faster R-CNN
        settings.update(data_shape=None, freeze=None)
    return script_command("train.py") + train_args(rec, prefix, **{**settings, **flags})


def launch_argv(num_workers: int, command: list[str]) -> list[str]:
    return script_command("tools/launch.py") + ["-n", str(num_workers), "-s", "1", "--launcher", "local", "--",
                                                *command]


def run_job(marker: str, command: list[str], timeout: float = 150, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(launch_argv(2, command), env=job_env(marker, **env), capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


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
def test_two_workers_equal_one_process_with_two_devices(synthetic_rec, tmp_path, monkeypatch):
    """2 workers x 1 device at batch 4 == 1 process x 2 CPU devices at batch 8, weights within 1e-5 after one
    step: worker k's batch is slice k of the single process's batch."""
    from config.augmentation import TRAIN_AUGMENTATIONS
    from symbol.symbol_factory import get_symbol_train

    rec = equal_size_rec(synthetic_rec.train_rec, 8, tmp_path)
    assert shard_of_records(rec, 2) == [0] * 4 + [1] * 4
    # a fixed start that both runs load
    symbol = get_symbol_train("toy", 64, num_classes=synthetic_rec.num_classes)
    module = mx.mod.Module(symbol, label_names=("label",), context=mx.cpu())
    module.bind([("data", (4, 3, 64, 64))], [("label", (4, 58, 6))])
    mx.random.seed(5)
    module.init_params(mx.init.Xavier())
    start = str(tmp_path / "start")
    module.save_checkpoint(start, 0)

    command = train_argv(synthetic_rec, str(tmp_path / "dist"), train_path=rec, pretrained=start, epoch=0, end_epoch=1,
                         momentum=0, wd=0, lr=0.1, seed=1, batch_size=4, kv_store="dist_sync")
    with job_marker() as marker:
        done = run_job(marker, command)
        assert done.returncode == 0, done.stderr[-3000:]

    # the reference: one process, two devices, the same 8 images as one batch in record order
    monkeypatch.setitem(TRAIN_AUGMENTATIONS["none"], "shuffle", False)
    train_toy(synthetic_rec, str(tmp_path / "single"), 1, ctx=[mx.cpu(0), mx.cpu(1)], train_path=rec, label_width=350,
              batch_size=8, pretrained=start, lr=0.1, momentum=0.0, wd=0.0, augment="none", seed=1, frequent=1)
    _, dist_args, _ = checkpoint.load_checkpoint(str(tmp_path / "dist_toy_64"), 1)
    _, single_args, _ = checkpoint.load_checkpoint(str(tmp_path / "single"), 1)
    _, start_args, _ = checkpoint.load_checkpoint(start, 0)
    moved = max(float(np.abs(single_args[k].asnumpy() - start_args[k].asnumpy()).max()) for k in single_args)
    assert moved > 1e-3  # the step did something
    for name, value in single_args.items():
        np.testing.assert_allclose(dist_args[name].asnumpy(), value.asnumpy(), atol=1e-5, rtol=0, err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("kv_store", ["dist_async", "dist_device_sync"])
def test_other_dist_modes_finish_an_epoch(synthetic_rec, tmp_path, kv_store):
    prefix = str(tmp_path / "ssd")
    command = train_argv(synthetic_rec, prefix, batch_size=6, end_epoch=1, kv_store=kv_store)
    with job_marker() as marker:
        done = run_job(marker, command)
        assert done.returncode == 0, done.stderr[-3000:]
    assert os.path.isfile(prefix + "_toy_64-0001.params")
    # dist_async keeps momentum on the servers: no optimizer state is written, and the log says so
    assert os.path.isfile(prefix + "_toy_64-0001.states") == (kv_store != "dist_async")
    if kv_store == "dist_async":
        assert "resumed run restarts it" in done.stderr


@pytest.mark.slow
def test_killed_worker_stops_the_job_then_resume_auto_finishes(synthetic_rec, tmp_path):
    """SIGKILL one worker mid-epoch: the launcher stops the rest within 60 s with one line naming it, and
    nothing is left running; --resume auto then finishes the run from rank 0's last checkpoint."""
    prefix = str(tmp_path / "ssd")
    files = prefix + "_toy_64"
    command = train_argv(synthetic_rec, prefix, batch_size=2, end_epoch=2, kv_store="dist_sync", resume="auto",
                         seed=0)
    with job_marker() as marker:
        job = subprocess.Popen(launch_argv(2, command), env=job_env(marker), stderr=subprocess.PIPE, text=True,
                               cwd=ROOT, start_new_session=True)
        lines, victim = [], None
        try:
            for line in job.stderr:
                lines.append(line)
                match = re.search(r"Distributed: rank 1 of 2 workers.*\(pid (\d+)\)", line)
                victim = int(match.group(1)) if match else victim
                if "[rank 1] Epoch[1] Batch [2/" in line:
                    break
            assert victim, "".join(lines[-20:])
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            rest = job.stderr.read()
            job.wait(timeout=60)
            elapsed = time.monotonic() - killed_at
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        assert job.returncode != 0
        assert elapsed < 60
        assert f"error: worker 1 (pid {victim}) died (SIGKILL); stopped the job" in rest
        time.sleep(0.5)
        assert not marked_pids(marker), "processes left running"
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
    within --dist-timeout with one line."""
    prefix = str(tmp_path / "ssd")
    port = launch.free_port()
    with job_marker() as marker:
        base = job_env(marker, DMLC_PS_ROOT_URI="127.0.0.1", DMLC_PS_ROOT_PORT=str(port), DMLC_NUM_SERVER="1",
                       DMLC_NUM_WORKER="2", DMLC_NODE_HOST="127.0.0.1", DMLC_INTERFACE="lo")
        procs = {}
        for role, name, seed in (("scheduler", "scheduler", 0), ("server", "server", 0), ("worker", "w1", 1),
                                 ("worker", "w2", 2)):
            command = train_argv(synthetic_rec, prefix, batch_size=2, end_epoch=3, kv_store="dist_sync", seed=seed,
                                 dist_timeout=8)
            procs[name] = subprocess.Popen(command, env=dict(base, DMLC_ROLE=role), stderr=subprocess.PIPE,
                                           stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
        # the rank-1 worker: read its lines until epoch 0's digest, then kill the other worker
        outputs = {}
        survivor = None
        deadline = time.monotonic() + 120
        logs = {"w1": [], "w2": []}
        import selectors

        selector = selectors.DefaultSelector()
        for name in ("w1", "w2"):
            selector.register(procs[name].stderr, selectors.EVENT_READ, name)
        digest_seen = {}
        while len(digest_seen) < 2 and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                line = key.fileobj.readline()
                logs[key.data].append(line)
                match = DIGEST.search(line)
                if match and match.group(3) == "0":
                    digest_seen[key.data] = match.group(4)
        assert len(digest_seen) == 2, "".join(logs["w1"][-10:] + logs["w2"][-10:])
        assert digest_seen["w1"] == digest_seen["w2"]
        procs["w2"].kill()
        survivor = procs["w1"]
        killed_at = time.monotonic()
        rest = survivor.stderr.read()
        survivor.wait(timeout=60)
        elapsed = time.monotonic() - killed_at
        outputs["w1"] = "".join(logs["w1"]) + rest
        assert survivor.returncode != 0
        assert elapsed < 8 + 15
        assert re.search(r"error: rank \d: no batch finished for \d+ s \(--dist-timeout 8\)", rest), rest[-2000:]
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
        done = run_job(marker, command, timeout=170)
        assert done.returncode == 0, done.stderr[-3000:]
    found = digests(done.stderr)
    assert found[(0, 0)] == found[(1, 0)]
    assert checkpoint_digest(prefix + "_faster_rcnn_small", 1) == found[(0, 0)]


@pytest.mark.slow
@pytest.mark.skipif(not has_bfloat16(), reason="needs avx512_bf16 and the AVX-512 core flags; this CPU lacks some")
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
