"""The image-database base class and the detection ``.lst`` writer.

An :class:`Imdb` is a list of images with, per image, an array of objects::

    label_from_index(i) -> float array [num_objects, 6]
        rows [cls_id, xmin, ymin, xmax, ymax, difficult], coordinates in [0, 1]

Coordinates are the object's continuous extent divided by the image size: a
box whose leftmost pixel is column ``c0`` (0-based) and rightmost ``c1`` has
``xmin = c0 / width`` and ``xmax = (c1 + 1) / width``, so a box touching the
left border starts at 0 and one touching the right border ends at 1.

:meth:`Imdb.save_imglist` writes the list ``im2rec --pack-label`` packs: one
line per image, tab separated::

    index  2  6  cls x1 y1 x2 y2 difficult  [cls x1 ...]  relative/path.jpg

(header width 2, object width 6, values with 4 decimals).

Bad input (a file that cannot be read, a box outside its image, an unknown
class) raises :class:`config.errors.UserError` naming the file and the reason; with
``skip_bad=True`` the image is dropped instead and recorded in ``dropped``.
"""
from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import cv2
import numpy as np

from config.errors import UserError
from config.fileio import atomic_open

NAMES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "names")
LABEL_HEADER_WIDTH = 2  # the .lst header: [header width, object width]
OBJECT_WIDTH = 6  # [cls_id, xmin, ymin, xmax, ymax, difficult]


class BadEntry(NamedTuple):
    """An input dropped under ``skip_bad``: the file, why, and the kind of fault (for counting)."""

    path: str
    reason: str
    kind: str


class ListStats(NamedTuple):
    """What :meth:`Imdb.save_imglist` wrote."""

    images: int
    objects: int
    max_objects: int  # the most objects in one image; the packed label needs 2 + 6 x this
    without_objects: tuple[str, ...] = ()  # images left out: no object to learn from
    repeated: tuple[str, ...] = ()  # images listed more than once (each is packed every time)


class BadEntryError(Exception):
    """Raised by annotation parsers for one bad image; :meth:`Imdb._bad` decides what happens."""

    def __init__(self, path: str, reason: str, kind: str | None = None):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.kind = kind or reason  # short and the same for every instance: "empty box"


def load_class_names(names: str | Sequence[str]) -> list[str]:
    """Class names from a list, a file (one name a line), a file in ``dataset/names/``, or ``'a,b,c'``.

    A string ending in ``.names``/``.txt`` or holding a path separator must be
    an existing file; any other string is a comma-separated list of names.
    """
    if isinstance(names, str):
        local = os.path.join(NAMES_DIR, names)
        path = names if os.path.isfile(names) else local if os.path.isfile(local) else None
        if path is not None:
            with open(path, encoding="utf-8") as f:
                classes = [line.strip() for line in f if line.strip()]
            source = path
        elif names.endswith((".names", ".txt")) or os.sep in names:
            raise UserError(f"{names}: class-names file not found")
        else:
            classes = [n.strip() for n in names.split(",") if n.strip()]
            source = "--class-names"
    else:
        classes = [str(n).strip() for n in names]
        source = "class list"
    if not classes:
        raise UserError(f"{source}: no class names")
    duplicates = sorted({n for n in classes if classes.count(n) > 1})
    if duplicates:
        raise UserError(f"{source}: class names repeated: {', '.join(duplicates)}")
    return classes


def describe_classes(classes: Sequence[str], limit: int = 8) -> str:
    """``'a, b, c'`` or ``'a, b, ... (80 classes)'`` for error messages."""
    if len(classes) <= limit:
        return ", ".join(classes)
    return ", ".join(classes[:limit]) + f", ... ({len(classes)} classes)"


# EXIF orientations that swap width and height
EXIF_ROTATIONS = {5: "transposed", 6: "rotated 90 degrees clockwise", 7: "transversed",
                  8: "rotated 90 degrees counter-clockwise"}


def exif_orientation(path: str) -> int | None:
    """The EXIF orientation tag (1-8) of an image file, or None."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return image.getexif().get(0x0112)
    except Exception:  # not an image PIL reads, or no EXIF: no tag
        return None


def read_image_checked(path: str) -> np.ndarray:
    """Decode ``path`` with OpenCV (as ``ImageDetRecordIter`` will); BadEntryError if it cannot."""
    try:
        with open(path, "rb") as f:
            data = np.frombuffer(f.read(), np.uint8)
    except FileNotFoundError:
        raise BadEntryError(path, "image file not found") from None
    except OSError as err:
        raise BadEntryError(path, f"cannot read image ({err.strerror})", kind="cannot read image") from None
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise BadEntryError(path, "cannot decode image (not a valid JPEG/PNG file)",
                            kind="cannot decode image")
    return img


class Imdb:
    """Base image database.

    Attributes:
        name: identifies the set (``voc_2007_trainval``).
        classes: class names; ``cls_id`` indexes this list. ``num_classes`` its length.
        image_set_index: one identifier per image; ``num_images`` its length.
        labels: per image a float array [num_objects, 6] (see the module doc), or None
            when labels are read on demand.
        dropped: inputs skipped under ``skip_bad``.
    """

    def __init__(self, name: str, skip_bad: bool = False):
        self.name = name
        self.classes: list[str] = []
        self.num_classes = 0
        self.image_set_index: list = []
        self.num_images = 0
        self.labels: list[np.ndarray] | None = None
        self.skip_bad = skip_bad
        self.dropped: list[BadEntry] = []
        self._excluded: set[int] = set()  # images that failed check_images under skip_bad

    def image_path_from_index(self, index: int) -> str:
        """Full path of image ``index`` (0-based position in ``image_set_index``)."""
        raise NotImplementedError

    def label_from_index(self, index: int) -> np.ndarray:
        """Objects of image ``index``: float array [num_objects, 6], normalised (see the module doc)."""
        raise NotImplementedError

    def image_size_from_index(self, index: int) -> tuple[int, int] | None:
        """(width, height) the annotation gives for image ``index``, or None when it gives none."""
        return None

    def _bad(self, err: BadEntryError) -> None:
        """Stop with a one-line error, or, with ``skip_bad``, note the entry as dropped."""
        if not self.skip_bad:
            raise UserError(str(err)) from None
        self.dropped.append(BadEntry(err.path, err.reason, err.kind))

    @staticmethod
    def _shuffled(items: list, shuffle: bool) -> list:
        """``items`` in a random order that is the same on every run (seed 0), or unchanged."""
        items = list(items)
        if shuffle:
            random.Random(0).shuffle(items)
        return items

    def check_images(self, num_threads: int = 1, log: Callable[[str], None] | None = None) -> int:
        """Decode every labelled image with OpenCV and compare its size with the annotation.

        A missing, unreadable or undecodable image, or one whose size differs
        from the annotated size, raises UserError; under ``skip_bad`` it is
        dropped from :meth:`save_imglist` instead. Returns the number checked.
        """
        def check(index: int) -> BadEntryError | None:
            path = self.image_path_from_index(index)
            try:
                img = read_image_checked(path)
            except BadEntryError as err:
                return err
            size = self.image_size_from_index(index)
            if size is not None and (img.shape[1], img.shape[0]) != tuple(size):
                reason = f"image is {img.shape[1]}x{img.shape[0]} but its annotation says {size[0]}x{size[1]}"
                orientation = exif_orientation(path)
                if orientation in EXIF_ROTATIONS and (img.shape[0], img.shape[1]) == tuple(size):
                    reason += (f": its EXIF orientation tag ({orientation}: {EXIF_ROTATIONS[orientation]}) makes "
                               "OpenCV and im2rec rotate it, and the boxes were drawn on the stored pixels; "
                               "save it rotated (e.g. mogrify -auto-orient) and annotate that, or strip the tag")
                return BadEntryError(path, reason, kind="image size differs from annotation")
            return None

        indices = [i for i in range(self.num_images) if i not in self._excluded]
        report_every = max(1000, len(indices) // 10)
        with ThreadPoolExecutor(max(1, num_threads)) as pool:  # cv2 decodes without the GIL
            for done, (index, err) in enumerate(zip(indices, pool.map(check, indices)), 1):
                if err is not None:
                    self._bad(err)
                    self._excluded.add(index)
                if log and done % report_every == 0:
                    log(f"  checked {done}/{len(indices)} images")
        return len(indices)

    def save_imglist(self, fname: str | None = None, root: str | None = None, shuffle: bool = False,
                     seed: int = 0) -> ListStats:
        """Write the detection ``.lst`` (see the module doc); returns what it wrote.

        Images without objects, and those dropped by :meth:`check_images`, are
        left out. Paths are relative to ``root`` when given, else absolute.
        ``shuffle`` shuffles the lines with ``seed``. The file is written under
        a temporary name and renamed when complete.
        """
        fname = fname or self.name + ".lst"
        lines = []
        num_objects = max_objects = 0
        without_objects, seen, repeated = [], set(), []
        for index in range(self.num_images):
            if index in self._excluded:
                continue
            label = self.label_from_index(index)
            path = self.image_path_from_index(index)
            if label.size == 0:
                without_objects.append(path)
                continue
            if path in seen:
                repeated.append(path)
            seen.add(path)
            label = np.asarray(label, dtype=np.float64).reshape(len(label), -1)
            path = os.path.relpath(path, root) if root else os.path.abspath(path)
            values = [f"{v:.4f}" for v in label.ravel()]
            lines.append("\t".join([str(index), str(LABEL_HEADER_WIDTH), str(label.shape[1]), *values, path]) + "\n")
            num_objects += len(label)
            max_objects = max(max_objects, len(label))
        if not lines:
            raise UserError(f"{self.name}: no image with objects to pack ({len(without_objects)} images, none "
                            "with an object)")
        if shuffle:
            random.Random(seed).shuffle(lines)
        with atomic_open(fname, "w", encoding="utf-8") as f:
            f.writelines(lines)
        return ListStats(len(lines), num_objects, max_objects, tuple(without_objects), tuple(repeated))
