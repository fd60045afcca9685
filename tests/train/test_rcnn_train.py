"""Faster R-CNN through train.py, evaluate.py and demo.py (train/train_rcnn.py, evaluate/evaluate_rcnn.py).

One small run is trained once per module (``trained_rcnn``: faster_rcnn_small
from scratch on 32 images of 96-128 px for 6 epochs, validated after epochs 4 and 6) and
shared by the learning, resume, skipped-image, evaluate and demo tests. Its data are plain
colour-coded shapes (``shapes_rec``): the synthetic VOC set's textured scenes
need thousands of iterations before the R-CNN head learns, these about two hundred.
Bad input needs no training: it fails before the first batch. Several devices are checked on one
step from fixed weights against each device's step alone.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import types

import cv2
import mxnet as mx
import numpy as np
import pytest
from helpers import checkpoint_weights, flag_list, history, load_script, record_returns, script_command, write_rec

from config.errors import UserError
from config.run_config import load_run_config, run_config_path, save_run_config
from config.train_config import RCNNConfig
from dataset.rcnn_loader import AnchorLoader, feat_shape_from_symbol
from evaluate import checkpoint
from evaluate.evaluate_rcnn import inference_config, score_detections
from evaluate.rcnn_detect import detect_rec
from symbol.rcnn_factory import get_rcnn_test, get_rcnn_train, make_config, rcnn_initializer
from train.train_rcnn import DATA_NAMES, LABEL_NAMES, RCNNFamily

NETWORK = "faster_rcnn_small"
EPOCHS = 6




train_script, evaluate_script, demo_script = (load_script(name) for name in ("train", "evaluate", "demo"))


CLASSES = ("box", "disk")


def draw_shapes(rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """A 96-128 px grey-noise BGR image with 1-2 filled shapes, and its objects [n, 6] as the .rec holds them.

    Class 0 is a red rectangle, class 1 a blue ellipse, each 30-60% of the image side.
    """
    height, width = rng.randint(96, 129, size=2)
    image = rng.randint(60, 100, size=(height, width, 3)).astype(np.uint8)
    objects = []
    for _ in range(rng.randint(1, 3)):
        cls = rng.randint(2)
        box_w, box_h = (rng.uniform(0.3, 0.6, size=2) * [width, height]).astype(int)
        x1, y1 = rng.randint(0, width - box_w), rng.randint(0, height - box_h)
        if cls == 0:
            cv2.rectangle(image, (x1, y1), (x1 + box_w - 1, y1 + box_h - 1), (40, 40, 220), -1)
        else:
            cv2.ellipse(image, (x1 + box_w // 2, y1 + box_h // 2), (box_w // 2, box_h // 2), 0, 0, 360,
                        (220, 120, 40), -1)
        objects.append([cls, x1 / width, y1 / height, (x1 + box_w) / width, (y1 + box_h) / height, 0])
    return image, np.array(objects)


@pytest.fixture(scope="module")
def shapes_rec(tmp_path_factory) -> types.SimpleNamespace:
    """32 train / 32 val images of :func:`draw_shapes`; ``val_images`` are the val images also as PNG files."""
    out = tmp_path_factory.mktemp("rcnn_data")
    rng = np.random.RandomState(0)
    train = [draw_shapes(rng) for _ in range(32)]
    val = [draw_shapes(rng) for _ in range(32)]
    val_images = []
    for index, (image, _) in enumerate(val):
        val_images.append(str(out / f"val{index}.png"))
        cv2.imwrite(val_images[-1], image)
    names_file = out / "shapes.names"
    names_file.write_text("\n".join(CLASSES) + "\n")
    train_rec, val_rec = (write_rec(str(out / name), samples, img_fmt=".png")
                          for name, samples in (("train", train), ("val", val)))
    return types.SimpleNamespace(train_rec=train_rec, val_rec=val_rec, val=val, val_images=val_images,
                                 names_file=str(names_file))


def rcnn_args(rec, prefix: str, **overrides) -> list[str]:
    """train.py flags of a fast small run: 112-160 px images, 32-128 px anchors, few proposals, validation
    after every fourth epoch and after the last (a validation costs about as much as a training epoch)."""
    flags = {"--network": NETWORK, "--train-path": rec.train_rec, "--val-path": rec.val_rec,
             "--num-class": "2", "--class-names": rec.names_file, "--gpus": "", "--prefix": prefix,
             "--pretrained": "", "--epochs": str(EPOCHS), "--lr": "0.02", "--lr-decay-epoch": "5",
             "--log-interval": "1000", "--log": "", "--seed": "0", "--img-short-side": "112",
             "--img-long-side": "160", "--rpn-anchor-scales": "(2,4,8)", "--rpn-pre-nms-topk": "1000",
             "--rpn-post-nms-topk": "200", "--rcnn-batch-rois": "64", "--val-interval": "4"}
    flags.update(overrides)
    return flag_list(flags)


@pytest.fixture(scope="module")
def trained_rcnn(shapes_rec, tmp_path_factory) -> types.SimpleNamespace:
    """``EPOCHS`` (6) epochs of faster_rcnn_small through train.py on the 32 training images (192 steps),
    validated after epochs 4 and 6 (``--val-interval 4``). ``prefix`` is the --prefix given
    (``<dir>/rcnn``), ``checkpoint`` the files' prefix (``<dir>/rcnn_faster_rcnn_small``)."""
    model_dir = tmp_path_factory.mktemp("rcnn_model")
    prefix = str(model_dir / "rcnn")
    train_script.main(rcnn_args(shapes_rec, prefix))
    return types.SimpleNamespace(prefix=prefix, checkpoint=f"{prefix}_{NETWORK}", dir=model_dir, rec=shapes_rec)


def untrained_map(run) -> float:
    """Validation mAP of the run's test graph with freshly initialised weights: the chance level."""
    cfg = inference_config(load_run_config(run.checkpoint))
    module = mx.mod.Module(get_rcnn_test(NETWORK, 2, cfg), data_names=["data", "im_info"], label_names=None)
    module.bind([("data", (1, 3, cfg.img_long_side, cfg.img_long_side)), ("im_info", (1, 3))], for_training=False)
    mx.random.seed(0)
    module.init_params(rcnn_initializer())
    return score_detections(*detect_rec(module, run.rec.val_rec, cfg, 2), list(CLASSES))["mAP"]


# --- training ------------------------------------------------------------------------------------
@pytest.mark.slow
def test_training_learns_and_keeps_the_best(trained_rcnn):
    rows = history(trained_rcnn.checkpoint)
    assert [int(row["epoch"]) for row in rows] == list(range(1, EPOCHS + 1))
    assert [float(row["lr"]) for row in rows] == pytest.approx([0.02] * 5 + [0.002])
    first, last = rows[0], rows[-1]
    for loss in ("train_RPNLogLoss", "train_RCNNLogLoss"):
        assert float(last[loss]) < 0.8 * float(first[loss]), loss
    # --val-interval 4: validated after epoch 4 and the last, the other rows have no mAP
    assert [int(row["epoch"]) for row in rows if row["val_mAP"]] == [4, EPOCHS]
    best = max(float(row["val_mAP"]) for row in rows if row["val_mAP"])
    chance = untrained_map(trained_rcnn)
    assert chance < 0.1
    assert best > 0.3 and best > 3 * chance
    assert checkpoint.best_score(trained_rcnn.checkpoint) == pytest.approx(best, abs=1e-6)
    # --keep 5 (the default): the newest five epochs, each with its optimizer state; the best stays
    assert checkpoint.saved_epochs(trained_rcnn.checkpoint) == list(range(EPOCHS - 4, EPOCHS + 1))
    assert all(os.path.isfile(checkpoint.states_path(trained_rcnn.checkpoint, e)) for e in range(2, EPOCHS + 1))
    assert not os.path.exists(checkpoint.states_path(trained_rcnn.checkpoint, 1))


@pytest.mark.slow
def test_run_config_records_the_flags(trained_rcnn):
    cfg = load_run_config(trained_rcnn.checkpoint)
    assert cfg.num_classes == 2 and cfg.class_names == list(CLASSES)
    assert (cfg.network, cfg.img_short_side, cfg.img_long_side) == (NETWORK, 112, 160)
    assert cfg.rpn_anchor_scales == (2, 4, 8) and cfg.rcnn_batch_rois == 64 and cfg.rpn_post_nms_topk == 200
    # the rest are faster_rcnn_small's defaults
    assert cfg.img_pixel_stds == make_config(NETWORK).img_pixel_stds and cfg.rcnn_pooled_size == (7, 7)
    assert (cfg.end_epoch, cfg.lr, cfg.lr_steps, cfg.seed, cfg.val_interval) == (EPOCHS, 0.02, "5", 0, 4)
    assert cfg.prefix == trained_rcnn.checkpoint


def test_run_config_round_trip(tmp_path):
    cfg = make_config("faster_rcnn_vgg16", rpn_anchor_scales=(4, 8), net_fixed_params=(), lr=0.5, num_classes=5,
                      class_names=["a", "b", "c", "d", "e"], prefix=str(tmp_path / "m"))
    path = save_run_config(cfg)
    assert path == run_config_path(str(tmp_path / "m"), "rcnn") and not [p for p in os.listdir(tmp_path) if "tmp" in p]
    assert load_run_config(str(tmp_path / "m")) == cfg
    with open(path, "w") as f:
        f.write("{broken")
    with pytest.raises(UserError, match=r"m-rcnn.json: not a run configuration of this toolkit"):
        load_run_config(str(tmp_path / "m"))


@pytest.mark.slow
def test_resume_auto_continues_with_the_saved_momentum(trained_rcnn, tmp_path, caplog):
    shutil.copytree(trained_rcnn.dir, tmp_path / "run")
    prefix = str(tmp_path / "run" / "rcnn")
    caplog.set_level(logging.INFO)
    train_script.main(rcnn_args(trained_rcnn.rec, prefix, **{"--resume": "auto", "--epochs": str(EPOCHS + 1),
                                                             "--val-path": ""}))
    messages = [record.getMessage() for record in caplog.records]
    assert f"Resume training with (cpu(0)) from epoch {EPOCHS}" in messages
    assert f"Restored optimizer state from {prefix}_{NETWORK}-{EPOCHS:04d}.states" in messages
    files = f"{prefix}_{NETWORK}"
    assert checkpoint.saved_epochs(files) == list(range(EPOCHS - 3, EPOCHS + 2))
    rows = history(files)
    assert [int(row["epoch"]) for row in rows] == list(range(1, EPOCHS + 2))
    assert rows[:EPOCHS] == history(trained_rcnn.checkpoint)
    assert float(rows[-1]["lr"]) == pytest.approx(0.002)  # the step at epoch 5 is applied on resume
    before = checkpoint.load_checkpoint(trained_rcnn.checkpoint, EPOCHS)[1]["cls_score_weight"].asnumpy()
    after = checkpoint.load_checkpoint(files, EPOCHS + 1)[1]["cls_score_weight"].asnumpy()
    assert not np.array_equal(before, after)


@pytest.mark.slow
def test_pretrained_weights_file_with_missing_and_extra_names_and_frozen_layers(trained_rcnn, tmp_path, caplog):
    """The original's ImageNet start: a .params file with the backbone only (plus a classifier the
    detector lacks); the rest is initialised, the --net-fixed-params layers stay as loaded."""
    _, args, _ = checkpoint.load_checkpoint(trained_rcnn.checkpoint, EPOCHS)
    backbone = {f"arg:{name}": value for name, value in args.items() if name.startswith("conv")}
    weights_file = str(tmp_path / "backbone-0000.params")
    mx.nd.save(weights_file, {**backbone, "arg:fc8_weight": mx.nd.zeros((10, 4))})
    caplog.set_level(logging.INFO)
    prefix = str(tmp_path / "rcnn")
    train_script.main(rcnn_args(trained_rcnn.rec, prefix, **{
        "--pretrained": weights_file, "--net-fixed-params": '["conv1"]', "--val-path": "", "--epochs": "1"}))
    messages = [record.getMessage() for record in caplog.records]
    assert "Fixed parameters: [conv1_1_weight,conv1_1_bias]" in messages
    _, tuned, _ = checkpoint.load_checkpoint(f"{prefix}_{NETWORK}", 1)
    for name in ("conv1_1_weight", "conv1_1_bias"):
        np.testing.assert_array_equal(tuned[name].asnumpy(), args[name].asnumpy())
    assert not np.array_equal(tuned["conv2_1_weight"].asnumpy(), args["conv2_1_weight"].asnumpy())
    assert "fc8_weight" not in tuned and set(tuned) == set(args)


@pytest.mark.slow
def test_images_without_objects_are_skipped_and_counted(trained_rcnn, tmp_path, caplog, capsys, monkeypatch):
    """Training skips an image without objects; validation scores it like any other (its detections are
    false positives). From the trained model, so that the validation mAP measures something."""
    import train.train_rcnn as train_rcnn

    scored = []
    score = train_rcnn.score_detections

    def recording_score(detections, labels, *args, **kwargs):
        result = score(detections, labels, *args, **kwargs)
        scored.append((len(detections), [len(objects) for objects in labels], result["mAP"]))
        return result

    monkeypatch.setattr(train_rcnn, "score_detections", recording_score)
    (image0, objects0), (image1, _), (image2, objects2) = trained_rcnn.rec.val[:3]
    train_rec = write_rec(str(tmp_path / "gaps"), [(image0, objects0), (image1, np.zeros((0, 6))), (image2, objects2)],
                          img_fmt=".png")
    caplog.set_level(logging.INFO)
    prefix = str(tmp_path / "rcnn")
    train_script.main(rcnn_args(trained_rcnn.rec, prefix, **{
        "--train-path": train_rec, "--val-path": train_rec, "--epochs": "1", "--lr": "0.001",
        "--pretrained": trained_rcnn.checkpoint, "--epoch": str(EPOCHS)}))
    messages = [record.getMessage() for record in caplog.records]
    assert "Skipped 1 of 3 training images without objects" in messages
    files = f"{prefix}_{NETWORK}"
    assert checkpoint.saved_epochs(files) == [1]
    # validation saw the three images, the one without objects included, and logged their mAP
    assert [(images, counts) for images, counts, _ in scored] == [(3, [len(objects0), 0, len(objects2)])]
    logged = float(history(files)[0]["val_mAP"])
    assert logged == pytest.approx(scored[0][2], abs=1e-6) and logged > 0.3
    # evaluate.py scores the saved checkpoint on the same record to the same number
    capsys.readouterr()
    evaluate_script.main(["--prefix", files, "--epoch", "1", "--rec-path", train_rec, "--gpus", ""])
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"mAP = {logged:.4f}"


def fresh_roi_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ``proposal_target`` operator draws its ROIs from a stream of its own, ``RandomState(0)``.

    The op's seeded stream is one per process: two devices would take turns on it in whatever order
    the engine runs them. With a stream per operator each device samples its image's ROIs exactly as
    one device alone does.
    """
    import symbol.proposal_target as proposal_target

    monkeypatch.setattr(proposal_target, "_random_stream", lambda seed: np.random.RandomState(0))


def start_weights(cfg: RCNNConfig, path: str) -> dict[str, mx.nd.NDArray]:
    """Every parameter of ``cfg``'s training graph, initialised once (seed 0) and saved as ``path``."""
    symbol = get_rcnn_train(cfg.network, cfg.num_classes, cfg)
    side, anchors = cfg.img_long_side, len(cfg.rpn_anchor_scales) * len(cfg.rpn_anchor_ratios)
    height, width = feat_shape_from_symbol(symbol)(side, side)
    module = mx.mod.Module(symbol, data_names=DATA_NAMES, label_names=LABEL_NAMES)
    module.bind([("data", (1, 3, side, side)), ("im_info", (1, 3)), ("gt_boxes", (1, 100, 5))],
                [("label", (1, anchors * height * width)), ("bbox_target", (1, 4 * anchors, height, width)),
                 ("bbox_weight", (1, 4 * anchors, height, width))], for_training=False)
    mx.random.seed(0)
    module.init_params(rcnn_initializer())
    args, _ = module.get_params()
    mx.nd.save(path, {f"arg:{name}": value for name, value in args.items()})
    return args


def one_device_step(cfg: RCNNConfig, weights: dict, batch: mx.io.DataBatch, lr: float) -> dict[str, np.ndarray]:
    """The weights after one step of one device on ``batch`` alone, with the optimizer settings train.py
    gives a single device."""
    fit = RCNNFamily(cfg, 1).fit_settings([mx.cpu()])
    module = mx.mod.Module(get_rcnn_train(cfg.network, cfg.num_classes, cfg), data_names=fit.data_names,
                           label_names=fit.label_names, context=mx.cpu())
    module.bind(batch.provide_data, batch.provide_label)
    module.init_params(arg_params=weights)
    module.init_optimizer(kvstore="local", optimizer="sgd", optimizer_params={
        "learning_rate": lr, "momentum": cfg.momentum, "wd": cfg.wd, "clip_gradient": fit.clip_gradient,
        "rescale_grad": fit.rescale_grad})
    module.forward_backward(batch)
    module.update()
    return {name: value.asnumpy() for name, value in module.get_params()[0].items()}


def image_of(batch: mx.io.DataBatch, index: int) -> mx.io.DataBatch:
    """Image ``index`` of a loader batch: the slice Module hands the ``index``-th device."""
    def cut(arrays: list, descs: list) -> tuple[list, list]:
        return ([mx.nd.array(array.asnumpy()[index:index + 1]) for array in arrays],
                [mx.io.DataDesc(desc.name, (1, *desc.shape[1:])) for desc in descs])

    (data, data_descs), (label, label_descs) = cut(batch.data, batch.provide_data), cut(batch.label,
                                                                                         batch.provide_label)
    return mx.io.DataBatch(data, label, provide_data=data_descs, provide_label=label_descs)


@pytest.mark.slow
def test_two_cpu_contexts_step_is_the_mean_of_the_per_image_steps(shapes_rec, tmp_path, caplog, monkeypatch):
    """README, "Several devices": one step on N contexts is the mean of each device's step on its slice.

    ``train.py --cpus 2`` makes one step on one batch of two images from weights it loads (nothing is
    initialised at random). The very batch its loader gave (flips and RPN targets included) is then cut
    into its two images, each stepped by one device alone; the two-device weights are their mean.
    :func:`fresh_roi_streams` gives both sides the same ROI samples.
    """
    fresh_roi_streams(monkeypatch)
    batches = record_returns(monkeypatch, AnchorLoader, "load_batch")
    train_rec = write_rec(str(tmp_path / "two"), shapes_rec.val[:2], img_fmt=".png")
    cfg = make_config(NETWORK, num_classes=2, img_short_side=112, img_long_side=160, rpn_anchor_scales=(2, 4, 8))
    weights = start_weights(cfg, str(tmp_path / "start-0000.params"))
    caplog.set_level(logging.INFO)
    prefix = str(tmp_path / "rcnn")
    train_script.main(rcnn_args(shapes_rec, prefix, **{
        "--gpus": None, "--cpus": "2", "--train-path": train_rec, "--val-path": "", "--epochs": "1",
        "--log-interval": "1", "--pretrained": str(tmp_path / "start-0000.params"), "--net-fixed-params": "[]"}))
    files = f"{prefix}_{NETWORK}"
    messages = [record.getMessage() for record in caplog.records]
    assert any(m.startswith("Epoch[0] Batch [1/1]") for m in messages)  # 2 images, one on each device
    assert len(batches) == 1 and batches[0].data[0].shape[0] == 2
    run = load_run_config(files)
    lr = float(history(files)[0]["lr"])
    two = checkpoint_weights(files, 1)
    alone = [one_device_step(run, weights, image_of(batches[0], index), lr) for index in (0, 1)]
    mean = {name: (alone[0][name] + alone[1][name]) / 2 for name in two}
    start = {name: value.asnumpy() for name, value in weights.items()}
    step = max(float(np.abs(two[name] - start[name]).max()) for name in two)
    apart = max(float(np.abs(alone[0][name] - alone[1][name]).max()) for name in two)
    error = max(float(np.abs(two[name] - mean[name]).max()) for name in two)
    print(f"step {step:.3g}, per-image steps apart {apart:.3g}, two devices vs their mean {error:.3g}")
    assert step > 1e-3 and apart > 0.1 * step  # the two images pull the weights apart: a real comparison
    assert error < 1e-4 * step


# --- evaluate.py and demo.py -----------------------------------------------------------------------
@pytest.mark.slow
def test_evaluate_prints_the_table_and_the_validation_map(trained_rcnn, capsys):
    capsys.readouterr()
    evaluate_script.main(["--network", NETWORK, "--prefix", trained_rcnn.prefix + "_", "--epoch", str(EPOCHS),
                          "--rec-path", trained_rcnn.rec.val_rec, "--num-class", "2",
                          "--class-names", trained_rcnn.rec.names_file, "--gpus", ""])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["class", "AP"] and [line.split()[0] for line in lines[2:4]] == list(CLASSES)
    # the same test graph, weights and images as the validation after the last epoch: the same mAP
    val_map = float(history(trained_rcnn.checkpoint)[-1]["val_mAP"])
    assert lines[-1] == f"mAP = {val_map:.4f}"
    class_aps = [float(line.split()[1]) for line in lines[2:4]]
    assert float(lines[-1].split()[-1]) == pytest.approx(np.mean(class_aps), abs=1e-4)


@pytest.mark.slow
def test_evaluate_analyze_counts_every_object_of_the_record(trained_rcnn, tmp_path, capsys):
    """--analyze on Faster R-CNN: the confusion matrix's ground-truth rows hold every non-difficult object once,
    and AP by size is measured in pixels of the resized images."""
    import csv

    from evaluate.anchor_fit import read_record_boxes

    out = tmp_path / "analysis"
    evaluate_script.main(["--prefix", trained_rcnn.checkpoint, "--epoch", str(EPOCHS), "--rec-path",
                          trained_rcnn.rec.val_rec, "--gpus", "", "--analyze", str(out)])
    assert "error analysis: " in capsys.readouterr().out
    with open(out / "confusion.csv") as f:
        rows = list(csv.reader(f))[1:-1]  # the class rows; the last is background
    _, classes, difficult, _ = read_record_boxes(trained_rcnn.rec.val_rec)
    expected = np.bincount(classes[~difficult], minlength=len(CLASSES)).tolist()
    assert [sum(int(v) for v in row[1:]) for row in rows] == expected
    with open(out / "ap_by_size.csv") as f:
        sized = list(csv.DictReader(f))
    assert sized and os.path.getsize(out / "worst_images.png") > 0


@pytest.mark.slow
def test_demo_draws_rcnn_detections(trained_rcnn, tmp_path, capsys):
    image_path = trained_rcnn.rec.val_images[0]
    capsys.readouterr()
    status = demo_script.main(["--network", NETWORK, "--prefix", trained_rcnn.checkpoint, "--epoch", str(EPOCHS),
                               "--class-names", trained_rcnn.rec.names_file, "--images", image_path, "--cpu",
                               "--thresh", "0", "--max-per-image", "5", "--out-dir", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    assert status == 0 and f"{image_path}: 5 detections" in out
    original = cv2.imread(image_path)
    drawn = cv2.imread(str(tmp_path / "demo" / os.path.basename(image_path)))
    assert drawn.shape == original.shape
    assert np.mean(np.any(np.abs(drawn.astype(int) - original) > 40, axis=2)) > 0.01  # boxes were drawn


# --- bad input: one line, before any training ------------------------------------------------------
@pytest.mark.parametrize("overrides, message", [
    ({"--network": "faster_rcnn_nope"}, "--network faster_rcnn_nope: unknown network; known: .*faster_rcnn_small"),
    ({"--train-path": "/nonexistent/train.rec"}, "--train-path /nonexistent/train.rec: file not found"),
    ({"--val-path": "/nonexistent/val.rec"}, "--val-path /nonexistent/val.rec: file not found"),
    ({"--rcnn-num-classes": "4"}, r"--rcnn-num-classes 4 \(background included\) disagrees with --num-class 2"),
    ({"--rpn-anchor-scales": "(8,16"}, r"--rpn-anchor-scales '\(8,16': expected a tuple of numbers, "
                                       r"such as '\(8, 16, 32\)'"),
    ({"--img-pixel-means": "(1, 2)"}, r"--img-pixel-means '\(1, 2\)': expected a tuple of 3 numbers"),
    ({"--rcnn-pooled-size": "(7.5, 7)"}, r"--rcnn-pooled-size '\(7.5, 7\)': expected a tuple of 2 ints"),
    ({"--batch-size": "4"}, "--batch-size 4: Faster R-CNN trains --rcnn-batch-size 1 image"),
    ({"--pretrained": "/nonexistent/vgg16-0000.params"}, "--pretrained /nonexistent/vgg16-0000.params: file not"),
    ({"--network": "toy"}, "--img-short-side: a Faster R-CNN flag; --network toy is not a faster_rcnn_"),
])
def test_train_py_bad_input(shapes_rec, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        train_script.main(rcnn_args(shapes_rec, str(tmp_path / "rcnn"), **overrides))


@pytest.mark.slow
def test_train_py_class_count_disagreeing_with_checkpoint(trained_rcnn, tmp_path):
    shutil.copytree(trained_rcnn.dir, tmp_path / "run")
    overrides = {"--num-class": None, "--rcnn-num-classes": "4", "--class-names": "a,b,c", "--resume": "2",
                 "--epochs": "3"}
    with pytest.raises(UserError, match=f"--num-class 3 disagrees with .*rcnn_{NETWORK}-0002.params: "
                                        r"its layer cls_score_weight has shape \(3, 256\)"):
        train_script.main(rcnn_args(trained_rcnn.rec, str(tmp_path / "run" / "rcnn"), **overrides))


@pytest.mark.slow
def test_evaluate_and_demo_bad_input(trained_rcnn, tmp_path):
    common = ["--network", NETWORK, "--epoch", str(EPOCHS), "--class-names", trained_rcnn.rec.names_file]
    with pytest.raises(UserError, match=f"{tmp_path}/nothing_{NETWORK}-rcnn.json: not found"):
        evaluate_script.main(common + ["--num-class", "2", "--prefix", str(tmp_path / "nothing_"),
                                       "--rec-path", trained_rcnn.rec.val_rec, "--gpus", ""])
    with pytest.raises(UserError, match="--num-class 3 disagrees with the checkpoint: it was trained for 2 classes"):
        evaluate_script.main(["--network", NETWORK, "--epoch", str(EPOCHS), "--class-names", "a,b,c",
                              "--num-class", "3", "--prefix", trained_rcnn.checkpoint,
                              "--rec-path", trained_rcnn.rec.val_rec, "--gpus", ""])
    with pytest.raises(UserError, match=f"--network faster_rcnn_vgg16 disagrees with .*-rcnn.json: the run trained "
                                        f"{NETWORK}"):
        demo_script.main(["--network", "faster_rcnn_vgg16", "--epoch", str(EPOCHS), "--class-names",
                          trained_rcnn.rec.names_file, "--prefix", trained_rcnn.checkpoint, "--cpu",
                          "--images", trained_rcnn.rec.val_images[0]])


@pytest.mark.slow
def test_bad_tuple_is_one_line_from_the_command_line(shapes_rec, tmp_path):
    proc = subprocess.run([*script_command("train.py"),
                           *rcnn_args(shapes_rec, str(tmp_path / "rcnn"), **{"--rcnn-bbox-stds": "[0.1, 'x']"})],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "error: --rcnn-bbox-stds \"[0.1, 'x']\": expected a tuple of 4 numbers, such as '(0.1, 0.1, 0.2, 0.2)'"]


# --- flag resolution -----------------------------------------------------------------------------
def resolved(network: str, *argv: str):
    args = train_script.parse_known_given(train_script.build_parser(), ["--network", network, *argv])
    defaults = train_script.RCNN if network.startswith("faster_rcnn") else train_script.SSD
    train_script.resolve_family_defaults(args, defaults)
    return args


def test_family_defaults_and_original_flag_names():
    ssd, rcnn = resolved("toy"), resolved(NETWORK)
    family = ("lr", "lr_steps", "end_epoch", "frequent", "batch_size", "num_class")
    assert [getattr(ssd, name) for name in family] == [0.002, "80, 160", 240, 20, 32, 20]
    assert [getattr(rcnn, name) for name in family] == [0.001, "7", 10, 100, None, 20]
    assert ssd.prefix.endswith(os.path.join("model", "ssd")) and rcnn.prefix.endswith(os.path.join("model", "rcnn"))
    aliased = resolved(NETWORK, "--epochs", "3", "--lr-decay-epoch", "2", "--start-epoch", "1", "--log-interval",
                       "5", "--save-prefix", "m/x", "--rcnn-num-classes", "4")
    assert (aliased.end_epoch, aliased.lr_steps, aliased.begin_epoch, aliased.frequent, aliased.prefix) == (
        3, "2", 1, 5, "m/x")
    assert aliased.num_class == 3
    assert resolved(NETWORK, "--rcnn-num-classes", "4", "--num-class", "3").num_class == 3


def test_tuple_flags_parse_like_the_original():
    parse = train_script.parse_literal
    assert parse("--rpn-anchor-scales", "(8,16,32)", "numbers", RCNNConfig.rpn_anchor_scales) == (8, 16, 32)
    assert parse("--rpn-anchor-scales", "8", "numbers", ()) == (8,)
    assert parse("--img-pixel-means", "[1, 2.5, 3]", "3 numbers", ()) == (1, 2.5, 3)
    assert parse("--net-fixed-params", '["conv1","conv2"]', "names", ()) == ("conv1", "conv2")
    assert parse("--net-fixed-params", "[]", "names", ()) == ()
    with pytest.raises(UserError, match="expected a tuple of names"):
        parse("--net-fixed-params", "[conv1]", "names", ())
