"""MultiBoxMetric (train/metric.py) on a hand-computed batch."""
import math

import mxnet as mx
import numpy as np
import pytest

from train.metric import MultiBoxMetric

# two images, 3 classes (background + 2), 3 anchors each; cls_prob is [B, C+1, N]
CLS_PROB = np.array(
    [
        [[0.7, 0.1, 0.2], [0.2, 0.6, 0.2], [0.1, 0.3, 0.6]],  # anchors: columns
        [[0.25, 0.9, 0.0], [0.5, 0.05, 0.0], [0.25, 0.05, 1.0]],
    ],
    dtype=np.float32,
)
# image 1: background, class 2, ignored; image 2: class 1, ignored, background (p = 0)
CLS_LABEL = np.array([[0, 2, -1], [1, -1, 0]], dtype=np.float32)
LOC_LOSS = np.array([[0.5, 0.25, 0.0, 1.0], [0.0, 0.75, 0.5, 0.0]], dtype=np.float32)  # sums to 3


def batch(scale=1.0):
    return [mx.nd.array(CLS_PROB), mx.nd.array(LOC_LOSS * scale), mx.nd.array(CLS_LABEL)]


def test_hand_computed_losses():
    metric = MultiBoxMetric()
    metric.update([], batch())
    names, values = metric.get()
    assert names == ["CrossEntropy", "SmoothL1"]
    # counted anchors: p = .7, .3 (image 1), .5, 0 (image 2) -> 4 anchors
    expected_ce = -(math.log(0.7 + 1e-8) + math.log(0.3 + 1e-8) + math.log(0.5 + 1e-8) + math.log(1e-8)) / 4
    assert values[0] == pytest.approx(expected_ce, rel=1e-6)
    assert values[1] == pytest.approx(3 / 4)


def test_local_window_and_global_mean():
    metric = MultiBoxMetric()
    assert all(math.isnan(v) for v in metric.get()[1])
    metric.update([], batch())
    metric.reset_local()  # what Speedometer(auto_reset=True) does
    metric.update([], batch(scale=3.0))
    assert metric.get()[1][1] == pytest.approx(9 / 4)  # the window: second batch only
    assert metric.get_global()[1][1] == pytest.approx(12 / 8)  # the epoch: both batches
    assert dict(metric.get_global_name_value())["SmoothL1"] == pytest.approx(1.5)
    metric.reset()
    assert math.isnan(metric.get_global()[1][0])
