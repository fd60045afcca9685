"""``make quickstart`` (tools/quickstart.py) end to end on a few images and one epoch, as a user runs it."""
import os
import re
import subprocess
import sys

import pytest

from config.recipes import QUICKSTART_RECIPE, RECIPES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_quickstart_runs_every_step_and_prints_the_map(tmp_path):
    out = tmp_path / "qs"
    proc = subprocess.run([sys.executable, "tools/quickstart.py", "--out", str(out), "--num-train", "24",
                           "--num-val", "8", "--epochs", "1", "--batch-size", "8", "--demo-images", "2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    steps = re.findall(r"^\$ \S+ (\S+)", proc.stdout, re.MULTILINE)
    assert steps == ["tools/make_synthetic.py", "tools/prepare_dataset.py", "tools/prepare_dataset.py", "train.py",
                     "evaluate.py", "demo.py"]
    # the training step is the default recipe's command, cut to one epoch
    train_line = re.search(r"^\$ \S+ train.py (.*)$", proc.stdout, re.MULTILINE).group(1)
    assert " ".join(RECIPES[QUICKSTART_RECIPE].flags) in train_line and "--end-epoch 1 " in train_line
    mean_ap = re.search(r"^mAP = (\d\.\d{4})$", proc.stdout, re.MULTILINE)
    assert mean_ap and 0.0 <= float(mean_ap.group(1)) <= 1.0
    prefix = out / "model" / "ssd_toy_128"
    for path in [f"{prefix}-0001.params", f"{prefix}-symbol.json", f"{prefix}-ssd.json", f"{prefix}-metrics.csv",
                 f"{prefix}-curves.png", out / "train.log", out / "data" / "val.rec"]:
        assert os.path.isfile(path), path
    assert len(list((out / "pr").glob("*.png"))) == 3
    assert len(list((out / "demo").iterdir())) == 2
    # the printed mAP is the one evaluate.py computes on the checkpoint: the metrics row holds the same value
    with open(f"{prefix}-metrics.csv") as f:
        last = f.read().strip().splitlines()[-1].split(",")
    assert abs(float(last[-1]) - float(mean_ap.group(1))) < 6e-5
