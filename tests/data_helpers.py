"""Build tiny detection data sets for tests, and read packed ones back.

Import from a test file as ``from data_helpers import ...`` (pytest puts
``tests/`` on ``sys.path``). Everything is small and fast:

* :func:`tiny_synthetic` — a few small images from tools/make_synthetic.py.
* :func:`write_voc_set` — a VOC devkit from images and boxes you give.
* :func:`write_coco`, :func:`write_yolo` — the same generated objects as COCO JSON / YOLO text.
* :func:`expected_labels` — the generator's own objects, normalised as the ``.rec`` holds them.
* :func:`pack` — run tools/prepare_dataset.py in-process; :func:`read_rec_labels` — iterate a
  ``.rec`` with ``DetRecordIter`` and return each image's objects.
* :func:`load_script` — a top-level script (``train``, ``evaluate``, ``demo``) as a module.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import types
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import cv2
import numpy as np

from dataset.synthetic import SynthDataset, SynthImage, SynthSettings, make_synthetic


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


def load_script(name: str) -> types.ModuleType:
    """``<repo>/<name>.py`` (``name`` may be ``tools/deploy``) as a fresh module, so tests can call its
    ``main`` in-process (``evaluate.py`` cannot be imported by name: the ``evaluate/`` package wins)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(name.replace("/", "_") + "_script", os.path.join(root, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
