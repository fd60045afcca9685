"""MS COCO instance annotations (``instances_<set>.json``) read without pycocotools.

COCO boxes are ``[x, y, width, height]`` in continuous pixels; they become
``[x / W, y / H, (x + width) / W, (y + height) / H]``. Images with no
annotation are dropped (they add nothing to SSD training).

Crowd regions (``iscrowd: 1``) cover many instances at once, so they are kept
with ``difficult = 1``: the VOC-style metric ignores detections matched to
them and the SSD training graph drops them before ``MultiBoxTarget``
(``symbol.symbol_builder.drop_difficult_objects``), so no anchor is matched to
one.

``image_dir`` is the folder holding the image files themselves (e.g.
``coco/images/train2014`` or ``coco/train2017``), and the class list defaults
to the file's own categories in id order, which for COCO is
``dataset/names/coco.names``.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from config.errors import UserError
from dataset.imdb import BadEntryError, Imdb, describe_classes, load_class_names

# COCO boxes are floats and a few poke out of the image by rounding; allow that much, then clip
BORDER_TOLERANCE_PX = 1.0


class Coco(Imdb):
    """Images and boxes of one COCO annotation file.

    Args:
        anno_file: path of ``instances_<set>.json``.
        image_dir: folder with the images named by ``file_name``.
        shuffle: shuffle the images (same order every run).
        names: class names (list, file or ``'a,b'``); default: the file's categories by id.
        skip_bad: drop images with bad annotations instead of stopping.
    """

    def __init__(self, anno_file: str, image_dir: str, shuffle: bool = False,
                 names: str | Sequence[str] | None = None, skip_bad: bool = False):
        stem = os.path.splitext(os.path.basename(anno_file))[0]
        super().__init__("coco_" + stem.replace("instances_", ""), skip_bad)
        self.anno_file = anno_file
        self.image_dir = image_dir
        if not os.path.isfile(anno_file):
            raise UserError(f"{anno_file}: annotation file not found")
        if not os.path.isdir(image_dir):
            raise UserError(f"{image_dir}: image folder not found")
        try:
            with open(anno_file, encoding="utf-8") as f:
                data = json.load(f)
            categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
            images = {int(im["id"]): im for im in data["images"]}
            annotations = data["annotations"]
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{anno_file}: cannot parse JSON ({err})") from None
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{anno_file}: not a COCO instances file (missing or bad {err})") from None

        self.classes = load_class_names(names) if names is not None else [categories[k] for k in sorted(categories)]
        self.num_classes = len(self.classes)

        by_image: dict[int, list[dict]] = {}
        for ann in annotations:
            by_image.setdefault(int(ann["image_id"]), []).append(ann)
        entries = []
        for image_id in sorted(by_image):
            try:
                if image_id not in images:
                    raise BadEntryError(f"{anno_file}: annotation {by_image[image_id][0].get('id')}",
                                        f"refers to image id {image_id}, which is not in 'images'",
                                        kind="unknown image id")
                label = self._parse_image(images[image_id], by_image[image_id], categories)
            except BadEntryError as err:
                self._bad(err)
                continue
            image = images[image_id]
            entries.append((str(image["file_name"]), label, (int(image["width"]), int(image["height"]))))
        entries = self._shuffled(entries, shuffle)
        self.image_set_index = [e[0] for e in entries]
        self.labels = [e[1] for e in entries]
        self._sizes = [e[2] for e in entries]
        self.num_images = len(entries)

    def image_path_from_index(self, index: int) -> str:
        return os.path.join(self.image_dir, self.image_set_index[index])

    def label_from_index(self, index: int) -> np.ndarray:
        return self.labels[index]

    def image_size_from_index(self, index: int) -> tuple[int, int]:
        return self._sizes[index]

    def _parse_image(self, image: dict, annotations: list[dict], categories: dict[int, str]) -> np.ndarray:
        where = f"{self.anno_file}: image {image['id']} ({image.get('file_name')})"
        try:
            width, height = float(image["width"]), float(image["height"])
        except (KeyError, TypeError, ValueError):
            raise BadEntryError(where, "no numeric width/height", kind="bad image size") from None
        if width <= 0 or height <= 0:
            raise BadEntryError(where, f"image size {width:g}x{height:g} is not positive", kind="bad image size")
        rows = []
        for ann in annotations:
            what = f"annotation {ann.get('id')}"
            name = categories.get(ann.get("category_id"))
            if name is None:
                raise BadEntryError(where, f"{what}: category id {ann.get('category_id')} is not in 'categories'",
                                    kind="unknown category")
            if name not in self.classes:
                raise BadEntryError(where, f"{what}: class {name!r} is not in the class list "
                                           f"({describe_classes(self.classes)})", kind="unknown class")
            try:
                x, y, w, h = (float(v) for v in ann["bbox"])
            except (KeyError, TypeError, ValueError):
                raise BadEntryError(where, f"{what}: bbox must be [x, y, width, height]", kind="bad box") from None
            if w <= 0 or h <= 0:
                raise BadEntryError(where, f"{what}: empty box [{x:g}, {y:g}, {w:g}, {h:g}] "
                                           "(needs width > 0 and height > 0)", kind="empty box")
            tol = BORDER_TOLERANCE_PX
            x1, y1 = max(x, 0.0) / width, max(y, 0.0) / height
            x2, y2 = min(x + w, width) / width, min(y + h, height) / height
            if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol or x1 >= x2 or y1 >= y2:
                raise BadEntryError(where, f"{what}: box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the "
                                           f"{width:g}x{height:g} image", kind="box outside image")
            rows.append([self.classes.index(name), x1, y1, x2, y2, float(bool(ann.get("iscrowd", 0)))])
        return np.array(rows, dtype=np.float32).reshape(-1, 6)
