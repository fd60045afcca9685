"""Smoke runs of tools/benchmark.py on the toy network (tiny shapes; speeds are not checked)."""
import math

import mxnet  # noqa: F401  (loaded before main() so that --threads is refused, see below)
import pytest

from config.errors import UserError
from tools import benchmark


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_benchmark_returns_a_positive_speed(mode):
    speed = benchmark.benchmark("toy", 64, batch_size=2, mode=mode, num_classes=2, iterations=2, warmup=1)
    assert math.isfinite(speed) and speed > 0


def test_random_labels_are_valid_boxes():
    label = benchmark._random_label(4, benchmark.np.random.default_rng(0))
    assert label.shape == (4, benchmark.OBJECTS_PER_IMAGE, 6)
    assert ((label[:, :, 1:3] < label[:, :, 3:5]) & (label[:, :, 1:3] >= 0)).all()
    assert ((label[:, :, 0] >= 0) & (label[:, :, 0] < 1)).all()


def test_batch_size_zero_sweeps_one_to_32(capsys):
    assert benchmark.main(["-n", "toy", "-w", "64", "-b", "0", "--num-class", "2",
                           "--iterations", "1", "--warmup", "0"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("OMP_NUM_THREADS=")
    assert [int(line.split(" batch ")[1].split(":")[0]) for line in lines[1:]] == [1, 2, 4, 8, 16, 32]
    assert all(line.endswith("warm-up)") and "images/sec" in line for line in lines[1:])


@pytest.mark.parametrize("argv, flag", [(["-b", "-1"], "--batch-size"), (["--iterations", "0"], "--iterations"),
                                        (["--gpus", "x"], "--gpus"), (["--threads", "0"], "--threads")])
def test_bad_flags_are_user_errors(argv, flag):
    with pytest.raises(UserError, match=f"^{flag}"):
        benchmark.parse_args(argv)


def test_unknown_network_and_late_threads_are_user_errors():
    with pytest.raises(UserError, match="^--network"):
        benchmark.main(["-n", "nosuch", "-b", "1"])
    with pytest.raises(UserError, match="^--threads"):  # mxnet is loaded by now: too late for OMP_NUM_THREADS
        benchmark.main(["-n", "toy", "--threads", "1"])


def test_distributed_benchmark_reads_epoch_times_and_sizes_the_traffic():
    from tools.benchmark_dist import bytes_per_step, epoch_seconds

    log = ("12:00:01 Epoch[0] Time cost=9.000\n[rank 1] 12:00:01 Epoch[0] Time cost=9.100\n"
           "12:00:05 Epoch[1] Time cost=4.000\n12:00:09 Epoch[2] Time cost=2.000\n")
    assert epoch_seconds(log) == [4.0, 2.0]  # the first epoch is not timed
    # SSD300: every one of its 26,285,486 parameters as float32, up and down
    assert bytes_per_step("vgg16_reduced", 300) == 26_285_486 * 4 * 2
