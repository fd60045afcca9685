"""Pascal VOC: ``<devkit>/VOC<year>/{JPEGImages,Annotations,ImageSets/Main}``.

VOC boxes are 1-based inclusive pixels: ``xmin`` becomes ``(xmin - 1) / width``
and ``xmax`` stays ``xmax / width`` (the box's continuous extent, see
``dataset/imdb.py``), so a box at the left border starts at 0 and one at the
right border ends at 1.

An object whose class is not in the class list, or a broken box, stops with an
error naming the XML file (or drops the image under ``skip_bad``): training on a
partly labelled image teaches the network that the unlabelled object is
background.

Evaluation (``comp4`` result files) is :func:`evaluate.eval_voc.evaluate_pascal_voc`.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence

import numpy as np

from config.errors import UserError
from dataset.imdb import BadEntryError, Imdb, describe_classes, load_class_names


class PascalVoc(Imdb):
    """One image set of one VOC year.

    Args:
        image_set: ``train``, ``val``, ``trainval`` or ``test`` (a file in ``ImageSets/Main``).
        year: ``'2007'``, ``'2012'``, or ``'synth'`` for tools/make_synthetic.py (folder ``VOC<year>``).
        devkit_path: the ``VOCdevkit`` folder.
        shuffle: shuffle the images (same order every run).
        is_train: parse every annotation now (and check it); otherwise on demand.
        names: class names: a list, a file, a file in ``dataset/names/`` or ``'a,b,c'``.
        skip_bad: drop images with bad annotations instead of stopping.
    """

    def __init__(self, image_set: str, year: str, devkit_path: str, shuffle: bool = False,
                 is_train: bool = True, names: str | Sequence[str] = "voc.names", skip_bad: bool = False):
        super().__init__(f"voc_{year}_{image_set}", skip_bad)
        self.image_set = image_set
        self.year = year
        self.devkit_path = devkit_path
        self.data_path = os.path.join(devkit_path, "VOC" + year)
        self.extension = ".jpg"
        self.is_train = is_train
        self.classes = load_class_names(names)
        self.num_classes = len(self.classes)
        self._sizes: dict[str, tuple[int, int]] = {}

        if not os.path.isdir(devkit_path):
            raise UserError(f"{devkit_path}: VOC devkit folder not found")
        if not os.path.isdir(self.data_path):
            raise UserError(f"{self.data_path}: folder not found (VOC{year} under the devkit)")
        index_file = os.path.join(self.data_path, "ImageSets", "Main", image_set + ".txt")
        if not os.path.isfile(index_file):
            raise UserError(f"{index_file}: image-set file not found")
        with open(index_file, encoding="utf-8") as f:
            ids = [line.split()[0] for line in f if line.strip()]
        if not ids:
            raise UserError(f"{index_file}: lists no images")
        ids = self._shuffled(ids, shuffle)

        if is_train:
            self.image_set_index, self.labels = [], []
            for image_id in ids:
                try:
                    label = self._parse_annotation(image_id)
                except BadEntryError as err:
                    self._bad(err)
                    continue
                self.image_set_index.append(image_id)
                self.labels.append(label)
        else:
            self.image_set_index = ids
        self.num_images = len(self.image_set_index)

    def image_path_from_index(self, index: int) -> str:
        return os.path.join(self.data_path, "JPEGImages", self.image_set_index[index] + self.extension)

    def annotation_path_from_index(self, index: int) -> str:
        return self._annotation_path(self.image_set_index[index])

    def _annotation_path(self, image_id: str) -> str:
        return os.path.join(self.data_path, "Annotations", image_id + ".xml")

    def label_from_index(self, index: int) -> np.ndarray:
        if self.labels is not None:
            return self.labels[index]
        try:
            return self._parse_annotation(self.image_set_index[index])
        except BadEntryError as err:
            raise UserError(str(err)) from None

    def image_size_from_index(self, index: int) -> tuple[int, int] | None:
        return self._sizes.get(self.image_set_index[index])

    def _parse_annotation(self, image_id: str) -> np.ndarray:
        """Objects of one XML file as float rows [cls_id, xmin, ymin, xmax, ymax, difficult]."""
        path = self._annotation_path(image_id)
        try:
            root = ET.parse(path).getroot()
        except FileNotFoundError:
            raise BadEntryError(path, "annotation file not found") from None
        except ET.ParseError as err:
            raise BadEntryError(path, f"cannot parse XML ({err})", kind="cannot parse XML") from None
        try:
            width = float(root.findtext("size/width"))
            height = float(root.findtext("size/height"))
        except (TypeError, ValueError):
            raise BadEntryError(path, "no numeric <size><width>/<height>", kind="bad image size") from None
        if width <= 0 or height <= 0:
            raise BadEntryError(path, f"image size {width:g}x{height:g} is not positive", kind="bad image size")
        self._sizes[image_id] = (int(width), int(height))

        rows = []
        for k, obj in enumerate(root.iter("object")):
            name = (obj.findtext("name") or "").strip()
            what = f"object {k} ({name!r})"
            if name not in self.classes:
                raise BadEntryError(path, f"{what}: class {name!r} is not in the class list "
                                          f"({describe_classes(self.classes)})", kind="unknown class")
            try:
                xmin, ymin, xmax, ymax = (float(obj.findtext(f"bndbox/{key}"))
                                          for key in ("xmin", "ymin", "xmax", "ymax"))
                difficult = int(obj.findtext("difficult") or 0)
            except (TypeError, ValueError):
                raise BadEntryError(path, f"{what}: <bndbox> needs numeric xmin, ymin, xmax, ymax",
                                    kind="bad box") from None
            if xmin >= xmax or ymin >= ymax:
                raise BadEntryError(path, f"{what}: empty box, xmin {xmin:g} ymin {ymin:g} xmax {xmax:g} "
                                          f"ymax {ymax:g} (needs xmin < xmax and ymin < ymax)", kind="empty box")
            # 0 is accepted as a 0-based "first pixel", which some VOC-style tools write
            if xmin < 0 or ymin < 0 or xmax > width or ymax > height:
                raise BadEntryError(path, f"{what}: box ({xmin:g}, {ymin:g}, {xmax:g}, {ymax:g}) lies outside "
                                          f"the {width:g}x{height:g} image", kind="box outside image")
            rows.append([self.classes.index(name), max(xmin - 1, 0) / width, max(ymin - 1, 0) / height,
                         xmax / width, ymax / height, float(difficult != 0)])
        return np.array(rows, dtype=np.float32).reshape(-1, 6)
