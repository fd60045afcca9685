"""AnchorLoader / TestLoader on a tiny hand-made detection .rec (im2rec --pack-label layout)."""
import mxnet as mx
import numpy as np
import pytest
from helpers import write_rec

from config.errors import UserError
from config.train_config import RCNNConfig
from dataset.rcnn_anchor import AnchorGenerator, AnchorSampler, anchor_targets_to_rpn_layout
from dataset.rcnn_loader import AnchorLoader, LoaderOptions, TestLoader, feat_shape_from_symbol
from symbol.rcnn_factory import get_rcnn_train, make_config

LEFT_BGR, RIGHT_BGR = (10, 20, 30), (200, 150, 100)
MEANS, STDS = (1.0, 2.0, 3.0), (2.0, 4.0, 5.0)


def two_tone(height, width):
    """BGR image: left half LEFT_BGR, right half RIGHT_BGR (tells a mirrored image apart).

    Stored as PNG, so the tones come back exact and the pixel checks below are exact too."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:, : width // 2] = LEFT_BGR
    image[:, width // 2:] = RIGHT_BGR
    return image


# (height, width, objects [cls, x1, y1, x2, y2, difficult] normalised)
RECORDS = [
    (100, 200, [[1, 0.1, 0.2, 0.5, 0.6, 0], [0, 0.6, 0.1, 0.9, 0.5, 1]]),
    (120, 120, []),                                   # no objects
    (120, 160, [[2, 0.2, 0.2, 0.4, 0.4, 1]]),         # only a difficult object
    (300, 150, [[0, 0.0, 0.0, 0.5, 0.5, 0], [2, 0.5, 0.5, 1.0, 1.0, 0]]),
]


@pytest.fixture(scope="module")
def rec_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    return write_rec(str(root / "tiny"), [(two_tone(height, width), objects) for height, width, objects in RECORDS],
                     img_fmt=".png")


def feat16(height, width):
    return height // 16, width // 16


def normalised_rgb(bgr):
    return (np.array(bgr[::-1], dtype=np.float64) - MEANS) / STDS


# short side 200 capped at a long side of 300, the test means/stds, 2 scales x 3 ratios (RCNNConfig's other values)
CFG = RCNNConfig(img_short_side=200, img_long_side=300, img_pixel_means=MEANS, img_pixel_stds=STDS,
                 rpn_anchor_scales=(2, 4))


def make_loader(rec_path, **kwargs):
    options = dict(batch_size=1, shuffle=False, seed=3)
    options.update(kwargs)
    return AnchorLoader(rec_path, feat16, CFG, LoaderOptions(**options))


# image 0 (100x200): scale 2 would make the long side 400 > 300, so scale = 300/200 = 1.5 -> 150x300.
# Object [0.1, 0.2, 0.5, 0.6] -> pixels [20, 20, 99, 59] (inclusive ends) -> x1.5 = [30, 30, 148.5, 88.5].
IMAGE0_GT = [30, 30, 148.5, 88.5, 2]
IMAGE0_GT_FLIPPED = [299 - 148.5, 30, 299 - 30, 88.5, 2]


def test_skips_images_without_objects(rec_path):
    loader = make_loader(rec_path)
    assert loader.num_skipped == 2 and loader.keys == [0, 3] and len(loader) == 2
    with_difficult = make_loader(rec_path, use_difficult=True)
    assert with_difficult.num_skipped == 1 and with_difficult.keys == [0, 2, 3]


def test_first_batch_shapes_im_info_and_gt(rec_path):
    loader = make_loader(rec_path, flip=False)
    batch = next(iter(loader))
    data, im_info, gt_boxes = (a.asnumpy() for a in batch.data)
    assert data.shape == (1, 3, 150, 300)
    np.testing.assert_allclose(im_info, [[150, 300, 1.5]])
    assert gt_boxes.shape == (1, 100, 5)
    np.testing.assert_allclose(gt_boxes[0, 0], IMAGE0_GT)  # the difficult object is dropped
    assert np.all(gt_boxes[0, 1:] == -1)
    # BGR -> RGB, (x - mean) / std
    np.testing.assert_allclose(data[0, :, 0, 0], normalised_rgb(LEFT_BGR), rtol=1e-6)
    np.testing.assert_allclose(data[0, :, 0, -1], normalised_rgb(RIGHT_BGR), rtol=1e-6)
    # labels: A = 2 scales x 3 ratios, feature map 150//16 x 300//16 = 9 x 18
    label, bbox_target, bbox_weight = (a.asnumpy() for a in batch.label)
    assert label.shape == (1, 6 * 9 * 18) and bbox_target.shape == bbox_weight.shape == (1, 24, 9, 18)
    assert [d.shape for d in batch.provide_data] == [(1, 3, 150, 300), (1, 3), (1, 100, 5)]
    assert [d.shape for d in batch.provide_label] == [(1, 108 * 9), (1, 24, 9, 18), (1, 24, 9, 18)]
    # the bind shapes are the largest ones (a long_side square)
    assert [d.shape for d in loader.provide_data] == [(1, 3, 300, 300), (1, 3), (1, 100, 5)]
    assert loader.provide_label[0].shape == (1, 6 * 18 * 18)


def test_flip_mirrors_image_and_boxes(rec_path):
    loader = make_loader(rec_path, flip=True)
    seen = set()
    for _ in range(6):
        loader.reset()
        batch = next(loader)
        data, _, gt_boxes = (a.asnumpy() for a in batch.data)
        flipped = np.allclose(data[0, :, 0, 0], normalised_rgb(RIGHT_BGR))
        np.testing.assert_allclose(data[0, :, 0, -1], normalised_rgb(LEFT_BGR if flipped else RIGHT_BGR))
        np.testing.assert_allclose(gt_boxes[0, 0], IMAGE0_GT_FLIPPED if flipped else IMAGE0_GT)
        seen.add(flipped)
    assert seen == {True, False}


def test_batch_of_two_pads_and_assigns_per_image(rec_path):
    loader = make_loader(rec_path, batch_size=2, flip=False, seed=5)
    batch = next(loader)
    data, im_info, gt_boxes = (a.asnumpy() for a in batch.data)
    # image 3 (300x150): scale 200/150 would give a 400 long side, so 300/300 = 1 -> 300x150
    assert data.shape == (2, 3, 300, 300)
    np.testing.assert_allclose(im_info, [[150, 300, 1.5], [300, 150, 1.0]])
    assert np.all(data[0, :, 150:] == 0) and np.all(data[1, :, :, 150:] == 0)  # zero padding
    np.testing.assert_allclose(gt_boxes[1, :2], [[0, 0, 74, 149, 1], [75, 150, 149, 299, 3]])
    # labels equal a fresh sampler's, image by image, with each image's own size
    sampler = AnchorSampler(seed=5)
    anchors = AnchorGenerator(16, (2, 4), (0.5, 1, 2)).generate(18, 18)
    for image in range(2):
        expected = anchor_targets_to_rpn_layout(
            *sampler.assign(anchors, gt_boxes[image], *im_info[image, :2]), 18, 18)
        np.testing.assert_array_equal(batch.label[0].asnumpy()[image], expected[0])
        for got, want in zip(batch.label[1:], expected[1:]):  # gt_boxes went through float32
            np.testing.assert_allclose(got.asnumpy()[image], want, atol=1e-6)
    # image 0 is 150 high: anchors reaching below row 149 are never sampled
    per_anchor = batch.label[0].asnumpy()[0].reshape(6, 18, 18).transpose(1, 2, 0).reshape(-1)
    assert np.all(per_anchor[anchors[:, 3] >= 150] == -1)
    assert np.sum(per_anchor == 1) > 0
    with pytest.raises(StopIteration):
        next(loader)


def test_feature_shape_from_the_small_network(rec_path):
    cfg = make_config("faster_rcnn_small", img_short_side=200, img_long_side=300)
    sym = get_rcnn_train("faster_rcnn_small", 3, cfg)
    loader = AnchorLoader.from_config(rec_path, cfg, feat_shape_from_symbol(sym), seed=0)
    for batch in loader:  # shuffled: the 150x300 and the 300x150 image
        _, out_shapes, _ = sym.infer_shape(**{d.name: d.shape for d in batch.provide_data + batch.provide_label})
        height, width = batch.data[0].shape[2:]
        assert out_shapes[0] == (1, 2, 12 * (height // 16), width // 16)  # rpn_cls_prob, 12 anchors


def test_from_config_takes_the_config_and_keeps_the_training_options(rec_path):
    cfg = RCNNConfig(img_short_side=200, img_long_side=300, rpn_anchor_scales=(2, 4), rpn_batch_rois=32,
                     use_difficult=True)
    loader = AnchorLoader.from_config(rec_path, cfg, feat16, batch_size=2, seed=1)
    assert (loader.short_side, loader.long_side, loader.generator.num_anchors) == (200, 300, 6)
    assert loader.sampler.batch_rois == 32 and loader.batch_size == 2
    assert loader.shuffle and loader.flip and loader.max_gt == 100
    # cfg.use_difficult is a validation setting: training still drops difficult objects
    assert loader.keys == [0, 3]
    sharded = AnchorLoader.from_config(rec_path, cfg, feat16, num_parts=2, part_index=1)
    assert sharded.keys == [3] and sharded.shard_sizes == [1, 1]


def test_test_loader_yields_every_image_with_normalised_gt(rec_path):
    loader = TestLoader(rec_path, short_side=200, long_side=300, pixel_means=MEANS, pixel_stds=STDS)
    batches = list(loader)
    assert len(batches) == 4 and [b.index[0] for b in batches] == [0, 1, 2, 3]
    assert [b.orig_shape for b in batches] == [(h, w) for h, w, _ in RECORDS]
    np.testing.assert_allclose(batches[0].data[1].asnumpy(), [[150, 300, 1.5]])
    np.testing.assert_allclose(batches[0].label[0].asnumpy()[0], RECORDS[0][2], rtol=1e-6)  # difficult kept
    np.testing.assert_array_equal(batches[1].label[0].asnumpy(), -np.ones((1, 1, 6)))
    np.testing.assert_allclose(batches[0].data[0].asnumpy()[0, :, 0, 0], normalised_rgb(LEFT_BGR), rtol=1e-6)


def test_missing_index_or_non_detection_record(tmp_path, rec_path):
    with pytest.raises(UserError, match=r"\.idx"):
        TestLoader(str(tmp_path / "absent.rec"))
    rec, idx = str(tmp_path / "cls.rec"), str(tmp_path / "cls.idx")
    writer = mx.recordio.MXIndexedRecordIO(idx, rec, "w")
    writer.write_idx(0, mx.recordio.pack_img(mx.recordio.IRHeader(0, 3.0, 0, 0), two_tone(8, 8), img_fmt=".png"))
    writer.close()
    with pytest.raises(UserError, match=r"cls\.rec: record 0 has no detection label .*prepare_dataset\.py"):
        TestLoader(rec)

