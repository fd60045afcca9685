"""``evaluate.py --analyze DIR``: the files it writes, and a confusion matrix that counts the record's objects."""
import csv
import os

import numpy as np
import pytest
from helpers import load_script, read_lst

pytestmark = pytest.mark.slow


def test_analyze_writes_the_error_analysis_of_the_evaluated_images(trained_toy, tmp_path, capsys):
    out = tmp_path / "analysis"
    load_script("evaluate").main(["--prefix", trained_toy.checkpoint, "--epoch", str(trained_toy.epoch),
                                  "--rec-path", trained_toy.val_rec, "--analyze", str(out)])
    printed = capsys.readouterr().out
    assert "error analysis: " in printed and str(out) in printed
    for name in ("confusion.csv", "confusion.png", "ap_by_size.csv", "ap_by_size.png", "worst_images.png"):
        assert os.path.getsize(out / name) > 0, name
    with open(out / "confusion.csv") as f:
        rows = list(csv.reader(f))
    header, body = rows[0], rows[1:]
    assert header[-1] == "background" and [row[0] for row in body][-1] == "background"
    # every non-difficult object of the record is in exactly one cell of its class's row (a hit, a confusion
    # or a miss in the background column)
    objects = np.concatenate([objs for _, objs in read_lst(trained_toy.val_lst).values()])
    expected = np.bincount(objects[objects[:, 5] == 0, 0].astype(int), minlength=len(trained_toy.classes))
    counted = [sum(int(v) for v in row[1:]) for row in body[:-1]]
    assert counted == expected.tolist()
    assert [row[0] for row in body[:-1]] == trained_toy.classes


def test_analyze_refuses_an_unwritable_folder(trained_toy, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    from config.errors import UserError

    with pytest.raises(UserError, match="--analyze"):
        load_script("evaluate").main(["--prefix", trained_toy.checkpoint, "--epoch", str(trained_toy.epoch),
                                      "--rec-path", trained_toy.val_rec, "--analyze", str(blocker / "sub")])
