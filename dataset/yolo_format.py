"""Darknet/YOLO text labels: one ``<label_dir>/<name><label_ext>`` per image.

Each line of a label file is ``cls cx cy w h`` with the centre and size
normalised to [0, 1]; it becomes ``[cls, cx - w/2, cy - h/2, cx + w/2, cy + h/2, 0]``
(YOLO has no "difficult" flag). An empty label file is an image without
objects (left out of the ``.lst``); a missing one is an error, because it
usually means a wrong ``label_dir``.

A bad line is an error naming the file and line (or drops the image under
``skip_bad``).

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from config.errors import UserError
from dataset.imdb import BadEntryError, Imdb, load_class_names

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
# normalised coordinates written with few decimals can overshoot [0, 1] a little; allow that, then clip
BORDER_TOLERANCE = 1e-3


class YoloFormat(Imdb):
    """Images listed in ``list_file`` with YOLO label files.

    Args:
        name: data set name (``_<num_classes>`` is appended, as in the original).
        classes: class names: list, file, file in ``dataset/names/`` or ``'a,b'``; ``cls`` indexes it.
        list_file: one image per line, relative to ``image_dir``; ``img_ext`` is
            appended unless the line already ends in an image extension.
        image_dir, label_dir: folders of images and label files.
        shuffle: shuffle the images (same order every run).
        skip_bad: drop images with bad labels instead of stopping.
    """

    def __init__(self, name: str, classes: str | Sequence[str], list_file: str, image_dir: str, label_dir: str,
                 img_ext: str = ".jpg", label_ext: str = ".txt", shuffle: bool = False, skip_bad: bool = False):
        class_names = load_class_names(classes)
        super().__init__(f"{name}_{len(class_names)}", skip_bad)
        self.classes = class_names
        self.num_classes = len(class_names)
        self.list_file = list_file
        self.image_dir = image_dir
        self.label_dir = label_dir
        self.img_ext = img_ext
        self.label_ext = label_ext
        for path, what in ((list_file, "image list file"), (image_dir, "image folder"), (label_dir, "label folder")):
            if not os.path.exists(path):
                raise UserError(f"{path}: {what} not found")
        with open(list_file, encoding="utf-8") as f:
            entries = [line.strip() for line in f if line.strip()]
        if not entries:
            raise UserError(f"{list_file}: lists no images")
        entries = self._shuffled(entries, shuffle)

        self.image_set_index, self.labels = [], []
        for entry in entries:
            try:
                label = self._parse_label(entry)
            except BadEntryError as err:
                self._bad(err)
                continue
            self.image_set_index.append(entry)
            self.labels.append(label)
        self.num_images = len(self.image_set_index)

    def _stem(self, entry: str) -> str:
        root, ext = os.path.splitext(entry)
        return root if ext.lower() in IMAGE_EXTENSIONS else entry

    def image_path_from_index(self, index: int) -> str:
        entry = self.image_set_index[index]
        name = entry if self._stem(entry) != entry else entry + self.img_ext
        return os.path.join(self.image_dir, name)

    def label_path(self, entry: str) -> str:
        """The label file of a list entry."""
        return os.path.join(self.label_dir, self._stem(entry) + self.label_ext)

    def label_from_index(self, index: int) -> np.ndarray:
        return self.labels[index]

    def _parse_label(self, entry: str) -> np.ndarray:
        path = self.label_path(entry)
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            raise BadEntryError(path, "label file not found") from None
        rows = []
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            fields = line.split()
            try:
                if len(fields) != 5:
                    raise ValueError
                cls_id, cx, cy, w, h = int(fields[0]), *(float(v) for v in fields[1:])
            except ValueError:
                raise BadEntryError(path, f"line {lineno}: expected 'cls cx cy w h', got {line.strip()!r}",
                                    kind="bad label line") from None
            if not 0 <= cls_id < self.num_classes:
                raise BadEntryError(path, f"line {lineno}: class id {cls_id} is not in the class list "
                                          f"(0..{self.num_classes - 1})", kind="unknown class")
            if w <= 0 or h <= 0:
                raise BadEntryError(path, f"line {lineno}: empty box, width {w:g} height {h:g}", kind="empty box")
            box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
            if box.min() < -BORDER_TOLERANCE or box.max() > 1 + BORDER_TOLERANCE:
                raise BadEntryError(path, f"line {lineno}: box (cx {cx:g}, cy {cy:g}, w {w:g}, h {h:g}) "
                                          "lies outside the image", kind="box outside image")
            rows.append([cls_id, *np.clip(box, 0.0, 1.0), 0.0])
        return np.array(rows, dtype=np.float32).reshape(-1, 6)
