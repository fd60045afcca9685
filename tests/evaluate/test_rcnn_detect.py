"""im_detect on hand-made outputs, the pixel/normalised convention, the detector and the metrics."""
import mxnet as mx
import numpy as np
import pytest
from helpers import write_rec

from dataset.bbox import bbox_transform
from dataset.rcnn_loader import objects_to_gt_boxes
from evaluate.eval_metric import VOC07MApMetric
from evaluate.rcnn_detect import RCNNDetector, detect_rec, im_detect, normalise_boxes, update_metric
from symbol.rcnn_factory import get_rcnn_test, make_config, rcnn_initializer
from train.rcnn_metric import RCNNAcc, RCNNL1Loss, RCNNLogLoss, RPNAcc, RPNL1Loss, RPNLogLoss, rcnn_metrics

STDS = (0.1, 0.1, 0.2, 0.2)
# resized image 200x300 at scale 2; ROIs in resized pixels
IM_INFO = (200, 300, 2.0)
ROIS = np.array([
    [0, 10, 10, 49, 49],      # A
    [0, 12, 10, 51, 49],      # B: IoU .905 with A
    [0, 100, 100, 139, 139],  # C
    [0, 250, 150, 350, 250],  # D: runs past the image, clipped to (299, 199)
], dtype=np.float64)
# columns: background, class 1, class 2
SCORES = np.array([
    [0.05, 0.9, 0.05],
    [0.1995, 0.8, 0.0005],  # class 2 below conf_thresh 1e-3
    [0.0, 0.7, 0.3],
    [0.4, 0.0, 0.6],
])
ZERO_DELTAS = np.zeros((4, 12))
A, C = [5, 5, 24.5, 24.5], [50, 50, 69.5, 69.5]
B = [6, 5, 25.5, 24.5]
D = [125, 75, 149.5, 99.5]


def test_score_threshold_and_per_class_nms():
    dets = im_detect(ROIS, SCORES, ZERO_DELTAS, IM_INFO, STDS, max_per_image=0)
    # class ids are 0-based object classes; rows by class, then falling score
    expected = [
        [0, 0.9, *A], [0, 0.7, *C],               # B (IoU .905 with A) suppressed
        [1, 0.6, *D], [1, 0.3, *C], [1, 0.05, *A],
    ]
    np.testing.assert_allclose(dets, expected)


def test_nms_threshold_and_cap():
    loose = im_detect(ROIS, SCORES, ZERO_DELTAS, IM_INFO, STDS, nms_thresh=0.95, max_per_image=0)
    np.testing.assert_allclose(loose[:3], [[0, 0.9, *A], [0, 0.8, *B], [0, 0.7, *C]])
    capped = im_detect(ROIS, SCORES, ZERO_DELTAS, IM_INFO, STDS, max_per_image=3)
    np.testing.assert_allclose(capped, [[0, 0.9, *A], [0, 0.7, *C], [1, 0.6, *D]])
    strict = im_detect(ROIS, SCORES, ZERO_DELTAS, IM_INFO, STDS, conf_thresh=0.5)
    np.testing.assert_allclose(strict, [[0, 0.9, *A], [0, 0.7, *C], [1, 0.6, *D]])
    assert im_detect(ROIS, SCORES, ZERO_DELTAS, IM_INFO, STDS, conf_thresh=0.95).shape == (0, 6)


def test_deltas_use_the_stds_and_class_columns():
    target = np.array([[30.0, 20.0, 129.0, 99.0]])  # resized pixels
    deltas = np.zeros((1, 12))
    deltas[0, 8:12] = bbox_transform(ROIS[:1, 1:], target, STDS)  # class 2 only
    scores = np.array([[0.0, 0.5, 0.5]])
    dets = im_detect(ROIS[:1], scores, deltas, IM_INFO, STDS)
    np.testing.assert_allclose(dets, [[0, 0.5, *A], [1, 0.5, *(target[0] / 2)]], atol=1e-9)


def test_pixels_round_trip_to_normalised_and_a_perfect_map():
    """GT -> loader pixels -> perfect network outputs -> im_detect -> normalised == GT; VOC07 mAP 1."""
    height, width, scale = 375, 500, 1.6
    objects = np.array([[0, 0.1, 0.2, 0.5, 0.9, 0], [1, 0.55, 0.1, 0.95, 0.6, 0]])
    gt = objects_to_gt_boxes(objects, height, width, scale, int(round(width * scale)), flip=False)
    rois = np.hstack([np.zeros((2, 1)), gt[:, :4]])
    scores = np.array([[0, 0.9, 0.1], [0, 0.2, 0.8]])
    im_info = (round(height * scale), round(width * scale), scale)
    dets = normalise_boxes(im_detect(rois, scores, np.zeros((2, 12)), im_info, STDS), height, width)
    # rows: class 0 on ROI 0 (.9) and ROI 1 (.2), class 1 on ROI 1 (.8) and ROI 0 (.1)
    np.testing.assert_allclose(dets[:, :2], [[0, 0.9], [0, 0.2], [1, 0.8], [1, 0.1]])
    np.testing.assert_allclose(dets[[0, 2], 2:], objects[:, 1:5], atol=1e-9)
    metric = VOC07MApMetric(pred_idx=0)
    update_metric(metric, [dets, np.zeros((0, 6))], [objects, np.zeros((0, 6))])
    assert metric.get()[1][-1] == pytest.approx(1.0)


@pytest.fixture(scope="module")
def tiny_rec(tmp_path_factory):
    root = tmp_path_factory.mktemp("det")
    rng = np.random.RandomState(0)
    samples = [(rng.randint(0, 255, (96, 128, 3)).astype(np.uint8), objects)
               for objects in ([[0, 0.1, 0.1, 0.6, 0.7, 0]], [], [[1, 0.3, 0.2, 0.9, 0.8, 1]])]
    return write_rec(str(root / "val"), samples, img_fmt=".png")


def _small_params():
    cfg = make_config("faster_rcnn_small", img_short_side=96, img_long_side=128, test_rpn_post_nms_topk=20)
    sym = get_rcnn_test("faster_rcnn_small", 2, cfg)
    mod = mx.mod.Module(sym, data_names=["data", "im_info"], label_names=None)
    mod.bind(data_shapes=[("data", (1, 3, 96, 128)), ("im_info", (1, 3))], for_training=False)
    mx.random.seed(0)
    mod.init_params(rcnn_initializer())
    return cfg, mod


def test_detector_uses_the_given_context_and_detect_rec(tiny_rec):
    cfg, mod = _small_params()
    arg_params, aux_params = mod.get_params()
    # cpu(1), not the default cpu(0): the outputs must live on the context given
    detector = RCNNDetector.from_config(cfg, 2, arg_params, aux_params, [mx.cpu(1)])
    detections, labels = detect_rec(detector, tiny_rec, cfg, 2)
    assert detector.ctx == mx.cpu(1)
    assert all(out.context == mx.cpu(1) for out in detector.mod.get_outputs())
    assert len(detections) == len(labels) == 3
    np.testing.assert_allclose(labels[0], [[0, 0.1, 0.1, 0.6, 0.7, 0]], rtol=1e-6)
    assert labels[1].shape == (0, 6)
    for dets in detections:
        assert dets.shape[1] == 6 and dets.shape[0] <= cfg.max_per_image
        assert np.all((dets[:, 0] >= 0) & (dets[:, 0] <= 1))
        assert np.all((dets[:, 2:] >= 0) & (dets[:, 2:] <= 1 + 1e-9))
    # the same parameters as a (arg, aux) pair or as a module give the same detections
    for model in ((arg_params, aux_params), mod):
        again, _ = detect_rec(model, tiny_rec, cfg, 2, ctx=mx.cpu(0), num_images=2)
        assert len(again) == 2
        for a, b in zip(again, detections):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_training_metrics_hand_worked():
    # RPN: one anchor per cell (A = 1) on a 1x4 map, labels [1, -1, 0, 1]
    rpn_prob = np.array([[[[0.2, 0.5, 0.9, 0.4]], [[0.8, 0.5, 0.1, 0.6]]]])  # [1, 2, 1, 4]
    rpn_label = np.array([[1, -1, 0, 1]])
    rpn_loss = np.full((1, 4, 1, 4), 0.5)
    rpn_weight = np.zeros((1, 4, 1, 4))
    rpn_weight[0, :, 0, [0, 3]] = 1  # two foreground anchors
    cls_prob = np.array([[[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.6, 0.1]]])  # [1, 3, 3]
    rcnn_label = np.array([[0, 2, 2]])
    bbox_loss = np.full((1, 3, 12), 0.25)
    preds = [mx.nd.array(a) for a in (rpn_prob, rpn_loss, cls_prob, bbox_loss, rcnn_label)]
    labels = [mx.nd.array(a) for a in (rpn_label, np.zeros((1, 4, 1, 4)), rpn_weight)]
    expected = {
        "RPNAcc": 3 / 3,  # argmax 1, 0, 1 for the three labelled anchors
        "RPNLogLoss": -(np.log(0.8) + np.log(0.9) + np.log(0.6)) / 3,
        "RPNL1Loss": 8.0 / 2,
        "RCNNAcc": 2 / 3,
        "RCNNLogLoss": -(np.log(0.7) + np.log(0.8) + np.log(0.1)) / 3,
        "RCNNL1Loss": 9.0 / 2,
    }
    for metric_cls in (RPNAcc, RPNLogLoss, RPNL1Loss, RCNNAcc, RCNNLogLoss, RCNNL1Loss):
        metric = metric_cls()
        metric.update(labels, preds)
        name, value = metric.get()
        assert value == pytest.approx(expected[name], rel=1e-6), name
    composite = rcnn_metrics()
    composite.update(labels, preds)
    assert composite.get()[0] == list(expected)

