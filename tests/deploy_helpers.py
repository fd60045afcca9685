"""Models and data shared by tests/test_quantize.py and tests/test_onnx_export.py.

Each builder works in a fixed folder under the test run's base temporary directory and returns at
once when that folder is complete, so the two test modules (each with its own fixtures) build a
model once per session.
"""
from __future__ import annotations

import os
import types

import numpy as np

QUICK_CLASSES = 3
QUICK_SHAPE = 128
QUICK_EPOCHS = 6
NUM_VAL = 50


def _done(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "DONE"))


def _mark_done(folder: str) -> None:
    with open(os.path.join(folder, "DONE"), "w") as f:
        f.write("ok\n")


def quickstart_like(base: str) -> types.SimpleNamespace:
    """The quick start's recipe, shrunk: 3-class synthetic shapes (20-60% of the side, at most 4 per
    image), 200 training and 50 validation images of 128-192 px, the toy SSD at 128 trained from
    scratch for 6 epochs (mirror only, lr 0.05 after a 1-epoch warm-up, batch 16, seed 7).

    Returns ``checkpoint`` (full prefix, with its run config), ``epoch``, ``val_rec``, ``train_rec``,
    ``val_images`` (the 50 validation JPEGs, annotation order), ``names_file``.
    """
    import mxnet as mx
    from data_helpers import pack, tiny_synthetic

    from config.train_config import SSDConfig
    from train.train_net import train_net

    folder = os.path.join(base, "quickstart_like")
    checkpoint = os.path.join(folder, f"ssd_toy_{QUICK_SHAPE}")
    if not _done(folder):
        os.makedirs(folder, exist_ok=True)
        synth = tiny_synthetic(os.path.join(folder, "data"), num_train=200, num_val=NUM_VAL, classes=QUICK_CLASSES,
                               seed=7, min_side=128, max_side=192, min_size=0.2, max_size=0.6, max_objects=4,
                               truncation=0.1)
        for split in ("train", "val"):
            pack(["--dataset", "pascal", "--year", "synth", "--set", split, "--root", synth.devkit,
                  "--target", os.path.join(folder, f"{split}.lst"), "--class-names", synth.names_file]
                 + (["--no-shuffle"] if split == "val" else []))
        train_net(
            net="toy", train_path=os.path.join(folder, "train.rec"), num_classes=QUICK_CLASSES, batch_size=16,
            data_shape=QUICK_SHAPE, mean_pixels=list(SSDConfig.mean_pixels),
            resume=-1, finetune=-1, pretrained="", epoch=0, prefix=checkpoint, ctx=[mx.cpu()],
            begin_epoch=0, end_epoch=QUICK_EPOCHS, frequent=1000, learning_rate=0.05, momentum=0.9,
            weight_decay=0.0005, lr_refactor_step="5", lr_refactor_ratio=0.1, num_example=200,
            class_names=list(synth.classes), seed=7, augment="flip", warmup_epochs=1,
            label_pad_width=2 + 6 * 4,
        )
        _mark_done(folder)
    return types.SimpleNamespace(
        checkpoint=checkpoint, epoch=QUICK_EPOCHS, val_rec=os.path.join(folder, "val.rec"),
        train_rec=os.path.join(folder, "train.rec"), val_images=val_images(os.path.join(folder, "val.lst"),
                                                                             os.path.join(folder, "data")),
        names_file=os.path.join(folder, "data", "synth.names"))


def val_images(lst: str, data_dir: str) -> list[str]:
    """The image paths of a packed split's ``.lst``, in its order."""
    from data_helpers import read_lst

    entries = read_lst(lst)
    devkit = os.path.join(data_dir, "VOCdevkit")
    return [os.path.join(devkit, entries[key][0]) for key in sorted(entries)]


def ssd300_random(base: str, num_classes: int = 20) -> types.SimpleNamespace:
    """SSD300 (vgg16_reduced at 300) with Xavier weights (seed 0) saved as a checkpoint with a run
    config, and 50 synthetic images (160-240 px, seed 3) packed as ``val.rec``."""
    import mxnet as mx
    from data_helpers import pack, tiny_synthetic

    from config.run_config import save_run_config
    from config.train_config import SSDConfig
    from evaluate.checkpoint import save_params
    from symbol.symbol_factory import get_symbol

    folder = os.path.join(base, "ssd300_random")
    checkpoint = os.path.join(folder, "ssd_vgg16_reduced_300")
    if not _done(folder):
        os.makedirs(folder, exist_ok=True)
        synth = tiny_synthetic(os.path.join(folder, "data"), num_train=0, num_val=NUM_VAL, classes=3, seed=3,
                               min_side=160, max_side=240)
        pack(["--dataset", "pascal", "--year", "synth", "--set", "val", "--root", synth.devkit,
              "--target", os.path.join(folder, "val.lst"), "--class-names", synth.names_file, "--no-shuffle"])
        symbol = get_symbol("vgg16_reduced", 300, num_classes=num_classes)
        module = mx.mod.Module(symbol, label_names=None)
        module.bind([("data", (1, 3, 300, 300))], for_training=False)
        mx.random.seed(0)
        np.random.seed(0)
        module.init_params(mx.init.Xavier(magnitude=2))
        args, auxs = module.get_params()
        save_params(checkpoint, 0, symbol, args, auxs)
        save_run_config(SSDConfig(network="vgg16_reduced", data_shape=300, num_classes=num_classes,
                                  class_names=[f"c{i}" for i in range(num_classes)], prefix=checkpoint,
                                  nms_thresh=0.45, nms_topk=400, label_width=350))
        _mark_done(folder)
    return types.SimpleNamespace(checkpoint=checkpoint, epoch=0, val_rec=os.path.join(folder, "val.rec"),
                                 val_images=val_images(os.path.join(folder, "val.lst"), os.path.join(folder, "data")),
                                 num_classes=num_classes)


def kept(dets: np.ndarray) -> np.ndarray:
    """The kept rows of one image's ``[N, 6]`` detections (cls >= 0), sorted by score, then class and box."""
    rows = dets[dets[:, 0] >= 0]
    order = np.lexsort((rows[:, 5], rows[:, 4], rows[:, 3], rows[:, 2], rows[:, 0], -rows[:, 1]))
    return rows[order]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one ``[4]`` corner box with ``[K, 4]`` boxes."""
    lo = np.maximum(box[:2], boxes[:, :2])
    hi = np.minimum(box[2:], boxes[:, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), axis=1)
    area = lambda b: np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-12)


def compare_kept(reference: np.ndarray, other: np.ndarray, topk_cut: float | None, tol: float = 1e-4) -> dict:
    """Match the kept rows (cls >= 0) of two ``[N, 6]`` outputs of one image, as sets.

    A row matches one of the other output with the same class and score and box within ``tol``.
    Returns ``{'matched', 'unexplained', 'near_cut'}``: rows of either side without a match are
    ``near_cut`` when their score is within 1e-5 of ``topk_cut`` (the score of the last row
    ``nms_topk`` keeps: two anchors whose scores differ in the 7th digit can swap places across the
    cut between two float implementations) and ``unexplained`` otherwise.
    """
    a, b = kept(reference), kept(other)
    used = np.zeros(len(b), dtype=bool)
    matched = unexplained = near_cut = 0
    unmatched_a = []
    for row in a:
        diff = np.abs(b[:, 1:] - row[1:]).max(axis=1) if len(b) else np.zeros(0)
        candidates = np.flatnonzero((b[:, 0] == row[0]) & (diff <= tol) & ~used) if len(b) else []
        if len(candidates):
            used[candidates[np.argmin(diff[candidates])]] = True
            matched += 1
        else:
            unmatched_a.append(row)
    for row in unmatched_a + list(b[~used]):
        if topk_cut is not None and abs(row[1] - topk_cut) <= 1e-5:
            near_cut += 1
        else:
            unexplained += 1
    return {"matched": matched, "unexplained": unexplained, "near_cut": near_cut}


def topk_cut(onnx_raw: np.ndarray, nms_topk: int) -> float | None:
    """The score of the ``nms_topk``-th best row: the last row of the exported model's ``[K, 6]`` output,
    which holds exactly the top K rows sorted by score (None when fewer rows pass the 0.01 threshold)."""
    if len(onnx_raw) == nms_topk and onnx_raw[-1, 1] >= 0.01:
        return float(onnx_raw[-1, 1])
    return None


def mxnet_raw(checkpoint: str, epoch: int, batches: list[np.ndarray], backend: str | None = None,
              class_scores: bool = False) -> list:
    """The test graph's raw ``[N, 6]`` outputs per image for preprocessed ``[B, 3, S, S]`` batches.

    ``backend`` sets ``MXNET_SUBGRAPH_BACKEND`` while binding (``'NONE'``: unfused); with
    ``class_scores`` each image's entry is ``(detections [N, 6], cls_prob [C+1, N])``; returns
    ``(outputs, executor debug string)``.
    """
    import mxnet as mx

    from config.environment import scoped_env
    from config.run_config import load_run_config
    from evaluate.ssd_model import load_test_model

    run = load_run_config(checkpoint)
    symbol, args, auxs = load_test_model(run.network, checkpoint, epoch, run.data_shape, run.num_classes,
                                         run.nms_thresh, run.force_suppress, run.nms_topk)
    if class_scores:
        symbol = mx.sym.Group([symbol, symbol.get_internals()["cls_prob_output"]])
    module = mx.mod.Module(symbol, label_names=None)
    with scoped_env("MXNET_SUBGRAPH_BACKEND", backend):
        module.bind([("data", batches[0].shape)], for_training=False)
    module.set_params(args, auxs)
    outputs = []
    for batch in batches:
        module.forward(mx.io.DataBatch([mx.nd.array(batch)]), is_train=False)
        detections = module.get_outputs()[0].asnumpy()
        outputs.extend(zip(detections, module.get_outputs()[1].asnumpy()) if class_scores else detections)
    return outputs, module._exec_group.execs[0].debug_str()


def batches_of(paths: list[str], data_shape: int, mean, std, batch_size: int) -> list[np.ndarray]:
    """The images at ``paths`` preprocessed as :class:`evaluate.detector.Detector` does, in batches."""
    import cv2

    from evaluate.detector import ImageDetector

    prep = ImageDetector(data_shape, mean, std)
    images = [prep.preprocess(cv2.imread(path)) for path in paths]
    return [np.stack(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
