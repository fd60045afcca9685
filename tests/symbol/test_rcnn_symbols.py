"""Faster R-CNN graphs: the proposal_target op on hand-made ROIs, shapes, the
registry, and one real training step per network."""
import dataclasses
import inspect

import mxnet as mx
import numpy as np
import pytest
from helpers import rcnn_train_batch

import symbol.proposal_target  # noqa: F401  (registers the op)
from config.errors import UserError
from dataset.bbox import bbox_pred
from symbol.rcnn_factory import (
    NETWORKS,
    fixed_param_names,
    get_rcnn_test,
    get_rcnn_train,
    make_config,
    rcnn_initializer,
)
from symbol.rcnn_head import ORIGINAL_TRAIN_ARGUMENTS, RCNNTestSettings, RCNNTrainSettings, build_rcnn_train
from symbol.rcnn_vgg import VGG16, get_vgg_test, get_vgg_train

STDS = (0.1, 0.1, 0.2, 0.2)
NUM_CLASSES = 6
# GT boxes of classes 3 and 5 (1-based) and one padding row
GT = np.array([[0, 0, 99, 99, 3], [200, 200, 299, 299, 5], [-1, -1, -1, -1, -1]], dtype=np.float32)


def shifted(box, shifts, batch_index=0):
    """ROIs [n, 5]: ``box`` moved right by each shift (IoU with box = (100-s)/(100+s) for 100x100)."""
    return np.array([[batch_index, box[0] + s, box[1], box[2] + s, box[3]] for s in shifts], dtype=np.float32)


def background(n, batch_index=0):
    return np.array([[batch_index, 400 + i, 0, 450 + i, 50] for i in range(n)], dtype=np.float32)


def run(rois, gt, batch_images=1, batch_rois=128, seed=0):
    outs = mx.nd.Custom(
        mx.nd.array(rois), mx.nd.array(gt), op_type="proposal_target", num_classes=NUM_CLASSES,
        batch_images=batch_images, batch_rois=batch_rois, fg_fraction=0.25, fg_overlap=0.5, box_stds=STDS,
        seed=seed,
    )
    return [out.asnumpy() for out in outs]


def candidate_rois():
    # shifts 1..32 keep IoU >= .5 with GT 0 (s=33 gives .504, s=34 .493); 1..9 for GT 1
    return np.vstack([shifted(GT[0], range(1, 33)), shifted(GT[1], range(1, 10)), background(200)])


# --- proposal_target -------------------------------------------------------------------------


def test_fg_cap_labels_and_no_duplicate_fg():
    rois, label, target, weight = run(candidate_rois(), GT)
    assert rois.shape == (128, 5) and label.shape == (128,)
    assert target.shape == weight.shape == (128, 4 * NUM_CLASSES)
    # 43 FG candidates (41 ROIs + 2 appended GTs), cap round(.25 * 128) = 32, first
    assert np.all(label[:32] > 0) and np.all(label[32:] == 0)
    assert set(np.unique(label[:32])) <= {3, 5}
    assert np.unique(rois[:32], axis=0).shape[0] == 32  # drawn without replacement
    assert np.unique(rois[32:], axis=0).shape[0] == 96
    assert np.all(rois[32:, 1] >= 400)  # background rows are the far-away ROIs


def test_class_specific_targets_decode_to_gt():
    rois, label, target, weight = run(candidate_rois(), GT)
    for row in range(128):
        cls = int(label[row])
        expected = np.zeros(4 * NUM_CLASSES)
        if cls:
            expected[4 * cls: 4 * cls + 4] = 1
            decoded = bbox_pred(rois[row: row + 1, 1:], target[row: row + 1, 4 * cls: 4 * cls + 4], STDS)
            gt_box = GT[0, :4] if cls == 3 else GT[1, :4]
            np.testing.assert_allclose(decoded[0], gt_box, atol=1e-3)
        np.testing.assert_array_equal(weight[row], expected)
        np.testing.assert_array_equal(target[row][expected == 0], 0)


def test_gt_boxes_are_appended_to_the_rois():
    rois, label, target, _ = run(background(20), GT[:1])
    # the only foreground is the appended GT itself, with a zero target
    assert np.sum(label > 0) == 1
    np.testing.assert_array_equal(rois[0], [0, 0, 0, 99, 99])
    assert label[0] == 3
    np.testing.assert_array_equal(target[0], 0)
    # too few background ROIs: all 20 used, then drawn again with replacement
    assert np.sum(label == 0) == 127
    assert np.unique(rois[1:], axis=0).shape[0] == 20


def test_padded_gt_rows_and_image_without_gt():
    only_padding = np.full((1, 5), -1, dtype=np.float32)
    _, label, _, weight = run(background(200), only_padding)
    assert np.all(label == 0) and not weight.any()


def test_no_background_pads_with_foreground():
    # every candidate overlaps the GT (the original looped for ever here)
    rois, label, _, weight = run(shifted(GT[0], range(1, 6)), GT[:1])
    assert np.all(label == 3)
    assert np.all(weight[:, 12:16] == 1)


def test_two_images_keep_their_batch_index():
    gt = np.stack([GT, GT[[1, 2, 2]]])  # image 1 has only the class-5 box
    rois = np.vstack([candidate_rois(), shifted(GT[1], range(1, 10), 1), background(50, 1)])
    rois_out, label, _, _ = run(rois, gt, batch_images=2, batch_rois=64)
    assert rois_out.shape == (128, 5)
    np.testing.assert_array_equal(rois_out[:64, 0], 0)
    np.testing.assert_array_equal(rois_out[64:, 0], 1)
    assert np.sum(label[:64] > 0) == 16  # round(.25 * 64)
    assert set(label[64:]) == {0, 5} and np.sum(label[64:] == 5) == 10  # 9 ROIs + appended GT


def test_seed_makes_sampling_repeatable():
    from symbol.proposal_target import reset_seeded_streams

    reset_seeded_streams()
    first = run(candidate_rois(), GT, seed=7)
    reset_seeded_streams()
    again = run(candidate_rois(), GT, seed=7)
    other = run(candidate_rois(), GT, seed=8)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_seeded_stream_continues_when_the_operator_is_recreated():
    # each mx.nd.Custom call creates a new operator, as a Module reshape does
    from symbol.proposal_target import reset_seeded_streams

    reset_seeded_streams()
    first = run(candidate_rois(), GT, seed=7)
    second = run(candidate_rois(), GT, seed=7)
    assert not np.array_equal(first[0], second[0])


def test_backward_gives_zero_gradient():
    rois = mx.nd.array(candidate_rois())
    gt = mx.nd.array(GT)
    rois.attach_grad()
    gt.attach_grad()
    rois.grad[:] = 7
    gt.grad[:] = 7
    with mx.autograd.record():
        outs = mx.nd.Custom(rois, gt, op_type="proposal_target", num_classes=NUM_CLASSES, batch_images=1,
                            batch_rois=128, box_stds=STDS)
        loss = sum(out.sum() for out in outs)
    loss.backward()
    assert not rois.grad.asnumpy().any()
    assert not gt.grad.asnumpy().any()


# --- graphs -----------------------------------------------------------------------------------

ORIGINAL_ARGS = dict(
    anchor_scales=(8, 16, 32), anchor_ratios=(0.5, 1, 2), rpn_feature_stride=16, rpn_pre_topk=12000,
    rpn_post_topk=2000, rpn_nms_thresh=0.7, rpn_min_size=16, rpn_batch_rois=256, num_classes=21,
    rcnn_feature_stride=16, rcnn_pooled_size=(7, 7), rcnn_batch_size=1, rcnn_batch_rois=128,
    rcnn_fg_fraction=0.25, rcnn_fg_overlap=0.5, rcnn_bbox_stds=(0.1, 0.1, 0.2, 0.2),
)


def test_original_vgg_train_cls_score_shape_and_outputs():
    net = get_vgg_train(**ORIGINAL_ARGS)
    cls_score = net.get_internals()["cls_score_output"]
    assert cls_score.infer_shape(data=(1, 3, 1000, 600), gt_boxes=(5, 5), im_info=(1, 3))[1] == [(128, 21)]
    assert net.list_outputs() == [
        "rpn_cls_prob_output", "rpn_bbox_loss_output", "cls_prob_reshape_output",
        "bbox_loss_reshape_output", "rcnn_label_output",
    ]
    args = net.list_arguments()
    for name in ("data", "im_info", "gt_boxes", "label", "bbox_target", "bbox_weight", "conv5_3_weight",
                 "rpn_conv_3x3_weight", "fc7_weight", "cls_score_weight", "bbox_pred_weight"):
        assert name in args
    _, out_shapes, _ = net.infer_shape(data=(1, 3, 1000, 600), im_info=(1, 3), gt_boxes=(1, 5, 5))
    # 1000x600 -> 62x37 feature map (four 2x2 pools, floor), 9 anchors
    assert out_shapes == [(1, 2, 9 * 62, 37), (1, 36, 62, 37), (1, 128, 21), (1, 128, 84), (1, 128)]


def test_vgg_test_graph_outputs():
    test_args = {k: ORIGINAL_ARGS[k] for k in (
        "anchor_scales", "anchor_ratios", "rpn_feature_stride", "rpn_nms_thresh", "rpn_min_size",
        "num_classes", "rcnn_feature_stride", "rcnn_pooled_size", "rcnn_batch_size")}
    net = get_vgg_test(rpn_pre_topk=6000, rpn_post_topk=300, **test_args)
    assert net.list_arguments()[0] == "data" and "gt_boxes" not in net.list_arguments()
    _, out_shapes, _ = net.infer_shape(data=(1, 3, 600, 1000), im_info=(1, 3))
    assert out_shapes == [(300, 5), (1, 300, 21), (1, 300, 84)]


def graph_json(build, *args, **kwargs):
    """``build(*args, **kwargs).tojson()`` with mxnet's automatic names (``_minus0``) counted from 0."""
    with mx.name.NameManager():
        return build(*args, **kwargs).tojson()


def test_original_signatures_by_position_and_by_name():
    assert list(inspect.signature(get_vgg_train).parameters) == list(ORIGINAL_ARGS) == list(ORIGINAL_TRAIN_ARGUMENTS)
    test_names = ["anchor_scales", "anchor_ratios", "rpn_feature_stride", "rpn_pre_topk", "rpn_post_topk",
                  "rpn_nms_thresh", "rpn_min_size", "num_classes", "rcnn_feature_stride", "rcnn_pooled_size",
                  "rcnn_batch_size"]
    assert list(inspect.signature(get_vgg_test).parameters) == test_names
    assert {f.name for f in dataclasses.fields(RCNNTrainSettings)} == set(ORIGINAL_TRAIN_ARGUMENTS)
    by_name = graph_json(get_vgg_train, **ORIGINAL_ARGS)
    assert graph_json(get_vgg_train, *ORIGINAL_ARGS.values()) == by_name
    assert graph_json(build_rcnn_train, VGG16, RCNNTrainSettings(**ORIGINAL_ARGS)) == by_name
    # the comparison sees the values: one other value, another graph
    assert graph_json(get_vgg_train, **dict(ORIGINAL_ARGS, rpn_batch_rois=64)) != by_name
    test_args = [ORIGINAL_ARGS[name] for name in test_names]
    assert graph_json(get_vgg_test, *test_args) == graph_json(get_vgg_test, **dict(zip(test_names, test_args)))
    with pytest.raises(TypeError):
        get_vgg_train(*ORIGINAL_ARGS.values(), anchor_scales=(8,))  # given twice, as for the original
    with pytest.raises(TypeError):
        get_vgg_test(**ORIGINAL_ARGS)  # the test graph has no sampling arguments


def test_factory_graphs_are_the_original_builders_with_the_config_values():
    cfg = make_config("faster_rcnn_vgg16", rpn_min_size=8)
    train_args = dict(ORIGINAL_ARGS, num_classes=NUM_CLASSES + 1, rpn_min_size=8)
    assert graph_json(get_rcnn_train, "faster_rcnn_vgg16", NUM_CLASSES, cfg) == graph_json(get_vgg_train, **train_args)
    test_args = {name: train_args[name] for name in (f.name for f in dataclasses.fields(RCNNTestSettings))}
    test_args.update(rpn_pre_topk=cfg.test_rpn_pre_nms_topk, rpn_post_topk=cfg.test_rpn_post_nms_topk)
    assert graph_json(get_rcnn_test, "faster_rcnn_vgg16", NUM_CLASSES, cfg) == graph_json(get_vgg_test, **test_args)


def test_registry_defaults_and_unknown_network():
    assert set(NETWORKS) == {"faster_rcnn_vgg16", "faster_rcnn_resnet50", "faster_rcnn_resnet101",
                             "faster_rcnn_small"}
    vgg = make_config("faster_rcnn_vgg16")
    assert vgg.rcnn_pooled_size == (7, 7) and vgg.net_fixed_params == ("conv1", "conv2")
    assert vgg.img_pixel_means == (123.68, 116.779, 103.939) and vgg.pretrained == "model/vgg16-0000.params"
    res = make_config("faster_rcnn_resnet101", lr=0.01, rpn_min_size=None)
    assert res.rcnn_pooled_size == (14, 14) and res.img_pixel_means == (0, 0, 0) and res.lr == 0.01
    assert res.pretrained == "model/resnet-101-0000.params" and res.rpn_min_size == 16
    assert (res.rpn_pre_nms_topk, res.rpn_post_nms_topk) == (12000, 2000)
    assert (res.test_rpn_pre_nms_topk, res.test_rpn_post_nms_topk) == (6000, 300)
    assert (res.rcnn_nms_thresh, res.rcnn_conf_thresh) == (0.3, 1e-3)
    with pytest.raises(UserError, match="--network"):
        get_rcnn_train("faster_rcnn_nope", 20, vgg)
    with pytest.raises(UserError, match="--network"):
        make_config("vgg16")


def test_fixed_params_match_by_substring():
    sym = get_rcnn_train("faster_rcnn_vgg16", 20, make_config("faster_rcnn_vgg16"))
    assert fixed_param_names(sym, ("conv1", "conv2")) == [
        f"conv{g}_{i}_{kind}" for g in (1, 2) for i in (1, 2) for kind in ("weight", "bias")
    ]
    res = get_rcnn_train("faster_rcnn_resnet50", 20, make_config("faster_rcnn_resnet50"))
    fixed = fixed_param_names(res, make_config("faster_rcnn_resnet50").net_fixed_params)
    assert "conv0_weight" in fixed and "stage1_unit3_conv3_weight" in fixed and "bn1_gamma" in fixed
    assert "stage2_unit1_conv1_weight" not in fixed and "rpn_conv_3x3_weight" not in fixed


# Every network runs at 128x160 with 16 ROIs and anchors of 32..128 pixels (the default 128..512 px ones
# do not fit inside such an image, so the RPN would get no labels). VGG's 25088x4096 fc6 (400 MB of
# weights) is avoided with a 2x2 ROI pool.
@pytest.mark.parametrize("network, pooled", [
    ("faster_rcnn_small", None),
    # the full-size backbones take seconds each on the CPU
    pytest.param("faster_rcnn_vgg16", (2, 2), marks=pytest.mark.slow),
    pytest.param("faster_rcnn_resnet50", None, marks=pytest.mark.slow),
    pytest.param("faster_rcnn_resnet101", None, marks=pytest.mark.slow),
])
def test_one_training_step_then_test_graph(network, pooled):
    cfg = make_config(network, rcnn_batch_rois=16, rpn_pre_nms_topk=600, rpn_post_nms_topk=100,
                      test_rpn_pre_nms_topk=300, test_rpn_post_nms_topk=50, rcnn_pooled_size=pooled,
                      rpn_anchor_scales=(2, 4, 8))
    sym = get_rcnn_train(network, 2, cfg)
    batch = rcnn_train_batch(sym, cfg, 128, 160)
    rpn_label = batch.label[0].asnumpy()
    assert np.sum(rpn_label == 1) >= 2 and np.sum(rpn_label == 0) > 100
    mod = mx.mod.Module(sym, data_names=["data", "im_info", "gt_boxes"],
                        label_names=["label", "bbox_target", "bbox_weight"], context=mx.cpu())
    mod.bind(data_shapes=[(d, a.shape) for d, a in zip(["data", "im_info", "gt_boxes"], batch.data)],
             label_shapes=[(n, a.shape) for n, a in zip(["label", "bbox_target", "bbox_weight"], batch.label)])
    mod.init_params(rcnn_initializer())
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01, "momentum": 0.9})
    before_args, before_aux = (dict((k, v.copy()) for k, v in p.items()) for p in mod.get_params())

    mod.forward(batch, is_train=True)
    mod.backward()
    mod.update()
    rpn_prob, rpn_loss, cls_prob, bbox_loss, label = (o.asnumpy() for o in mod.get_outputs())
    assert cls_prob.shape == (1, 16, 3) and bbox_loss.shape == (1, 16, 12) and label.shape == (1, 16)
    np.testing.assert_allclose(rpn_prob.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_allclose(cls_prob.sum(axis=2), 1, rtol=1e-5)
    assert np.all(np.isfinite(rpn_loss)) and np.all(np.isfinite(bbox_loss))
    assert 2 <= np.sum(label > 0) <= 4 and set(np.unique(label)) <= {0, 1, 2}  # two appended GTs, cap 4

    args, aux = mod.get_params()
    for name in ("rpn_conv_3x3_weight", "rpn_cls_score_weight", "cls_score_weight", "bbox_pred_weight"):
        assert not np.array_equal(args[name].asnumpy(), before_args[name].asnumpy()), name
    for name, value in aux.items():  # frozen BN: moving statistics never change
        np.testing.assert_array_equal(value.asnumpy(), before_aux[name].asnumpy())

    test_sym = get_rcnn_test(network, 2, cfg)
    test_mod = mx.mod.Module(test_sym, data_names=["data", "im_info"], label_names=None, context=mx.cpu())
    test_mod.bind(data_shapes=[("data", (1, 3, 128, 160)), ("im_info", (1, 3))], for_training=False)
    test_mod.set_params(args, aux)
    test_mod.forward(mx.io.DataBatch(batch.data[:2]), is_train=False)
    assert [o.shape for o in test_mod.get_outputs()] == [(50, 5), (1, 50, 3), (1, 50, 12)]
