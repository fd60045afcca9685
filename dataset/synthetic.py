"""Generate a synthetic object-detection data set in the real Pascal VOC layout.

No public data set can be downloaded where this toolkit is tested, so this
tool draws one: every class is a distinct shape (class 0 a circle, class 1 a
square, ...), painted with OpenCV in a random colour, scale, aspect ratio and
rotation on a textured, noisy background. Objects overlap and occlude each
other; objects cut by the image border are clipped and marked ``truncated``;
tiny or mostly hidden objects are marked ``difficult``.

Output (``--out OUT``)::

    OUT/synth.names                                  class names, one a line
    OUT/VOCdevkit/VOCsynth/JPEGImages/000001.jpg ...
    OUT/VOCdevkit/VOCsynth/Annotations/000001.xml ...  VOC XML, 1-based pixels
    OUT/VOCdevkit/VOCsynth/ImageSets/Main/{train,val,trainval,test}.txt  (test = val)

so that ``tools/prepare_dataset.py --dataset pascal --year synth --root
OUT/VOCdevkit --class-names OUT/synth.names`` reads it like VOC2007.

Boxes are the extent of the drawn shape (occluded parts included), clipped to
the image: VOC ``xmin`` is the 1-based column of the leftmost painted pixel and
``xmax`` that of the rightmost, so the continuous extent is ``[xmin - 1, xmax]``.

Output depends only on the settings (:class:`SynthSettings`): each image draws from its own random
generator seeded by ``(seed, image number)``, so the worker count changes
nothing, and the same seed gives byte-identical files.

Command line: ``tools/make_synthetic.py``.
"""
from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context

import cv2
import numpy as np

from config.errors import UserError
from config.fileio import atomic_open

YEAR = "synth"
# Unit-square outlines (coordinates in [-1, 1]); each shape is a list of
# (polygon, fill) drawn in order, fill 0 cuts a hole. The shapes stay distinct
# under the aspect ratios (at most 1.5:1) and rotations the generator applies.
Polygon = np.ndarray


def _regular(n: int, radius: float = 1.0, phase: float = -np.pi / 2, centre=(0.0, 0.0)) -> Polygon:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([centre[0] + radius * np.cos(angles), centre[1] + radius * np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> Polygon:
    outer = _regular(points)
    inner_pts = _regular(points, inner, phase=-np.pi / 2 + np.pi / points)
    return np.stack([outer, inner_pts], axis=1).reshape(-1, 2)


def _half_disk() -> Polygon:
    angles = np.linspace(0.0, np.pi, 25)
    return np.stack([np.cos(angles), 0.5 - np.sin(angles)], axis=1)


SHAPES: dict[str, list[tuple[Polygon, int]]] = {
    "circle": [(_regular(48), 255)],
    "square": [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 255)],
    "triangle": [(np.array([[0, -1], [1, 0.75], [-1, 0.75]], float), 255)],
    "star": [(_star(), 255)],
    "cross": [(np.array([[-0.3, -1], [0.3, -1], [0.3, -0.3], [1, -0.3], [1, 0.3], [0.3, 0.3], [0.3, 1],
                         [-0.3, 1], [-0.3, 0.3], [-1, 0.3], [-1, -0.3], [-0.3, -0.3]], float), 255)],
    "ring": [(_regular(48), 255), (_regular(48, 0.55), 0)],
    "hexagon": [(_regular(6, phase=0.0), 255)],
    "crescent": [(_regular(48), 255), (_regular(48, 0.8, centre=(0.45, -0.25)), 0)],
    "arrow": [(np.array([[-1, -0.25], [0.2, -0.25], [0.2, -0.7], [1, 0], [0.2, 0.7], [0.2, 0.25],
                         [-1, 0.25]], float), 255)],
    "frame": [(np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float), 255),
              (np.array([[-0.55, -0.55], [0.55, -0.55], [0.55, 0.55], [-0.55, 0.55]], float), 0)],
    "semicircle": [(_half_disk(), 255)],
    "lshape": [(np.array([[-1, -1], [-0.3, -1], [-0.3, 0.3], [1, 0.3], [1, 1], [-1, 1]], float), 255)],
}
SHAPE_NAMES = list(SHAPES)
# farthest point of each shape from its centre, in units of its radii
SHAPE_REACH = {name: max(float(np.linalg.norm(poly, axis=1).max()) for poly, _ in polys)
               for name, polys in SHAPES.items()}
# An object is "difficult" when it is tiny or mostly hidden, as VOC marks
# objects that are hard to recognise; the metric then ignores it.
DIFFICULT_MIN_SIDE_PX = 13
DIFFICULT_MAX_HIDDEN = 0.5


@dataclass(frozen=True)
class SynthObject:
    """One annotated object: VOC 1-based inclusive pixel box, as in the XML."""

    cls_id: int
    name: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    truncated: int
    difficult: int

    def normalised(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The box's continuous extent ``[xmin - 1, xmax]`` divided by the image size."""
        return ((self.xmin - 1) / width, (self.ymin - 1) / height, self.xmax / width, self.ymax / height)


@dataclass(frozen=True)
class SynthImage:
    """One generated image: its VOC index (``'000001'``), split and objects."""

    index: str
    split: str
    width: int
    height: int
    objects: tuple[SynthObject, ...]


@dataclass
class SynthDataset:
    """What :func:`make_synthetic` wrote, with the generator's own record of every object."""

    out: str
    devkit: str
    data_dir: str
    names_file: str
    classes: list[str]
    images: list[SynthImage] = field(default_factory=list)

    def split(self, name: str) -> list[SynthImage]:
        """Images of one image set: ``train``, ``val``, ``test`` (= val) or ``trainval``."""
        if name == "trainval":
            return [im for im in self.images if im.split in ("train", "val")]
        wanted = "val" if name == "test" else name
        return [im for im in self.images if im.split == wanted]

    def image_path(self, image: SynthImage) -> str:
        return os.path.join(self.data_dir, "JPEGImages", image.index + ".jpg")

    def annotation_path(self, image: SynthImage) -> str:
        return os.path.join(self.data_dir, "Annotations", image.index + ".xml")


@dataclass(frozen=True)
class SynthSettings:
    """What to generate; the output depends on nothing else. These defaults are the command line's.

    ``classes``: number of classes, 1 to ``len(SHAPE_NAMES)`` (12); class i is shape ``SHAPE_NAMES[i]``.
    ``num_train``, ``num_val``: images in ``train.txt`` and ``val.txt`` (``test.txt`` = val).
    ``seed``: same seed (and settings), byte-identical files.
    ``min_size``, ``max_size``: object scale as a fraction of the shorter image side
    (≈ sqrt of the box area before rotation), drawn log-uniformly.
    ``min_side``, ``max_side``: image width and height in pixels, drawn independently.
    ``max_objects``: each image has 1 to ``max_objects`` objects. ``quality``: JPEG quality.
    ``truncation``: share of objects allowed to reach past the image border (1: all, 0: none
    that fit inside). ``workers``: processes, 0 for one per core (small sets are drawn
    in-process); the files do not depend on it.
    """

    classes: int = 3
    num_train: int = 2000
    num_val: int = 200
    seed: int = 0
    min_size: float = 0.04
    max_size: float = 0.70
    min_side: int = 200
    max_side: int = 500
    max_objects: int = 8
    quality: int = 90
    truncation: float = 1.0
    workers: int = 0

    def check(self) -> None:
        """Raise :class:`UserError` naming the flag of the first setting out of range."""
        if not 1 <= self.classes <= len(SHAPE_NAMES):
            raise UserError(f"--classes: {self.classes} is not in 1..{len(SHAPE_NAMES)} (one shape per class)")
        if not 0 < self.min_size <= self.max_size <= 1.5:
            raise UserError(f"--min-size/--max-size: need 0 < min ({self.min_size}) <= max ({self.max_size}) <= 1.5")
        if not 16 <= self.min_side <= self.max_side:
            raise UserError(f"--min-side/--max-side: need 16 <= min ({self.min_side}) <= max ({self.max_side})")
        if self.num_train < 0 or self.num_val < 0 or self.num_train + self.num_val == 0:
            raise UserError("--num-train/--num-val: need at least one image")
        if self.max_objects < 1:
            raise UserError(f"--max-objects: {self.max_objects} must be at least 1")
        if not 0.0 <= self.truncation <= 1.0:
            raise UserError(f"--truncation: {self.truncation} is not in 0..1")


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name, so no half-written file is left."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Textured clutter: a smooth colour field, blotchy mid-frequency noise and a few lines."""
    coarse = rng.uniform(30, 225, size=(rng.integers(2, 6), rng.integers(2, 6), 3))
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    cell = int(rng.integers(3, 12))
    blotch = rng.normal(0, rng.uniform(5, 25), size=(height // cell + 1, width // cell + 1, 3))
    img += cv2.resize(blotch, (width, height), interpolation=cv2.INTER_LINEAR)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(0, 7)):
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p2 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cv2.line(img, p1, p2, colour, int(rng.integers(1, 4)), cv2.LINE_AA)
    return img


def _shape_mask(shape: str, centre: np.ndarray, radii: np.ndarray, angle: float) -> tuple[np.ndarray, int, int]:
    """Rasterise a shape unclipped: (mask, x0, y0) with the mask's top-left at pixel (x0, y0)."""
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    polys = [((poly * radii) @ rot.T + centre, fill) for poly, fill in SHAPES[shape]]
    points = np.concatenate([p for p, _ in polys])
    x0, y0 = np.floor(points.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(points.max(axis=0)).astype(int) + 1
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    for poly, fill in polys:
        # 4 fractional bits keep sub-pixel vertex positions
        pts = np.round((poly - [x0, y0]) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], fill, lineType=cv2.LINE_8, shift=4)
    return mask, int(x0), int(y0)


def _contrasting_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A random colour far enough from the mean colour ``under`` the object to stay visible."""
    colour = rng.integers(0, 256, 3)
    for _ in range(20):
        if np.abs(colour - under).sum() > 120:
            break
        colour = rng.integers(0, 256, 3)
    return colour


def _render_image(settings: SynthSettings, number: int, split: str) -> tuple[SynthImage, bytes, bytes]:
    """Draw image ``number`` (1-based); returns its record, JPEG bytes and XML bytes."""
    rng = np.random.default_rng([settings.seed, number])
    width = int(rng.integers(settings.min_side, settings.max_side + 1))
    height = int(rng.integers(settings.min_side, settings.max_side + 1))
    img = _background(rng, height, width)
    side = min(width, height)

    num_objects = int(rng.integers(1, settings.max_objects + 1))
    # log-uniform scale: as many small objects as large ones, per octave
    sizes = np.exp(rng.uniform(np.log(settings.min_size), np.log(settings.max_size), num_objects))
    # mostly large objects first, so small ones are seldom buried completely
    order = np.argsort(-sizes * rng.uniform(0.6, 1.4, num_objects))
    owner = np.full((height, width), -1, np.int32)  # which object shows at each pixel
    drawn = []
    for k, which in enumerate(order):
        cls_id = int(rng.integers(0, settings.classes))
        shape = SHAPE_NAMES[cls_id]
        aspect = np.exp(rng.uniform(-np.log(1.5), np.log(1.5)))
        radii = 0.5 * sizes[which] * side * np.array([np.sqrt(aspect), 1 / np.sqrt(aspect)])
        angle = rng.uniform(0, 2 * np.pi)
        # The centre stays in the image. With --truncation < 1, only that share of objects
        # may reach past the border; the others keep the rotated shape's whole extent inside.
        low, high = np.array([0.02 * width, 0.02 * height]), np.array([0.98 * width, 0.98 * height])
        if settings.truncation < 1.0 and rng.uniform() >= settings.truncation:
            reach = radii.max() * SHAPE_REACH[shape] + 1  # +1: rasterisation
            if 2 * reach < min(width, height):
                low, high = np.array([reach, reach]), np.array([width - reach, height - reach])
        while True:  # retry the rare shape left with < 3 px inside
            centre = rng.uniform(low, high)
            mask, x0, y0 = _shape_mask(shape, centre, radii, angle)
            ix0, iy0 = max(x0, 0), max(y0, 0)
            ix1, iy1 = min(x0 + mask.shape[1], width), min(y0 + mask.shape[0], height)
            local = mask[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] > 0  # the part inside the image
            ys, xs = np.nonzero(local)
            if len(xs) and xs.max() - xs.min() >= 2 and ys.max() - ys.min() >= 2:
                break
        # box = extent of the painted pixels inside the image; truncated when the shape reaches beyond
        clipped = (int(xs.min()) + ix0, int(ys.min()) + iy0, int(xs.max()) + ix0, int(ys.max()) + iy0)
        full_ys, full_xs = np.nonzero(mask)
        truncated = bool(full_xs.min() + x0 < 0 or full_ys.min() + y0 < 0
                         or full_xs.max() + x0 >= width or full_ys.max() + y0 >= height)
        region = img[iy0:iy1, ix0:ix1]
        colour = _contrasting_colour(rng, region[local].mean(axis=0))
        # a gentle linear shading so objects are not perfectly flat
        gy, gx = np.mgrid[0:iy1 - iy0, 0:ix1 - ix0]
        shade = (rng.uniform(-25, 25) * (gx / max(gx.max(), 1) - 0.5)
                 + rng.uniform(-25, 25) * (gy / max(gy.max(), 1) - 0.5))
        painted = np.clip(colour[None, None, :] + shade[..., None], 0, 255).astype(np.uint8)
        region[local] = painted[local]
        owner[iy0:iy1, ix0:ix1][local] = k
        drawn.append((cls_id, shape, clipped, truncated, int(local.sum())))

    visible = np.bincount(owner[owner >= 0].ravel(), minlength=len(drawn))
    noise = rng.normal(0, rng.uniform(2, 9), img.shape)
    img = np.clip(img + noise, 0, 255).astype(np.uint8)

    objects = []
    for k, (cls_id, shape, clipped, truncated, in_image) in enumerate(drawn):
        tiny = min(clipped[2] - clipped[0], clipped[3] - clipped[1]) + 1 < DIFFICULT_MIN_SIDE_PX
        hidden = 1.0 - visible[k] / in_image > DIFFICULT_MAX_HIDDEN
        objects.append(SynthObject(
            cls_id=cls_id, name=shape,
            xmin=clipped[0] + 1, ymin=clipped[1] + 1, xmax=clipped[2] + 1, ymax=clipped[3] + 1,
            truncated=int(truncated), difficult=int(tiny or hidden),
        ))
    record = SynthImage(index=f"{number:06d}", split=split, width=width, height=height, objects=tuple(objects))
    ok, jpeg = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, settings.quality])
    assert ok, "OpenCV failed to encode a JPEG"
    return record, jpeg.tobytes(), _voc_xml(record)


def _voc_xml(image: SynthImage) -> bytes:
    """The VOC annotation of one image, laid out as the VOC2007 files are."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "VOC" + YEAR
    ET.SubElement(root, "filename").text = image.index + ".jpg"
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "mxdet synthetic shapes"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(image.width)
    ET.SubElement(size, "height").text = str(image.height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for obj in image.objects:
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = obj.name
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = str(obj.truncated)
        ET.SubElement(node, "difficult").text = str(obj.difficult)
        box = ET.SubElement(node, "bndbox")
        for key in ("xmin", "ymin", "xmax", "ymax"):
            ET.SubElement(box, key).text = str(getattr(obj, key))
    ET.indent(root, space="\t")
    return ET.tostring(root, encoding="utf-8") + b"\n"


def _write_one(settings: SynthSettings, data_dir: str, number: int, split: str) -> SynthImage:
    record, jpeg, xml = _render_image(settings, number, split)
    write_atomic(os.path.join(data_dir, "JPEGImages", record.index + ".jpg"), jpeg)
    write_atomic(os.path.join(data_dir, "Annotations", record.index + ".xml"), xml)
    return record


def _write_chunk(settings: SynthSettings, data_dir: str, jobs: list[tuple[int, str]]) -> list[SynthImage]:
    return [_write_one(settings, data_dir, number, split) for number, split in jobs]


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core


def make_synthetic(
    out: str, settings: SynthSettings | None = None, log: Callable[[str], None] | None = print
) -> SynthDataset:
    """Write a synthetic VOC-layout data set under ``out`` and return its record.

    ``out`` gets ``synth.names`` and ``VOCdevkit/VOCsynth``; ``settings`` (default
    :class:`SynthSettings`, the command line's defaults) say what to draw; ``log`` prints the
    progress, or None for silence. Raises :class:`UserError` for settings out of range.
    """
    settings = settings or SynthSettings()
    settings.check()
    num_train, num_val = settings.num_train, settings.num_val
    devkit = os.path.join(out, "VOCdevkit")
    data_dir = os.path.join(devkit, "VOC" + YEAR)
    for sub in ("JPEGImages", "Annotations", os.path.join("ImageSets", "Main")):
        os.makedirs(os.path.join(data_dir, sub), exist_ok=True)
    jobs = [(n, "train") for n in range(1, num_train + 1)]
    jobs += [(n, "val") for n in range(num_train + 1, num_train + num_val + 1)]

    start = time.time()
    workers = settings.workers or os.cpu_count() or 1
    chunk = 16
    chunks = [jobs[i:i + chunk] for i in range(0, len(jobs), chunk)]
    images: list[SynthImage] = []
    report_every = max(1, len(chunks) // 10)

    def collect(results, done: int) -> None:
        images.extend(results)
        if log and len(jobs) >= 500 and done % report_every == 0:
            log(f"  {len(images)}/{len(jobs)} images ({time.time() - start:.1f}s)")

    if workers > 1 and len(jobs) >= 64:
        # spawn, not fork: the caller may have started mxnet's threads already
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
            settings_each, data_dir_each = [settings] * len(chunks), [data_dir] * len(chunks)
            for done, results in enumerate(pool.map(_write_chunk, settings_each, data_dir_each, chunks), 1):
                collect(results, done)
    else:
        for done, part in enumerate(chunks, 1):
            collect(_write_chunk(settings, data_dir, part), done)

    class_names = SHAPE_NAMES[:settings.classes]
    sets = {"train": [im for im in images if im.split == "train"], "val": [im for im in images if im.split == "val"]}
    sets["trainval"] = sets["train"] + sets["val"]
    sets["test"] = sets["val"]
    for name, members in sets.items():
        text = "".join(im.index + "\n" for im in members)
        write_atomic(os.path.join(data_dir, "ImageSets", "Main", name + ".txt"), text.encode())
    names_file = os.path.join(out, "synth.names")
    write_atomic(names_file, "".join(n + "\n" for n in class_names).encode())

    result = SynthDataset(out=out, devkit=devkit, data_dir=data_dir, names_file=names_file,
                          classes=class_names, images=images)
    if log:
        objects = [o for im in images for o in im.objects]
        log(f"wrote {len(images)} images ({num_train} train, {num_val} val) with {len(objects)} objects "
            f"({sum(o.truncated for o in objects)} truncated, {sum(o.difficult for o in objects)} difficult) "
            f"of {settings.classes} classes to {data_dir} in {time.time() - start:.1f}s; class names in {names_file}")
    return result
