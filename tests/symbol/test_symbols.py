"""SSD graphs: registry, shapes, parameter counts, names, losses, and error messages."""
import json

import mxnet as mx
import numpy as np
import pytest

from config.errors import UserError
from dataset.bbox import bbox_transform
from symbol import ssd_presets
from symbol.losses import focal_loss_value, giou_loss_output, softmax_cross_entropy_output, softmax_focal_output
from symbol.ssd_heads import multi_layer_feature, multibox_layer
from symbol.ssd_presets import get_scales
from symbol.symbol_builder import VARIANCES
from symbol.symbol_factory import DEFAULT_DATA_SHAPES, NETWORKS, get_symbol, get_symbol_train


def _infer(sym, data_shape, *names, batch=1):
    """Output shapes of the named internal layers for a square input."""
    internals = sym.get_internals()
    group = mx.sym.Group([internals[f"{name}_output"] for name in names])
    return group.infer_shape(data=(batch, 3, data_shape, data_shape))[1]


def _num_params(sym, data_shape):
    arg_shapes, _, _ = sym.infer_shape(data=(1, 3, data_shape, data_shape))
    return {name: int(np.prod(shape)) for name, shape in zip(sym.list_arguments(), arg_shapes)
            if name not in ("data", "label")}


def _toy_label():
    """Two images, three ground-truth boxes (normalised corners), padded with -1."""
    label = np.full((2, 3, 5), -1, np.float32)
    label[0, 0] = [0, .1, .1, .5, .6]
    label[1, 0] = [1, .4, .3, .9, .8]
    label[1, 1] = [0, .05, .5, .35, .95]
    return label


def _toy_batch(data_shape):
    rng = np.random.default_rng(0)
    return mx.nd.array(rng.uniform(-1, 1, (2, 3, data_shape, data_shape))), mx.nd.array(_toy_label())


def _bind_toy_train(cls_loss, data_shape=128, seed=1):
    """A Module on the toy training graph (2 classes, batch 2), Xavier-initialised from ``seed``."""
    sym = get_symbol_train("toy", data_shape, num_classes=2, cls_loss=cls_loss)
    module = mx.mod.Module(sym, data_names=["data"], label_names=["label"], context=mx.cpu())
    module.bind(data_shapes=[("data", (2, 3, data_shape, data_shape))], label_shapes=[("label", (2, 3, 5))])
    mx.random.seed(seed)
    module.init_params(mx.init.Xavier(magnitude=2))
    data, label = _toy_batch(data_shape)
    return module, mx.io.DataBatch([data], [label])


def _toy_gradients(cls_loss, data_shape=128):
    """Outputs and parameter gradients of one forward/backward of the toy training graph."""
    module, batch = _bind_toy_train(cls_loss, data_shape)
    sym = get_symbol_train("toy", data_shape, num_classes=2, cls_loss=cls_loss)
    arg_params, aux_params = module.get_params()
    data, label = batch.data[0], batch.label[0]
    executor = sym.simple_bind(mx.cpu(), data=data.shape, label=label.shape, grad_req="write")
    executor.copy_params_from(arg_params, aux_params)
    outputs = executor.forward(is_train=True, data=data, label=label)
    executor.backward()
    grads = {name: g.asnumpy() for name, g in executor.grad_dict.items() if name not in ("data", "label")}
    return [o.asnumpy() for o in outputs], grads


# --- registry and shapes -------------------------------------------------------------------

def test_registry_lists_the_ported_networks():
    assert set(NETWORKS) == {"vgg16_reduced", "resnet50", "resnet101", "inceptionv3", "mobilenet", "toy"}
    assert set(DEFAULT_DATA_SHAPES) == set(NETWORKS)


@pytest.mark.parametrize("network", sorted(NETWORKS))
def test_every_network_builds_train_and_test_graphs(network):
    shape = DEFAULT_DATA_SHAPES[network]
    train = get_symbol_train(network, shape, num_classes=20)
    test = get_symbol(network, shape, num_classes=20)
    num_anchors = _infer(test, shape, "multibox_anchors")[0][1]
    _, out_shapes, _ = train.infer_shape(data=(2, 3, shape, shape), label=(2, 4, 6))
    assert train.list_outputs() == ["cls_prob_output", "loc_loss_output", "cls_label_output", "det_out_output"]
    assert out_shapes == [(2, 21, num_anchors), (2, num_anchors * 4), (2, num_anchors), (2, num_anchors, 6)]
    assert test.infer_shape(data=(2, 3, shape, shape))[1] == [(2, num_anchors, 6)]


def test_ssd300_anchors_feature_maps_and_parameter_count():
    sym = get_symbol("vgg16_reduced", 300, num_classes=20)
    sources = ["relu4_3", "relu7"] + [f"multi_feat_{k}_conv_3x3_relu" for k in range(2, 6)]
    shapes = _infer(sym, 300, *sources, "multibox_anchors")
    assert [s[2] for s in shapes[:-1]] == [38, 19, 10, 5, 3, 1]
    assert [s[1] for s in shapes[:-1]] == [512, 1024, 512, 256, 256, 256]
    # 38²·4 + 19²·6 + 10²·6 + 5²·6 + 3²·4 + 1²·4
    assert shapes[-1] == (1, 8732, 4)
    params = _num_params(sym, 300)
    assert params["relu4_3_scale"] == 512
    assert sum(params.values()) == 26_285_486  # the torchsummary total of ssd.pytorch's SSD300


def test_ssd512_has_24564_anchors_and_a_1x1_last_map():
    sym = get_symbol("vgg16_reduced", 512, num_classes=20)
    sources = ["relu4_3", "relu7"] + [f"multi_feat_{k}_conv_3x3_relu" for k in range(2, 7)]
    shapes = _infer(sym, 512, *sources, "multibox_anchors")
    assert [s[2] for s in shapes[:-1]] == [64, 32, 16, 8, 4, 2, 1]
    assert shapes[-1] == (1, 24564, 4)


def test_toy_ssd_matches_the_gluon_tutorial():
    sym = get_symbol_train("toy", 256, num_classes=2)
    scales = ["stage3_pool", "stage4_pool", "stage5_pool", "stage6_pool", "global_pool"]
    anchors = _infer(sym, 256, *[f"{s}_anchors" for s in scales])
    assert [a[1] for a in anchors] == [4096, 1024, 256, 64, 4]
    cls_pred, loc_pred, all_anchors = _infer(sym, 256, "multibox_cls_pred", "multibox_loc_pred", "multibox_anchors")
    # the tutorial's class predictions (1, 5444, 3) are the input of the transpose that
    # makes them channel-first for SoftmaxOutput
    nodes = json.loads(sym.tojson())["nodes"]
    transpose = next(n for n in nodes if n["name"] == "multibox_cls_pred")
    reshape_name = nodes[transpose["inputs"][0][0]]["name"]
    assert _infer(sym, 256, reshape_name) == [(1, 5444, 3)]
    assert cls_pred == (1, 3, 5444)
    assert loc_pred == (1, 5444 * 4)
    assert all_anchors == (1, 5444, 4)


def test_resnet_sources_are_the_ends_of_stages_3_and_4():
    for network, first, second in (("resnet50", "_plus12", "_plus15"), ("resnet101", "_plus29", "_plus32")):
        sym = get_symbol(network, 512, num_classes=20)
        # stride 16 with 1024 channels, stride 32 with 2048: the last units of stages 3 and 4
        assert _infer(sym, 512, first, second) == [(1, 1024, 32, 32), (1, 2048, 16, 16)]
    # built again in the same process, the names do not shift (mxnet's automatic names would)
    assert _infer(get_symbol("resnet50", 512, num_classes=20), 512, "_plus15") == [(1, 2048, 16, 16)]


def test_get_scales_reproduces_the_literal_vgg_sizes():
    literal_300 = ssd_presets.vgg16_reduced(300)["sizes"]
    literal_512 = ssd_presets.vgg16_reduced(512)["sizes"]
    np.testing.assert_allclose(get_scales(0.2, 0.9, 6), literal_300, atol=6e-4)
    np.testing.assert_allclose(get_scales(0.15, 0.9, 7), literal_512, atol=6e-4)


def test_steps_follow_the_data_shape():
    assert ssd_presets.vgg16_reduced(300)["steps"] == pytest.approx([8 / 300, 16 / 300, 32 / 300, 64 / 300,
                                                                       100 / 300, 1.0])
    assert ssd_presets.vgg16_reduced(320)["steps"] == []


# --- names and attributes ------------------------------------------------------------------

def test_layer_names_and_learning_rate_attributes():
    sym = get_symbol_train("vgg16_reduced", 300, num_classes=20)
    args = set(sym.list_arguments())
    for name in ("relu4_3_scale", "relu4_3_loc_pred_conv_weight", "relu7_cls_pred_conv_bias",
                 "multi_feat_2_conv_1x1_conv_weight", "multi_feat_5_conv_3x3_relu_loc_pred_conv_weight",
                 "fc6_weight", "fc7_bias", "label", "data"):
        assert name in args
    outputs = set(sym.get_internals().list_outputs())
    for name in ("multibox_loc_pred", "multibox_cls_pred", "multibox_anchors", "relu4_3_anchors",
                 "relu4_3_norm", "loc_loss_", "detection"):
        assert f"{name}_output" in outputs
    assert {"multibox_target_loc_target", "multibox_target_loc_mask", "multibox_target_cls_target"} <= outputs
    attrs = sym.attr_dict()
    assert attrs["relu7_loc_pred_conv_bias"]["__lr_mult__"] == "2.0"
    assert attrs["relu4_3_scale"]["__wd_mult__"] == "0.1"
    assert "20" in attrs["relu4_3_scale"]["__init__"]
    # the extra layers halve the filters in the 1x1 conv, but not below 128
    assert _num_params(get_symbol("vgg16_reduced", 300, num_classes=20), 300)[
        "multi_feat_5_conv_1x1_conv_weight"] == 128 * 256


def _node_attrs(sym, name):
    return next(node["attrs"] for node in json.loads(sym.tojson())["nodes"] if node["name"] == name)


def test_nms_settings_reach_multibox_detection():
    for build in (get_symbol_train, get_symbol):
        sym = build("toy", 256, num_classes=2, nms_thresh=0.3, force_suppress=True, nms_topk=123)
        attrs = _node_attrs(sym, "detection")
        assert (attrs["nms_threshold"], attrs["force_suppress"], attrs["nms_topk"]) == ("0.3", "True", "123")
    assert _node_attrs(get_symbol("toy", 256, num_classes=2), "detection")["nms_topk"] == "400"


def test_training_targets_use_the_original_mining_settings():
    attrs = _node_attrs(get_symbol_train("toy", 256, num_classes=2), "multibox_target")
    assert attrs["negative_mining_ratio"] == "3"
    assert attrs["overlap_threshold"] == "0.5"
    assert attrs["negative_mining_thresh"] == "0.5"
    focal = _node_attrs(get_symbol_train("toy", 256, num_classes=2, cls_loss="focal"), "multibox_target")
    assert focal["negative_mining_ratio"] == "-1"


def test_size_range_is_spread_over_layers():
    """A flat [min, max] size range: the original crashed on len(zip(...))."""
    data = mx.sym.Variable("data")
    layers = [mx.sym.Pooling(data, kernel=(2, 2), stride=(2, 2), pool_type="max", name=f"p{k}") for k in range(3)]
    group = mx.sym.Group(multibox_layer(layers, 2, sizes=[.2, .95], ratios=[1]))
    sizes = [_node_attrs(group, f"p{k}_anchors")["sizes"] for k in range(3)]
    assert sizes == ["(0.1,0.2)", "(0.2,0.95)", "(0.95,1.05)"]


def test_multi_layer_feature_rejects_a_missing_layer():
    body = mx.sym.Activation(mx.sym.Variable("data"), act_type="relu", name="relu_a")
    with pytest.raises(ValueError, match="no layer named 'relu_b'"):
        multi_layer_feature(body, ["relu_b"], [-1], [-1], [-1])


# --- errors --------------------------------------------------------------------------------

def test_unknown_network_names_the_flag_and_lists_networks():
    with pytest.raises(UserError, match=r"^--network: .*'vgg17'.*resnet50.*toy"):
        get_symbol_train("vgg17", 300, num_classes=20)


@pytest.mark.parametrize("network, shape, layer", [("vgg16_reduced", 100, "multi_feat_4_conv_3x3_conv"),
                                                   ("toy", 16, "stage5_pool")])
def test_too_small_data_shape_names_the_flag_and_layer(network, shape, layer):
    with pytest.raises(UserError, match=rf"^--data-shape: {shape} does not fit network {network}: layer {layer}"):
        get_symbol(network, shape, num_classes=20)


def test_untested_vgg_shape_only_warns(caplog):
    with caplog.at_level("WARNING"):
        sym = get_symbol("vgg16_reduced", 320, num_classes=20)
    assert "--data-shape 320 was not tested" in caplog.text
    assert _infer(sym, 320, "multibox_anchors") == [(1, 40 * 40 * 4 + 20 * 20 * 6 + 10 * 10 * 6 + 5 * 5 * 6
                                                      + 3 * 3 * 4 + 1 * 4, 4)]


def test_unknown_cls_loss_is_a_user_error():
    with pytest.raises(UserError, match="^--cls-loss"):
        get_symbol_train("toy", 256, num_classes=2, cls_loss="hinge")


# --- running the graphs --------------------------------------------------------------------

def test_toy_train_forward_backward_is_finite():
    (cls_prob, loc_loss, cls_label, det), grads = _toy_gradients("softmax")
    assert all(np.isfinite(x).all() for x in (cls_prob, loc_loss, cls_label, det))
    assert all(np.isfinite(g).all() for g in grads.values())
    assert np.abs(grads["stage1_conv1_weight"]).max() > 0  # the loss reaches the first layer
    np.testing.assert_allclose(cls_prob.sum(axis=1), 1.0, rtol=1e-5)
    labels = set(np.unique(cls_label))
    assert labels <= {-1.0, 0.0, 1.0, 2.0} and {1.0, 2.0} <= labels  # both classes matched anchors
    # hard negative mining keeps at most 3 negatives per positive
    assert (cls_label == 0).sum() <= 3 * (cls_label > 0).sum()


def test_toy_test_graph_outputs_detections():
    sym = get_symbol("toy", 128, num_classes=2)
    module = mx.mod.Module(sym, data_names=["data"], label_names=None, context=mx.cpu())
    module.bind(data_shapes=[("data", (1, 3, 128, 128))], for_training=False)
    module.init_params(mx.init.Xavier())
    module.forward(mx.io.DataBatch([mx.nd.random.uniform(shape=(1, 3, 128, 128))]), is_train=False)
    det = module.get_outputs()[0].asnumpy()
    num_anchors = 16 * 16 * 4 + 8 * 8 * 4 + 4 * 4 * 4 + 2 * 2 * 4 + 4
    assert det.shape == (1, num_anchors, 6)
    kept = det[0, det[0, :, 0] >= 0]
    assert set(np.unique(kept[:, 0])) <= {0.0, 1.0}
    assert ((kept[:, 2:] >= 0) & (kept[:, 2:] <= 1)).all()  # clipped, normalised corners


def test_focal_output_is_softmax_with_the_focal_gradient():
    """Forward = softmax; gradient = d/dx of the focal loss, checked by central differences."""
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(2, 3, 5))
    target = np.array([[0, 2, -1, 1, 0], [1, -1, 0, 0, 2]], np.float64)
    cls_preds, cls_target = mx.sym.Variable("cls_preds"), mx.sym.Variable("cls_target")
    sym = softmax_focal_output(cls_preds, cls_target, num_classes=2)
    grad = mx.nd.zeros(scores.shape, dtype="float64")
    executor = sym.bind(mx.cpu(), {"cls_preds": mx.nd.array(scores, dtype="float64"),
                                   "cls_target": mx.nd.array(target, dtype="float64")},
                        args_grad={"cls_preds": grad}, grad_req={"cls_preds": "write", "cls_target": "null"})
    prob = executor.forward(is_train=True)[0].asnumpy()
    executor.backward()

    def softmax(x):
        e = np.exp(x - x.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    np.testing.assert_allclose(prob, softmax(scores), rtol=1e-10)
    numeric = np.zeros_like(scores)
    for index in np.ndindex(scores.shape):
        step = np.zeros_like(scores)
        step[index] = 1e-6
        numeric[index] = (focal_loss_value(softmax(scores + step), target)
                          - focal_loss_value(softmax(scores - step), target)) / 2e-6
    np.testing.assert_allclose(grad.asnumpy(), numeric, atol=1e-7)
    assert np.abs(grad.asnumpy()[0, :, 2]).max() == 0  # the ignored anchor gets no gradient
    # hand-worked value: 4 positives; e.g. the anchor (0, 1) with p_t contributes -.25 (1-p)^2 log p
    p = softmax(scores)
    picked = [p[b, int(t), n] for b in range(2) for n, t in enumerate(target[b]) if t >= 0]
    expected = sum(-.25 * (1 - q) ** 2 * np.log(q) for q in picked) / 4
    assert focal_loss_value(prob, target) == pytest.approx(expected)


def _cross_entropy_gradient(scores: np.ndarray, target: np.ndarray, label_smoothing: float) -> np.ndarray:
    cls_preds, cls_target = mx.sym.Variable("cls_preds"), mx.sym.Variable("cls_target")
    sym = softmax_cross_entropy_output(cls_preds, cls_target, label_smoothing)
    grad = mx.nd.zeros(scores.shape)
    executor = sym.bind(mx.cpu(), {"cls_preds": mx.nd.array(scores), "cls_target": mx.nd.array(target)},
                        args_grad={"cls_preds": grad}, grad_req={"cls_preds": "write", "cls_target": "null"})
    executor.forward(is_train=True)
    executor.backward()
    return grad.asnumpy()


def test_label_smoothing_gradient_by_hand():
    """Background + 2 classes, 4 anchors, one ignored: 3 valid. At equal scores p = 1/3 everywhere; with
    alpha 0.3 the target is 0.7 on the anchor's class and 0.15 on each other, so the background anchor's
    gradient is (1/3 - (0.7, 0.15, 0.15)) / 3 = (-0.12222, 0.06111, 0.06111)."""
    target = np.array([[0, 2, -1, 1]], np.float32)
    grad = _cross_entropy_gradient(np.zeros((1, 3, 4)), target, 0.3)
    np.testing.assert_allclose(grad[0, :, 0], [-0.122222, 0.061111, 0.061111], atol=1e-6)
    np.testing.assert_allclose(grad[0, :, 1], [0.061111, 0.061111, -0.122222], atol=1e-6)
    assert np.abs(grad[0, :, 2]).max() == 0  # ignored
    # any scores: (p - t) / 3, t one-hot without smoothing
    scores = np.random.default_rng(0).normal(size=(1, 3, 4))
    p = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    for alpha in (0.0, 0.1):
        t = np.full((3, 4), alpha / 2)
        t[target[0].clip(0).astype(int), np.arange(4)] = 1 - alpha
        expected = (p[0] - t) / 3
        expected[:, 2] = 0
        np.testing.assert_allclose(_cross_entropy_gradient(scores, target, alpha)[0], expected, atol=1e-6)


def test_label_smoothing_in_the_training_graph_only_when_asked():
    def smoothing(**kwargs):
        nodes = json.loads(get_symbol_train("toy", 128, num_classes=2, **kwargs).tojson())["nodes"]
        return [float(node["attrs"]["smooth_alpha"]) for node in nodes if "smooth_alpha" in node.get("attrs", {})]

    assert smoothing() == [] and smoothing(label_smoothing=0.1) == [0.1]
    # without smoothing the head is the original's single node; with it the same outputs
    default = get_symbol_train("toy", 128, num_classes=2)
    assert default.list_outputs()[0] == "cls_prob_output"
    assert get_symbol_train("toy", 128, num_classes=2, label_smoothing=0.1).list_outputs() == default.list_outputs()
    assert json.loads(default.get_internals()["cls_prob_output"].tojson())["nodes"][-1]["op"] == "SoftmaxOutput"
    test_graphs = []
    for kwargs in ({}, {"label_smoothing": 0.1}):
        with mx.name.NameManager():  # the same automatic node names for both
            test_graphs.append(get_symbol("toy", 128, num_classes=2, **kwargs).tojson())
    assert test_graphs[0] == test_graphs[1]
    with pytest.raises(UserError, match=r"^--label-smoothing: smooths the softmax cross-entropy; --cls-loss focal"):
        get_symbol_train("toy", 128, num_classes=2, cls_loss="focal", label_smoothing=0.1)
    with pytest.raises(UserError, match=r"^--label-smoothing: 1.0 is outside \[0, 1\)$"):
        get_symbol_train("toy", 128, num_classes=2, label_smoothing=1.0)


def _giou_loss(offsets: np.ndarray, target: np.ndarray, mask: np.ndarray, anchors: np.ndarray):
    """giou_loss_output's value [1, N] and the gradient of its sum with respect to ``offsets`` [1, N*4]."""
    names = ("loc_preds", "loc_target", "loc_target_mask", "anchors")
    sym = giou_loss_output(*(mx.sym.Variable(name) for name in names), VARIANCES)
    values = [offsets, target, mask, anchors]
    grad = mx.nd.zeros(offsets.shape)
    executor = sym.bind(mx.cpu(), {name: mx.nd.array(v) for name, v in zip(names, values)},
                        args_grad={"loc_preds": grad}, grad_req={name: "write" if name == "loc_preds" else "null"
                                                                 for name in names})
    (loss,) = executor.forward(is_train=True)
    executor.backward()
    return loss.asnumpy(), grad.asnumpy()


def test_giou_loss_of_known_boxes():
    """Three anchors whose predicted offsets are 0, so each predicted box is its anchor:

    * (0, 0, .2, .2) against the truth (.1, .1, .3, .3): intersection .01, union .07, enclosing box .09,
      GIoU = 1/7 - .02/.09 = -0.0793651, loss 1.0793651;
    * (0, 0, .1, .1) against (.2, .05, .3, .15), apart: IoU 0, union .02, enclosing .3 x .15 = .045,
      GIoU = -.025/.045 = -5/9, loss 14/9;
    * an unmatched anchor (mask 0): loss 0 and no gradient.

    The gradient is that of the sum divided by the 2 matched anchors, checked by finite differences.
    """
    anchors = np.array([[0, 0, .2, .2], [0, 0, .1, .1], [.5, .5, .9, .9]])
    truth = np.array([[.1, .1, .3, .3], [.2, .05, .3, .15], [.5, .5, .9, .9]])
    # MultiBoxTarget's encoding of the truths on the anchors
    target = bbox_transform(anchors, truth, box_stds=VARIANCES, pixel_offset=0.0).reshape(1, -1)
    mask = np.repeat([[1., 1., 0.]], 4, axis=1)
    target *= mask  # MultiBoxTarget writes 0 on unmatched anchors
    offsets = np.zeros((1, 12))
    loss, grad = _giou_loss(offsets, target, mask, anchors[None])
    np.testing.assert_allclose(loss, [[1 + .02 / .09 - 1 / 7, 14 / 9, 0]], atol=1e-6)
    assert np.abs(grad[0, 8:]).max() == 0
    numeric = np.zeros(12)
    for i in range(8):
        step = np.zeros((1, 12))
        step[0, i] = 1e-3
        numeric[i] = (_giou_loss(offsets + step, target, mask, anchors[None])[0].sum()
                      - _giou_loss(offsets - step, target, mask, anchors[None])[0].sum()) / 2e-3 / 2
    np.testing.assert_allclose(grad[0], numeric, atol=2e-3)
    # the apart pair: moving the box right (dx > 0) brings it closer, and the loss falls
    assert grad[0, 4] < 0
    # the predicted box on its truth: GIoU 1, loss 0
    assert _giou_loss(target, target, mask, anchors[None])[0].max() < 1e-5


def test_giou_loss_in_the_training_graph_only_when_asked():
    def ops(**kwargs):
        return {node["op"] for node in json.loads(get_symbol_train("toy", 128, num_classes=2, **kwargs).tojson())
                ["nodes"]}

    assert "smooth_l1" in ops() and "smooth_l1" not in ops(loc_loss="giou")
    giou = get_symbol_train("toy", 128, num_classes=2, loc_loss="giou")
    _, shapes, _ = giou.infer_shape(data=(2, 3, 128, 128), label=(2, 3, 5))
    assert giou.list_outputs()[1] == "loc_loss_output" and shapes[1] == (2, shapes[2][1])  # one term an anchor
    test_graphs = []
    for kwargs in ({}, {"loc_loss": "giou"}):
        with mx.name.NameManager():
            test_graphs.append(get_symbol("toy", 128, num_classes=2, **kwargs).tojson())
    assert test_graphs[0] == test_graphs[1]
    with pytest.raises(UserError, match=r"^--loc-loss: unknown loss 'iou'; choose one of smooth_l1, giou$"):
        get_symbol_train("toy", 128, num_classes=2, loc_loss="iou")


def test_focal_changes_the_class_gradient_only():
    (softmax_prob, *_), softmax_grads = _toy_gradients("softmax")
    (focal_prob, *_), focal_grads = _toy_gradients("focal")
    np.testing.assert_allclose(softmax_prob, focal_prob, rtol=1e-5)  # same parameters, same probabilities
    cls_weight, loc_weight = "stage3_pool_cls_pred_conv_weight", "stage3_pool_loc_pred_conv_weight"
    assert not np.allclose(softmax_grads[cls_weight], focal_grads[cls_weight], rtol=0.1)
    # the box regression loss is the same with either classifier loss
    np.testing.assert_allclose(softmax_grads[loc_weight], focal_grads[loc_weight], rtol=1e-4, atol=1e-7)


def test_focal_loss_decreases_on_a_fixed_batch():
    module, batch = _bind_toy_train("focal")
    module.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.05, "momentum": 0.9})
    losses = []
    for _ in range(6):
        module.forward(batch, is_train=True)
        cls_prob, _, cls_label, _ = module.get_outputs()
        losses.append(focal_loss_value(cls_prob, cls_label))
        module.backward()
        module.update()
    module.forward(batch, is_train=False)
    cls_prob, _, cls_label, _ = module.get_outputs()
    losses.append(focal_loss_value(cls_prob, cls_label))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses
