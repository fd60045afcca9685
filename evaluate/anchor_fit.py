"""Do a data set's boxes fit the anchors? Coverage by object size, and anchors fitted to the boxes.

A ground-truth box trains well only when some anchor overlaps it enough to be matched by the
overlap rule: SSD's ``MultiBoxTarget`` matches an anchor whose IoU with the box is *strictly
above* 0.5; the Faster R-CNN ``AnchorSampler`` marks an anchor foreground at IoU ``>=
rpn_fg_overlap`` (0.7). Both also force-match each box's best anchor whatever its IoU, but a box
whose best anchor sits at IoU 0.2 learns poorly. The **coverage** of a set of boxes is the share
whose best anchor passes the rule. It is reported overall and by object size in pixels
(``sqrt(w * h)`` at the network input; bands ``<16``, ``16-32``, ``32-64``, ``64-128``,
``>=128``), and :func:`warnings` turns a poor report into lines that name the band and the command
that fixes it (``tools/fit_anchors.py``).

Boxes are ``[M, 4]`` rows ``(xmin, ymin, xmax, ymax)``. SSD boxes and anchors are normalised to the
(square, force-resized) input; Faster R-CNN ones are pixels of the resized image.

Anchors are computed in numpy exactly as the graphs do: :func:`ssd_anchors` as ``MultiBoxPrior``
on the feature-map sizes that shape inference of the network's graph gives, :func:`rcnn_anchors`
as :class:`dataset.rcnn_anchor.AnchorGenerator`. :func:`coverage` is the plain, chunked
all-pairs test; the report and fitting functions use an exact shortcut instead: all anchors of one
shape sit on a regular grid of centres, and since the overlap of two boxes can only shrink as their
centres move apart on either axis, the best anchor of that shape is the one centred nearest to
the box, found in O(1) per box and shape.

:func:`fit_ssd_anchors` proposes per-layer ``sizes`` and ``ratios`` for a data set, keeping the
presets' form (per layer ``[s_k, sqrt(s_k * s_k+1)]`` and the same number of sizes and ratios, so
every head keeps its shape) and, when no anchors on the network's grid at the given input size
reach the target coverage, the smallest larger ``--data-shape`` that does.
"""
from __future__ import annotations

import ast
import contextlib
import functools
import io
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from config.errors import UserError

BAND_EDGES_PX = (16, 32, 64, 128)
TARGET_COVERAGE = 0.95  # below this share overall, warn
BAND_MIN_SHARE = 0.05  # a band holding at least this share of the objects ...
BAND_MIN_COVERAGE = 0.80  # ... warns below this coverage
SSD_OVERLAP = 0.5  # MultiBoxTarget's overlap_threshold in symbol/symbol_builder.py
# input sizes tried when the grid at the given one is too coarse for the objects
DATA_SHAPES = (128, 160, 192, 224, 256, 300, 320, 384, 448, 512, 640, 768)
_FIT_SAMPLE = 4000  # boxes the size search scores (reports use all of them)


# --------------------------------------------------------------------------------------------
# reading boxes


def read_record_objects(rec_path: str) -> list[np.ndarray]:
    """Each record's objects, in file order: ``[n_i, 6]`` rows ``(cls, xmin, ymin, xmax, ymax, difficult)``.

    The label of a record is ``[header_width, object_width, header..., objects...]`` as
    ``tools/prepare_dataset.py`` packs it; padding rows (``cls < 0``) are skipped and a label
    without a difficult column reads 0. Raises :class:`UserError` naming the file when it is
    missing, not RecordIO, cut mid-record, or holds a record without a detection label.
    """
    from dataset.recordio import detection_objects, iter_records

    return [detection_objects(header.label, rec_path, number)
            for number, (header, _) in enumerate(iter_records(rec_path))]


def read_record_boxes(rec_path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every object of a detection ``.rec``: ``(boxes [M, 4], classes [M], difficult [M], image [M])``.

    ``boxes`` are normalised ``(xmin, ymin, xmax, ymax)`` (float64), ``classes`` int, ``difficult``
    bool (False where the label has no difficult column) and ``image`` the record's position in the
    file (int). Callers leave difficult objects out of coverage, as the training graphs do. Errors
    as :func:`read_record_objects`.

    The arrays are read-only: a start-up that fits anchors and then checks their coverage reads the
    file once (the last two files read are kept, by real path, size and modification time).
    """
    try:
        stat = os.stat(rec_path)
        key = (os.path.realpath(rec_path), stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None  # read_record_objects names the file in its error
    if key in _RECENT_BOXES:
        return _RECENT_BOXES[key]
    rows = read_record_objects(rec_path)
    objects = np.concatenate(rows) if rows else np.zeros((0, 6))
    image = np.concatenate([np.full(len(r), number, dtype=np.int64) for number, r in enumerate(rows)] or
                           [np.zeros(0, dtype=np.int64)])
    arrays = objects[:, 1:5].copy(), objects[:, 0].astype(np.int64), objects[:, 5] > 0, image
    for array in arrays:
        array.flags.writeable = False
    if key is not None:
        _RECENT_BOXES[key] = arrays
        while len(_RECENT_BOXES) > 2:
            del _RECENT_BOXES[next(iter(_RECENT_BOXES))]
    return arrays


# read_record_boxes' last results, oldest first
_RECENT_BOXES: dict[tuple[str, int, int], tuple[np.ndarray, ...]] = {}


def read_record_image_sizes(rec_path: str) -> np.ndarray:
    """``[num_records, 2]`` (height, width) in pixels of every image of ``rec_path``, in record order.

    Faster R-CNN resizes each image by its own size, so its anchors' fit depends on it.
    """
    from dataset.recordio import image_sizes

    return np.array([(height, width) for width, height in image_sizes(rec_path)], dtype=np.float64).reshape(-1, 2)


# --------------------------------------------------------------------------------------------
# anchors


@dataclass(frozen=True)
class SSDLayer:
    """The anchors ``MultiBoxPrior`` puts on one ``height x width`` feature map.

    Centres are ``((col + 0.5) * step_x, (row + 0.5) * step_y)``; ``sizes``/``ratios`` as the
    op's attributes (normalised sizes, ratios ``w / h``).
    """

    height: int
    width: int
    step_y: float
    step_x: float
    sizes: tuple[float, ...]
    ratios: tuple[float, ...]

    def shapes(self) -> np.ndarray:
        """``[A, 2]`` anchor (width, height) in MultiBoxPrior's order: every size at ``ratios[0]``,
        then ``sizes[0]`` at each further ratio."""
        aspect = self.height / self.width  # 1 on the square inputs SSD uses
        pairs = [(size, self.ratios[0]) for size in self.sizes] + [(self.sizes[0], r) for r in self.ratios[1:]]
        return np.array([(s * aspect * math.sqrt(r), s / math.sqrt(r)) for s, r in pairs], dtype=np.float64)

    def anchors(self) -> np.ndarray:
        """``[height * width * A, 4]`` corner anchors, row-major over positions, then anchor."""
        cx = (np.arange(self.width) + 0.5) * self.step_x
        cy = (np.arange(self.height) + 0.5) * self.step_y
        cx, cy = np.meshgrid(cx, cy)  # [H, W]
        half = self.shapes() / 2  # [A, 2]
        centres = np.stack([cx.ravel(), cy.ravel()], axis=1)[:, None, :]  # [HW, 1, 2]
        return np.concatenate([centres - half, centres + half], axis=2).reshape(-1, 4)


@functools.lru_cache(maxsize=64)
def ssd_feature_shapes(network: str, data_shape: int) -> tuple[tuple[int, int], ...]:
    """``(height, width)`` of each feature map ``network`` puts anchors on at a square ``data_shape``.

    Read from the network's test graph by shape inference of each ``MultiBoxPrior`` input.
    Raises :class:`UserError` naming ``--network`` or ``--data-shape`` when the network is unknown
    or its graph refuses that input size.
    """
    from symbol.symbol_factory import get_symbol

    # vgg16_reduced logs a caution for untested input sizes; probing many sizes would repeat it
    factory_log = logging.getLogger("symbol")
    level = factory_log.level
    factory_log.setLevel(logging.ERROR)
    try:
        sym = get_symbol(network, int(data_shape), num_classes=1)
    finally:
        factory_log.setLevel(level)
    nodes = json.loads(sym.tojson())["nodes"]
    internals = sym.get_internals()
    inputs = [nodes[node["inputs"][0][0]]["name"] for node in nodes if node["op"] == "_contrib_MultiBoxPrior"]
    import mxnet as mx

    group = mx.sym.Group([internals[f"{name}_output"] for name in inputs])
    with contextlib.redirect_stdout(io.StringIO()):
        _, out_shapes, _ = group.infer_shape(data=(1, 3, int(data_shape), int(data_shape)))
    return tuple((int(shape[2]), int(shape[3])) for shape in out_shapes)


def data_shape_fits(network: str, data_shape: int) -> bool:
    """Whether ``network``'s graph accepts a square input of ``data_shape`` pixels."""
    try:
        ssd_feature_shapes(network, data_shape)
    except UserError as err:
        if str(err).startswith("--network"):
            raise
        return False
    return True


def _per_layer(flag: str, values, num_layers: int, per_layer_required: bool) -> list[list[float]]:
    values = list(values)
    if values and not isinstance(values[0], (list, tuple)):
        if per_layer_required:
            raise UserError(f"{flag} {values}: give one list per feature layer, e.g. [[.1,.141],[.2,.272]]")
        values = [values] * num_layers
    if len(values) != num_layers:
        raise UserError(f"{flag}: {len(values)} layer lists given, the network has {num_layers} feature layers")
    out = []
    for layer in values:
        layer = [float(v) for v in layer]
        if not layer or any(not math.isfinite(v) or v <= 0 for v in layer):
            raise UserError(f"{flag} {values}: every layer needs at least one positive number")
        out.append(layer)
    return out


def ssd_layers(network: str, data_shape: int, sizes: Sequence | None = None, ratios: Sequence | None = None,
               steps: Sequence[float] | None = None) -> list[SSDLayer]:
    """The anchor layers of ``network`` at ``data_shape``: the preset's sizes, ratios and steps unless given.

    ``sizes`` is one list per layer; ``ratios`` one list per layer or one list for all (as
    ``multibox_layer`` accepts); ``steps`` one normalised step per layer, empty for ``1 / map size``.
    """
    from symbol.symbol_factory import get_config

    config = get_config(network, int(data_shape))
    shapes = ssd_feature_shapes(network, int(data_shape))
    num_layers = len(shapes)
    sizes = _per_layer("--anchor-sizes", config["sizes"] if sizes is None else sizes, num_layers, True)
    ratios = _per_layer("--anchor-ratios", config["ratios"] if ratios is None else ratios, num_layers, False)
    steps = list(config.get("steps") or []) if steps is None else list(steps)
    if steps and len(steps) != num_layers:
        raise UserError(f"steps: {len(steps)} given, the network has {num_layers} feature layers")
    layers = []
    for k, (height, width) in enumerate(shapes):
        step_y, step_x = (steps[k], steps[k]) if steps else (1.0 / height, 1.0 / width)
        layers.append(SSDLayer(height, width, float(step_y), float(step_x), tuple(sizes[k]), tuple(ratios[k])))
    return layers


def ssd_anchors(network: str, data_shape: int, sizes: Sequence | None = None, ratios: Sequence | None = None,
                steps: Sequence[float] | None = None) -> np.ndarray:
    """``[N, 4]`` normalised corner anchors of ``network`` at ``data_shape``, in the graph's order.

    The rows of ``multibox_anchors`` (8,732 for vgg16_reduced at 300): layer by layer, positions
    row-major, then anchor; ``MultiBoxPrior`` with ``clip=False`` and offsets 0.5.
    """
    return np.concatenate([layer.anchors() for layer in ssd_layers(network, data_shape, sizes, ratios, steps)])


def ssd_anchor_shapes(network: str, data_shape: int, sizes: Sequence | None = None,
                      ratios: Sequence | None = None) -> list[np.ndarray]:
    """Per layer ``[A_k, 2]`` normalised anchor (width, height): what a box-shape scatter draws."""
    return [layer.shapes() for layer in ssd_layers(network, data_shape, sizes, ratios)]


def rcnn_anchors(feat_stride: int, scales: Sequence[float], ratios: Sequence[float], image_hw: Sequence[int],
                 feat_hw: Sequence[int] | None = None) -> np.ndarray:
    """``[fh * fw * A, 4]`` pixel anchors (inclusive ends) as the RPN's ``AnchorLoader`` generates them.

    ``image_hw`` is the resized image (height, width); ``feat_hw`` the RPN feature map, by default
    ``ceil(side / feat_stride)`` (the loader takes it from the graph, which may floor instead).
    ``ratios`` are ``h / w`` as in py-faster-rcnn. Order: row ``k * A + a`` is base anchor ``a`` at
    cell ``k = y * fw + x``.
    """
    from dataset.rcnn_anchor import AnchorGenerator

    fh, fw = feat_hw if feat_hw is not None else _rcnn_feat_hw(image_hw, feat_stride)
    return AnchorGenerator(feat_stride, scales, ratios).generate(int(fh), int(fw))


def _rcnn_feat_hw(image_hw: Sequence[int], feat_stride: int) -> tuple[int, int]:
    return int(math.ceil(image_hw[0] / feat_stride)), int(math.ceil(image_hw[1] / feat_stride))


def rcnn_inside(anchors: np.ndarray, image_hw: Sequence[int], allowed_border: float = 0) -> np.ndarray:
    """``[N]`` bool: the anchors ``AnchorSampler`` considers (inside the image, up to ``allowed_border``)."""
    border = allowed_border
    return ((anchors[:, 0] >= -border) & (anchors[:, 1] >= -border)
            & (anchors[:, 2] < image_hw[1] + border) & (anchors[:, 3] < image_hw[0] + border))


# --------------------------------------------------------------------------------------------
# coverage, all pairs


def _box_area(boxes: np.ndarray, pixel_offset: float) -> np.ndarray:
    return (np.maximum(boxes[:, 2] - boxes[:, 0] + pixel_offset, 0.0)
            * np.maximum(boxes[:, 3] - boxes[:, 1] + pixel_offset, 0.0))


def _max_iou(boxes: np.ndarray, anchors: np.ndarray, pixel_offset: float) -> np.ndarray:
    """``[m]`` best IoU of each of ``boxes`` [m, 4] over ``anchors`` [n, 4] (one dense block)."""
    if anchors.shape[0] == 0:
        return np.zeros(boxes.shape[0])
    iw = np.minimum(boxes[:, None, 2], anchors[None, :, 2]) - np.maximum(boxes[:, None, 0], anchors[None, :, 0])
    ih = np.minimum(boxes[:, None, 3], anchors[None, :, 3]) - np.maximum(boxes[:, None, 1], anchors[None, :, 1])
    inter = np.maximum(iw + pixel_offset, 0.0) * np.maximum(ih + pixel_offset, 0.0)
    union = _box_area(boxes, pixel_offset)[:, None] + _box_area(anchors, pixel_offset)[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.max(axis=1)


def best_iou(boxes: np.ndarray, anchors: np.ndarray, pixel_offset: float = 0.0,
             max_pairs: int = 4_000_000) -> np.ndarray:
    """``[M]`` IoU of each box of ``boxes`` [M, 4] with its best anchor of ``anchors`` [N, 4].

    Computed in chunks of boxes of at most ``max_pairs`` pairs. ``pixel_offset`` 1 measures
    inclusive pixel boxes (``w = x2 - x1 + 1``) as Faster R-CNN does.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    chunk = max(1, max_pairs // max(1, anchors.shape[0]))
    return np.concatenate([_max_iou(boxes[i:i + chunk], anchors, pixel_offset)
                           for i in range(0, boxes.shape[0], chunk)] or [np.zeros(0)])


def coverage(boxes: np.ndarray, anchors: np.ndarray, threshold: float, strict: bool = False,
             pixel_offset: float = 0.0, max_pairs: int = 4_000_000) -> np.ndarray:
    """``[M]`` bool: whether the best anchor of each box of ``boxes`` [M, 4] has IoU ``>= threshold``.

    ``strict`` asks for IoU ``> threshold`` instead: SSD's ``MultiBoxTarget`` matches only above its
    threshold (an IoU of exactly 0.5 is not matched), Faster R-CNN's ``AnchorSampler`` at or above.
    Boxes are taken in order of area, and each chunk is compared only with the anchors whose area
    could reach the threshold (IoU is at most the ratio of the smaller area to the larger), so
    VOC's 40,000 boxes against 8,732 anchors take seconds.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    anchors = np.asarray(anchors, dtype=np.float64).reshape(-1, 4)
    result = np.zeros(boxes.shape[0], dtype=bool)
    if boxes.shape[0] == 0 or anchors.shape[0] == 0 or threshold > 1:
        return result
    box_area, anchor_area = _box_area(boxes, pixel_offset), _box_area(anchors, pixel_offset)
    order = np.argsort(box_area, kind="stable")
    by_area = np.argsort(anchor_area, kind="stable")
    sorted_area = anchor_area[by_area]
    chunk = max(1, max_pairs // anchors.shape[0])
    for start in range(0, boxes.shape[0], chunk):
        rows = order[start:start + chunk]
        low, high = box_area[rows].min(), box_area[rows].max()
        if threshold > 0:
            lo = np.searchsorted(sorted_area, low * threshold * (1 - 1e-9), side="left")
            hi = np.searchsorted(sorted_area, high / threshold * (1 + 1e-9), side="right")
            candidates = anchors[by_area[lo:hi]]
        else:
            candidates = anchors
        iou = _max_iou(boxes[rows], candidates, pixel_offset)
        result[rows] = iou > threshold if strict else iou >= threshold
    return result


# --------------------------------------------------------------------------------------------
# best IoU on regular grids (exact, O(boxes x anchor shapes))


def _axis_overlap(box_side: np.ndarray, anchor_side: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """Overlap of two segments of the given lengths whose centres are ``offset`` apart."""
    return np.clip(np.minimum(np.minimum(box_side, anchor_side), (box_side + anchor_side) / 2 - offset), 0.0, None)


def _shape_iou(bw: np.ndarray, bh: np.ndarray, dx: np.ndarray, dy: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """``[M]`` best IoU over ``shapes`` [A, 2] of anchors centred ``(dx, dy)`` [M] away from boxes ``(bw, bh)``."""
    aw, ah = shapes[None, :, 0], shapes[None, :, 1]
    inter = _axis_overlap(bw[:, None], aw, dx[:, None]) * _axis_overlap(bh[:, None], ah, dy[:, None])
    union = (bw * bh)[:, None] + aw * ah - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.max(axis=1) if iou.shape[1] else np.zeros(bw.shape[0])


def _grid_offset(centre: np.ndarray, first: float, step: float, low, high) -> np.ndarray:
    """Distance from ``centre`` [M] to the nearest of the points ``first + step * i``, ``low <= i <= high``.

    ``low``/``high`` may be per box; where ``low > high`` there is no point (infinite distance).
    The distance is convex in ``i``, so the rounded position clipped into the range is the nearest.
    """
    index = np.clip(np.round((centre - first) / step), low, high)
    distance = np.abs(centre - (first + step * index))
    return np.where(np.asarray(low) <= np.asarray(high), distance, np.inf)


def ssd_best_iou(boxes: np.ndarray, layers: Sequence[SSDLayer]) -> np.ndarray:
    """``[M]`` IoU of each normalised box with its best anchor of ``layers`` (= :func:`best_iou` on
    :func:`ssd_anchors`, exactly, in O(M x anchor shapes))."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    best = np.zeros(boxes.shape[0])
    for layer in layers:
        dx = _grid_offset(cx, 0.5 * layer.step_x, layer.step_x, 0, layer.width - 1)
        dy = _grid_offset(cy, 0.5 * layer.step_y, layer.step_y, 0, layer.height - 1)
        best = np.maximum(best, _shape_iou(bw, bh, dx, dy, layer.shapes()))
    return best


def rcnn_best_iou(gt_boxes: np.ndarray, image_hw: np.ndarray, feat_stride: int, scales: Sequence[float],
                  ratios: Sequence[float], allowed_border: float = 0,
                  feat_hw: np.ndarray | None = None) -> np.ndarray:
    """``[M]`` IoU (``pixel_offset=1``) of each pixel box with its best *inside* RPN anchor.

    ``gt_boxes`` [M, 4] are inclusive pixel boxes of the resized images, ``image_hw`` [M, 2] the
    resized (height, width) of each box's image, ``feat_hw`` [M, 2] its RPN map (default
    ``ceil(side / stride)``). Equal to :func:`best_iou` over the anchors of :func:`rcnn_anchors`
    that :func:`rcnn_inside` keeps, as :class:`dataset.rcnn_anchor.AnchorSampler` uses them.
    """
    from dataset.rcnn_anchor import base_anchors

    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    image_hw = np.asarray(image_hw, dtype=np.float64).reshape(-1, 2)
    if feat_hw is None:
        feat_hw = np.ceil(image_hw / feat_stride)
    feat_hw = np.asarray(feat_hw, dtype=np.float64).reshape(-1, 2)
    # inclusive ends -> continuous extents, so the IoU needs no +1
    bw, bh = gt[:, 2] - gt[:, 0] + 1, gt[:, 3] - gt[:, 1] + 1
    cx, cy = gt[:, 0] + bw / 2, gt[:, 1] + bh / 2
    best = np.zeros(gt.shape[0])
    for x1, y1, x2, y2 in base_anchors(feat_stride, ratios, scales):
        shape = np.array([[x2 - x1 + 1, y2 - y1 + 1]])
        # shift i is inside when x1 + s*i >= -border and x2 + s*i < W + border (AnchorSampler)
        low_x = np.maximum(0, np.ceil((-allowed_border - x1) / feat_stride))
        low_y = np.maximum(0, np.ceil((-allowed_border - y1) / feat_stride))
        high_x = np.minimum(feat_hw[:, 1] - 1, np.ceil((image_hw[:, 1] + allowed_border - x2) / feat_stride) - 1)
        high_y = np.minimum(feat_hw[:, 0] - 1, np.ceil((image_hw[:, 0] + allowed_border - y2) / feat_stride) - 1)
        dx = _grid_offset(cx, (x1 + x2 + 1) / 2, feat_stride, low_x, high_x)
        dy = _grid_offset(cy, (y1 + y2 + 1) / 2, feat_stride, low_y, high_y)
        best = np.maximum(best, _shape_iou(bw, bh, dx, dy, shape))
    return best


def rcnn_gt_boxes(boxes: np.ndarray, image_hw: np.ndarray, short_side: int, long_side: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Normalised boxes [M, 4] of images ``image_hw`` [M, 2] as the R-CNN loader sees them.

    Returns ``(gt_boxes [M, 4], resized_hw [M, 2])``: inclusive pixel boxes of the image resized so
    its short side is ``short_side`` unless the long side would pass ``long_side`` (the loader's
    ``resize_scale`` and ``objects_to_gt_boxes``).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    image_hw = np.asarray(image_hw, dtype=np.float64).reshape(-1, 2)
    scale = short_side / image_hw.min(axis=1)
    too_long = np.round(scale * image_hw.max(axis=1)) > long_side
    scale = np.where(too_long, long_side / image_hw.max(axis=1), scale)
    height, width = image_hw[:, 0], image_hw[:, 1]
    gt = boxes * np.stack([width, height, width, height], axis=1)
    gt[:, 2:] -= 1.0
    gt *= scale[:, None]
    resized = np.stack([np.round(height * scale), np.round(width * scale)], axis=1)
    return gt, resized


# --------------------------------------------------------------------------------------------
# reports and warnings


@dataclass(frozen=True)
class BandCoverage:
    """Coverage of the objects whose size (``sqrt(w * h)`` in pixels) is in ``[low_px, high_px)``."""

    label: str
    low_px: float
    high_px: float
    count: int
    covered: int

    @property
    def share(self) -> float:
        """Covered share of the band's objects (nan for an empty band)."""
        return self.covered / self.count if self.count else float("nan")


@dataclass
class CoverageReport:
    """Anchor coverage of a set of boxes, overall and by size band.

    ``rule`` is ``'>'`` (SSD) or ``'>='`` (Faster R-CNN); ``anchors`` says which anchors were
    measured; ``network``, ``data_shape`` (None for Faster R-CNN) and ``rec`` go into the fix
    command that :func:`warnings` prints.
    """

    threshold: float
    rule: str
    total: int
    covered: int
    bands: list[BandCoverage]
    network: str
    data_shape: int | None
    rec: str | None = None
    anchors: str = "preset"
    size_unit: str = "px"

    @property
    def share(self) -> float:
        """Covered share of all objects (nan without objects)."""
        return self.covered / self.total if self.total else float("nan")

    def fix_command(self) -> str:
        """The ``tools/fit_anchors.py`` command line that proposes anchors for this data."""
        command = f"python tools/fit_anchors.py --rec {self.rec or '<train.rec>'} --network {self.network}"
        return command + (f" --data-shape {self.data_shape}" if self.data_shape else "")

    def lines(self) -> list[str]:
        """A small table: one line per band, then the total."""
        out = [f"anchor coverage ({self.anchors} anchors, best IoU {self.rule} {self.threshold:g}), "
               f"by object size sqrt(w*h) in pixels of the input:"]
        for band in self.bands:
            share = f"{100 * band.share:5.1f}%" if band.count else "    -"
            out.append(f"  {band.label:>8} px  {band.count:7d} objects  {share}")
        out.append(f"  {'all':>8}     {self.total:7d} objects  {100 * self.share:5.1f}%")
        return out


def band_labels(edges: Sequence[float] = BAND_EDGES_PX) -> list[tuple[str, float, float]]:
    """``(label, low, high)`` of the size bands cut at ``edges``: ``<16``, ``16-32``, ..., ``>=128``."""
    bounds = [0.0, *edges, math.inf]
    labels = [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])] + [f">={edges[-1]:g}"]
    return [(label, bounds[i], bounds[i + 1]) for i, label in enumerate(labels)]


def coverage_report(covered: np.ndarray, size_px: np.ndarray, threshold: float, network: str,
                    data_shape: int | None, rec: str | None = None, rule: str = ">",
                    anchors: str = "preset", edges: Sequence[float] = BAND_EDGES_PX) -> CoverageReport:
    """Summarise ``covered`` [M] (bool) by the objects' sizes ``size_px`` [M] (pixels)."""
    covered = np.asarray(covered, dtype=bool).ravel()
    size_px = np.asarray(size_px, dtype=np.float64).ravel()
    bands = []
    for label, low, high in band_labels(edges):
        inside = (size_px >= low) & (size_px < high)
        bands.append(BandCoverage(label, low, high, int(inside.sum()), int(covered[inside].sum())))
    return CoverageReport(threshold, rule, int(covered.size), int(covered.sum()), bands, network,
                          data_shape, rec, anchors)


def warnings(report: CoverageReport, target: float = TARGET_COVERAGE, band_share: float = BAND_MIN_SHARE,
             band_coverage: float = BAND_MIN_COVERAGE) -> list[str]:
    """Warning lines for a poor ``report`` (empty when it is fine).

    One line when the overall coverage is below ``target``, and one for each band that holds at
    least ``band_share`` of the objects and whose coverage is below ``band_coverage``. Each names
    the figures and the command that proposes better anchors.
    """
    if not report.total:
        return []
    where = f"--network {report.network}" + (f" --data-shape {report.data_shape}" if report.data_shape else "")
    rule = f"IoU {report.rule} {report.threshold:g}"
    out = []
    if report.share < target:
        out.append(f"anchor coverage: only {100 * report.share:.1f}% of {report.total} objects have an anchor "
                   f"of {rule} with {where} (below {100 * target:.0f}%); objects without one learn poorly. "
                   f"Fit anchors to the data: {report.fix_command()}")
    for band in report.bands:
        if band.count and band.count >= band_share * report.total and band.share < band_coverage:
            out.append(f"anchor coverage: objects of {band.label} px ({band.count}, "
                       f"{100 * band.count / report.total:.0f}% of all) have an anchor of {rule} only "
                       f"{100 * band.share:.1f}% of the time with {where} (below {100 * band_coverage:.0f}%). "
                       f"Fit anchors to the data: {report.fix_command()}")
    return out


def ssd_coverage_report(boxes: np.ndarray, network: str, data_shape: int, sizes: Sequence | None = None,
                        ratios: Sequence | None = None, steps: Sequence[float] | None = None,
                        rec: str | None = None, threshold: float = SSD_OVERLAP, size_shape: int | None = None,
                        anchors: str | None = None) -> CoverageReport:
    """Coverage of normalised ``boxes`` [M, 4] by ``network``'s anchors at ``data_shape``.

    The rule is ``MultiBoxTarget``'s (IoU ``> threshold``). Sizes are measured in pixels of
    ``size_shape`` (default ``data_shape``), so that reports at several input sizes share bands.
    """
    layers = ssd_layers(network, data_shape, sizes, ratios, steps)
    best = ssd_best_iou(boxes, layers)
    size_px = _box_scale(boxes) * (size_shape or data_shape)
    label = anchors or ("preset" if sizes is None and ratios is None else "given")
    return coverage_report(best > threshold, size_px, threshold, network, int(data_shape), rec, ">", label)


@dataclass(frozen=True)
class RPNGrid:
    """How the RPN of ``network`` sees an image: resized so the short side is ``short_side`` (the long
    side at most ``long_side``), anchors every ``feat_stride`` pixels, kept when inside the image by
    ``allowed_border``; ``feat_shape(height, width)`` gives the map size (None: ``ceil(side / stride)``)."""

    network: str
    feat_stride: int
    short_side: int
    long_side: int
    allowed_border: float = 0
    feat_shape: Callable[[int, int], tuple[int, int]] | None = None

    @classmethod
    def of(cls, cfg, feat_shape: Callable[[int, int], tuple[int, int]] | None = None) -> RPNGrid:
        """The grid of an ``RCNNConfig``."""
        return cls(cfg.network, cfg.rpn_feat_stride, cfg.img_short_side, cfg.img_long_side, cfg.rpn_allowed_border,
                   feat_shape)


def rcnn_coverage_report(boxes: np.ndarray, image_hw: np.ndarray, grid: RPNGrid, scales: Sequence[float],
                         ratios: Sequence[float], threshold: float, rec: str | None = None,
                         anchors: str = "preset") -> CoverageReport:
    """Coverage (IoU ``>= threshold``, the RPN's foreground rule) of normalised ``boxes`` [M, 4]
    whose images are ``image_hw`` [M, 2] (original pixels), by ``scales`` x ``ratios`` anchors on
    ``grid``. Sizes are pixels of the resized image."""
    gt, resized = rcnn_gt_boxes(boxes, image_hw, grid.short_side, grid.long_side)
    feat_hw = _feat_hw(resized, grid.feat_stride, grid.feat_shape)
    best = rcnn_best_iou(gt, resized, grid.feat_stride, scales, ratios, grid.allowed_border, feat_hw)
    size_px = np.sqrt(np.maximum(gt[:, 2] - gt[:, 0] + 1, 0) * np.maximum(gt[:, 3] - gt[:, 1] + 1, 0))
    return coverage_report(best >= threshold, size_px, threshold, grid.network, None, rec, ">=", anchors)


def _feat_hw(resized: np.ndarray, feat_stride: int, feat_shape: Callable | None) -> np.ndarray:
    if feat_shape is None:
        return np.ceil(resized / feat_stride)
    sizes = {(int(h), int(w)) for h, w in resized}
    lookup = {size: feat_shape(*size) for size in sizes}
    return np.array([lookup[(int(h), int(w))] for h, w in resized], dtype=np.float64).reshape(-1, 2)


def _box_scale(boxes: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0))


# --------------------------------------------------------------------------------------------
# fitting


def kmeans_ratios(aspects: np.ndarray, k: int, iterations: int = 30) -> np.ndarray:
    """``k`` aspect ratios for boxes of aspect ``aspects`` [M] by k-means with an IoU distance.

    The distance of two aspects is ``1 - IoU`` of two boxes of equal area and centre with those
    aspects: ``1 - q / (2 - q)``, ``q = sqrt(min / max)`` (sizes are fitted separately, so only the
    shape counts). Returns ``[k]`` centres, the most populous cluster first (``ratios[0]`` is the
    one MultiBoxPrior uses for every size).
    """
    with np.errstate(divide="ignore", invalid="ignore"):  # degenerate boxes give 0 or inf, dropped below
        logs = np.log(np.asarray(aspects, dtype=np.float64).ravel())
    logs = logs[np.isfinite(logs)]
    if logs.size == 0:
        return np.ones(k)
    centres = np.quantile(logs, (np.arange(k) + 0.5) / k)

    def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        q = np.exp(-np.abs(a[:, None] - b[None, :]) / 2)
        return 1 - q / (2 - q)

    for _ in range(iterations):
        assign = distance(logs, centres).argmin(axis=1)
        new = centres.copy()
        for j in range(k):
            members = logs[assign == j]
            if members.size:
                candidates = np.quantile(members, np.linspace(0, 1, 41))
                new[j] = candidates[distance(members, candidates).sum(axis=0).argmin()]
        if np.allclose(new, centres):
            break
        centres = new
    counts = np.bincount(distance(logs, centres).argmin(axis=1), minlength=k)
    return np.exp(centres[np.argsort(-counts, kind="stable")])


def _round(value: float, digits: int = 3) -> float:
    return float(f"{value:.{digits}g}")


def format_number(value: float) -> str:
    """``0.141`` -> ``.141``, ``1.0`` -> ``1``: the presets' way of writing anchor numbers."""
    text = f"{value:.4g}"
    if "e" in text:
        text = f"{value:.6f}".rstrip("0")
    if text.startswith("0."):
        text = text[1:]
    return text.removesuffix(".0")


def format_anchor_list(values: Sequence[Sequence[float]]) -> str:
    """``[[.1,.141],[.2,.272]]``: per-layer lists as ``--anchor-sizes``/``--anchor-ratios`` take them."""
    return "[" + ",".join("[" + ",".join(format_number(v) for v in layer) + "]" for layer in values) + "]"


def parse_anchor_list(flag: str, text: str) -> list:
    """``--anchor-sizes``/``--anchor-ratios`` text (``[[.1,.141],[.2,.272]]`` or ``[1,2,.5]``) as lists.

    One-line :class:`UserError` naming ``flag`` for anything else. The per-layer count is checked
    against the network by :func:`ssd_layers` (``check_anchor_lists``).
    """
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        value = None

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0

    if isinstance(value, (list, tuple)) and value:
        if all(number(v) for v in value):
            return [float(v) for v in value]
        if all(isinstance(layer, (list, tuple)) and layer and all(number(v) for v in layer) for layer in value):
            return [[float(v) for v in layer] for layer in value]
    raise UserError(f"{flag} {text!r}: expected positive numbers, one list per feature layer, "
                    "such as '[[.1,.141],[.2,.272]]'")


def check_anchor_lists(network: str, data_shape: int, sizes: Sequence | None, ratios: Sequence | None) -> None:
    """One-line :class:`UserError` unless ``sizes``/``ratios`` fit ``network``'s layers at ``data_shape``."""
    ssd_layers(network, data_shape, sizes, ratios)


def _layer_sizes(scales: np.ndarray, counts: Sequence[int]) -> list[list[float]]:
    """Per-layer sizes from the increasing ``scales`` [L + 1]: layer ``k`` gets ``counts[k]`` sizes
    from ``s_k`` geometrically towards ``s_k+1`` (two sizes: ``[s_k, sqrt(s_k * s_k+1)]``)."""
    return [[float(scales[k] * (scales[k + 1] / scales[k]) ** (j / n)) for j in range(n)]
            for k, n in enumerate(counts)]


def _score(best: np.ndarray, threshold: float, strict: bool) -> float:
    """Coverage, with the mean IoU short of the threshold as a small tie-breaker (a gradient for the search)."""
    hit = best > threshold if strict else best >= threshold
    return float(hit.mean() + 1e-3 * np.minimum(best, threshold).mean() / threshold)


def _descend(start: np.ndarray, objective: Callable[[np.ndarray], float], low: float, high: float,
             min_gap: float = math.log(1.05)) -> tuple[np.ndarray, float]:
    """Coordinate ascent of ``objective`` over increasing log-values ``start`` [n] within ``[low, high]``."""
    params = np.array(start, dtype=np.float64)
    score = objective(params)
    for steps in (np.log([0.5, 0.63, 0.75, 0.85, 0.93, 1.07, 1.17, 1.33, 1.6, 2.0]),
                  np.log([0.95, 0.97, 0.985, 1.015, 1.03, 1.05])):
        for _ in range(12):
            improved = False
            for k in range(params.size):
                lower = params[k - 1] + min_gap if k > 0 else low
                upper = params[k + 1] - min_gap if k + 1 < params.size else high
                for step in steps:
                    value = params[k] + step
                    if not lower <= value <= upper:
                        continue
                    trial = params.copy()
                    trial[k] = value
                    trial_score = objective(trial)
                    if trial_score > score + 1e-12:
                        params, score, improved = trial, trial_score, True
            if not improved:
                break
    return params, score


@dataclass
class SSDAnchorFit:
    """What :func:`fit_ssd_anchors` proposes.

    ``sizes``/``ratios`` are per-layer lists (already rounded: the coverage figures are those of
    exactly these values) for ``data_shape``, which differs from ``given_data_shape`` when the
    given input's grid cannot reach ``target``. ``before`` is the preset at the given input;
    ``fitted_at_given`` the best anchors found there; ``after`` the proposal. All three bin sizes in
    pixels of the given input. ``tried`` maps each input size searched to its coverage.
    """

    network: str
    given_data_shape: int
    data_shape: int
    threshold: float
    target: float
    sizes: list[list[float]]
    ratios: list[list[float]]
    before: CoverageReport
    fitted_at_given: CoverageReport
    after: CoverageReport
    tried: dict[int, float] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        """Whether the proposal differs from the preset at the given input size."""
        preset = ssd_layers(self.network, self.given_data_shape)
        return (self.data_shape != self.given_data_shape or self.sizes != [list(x.sizes) for x in preset]
                or self.ratios != [list(x.ratios) for x in preset])

    @property
    def reached(self) -> bool:
        """Whether the proposal reaches the target coverage."""
        return self.after.share >= self.target

    def train_flags(self) -> str:
        """The ``train.py`` flags of the proposal."""
        flags = (f"--anchor-sizes \"{format_anchor_list(self.sizes)}\" "
                 f"--anchor-ratios \"{format_anchor_list(self.ratios)}\"")
        if self.data_shape != self.given_data_shape:
            flags = f"--data-shape {self.data_shape} " + flags
        return flags

    def graph_overrides(self) -> dict:
        """``SSDConfig.graph_overrides`` entries of the proposal."""
        return {"sizes": [list(s) for s in self.sizes], "ratios": [list(r) for r in self.ratios]}


def _fit_layers(boxes: np.ndarray, network: str, data_shape: int, threshold: float,
                strict: bool) -> tuple[list[list[float]], list[list[float]], float]:
    """Best per-layer sizes and ratios for normalised ``boxes`` at ``data_shape``: (sizes, ratios, coverage)."""
    preset = ssd_layers(network, data_shape)
    size_counts = [len(layer.sizes) for layer in preset]
    ratio_counts = [len(layer.ratios) for layer in preset]
    shapes = ssd_feature_shapes(network, data_shape)
    steps = [(layer.step_y, layer.step_x) for layer in preset]
    aspects = (boxes[:, 2] - boxes[:, 0]) / np.maximum(boxes[:, 3] - boxes[:, 1], 1e-12)
    fitted = {k: kmeans_ratios(aspects, k) for k in set(ratio_counts)}
    ratio_options = [[list(layer.ratios) for layer in preset],
                     [[_round(r, 2) for r in fitted[k]] for k in ratio_counts]]

    def layers_for(scales: np.ndarray, ratios: list[list[float]]) -> list[SSDLayer]:
        sizes = _layer_sizes(scales, size_counts)
        return [SSDLayer(h, w, sy, sx, tuple(s), tuple(r))
                for (h, w), (sy, sx), s, r in zip(shapes, steps, sizes, ratios)]

    # starts: the preset's own progression, and one spread over the objects' scales
    last = preset[-1].sizes
    preset_scales = [layer.sizes[0] for layer in preset]
    preset_scales.append(last[1] ** 2 / last[0] if len(last) == 2 else preset_scales[-1] * 1.25)
    object_scales = _box_scale(boxes)
    low, high = np.quantile(object_scales, [0.02, 0.98])
    low = max(float(low), 1e-3)  # degenerate (zero-area) boxes must not start the search at log(0)
    spread = low * (max(high, low * 1.1) / low) ** (np.arange(len(preset) + 1) / len(preset))
    starts = [np.log(np.maximum.accumulate(np.array(preset_scales))), np.log(spread)]
    best = (None, None, -1.0)
    for ratios in ratio_options:
        def objective(params: np.ndarray, ratios=ratios) -> float:
            return _score(ssd_best_iou(boxes, layers_for(np.exp(params), ratios)), threshold, strict)

        for start in starts:
            params, score = _descend(start, objective, math.log(1e-3), math.log(2.0))
            if score > best[2]:
                best = (params, ratios, score)
    params, ratios, _ = best
    sizes = [[_round(v) for v in layer] for layer in _layer_sizes(np.exp(params), size_counts)]
    achieved = ssd_best_iou(boxes, ssd_layers(network, data_shape, sizes, ratios))
    return sizes, ratios, float((achieved > threshold if strict else achieved >= threshold).mean())


def fit_ssd_anchors(boxes: np.ndarray, network: str, data_shape: int, threshold: float = SSD_OVERLAP,
                    target: float = TARGET_COVERAGE, data_shapes: Sequence[int] = DATA_SHAPES,
                    rec: str | None = None, max_boxes: int = _FIT_SAMPLE, seed: int = 0) -> SSDAnchorFit:
    """Propose anchors for normalised ``boxes`` [M, 4] (difficult ones left out by the caller).

    Sizes: coordinate ascent of the coverage (``MultiBoxTarget``'s rule, IoU ``> threshold``) over
    the increasing scales ``s_0 < ... < s_L``, layer ``k`` getting ``[s_k, sqrt(s_k * s_k+1)]``
    (generally as many sizes as the preset's layer, geometric from ``s_k`` towards ``s_k+1``),
    started from the preset and from the objects' 2-98% scale range spread over the layers. Ratios:
    the preset's, or :func:`kmeans_ratios` of the boxes' aspects with each layer's count, whichever
    covers more. The number of anchors per position stays the preset's, so every head keeps its
    shape. The search scores at most ``max_boxes`` boxes (a seeded sample); the reports use all.

    When the preset already reaches ``target`` it is returned unchanged (``changed`` False). When
    the best anchors at ``data_shape`` stay below ``target``, the larger sizes of
    ``data_shapes`` that the network's graph accepts are tried in order, and the first that
    reaches ``target`` is proposed (the best one when none does).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if boxes.shape[0] == 0:
        raise UserError(f"{rec or 'the data'}: no objects to fit anchors to")
    data_shape = int(data_shape)
    sample = boxes
    if boxes.shape[0] > max_boxes:
        sample = boxes[np.random.default_rng(seed).choice(boxes.shape[0], max_boxes, replace=False)]
    before = ssd_coverage_report(boxes, network, data_shape, rec=rec, threshold=threshold, anchors="preset")
    if before.share >= target:  # nothing to fix: the preset stays
        layers = ssd_layers(network, data_shape)
        return SSDAnchorFit(network, data_shape, data_shape, threshold, target, [list(x.sizes) for x in layers],
                            [list(x.ratios) for x in layers], before, before, before, {data_shape: before.share})

    def fit_at(shape: int) -> tuple[list, list, CoverageReport]:
        sizes, ratios, _ = _fit_layers(sample, network, shape, threshold, strict=True)
        report = ssd_coverage_report(boxes, network, shape, sizes, ratios, rec=rec, threshold=threshold,
                                     size_shape=data_shape, anchors=f"fitted at {shape}")
        return sizes, ratios, report

    sizes, ratios, at_given = fit_at(data_shape)
    if at_given.share < before.share:  # rounding or sampling lost ground: keep the preset
        layers = ssd_layers(network, data_shape)
        sizes, ratios = [list(x.sizes) for x in layers], [list(x.ratios) for x in layers]
        at_given = ssd_coverage_report(boxes, network, data_shape, sizes, ratios, rec=rec, threshold=threshold,
                                       anchors=f"fitted at {data_shape}")
    tried = {data_shape: at_given.share}
    chosen = (data_shape, sizes, ratios, at_given)
    if at_given.share < target:
        for shape in sorted(s for s in data_shapes if s > data_shape):
            if not data_shape_fits(network, shape):
                continue
            candidate = (shape, *fit_at(shape))
            tried[shape] = candidate[3].share
            if candidate[3].share > chosen[3].share:
                chosen = candidate
            if candidate[3].share >= target:
                break
    shape, sizes, ratios, after = chosen
    return SSDAnchorFit(network, data_shape, shape, threshold, target, sizes, ratios, before, at_given, after, tried)


@dataclass
class RCNNAnchorFit:
    """What :func:`fit_rcnn_anchors` proposes: RPN ``scales`` and ``ratios`` (h / w) and the coverage
    before (the network's defaults) and after."""

    network: str
    scales: list[float]
    ratios: list[float]
    before: CoverageReport
    after: CoverageReport

    def train_flags(self) -> str:
        """The ``train.py`` flags of the proposal."""
        scales = ",".join(format_number(v) for v in self.scales)
        ratios = ",".join(format_number(v) for v in self.ratios)
        return f"--rpn-anchor-scales '({scales})' --rpn-anchor-ratios '({ratios})'"


def fit_rcnn_anchors(boxes: np.ndarray, image_hw: np.ndarray, grid: RPNGrid, scales: Sequence[float],
                     ratios: Sequence[float], threshold: float, rec: str | None = None, max_boxes: int = _FIT_SAMPLE,
                     seed: int = 0) -> RCNNAnchorFit:
    """RPN anchor scales and ratios for normalised ``boxes`` [M, 4] of images ``image_hw`` [M, 2].

    As :func:`fit_ssd_anchors`, with the RPN's rule (IoU ``>= threshold`` with an inside anchor):
    the scales (as many as given) by coordinate ascent, the ratios (h / w, as many as given) the
    given ones or :func:`kmeans_ratios`, whichever covers more. The input size stays the network's.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    image_hw = np.asarray(image_hw, dtype=np.float64).reshape(-1, 2)
    if boxes.shape[0] == 0:
        raise UserError(f"{rec or 'the data'}: no objects to fit anchors to")
    before = rcnn_coverage_report(boxes, image_hw, grid, scales, ratios, threshold, rec, anchors="preset")
    pick = np.arange(boxes.shape[0])
    if boxes.shape[0] > max_boxes:
        pick = np.random.default_rng(seed).choice(boxes.shape[0], max_boxes, replace=False)
    gt, resized = rcnn_gt_boxes(boxes[pick], image_hw[pick], grid.short_side, grid.long_side)
    feat_hw = _feat_hw(resized, grid.feat_stride, grid.feat_shape)
    aspects = (gt[:, 3] - gt[:, 1] + 1) / np.maximum(gt[:, 2] - gt[:, 0] + 1, 1e-12)  # h / w
    best = (list(scales), list(ratios), -1.0)
    for ratio_option in (list(ratios), sorted(_round(r, 2) for r in kmeans_ratios(aspects, len(ratios)))):
        def objective(params: np.ndarray, ratio_option=ratio_option) -> float:
            iou = rcnn_best_iou(gt, resized, grid.feat_stride, np.exp(params), ratio_option, grid.allowed_border,
                                feat_hw)
            return _score(iou, threshold, strict=False)

        start = np.log(np.sort(np.asarray(scales, dtype=np.float64)))
        params, score = _descend(start, objective, math.log(0.25), math.log(256.0))
        if score > best[2]:
            best = ([_round(v) for v in np.exp(params)], ratio_option, score)
    new_scales, new_ratios, _ = best
    after = rcnn_coverage_report(boxes, image_hw, grid, new_scales, new_ratios, threshold, rec, anchors="fitted")
    if after.share < before.share:
        new_scales, new_ratios, after = list(scales), list(ratios), before
    return RCNNAnchorFit(grid.network, new_scales, new_ratios, before, after)


# --------------------------------------------------------------------------------------------
# one call for the training engine


def check_ssd_anchors(rec_path: str, network: str, data_shape: int, sizes: Sequence | None = None,
                      ratios: Sequence | None = None, steps: Sequence[float] | None = None
                      ) -> tuple[CoverageReport, list[str]]:
    """Coverage of the non-difficult objects of ``rec_path`` by the training graph's anchors, and its warnings.

    ``sizes``/``ratios``/``steps`` are the graph's overrides (``SSDConfig.graph_overrides``), None
    for the preset's. A ``.rec`` without (non-difficult) objects gives an empty report and no
    warning.
    """
    boxes, _, difficult, _ = read_record_boxes(rec_path)
    report = ssd_coverage_report(boxes[~difficult], network, data_shape, sizes, ratios, steps, rec=rec_path)
    return report, warnings(report)


def fitted_ssd_overrides(rec_path: str, network: str, data_shape: int) -> dict:
    """``train.py --anchor-sizes auto``: the ``sizes`` and ``ratios`` :func:`fit_ssd_anchors` proposes for
    the non-difficult objects of ``rec_path`` at ``data_shape`` (as ``tools/fit_anchors.py`` prints them),
    where the preset covers under its target; else ``{}`` (the preset). The fit is seeded, so a resumed
    run and every worker of a distributed job get the same anchors."""
    boxes, _, difficult, _ = read_record_boxes(rec_path)
    fit = fit_ssd_anchors(boxes[~difficult], network, data_shape, data_shapes=(), rec=rec_path)
    return fit.graph_overrides() if fit.changed else {}


def check_rcnn_anchors(rec_path: str, cfg, feat_shape: Callable[[int, int], tuple[int, int]] | None = None,
                       threshold: float | None = None) -> tuple[CoverageReport, list[str]]:
    """As :func:`check_ssd_anchors` for Faster R-CNN: ``cfg`` is an ``RCNNConfig`` (its network, RPN
    stride, scales, ratios, image sides, allowed border; ``threshold`` default ``rpn_fg_overlap``),
    ``feat_shape(height, width)`` the RPN map size (``dataset.rcnn_loader.feat_shape_from_symbol``).

    At IoU >= 0.7 an anchor covers only objects within about 1.2 times its side, so with 3 scales
    this coverage is far lower than SSD's (28% on a synthetic set of 4-70% objects): the RPN relies
    on matching each box's best anchor whatever its IoU. Callers may prefer to log this report.
    """
    boxes, _, difficult, image = read_record_boxes(rec_path)
    keep = ~difficult
    image_hw = read_record_image_sizes(rec_path)[image[keep]]
    report = rcnn_coverage_report(boxes[keep], image_hw, RPNGrid.of(cfg, feat_shape), cfg.rpn_anchor_scales,
                                  cfg.rpn_anchor_ratios, cfg.rpn_fg_overlap if threshold is None else threshold,
                                  rec=rec_path)
    return report, warnings(report)


# --------------------------------------------------------------------------------------------
# label summary figure


def write_label_stats(boxes: np.ndarray, classes: np.ndarray, image_index: np.ndarray,
                      class_names: Sequence[str] | None, anchors_wh: np.ndarray | Sequence[np.ndarray] | None,
                      path: str, difficult: np.ndarray | None = None, title: str = "",
                      num_images: int | None = None) -> str:
    """Write a PNG summary of the labels: objects per class, objects per image, box shapes.

    ``boxes`` [M, 4] normalised, ``classes`` [M] int, ``image_index`` [M] int (which image each
    object is in). ``anchors_wh`` is ``[K, 2]`` normalised anchor (width, height), or one such
    array per feature layer (each drawn in its own colour), laid over the scatter of the boxes'
    (width, height); None leaves them out. ``difficult`` [M] bool splits the class bars;
    ``num_images`` counts the images without objects too (default: up to the last image index). Written
    atomically (a one-line :class:`UserError` if the file cannot be written); returns ``path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from config.fileio import atomic_write

    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    classes = np.asarray(classes, dtype=np.int64).ravel()
    image_index = np.asarray(image_index, dtype=np.int64).ravel()
    difficult = np.zeros(classes.size, bool) if difficult is None else np.asarray(difficult, bool).ravel()
    num_classes = max(len(class_names or []), int(classes.max(initial=-1)) + 1)
    names = [(class_names[c] if class_names and c < len(class_names) else str(c)) for c in range(num_classes)]

    fig = Figure(figsize=(15, 4.8))
    FigureCanvasAgg(fig)
    ax_cls, ax_img, ax_wh = (fig.add_subplot(1, 3, i) for i in (1, 2, 3))
    easy = np.bincount(classes[~difficult], minlength=num_classes)
    hard = np.bincount(classes[difficult], minlength=num_classes)
    positions = np.arange(num_classes)
    ax_cls.bar(positions, easy, color="tab:blue", label="objects")
    ax_cls.bar(positions, hard, bottom=easy, color="tab:orange", label="difficult")
    crowded = num_classes > 6
    ax_cls.set_xticks(positions, names, rotation=45 if crowded else 0, ha="right" if crowded else "center")
    ax_cls.margins(y=0.08)
    ax_cls.set_title(f"objects per class ({classes.size} objects)")
    ax_cls.legend(loc="best", fontsize=8)

    minimum = num_images or 0
    per_image = np.bincount(image_index, minlength=minimum) if image_index.size else np.zeros(max(minimum, 1), int)
    top = int(per_image.max(initial=0))
    ax_img.hist(per_image, bins=np.arange(top + 2) - 0.5, color="tab:green")
    ax_img.set_title(f"objects per image ({per_image.size} images, {np.count_nonzero(per_image == 0)} without)")
    ax_img.set_xlabel("objects in the image")
    ax_img.set_ylabel("images")

    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    ax_wh.scatter(width, height, s=7, alpha=0.5, color="tab:blue", label="boxes", linewidths=0)
    if anchors_wh is not None:
        layers = [anchors_wh] if isinstance(anchors_wh, np.ndarray) and anchors_wh.ndim == 2 else list(anchors_wh)
        colours = ["tab:red", "tab:purple", "tab:brown", "tab:olive", "tab:cyan", "tab:pink", "black", "tab:gray"]
        for k, wh in enumerate(layers):
            wh = np.asarray(wh, dtype=np.float64).reshape(-1, 2)
            label = "anchors" if len(layers) == 1 else f"anchors, layer {k}"
            ax_wh.scatter(wh[:, 0], wh[:, 1], marker="x", s=40, color=colours[k % len(colours)], label=label)
    ax_wh.set_xscale("log")
    ax_wh.set_yscale("log")
    ax_wh.set_xlabel("box width / image width")
    ax_wh.set_ylabel("box height / image height")
    ax_wh.set_title("box shapes and anchor shapes")
    ax_wh.legend(loc="lower right", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
