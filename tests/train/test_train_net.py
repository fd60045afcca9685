"""``train_net``, example/ssd's signature, is a thin wrapper over ``train_ssd``.

Every other test trains through ``SSDConfig`` (``helpers.toy_config`` / ``train_toy``); this one checks
that the original positional call builds exactly the config that helper builds from the same values,
hands it and the contexts to ``train_ssd`` unchanged, and returns its result.
"""
import mxnet as mx
from helpers import toy_config

import train.train_net
from train.train_net import train_net


def test_positional_train_net_builds_the_helpers_config(monkeypatch):
    calls = []

    def recording_train_ssd(config, ctx):
        calls.append((config, ctx))
        return {"best_map": 0.25}

    monkeypatch.setattr(train.train_net, "train_ssd", recording_train_ssd)
    ctx = [mx.cpu(0), mx.cpu(1)]
    # every one of the 38 positional arguments differs from its default and from its neighbours, so a
    # swapped or dropped argument changes the config
    result = train_net(
        "toy", "/d/train.rec", 4, 6, 96, [120, 110, 100], "auto", 3, "/w/pretrained", 7, "/m/ssd", ctx, 2, 9, 11,
        0.03, 0.8, 0.001, "4,6", 0.2, "^stage1_", 48, 74, 0.4, False, 0.6, True, ["a", "b", "c", "d"], True, 200,
        True, "/d/train.lst", "/d/val.rec", "/d/val.lst", 5, "stage2.*", "/m/train.log", "device",
        seed=3, cls_loss="focal", std_pixels=[58, 57, 57.5], keep=1)
    assert result == {"best_map": 0.25}
    assert calls[0][1] is ctx
    assert calls[0][0] == toy_config(
        None, "/m/ssd", 9, train_path="/d/train.rec", num_classes=4, batch_size=6, data_shape=96,
        mean_pixels=(120, 110, 100), resume="auto", finetune=3, pretrained="/w/pretrained", pretrained_epoch=7,
        begin_epoch=2, frequent=11, lr=0.03, momentum=0.8, wd=0.001, lr_steps="4,6", lr_factor=0.2,
        freeze_pattern="^stage1_", num_example=48, label_width=74, nms_thresh=0.4, ovp_thresh=0.6,
        use_difficult=True, class_names=["a", "b", "c", "d"], voc07_metric=True, nms_topk=200, force_suppress=True,
        train_list="/d/train.lst", val_path="/d/val.rec", val_list="/d/val.lst", iter_monitor=5,
        monitor_pattern="stage2.*", log_file="/m/train.log", kv_store="device", seed=3, cls_loss="focal",
        std_pixels=(58, 57, 57.5), keep=1)

    # the 20 required arguments alone, the original's (3, S, S) shape, one mean for all channels and
    # force_nms: the helper's defaults are train_net's
    train_net("toy", "/d/train.rec", 3, 8, (3, 64, 64), 128, -1, -1, "", 0, "/m/toy", ctx, 0, 2, 100, 0.05, 0.9,
              0.0005, "", 0.1, force_nms=True)
    assert calls[1][0] == toy_config(None, "/m/toy", 2, train_path="/d/train.rec", num_classes=3, batch_size=8,
                                     mean_pixels=(128, 128, 128), lr=0.05, force_suppress=True)
