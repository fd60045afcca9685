"""File-based Pascal VOC evaluation, following the official devkit.

This is the evaluation PascalVoc datasets use at test time (``comp4`` result
files against the XML annotations). Its conventions are the devkit's:

* boxes are 1-based pixel coordinates and a box's width is ``x2 - x1 + 1``
  (IoU through :func:`dataset.bbox.iou_matrix` with ``pixel_offset=1``);
* a detection is a true positive only when its best IoU is *strictly* above
  ``ovthresh``; a later detection of an already matched object is a false
  positive;
* a detection whose best match is a ``difficult`` object counts as neither,
  and difficult objects are left out of the number of positives;
* the 11-point AP (recall thresholds exactly ``k / 10``) for VOC years before
  2010, the area under the monotone precision envelope from 2010 on.

A class with no detections has AP 0; a class without positives has AP ``nan``
and is left out of the mAP. The parsed annotations are cached as JSON named
after the image set, rebuilt when the cache lacks an image, and written
atomically (temporary name, then rename).

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from config.errors import UserError
from config.fileio import atomic_open
from dataset.bbox import iou_matrix
from dataset.pascal_voc import PascalVoc
from dataset.voc_xml import parse_voc_rec, read_voc_image_size

# the 11 recall points of the VOC2007 metric, exactly 0.0, 0.1, ..., 1.0
_ELEVEN_POINTS = np.arange(11) / 10.0


def voc_ap(rec: np.ndarray, prec: np.ndarray, use_07_metric: bool = False) -> float:
    """Average precision of one class from its cumulative recall and precision.

    ``rec`` and ``prec`` are [D] arrays over the detections in descending score
    order. With ``use_07_metric`` the AP is the VOC2007 11-point value
    ``sum_t max(prec[rec >= t]) / 11`` for ``t = 0, 0.1, ..., 1`` (0 where no
    recall reaches ``t``); otherwise it is the VOC2010+ area under the
    precision envelope ``p(r) = max(prec[rec >= r])``, summed where recall
    changes. NaN precisions (no detection counted yet) are taken as 0.
    """
    rec = np.asarray(rec, dtype=np.float64).ravel()
    prec = np.nan_to_num(np.asarray(prec, dtype=np.float64).ravel())
    if use_07_metric:
        total = 0.0
        for t in _ELEVEN_POINTS:
            reached = rec >= t
            total += prec[reached].max() if reached.any() else 0.0
        return float(total / 11.0)
    # sentinels: recall runs from 0 to 1, precision drops to 0 past the end
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    # envelope: precision at recall r is the best precision at any recall >= r
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _escape_braces(text: str) -> str:
    # voc_eval's paths are str.format templates; literal braces must be doubled
    return text.replace("{", "{{").replace("}", "}}")


def _read_image_set(imageset_file: str) -> list[str]:
    with open(imageset_file) as f:
        return [line.strip().split()[0] for line in f if line.strip()]


def _write_atomic(path: str, text: str) -> None:
    with atomic_open(path) as f:
        f.write(text)


def _load_annotations(annopath: str, imagenames: list[str], cache_dir: str, cache_name: str) -> dict:
    """``{image name: parse_voc_rec(...)}``, through a JSON cache in ``cache_dir``."""
    cache_file = os.path.join(cache_dir, f"{cache_name}_annots.json")
    if os.path.isfile(cache_file):
        with open(cache_file) as f:
            recs = json.load(f)
        if all(name in recs for name in imagenames):
            return recs
    recs = {name: parse_voc_rec(annopath.format(name)) for name in imagenames}
    _write_atomic(cache_file, json.dumps(recs))
    return recs


def _read_detections(path: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Image ids [D], scores [D] and boxes [D, 4] of one comp4 result file."""
    image_ids, scores, boxes = [], [], []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 6:
                raise UserError(f"{path}:{number}: expected '<image_id> <score> <x1> <y1> <x2> <y2>'")
            image_ids.append(fields[0])
            scores.append(float(fields[1]))
            boxes.append([float(v) for v in fields[2:]])
    return image_ids, np.asarray(scores, dtype=np.float64), np.asarray(boxes, dtype=np.float64).reshape(-1, 4)


def voc_eval(
    detpath: str,
    annopath: str,
    imageset_file: str,
    classname: str,
    cache_dir: str,
    ovthresh: float = 0.5,
    use_07_metric: bool = True,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Evaluate one class's comp4 result file against VOC annotations.

    ``detpath.format(classname)`` is the result file (lines ``<image_id> <score>
    <x1> <y1> <x2> <y2>``, 1-based pixels); ``annopath.format(image_id)`` an
    annotation XML; ``imageset_file`` lists the image ids, one a line.
    Annotations are cached in ``cache_dir`` under the image set's name; delete
    the cache after editing annotation files.

    Returns ``(rec, prec, ap)``: cumulative recall and precision [D] over the
    detections in descending score order (ties keep file order), and the AP
    (``nan`` when the class has no non-difficult object).
    """
    imagenames = _read_image_set(imageset_file)
    cache_name = os.path.splitext(os.path.basename(imageset_file))[0]
    recs = _load_annotations(annopath, imagenames, cache_dir, cache_name)

    # per image: this class's boxes, difficult flags and "already matched" flags
    class_recs = {}
    npos = 0
    for name in imagenames:
        objs = [obj for obj in recs[name] if obj["name"] == classname]
        difficult = np.array([bool(obj["difficult"]) for obj in objs], dtype=bool)
        class_recs[name] = {
            "bbox": np.array([obj["bbox"] for obj in objs], dtype=np.float64).reshape(-1, 4),
            "difficult": difficult,
            "det": np.zeros(len(objs), dtype=bool),
        }
        npos += int(np.sum(~difficult))

    image_ids, confidence, boxes = _read_detections(detpath.format(classname))
    order = np.argsort(-confidence, kind="stable")
    tp = np.zeros(len(order))
    fp = np.zeros(len(order))
    for d, index in enumerate(order):
        if image_ids[index] not in class_recs:
            raise UserError(f"{detpath.format(classname)}: image '{image_ids[index]}' is not in {imageset_file}")
        rec = class_recs[image_ids[index]]
        if rec["bbox"].shape[0] == 0:
            fp[d] = 1.0
            continue
        overlaps = iou_matrix(boxes[index], rec["bbox"], pixel_offset=1.0)[0]
        jmax = int(np.argmax(overlaps))
        if overlaps[jmax] > ovthresh:
            if rec["difficult"][jmax]:
                continue  # neither TP nor FP
            if not rec["det"][jmax]:
                tp[d] = 1.0
                rec["det"][jmax] = True
            else:
                fp[d] = 1.0
        else:
            fp[d] = 1.0

    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    with np.errstate(divide="ignore", invalid="ignore"):
        rec_curve = tp / float(npos) if npos > 0 else np.full_like(tp, np.nan)
        # a leading detection matched to a difficult object has tp + fp = 0
        prec_curve = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    ap = voc_ap(rec_curve, prec_curve, use_07_metric) if npos > 0 else float("nan")
    return rec_curve, prec_curve, ap


def write_voc_results_file(
    detections: Sequence[np.ndarray],
    image_ids: Sequence[str],
    image_sizes: Sequence[tuple[int, int]],
    class_names: Sequence[str],
    output_dir: str,
    image_set: str,
) -> dict[str, str]:
    """Write one comp4 result file per class; returns ``{class name: path}``.

    ``detections[i]`` is an [N, 6] array of rows ``[cls, score, x1, y1, x2,
    y2]`` for image ``image_ids[i]`` of size ``image_sizes[i] = (width,
    height)``. Coordinates are normalised as dataset/pascal_voc.py normalises
    its labels, the box's continuous extent over the image size: ``x1 =
    (xmin - 1) / width`` and ``x2 = xmax / width`` for the devkit's 1-based
    inclusive pixels. This writes the inverse, ``xmin = x1 * width + 1`` and
    ``xmax = x2 * width``; with it the devkit's ``+1`` IoU on the written
    boxes equals the metric's plain IoU on the normalised ones. Rows with
    ``cls < 0`` are skipped. Files are named
    ``comp4_det_<image_set>_<class>.txt`` and hold lines ``<image_id> <score>
    <x1> <y1> <x2> <y2>``; scores are written losslessly so the ranking (and
    the AP) equals the in-memory metric's, boxes to 1/100 pixel. Every class
    gets a file, empty when it has no detection.
    """
    if not len(detections) == len(image_ids) == len(image_sizes):
        raise ValueError("detections, image_ids and image_sizes must have the same length")
    lines: list[list[str]] = [[] for _ in class_names]
    for dets, image_id, (width, height) in zip(detections, image_ids, image_sizes):
        dets = np.asarray(dets, dtype=np.float64).reshape(-1, 6)
        scale = np.array([width, height, width, height], dtype=np.float64)
        first_pixel = np.array([1.0, 1.0, 0.0, 0.0])
        for row in dets:
            cls = int(row[0])
            if cls < 0:
                continue
            if cls >= len(class_names):
                raise UserError(f"detections for '{image_id}': class id {cls} but {len(class_names)} classes")
            x1, y1, x2, y2 = row[2:6] * scale + first_pixel
            lines[cls].append(f"{image_id} {float(row[1])!r} {x1:.2f} {y1:.2f} {x2:.2f} {y2:.2f}\n")
    paths = {}
    for cls, name in enumerate(class_names):
        path = os.path.join(output_dir, f"comp4_det_{image_set}_{name}.txt")
        _write_atomic(path, "".join(lines[cls]))
        paths[name] = path
    return paths


def evaluate_voc_detections(
    detections: Sequence[np.ndarray],
    image_ids: Sequence[str],
    devkit_path: str,
    year: str | int,
    image_set: str,
    class_names: Sequence[str],
    output_dir: str,
) -> dict[str, float]:
    """Write comp4 files for ``detections`` and score them with :func:`voc_eval`.

    ``detections[i]`` is the [N, 6] normalised ``[cls, score, x1, y1, x2, y2]``
    array of image ``image_ids[i]``; image sizes are read from
    ``<devkit>/VOC<year>/Annotations/<id>.xml`` and the image list from
    ``<devkit>/VOC<year>/ImageSets/Main/<image_set>.txt``. Result files and
    the annotation cache go to ``output_dir``. The 11-point metric is used
    for years before 2010 ("the PASCAL VOC metric changed in 2010").

    Returns ``{class name: AP, ..., 'mAP': mean}``, the mean over classes
    that have at least one non-difficult object.
    """
    voc_root = os.path.join(devkit_path, f"VOC{year}")
    imageset_file = os.path.join(voc_root, "ImageSets", "Main", f"{image_set}.txt")
    image_sizes = [
        read_voc_image_size(os.path.join(voc_root, "Annotations", f"{image_id}.xml")) for image_id in image_ids
    ]
    annopath = os.path.join(_escape_braces(voc_root), "Annotations", "{}.xml")
    paths = write_voc_results_file(detections, image_ids, image_sizes, class_names, output_dir, image_set)
    use_07_metric = int(year) < 2010
    result = {}
    for name in class_names:
        _, _, ap = voc_eval(
            _escape_braces(paths[name]),
            annopath,
            imageset_file,
            name,
            os.path.join(output_dir, "annotations_cache"),
            ovthresh=0.5,
            use_07_metric=use_07_metric,
        )
        result[name] = ap
    aps = [ap for ap in result.values() if not np.isnan(ap)]
    result["mAP"] = float(np.mean(aps)) if aps else float("nan")
    return result


def evaluate_pascal_voc(imdb: PascalVoc, detections: Sequence[np.ndarray], output_dir: str | None = None) -> dict:
    """Score detections on a :class:`dataset.pascal_voc.PascalVoc` set; returns ``{class: AP, ..., 'mAP': mean}``.

    ``detections[i]`` is image ``imdb.image_set_index[i]``'s [N, 6] array of rows
    ``[cls, score, x1, y1, x2, y2]``, coordinates normalised as the set normalises
    its labels. The comp4 result files and the annotation cache go to
    ``output_dir``, by default ``<devkit>/results/VOC<year>/Main`` as in the
    original. The 11-point metric is used for years before 2010.
    """
    if len(detections) != imdb.num_images:
        raise ValueError(f"{len(detections)} detection arrays for {imdb.num_images} images of {imdb.name}")
    if output_dir is None:
        output_dir = os.path.join(imdb.devkit_path, "results", "VOC" + imdb.year, "Main")
    return evaluate_voc_detections(detections, imdb.image_set_index, imdb.devkit_path, imdb.year,
                                   imdb.image_set, imdb.classes, output_dir)
