"""tools/train_rcnn_small.py: every step end to end on a few tiny images for one epoch, and its size flags."""
import os
import re
import subprocess

import pytest
from helpers import load_script, read_lst, script_command

from config.errors import UserError
from config.run_config import load_run_config, run_config_path

NUM_TRAIN, NUM_VAL, CLASSES = 6, 4, 2
# 6 training and 4 validation images of 96-128 px, one epoch at the same sides
SMALL = ["--num-train", str(NUM_TRAIN), "--num-val", str(NUM_VAL), "--classes", str(CLASSES), "--epochs", "1",
         "--max-objects", "2", "--min-side", "96", "--max-side", "128", "--img-short-side", "96",
         "--img-long-side", "128"]
STEPS = ["make_synthetic.py", "prepare_dataset.py", "prepare_dataset.py", "train.py", "evaluate.py"]

train_rcnn_small = load_script("tools/train_rcnn_small")


def line(pattern: str, text: str) -> re.Match:
    """The one line of ``text`` that ``pattern`` matches from start to end."""
    found = list(re.finditer(f"^{pattern}$", text, re.MULTILINE))
    assert len(found) == 1, (pattern, text[-3000:])
    return found[0]


@pytest.mark.slow
def test_small_run_generates_trains_scores_and_writes_what_it_names(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(script_command("tools/train_rcnn_small.py") + ["--out", str(out), *SMALL], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stdout = proc.stdout
    # each step's command is printed before it runs
    assert [os.path.basename(cmd.split()[1]) for cmd in re.findall(r"^\$ (.*)$", stdout, re.MULTILINE)] == STEPS

    # the score: a number in [0, 1], the one evaluate.py printed
    score = line(r"Faster R-CNN \(faster_rcnn_small, from scratch, CPU\) on synthetic data: VOC07 mAP = (\S+)",
                 stdout).group(1)
    assert 0.0 <= float(score) <= 1.0
    line(f"mAP = {re.escape(score)}", stdout)

    # the data it made: the sizes asked for; one iteration per training image with an object, per epoch
    train = read_lst(str(out / "data" / "train.lst"))
    assert len(train) == NUM_TRAIN and len(read_lst(str(out / "data" / "val.lst"))) == NUM_VAL
    with_objects = sum(bool(((objects[:, 0] >= 0) & (objects[:, 5] == 0)).any()) for _, objects in train.values())
    line(rf"  training: 1 epochs, {with_objects} iterations in .* min \(\S+ s/iteration\)", stdout)

    # the files it says it wrote
    prefix, config, log = line(r"  checkpoints: (\S+)-NNNN\.params, config (\S+), log (\S+)", stdout).groups()
    assert os.path.isfile(f"{prefix}-0001.params") and os.path.isfile(f"{prefix}-symbol.json")
    assert config == run_config_path(prefix, "rcnn") and os.path.isfile(config)
    run = load_run_config(prefix)
    assert (run.network, run.num_classes, run.end_epoch, run.img_short_side, run.img_long_side) == (
        "faster_rcnn_small", CLASSES, 1, 96, 128)
    with open(log) as f:
        assert "Epoch[0] Train-RCNNLogLoss=" in f.read()


@pytest.mark.parametrize("flags, message", [
    (["--epochs", "0"], r"--epochs 0: must be a number >= 1"),
    (["--num-val", "0"], r"--num-val 0: must be a number >= 1"),
    (["--num-train", "0"], r"--num-train 0: must be a number >= 1"),
    (["--min-side", "300", "--max-side", "200"], r"--min-side/--max-side: need 16 <= min \(300\) <= max \(200\)"),
    (["--classes", "13"], r"--classes: 13 is not in 1\.\.12"),
    (["--lr", "0"], r"--lr 0.0: must be a number > 0"),
])
def test_bad_sizes_are_one_line_before_any_step(flags, message):
    with pytest.raises(UserError, match=f"^{message}") as err:
        train_rcnn_small.parse_args(flags)
    assert "\n" not in str(err.value)

