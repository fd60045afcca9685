"""What N contexts compute: the mean of N per-device updates, not the one-device update.

The rule, measured on the toy SSD training graph at 64x64 (one SGD step, momentum 0, wd 0,
so a weight's change is ``-lr`` times its gradient):

* Module splits a batch of B images into N slices of B/N, one per context. Each context
  runs the whole graph on its slice alone: the classification loss
  (``SoftmaxOutput(normalization="valid")``) is divided by that slice's number of
  non-ignored anchors (positives plus hard-mined negatives), the localisation loss
  (``MakeLoss(normalization="valid")``) by that slice's number of nonzero smooth-L1 terms,
  and every BatchNorm of the toy body normalises with that slice's own batch statistics.
  The N gradients are summed and train_net's ``rescale_grad = 1/N`` makes the sum a mean.
  So N contexts give exactly the average of the N updates that one context would make on
  each slice alone (agreement to float rounding, ~1e-7). The BatchNorm moving statistics
  a checkpoint gets are likewise the mean of the per-device ones.
* One context over the whole batch instead divides by the whole batch's valid counts,
  i.e. weights each slice's normalised gradient by its share of the valid anchors
  (``sum_i n_i g_i / sum_i n_i`` rather than ``sum_i g_i / N``), and normalises BatchNorm
  over all B images.
* The two therefore agree (to float rounding) only when every slice has the same valid
  counts and the same BatchNorm statistics, e.g. identical slices. Either cause alone
  makes them differ by more than the size of the update itself here: slices with the same
  pixels but different objects (normalisation only), or different pixels with the same
  objects (BatchNorm only).

Identical slices agree only up to float rounding of *discrete* decisions: one-context and
per-slice batches round BatchNorm and convolution differently (~1e-5), and at 128x128 that
flips a few max-pool argmaxes / ReLU gates, leaving ~1e-2 between the two updates; at
64x64 (used here) no decision flips and they agree to ~2e-6.
"""
import mxnet as mx
import numpy as np
import pytest

from symbol.symbol_factory import get_symbol_train

DATA_SHAPE = 64
LR = 0.1
MAX_OBJECTS = 4
TWO = [mx.cpu(0), mx.cpu(1)]
# the first two images: one small object each; the last two: four large objects each
SMALL = [[0, .10, .10, .25, .25, 0]]
LARGE = [[1, .00, .00, .55, .55, 0], [2, .45, .00, 1.0, .50, 0],
         [0, .00, .50, .50, 1.0, 0], [1, .50, .45, 1.0, 1.0, 0]]


def _labels(*images):
    """``[B, MAX_OBJECTS, 6]`` rows (cls, xmin, ymin, xmax, ymax, difficult), padded with -1."""
    out = -np.ones((len(images), MAX_OBJECTS, 6), np.float32)
    for i, rows in enumerate(images):
        out[i, :len(rows)] = rows
    return out


@pytest.fixture(scope="module")
def setup():
    sym = get_symbol_train("toy", DATA_SHAPE, num_classes=3)
    mod = mx.mod.Module(sym, label_names=("label",), context=mx.cpu())
    mod.bind(data_shapes=[("data", (4, 3, DATA_SHAPE, DATA_SHAPE))], label_shapes=[("label", (4, MAX_OBJECTS, 6))])
    mx.random.seed(0)
    np.random.seed(0)
    mod.init_params(mx.init.Xavier())
    arg, aux = mod.get_params()
    images = np.random.RandomState(0).uniform(-1, 1, (4, 3, DATA_SHAPE, DATA_SHAPE)).astype(np.float32)
    return sym, arg, aux, images


def one_step(setup, data, label, ctx, rescale_grad):
    """One SGD step from the fixed initial params; returns (weight deltas, BN aux, valid counts)."""
    sym, arg0, aux0, _ = setup
    mod = mx.mod.Module(sym, label_names=("label",), context=ctx)
    mod.bind(data_shapes=[("data", data.shape)], label_shapes=[("label", label.shape)])
    mod.init_params(arg_params=arg0, aux_params=aux0)
    mod.init_optimizer(kvstore="local", optimizer="sgd", optimizer_params={
        "learning_rate": LR, "momentum": 0.0, "wd": 0.0, "rescale_grad": rescale_grad})
    mod.forward_backward(mx.io.DataBatch([mx.nd.array(data)], [mx.nd.array(label)]))
    _, loc_loss, cls_label, _ = (out.asnumpy() for out in mod.get_outputs())
    mod.update()
    # BatchNorm writes its moving statistics outside the engine's dependency tracking: without
    # this, a single-context get_params() can return some of them from before the step
    mx.nd.waitall()
    arg, aux = mod.get_params()
    deltas = {name: arg[name].asnumpy() - arg0[name].asnumpy() for name in arg0}
    counts = {"cls": int((cls_label != -1).sum()), "loc": int((loc_loss > 0).sum())}
    return deltas, {name: value.asnumpy() for name, value in aux.items()}, counts


def max_diff(x, y, names=None):
    return max(float(np.abs(x[name] - y[name]).max()) for name in (names or x))


def measure(setup, data, label):
    """(a) one context over the batch, (b) two contexts with rescale 1/2, (c) mean of the two halves alone."""
    one = one_step(setup, data, label, mx.cpu(0), 1.0)
    two = one_step(setup, data, label, TWO, 1.0 / len(TWO))
    halves = [one_step(setup, data[s], label[s], mx.cpu(0), 1.0) for s in (slice(0, 2), slice(2, 4))]
    mean = {name: (halves[0][0][name] + halves[1][0][name]) / 2 for name in one[0]}
    return one, two, halves, mean


def test_two_contexts_average_the_per_device_updates_and_differ_from_one(setup):
    _, _, _, images = setup
    label = _labels(SMALL, SMALL, LARGE, LARGE)
    (one, _, one_counts), (two, two_aux, _), halves, mean = measure(setup, images, label)
    scale = max(float(np.abs(d).max()) for d in two.values())
    assert scale > 1e-2
    # the halves really are unbalanced: 2 vs 32 positive anchors
    assert [h[2]["cls"] for h in halves] == [8, 128] and one_counts["cls"] == 136
    assert max_diff(two, mean) < 1e-5 * scale  # measured ~9e-8 absolute
    assert max_diff(two, one) > 0.5 * scale  # measured 0.19; the updates are 0.11 (one), 0.20 (two)
    # checkpointed BatchNorm moving statistics: the mean of the per-device ones
    half_aux = [h[1] for h in halves]
    assert max(float(np.abs(two_aux[n] - (half_aux[0][n] + half_aux[1][n]) / 2).max()) for n in two_aux) < 1e-6


def test_identical_halves_give_the_one_context_update(setup):
    _, _, _, images = setup
    data = np.concatenate([images[:2], images[:2]])
    label = _labels(SMALL, SMALL, SMALL, SMALL)
    (one, _, _), (two, _, _), _, mean = measure(setup, data, label)
    assert max(float(np.abs(d).max()) for d in one.values()) > 0.1
    assert max_diff(two, mean) < 1e-6
    assert max_diff(two, one) < 1e-5  # measured 1-2e-6, against an update of 0.35


def test_loss_normalisation_alone_one_context_weights_halves_by_valid_counts(setup):
    """Same pixels in both halves (so BatchNorm statistics agree), different objects."""
    _, _, _, images = setup
    data = np.concatenate([images[:2], images[:2]])
    label = _labels(SMALL, SMALL, LARGE, LARGE)
    (one, _, _), (two, _, _), halves, mean = measure(setup, data, label)
    assert max_diff(two, mean) < 1e-6
    assert max_diff(two, one) > 0.1  # measured 0.15; the updates are 0.09 (one), 0.18 (two)
    # the prediction-head convolutions see one loss each, so the one-context update there is
    # exactly the valid-count-weighted mean of the per-half updates
    for head, count in (("cls_pred_conv", "cls"), ("loc_pred_conv", "loc")):
        names = [name for name in one if head in name]
        n = [h[2][count] for h in halves]
        assert n[0] != n[1]
        weighted = {name: (n[0] * halves[0][0][name] + n[1] * halves[1][0][name]) / sum(n) for name in names}
        assert max_diff(one, weighted, names) < 1e-6  # measured ~1.5e-7
        assert max_diff(one, mean, names) > 1e-2  # measured 0.03


def test_batchnorm_alone_makes_two_contexts_differ_from_one(setup):
    """Different pixels, the same objects in every image: equal valid counts per half."""
    _, _, _, images = setup
    label = _labels(SMALL, SMALL, SMALL, SMALL)
    (one, _, _), (two, _, _), halves, mean = measure(setup, images, label)
    assert halves[0][2] == halves[1][2]
    assert max_diff(two, mean) < 1e-6
    assert max_diff(two, one) > 0.1  # measured 0.19; the updates are 0.35 (one), 0.26 (two)
