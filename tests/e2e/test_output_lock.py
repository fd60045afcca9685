"""One writer per output set (config/output_lock.py): a second process on the same output is refused.

The lock itself (refused with the holder's pid and command, released on exit, taken over from a
process killed with SIGKILL); two real tools/prepare_dataset.py runs on one --target, started together
again and again, always leave a .lst/.rec/.idx of one run; and each other command that writes a set
(train.py, tools/deploy.py, tools/quantize.py, tools/export_onnx.py) is refused while the test holds
its output's lock.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT, files_under, script_command, tiny_synthetic, write_rec

from config.errors import UserError
from config.output_lock import lock_path, output_lock

# holds the lock of argv[1] until its stdin closes; argv[2] is a marker the refusal must quote
HOLDER = """import sys
from config.output_lock import output_lock
with output_lock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.read()
"""
# tools/prepare_dataset.py whose renames race: before each of its three renames (.rec, .idx, .lst) a run
# waits until every other run on the target is at the same rename or has exited, then 0 to 0.2 s more.
# Runs that nothing keeps apart thus interleave their renames (each file from either run) on most tries;
# a refused run exits at once and holds nobody up. The runs meet through files in $MEET_DIR.
SLOW_PREPARE = """import atexit, os, random, time
import tools.prepare_dataset as prepare
from config.errors import run_cli

meet, me = os.environ["MEET_DIR"], str(os.getpid())
def mark(name):
    open(os.path.join(meet, name), "w").close()
def waiting_for(step):
    peers = [n[4:] for n in os.listdir(meet) if n.startswith("run-") and n[4:] != me]
    return [p for p in peers if not {f"at{step}-{p}", f"gone-{p}"} & set(os.listdir(meet))]
mark("run-" + me)
atexit.register(mark, "gone-" + me)
rename, steps = prepare.commit, []
def racing_commit(tmp, path):
    steps.append(path)
    mark(f"at{len(steps)}-{me}")
    deadline = time.monotonic() + 60
    while waiting_for(len(steps)) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(random.uniform(0, 0.2))
    rename(tmp, path)
prepare.commit = racing_commit
run_cli(prepare.main)
"""
PAIRS = 4  # tries of two runs started together; without the lock 3 in 4 tries mix the set


def start_holder(output: str, marker: str = "holder-marker") -> subprocess.Popen:
    """A process that holds ``output``'s lock; returns once it says so."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, output, marker], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    assert holder.stdout.readline() == "held\n"
    return holder


def test_second_holder_is_refused_naming_pid_and_command(tmp_path):
    out = str(tmp_path / "model" / "ssd")
    holder = start_holder(out)
    try:
        with pytest.raises(UserError) as refused:
            with output_lock(out, f"--prefix {out}"):
                pass
        message = str(refused.value)
        assert message.startswith(f"--prefix {out}: process {holder.pid} (")
        assert "holder-marker" in message and "\n" not in message
        assert os.path.isfile(lock_path(out))  # still the holder's
    finally:
        holder.stdin.close()
        assert holder.wait(timeout=60) == 0
    assert not os.path.exists(lock_path(out))  # the holder removed it on its way out
    with output_lock(out) as path:
        with open(path) as f:
            assert f.readline() == f"{os.getpid()}\n"


def test_released_on_exit_and_on_error(tmp_path):
    out = str(tmp_path / "data" / "train")
    with output_lock(out):
        assert os.path.isfile(lock_path(out))
    assert not os.path.exists(lock_path(out))
    with pytest.raises(RuntimeError):
        with output_lock(out):
            raise RuntimeError("the command failed")
    assert not os.path.exists(lock_path(out))
    with output_lock(out):  # taken again by the same process
        pass


def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    out = str(tmp_path / "ssd")
    holder = start_holder(out)
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=60)
    with open(lock_path(out)) as f:  # left behind, naming the dead process
        assert f.readline() == f"{holder.pid}\n"
    with output_lock(out) as path:
        with open(path) as f:
            assert f.readline() == f"{os.getpid()}\n"
    assert not os.path.exists(lock_path(out))


def test_lock_file_removed_while_waiting_for_it_is_not_trusted(tmp_path, monkeypatch):
    """The holder removes its lock file and exits between this process's open and its flock: the lock
    then taken is on a removed file, so the lock is taken again on the file at the path."""
    import config.output_lock as module

    out = str(tmp_path / "ssd")
    holder = start_holder(out)
    real_flock, calls = module.fcntl.flock, []

    def flock_after_the_holder_left(fd, operation):
        if not calls:
            holder.stdin.close()
            holder.wait(timeout=60)
        calls.append(fd)
        return real_flock(fd, operation)

    monkeypatch.setattr(module.fcntl, "flock", flock_after_the_holder_left)
    with output_lock(out):
        other = subprocess.run([sys.executable, "-c", HOLDER, out], cwd=ROOT, capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=60)
        assert other.returncode != 0 and f"process {os.getpid()} (" in other.stderr, other.stdout
        assert len(calls) == 2  # the removed file's lock was let go and the path's taken


def lst_lines(path: str) -> list[tuple[int, np.ndarray]]:
    """``(index, label)`` of each line of a detection .lst, in order."""
    lines = []
    with open(path) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            lines.append((int(fields[0]), np.array(fields[1:-1], dtype=np.float32)))
    return lines


def check_one_set(base: str) -> list[int]:
    """Assert that ``base``.lst/.rec/.idx belong together; returns the .lst's index column.

    Record k of the .rec holds line k of the .lst (its id and label), and the .idx maps each id to
    the offset its record starts at.
    """
    from dataset.recordio import iter_records, record_offsets

    lines = lst_lines(base + ".lst")
    records = [header for header, _ in iter_records(base + ".rec", base + ".idx")]
    assert [int(h.id) for h in records] == [index for index, _ in lines], "the .rec and .lst differ in order"
    for header, (index, label) in zip(records, lines):
        np.testing.assert_allclose(header.label, label, atol=1e-4, err_msg=f"record {index}: label of another .lst")
    offsets, _ = record_offsets(base + ".rec")
    with open(base + ".idx") as f:
        idx = [tuple(int(v) for v in line.split("\t")) for line in f if line.strip()]
    assert idx == list(zip([index for index, _ in lines], offsets)), "the .idx is another run's"
    return [index for index, _ in lines]


def shuffled(count: int, seed: int) -> list[int]:
    """The .lst order prepare_dataset writes with ``--seed seed`` for ``count`` images of objects
    (it shuffles its lines with ``random.Random(seed)``, and a shuffle depends on the length alone)."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    return order


@pytest.mark.slow
def test_two_prepare_runs_on_one_target_leave_one_runs_set(tmp_path):
    synth = tiny_synthetic(tmp_path / "synth", num_train=8, min_side=48, max_side=64)
    seeds = (1, 2)
    orders = {seed: shuffled(8, seed) for seed in seeds}
    assert orders[1] != orders[2]  # else a mixed set would look like one run's

    for attempt in range(PAIRS):
        out, meet = tmp_path / f"try{attempt}", tmp_path / f"meet{attempt}"
        meet.mkdir()
        target = str(out / "train.lst")
        runs = {seed: subprocess.Popen(
            [sys.executable, "-c", SLOW_PREPARE, "--dataset", "pascal", "--year", "synth", "--set", "train",
             "--root", synth.devkit, "--target", target, "--class-names", synth.names_file, "--seed", str(seed)],
            cwd=ROOT, env={**os.environ, "MEET_DIR": str(meet)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True) for seed in seeds}
        results = {seed: (run.communicate(timeout=300)[1], run.returncode, run.pid) for seed, run in runs.items()}
        order = check_one_set(str(out / "train"))
        succeeded = [seed for seed, (_, status, _) in results.items() if status == 0]
        assert succeeded, results
        if len(succeeded) == 1:  # the other was refused, naming the winner, and wrote nothing
            winner, loser = succeeded[0], next(seed for seed in seeds if seed not in succeeded)
            stderr, status, _ = results[loser]
            assert status == 2 and stderr.count("\n") == 1, stderr
            assert stderr.startswith(f"error: --target {target}: process {results[winner][2]} ("), stderr
            assert order == orders[winner]
        else:  # one ran after the other: the set is the later one's
            assert order in orders.values()
        assert sorted(files_under(out)) == ["train.idx", "train.lst", "train.rec"]


def command_case(name: str, tmp_path) -> tuple[list[str], str, str]:
    """``(command line, output it locks, what the refusal names)`` of a command writing a set in ``tmp_path``.

    The checkpoint does not exist: without the lock each command would fail on it instead, with
    another message."""
    prefix = str(tmp_path / "ssd")
    if name == "train.py":
        rec = write_rec(str(tmp_path / "train"), [(np.zeros((32, 32, 3), np.uint8), [[0, .1, .1, .5, .5, 0]])])
        argv = ["--network", "toy", "--data-shape", "64", "--train-path", rec, "--val-path", "", "--num-class", "1",
                "--class-names", "a", "--pretrained", "", "--freeze", "", "--gpus", "", "--log", "",
                "--prefix", prefix, "--resume", "auto", "--end-epoch", "1", "--batch-size", "1"]
        return script_command("train.py") + argv, prefix + "_toy_64", f"--prefix {prefix}_toy_64"
    if name == "tools/deploy.py":
        argv = ["--network", "toy", "--data-shape", "64", "--num-class", "1", "--prefix", prefix, "--epoch", "1"]
        out = str(tmp_path / "deploy_ssd")
        return script_command(name) + argv, out, out
    if name == "tools/quantize.py":
        argv = ["--prefix", prefix, "--epoch", "1", "--calib-rec", str(tmp_path / "val.rec")]
        return script_command(name) + argv, prefix + "-quantized", prefix + "-quantized"
    out = prefix + ".onnx"
    return script_command(name) + ["--prefix", prefix, "--epoch", "1", "--out", out], out, f"--out {out}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["train.py", "tools/deploy.py", "tools/quantize.py", "tools/export_onnx.py"])
def test_command_is_refused_while_its_output_is_held(name, tmp_path):
    command, output, label = command_case(name, tmp_path)
    with output_lock(output):
        before = files_under(tmp_path)
        result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert files_under(tmp_path) == before  # nothing written
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.startswith(f"error: {label}: process {os.getpid()} (") and result.stderr.count("\n") == 1, \
        result.stderr[-2000:]
