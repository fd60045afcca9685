"""SSD graphs against the original example/ssd: the test graph's ``cls_prob`` op, and difficult
objects, which the training graph drops before ``MultiBoxTarget`` as the Faster R-CNN loader does.

The training cases run the toy network at 128x128 (3 classes, anchors on 16/8/4/2/1 maps) with
one Xavier-initialised parameter set and one fixed image, so two labels give the same class
predictions and therefore the same hard negative mining: whatever differs in ``cls_label`` comes
from the label alone.
"""
from __future__ import annotations

import json

import mxnet as mx
import numpy as np
import pytest

from symbol.symbol_builder import drop_difficult_objects
from symbol.symbol_factory import get_symbol, get_symbol_train

DATA_SHAPE = 128
NUM_CLASSES = 3
# two objects far apart, rows (cls, xmin, ymin, xmax, ymax, difficult), normalised corners
DOG = [1, .15, .2, .55, .6]  # class 1 -> positive anchors get target 2
CAR = [2, .6, .55, .95, .9]  # class 2 -> target 3
PAD = [-1] * 6


def _node(sym: mx.sym.Symbol, name: str) -> dict:
    return next(node for node in json.loads(sym.tojson())["nodes"] if node["name"] == name)


def _label(*rows: list[float], width: int = 6) -> np.ndarray:
    """One image's label ``[1, len(rows), width]``; each row is cut or -1-padded to ``width``."""
    label = np.full((1, len(rows), width), -1, np.float32)
    for index, row in enumerate(rows):
        label[0, index, : min(width, len(row))] = row[:width]
    return label


# --- test graph: cls_prob ------------------------------------------------------------------

def test_test_graph_cls_prob_is_the_original_softmax_over_classes():
    sym = get_symbol("toy", DATA_SHAPE, num_classes=NUM_CLASSES)
    node = _node(sym, "cls_prob")
    assert node["op"] == "softmax"
    assert int(node["attrs"]["axis"]) == 1

    internals = sym.get_internals()
    group = mx.sym.Group([internals["multibox_cls_pred_output"], internals["cls_prob_output"]])
    module = mx.mod.Module(group, data_names=["data"], label_names=None, context=mx.cpu())
    module.bind(data_shapes=[("data", (2, 3, DATA_SHAPE, DATA_SHAPE))], for_training=False)
    module.init_params(mx.init.Xavier())
    # random values for every parameter, biases and BatchNorm statistics included (variances > 0)
    rng = np.random.default_rng(7)
    arg_params, aux_params = module.get_params()
    arg_params = {name: mx.nd.array(rng.normal(0, 0.2, value.shape)) for name, value in arg_params.items()}
    aux_params = {name: mx.nd.array(rng.uniform(0.5, 1.5, value.shape) if name.endswith("_var")
                                    else rng.normal(0, 0.2, value.shape)) for name, value in aux_params.items()}
    module.set_params(arg_params, aux_params)
    data = mx.nd.array(rng.uniform(-1, 1, (2, 3, DATA_SHAPE, DATA_SHAPE)))
    module.forward(mx.io.DataBatch([data]), is_train=False)
    cls_preds, cls_prob = module.get_outputs()
    num_anchors = 4 * (16 * 16 + 8 * 8 + 4 * 4 + 2 * 2 + 1)  # 4 per position: 2 sizes - 1 + 3 ratios
    assert cls_prob.shape == (2, NUM_CLASSES + 1, num_anchors)
    reference = mx.nd.SoftmaxActivation(cls_preds, mode="channel")  # the op the graph used before
    np.testing.assert_allclose(cls_prob.asnumpy(), reference.asnumpy(), atol=1e-6, rtol=0)
    assert np.abs(cls_preds.asnumpy()).max() > 1  # the scores are far from uniform, the check is not vacuous


# --- drop_difficult_objects on its own ------------------------------------------------------

def _eval_drop(label: np.ndarray) -> np.ndarray:
    sym = drop_difficult_objects(mx.sym.Variable("label"))
    return sym.eval(ctx=mx.cpu(), label=mx.nd.array(label))[0].asnumpy()


def test_drop_difficult_objects_keeps_the_others_in_order_then_pads():
    label = np.full((2, 5, 6), -1, np.float32)
    label[0, :4] = [[0, .1, .1, .2, .2, 1], [1, .2, .2, .3, .3, 0], [2, .3, .3, .4, .4, 1], [0, .4, .4, .5, .5, 0]]
    label[1, :1] = [[2, .5, .5, .6, .6, 1]]  # only a difficult object
    out = _eval_drop(label)
    expected = np.full_like(label, -1)
    expected[0, :2] = label[0, [1, 3]]
    np.testing.assert_array_equal(out, expected)


def test_drop_difficult_objects_reads_column_5_at_any_width():
    # width 5 has no difficult column: every object is kept
    label5 = _label(DOG, CAR, PAD, width=5)
    np.testing.assert_array_equal(_eval_drop(label5), label5)
    # at width 7 column 5 still decides, whatever the extra column holds
    label7 = np.concatenate([_label([*DOG, 1], [*CAR, 0], PAD), np.full((1, 3, 1), 9, np.float32)], axis=2)
    expected = np.full_like(label7, -1)
    expected[0, 0] = label7[0, 1]
    np.testing.assert_array_equal(_eval_drop(label7), expected)


# --- training graph: what MultiBoxTarget matches ----------------------------------------------

@pytest.fixture(scope="module")
def toy_params() -> tuple[dict, dict, mx.nd.NDArray]:
    """Xavier parameters of the toy training graph (seed 3) and one fixed image ``[1, 3, 128, 128]``."""
    sym = get_symbol_train("toy", DATA_SHAPE, num_classes=NUM_CLASSES)
    module = mx.mod.Module(sym, data_names=["data"], label_names=["label"], context=mx.cpu())
    module.bind(data_shapes=[("data", (1, 3, DATA_SHAPE, DATA_SHAPE))], label_shapes=[("label", (1, 3, 6))])
    mx.random.seed(3)
    module.init_params(mx.init.Xavier(magnitude=2))
    arg_params, aux_params = module.get_params()
    data = mx.nd.array(np.random.default_rng(3).uniform(-1, 1, (1, 3, DATA_SHAPE, DATA_SHAPE)))
    return arg_params, aux_params, data


def _train_outputs(toy_params, label: np.ndarray, cls_loss: str = "softmax") -> list[np.ndarray]:
    """``[cls_prob, loc_loss, cls_label, det_out]`` of one training forward pass on ``label``."""
    arg_params, aux_params, data = toy_params
    sym = get_symbol_train("toy", DATA_SHAPE, num_classes=NUM_CLASSES, cls_loss=cls_loss)
    module = mx.mod.Module(sym, data_names=["data"], label_names=["label"], context=mx.cpu())
    module.bind(data_shapes=[("data", data.shape)], label_shapes=[("label", label.shape)])
    module.set_params(arg_params, aux_params)
    module.forward(mx.io.DataBatch([data], [mx.nd.array(label)]), is_train=True)
    return [output.asnumpy() for output in module.get_outputs()]


def _cls_label(toy_params, label: np.ndarray, cls_loss: str = "softmax") -> np.ndarray:
    return _train_outputs(toy_params, label, cls_loss)[2]


def test_a_difficult_object_gets_no_positive_anchor(toy_params):
    cls_label = _cls_label(toy_params, _label([*DOG, 1], PAD))
    assert not (cls_label > 0).any()
    # nothing left to match: the image trains like one without objects (all anchors ignored)
    np.testing.assert_array_equal(cls_label, _cls_label(toy_params, _label(PAD, PAD)))
    assert (cls_label == -1).all()


def test_the_same_object_not_difficult_gets_positives_of_its_class(toy_params):
    cls_label = _cls_label(toy_params, _label([*DOG, 0], PAD))
    assert (cls_label > 0).sum() >= 1
    assert set(np.unique(cls_label[cls_label > 0])) == {DOG[0] + 1}


def test_a_width_5_label_gives_the_targets_of_the_width_6_non_difficult_one(toy_params):
    width6 = _train_outputs(toy_params, _label([*DOG, 0], PAD))
    width5 = _train_outputs(toy_params, _label(DOG, PAD, width=5))
    np.testing.assert_array_equal(width5[2], width6[2])  # cls_label
    np.testing.assert_array_equal(width5[1], width6[1])  # loc_loss: the same matched boxes
    assert (width5[2] > 0).any()


@pytest.mark.parametrize("cls_loss", ["softmax", "focal"])
def test_a_mixed_image_has_positives_only_for_the_non_difficult_object(toy_params, cls_loss):
    # the difficult object comes first: MultiBoxTarget's CPU kernel stops at the first cls = -1
    # row, so a difficult row merely relabelled -1 would hide the car behind it
    mixed = _cls_label(toy_params, _label([*DOG, 1], [*CAR, 0], PAD), cls_loss)
    assert set(np.unique(mixed[mixed > 0])) == {CAR[0] + 1}
    # exactly the targets of a label without the difficult object, as the Faster R-CNN loader drops it
    np.testing.assert_array_equal(mixed, _cls_label(toy_params, _label([*CAR, 0], PAD, PAD), cls_loss))
    # and both objects get positives when neither is difficult
    both = _cls_label(toy_params, _label([*DOG, 0], [*CAR, 0], PAD), cls_loss)
    assert set(np.unique(both[both > 0])) == {DOG[0] + 1, CAR[0] + 1}


def test_dropping_adds_no_parameter_and_no_gradient_into_label(toy_params):
    train = get_symbol_train("toy", DATA_SHAPE, num_classes=NUM_CLASSES)
    test = get_symbol("toy", DATA_SHAPE, num_classes=NUM_CLASSES)
    assert train.list_arguments() == [name for name in train.list_arguments()
                                      if name in set(test.list_arguments()) | {"label"}]
    assert set(train.list_arguments()) == set(test.list_arguments()) | {"label"}
    assert train.list_outputs() == ["cls_prob_output", "loc_loss_output", "cls_label_output", "det_out_output"]
    assert _node(train, "multibox_target")["op"] == "_contrib_MultiBoxTarget"

    arg_params, aux_params, data = toy_params
    label = mx.nd.array(_label([*DOG, 1], [*CAR, 0], PAD))
    executor = train.simple_bind(mx.cpu(), data=data.shape, label=label.shape, grad_req="write")
    executor.copy_params_from(arg_params, aux_params)
    executor.forward(is_train=True, data=data, label=label)
    executor.backward()
    assert not executor.grad_dict["label"].asnumpy().any()
    grads = {name: grad.asnumpy() for name, grad in executor.grad_dict.items() if name not in ("data", "label")}
    assert all(np.isfinite(grad).all() for grad in grads.values())
    assert np.abs(grads["stage1_conv1_weight"]).max() > 0
