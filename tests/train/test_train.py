"""Training with Module.fit: it learns, resumes exactly, splits across devices, freezes.

The mechanics tests run the toy SSD at 64x64 without augmentation (``VALIDATION``
for training too) so that two runs can be compared parameter by parameter.
"""
import functools
import os
import shutil
import subprocess
import types

import cv2
import mxnet as mx
import numpy as np
import pytest
from helpers import (
    checkpoint_weights,
    expected_labels,
    history,
    load_script,
    quickstart_like,
    script_command,
    tiny_synthetic,
    train_args,
    train_toy,
    write_rec,
)

from config.augmentation import VALIDATION
from config.errors import UserError
from dataset.iterator import DetRecordIter
from evaluate import checkpoint
from evaluate.eval_metric import VOC07MApMetric

# the toy at 64 on the shared set, as the mechanics tests vary it
run_toy = functools.partial(train_toy, data_shape=64, lr=0.05, lr_steps="2", batch_size=8, voc07_metric=True, seed=0)
load_params = functools.partial(checkpoint_weights, auxs=True)


def max_param_difference(a, b):
    """Largest difference over the learnable weights.

    BatchNorm moving statistics are left out: mxnet 1.9 updates them outside
    its dependency engine, so the values a checkpoint catches vary from run to
    run (measured here), while the weights, which never read them in
    training, are bit-identical between identical runs.
    """
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k] - b[k]).max()) for k in a if "moving_" not in k)


@pytest.fixture(scope="module")
def learned_toy(tmp_path_factory) -> types.SimpleNamespace:
    """The toy SSD at 128 trained by :func:`helpers.quickstart_like` (6 epochs, validated after each),
    shared with the deployment tests."""
    return quickstart_like(str(tmp_path_factory.getbasetemp()))


@pytest.mark.slow
def test_toy_ssd_learns(learned_toy):
    """The loss falls and the best mAP beats chance (measured 2026-12-05 on EPYC-AVX512: loss ratio 0.36,
    mAP 0.009 after the warm-up epoch, best 0.138; under DNNL_MAX_CPU_ISA=AVX2: 0.36, 0.010, best 0.134)."""
    prefix, epochs = learned_toy.checkpoint, learned_toy.epoch
    rows = history(prefix)
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    first_loss, last_loss = float(rows[0]["train_CrossEntropy"]), float(rows[-1]["train_CrossEntropy"])
    assert last_loss < 0.5 * first_loss
    chance = float(rows[0]["val_mAP"])  # after the warm-up epoch the detector is close to random
    assert chance < 0.1
    best = checkpoint.best_score(prefix)
    assert best > 0.08 and best > 5 * chance
    assert best == pytest.approx(max(float(r["val_mAP"]) for r in rows), abs=1e-6)
    assert os.path.isfile(prefix + "-curves.png")
    assert os.path.isfile(checkpoint.params_path(prefix + "-best", 0))

    # validation counted each of the 50 images once (the last batch of 16 holds 14 repeats): the
    # mAP logged for the last epoch is evaluate.py's on that checkpoint, at another batch size too
    from evaluate.evaluate_net import evaluate_net

    logged = float(rows[-1]["val_mAP"])
    scored = evaluate_net("toy", learned_toy.val_rec, len(learned_toy.classes), [123, 117, 104], 128, prefix, epochs,
                          batch_size=7, class_names=learned_toy.classes, voc07_metric=True, label_pad_width=350)
    assert scored["images"] == 50 and scored["mAP"] == pytest.approx(logged, abs=1e-6)
    # mxnet's own Module.score counts the repeats: the test would see the old behaviour
    module = mx.mod.Module(mx.sym.load(prefix + "-symbol.json"), label_names=("label",))
    val_iter = DetRecordIter(learned_toy.val_rec, learned_toy.batch_size, (3, 128, 128), label_pad_width=350,
                             **VALIDATION)
    module.bind(val_iter.provide_data, val_iter.provide_label, for_training=False)
    module.set_params(*checkpoint.load_checkpoint(prefix, epochs)[1:])
    padded = VOC07MApMetric(0.5, False, learned_toy.classes, pred_idx=3)
    mx.mod.Module.score(module, val_iter, padded)
    assert abs(padded.get()[1][-1] - logged) > 1e-4


@pytest.mark.slow
def test_resume_auto_continues_with_saved_lr_and_momentum(synthetic_rec, tmp_path, no_augmentation):
    straight = str(tmp_path / "a" / "ssd")
    run_toy(synthetic_rec, straight, 3)

    resumed = str(tmp_path / "b" / "ssd")
    run_toy(synthetic_rec, resumed, 2)  # "interrupted" after two epochs
    no_momentum = str(tmp_path / "c" / "ssd")
    shutil.copytree(tmp_path / "b", tmp_path / "c")
    os.remove(checkpoint.states_path(no_momentum, 2))

    result = run_toy(synthetic_rec, resumed, 3, resume="auto")
    assert result["begin_epoch"] == 2
    assert checkpoint.saved_epochs(resumed) == [1, 2, 3]
    # same epochs, the LR step at epoch 2 applied, the same momentum: the same weights
    assert max_param_difference(load_params(straight, 3), load_params(resumed, 3)) < 1e-5

    rows = history(resumed)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.05, 0.05, 0.005])

    # without the saved optimizer state the continuation differs: the test can see momentum
    run_toy(synthetic_rec, no_momentum, 3, resume="auto")
    assert max_param_difference(load_params(straight, 3), load_params(no_momentum, 3)) > 1e-4


def test_resume_auto_without_checkpoint_starts_from_scratch(synthetic_rec, tmp_path, no_augmentation):
    result = run_toy(synthetic_rec, str(tmp_path / "ssd"), 1, resume="auto")
    assert result["begin_epoch"] == 0
    assert checkpoint.saved_epochs(str(tmp_path / "ssd")) == [1]


def pack_images(synthetic_voc, path: str, images: list) -> str:
    """A .rec (``path``.rec/.idx) of ``images`` of ``synthetic_voc`` in this process, with their true labels."""
    return write_rec(path, [(cv2.imread(synthetic_voc.image_path(image)), expected_labels(image)) for image in images])


def _rec_of(synthetic_voc, path, repeats):
    """A .rec of the first two training images, ``repeats`` times over: [x, y, x, y, ...]."""
    return pack_images(synthetic_voc, path, synthetic_voc.split("train")[:2] * repeats)


@pytest.mark.slow
def test_two_cpu_contexts_average_their_slices(synthetic_voc, synthetic_rec, tmp_path, no_augmentation):
    """train.py's --cpus 2 through train_ssd: each device normalises its losses and BatchNorm by its own
    slice, and the step is the mean of the slices' steps (the rule tests/train/test_multi_device.py pins on
    differing slices). With the slices [x, y] | [x, y], that mean is one device's step on [x, y]."""
    rec = types.SimpleNamespace(**vars(synthetic_rec))
    rec.train_rec = _rec_of(synthetic_voc, str(tmp_path / "twice"), 2)
    two = str(tmp_path / "two" / "ssd")
    run_toy(rec, two, 1, batch_size=4, lr=0.1, ctx=[mx.cpu(0), mx.cpu(1)])
    rec.train_rec = _rec_of(synthetic_voc, str(tmp_path / "once"), 1)
    slice_step = str(tmp_path / "slice" / "ssd")
    run_toy(rec, slice_step, 1, batch_size=2, lr=0.1)
    assert max_param_difference(load_params(two, 1), load_params(slice_step, 1)) < 1e-5
    # and the update did something
    run_toy(rec, str(tmp_path / "zero" / "ssd"), 1, batch_size=2, lr=0.0)
    assert max_param_difference(load_params(two, 1), load_params(str(tmp_path / "zero" / "ssd"), 1)) > 1e-3


@pytest.mark.slow
def test_freeze_regex_keeps_matched_parameters_bit_identical(synthetic_rec, tmp_path, no_augmentation):
    base = str(tmp_path / "base" / "ssd")
    run_toy(synthetic_rec, base, 1)
    tuned = str(tmp_path / "tuned" / "ssd")
    run_toy(synthetic_rec, tuned, 2, pretrained=base, pretrained_epoch=1, freeze_pattern=r"^stage1_")
    before, after = load_params(base, 1), load_params(tuned, 2)
    frozen = [k for k in before if k.startswith("stage1_") and not k.endswith(("moving_mean", "moving_var"))]
    assert frozen and all(np.array_equal(before[k], after[k]) for k in frozen)
    trained = [k for k in before if k.startswith("stage2_conv")]
    assert all(not np.array_equal(before[k], after[k]) for k in trained)


# ---- train.py: bad input is one line, never a traceback ---------------------------------------------

def _train_main(args):
    return load_script("train").main(args)


def _common(rec, **flags):
    """train.py's arguments for one epoch at batch 8 without validation, train.py's default --freeze."""
    settings = dict(val_path="", end_epoch=1, batch_size=8, freeze=None, label_width=rec.label_width)
    return train_args(rec, flags.pop("prefix"), **{**settings, **flags})


@pytest.mark.parametrize("overrides, message", [
    ({"network": "nonet"}, "--network nonet: unknown network"),
    ({"data_shape": "8"}, "--data-shape: 8 does not fit network toy"),
    ({"train_path": "/nonexistent/train.rec"}, "--train-path /nonexistent/train.rec: file not found"),
    ({"val_path": "/nonexistent/val.rec"}, "--val-path /nonexistent/val.rec: file not found"),
    ({"num_class": "5"}, "--num-class 5 disagrees with --class-names"),
    ({"pretrained": "/nonexistent/model"}, "--pretrained /nonexistent/model --epoch 1"),
    ({"lr_steps": "a,b"}, "--lr-steps 'a,b'"),
])
def test_train_py_bad_input(synthetic_rec, tmp_path, overrides, message):
    args = _common(synthetic_rec, prefix=str(tmp_path / "ssd"), **overrides)
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        _train_main(args)


@pytest.mark.slow
def test_train_py_class_count_disagreeing_with_checkpoint(synthetic_rec, tmp_path):
    prefix = str(tmp_path / "ssd")
    _train_main(_common(synthetic_rec, prefix=prefix))
    assert os.path.isfile(prefix + "_toy_64-0001.params")
    names = ",".join(f"c{i}" for i in range(5))
    # resuming with another class count is a mistake (--finetune changes it on purpose: see test_finetune_*)
    args = _common(synthetic_rec, prefix=prefix, num_class="5", class_names=names, resume="1", end_epoch="2")
    with pytest.raises(UserError, match="--num-class 5 disagrees with .*ssd_toy_64-0001.params"):
        _train_main(args)
    args = _common(synthetic_rec, prefix=prefix + "x", num_class="5", class_names=names,
                   pretrained=prefix + "_toy_64", epoch="1", end_epoch="1")
    with pytest.raises(UserError, match="--num-class 5 disagrees with .*ssd_toy_64-0001.params"):
        _train_main(args)


@pytest.mark.slow
def test_train_py_gpus_on_cpu_build_is_one_line(synthetic_rec, tmp_path):
    from config.devices import mxnet_has_cuda

    if mxnet_has_cuda():
        pytest.skip("this mxnet has CUDA")
    args = _common(synthetic_rec, prefix=str(tmp_path / "ssd"), gpus="0", network="nonet")
    proc = subprocess.run(script_command("train.py") + args, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("error: --gpus 0: this mxnet build has no GPU support")
    assert "mxnet-cu112" in lines[0]


@pytest.mark.slow
def test_finetune_to_another_class_count(learned_toy, tmp_path_factory, tmp_path, no_augmentation, caplog):
    """example/ssd's finetune takes the 3-class model to 2 classes: the class layers are dropped
    ("Removed ...") and re-initialised, every other loaded layer but the predictions stays frozen.
    Three epochs at batch 8 on 64 images (24 steps), against the same three epochs at rate 0."""
    out = tmp_path_factory.mktemp("two")
    synth = tiny_synthetic(out, num_train=64, num_val=30, classes=2, seed=4, min_side=128, max_side=200,
                           min_size=0.25, max_size=0.6, max_objects=3)
    # packed in this process: tools/prepare_dataset.py would start im2rec twice
    train_rec, val_rec = (pack_images(synth, str(out / split), synth.split(split)) for split in ("train", "val"))
    trained, base = learned_toy.checkpoint, learned_toy.epoch
    loaded = load_params(trained, base)
    epochs = 3

    def finetune(folder: str, lr: float) -> tuple[str, dict]:
        prefix = str(tmp_path / folder / "ssd_toy_128")
        os.makedirs(os.path.dirname(prefix))
        for ext in ("-symbol.json", f"-{base:04d}.params"):
            shutil.copy(trained + ext, prefix + ext)
        result = train_toy(None, prefix, base + epochs, train_path=train_rec, num_classes=2,
                           class_names=list(synth.classes), label_width=350, data_shape=128,
                           batch_size=8, finetune=base, lr=lr, voc07_metric=True, val_path=val_rec, seed=2,
                           keep=0)
        return prefix, result

    caplog.set_level("INFO")
    prefix, result = finetune("tuned", 0.02)
    removed = sorted(r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("Removed "))
    assert removed and all("cls_pred" in name for name in removed)
    tuned = load_params(prefix, base + 1)
    assert all(tuned[name].shape != loaded[name].shape for name in removed)
    frozen = [k for k in loaded if "pred" not in k and "moving_" not in k]
    assert frozen and [k for k in frozen if not np.array_equal(tuned[k], loaded[k])] == []
    assert any(not np.array_equal(tuned[k], loaded[k]) for k in loaded if "loc_pred" in k)  # heads train
    # the new classes are learned: better than the same start untrained (lr 0)
    _, untrained = finetune("untrained", 0.0)
    assert result["best_map"] > 2 * untrained["best_map"] and result["best_map"] > untrained["best_map"] + 0.05
