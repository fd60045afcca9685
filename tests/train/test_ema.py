"""``--ema DECAY``: the averaged weights by hand, exact resume, and the checkpoint evaluate.py scores."""
import functools
import pickle

import mxnet as mx
import numpy as np
import pytest
from helpers import history, load_script, train_toy

from evaluate import checkpoint
from train.ema import decay_at
from train.module import WEIGHT_AVERAGE_KEY, ResumableModule


def test_average_after_k_updates_equals_the_hand_computed_one():
    """A small net with BatchNorm, 6 SGD updates: the average of weights and BN statistics by the formula."""
    data = mx.sym.Variable("data")
    net = mx.sym.BatchNorm(mx.sym.FullyConnected(data, num_hidden=5, name="fc1"), name="bn1")
    net = mx.sym.SoftmaxOutput(mx.sym.FullyConnected(mx.sym.relu(net), num_hidden=3, name="fc2"), name="softmax")
    rng = np.random.default_rng(0)
    batches = mx.io.NDArrayIter(rng.normal(size=(24, 4)).astype(np.float32), rng.integers(0, 3, 24).astype(np.float32),
                                batch_size=4, label_name="softmax_label")
    seen = []

    def record_weights():  # called before every batch: the weights the previous update left
        seen.append({k: v.asnumpy().copy() for d in mod.get_params() for k, v in d.items()})

    mx.random.seed(3)
    mod = ResumableModule(net, context=[mx.cpu()], ema_decay=0.9, batch_begin_callback=record_weights)
    mod.fit(batches, num_epoch=1, optimizer="sgd", optimizer_params={"learning_rate": 0.5, "momentum": 0.9},
            batch_end_callback=mod.average_weights, initializer=mx.init.Xavier())
    final = {k: v.asnumpy() for d in mod.get_params() for k, v in d.items()}
    steps = seen[1:] + [final]  # the weights after updates 1 .. 6
    expected = dict(seen[0])
    for t, weights in enumerate(steps, start=1):
        d = min(0.9, (1 + t) / (10 + t))
        assert d == decay_at(0.9, t)
        expected = {k: d * expected[k] + (1 - d) * weights[k] for k in expected}
    average = mod.weight_average
    assert average.step == 6 and set(average.average) == set(expected)
    assert any("moving_mean" in k for k in expected)
    for name, value in expected.items():
        np.testing.assert_allclose(average.average[name].asnumpy(), value, rtol=0, atol=1e-6, err_msg=name)
    assert max(float(np.abs(final[k] - expected[k]).max()) for k in final) > 1e-3  # the average is not the raw


# the toy at 64 on the shared set with validation, every checkpoint kept, averaged with decay 0.9
run = functools.partial(train_toy, batch_size=5, lr=0.05, voc07_metric=True, seed=0, keep=0, ema=0.9)


def saved(prefix: str, epoch: int) -> tuple[dict, dict, int]:
    """(the checkpoint's weights, the raw weights of its .states, the average's step)."""
    _, args, auxs = checkpoint.load_checkpoint(prefix, epoch)
    with open(checkpoint.states_path(prefix, epoch), "rb") as f:
        state = pickle.load(f)[WEIGHT_AVERAGE_KEY]
    params = {k: v.asnumpy() for k, v in {**args, **auxs}.items()}
    return params, state["raw"], state["step"]


@pytest.mark.slow
def test_resume_continues_the_average_and_the_raw_weights_exactly(synthetic_rec, tmp_path, no_augmentation):
    straight, resumed = str(tmp_path / "a" / "ssd"), str(tmp_path / "b" / "ssd")
    run(synthetic_rec, straight, 3, val_path=synthetic_rec.val_rec)
    run(synthetic_rec, resumed, 1, val_path=synthetic_rec.val_rec)
    run(synthetic_rec, resumed, 3, val_path=synthetic_rec.val_rec, resume="auto")
    (avg_a, raw_a, step_a), (avg_b, raw_b, step_b) = saved(straight, 3), saved(resumed, 3)
    assert step_a == step_b == 15  # 24 images at batch 5: 5 updates an epoch
    for name in avg_a:
        np.testing.assert_allclose(avg_b[name], avg_a[name], atol=1e-5)
        np.testing.assert_allclose(raw_b[name], raw_a[name], atol=1e-5)
    assert max(float(np.abs(avg_a[k] - raw_a[k]).max()) for k in avg_a) > 1e-4


@pytest.mark.slow
def test_validation_and_evaluate_score_the_average(synthetic_rec, tmp_path, no_augmentation, capsys):
    prefix = str(tmp_path / "ssd")
    run(synthetic_rec, prefix, 2, val_path=synthetic_rec.val_rec)
    logged = float(history(prefix)[-1]["val_mAP"])
    load_script("evaluate").main(["--prefix", prefix, "--epoch", "2", "--rec-path", synthetic_rec.val_rec])
    printed = float(capsys.readouterr().out.strip().splitlines()[-1].split("=")[1])
    assert printed == pytest.approx(logged, abs=6e-5)
    # the checkpoint holds the average: the raw weights of the .states score differently
    average, raw, _ = saved(prefix, 2)
    assert max(float(np.abs(average[k] - raw[k]).max()) for k in average) > 1e-4
