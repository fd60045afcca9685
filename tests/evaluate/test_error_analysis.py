"""evaluate/error_analysis.py: confusion matrix with background, AP by object size, the worst images."""
import csv

import cv2
import numpy as np
import pytest

from evaluate import error_analysis as ea
from evaluate.eval_metric import MApMetric, match_detections

BG = 2  # background row/column with two classes

# one image, two classes; boxes are normalised
A = [0, 0, .4, .4]        # class 0
B = [.5, .5, .9, .9]      # class 1
C = [0, .6, .3, .9]       # class 0, difficult
D = [.6, 0, .9, .3]       # class 1
LABELS_1 = np.array([[0, *A, 0], [1, *B, 0], [0, *C, 1], [1, *D, 0]])
DETS_1 = np.array([
    [0, .9, *A],                    # hit A                          -> [0, 0]
    [0, .8, 0, 0, .4, .39],         # A again: duplicate             -> [bg, 0]
    [0, .7, .5, .5, .9, .88],       # on B, of class 0: B goes to the class-1 hit below -> [bg, 0]
    [1, .6, .5, .5, .9, .9],        # hit B                          -> [1, 1]
    [0, .5, *C],                    # on the difficult C: counts nowhere
    [1, .2, *D],                    # under the score threshold: D is missed -> [1, bg]
    [1, .4, .42, .42, .48, .48],    # on nothing                     -> [bg, 1]
    [1, .45, 0, 0, .4, .4],         # on A, already taken            -> [bg, 1]
])
LABELS_2 = np.array([[1, .1, .1, .5, .5, 0], [0, .6, .6, .9, .9, 0]])
DETS_2 = np.array([[0, .9, .1, .1, .5, .5]])  # class 0 on the class-1 box: confusion -> [1, 0]; the class-0 box missed


def test_confusion_matrix_by_hand():
    matrix = ea.confusion_matrix([DETS_1, DETS_2], [LABELS_1, LABELS_2], num_classes=2, iou=.5, score_threshold=.3)
    expected = np.array([
        [1, 0, 1],   # class 0: A hit; image 2's class-0 box missed
        [1, 1, 1],   # class 1: image 2's box taken by a class-0 detection; B hit; D missed
        [2, 2, 0],   # background: two class-0 and two class-1 false positives
    ])
    np.testing.assert_array_equal(matrix, expected)
    kinds = ea.match_image(DETS_1, LABELS_1, .5, .3).det_kind
    assert kinds == ["hit", "duplicate", "background", "hit", "ignored", "background", "background"]


def test_iou_exactly_at_the_threshold_is_not_a_match():
    labels = np.array([[0, 0, 0, 1, 1, 0]])
    at = np.array([[0, .9, 0, 0, 1, .5]])  # IoU exactly .5
    above = np.array([[0, .9, 0, 0, 1, .51]])
    assert ea.confusion_matrix([at], [labels], 1).tolist() == [[0, 1], [1, 0]]
    assert ea.confusion_matrix([above], [labels], 1).tolist() == [[1, 0], [0, 0]]


def _random_scene(rng, num_classes=3):
    num_gt = int(rng.integers(0, 6))
    xy = rng.uniform(0, .7, (num_gt, 2))
    wh = rng.uniform(.05, .3, (num_gt, 2))
    labels = np.c_[rng.integers(0, num_classes, num_gt), xy, xy + wh, rng.uniform(size=num_gt) < .2]
    dets = []
    for row in labels:
        for _ in range(int(rng.integers(0, 3))):
            cls = row[0] if rng.uniform() < .7 else rng.integers(0, num_classes)
            dets.append([cls, rng.uniform(), *(row[1:5] + rng.normal(0, .03, 4))])
    for _ in range(int(rng.integers(0, 3))):
        x, y = rng.uniform(0, .8, 2)
        dets.append([rng.integers(0, num_classes), rng.uniform(), x, y, x + .15, y + .15])
    return np.array(dets).reshape(-1, 6), labels


def test_rows_count_the_boxes_columns_the_detections_diagonal_the_voc_hits():
    rng = np.random.default_rng(0)
    scenes = [_random_scene(rng) for _ in range(60)]
    dets, labels = [s[0] for s in scenes], [s[1] for s in scenes]
    matrix = ea.confusion_matrix(dets, labels, 3, iou=.5, score_threshold=.3)
    all_labels, all_dets = np.concatenate(labels), np.concatenate(dets)
    for c in range(3):
        assert matrix[c].sum() == np.sum((all_labels[:, 0] == c) & (all_labels[:, 5] == 0))
    ignored = sum(kind == "ignored" for d, lab in scenes for kind in ea.match_image(d, lab, .5, .3).det_kind)
    assert matrix[:, :3].sum() == np.sum(all_dets[:, 1] >= .3) - ignored
    # the diagonal is what the VOC metric's matching counts as true positives
    voc_hits = np.zeros(3, int)
    for d, lab in scenes:
        d = d[d[:, 1] >= .3]
        for c in range(3):
            own = lab[:, 0] == c
            _, is_tp = match_detections(d[d[:, 0] == c, 1], d[d[:, 0] == c, 2:6], lab[own, 1:5], lab[own, 5] > 0, .5)
            voc_hits[c] += is_tp.sum()
    np.testing.assert_array_equal(np.diag(matrix)[:3], voc_hits)


def test_ap_by_size_by_hand():
    labels = [np.array([[0, .1, .1, .2, .2, 0], [0, .5, .5, 1, 1, 0]])]  # 10 px and 50 px at 100
    dets = [np.array([[0, .9, .5, .5, 1, 1], [0, .8, .02, .7, .1, .78]])]  # hit the big one; an 8 px false positive
    rows = {row["band"]: row for row in ea.ap_by_size(dets, labels, 1, 100)}
    assert rows["<16"]["objects"] == 1 and rows["<16"]["mAP"] == 0  # its one box missed, the 8 px detection wrong
    assert rows["32-64"]["objects"] == 1 and rows["32-64"]["mAP"] == 1  # the 8 px detection is not of this band
    assert np.isnan(rows["16-32"]["mAP"]) and rows["16-32"]["objects"] == 0
    # per-image (width, height): at 400 x 400 pixels the boxes are 40 and 200 px
    rows = {row["band"]: row for row in ea.ap_by_size(dets, labels, 1, [(400, 400)])}
    assert rows["32-64"]["mAP"] == 0 and rows[">=128"]["mAP"] == 1


def test_ap_of_a_band_holding_everything_is_the_voc_metric():
    rng = np.random.default_rng(1)
    # MApMetric skips images without boxes (their detections count nowhere), so every scene has some
    scenes = [scene for scene in (_random_scene(rng) for _ in range(60)) if len(scene[1])]
    dets, labels = [s[0] for s in scenes], [s[1] for s in scenes]
    (row,) = ea.ap_by_size(dets, labels, 3, 300, edges=(1e9,))[:1]
    metric = MApMetric(.5, class_names=["a", "b", "c"])
    width = max(len(lab) for lab in labels)
    for d, lab in zip(dets, labels):
        padded = -np.ones((1, max(width, 1), 6))
        padded[0, :len(lab)] = lab
        metric.update([padded], [d[None] if len(d) else -np.ones((1, 1, 6))])
    expected = metric.average_precisions()
    np.testing.assert_allclose(row["ap"], [expected[n] for n in ("a", "b", "c")])


def test_write_analysis(tmp_path):
    rng = np.random.default_rng(2)
    scenes = [_random_scene(rng) for _ in range(6)]
    dets = [s[0] for s in scenes] + [DETS_1]
    labels = [s[1] for s in scenes] + [np.vstack([LABELS_1, [[0, .05, .45, .15, .55, 0]] * 6])]  # 7 misses
    images = [np.full((90, 120, 3), 100, np.uint8) for _ in labels]
    result = ea.write_analysis(str(tmp_path), dets, labels, images, ["a", "b", "c"], 300, num_worst=3)
    with open(tmp_path / "confusion.csv") as f:
        table = list(csv.reader(f))
    assert table[0][1:] == ["a", "b", "c", "background"]
    np.testing.assert_array_equal(np.array([r[1:] for r in table[1:]], dtype=int), result["confusion"])
    np.testing.assert_array_equal(result["confusion"], ea.confusion_matrix(dets, labels, 3))
    assert result["worst"][0] == len(labels) - 1
    for name in ("confusion.png", "ap_by_size.png", "worst_images.png", "ap_by_size.csv"):
        assert (tmp_path / name).stat().st_size > 0
    grid = cv2.imread(str(tmp_path / "worst_images.png"))[:, :, ::-1]
    assert np.all(grid == ea.MISSED_COLOUR, axis=-1).sum() > 100
    # no images: no grid, the rest as before
    again = ea.write_analysis(str(tmp_path / "no_images"), dets, labels, None, ["a", "b", "c"], 300)
    assert [p.rsplit("/", 1)[1] for p in again["files"]] == ["confusion.csv", "confusion.png", "ap_by_size.csv",
                                                            "ap_by_size.png"]


def test_mismatched_inputs():
    with pytest.raises(ValueError, match="2 detection lists for 1 label lists"):
        ea.confusion_matrix([DETS_1, DETS_2], [LABELS_1], 2)
