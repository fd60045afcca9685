"""RPN anchors: py-faster-rcnn base anchors, shifts, and hand-worked target assignment."""
import mxnet as mx
import numpy as np

from dataset.bbox import bbox_pred
from dataset.rcnn_anchor import AnchorGenerator, AnchorSampler, anchor_targets_to_rpn_layout

PY_FASTER_RCNN_ANCHORS = [
    [-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
    [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
    [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359],
]


def test_base_anchors_are_py_faster_rcnn_rows_in_order():
    gen = AnchorGenerator(feat_stride=16, anchor_scales=(8, 16, 32), anchor_ratios=(0.5, 1, 2))
    np.testing.assert_array_equal(gen.base_anchors, PY_FASTER_RCNN_ANCHORS)
    assert gen.num_anchors == 9


def test_generate_shifts_cells_row_major():
    gen = AnchorGenerator()
    anchors = gen.generate(2, 3)
    assert anchors.shape == (2 * 3 * 9, 4)
    base = np.array(PY_FASTER_RCNN_ANCHORS)
    for y in range(2):
        for x in range(3):
            cell = anchors[(y * 3 + x) * 9: (y * 3 + x + 1) * 9]
            np.testing.assert_array_equal(cell, base + [16 * x, 16 * y, 16 * x, 16 * y])


# One 40x40 GT and one 20x20 GT in a 100x100 image, anchors worked by hand.
GT = np.array([[10, 10, 49, 49, 1], [70, 10, 89, 29, 2], [-1, -1, -1, -1, -1]], dtype=np.float64)
ANCHORS = np.array([
    [10, 10, 49, 49],   # 0: IoU 1 with GT 0                     -> FG
    [12, 10, 51, 49],   # 1: IoU 1520/1680 = .905                 -> FG
    [0, 0, 9, 9],       # 2: no overlap                           -> BG
    [60, 60, 99, 99],   # 3: no overlap                           -> BG
    [10, 10, 69, 49],   # 4: IoU 1600/2400 = .667, between .3/.7  -> ignored
    [-5, 0, 20, 20],    # 5: x1 < 0, outside                       -> ignored
    [80, 80, 100, 99],  # 6: x2 = 100 = width, outside             -> ignored
    [65, 5, 94, 34],    # 7: IoU 400/900 = .444, best for GT 1     -> FG
    [60, 0, 99, 39],    # 8: IoU 400/1600 = .25 with GT 1          -> BG
], dtype=np.float64)


def test_sampler_labels_best_anchor_and_targets():
    sampler = AnchorSampler(allowed_border=0, batch_rois=256, seed=0)
    label, target, weight = sampler.assign(ANCHORS, GT, im_height=100, im_width=100)
    np.testing.assert_array_equal(label, [1, 1, 0, 0, -1, -1, -1, 1, 0])
    fg = label == 1
    np.testing.assert_array_equal(weight, np.where(fg[:, None], 1.0, 0.0) * np.ones((1, 4)))
    np.testing.assert_array_equal(target[~fg], 0)
    # targets (stds 1) decode back onto the matched GT boxes
    decoded = bbox_pred(ANCHORS[fg], target[fg])
    np.testing.assert_allclose(decoded, GT[[0, 0, 1], :4], atol=1e-4)
    np.testing.assert_array_equal(target[0], 0)


def test_sampler_allowed_border_admits_anchors_near_the_edge():
    sampler = AnchorSampler(allowed_border=10, seed=0)
    label, _, _ = sampler.assign(ANCHORS, GT, im_height=100, im_width=100)
    # anchor 5 (IoU 121/2025 with GT 0) and anchor 6 (no overlap) now count as background
    np.testing.assert_array_equal(label, [1, 1, 0, 0, -1, 0, 0, 1, 0])


def test_sampler_caps_foreground_then_fills_background():
    for seed in range(5):
        sampler = AnchorSampler(batch_rois=4, fg_fraction=0.5, seed=seed)
        label, _, weight = sampler.assign(ANCHORS, GT, im_height=100, im_width=100)
        assert np.sum(label == 1) == 2  # 3 candidates, cap .5 * 4
        assert np.sum(label == 0) == 2  # 3 candidates, 4 - 2 left
        assert set(np.flatnonzero(label == 1)) <= {0, 1, 7}
        assert set(np.flatnonzero(label == 0)) <= {2, 3, 8}
        np.testing.assert_array_equal(weight.sum(axis=1) > 0, label == 1)


def test_sampler_without_gt_draws_background_inside_only():
    sampler = AnchorSampler(batch_rois=3, seed=0)
    label, target, weight = sampler.assign(ANCHORS, GT[2:], im_height=100, im_width=100)
    assert np.sum(label == 0) == 3 and np.sum(label == 1) == 0
    assert set(np.flatnonzero(label == 0)) <= {0, 1, 2, 3, 4, 7, 8}
    assert not target.any() and not weight.any()
    # fewer inside anchors than batch_rois: all of them, no crash
    label, _, _ = AnchorSampler(batch_rois=256, seed=0).assign(ANCHORS, GT[2:], 100, 100)
    np.testing.assert_array_equal(label, [0, 0, 0, 0, 0, -1, -1, 0, 0])


def test_best_anchor_rule_ignores_gt_no_anchor_touches():
    # the GT lies where no inside anchor overlaps it: no anchor may become FG for it
    gt = np.array([[200, 200, 220, 220, 1]], dtype=np.float64)
    label, _, _ = AnchorSampler(seed=0).assign(ANCHORS[:4], gt, im_height=300, im_width=300)
    np.testing.assert_array_equal(label, [0, 0, 0, 0])


def test_rpn_layout_matches_softmax_reshape():
    """Label index of anchor a at cell (y, x) == position of its object score in rpn_cls_score_reshape."""
    num_anchors, fh, fw = 3, 2, 4
    rows = np.arange(fh * fw * num_anchors, dtype=np.float32)  # value = generator row k*A + a
    label, target, _ = anchor_targets_to_rpn_layout(
        rows, np.repeat(rows[:, None], 4, axis=1), np.zeros((rows.size, 4)), fh, fw
    )
    # a score map whose object channel A + a at (y, x) holds that anchor's generator row
    score = np.zeros((1, 2 * num_anchors, fh, fw), dtype=np.float32)
    for y in range(fh):
        for x in range(fw):
            for a in range(num_anchors):
                score[0, num_anchors + a, y, x] = (y * fw + x) * num_anchors + a
    reshaped = mx.nd.Reshape(mx.nd.array(score), shape=(0, 2, -1, 0)).asnumpy()
    np.testing.assert_array_equal(reshaped[0, 1].reshape(-1), label)
    np.testing.assert_array_equal(target[4 * np.arange(num_anchors) + 2], score[0, num_anchors:])
