"""Hand-worked cases for the VOC mAP metrics (evaluate/eval_metric.py), COCO AP and PR plots.

Coordinates are multiples of 1/16 so they are exact in float32 and every IoU
below is an exact binary fraction.
"""
import os
import sys

import mxnet as mx
import numpy as np
import pytest

from config.errors import UserError
from evaluate.eval_metric import MApMetric, VOC07MApMetric

A = [0.0, 0.0, 0.5, 0.5]
B = [0.5, 0.5, 1.0, 1.0]
NOWHERE = [0.75, 0.0, 1.0, 0.25]  # overlaps neither A nor B
A_HALF = [0.0, 0.0, 0.5, 0.25]  # IoU with A exactly 0.5
A_THREE_QUARTERS = [0.0, 0.0, 0.5, 0.375]  # IoU with A 0.75


def _batch(rows_per_image, width):
    """Pad per-image row lists with -1 rows into a [B, max_rows, width] array."""
    most = max(1, max(len(rows) for rows in rows_per_image))
    out = -np.ones((len(rows_per_image), most, width), dtype=np.float32)
    for i, rows in enumerate(rows_per_image):
        if rows:
            out[i, : len(rows)] = np.asarray(rows, dtype=np.float32)
    return out


def gt(cls, box, difficult=0):
    return [cls, *box, difficult]


def det(cls, score, box):
    return [cls, score, *box]


def update(metric, labels, dets):
    """One batch through the NDArray path Module.score uses."""
    metric.update([mx.nd.array(_batch(labels, 6))], [mx.nd.array(_batch(dets, 6))])


def result(metric):
    names, values = metric.get()
    return dict(zip(names, values))


@pytest.mark.parametrize("metric_cls", [MApMetric, VOC07MApMetric])
def test_detections_are_taken_in_score_order(metric_cls):
    # the low-score row comes first; sorted, the 0.9 detection takes the box
    metric = metric_cls()
    update(metric, [[gt(0, A)]], [[det(0, 0.3, A), det(0, 0.9, A_THREE_QUARTERS)]])
    precision, recall, ap = metric.pr_curves()["0"]
    np.testing.assert_allclose(precision, [1.0, 0.5])
    np.testing.assert_allclose(recall, [1.0, 1.0])
    # matched in row order it would be FP then TP: AP 0.5
    assert ap == pytest.approx(1.0)


def test_equal_scores_keep_image_order():
    # image 1's FP and image 2's TP tie at 0.5: the FP stays first (the original's
    # argsort()[::-1] put the later one first)
    metric = MApMetric()
    update(metric, [[gt(0, A)], [gt(0, B)]], [[det(0, 0.5, NOWHERE)], [det(0, 0.5, B)]])
    precision, recall, ap = metric.pr_curves()["0"]
    np.testing.assert_allclose(precision, [0.0, 0.5])
    np.testing.assert_allclose(recall, [0.0, 0.5])
    assert ap == pytest.approx(0.25)


def test_iou_exactly_at_threshold_is_a_miss():
    metric = MApMetric(ovp_thresh=0.5)
    update(metric, [[gt(0, A)]], [[det(0, 0.9, A_HALF)]])
    assert result(metric) == {"0": 0.0, "mAP": 0.0}
    lower = MApMetric(ovp_thresh=0.49)
    update(lower, [[gt(0, A)]], [[det(0, 0.9, A_HALF)]])
    assert result(lower) == {"0": 1.0, "mAP": 1.0}


def test_first_match_is_tp_duplicates_are_fp():
    # d1 on A (TP), d2 on A again (duplicate, FP), d3 on B (TP); 2 positives
    dets = [[det(0, 0.9, A), det(0, 0.8, A_THREE_QUARTERS), det(0, 0.7, B)]]
    labels = [[gt(0, A), gt(0, B)]]
    area, eleven = MApMetric(), VOC07MApMetric()
    for metric in (area, eleven):
        update(metric, labels, dets)
    precision, recall, _ = area.pr_curves()["0"]
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0])
    # area: 0.5 * 1 + 0.5 * 2/3; 11-point: six thresholds <= 0.5 at 1, five at 2/3
    assert result(area)["0"] == pytest.approx(5 / 6)
    assert result(eleven)["0"] == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_difficult_match_is_neither_tp_nor_fp_unless_use_difficult():
    # d1 on the difficult box A, d2 on nothing, d3 on B
    labels = [[gt(0, A, difficult=1), gt(0, B)]]
    dets = [[det(0, 0.9, A), det(0, 0.8, NOWHERE), det(0, 0.7, B)]]
    ignored = MApMetric(use_difficult=False)
    update(ignored, labels, dets)
    precision, recall, ap = ignored.pr_curves()["0"]
    # d1 dropped; d2 FP, d3 TP; one positive
    np.testing.assert_allclose(precision, [0.0, 0.5])
    np.testing.assert_allclose(recall, [0.0, 1.0])
    assert ap == pytest.approx(0.5)
    counted = MApMetric(use_difficult=True)
    update(counted, labels, dets)
    precision, recall, ap = counted.pr_curves()["0"]
    # d1 TP, d2 FP, d3 TP; two positives
    np.testing.assert_allclose(precision, [1.0, 0.5, 2 / 3])
    np.testing.assert_allclose(recall, [0.5, 0.5, 1.0])
    assert ap == pytest.approx(5 / 6)


def test_difficult_boxes_are_not_positives():
    # the difficult box is never detected: recall is still 1 without it
    labels = [[gt(0, A, difficult=1), gt(0, B)]]
    dets = [[det(0, 0.9, B)]]
    ignored, counted = MApMetric(), MApMetric(use_difficult=True)
    update(ignored, labels, dets)
    update(counted, labels, dets)
    assert result(ignored)["0"] == pytest.approx(1.0)
    assert result(counted)["0"] == pytest.approx(0.5)


def test_class_without_ground_truth_makes_false_positives():
    # image 1 has no class-1 box, so its class-1 detection (0.9) is FP;
    # image 2's class-1 detection (0.8) is TP. Class 2 has no ground truth anywhere.
    labels = [[gt(0, A)], [gt(1, B)]]
    dets = [[det(0, 0.5, A), det(1, 0.9, A), det(2, 0.95, B)], [det(1, 0.8, B)]]
    metric = MApMetric(class_names=["cat", "dog", "emu"])
    update(metric, labels, dets)
    values = result(metric)
    assert list(values) == ["cat", "dog", "emu", "mAP"]
    assert values["cat"] == pytest.approx(1.0)
    assert values["dog"] == pytest.approx(0.5)  # precision [0, 1/2] at recall [0, 1]
    assert np.isnan(values["emu"])
    assert values["mAP"] == pytest.approx(0.75)  # mean over classes with ground truth
    assert list(metric.average_precisions()) == ["cat", "dog", "emu"]
    assert list(metric.pr_curves()) == ["cat", "dog"]


def test_padding_rows_and_filtered_detections_are_ignored():
    # cls -1 detection rows (filtered by the detection layer) sit on the box with
    # the highest scores; padded -1 label rows must not become ground truth
    labels = [[gt(0, A)] + [[-1] * 6] * 3]
    dets = [[det(-1, 0.99, A), det(0, 0.6, A), det(-1, 0.98, NOWHERE)] + [[-1] * 6] * 2]
    metric = MApMetric()
    update(metric, labels, dets)
    assert result(metric) == {"0": 1.0, "mAP": 1.0}


def test_image_without_valid_labels_is_skipped():
    # the second image has only padding: its detection is not a false positive
    metric = MApMetric()
    update(metric, [[gt(0, A)], []], [[det(0, 0.5, A)], [det(0, 0.9, B)]])
    assert result(metric) == {"0": 1.0, "mAP": 1.0}


def test_labels_without_difficult_column():
    metric = MApMetric()
    labels = np.array([[[0, *A], [0, *B]]], dtype=np.float32)  # width 5
    metric.update([labels], [_batch([[det(0, 0.9, B)]], 6)])
    assert result(metric)["0"] == pytest.approx(0.5)


def test_accumulates_across_updates_and_reset_clears():
    metric = MApMetric()
    update(metric, [[gt(0, A)]], [[det(0, 0.6, A)]])
    assert result(metric)["0"] == pytest.approx(1.0)
    # image 2: a higher-scored FP and an undetected box: precision [0, 1/2] at recall [0, 1/2]
    update(metric, [[gt(0, B)]], [[det(0, 0.9, NOWHERE)]])
    assert result(metric)["0"] == pytest.approx(0.25)
    together = MApMetric()
    update(together, [[gt(0, A)], [gt(0, B)]], [[det(0, 0.6, A)], [det(0, 0.9, NOWHERE)]])
    assert result(together) == result(metric)
    metric.reset()
    names, values = metric.get()
    assert names == ["mAP"] and np.isnan(values[0])
    update(metric, [[gt(0, A)]], [[det(0, 0.6, A)]])
    assert result(metric)["0"] == pytest.approx(1.0)


def _five_box_curve():
    """One image, five boxes; detections TP FP TP TP FP TP in score order."""
    boxes = [[i * 3 / 16, 0.0, i * 3 / 16 + 2 / 16, 2 / 16] for i in range(5)]
    away = [0.0, 0.5, 0.125, 0.625]
    hits = iter(boxes)
    dets = []
    for score, is_tp in zip([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [1, 0, 1, 1, 0, 1]):
        dets.append(det(0, score, next(hits) if is_tp else away))
    return [[gt(0, box) for box in boxes]], [dets]


def test_eleven_point_ap_by_hand():
    # (recall, precision): (.2, 1) (.2, .5) (.4, 2/3) (.6, .75) (.6, .6) (.8, 2/3)
    # max precision at recall >= t: t=0,.1,.2 -> 1; t=.3..0.6 -> .75; t=.7,.8 -> 2/3; t=.9,1 -> 0
    # (3 + 4 * .75 + 2 * 2/3) / 11 = 2/3. Recall 3/5 reaches t = 0.6 exactly.
    metric = VOC07MApMetric()
    update(metric, *_five_box_curve())
    precision, recall, ap = metric.pr_curves()["0"]
    np.testing.assert_allclose(recall, [0.2, 0.2, 0.4, 0.6, 0.6, 0.8])
    np.testing.assert_allclose(precision, [1, 0.5, 2 / 3, 0.75, 0.6, 2 / 3])
    assert ap == pytest.approx(2 / 3)


def test_area_ap_by_hand():
    # envelope over recall steps 0-.2: 1, .2-.4: .75, .4-.6: .75, .6-.8: 2/3, .8-1: 0
    # .2 * (1 + .75 + .75 + 2/3) = 19/30
    metric = MApMetric()
    update(metric, *_five_box_curve())
    assert result(metric)["0"] == pytest.approx(19 / 30)


def test_pred_idx_picks_the_detection_output():
    labels = [mx.nd.array(_batch([[gt(0, A)]], 6))]
    good = mx.nd.array(_batch([[det(0, 0.9, A)]], 6))
    wrong = mx.nd.array(_batch([[det(0, 0.9, NOWHERE)]], 6))
    metric = MApMetric(pred_idx=3)
    metric.update(labels, [wrong, wrong, wrong, good])
    assert result(metric)["0"] == pytest.approx(1.0)


def test_module_score_drives_the_metric():
    # a graph that passes det_out through: Module.score -> update_dict -> update
    data, label = mx.sym.Variable("data"), mx.sym.Variable("label")
    net = mx.sym.Group([mx.sym.BlockGrad(data, name="det_out"), mx.sym.BlockGrad(label, name="label_out")])
    labels = _batch([[gt(0, A)], [gt(0, B)]], 6)
    dets = _batch([[det(0, 0.6, A)], [det(0, 0.9, NOWHERE)]], 6)
    it = mx.io.NDArrayIter(data=dets, label=labels, batch_size=1, label_name="label")
    mod = mx.mod.Module(net, data_names=["data"], label_names=["label"], context=mx.cpu())
    mod.bind(data_shapes=it.provide_data, label_shapes=it.provide_label, for_training=False)
    mod.init_params()
    scores = dict(mod.score(it, VOC07MApMetric(class_names=["thing"])))
    # precision [0, 1/2] at recall [0, 1/2]: six 11-point thresholds at 1/2
    assert scores == {"thing": pytest.approx(3 / 11), "mAP": pytest.approx(3 / 11)}


def test_pixel_offset_uses_the_devkit_width():
    # pixel boxes [1,1,10,10] and [1,1,10,5.5]: with +1, IoU 55/100; without, 40.5/81 = 0.5
    labels = np.array([[[0, 1, 1, 10, 10, 0]]])
    dets = np.array([[[0, 0.9, 1, 1, 10, 5.5]]])
    with_offset, without = MApMetric(pixel_offset=1), MApMetric(pixel_offset=0)
    with_offset.update([labels], [dets])
    without.update([labels], [dets])
    assert result(with_offset)["0"] == 1.0
    assert result(without)["0"] == 0.0


def test_roc_output_path_writes_one_png_per_class(tmp_path):
    out = tmp_path / "pr"
    metric = MApMetric(class_names=["cat", "traffic light", "unseen"], roc_output_path=str(out))
    update(metric, [[gt(0, A), gt(1, B)]], [[det(0, 0.9, A), det(1, 0.8, NOWHERE)]])
    metric.get()
    assert sorted(os.listdir(out)) == ["pr_cat.png", "pr_traffic_light.png"]
    for name in os.listdir(out):
        with open(out / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_coco_ap_by_hand():
    pytest.importorskip("pycocotools")
    from evaluate.coco_eval import COCOMApMetric, coco_ap

    # one 100x100 image, one 40x40-pixel box (medium: 32^2 < 1600 < 96^2)
    labels = [np.array([[0, 0.1, 0.1, 0.5, 0.5]])]
    perfect = coco_ap([np.array([[0, 0.9, 0.1, 0.1, 0.5, 0.5]])], labels, [(100, 100)])
    # (-1: no ground truth in that size range)
    assert perfect == pytest.approx({
        "AP": 1.0, "AP50": 1.0, "AP75": 1.0, "APs": -1.0, "APm": 1.0, "APl": -1.0,
        "AR1": 1.0, "AR10": 1.0, "AR100": 1.0, "ARs": -1.0, "ARm": 1.0, "ARl": -1.0,
    })
    # IoU 1024/1600 = 0.64 matches at thresholds .50, .55, .60 only: AP 3/10
    loose = coco_ap([np.array([[0, 0.9, 0.1, 0.1, 0.5, 0.356]])], labels, [(100, 100)])
    assert (loose["AP"], loose["AP50"], loose["AP75"]) == pytest.approx((0.3, 1.0, 0.0))
    # a detection on a difficult (crowd) box is ignored, not a false positive
    with_difficult = [np.array([[0, 0.1, 0.1, 0.5, 0.5, 0], [0, 0.6, 0.6, 0.9, 0.9, 1]])]
    dets = [np.array([[0, 0.95, 0.6, 0.6, 0.9, 0.9], [0, 0.9, 0.1, 0.1, 0.5, 0.5]])]
    assert coco_ap(dets, with_difficult, [(100, 100)])["AP"] == pytest.approx(1.0)
    # the EvalMetric wrapper gives the same numbers
    metric = COCOMApMetric(image_size=(100, 100))
    metric.update([_batch([[gt(0, [0.1, 0.1, 0.5, 0.5])]], 6)], [_batch([[det(0, 0.9, [0.1, 0.1, 0.5, 0.356])]], 6)])
    assert dict(zip(*metric.get()))["AP"] == pytest.approx(0.3)


def test_coco_ap_without_pycocotools_is_a_user_error(monkeypatch):
    from evaluate.coco_eval import coco_ap

    # a None entry makes "import pycocotools..." raise ImportError
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(UserError, match="pip install pycocotools"):
        coco_ap([np.zeros((0, 6))], [np.zeros((0, 5))])
