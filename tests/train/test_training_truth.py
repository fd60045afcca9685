"""Training reports and does what it says: the LR schedule in real batches (example/ssd's finetune
is in test_train.py, beside the model it starts from), the saved run config, --keep, the progress line's speed, --seed.

The runs use the toy SSD at 64x64 on the shared tiny synthetic set (24 training images,
which batches of 5 do not divide: 5 batches per epoch, the last one padded).
"""
import functools
import logging
import math
import os
import shutil
import types

import numpy as np
import pytest
from helpers import assert_same_detections, checkpoint_weights, history, load_script, train_toy

from config.errors import UserError
from config.run_config import load_run_config
from evaluate import checkpoint
from train.progress import ProgressLogger
from train.schedule import EpochLRScheduler

# the toy at 64 on the shared set: 24 images at batch 5, lr 0.1 without steps
run_toy = functools.partial(train_toy, batch_size=5, lr=0.1, voc07_metric=True, seed=0)


# --- the learning-rate schedule ---------------------------------------------------------------------
def test_schedule_counts_real_batches_hand_worked():
    """24 images at batch 5: 5 batches an epoch. 1 warm-up epoch, x0.1 at epochs 2 and 3."""
    schedule = EpochLRScheduler(0.1, [2, 3], 0.1, batches_per_epoch=5, warmup_epochs=1)
    rates = [schedule(update) for update in range(1, 21)]  # the optimizer counts updates from 1
    expected = [0.02, 0.04, 0.06, 0.08, 0.1] + [0.1] * 5 + [0.01] * 5 + [0.001] * 5
    assert rates == pytest.approx(expected, rel=1e-12)
    # resumed at epoch 1 or 2, the optimizer counts from 1 again: the same rate for every batch
    for begin in (1, 2):
        resumed = EpochLRScheduler(0.1, [2, 3], 0.1, 5, begin_epoch=begin, warmup_epochs=1)
        assert [resumed(u) for u in range(1, 21 - 5 * begin)] == pytest.approx(expected[5 * begin:], rel=1e-12)


@pytest.mark.slow
def test_lr_logged_at_each_epoch_start_is_the_schedule(synthetic_rec, tmp_path, no_augmentation, caplog):
    caplog.set_level(logging.INFO)
    prefix = str(tmp_path / "ssd")
    run_toy(synthetic_rec, prefix, 4, lr_steps="2,3", warmup_epochs=1)
    # the rate the optimizer used for the first batch of each epoch; with 24 // 5 = 4 batches an
    # epoch (the original's count) the warm-up would start at 0.025 and each step fire early
    expected = [0.02, 0.1, 0.01, 0.001]
    assert [float(row["lr"]) for row in history(prefix)] == pytest.approx(expected, rel=1e-6)
    logged = [r.getMessage() for r in caplog.records if "Learning rate" in r.getMessage()]
    assert logged == [f"Epoch[{e}] Learning rate {lr:.8g}" for e, lr in enumerate(expected)]
    # and the progress line's batch count is the iterator's
    assert any("Batch [5/5]" in r.getMessage() for r in caplog.records)


def cosine_rate(done: int, base: float = 0.1, floor: float = 0.001, warmup: int = 5, total: int = 20) -> float:
    """The cosine schedule by hand: half a period from ``base`` after the warm-up to ``floor`` at the last batch."""
    if done < warmup:
        return base * (done + 1) / warmup
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * (done - warmup) / (total - 1 - warmup)))


def test_cosine_schedule_hand_worked():
    """5 batches an epoch, 4 epochs, 1 warm-up epoch: 0.02 .. 0.1, then down to the floor at batch 20."""
    schedule = EpochLRScheduler(0.1, [], 0.1, batches_per_epoch=5, warmup_epochs=1, cosine_end_epoch=4, floor=0.001)
    rates = [schedule(update) for update in range(1, 21)]
    assert rates[:6] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.1], rel=1e-12)
    assert rates[-1] == pytest.approx(0.001, rel=1e-12) and rates == sorted(rates[:5]) + sorted(rates[5:])[::-1]
    assert rates == pytest.approx([cosine_rate(done) for done in range(20)], rel=1e-12)
    resumed = EpochLRScheduler(0.1, [], 0.1, 5, begin_epoch=2, warmup_epochs=1, cosine_end_epoch=4, floor=0.001)
    assert [resumed(u) for u in range(1, 11)] == pytest.approx(rates[10:], rel=1e-12)


@pytest.mark.slow
def test_cosine_rate_logged_at_each_epoch_start(synthetic_rec, tmp_path, no_augmentation, caplog):
    """24 images at batch 5 (the last batch padded): the rate of each epoch's first batch is the formula's."""
    caplog.set_level(logging.INFO)
    prefix = str(tmp_path / "ssd")
    run_toy(synthetic_rec, prefix, 4, warmup_epochs=1, lr_schedule="cosine", lr_floor=0.001)
    expected = [cosine_rate(5 * epoch) for epoch in range(4)]
    assert [float(row["lr"]) for row in history(prefix)] == pytest.approx(expected, rel=1e-6)
    logged = [r.getMessage() for r in caplog.records if "Learning rate" in r.getMessage()]
    assert logged == [f"Epoch[{e}] Learning rate {lr:.8g}" for e, lr in enumerate(expected)]
    assert load_run_config(prefix).lr_schedule == "cosine"


@pytest.mark.slow
def test_resume_on_uneven_batches_matches_a_straight_run(synthetic_rec, tmp_path, no_augmentation):
    straight = str(tmp_path / "a" / "ssd")
    run_toy(synthetic_rec, straight, 3, lr=0.05, lr_steps="2", warmup_epochs=1.5)
    resumed = str(tmp_path / "b" / "ssd")
    run_toy(synthetic_rec, resumed, 1, lr=0.05, lr_steps="2", warmup_epochs=1.5)  # stopped inside the warm-up
    run_toy(synthetic_rec, resumed, 3, lr=0.05, lr_steps="2", warmup_epochs=1.5, resume="auto")
    a, b = checkpoint_weights(straight, 3), checkpoint_weights(resumed, 3)
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) < 1e-5
    # warm-up over 7.5 batches: the first batches of epochs 0 and 1 get 1/7.5 and 6/7.5 of 0.05
    assert [float(r["lr"]) for r in history(resumed)] == pytest.approx([0.05 / 7.5, 0.04, 0.005], rel=1e-6)


# --- the run config ------------------------------------------------------------------------------------
def test_run_config_is_saved_and_read_back(synthetic_rec, tmp_path, no_augmentation):
    prefix = str(tmp_path / "ssd")
    run_toy(synthetic_rec, prefix, 1, std_pixels=(58.0, 57.0, 57.5), nms_thresh=0.3, nms_topk=50)
    run = load_run_config(prefix)
    assert (run.network, run.data_shape, run.num_classes, run.class_names) == (
        "toy", 64, 3, synthetic_rec.classes)
    assert run.mean_pixels == (123, 117, 104) and run.std_pixels == (58.0, 57.0, 57.5)
    assert (run.nms_thresh, run.nms_topk, run.label_width) == (0.3, 50, synthetic_rec.label_width)
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]




def evaluate_detections(evaluate, argv: list[str], scored: list, capsys) -> tuple[list[str], list]:
    """evaluate.py's printed lines and the images it scored (see :func:`scored`)."""
    scored.clear()
    capsys.readouterr()
    evaluate.main(argv)
    return capsys.readouterr().out.strip().splitlines(), list(scored)


@pytest.mark.slow
def test_evaluate_and_demo_need_only_prefix_and_epoch(trained_toy, tmp_path, capsys, scored):
    """The checkpoint's own settings, not the scripts' defaults (vgg16_reduced, 300 px, 20 VOC classes)."""
    evaluate, demo = load_script("evaluate"), load_script("demo")
    common = ["--prefix", trained_toy.checkpoint, "--epoch", "2", "--rec-path", trained_toy.val_rec]
    table, detections = evaluate_detections(evaluate, common, scored, capsys)
    assert [line.split()[0] for line in table[2:-1]] == trained_toy.classes and table[-1].startswith("mAP = ")
    # with every flag spelled out, the same detections and numbers
    spelled_out = ["--network", "toy", "--data-shape", "128", "--num-class", "3", "--class-names",
                   trained_toy.names_file, "--nms", "0.45", "--label-width", str(trained_toy.rec.label_width)]
    flagged_table, flagged = evaluate_detections(evaluate, common + spelled_out, scored, capsys)
    assert_same_detections(detections, flagged)
    assert flagged_table == table
    # and a flag that differs from the run config shows in the detections
    _, other_nms = evaluate_detections(evaluate, common + ["--nms", "0.3"], scored, capsys)
    assert sum(len(dets) for dets, _ in other_nms) < sum(len(dets) for dets, _ in detections)
    image = trained_toy.rec.synth.image_path(trained_toy.rec.synth.split("val")[0])
    assert demo.main(["--prefix", trained_toy.checkpoint, "--epoch", "2", "--images", image, "--thresh", "0.01",
                      "--cpu"]) == 0
    assert f"{image}:" in capsys.readouterr().out


@pytest.mark.slow
def test_checkpoint_without_run_config_works_with_explicit_flags(trained_toy, tmp_path, capsys, scored):
    """Checkpoints of the original example have no JSON: the flags say everything, as before."""
    evaluate = load_script("evaluate")
    for name in os.listdir(os.path.dirname(trained_toy.checkpoint)):
        if name.startswith(os.path.basename(trained_toy.checkpoint)) and not name.endswith(".json"):
            shutil.copy(os.path.join(os.path.dirname(trained_toy.checkpoint), name), tmp_path / name)
    prefix = str(tmp_path / os.path.basename(trained_toy.checkpoint))
    assert load_run_config(prefix) is None
    flags = ["--epoch", "2", "--rec-path", trained_toy.val_rec, "--network", "toy", "--data-shape", "128",
             "--num-class", "3", "--class-names", trained_toy.names_file, "--nms", "0.45", "--label-width",
             str(trained_toy.rec.label_width)]
    with_flags, flagged = evaluate_detections(evaluate, ["--prefix", prefix] + flags, scored, capsys)
    with_config, configured = evaluate_detections(evaluate, ["--prefix", trained_toy.checkpoint] + flags, scored,
                                                  capsys)
    assert_same_detections(configured, flagged)
    assert with_config == with_flags
    # without them, the defaults (vgg16_reduced) do not fit: one line naming the file
    with pytest.raises(UserError, match="ssd_toy_128-0002.params: has no parameter"):
        evaluate.main(["--prefix", prefix, "--epoch", "2", "--rec-path", trained_toy.val_rec])


@pytest.mark.slow
@pytest.mark.parametrize("flags, message", [
    (["--num-class", "4"], "--num-class 4 disagrees with the checkpoint: it was trained for 3 classes"),
    (["--class-names", "a,b"], "--class-names lists 2 names; the checkpoint was trained for 3 classes"),
    (["--network", "vgg16_reduced"], "--network vgg16_reduced disagrees with .*ssd_toy_128-ssd.json: the run "
                                     "trained toy"),
    (["--rcnn-nms-thresh", "0.5"], "--rcnn-nms-thresh: a Faster R-CNN flag; --network toy is an SSD network"),
    (["--deploy", "--nms", "0.3"], "--nms: the --deploy graph has its NMS settings built in"),
])
def test_flags_that_contradict_the_checkpoint(trained_toy, flags, message):
    evaluate = load_script("evaluate")
    with pytest.raises(UserError, match=message):
        evaluate.main(["--prefix", trained_toy.checkpoint, "--epoch", "2", "--rec-path", trained_toy.val_rec]
                      + flags)


# --- --keep, progress, --seed ------------------------------------------------------------------------
@pytest.mark.slow
def test_keep_prunes_old_epochs_and_resume_auto_still_continues(synthetic_rec, tmp_path, no_augmentation):
    prefix = str(tmp_path / "ssd")
    run_toy(synthetic_rec, prefix, 4, keep=2, val_path=synthetic_rec.val_rec)
    assert checkpoint.saved_epochs(prefix) == [3, 4]
    assert sorted(p for p in os.listdir(tmp_path) if p.endswith(".states")) == ["ssd-0003.states", "ssd-0004.states"]
    assert os.path.isfile(checkpoint.params_path(prefix + "-best", 0))  # never pruned
    assert load_run_config(prefix + "-best").prefix == prefix + "-best"  # usable with --prefix alone
    result = run_toy(synthetic_rec, prefix, 5, keep=2, resume="auto")
    assert result["begin_epoch"] == 4 and checkpoint.saved_epochs(prefix) == [4, 5]
    assert checkpoint.prune_checkpoints(prefix, 0) == []  # 0 keeps everything


def test_first_progress_line_times_the_batch_from_its_start(monkeypatch):
    clock = iter([100.0, 102.0, 103.0, 104.0])
    monkeypatch.setattr("train.progress.time.time", lambda: next(clock))
    lines = []
    logger = types.SimpleNamespace(info=lambda fmt, *args: lines.append(fmt % args))
    progress = ProgressLogger(batch_size=8, frequent=1, batches_per_epoch=10, begin_epoch=0, end_epoch=1,
                              logger=logger)
    param = types.SimpleNamespace(epoch=0, nbatch=0, eval_metric=None, locals={})
    progress.batch_begin()       # t = 100
    progress(param)              # t = 102: 8 images in 2 s
    assert "Speed: 4.00 samples/sec" in lines[-1]
    progress.batch_begin()       # t = 103
    progress(types.SimpleNamespace(epoch=0, nbatch=1, eval_metric=None, locals={}))  # t = 104
    assert "Speed: 4.00 samples/sec" in lines[-1]  # 8 images since the last line, 2 s ago


@pytest.mark.slow
def test_seed_reaches_the_shuffle_and_augmentation(synthetic_rec, tmp_path):
    """From the same weights (no random init), the data order and augmentation alone follow --seed."""
    base = str(tmp_path / "base" / "ssd")
    run_toy(synthetic_rec, base, 1, augment="none")
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        prefix = str(tmp_path / name / "ssd")
        run_toy(synthetic_rec, prefix, 1, pretrained=base, pretrained_epoch=1, seed=seed, lr=0.05)
        runs[name] = checkpoint_weights(prefix, 1)
    assert all(np.array_equal(runs["a"][k], runs["b"][k]) for k in runs["a"])
    assert max(float(np.abs(runs["a"][k] - runs["c"][k]).max()) for k in runs["a"]) > 1e-4
