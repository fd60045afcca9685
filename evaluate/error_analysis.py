"""Where a detector goes wrong: a confusion matrix with background, AP by object size, the worst images.

Input, for SSD and Faster R-CNN alike, one entry per image in the same order:

* ``detections[i]``: ``[K, 6]`` rows ``(cls, score, xmin, ymin, xmax, ymax)`` normalised to [0, 1]
  (SSD's ``det_out`` without its ``cls = -1`` rows; rows with ``cls < 0`` are dropped here too);
* ``labels[i]``: ``[G, 5 or 6]`` rows ``(cls, xmin, ymin, xmax, ymax[, difficult])`` normalised,
  padding rows (``cls < 0``) dropped.

:func:`write_analysis` writes everything into one folder: ``confusion.csv``/``.png``,
``ap_by_size.csv``/``.png`` and ``worst_images.png``.

Matching for the confusion matrix (:func:`match_image`), per image, counting only detections with
``score >= score_threshold``; IoU must be *strictly above* ``iou``, as in
:mod:`evaluate.eval_metric`:

1. As the VOC devkit, per class: detections in descending score order (ties keep their order);
   each takes the ground-truth box *of its own class* it overlaps most. Above ``iou``: a difficult
   box makes the detection count nowhere; a box not yet taken is a hit (``[c, c]``) and is taken;
   a box already taken makes the detection a duplicate (``[background, c]``).
2. Each detection left (no box of its own class above ``iou``), in score order, takes the
   not-yet-taken, non-difficult box *of another class* it overlaps most above ``iou``: a
   confusion (``[g, c]``); otherwise it is a false positive on background (``[background, c]``).
3. Every non-difficult box never taken is a miss (``[g, background]``).

So row ``g`` (ground truth) sums to the non-difficult boxes of class ``g`` and column ``c``
(prediction) to the counted detections of class ``c``; the diagonal holds the VOC true positives.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from dataset.bbox import iou_matrix
from evaluate.eval_voc import voc_ap

BAND_EDGES_PX = (16, 32, 64, 128)  # as evaluate/anchor_fit.py: object size sqrt(w * h) in pixels
GT_COLOUR = (40, 200, 40)  # RGB: ground truth found by some detection
MISSED_COLOUR = (255, 215, 0)  # ground truth no detection found
DET_COLOUR = (230, 30, 30)  # detections
ImageSource = Sequence[np.ndarray] | Mapping[int, np.ndarray] | Callable[[int], np.ndarray] | str | None


def _clean_detections(dets) -> np.ndarray:
    dets = np.asarray(dets, dtype=np.float64).reshape(-1, 6) if np.size(dets) else np.zeros((0, 6))
    return dets[dets[:, 0] >= 0]


def _clean_labels(label) -> np.ndarray:
    label = np.asarray(label, dtype=np.float64)
    label = label.reshape(-1, label.shape[-1]) if label.size else np.zeros((0, 6))
    out = np.zeros((label.shape[0], 6))
    out[:, :min(6, label.shape[1])] = label[:, :6]
    return out[out[:, 0] >= 0]


@dataclass
class ImageMatch:
    """The matching of one image (see the module doc).

    ``det_gt`` [K]: the box each counted detection took or hit (-1: none); ``det_kind`` [K]: 'hit',
    'confused', 'duplicate', 'background' or 'ignored'; ``gt_found`` [G] bool (difficult boxes
    count as found); ``dets`` / ``labels`` the cleaned inputs (detections under the score threshold
    removed), in their given order.
    """

    dets: np.ndarray
    labels: np.ndarray
    det_gt: np.ndarray
    det_kind: list[str]
    gt_found: np.ndarray

    @property
    def missed(self) -> int:
        """Non-difficult boxes that no detection found."""
        return int(np.sum(~self.gt_found))


def match_image(dets: np.ndarray, labels: np.ndarray, iou: float = 0.5, score_threshold: float = 0.3) -> ImageMatch:
    """Match one image's detections ``[K, 6]`` to its labels ``[G, 5|6]`` (rule in the module doc)."""
    dets = _clean_detections(dets)
    dets = dets[dets[:, 1] >= score_threshold]
    labels = _clean_labels(labels)
    difficult = labels[:, 5] > 0
    order = np.argsort(-dets[:, 1], kind="stable")
    overlaps = iou_matrix(dets[:, 2:6], labels[:, 1:5]) if len(dets) and len(labels) else np.zeros((len(dets), 0))
    det_cls, gt_cls = dets[:, 0].astype(int), labels[:, 0].astype(int)
    det_gt = np.full(len(dets), -1)
    kinds = ["background"] * len(dets)
    taken = np.zeros(len(labels), dtype=bool)
    left = []
    for k in order:  # pass 1: VOC, own class
        own = np.flatnonzero(gt_cls == det_cls[k])
        if own.size:
            g = own[overlaps[k, own].argmax()]
            if overlaps[k, g] > iou:
                if difficult[g]:
                    kinds[k] = "ignored"
                elif not taken[g]:
                    kinds[k], det_gt[k], taken[g] = "hit", g, True
                else:
                    kinds[k], det_gt[k] = "duplicate", g
                continue
        left.append(k)
    for k in left:  # pass 2: another class's box
        free = np.flatnonzero((gt_cls != det_cls[k]) & ~difficult & ~taken)
        if free.size:
            g = free[overlaps[k, free].argmax()]
            if overlaps[k, g] > iou:
                kinds[k], det_gt[k], taken[g] = "confused", g, True
    return ImageMatch(dets, labels, det_gt, kinds, taken | difficult)


def confusion_matrix(detections: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int,
                     iou: float = 0.5, score_threshold: float = 0.3) -> np.ndarray:
    """``[C + 1, C + 1]`` counts: rows ground truth (row ``C``: background, i.e. false positives),
    columns predictions (column ``C``: background, i.e. misses). Rule in the module doc."""
    if len(detections) != len(labels):
        raise ValueError(f"{len(detections)} detection lists for {len(labels)} label lists")
    matrix = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    background = num_classes
    for dets, label in zip(detections, labels):
        match = match_image(dets, label, iou, score_threshold)
        gt_cls = match.labels[:, 0].astype(int)
        for k, kind in enumerate(match.det_kind):
            c = int(match.dets[k, 0])
            if kind in ("hit", "confused"):
                matrix[gt_cls[match.det_gt[k]], c] += 1
            elif kind in ("duplicate", "background"):
                matrix[background, c] += 1
        for g in np.flatnonzero(~match.gt_found):
            matrix[gt_cls[g], background] += 1
    return matrix


def _sizes_px(boxes: np.ndarray, pixels) -> np.ndarray:
    """``sqrt(w * h)`` in pixels of normalised ``boxes`` [n, 4]; ``pixels`` an int side or (width, height)."""
    width, height = (pixels, pixels) if np.isscalar(pixels) else pixels
    w = np.maximum(boxes[:, 2] - boxes[:, 0], 0) * width
    h = np.maximum(boxes[:, 3] - boxes[:, 1], 0) * height
    return np.sqrt(w * h)


def _band_labels(edges: Sequence[float]) -> list[tuple[str, float, float]]:
    bounds = [0.0, *edges, math.inf]
    names = [f"<{edges[0]:g}"] + [f"{a:g}-{b:g}" for a, b in zip(edges[:-1], edges[1:])] + [f">={edges[-1]:g}"]
    return [(name, bounds[i], bounds[i + 1]) for i, name in enumerate(names)]


def ap_by_size(detections: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int, pixels,
               iou: float = 0.5, edges: Sequence[float] = BAND_EDGES_PX, use_07_metric: bool = False) -> list[dict]:
    """AP of each object-size band: ``[{band, objects, mAP, ap: [C]}]``.

    ``pixels`` is the input side (an int: SSD's square data shape) or one ``(width, height)`` per
    image (the pixels sizes are measured in). For a band, as COCO's area ranges do: boxes outside
    it (and difficult ones) are ignored, a detection matched to an ignored box counts nowhere, and
    an unmatched detection counts as a false positive only if its own size is in the band.
    Matching per class as the VOC devkit (greedy by score, IoU strictly above ``iou``). ``ap[c]``
    is nan for a class without boxes in the band; ``mAP`` averages the others (nan if none).
    """
    per_image_pixels = [pixels] * len(labels) if np.isscalar(pixels) else list(pixels)
    rows = []
    for band, low, high in _band_labels(edges):
        scores = [[] for _ in range(num_classes)]
        hits = [[] for _ in range(num_classes)]
        positives = np.zeros(num_classes, dtype=np.int64)
        for dets, label, px in zip(detections, labels, per_image_pixels):
            dets, label = _clean_detections(dets), _clean_labels(label)
            gt_size = _sizes_px(label[:, 1:5], px)
            ignore = (label[:, 5] > 0) | (gt_size < low) | (gt_size >= high)
            det_size = _sizes_px(dets[:, 2:6], px)
            for c in range(num_classes):
                own = label[:, 0] == c
                positives[c] += int(np.sum(own & ~ignore))
                mine = np.flatnonzero(dets[:, 0] == c)
                if not mine.size:
                    continue
                mine = mine[np.argsort(-dets[mine, 1], kind="stable")]
                gts = np.flatnonzero(own)
                overlaps = iou_matrix(dets[mine, 2:6], label[gts, 1:5]) if gts.size else np.zeros((mine.size, 0))
                taken = np.zeros(gts.size, dtype=bool)
                for row, k in enumerate(mine):
                    if gts.size and overlaps[row].max() > iou:
                        j = int(overlaps[row].argmax())
                        if ignore[gts[j]]:
                            continue
                        if not taken[j]:
                            taken[j] = True
                            scores[c].append(dets[k, 1])
                            hits[c].append(True)
                            continue
                    if low <= det_size[k] < high:  # false positive of this band
                        scores[c].append(dets[k, 1])
                        hits[c].append(False)
        ap = np.full(num_classes, np.nan)
        for c in range(num_classes):
            if positives[c] == 0:
                continue
            order = np.argsort(-np.asarray(scores[c], dtype=np.float64), kind="stable")
            is_hit = np.asarray(hits[c], dtype=bool)[order]
            tp, fp = np.cumsum(is_hit), np.cumsum(~is_hit)
            ap[c] = voc_ap(tp / positives[c], tp / np.maximum(tp + fp, 1), use_07_metric) if is_hit.size else 0.0
        valid = ap[~np.isnan(ap)]
        rows.append({"band": band, "objects": int(positives.sum()), "mAP": float(valid.mean()) if valid.size
                     else float("nan"), "ap": ap})
    return rows


def load_record_images(rec_path: str, indices: Sequence[int]) -> dict[int, np.ndarray]:
    """``{record position: RGB image [H, W, 3] uint8}`` for the records at ``indices`` of ``rec_path``."""
    import cv2

    from dataset.recordio import iter_records

    wanted, images = set(int(i) for i in indices), {}
    for number, (_, data) in enumerate(iter_records(rec_path)):
        if number in wanted:
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
            if image is not None:
                images[number] = image[:, :, ::-1]
            if len(images) == len(wanted):
                break
    return images


def _get_images(source: ImageSource, indices: Sequence[int]) -> dict[int, np.ndarray]:
    if source is None:
        return {}
    if isinstance(source, str):
        return load_record_images(source, indices)
    if callable(source):
        return {i: source(i) for i in indices}
    return {i: source[i] for i in indices if (i in source if isinstance(source, Mapping) else i < len(source))}


def draw_matches(image: np.ndarray, match: ImageMatch, class_names: Sequence[str] | None = None,
                 size: int = 320) -> np.ndarray:
    """``image`` (RGB uint8, any size) resized to ``size`` on its long side with the ground truth
    (green; missed boxes yellow and thicker; difficult ones thin) and the detections (red, with
    class and score) drawn: ``[h, w, 3]`` RGB uint8."""
    import cv2

    height, width = image.shape[:2]
    scale = size / max(height, width)
    canvas = cv2.resize(np.ascontiguousarray(image), (max(1, round(width * scale)), max(1, round(height * scale))),
                        interpolation=cv2.INTER_AREA)
    h, w = canvas.shape[:2]

    def corners(box) -> tuple[tuple[int, int], tuple[int, int]]:
        x1, y1, x2, y2 = (int(round(v * s)) for v, s in zip(box, (w, h, w, h)))
        return (x1, y1), (x2 - 1, y2 - 1)

    def name(c: int) -> str:
        return class_names[c] if class_names and 0 <= c < len(class_names) else str(c)

    for g, row in enumerate(match.labels):
        missed = not match.gt_found[g]
        p1, p2 = corners(row[1:5])
        cv2.rectangle(canvas, p1, p2, MISSED_COLOUR if missed else GT_COLOUR, 3 if missed else int(1 + (row[5] == 0)))
    for row in match.dets:
        p1, p2 = corners(row[2:6])
        cv2.rectangle(canvas, p1, p2, DET_COLOUR, 1)
        cv2.putText(canvas, f"{name(int(row[0]))} {row[1]:.2f}", (p1[0] + 2, max(p1[1] + 10, 10)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, DET_COLOUR, 1, cv2.LINE_AA)
    return canvas


def _save_figure(fig, path: str) -> str:
    from config.fileio import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def write_confusion(matrix: np.ndarray, class_names: Sequence[str], out_dir: str) -> tuple[str, str]:
    """``confusion.csv`` (counts) and ``confusion.png`` (row-normalised colours, counts written) in ``out_dir``."""
    from config.fileio import atomic_open

    names = list(class_names) + ["background"]
    csv_path = os.path.join(out_dir, "confusion.csv")
    with atomic_open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ground truth \\ predicted"] + names)
        for name, row in zip(names, matrix):
            writer.writerow([name] + [int(v) for v in row])
    n = len(names)
    fig = _new_figure(max(5.0, 0.6 * n + 2.5), max(4.5, 0.55 * n + 2))
    ax = fig.add_subplot(1, 1, 1)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if matrix[i, j] or i != j:
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if share[i, j] > 0.5 else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_xlabel("predicted (background: missed)")
    ax.set_ylabel("ground truth (background: false positive)")
    ax.set_title("confusion (colour: share of the row)")
    fig.tight_layout()
    return csv_path, _save_figure(fig, os.path.join(out_dir, "confusion.png"))


def write_ap_by_size(rows: list[dict], class_names: Sequence[str], out_dir: str) -> tuple[str, str]:
    """``ap_by_size.csv`` (band, objects, mAP, AP per class) and a bar chart ``ap_by_size.png``."""
    from config.fileio import atomic_open

    csv_path = os.path.join(out_dir, "ap_by_size.csv")
    with atomic_open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["size_px", "objects", "mAP"] + list(class_names))
        for row in rows:
            writer.writerow([row["band"], row["objects"], _fmt(row["mAP"])] + [_fmt(v) for v in row["ap"]])
    fig = _new_figure(6.5, 4)
    ax = fig.add_subplot(1, 1, 1)
    values = [0.0 if math.isnan(row["mAP"]) else row["mAP"] for row in rows]
    bars = ax.bar(range(len(rows)), values, color="tab:blue")
    for bar, row in zip(bars, rows):
        text = "no objects" if math.isnan(row["mAP"]) else f"{row['mAP']:.3f}\n{row['objects']} obj."
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, text, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(rows)), [row["band"] + " px" for row in rows])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("mAP")
    ax.set_title("AP by object size sqrt(w*h) in pixels")
    fig.tight_layout()
    return csv_path, _save_figure(fig, os.path.join(out_dir, "ap_by_size.png"))


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def worst_images(matches: Sequence[ImageMatch], num: int) -> list[int]:
    """Indices of the ``num`` images with the most missed boxes (ties: more boxes first, then order);
    images without a miss are left out."""
    order = sorted(range(len(matches)), key=lambda i: (-matches[i].missed, -len(matches[i].labels), i))
    return [i for i in order[:num] if matches[i].missed > 0]


def write_worst_images(matches: Sequence[ImageMatch], images: ImageSource, class_names: Sequence[str] | None,
                       out_dir: str, num: int = 12, size: int = 320) -> str | None:
    """``worst_images.png``: the images with the most misses, drawn by :func:`draw_matches`, in a grid.

    Returns the path, or None when there is no miss or no image to draw.
    """
    import cv2

    from config.fileio import atomic_write

    chosen = worst_images(matches, num)
    pictures = _get_images(images, chosen)
    tiles = []
    for i in chosen:
        if i not in pictures or pictures[i] is None:
            continue
        tile = np.full((size + 16, size, 3), 255, dtype=np.uint8)
        drawn = draw_matches(np.asarray(pictures[i], dtype=np.uint8), matches[i], class_names, size)
        tile[16:16 + drawn.shape[0], :drawn.shape[1]] = drawn
        cv2.putText(tile, f"image {i}: {matches[i].missed} of {len(matches[i].labels)} missed", (2, 12),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        tiles.append(tile)
    if not tiles:
        return None
    columns = min(4, len(tiles))
    rows = math.ceil(len(tiles) / columns)
    grid = np.full((rows * (size + 20) + 24, columns * (size + 4), 3), 255, dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        grid[24 + r * (size + 20): 24 + r * (size + 20) + tile.shape[0], c * (size + 4): c * (size + 4) + size] = tile
    legend = (("ground truth", GT_COLOUR), ("missed", MISSED_COLOUR), ("detection", DET_COLOUR))
    x = 4
    for text, colour in legend:
        cv2.rectangle(grid, (x, 6), (x + 14, 18), colour, -1)
        cv2.putText(grid, text, (x + 18, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        x += 30 + 9 * len(text)

    def write(tmp: str) -> None:
        if not cv2.imwrite(tmp, np.ascontiguousarray(grid[:, :, ::-1])):
            raise OSError(f"OpenCV could not write {tmp}")

    return atomic_write(os.path.join(out_dir, "worst_images.png"), write)


def write_analysis(out_dir: str, detections: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                   images_or_loader: ImageSource, class_names: Sequence[str] | None, data_shape,
                   iou: float = 0.5, score_threshold: float = 0.3, num_worst: int = 12,
                   use_07_metric: bool = False) -> dict:
    """Write the error analysis of one evaluation into ``out_dir``; returns what was written and computed.

    ``detections``/``labels`` per image as in the module doc, in the order of ``images_or_loader``:
    a sequence or mapping of RGB images, a callable ``index -> image``, the path of the ``.rec``
    they came from (images in record order), or None (no image grid). ``data_shape`` is the pixel
    size the AP bands are measured in: SSD's square input side (int), or one ``(width, height)``
    per image (Faster R-CNN: the resized image). Files: ``confusion.csv``/``.png``,
    ``ap_by_size.csv``/``.png``, ``worst_images.png``. Returns ``{'confusion': matrix,
    'ap_by_size': rows, 'worst': indices, 'files': [paths]}``.
    """
    if len(detections) != len(labels):
        raise ValueError(f"{len(detections)} detection lists for {len(labels)} label lists")
    seen = [int(row[0]) for label in labels for row in _clean_labels(label)]
    seen += [int(row[0]) for dets in detections for row in _clean_detections(dets)]
    num_classes = max(len(class_names or []), max(seen, default=-1) + 1)
    names = [class_names[c] if class_names and c < len(class_names) else str(c) for c in range(num_classes)]
    os.makedirs(out_dir, exist_ok=True)
    matrix = confusion_matrix(detections, labels, num_classes, iou, score_threshold)
    files = list(write_confusion(matrix, names, out_dir))
    rows = ap_by_size(detections, labels, num_classes, data_shape, iou, use_07_metric=use_07_metric)
    files += write_ap_by_size(rows, names, out_dir)
    matches = [match_image(d, label, iou, score_threshold) for d, label in zip(detections, labels)]
    worst = worst_images(matches, num_worst)
    grid = write_worst_images(matches, images_or_loader, names, out_dir, num_worst)
    if grid:
        files.append(grid)
    return {"confusion": matrix, "ap_by_size": rows, "worst": worst, "files": files}
