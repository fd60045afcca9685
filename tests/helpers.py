"""Everything the tests share that is not a fixture (fixtures are in conftest.py).

Import from a test file as ``from helpers import ...`` (pytest puts ``tests/`` on ``sys.path``
for ``tests/conftest.py``). Sections:

* paths and scripts: :data:`ROOT`, :func:`load_script` (a top-level script as a module),
  :func:`script_command` (``[python, <repo>/<script>]`` for a subprocess), :func:`run_side_by_side`
  (several such commands at once), :func:`files_under`;
* data: :func:`tiny_synthetic` (a few small images from dataset/synthetic.py), :func:`write_voc_set`,
  :func:`write_coco`, :func:`write_yolo`, :func:`write_rec` (a ``.rec`` from images and objects you
  give), :func:`expected_labels`, :func:`pack` / :func:`pack_voc` (tools/prepare_dataset.py in-process),
  :func:`read_lst`, :func:`image_paths`, :func:`read_rec_labels`;
* training: :func:`toy_config` / :func:`train_toy` (the toy SSD through ``SSDConfig`` and
  ``train_ssd``), :func:`train_args` (train.py's command line for the toy), :func:`flag_list`,
  :func:`history`, :func:`logged_epochs`, :func:`checkpoint_weights`;
* deployment (tools/test_quantize.py, tools/test_onnx_export.py): :func:`quickstart_like` and
  :func:`ssd300_random` (models built once per session), :func:`compare_kept`, :func:`mxnet_raw`,
  :func:`batches_of`, ...
"""
from __future__ import annotations

import csv
import importlib.util
import os
import shutil
import subprocess
import sys
import types
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from config.train_config import SSDConfig
from dataset.synthetic import SynthDataset, SynthImage, SynthSettings, make_synthetic

# the repository: the scripts (train.py, evaluate.py, demo.py, tools/*.py) and README.md live here
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- paths and scripts ------------------------------------------------------------------------------
def load_script(name: str) -> types.ModuleType:
    """``<repo>/<name>.py`` (``name`` may be ``tools/deploy``, with or without ``.py``) as a fresh module, so
    tests can call its ``main`` in-process (``evaluate.py`` cannot be imported by name: the ``evaluate/``
    package wins). The module is registered in ``sys.modules`` while it loads: dataclasses look it up."""
    if name.endswith(".py"):
        name = name[:-3]
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    module_name = name.replace("/", "_") + "_script"
    spec = importlib.util.spec_from_file_location(module_name, os.path.join(ROOT, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def script_command(name: str) -> list[str]:
    """``[python, <repo>/<name>]``: the start of a command line that runs a script as a user would."""
    return [sys.executable, os.path.join(ROOT, name)]


def run_side_by_side(commands: dict, cwd: str, workers: int = 4, timeout: float = 300,
                     envs: dict | None = None) -> dict[str, subprocess.CompletedProcess]:
    """Run each ``name: argv`` of ``commands`` in ``cwd`` (with ``envs[name]`` as its environment where
    given), ``workers`` at a time, output captured as text; the results by name. Most of a short script's
    time is mxnet's import, a single thread: side by side the cases of one test take about half the time
    on 2 cores."""
    def run(item):
        name, argv = item
        return name, subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                                    env=(envs or {}).get(name))

    with ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(run, commands.items()))


def files_under(folder: str) -> list[str]:
    """Every file below ``folder`` (relative paths, sorted), or [] when it does not exist."""
    found = []
    for top, _, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(top, name), folder) for name in names]
    return sorted(found)


# --- data -------------------------------------------------------------------------------------------
def tiny_synthetic(out: str, num_train: int = 4, num_val: int = 0, classes: int = 3, seed: int = 0,
                   **kwargs) -> SynthDataset:
    """A silent, in-process make_synthetic with small images (96-160 px) unless told otherwise."""
    kwargs.setdefault("min_side", 96)
    kwargs.setdefault("max_side", 160)
    settings = SynthSettings(classes=classes, num_train=num_train, num_val=num_val, seed=seed, workers=1, **kwargs)
    return make_synthetic(str(out), settings, log=None)


def expected_labels(image: SynthImage, with_difficult: bool = True) -> np.ndarray:
    """The generator's objects of ``image`` as [N, 6] rows [cls, x1, y1, x2, y2, difficult], normalised."""
    rows = [[o.cls_id, *o.normalised(image.width, image.height), o.difficult if with_difficult else 0]
            for o in image.objects]
    return np.array(rows, dtype=np.float64).reshape(-1, 6)


def write_voc_set(devkit: str, year: str, image_set: str, samples: Sequence[tuple]) -> str:
    """Write a VOC devkit: ``samples`` are ``(image_id, bgr_image, objects)`` with objects
    ``(name, xmin, ymin, xmax, ymax, difficult)`` in VOC 1-based pixels. Returns ``VOC<year>``'s path."""
    data = os.path.join(devkit, "VOC" + year)
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(data, sub), exist_ok=True)
    for image_id, img, objects in samples:
        cv2.imwrite(os.path.join(data, "JPEGImages", image_id + ".jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 98])
        root = ET.Element("annotation")
        ET.SubElement(root, "filename").text = image_id + ".jpg"
        size = ET.SubElement(root, "size")
        for key, value in (("width", img.shape[1]), ("height", img.shape[0]), ("depth", 3)):
            ET.SubElement(size, key).text = str(value)
        for name, xmin, ymin, xmax, ymax, difficult in objects:
            node = ET.SubElement(root, "object")
            ET.SubElement(node, "name").text = name
            ET.SubElement(node, "difficult").text = str(difficult)
            box = ET.SubElement(node, "bndbox")
            for key, value in zip(("xmin", "ymin", "xmax", "ymax"), (xmin, ymin, xmax, ymax)):
                ET.SubElement(box, key).text = str(value)
        ET.ElementTree(root).write(os.path.join(data, "Annotations", image_id + ".xml"))
    with open(os.path.join(data, "ImageSets", "Main", image_set + ".txt"), "w") as f:
        f.writelines(sample[0] + "\n" for sample in samples)
    return data


def _link_image(synth: SynthDataset, image: SynthImage, dest: str) -> None:
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    try:
        os.symlink(os.path.abspath(synth.image_path(image)), dest)
    except OSError:
        shutil.copyfile(synth.image_path(image), dest)


def write_coco(synth: SynthDataset, root: str, image_set: str) -> str:
    """The generated objects of ``image_set`` as ``root/annotations/instances_<set>.json`` with the
    images in ``root/images/<set>/``. Difficult objects become ``iscrowd: 1`` (which reads back as
    difficult). Returns the JSON path."""
    import json

    images, annotations = [], []
    for number, image in enumerate(synth.split(image_set), 1):
        file_name = image.index + ".jpg"
        _link_image(synth, image, os.path.join(root, "images", image_set, file_name))
        images.append({"id": number * 10, "file_name": file_name, "width": image.width, "height": image.height})
        for obj in image.objects:
            x, y = obj.xmin - 1, obj.ymin - 1  # VOC 1-based inclusive -> continuous corner and size
            annotations.append({"id": len(annotations) + 1, "image_id": number * 10,
                                "category_id": 2 * obj.cls_id + 1,  # COCO ids are not contiguous
                                "bbox": [x, y, obj.xmax - x, obj.ymax - y], "area": 0.0,
                                "iscrowd": obj.difficult})
    categories = [{"id": 2 * k + 1, "name": name, "supercategory": "shape"} for k, name in enumerate(synth.classes)]
    path = os.path.join(root, "annotations", f"instances_{image_set}.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return path


def write_yolo(synth: SynthDataset, root: str, image_set: str) -> str:
    """The generated objects of ``image_set`` as YOLO files: ``root/<set>.txt`` (image names without
    extension), ``root/images/*.jpg`` and ``root/labels/*.txt``. Returns the list path."""
    os.makedirs(os.path.join(root, "labels"), exist_ok=True)
    names = []
    for image in synth.split(image_set):
        _link_image(synth, image, os.path.join(root, "images", image.index + ".jpg"))
        lines = []
        for obj in image.objects:
            x1, y1, x2, y2 = obj.normalised(image.width, image.height)
            lines.append(f"{obj.cls_id} {(x1 + x2) / 2:.6f} {(y1 + y2) / 2:.6f} {x2 - x1:.6f} {y2 - y1:.6f}\n")
        with open(os.path.join(root, "labels", image.index + ".txt"), "w") as f:
            f.writelines(lines)
        names.append(image.index)
    path = os.path.join(root, image_set + ".txt")
    with open(path, "w") as f:
        f.writelines(n + "\n" for n in names)
    return path


def pack(argv: Sequence[str]) -> None:
    """Run ``tools/prepare_dataset.py`` with ``argv`` in this process."""
    from tools.prepare_dataset import main

    assert main([str(a) for a in argv]) == 0


def pack_voc(synth: SynthDataset, target: str, split: str, shuffle: bool = True) -> str:
    """Pack ``split`` of a :func:`tiny_synthetic` set into ``target`` (a ``.lst``; the ``.rec`` and ``.idx``
    go beside it) with tools/prepare_dataset.py; ``shuffle=False`` keeps annotation order. Returns the .rec."""
    pack(["--dataset", "pascal", "--year", "synth", "--set", split, "--root", synth.devkit, "--target", target,
          "--class-names", synth.names_file] + ([] if shuffle else ["--no-shuffle"]))
    return os.path.splitext(str(target))[0] + ".rec"


def write_rec(path: str, samples: Sequence[tuple[np.ndarray, np.ndarray]], img_fmt: str = ".jpg") -> str:
    """``path.rec`` / ``path.idx`` as im2rec --pack-label writes them: one record a ``(BGR image, objects)``
    sample, objects ``[n, 6]`` rows ``[cls, x1, y1, x2, y2, difficult]`` normalised (n may be 0), the label
    ``[2, 6, *objects]``, the image encoded as ``img_fmt`` (``pack_img``'s default quality). Returns the .rec path."""
    import mxnet as mx

    record = mx.recordio.MXIndexedRecordIO(path + ".idx", path + ".rec", "w")
    for key, (image, objects) in enumerate(samples):
        label = np.concatenate([[2, 6], np.ravel(np.asarray(objects, dtype=np.float64))]).astype(np.float32)
        record.write_idx(key, mx.recordio.pack_img(mx.recordio.IRHeader(0, label, key, 0), image, img_fmt=img_fmt))
    record.close()
    return path + ".rec"


def read_lst(path: str) -> dict[int, tuple[str, np.ndarray]]:
    """A detection .lst as {index: (relative image path, [N, 6] objects)}."""
    out = {}
    with open(path) as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            header, width = int(fields[1]), int(fields[2])
            values = np.array(fields[1 + header:-1], dtype=np.float64)
            out[int(fields[0])] = (fields[-1], values.reshape(-1, width))
    return out


def image_paths(lst: str, devkit: str) -> list[str]:
    """The image paths of a packed VOC split, in the order of its ``.lst`` (the ``.rec``'s order)."""
    return [os.path.join(devkit, path) for path, _ in read_lst(lst).values()]


def read_rec_labels(rec: str, data_shape: int = 64, batch_size: int = 4, epochs: int = 1,
                    **kwargs) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """Every image ``DetRecordIter`` yields, as (record index, data [3, H, W], objects [N, 6]).

    ``kwargs`` go to the iterator (default ``VALIDATION`` with ``mean_pixels`` 0, so
    ``data`` holds RGB pixel values). Padding rows and wrapped-around images are left out.
    """
    from config.augmentation import VALIDATION
    from dataset.iterator import DetRecordIter

    options = {**VALIDATION, "mean_pixels": (0, 0, 0), "verbose": False, **kwargs}
    it = DetRecordIter(rec, batch_size, data_shape, **options)
    out = []
    for _ in range(epochs):
        it.reset()
        for batch in it:
            labels = batch.label[0].asnumpy()
            data = batch.data[0].asnumpy()
            for k in range(batch_size - batch.pad):
                rows = labels[k][labels[k][:, 0] >= 0]
                out.append((int(batch.index[k]), data[k], rows))
    return out


# --- training ---------------------------------------------------------------------------------------
def flag_list(flags: dict) -> list[str]:
    """``{'--flag': value}`` as ``['--flag', 'value', ...]`` (values as text); a None value leaves its flag out."""
    return [str(item) for flag, value in flags.items() if value is not None for item in (flag, value)]


def train_args(rec, prefix: str, **flags) -> list[str]:
    """train.py's arguments for the toy SSD at 64 px on ``rec`` (a ``synthetic_rec``-like namespace:
    ``train_rec``, ``num_classes``, ``names_file``), from scratch on the CPU, no log file, ``--prefix prefix``.

    ``flags`` add or replace flags, written as keywords: ``batch_size=4`` is ``--batch-size 4``; a None
    value leaves the flag out (``log=None``: train.py's default log file).
    """
    values = {"--network": "toy", "--data-shape": 64, "--train-path": rec.train_rec, "--num-class": rec.num_classes,
              "--class-names": rec.names_file, "--pretrained": "", "--freeze": "", "--gpus": "", "--log": "",
              "--prefix": prefix}
    values.update({"--" + name.replace("_", "-"): value for name, value in flags.items()})
    return flag_list(values)


# train_net's values for the arguments a test leaves out, where SSDConfig's defaults differ: no frozen
# layers and the all-point VOC mAP; and this suite's: data shape 64, from scratch, no learning-rate steps
TOY_DEFAULTS = dict(network="toy", data_shape=64, freeze_pattern="", voc07_metric=False, pretrained="",
                    pretrained_epoch=0, lr_steps="", frequent=100)


def toy_config(rec, prefix: str, end_epoch: int, **fields) -> SSDConfig:
    """The ``SSDConfig`` of a toy SSD run: :data:`TOY_DEFAULTS`, then ``rec``'s data (a ``synthetic_rec``-like
    namespace: ``train_path``, ``num_classes``, ``class_names`` and ``label_width`` from its ``train_rec``,
    ``num_classes``, ``classes`` and ``label_width``; None: give them in ``fields``), then ``fields``
    (any ``SSDConfig`` field). ``prefix`` is used as given (no ``_toy_64`` is appended)."""
    data = {} if rec is None else dict(train_path=rec.train_rec, num_classes=rec.num_classes,
                                       class_names=list(rec.classes), label_width=rec.label_width)
    return SSDConfig(**{**TOY_DEFAULTS, **data, "prefix": prefix, "end_epoch": end_epoch, **fields})


def train_toy(rec, prefix: str, end_epoch: int, *, ctx: list | None = None, **fields) -> dict:
    """Train :func:`toy_config`'s run with ``train.train_net.train_ssd`` on ``ctx`` (default one CPU);
    returns its result ``{'prefix', 'begin_epoch', 'end_epoch', 'best_map'}``."""
    import mxnet as mx

    from train.train_net import train_ssd

    return train_ssd(toy_config(rec, prefix, end_epoch, **fields), ctx or [mx.cpu()])


def history(prefix: str) -> list[dict]:
    """The rows of ``<prefix>-metrics.csv`` (one an epoch: ``epoch``, ``lr``, ``train_*``, ``val_*``)."""
    with open(prefix + "-metrics.csv") as f:
        return list(csv.DictReader(f))


def logged_epochs(prefix: str) -> list[int]:
    """The ``epoch`` column of ``<prefix>-metrics.csv``."""
    return [int(row["epoch"]) for row in history(prefix)]


def checkpoint_weights(prefix: str, epoch: int, auxs: bool = False) -> dict[str, np.ndarray]:
    """The arguments of ``<prefix>-<epoch>.params`` as numpy arrays; with ``auxs`` the BatchNorm statistics too."""
    from evaluate import checkpoint

    _, args, aux_params = checkpoint.load_checkpoint(prefix, epoch)
    return {k: v.asnumpy() for k, v in {**args, **(aux_params if auxs else {})}.items()}


# --- deployment: models for tools/test_quantize.py and tools/test_onnx_export.py -------------------------
# Each builder works in a fixed folder under the test run's base temporary directory and returns at
# once when that folder is complete, so the two test modules (each with its own fixtures) build a
# model once per session.
QUICK_CLASSES = 3
QUICK_SHAPE = 128
QUICK_EPOCHS = 6
QUICK_BATCH = 16
NUM_VAL = 50


def _done(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "DONE"))


def _mark_done(folder: str) -> None:
    with open(os.path.join(folder, "DONE"), "w") as f:
        f.write("ok\n")


def quickstart_like(base: str) -> types.SimpleNamespace:
    """The quick start's recipe, shrunk: 3-class synthetic shapes (20-60% of the side, at most 4 per
    image), 200 training and 50 validation images of 128-192 px, the toy SSD at 128 trained from
    scratch for 6 epochs (mirror only, lr 0.05 after a 1-epoch warm-up, 0.005 for the last epoch,
    batch 16, seed 7), validated (VOC07) after every epoch: 50 images at batch 16 leave a last batch
    of 2 images and 14 repeats. Every epoch's checkpoint is kept.

    Returns ``checkpoint`` (full prefix, with its run config and ``-metrics.csv``), ``epoch``,
    ``val_rec``, ``train_rec``, ``val_images`` (the 50 validation JPEGs, annotation order),
    ``names_file``, ``classes``, ``batch_size``.
    """
    folder = os.path.join(base, "quickstart_like")
    checkpoint = os.path.join(folder, f"ssd_toy_{QUICK_SHAPE}")
    if not _done(folder):
        os.makedirs(folder, exist_ok=True)
        synth = tiny_synthetic(os.path.join(folder, "data"), num_train=200, num_val=NUM_VAL, classes=QUICK_CLASSES,
                               seed=7, min_side=128, max_side=192, min_size=0.2, max_size=0.6, max_objects=4,
                               truncation=0.1)
        for split in ("train", "val"):
            pack_voc(synth, os.path.join(folder, f"{split}.lst"), split, shuffle=split == "train")
        train_toy(None, checkpoint, QUICK_EPOCHS, train_path=os.path.join(folder, "train.rec"),
                  num_classes=QUICK_CLASSES, class_names=list(synth.classes), label_width=2 + 6 * 4,
                  batch_size=QUICK_BATCH, data_shape=QUICK_SHAPE, frequent=1000, lr=0.05, lr_steps="5",
                  num_example=200, seed=7, augment="flip", warmup_epochs=1, val_path=os.path.join(folder, "val.rec"),
                  voc07_metric=True, keep=0)
        _mark_done(folder)
    names_file = os.path.join(folder, "data", "synth.names")
    with open(names_file) as f:
        classes = [line.strip() for line in f if line.strip()]
    return types.SimpleNamespace(
        checkpoint=checkpoint, epoch=QUICK_EPOCHS, val_rec=os.path.join(folder, "val.rec"),
        train_rec=os.path.join(folder, "train.rec"),
        val_images=image_paths(os.path.join(folder, "val.lst"), os.path.join(folder, "data", "VOCdevkit")),
        names_file=names_file, classes=classes, batch_size=QUICK_BATCH)


def ssd300_random(base: str, num_classes: int = 20) -> types.SimpleNamespace:
    """SSD300 (vgg16_reduced at 300) with Xavier weights (seed 0) saved as a checkpoint with a run
    config, and 50 synthetic images (160-240 px, seed 3) packed as ``val.rec``."""
    import mxnet as mx

    from config.run_config import save_run_config
    from evaluate.checkpoint import save_params
    from symbol.symbol_factory import get_symbol

    folder = os.path.join(base, "ssd300_random")
    checkpoint = os.path.join(folder, "ssd_vgg16_reduced_300")
    if not _done(folder):
        os.makedirs(folder, exist_ok=True)
        synth = tiny_synthetic(os.path.join(folder, "data"), num_train=0, num_val=NUM_VAL, classes=3, seed=3,
                               min_side=160, max_side=240)
        pack_voc(synth, os.path.join(folder, "val.lst"), "val", shuffle=False)
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
                                 val_images=image_paths(os.path.join(folder, "val.lst"),
                                                        os.path.join(folder, "data", "VOCdevkit")),
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


def rcnn_train_batch(sym, cfg, height: int, width: int):
    """A Faster R-CNN training batch for ``sym``: a random image [1, 3, H, W] with two ground-truth boxes and
    their real RPN targets (data ``data, im_info, gt_boxes``; labels ``label, bbox_target, bbox_weight``)."""
    import mxnet as mx

    from dataset.rcnn_anchor import AnchorGenerator, AnchorSampler, anchor_targets_to_rpn_layout
    from dataset.rcnn_loader import feat_shape_from_symbol

    feat_shape = feat_shape_from_symbol(sym)(height, width)
    anchors = AnchorGenerator(cfg.rpn_feat_stride, cfg.rpn_anchor_scales, cfg.rpn_anchor_ratios)
    gt = np.array([[10, 20, 70, 90, 1], [80, 30, 150, 120, 2]], dtype=np.float32)
    targets = anchor_targets_to_rpn_layout(
        *AnchorSampler(seed=0).assign(anchors.generate(*feat_shape), gt, height, width), *feat_shape)
    data = [mx.nd.array(np.random.RandomState(0).randn(1, 3, height, width)),
            mx.nd.array([[height, width, 1.0]]), mx.nd.array(gt[None])]
    return mx.io.DataBatch(data, [mx.nd.array(t[None]) for t in targets])


def learnable_rec(out, num_val: int, seed: int) -> types.SimpleNamespace:
    """A set the toy SSD learns in seconds, packed under ``out``: 2 classes, 128 training and ``num_val``
    validation images of 128-200 px with 1-3 objects of 25-60% of the side. A ``synthetic_rec``-like
    namespace: ``train_rec``, ``val_rec``, ``num_classes``, ``classes``, ``label_width``."""
    synth = tiny_synthetic(out, num_train=128, num_val=num_val, classes=2, seed=seed, min_side=128, max_side=200,
                           min_size=0.25, max_size=0.6, max_objects=3)
    train_rec, val_rec = (pack_voc(synth, os.path.join(str(out), f"{split}.lst"), split) for split in ("train", "val"))
    return types.SimpleNamespace(train_rec=train_rec, val_rec=val_rec, num_classes=2, classes=list(synth.classes),
                                 label_width=350)


def assert_same_detections(first: list, second: list) -> None:
    """Two evaluations scored the same images with the same detections, row by row. The toy model of these
    tests scores an mAP near 0, whose 4-decimal table would hide differences; its detection rows would not."""
    assert len(first) == len(second)
    # the premise: there is something to compare in every image
    assert all(len(dets) > 0 for dets, _ in first) and sum(len(dets) for dets, _ in first) > 100
    for (dets_a, labels_a), (dets_b, labels_b) in zip(first, second):
        np.testing.assert_array_equal(labels_a, labels_b)
        assert dets_a.shape == dets_b.shape
        np.testing.assert_allclose(dets_a, dets_b, rtol=0, atol=1e-6)


def record_returns(monkeypatch, owner, name: str) -> list:
    """Patch ``owner.name`` (a function or a class's method) to keep what each call returns, in call order;
    returns that list."""
    original = getattr(owner, name)
    returned = []

    def recording(*args, **kwargs):
        returned.append(original(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(owner, name, recording)
    return returned
