"""The file-based VOC evaluation (evaluate/eval_voc.py) by hand, and against the in-memory metrics.

Cross-check convention: the devkit measures 1-based inclusive pixel boxes with
``width = x2 - x1 + 1``; the SSD metric measures normalised boxes without the
+1. dataset/pascal_voc.py normalises a box's continuous extent, ``((xmin - 1) /
W, xmax / W)``, and write_voc_results_file inverts that, so both measure the
same widths and the same IoUs. Two cross-checks, both requiring the same APs
to 1e-12 (they are in fact equal):

* the pipeline as used: the metric on normalised labels and detections
  (``pixel_offset=0``) against eval_voc on the written files. To make the
  float arithmetic exact, so that an IoU of exactly 0.5 is a miss on both
  sides, image sizes are powers of two;
* any image size: the metric with ``pixel_offset=1`` on the very pixel boxes
  the result files hold.
"""
import json
import os

import numpy as np
import pytest

from dataset.voc_xml import parse_voc_rec, read_voc_image_size
from evaluate.eval_metric import MApMetric, VOC07MApMetric
from evaluate.eval_voc import (
    evaluate_voc_detections,
    voc_ap,
    voc_eval,
    write_voc_results_file,
)


def write_annotation(path, width, height, objects):
    """A VOC XML file; ``objects`` are ``(name, [x1, y1, x2, y2], difficult)``."""
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, (x1, y1, x2, y2), difficult in objects:
        parts.append(
            f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
            f"<xmin>{x1}</xmin><ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
        )
    parts.append("</annotation>")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("".join(parts))


def write_voc(root, images):
    """A VOC<year> folder: ``images`` maps id -> (width, height, objects); returns the set file."""
    for image_id, (width, height, objects) in images.items():
        write_annotation(os.path.join(root, "Annotations", f"{image_id}.xml"), width, height, objects)
    set_file = os.path.join(root, "ImageSets", "Main", "test.txt")
    os.makedirs(os.path.dirname(set_file), exist_ok=True)
    with open(set_file, "w") as f:
        f.write("\n".join(images) + "\n")
    return set_file


# ---------------------------------------------------------------- voc_ap by hand


def test_voc_ap_hand_worked():
    # (recall, precision): (.2, 1) (.2, .5) (.4, 2/3) (.6, .75) (.6, .6) (.8, 2/3)
    rec = np.array([0.2, 0.2, 0.4, 0.6, 0.6, 0.8])
    prec = np.array([1, 0.5, 2 / 3, 0.75, 0.6, 2 / 3])
    # 11-point: t = 0, .1, .2 -> 1; .3 .. .6 -> .75 (recall 0.6 reaches t = 0.6); .7, .8 -> 2/3
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx((3 + 4 * 0.75 + 2 * 2 / 3) / 11)
    # area: .2 * (1 + .75 + .75 + 2/3)
    assert voc_ap(rec, prec, use_07_metric=False) == pytest.approx(19 / 30)


def test_voc_ap_recall_of_exactly_three_tenths_reaches_the_03_point():
    # np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004 and would miss recall 3/10
    rec, prec = np.array([3 / 10]), np.array([1.0])
    assert voc_ap(rec, prec, use_07_metric=True) == pytest.approx(4 / 11)


def test_voc_ap_without_detections_is_zero():
    assert voc_ap(np.zeros(0), np.zeros(0), True) == 0.0
    assert voc_ap(np.zeros(0), np.zeros(0), False) == 0.0


# ---------------------------------------------------------------- voc_eval on a hand-written set

HAND_SET = {
    "a": (50, 50, [("car", [1, 1, 10, 10], 0), ("car", [21, 21, 40, 40], 1), ("dog", [1, 1, 20, 20], 0)]),
    "b": (50, 50, [("car", [11, 11, 30, 30], 0)]),
}
# car detections in score order:
#   .95 a [1,1,10,5.5]  IoU 55/100 with +1 pixel (40.5/81 = .5 without): TP
#   .90 a [1,1,10,5]    IoU exactly 50/100: a miss, FP
#   .80 a on the difficult car: neither
#   .70 b exact: TP;   .60 b exact again: duplicate, FP
CAR_LINES = [
    "a 0.9 1 1 10 5",
    "b 0.6 11 11 30 30",
    "a 0.95 1 1 10 5.5",
    "a 0.8 21 21 40 40",
    "b 0.7 11 11 30 30",
]


@pytest.fixture
def hand_set(tmp_path):
    set_file = write_voc(str(tmp_path / "VOC2007"), HAND_SET)
    results = tmp_path / "results"
    results.mkdir()
    (results / "det_car.txt").write_text("\n".join(CAR_LINES) + "\n")
    (results / "det_dog.txt").write_text("")
    (results / "det_cat.txt").write_text("")
    return {
        "detpath": str(results / "det_{}.txt"),
        "annopath": str(tmp_path / "VOC2007" / "Annotations" / "{}.xml"),
        "imageset_file": set_file,
        "cache_dir": str(tmp_path / "cache"),
    }


def test_parse_voc_rec_and_size(hand_set):
    objects = parse_voc_rec(hand_set["annopath"].format("a"))
    assert objects == [
        {"name": "car", "difficult": 0, "bbox": [1.0, 1.0, 10.0, 10.0]},
        {"name": "car", "difficult": 1, "bbox": [21.0, 21.0, 40.0, 40.0]},
        {"name": "dog", "difficult": 0, "bbox": [1.0, 1.0, 20.0, 20.0]},
    ]
    assert read_voc_image_size(hand_set["annopath"].format("a")) == (50, 50)


def test_voc_eval_hand_worked(hand_set):
    rec, prec, ap07 = voc_eval(classname="car", use_07_metric=True, **hand_set)
    # TP, FP, (neither), TP, FP over 2 positives (the difficult car is not one)
    np.testing.assert_allclose(rec, [0.5, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(prec, [1.0, 0.5, 0.5, 2 / 3, 0.5])
    assert ap07 == pytest.approx((6 + 5 * 2 / 3) / 11)
    _, _, area = voc_eval(classname="car", use_07_metric=False, **hand_set)
    assert area == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # no detections: AP 0 (the original crashed on the empty file); no objects: nan
    assert voc_eval(classname="dog", **hand_set)[2] == 0.0
    assert np.isnan(voc_eval(classname="cat", **hand_set)[2])


def test_voc_eval_threshold_is_strict(hand_set):
    # the .95 box's IoU is exactly 55/100: at ovthresh 0.55 it is a miss as well
    _, prec, _ = voc_eval(classname="car", ovthresh=0.55, **hand_set)
    np.testing.assert_allclose(prec, [0.0, 0.0, 0.0, 1 / 3, 1 / 4])


def test_annotation_cache_is_json_and_rebuilt_for_new_images(hand_set):
    with open(hand_set["imageset_file"], "w") as f:
        f.write("a\n")
    assert voc_eval(classname="dog", **hand_set)[2] == 0.0
    cache = os.path.join(hand_set["cache_dir"], "test_annots.json")
    with open(cache) as f:
        assert sorted(json.load(f)) == ["a"]
    # the set grows: the cache lacks "b" and must be rebuilt, not trusted
    with open(hand_set["imageset_file"], "w") as f:
        f.write("a\nb\n")
    rec, _, _ = voc_eval(classname="car", **hand_set)
    assert rec[-1] == 1.0
    with open(cache) as f:
        assert sorted(json.load(f)) == ["a", "b"]
    assert os.listdir(hand_set["cache_dir"]) == ["test_annots.json"]  # no temporary files left


def test_write_voc_results_file_format(tmp_path):
    dets = [np.array([[1, 0.5, 0.1, 0.2, 0.3, 0.4], [-1, 0.9, 0, 0, 1, 1]]), np.zeros((0, 6))]
    # image 1 is 100 wide, 200 high
    paths = write_voc_results_file(dets, ["000001", "000002"], [(100, 200), (10, 10)], ["cat", "dog"],
                                   str(tmp_path), "test")
    assert paths == {name: str(tmp_path / f"comp4_det_test_{name}.txt") for name in ("cat", "dog")}
    assert (tmp_path / "comp4_det_test_cat.txt").read_text() == ""
    # the inverse of dataset/pascal_voc.py's ((xmin - 1) / width, xmax / width): 0.1 * 100 + 1 = 11
    assert (tmp_path / "comp4_det_test_dog.txt").read_text() == "000001 0.5 11.00 41.00 30.00 80.00\n"


# ---------------------------------------------------------------- cross-check with the metrics

CLASSES = ["bird", "boat", "bus"]


def random_scene(seed, power_of_two_sizes):
    """Random images (pixel GT with difficult flags) and detections near and far from the GT."""
    rng = np.random.default_rng(seed)
    images = {}
    labels, dets_pixel = [], []
    for index in range(10):
        if power_of_two_sizes:
            width, height = (int(v) for v in rng.choice([128, 256, 512], size=2))
        else:
            width, height = (int(v) for v in rng.integers(120, 400, size=2))
        objects, rows = [], []
        for _ in range(int(rng.integers(1, 6))):  # every image has an object (see eval_metric)
            x1, y1 = int(rng.integers(1, width - 40)), int(rng.integers(1, height - 40))
            x2, y2 = int(rng.integers(x1 + 10, width + 1)), int(rng.integers(y1 + 10, height + 1))
            cls, difficult = int(rng.integers(len(CLASSES))), int(rng.random() < 0.3)
            objects.append((CLASSES[cls], [x1, y1, x2, y2], difficult))
            rows.append([cls, x1, y1, x2, y2, difficult])
        det_rows = []
        for cls, x1, y1, x2, y2, _ in rows:
            # 0-3 jittered copies per object: IoUs around 0.5, duplicates, wrong classes
            for _ in range(int(rng.integers(0, 4))):
                jitter = rng.integers(-12, 13, size=4)
                box = np.clip(np.array([x1, y1, x2, y2]) + jitter, 1, [width, height, width, height])
                det_cls = cls if rng.random() < 0.85 else int(rng.integers(len(CLASSES)))
                det_rows.append([det_cls, rng.random(), *box])
            if (y2 - y1 + 1) % 2 == 0 and rng.random() < 0.5:
                # the top half of the box: IoU exactly 0.5, a miss on both sides
                det_rows.append([cls, rng.random(), x1, y1, x2, y1 + (y2 - y1 + 1) // 2 - 1])
        for _ in range(int(rng.integers(0, 3))):  # boxes anywhere
            x1, y1 = int(rng.integers(1, width - 20)), int(rng.integers(1, height - 20))
            box = [x1, y1, int(rng.integers(x1 + 5, width + 1)), int(rng.integers(y1 + 5, height + 1))]
            det_rows.append([int(rng.integers(len(CLASSES))), rng.random(), *box])
        image_id = f"{seed:02d}{index:04d}"
        images[image_id] = (width, height, objects)
        labels.append(np.array(rows, dtype=np.float64))
        dets_pixel.append(np.array(det_rows, dtype=np.float64).reshape(-1, 6))
    return images, labels, dets_pixel


def normalise(rows, width, height, first_box_column):
    """Pixel rows -> dataset/pascal_voc.py's normalised extent ((xmin - 1) / W, xmax / W)."""
    out = rows.copy()
    box = slice(first_box_column, first_box_column + 4)
    out[:, box] = (rows[:, box] - [1, 1, 0, 0]) / [width, height, width, height]
    return out


def _pad(arrays, width):
    out = -np.ones((len(arrays), max(len(a) for a in arrays), width))
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out


def _metric_result(metric_cls, labels, dets, **kwargs):
    metric = metric_cls(class_names=CLASSES, **kwargs)
    metric.update([_pad(labels, 6)], [_pad(dets, 6)])
    return dict(zip(*metric.get()))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("normalised", [True, False], ids=["normalised", "pixel_offset"])
def test_metrics_agree_with_voc_eval_on_random_detections(tmp_path, seed, normalised):
    images, labels, dets_pixel = random_scene(seed, power_of_two_sizes=normalised)
    for year in ("2007", "2012"):
        write_voc(str(tmp_path / f"VOC{year}"), images)
    sizes = [(width, height) for width, height, _ in images.values()]
    # the detections as the SSD pipeline hands them to evaluate_voc_detections
    dets_normalised = [normalise(d, w, h, 2) for d, (w, h) in zip(dets_pixel, sizes)]
    if normalised:
        metric_labels = [normalise(label, w, h, 1) for label, (w, h) in zip(labels, sizes)]
        metric_dets, offset = dets_normalised, 0.0
    else:
        metric_labels, metric_dets, offset = labels, dets_pixel, 1.0

    for year, metric_cls in (("2007", VOC07MApMetric), ("2012", MApMetric)):
        files = evaluate_voc_detections(dets_normalised, list(images), str(tmp_path), year, "test", CLASSES,
                                        str(tmp_path / f"out{year}"))
        in_memory = _metric_result(metric_cls, metric_labels, metric_dets, pixel_offset=offset)
        assert list(in_memory) == list(files)
        np.testing.assert_allclose(list(in_memory.values()), list(files.values()), rtol=0, atol=1e-12)
        assert 0.0 < in_memory["mAP"] < 1.0

    # the scene really has difficult matches: counting them changes the result
    counted = _metric_result(MApMetric, metric_labels, metric_dets, pixel_offset=offset, use_difficult=True)
    assert counted != in_memory
