"""Hand-worked cases for the numpy box maths in dataset/bbox.py."""
import numpy as np
import pytest

from dataset.bbox import bbox_pred, bbox_transform, clip_boxes, iou_matrix, nms


def test_iou_hand_worked_normalised():
    a = np.array([[0.0, 0.0, 0.5, 0.5]])
    b = np.array([[0.25, 0.25, 0.75, 0.75], [0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
    # overlap 0.25*0.25 = 1/16; union 2/4 - 1/16 = 7/16 -> 1/7
    np.testing.assert_allclose(iou_matrix(a, b), [[1 / 7, 0.0, 1.0]])


def test_iou_pixel_offset_convention():
    # with +1, the box [0,0,9,9] is 10x10 = 100 pixels; [5,0,14,9] overlaps 5x10
    iou = iou_matrix([[0, 0, 9, 9]], [[5, 0, 14, 9]], pixel_offset=1.0)
    assert iou[0, 0] == pytest.approx(50 / 150)


def test_transform_round_trip_rcnn_and_ssd():
    rng = np.random.default_rng(0)
    ex = rng.uniform(0, 50, (20, 2))
    ex = np.hstack([ex, ex + rng.uniform(5, 60, (20, 2))])
    gt = rng.uniform(0, 50, (20, 2))
    gt = np.hstack([gt, gt + rng.uniform(5, 60, (20, 2))])
    for offset, stds in ((1.0, (0.1, 0.1, 0.2, 0.2)), (0.0, (1, 1, 1, 1))):
        deltas = bbox_transform(ex, gt, stds, pixel_offset=offset)
        np.testing.assert_allclose(bbox_pred(ex, deltas, stds, pixel_offset=offset), gt, atol=1e-9)


def test_transform_hand_worked():
    # same-size box shifted by half its width: dx = 0.5, others 0
    d = bbox_transform([[0, 0, 9, 9]], [[5, 0, 14, 9]])
    np.testing.assert_allclose(d, [[0.5, 0.0, 0.0, 0.0]])
    d = bbox_transform([[0, 0, 9, 9]], [[0, 0, 19, 9]], box_stds=(0.1, 0.1, 0.2, 0.2))
    np.testing.assert_allclose(d, [[5.0, 0.0, np.log(2) / 0.2, 0.0]])


def test_bbox_pred_class_specific_columns():
    boxes = np.array([[0, 0, 9, 9]], dtype=float)
    deltas = np.zeros((1, 8))
    deltas[0, 4] = 1.0  # second class moves right by one width
    out = bbox_pred(boxes, deltas)
    np.testing.assert_allclose(out, [[0, 0, 9, 9, 10, 0, 19, 9]])


def test_clip_boxes():
    out = clip_boxes([[-5, -5, 120, 30, 3, 4, 200, 300]], (100, 110))
    np.testing.assert_allclose(out, [[0, 0, 109, 30, 3, 4, 109, 99]])


def test_nms_hand_worked():
    dets = np.array(
        [
            [0, 0, 9, 9, 0.9],     # kept
            [1, 0, 10, 9, 0.8],    # IoU 90/110 = .818 with the first -> dropped
            [20, 20, 29, 29, 0.7],  # disjoint -> kept
            [0, 0, 9, 19, 0.95],   # IoU 100/200 = .5 with the first: not above .5
        ]
    )
    assert nms(dets, 0.5).tolist() == [3, 0, 2]
    # at .49 box 0 goes too; box 1 vs box 3 is 90/210 = .43, so box 1 survives
    assert nms(dets, 0.49).tolist() == [3, 1, 2]
    assert nms(np.zeros((0, 5)), 0.5).tolist() == []
