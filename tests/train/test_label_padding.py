"""SSD training pads labels to the widest label of its data, not to ``--label-width``: the same targets."""
import logging

import mxnet as mx
import numpy as np
from helpers import read_lst, toy_config

from dataset.recordio import scan_labels
from train.distributed import Cluster
from train.train_net import SSDFamily


def test_multibox_target_is_the_same_for_any_padding():
    """8 images of 1-4 objects: MultiBoxTarget of the label padded to 58 rows (--label-width 350) and to 4."""
    rng = np.random.default_rng(0)
    centres, sides = rng.uniform(0.1, 0.9, (300, 2)), rng.uniform(0.05, 0.5, (300, 1))
    anchors = mx.nd.array(np.concatenate([centres - sides / 2, centres + sides / 2], axis=1)[None])
    label = -np.ones((8, 58, 5))
    for image in range(8):
        for row in range(image % 4 + 1):
            x, y = rng.uniform(0, 0.6, 2)
            w, h = rng.uniform(0.2, 0.4, 2)
            label[image, row] = [rng.integers(0, 3), x, y, x + w, y + h]
    cls_preds = mx.nd.array(rng.normal(size=(8, 4, 300)))

    def targets(rows: int) -> list[np.ndarray]:
        out = mx.nd.contrib.MultiBoxTarget(anchors, mx.nd.array(label[:, :rows]), cls_preds, overlap_threshold=0.5,
                                           ignore_label=-1, negative_mining_ratio=3, minimum_negative_samples=0,
                                           negative_mining_thresh=0.5, variances=(0.1, 0.1, 0.2, 0.2))
        return [array.asnumpy() for array in out]

    wide, tight = targets(58), targets(4)
    assert (tight[2] > 0).sum() > 8  # matched anchors: a real comparison
    for a, b in zip(wide, tight):
        np.testing.assert_array_equal(a, b)


def test_training_pads_to_the_widest_label_of_train_and_val(synthetic_rec, tmp_path):
    lists = [*read_lst(synthetic_rec.train_lst).values(), *read_lst(synthetic_rec.val_lst).values()]
    most = max(len(objects) for _, objects in lists)
    widest = 2 + 6 * most
    assert max(scan_labels(rec).widest for rec in (synthetic_rec.train_rec, synthetic_rec.val_rec)) == widest
    for label_width, rows in ((350, most), (widest, most), (widest + 6, most)):
        family = SSDFamily(toy_config(synthetic_rec, str(tmp_path / "ssd"), 1, label_width=label_width,
                                      val_path=synthetic_rec.val_rec, batch_size=4))
        _, shapes = family.prepare(Cluster("local"), logging.getLogger())
        assert shapes["label"] == (4, rows, 6)
        assert family._iterator_args()["label_pad_width"] == widest
