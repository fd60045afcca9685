"""One evaluation entry point (evaluate/evaluation.py) and one scorer (evaluate/scoring.py) for every family.

* ``evaluate_net`` (example/ssd's signature) is a thin wrapper: it hands ``evaluate_model`` the settings
  its arguments describe and returns the same result, figure for figure;
* SSD, ONNX and Faster R-CNN, at evaluation and in training validation, all score through
  ``evaluate.scoring.score_images``;
* ``on_image`` hands each family's per-image detections and labels out, normalised, in record order.

(tests/symbol/test_registry.py checks that no public function takes more than ten parameters.)
"""
from __future__ import annotations

import dataclasses
import os

import mxnet as mx
import numpy as np
import pytest

import evaluate.scoring as scoring
from config.train_config import SSDConfig
from evaluate.evaluation import EvalSettings, evaluate_model, score_rcnn_module
from evaluate.run_settings import InferenceSettings
from evaluate.scoring import MetricOptions, image_rows, score_images

MEAN_PIXELS = list(SSDConfig.mean_pixels)  # what trained_toy trained with


def record_objects(rec_path: str) -> list[np.ndarray]:
    """The packed objects [m, 6] of every record of ``rec_path``, in file order."""
    record = mx.recordio.MXRecordIO(rec_path, "r")
    objects = []
    while (packed := record.read()) is not None:
        label = np.asarray(mx.recordio.unpack(packed)[0].label, dtype=np.float32)
        header_width, object_width = int(label[0]), int(label[1])
        objects.append(label[header_width:].reshape(-1, object_width))
    record.close()
    return objects


def ssd_model(toy, **changes) -> InferenceSettings:
    return dataclasses.replace(InferenceSettings(
        prefix=toy.checkpoint, network=toy.network, num_classes=toy.num_class, class_names=list(toy.classes),
        data_shape=toy.data_shape, mean_pixels=tuple(MEAN_PIXELS), label_width=toy.rec.label_width), **changes)


@pytest.fixture(scope="module")
def rcnn_run(trained_toy, tmp_path_factory):
    """A Faster R-CNN checkpoint (faster_rcnn_small, initial weights, every score kept) for the toy's classes."""
    from evaluate.checkpoint import save_params
    from evaluate.evaluate_rcnn import inference_config
    from symbol.rcnn_factory import get_rcnn_test, make_config, rcnn_initializer

    prefix = str(tmp_path_factory.mktemp("rcnn_eval") / "rcnn")
    cfg = make_config("faster_rcnn_small", img_short_side=96, img_long_side=128, test_rpn_post_nms_topk=20,
                      rcnn_conf_thresh=0.0, num_classes=trained_toy.num_class, class_names=list(trained_toy.classes),
                      prefix=prefix, val_path=trained_toy.val_rec)
    symbol = get_rcnn_test(cfg.network, cfg.num_classes, cfg)
    module = mx.mod.Module(symbol, data_names=["data", "im_info"], label_names=None)
    module.bind(data_shapes=[("data", (1, 3, 96, 128)), ("im_info", (1, 3))], for_training=False)
    mx.random.seed(0)
    module.init_params(rcnn_initializer())
    save_params(prefix, 1, symbol, *module.get_params())
    model = InferenceSettings(prefix, cfg.network, cfg.num_classes, list(cfg.class_names), rcnn=inference_config(cfg))
    return cfg, model, module.get_params()


@pytest.fixture(scope="module")
def onnx_model(trained_toy, tmp_path_factory) -> InferenceSettings:
    pytest.importorskip("onnxruntime", reason="needs the onnx extra (pip install -e '.[onnx]')")
    from evaluate.onnx_detector import onnx_settings
    from evaluate.onnx_export import export_onnx

    path = export_onnx(trained_toy.checkpoint, trained_toy.epoch, str(tmp_path_factory.mktemp("onnx_eval") / "t.onnx"))
    return onnx_settings(path)


def assert_same_result(a: dict, b: dict) -> None:
    assert a["aps"] == b["aps"] and a["mAP"] == b["mAP"] and a["images"] == b["images"]
    assert a.get("coco") == b.get("coco")
    curves_a, curves_b = a["metric"].pr_curves(), b["metric"].pr_curves()
    assert list(curves_a) == list(curves_b)
    for name in curves_a:
        for x, y in zip(curves_a[name], curves_b[name]):
            np.testing.assert_array_equal(x, y)


# --- evaluate_net is a wrapper --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("changed", [False, True])
def test_evaluate_net_is_evaluate_model(trained_toy, monkeypatch, changed):
    import evaluate.evaluate_net as evaluate_net_module
    from evaluate.evaluate_net import evaluate_net

    toy, rec = trained_toy, trained_toy.rec
    if changed:  # every setting away from its default
        pytest.importorskip("pycocotools")
        arguments = dict(batch_size=3, path_imglist=toy.val_lst, nms_thresh=0.3, force_nms=True, ovp_thresh=0.4,
                         use_difficult=True, class_names=list(toy.classes), voc07_metric=False, num_batch=2,
                         std_pixels=(50.0, 60.0, 70.0), nms_topk=100, label_pad_width=rec.label_width, coco=True)
        model = ssd_model(toy, std_pixels=(50.0, 60.0, 70.0), nms_thresh=0.3, force_suppress=True, nms_topk=100)
        settings = EvalSettings(model, toy.val_rec, toy.epoch, [mx.cpu()], batch_size=3, list_path=toy.val_lst,
                                num_batch=2, metric=MetricOptions(False, 0.4, True, coco=True))
    else:
        arguments = dict(batch_size=4, class_names=list(toy.classes), voc07_metric=True,
                         label_pad_width=rec.label_width)
        model = ssd_model(toy, std_pixels=None)  # evaluate_net's default: no division
        settings = EvalSettings(model, toy.val_rec, toy.epoch, [mx.cpu()], batch_size=4)

    seen = []
    real = evaluate_net_module.evaluate_model

    def recording(settings, on_image=None):
        seen.append(settings)
        return real(settings, on_image)

    monkeypatch.setattr(evaluate_net_module, "evaluate_model", recording)
    wrapped = evaluate_net(toy.network, toy.val_rec, toy.num_class, tuple(MEAN_PIXELS), toy.data_shape,
                           toy.checkpoint, toy.epoch, [mx.cpu()], **arguments)
    assert seen == [settings]
    direct = real(settings)
    assert_same_result(wrapped, direct)
    assert direct["images"] == (6 if changed else len(record_objects(toy.val_rec)))
    assert changed or direct["mAP"] > 0


# --- one scorer for every family ------------------------------------------------------------------
@pytest.fixture
def scorer_calls(monkeypatch) -> list:
    """Each call of ``evaluate.scoring.score_images`` (the real one runs): ``(options, result)``."""
    calls = []
    real = scoring.score_images

    def recording(images, options=MetricOptions(), *args, **kwargs):
        result = real(images, options, *args, **kwargs)
        calls.append((options, result))
        return result

    monkeypatch.setattr(scoring, "score_images", recording)
    return calls


def check_images(images: list, result: dict, rec_path: str, options: MetricOptions) -> None:
    """``on_image``'s pairs: one per image in record order, labels the record's, rows normalised."""
    objects = record_objects(rec_path)
    assert [index for index, _, _ in images] == list(range(len(objects))) and result["images"] == len(objects)
    for (_, dets, labels), packed in zip(images, objects):
        assert dets.dtype == labels.dtype == np.float32 and dets.shape[1] == labels.shape[1] == 6
        np.testing.assert_allclose(labels, packed, atol=1e-6)
        assert np.all(dets[:, 0] >= 0) and np.all((dets[:, 2:] > -0.5) & (dets[:, 2:] < 1.5))
    assert sum(len(dets) for _, dets, _ in images) > 0
    # the pairs handed out are what was scored
    again = score_images([(dets, labels) for _, dets, labels in images], options, result["metric"].class_names)
    assert again["aps"] == result["aps"] and again["mAP"] == result["mAP"]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["ssd", "onnx", "rcnn"])
def test_every_family_scores_through_score_images(family, trained_toy, rcnn_run, request, scorer_calls, tmp_path):
    model = {"ssd": lambda: ssd_model(trained_toy), "onnx": lambda: request.getfixturevalue("onnx_model"),
             "rcnn": lambda: rcnn_run[1]}[family]()
    options = MetricOptions(voc07=True, ovp_thresh=0.3)
    settings = EvalSettings(model, trained_toy.val_rec, 1 if family == "rcnn" else trained_toy.epoch, batch_size=4,
                            metric=options, pr_dir=str(tmp_path / "pr"))
    images = []
    result = evaluate_model(settings, on_image=lambda *image: images.append(image))
    assert len(scorer_calls) == 1 and scorer_calls[0][0] == options
    assert scorer_calls[0][1] is result
    assert sorted(os.path.basename(path) for path in result["pr_files"]) == sorted(
        f"pr_{name}.png" for name in trained_toy.classes)
    assert sorted(os.listdir(tmp_path / "pr")) == sorted(os.path.basename(path) for path in result["pr_files"])
    check_images(images, result, trained_toy.val_rec, options)


@pytest.mark.slow
def test_onnx_scores_as_its_checkpoint(trained_toy, onnx_model):
    checkpoint = evaluate_model(EvalSettings(ssd_model(trained_toy), trained_toy.val_rec, trained_toy.epoch,
                                             batch_size=4))
    exported = evaluate_model(EvalSettings(onnx_model, trained_toy.val_rec, batch_size=5))
    assert exported["images"] == checkpoint["images"]
    assert exported["mAP"] == pytest.approx(checkpoint["mAP"], abs=1e-4)


@pytest.mark.slow
def test_rcnn_training_validation_is_evaluation(trained_toy, rcnn_run, scorer_calls):
    from evaluate.evaluate_rcnn import score_detections
    from evaluate.rcnn_detect import detect_rec

    cfg, model, params = rcnn_run
    evaluated = evaluate_model(EvalSettings(model, trained_toy.val_rec, 1))
    validated = score_rcnn_module(params, cfg, mx.cpu())
    listed = score_detections(*detect_rec(params, cfg.val_path, model.rcnn, cfg.num_classes), cfg.class_names)
    assert len(scorer_calls) == 3 and all(options == MetricOptions() for options, _ in scorer_calls)
    for result in (validated, listed):
        assert_same_result(result, evaluated)
    assert evaluated["mAP"] > 0


# --- the rows the scorer reads ----------------------------------------------------------------------
def test_image_rows_drop_padding_and_give_six_label_columns():
    dets = np.array([[1, 0.9, 0.1, 0.1, 0.5, 0.5], [-1, -1, -1, -1, -1, -1]], dtype=np.float64)
    five = np.array([[2, 0.1, 0.2, 0.3, 0.4], [-1, -1, -1, -1, -1]])
    seven = np.array([[0, 0.1, 0.2, 0.3, 0.4, 1, 9]])
    rows, labels = image_rows(dets, five)
    assert rows.dtype == labels.dtype == np.float32
    np.testing.assert_array_equal(rows, dets[:1].astype(np.float32))
    np.testing.assert_array_equal(labels, np.float32([[2, 0.1, 0.2, 0.3, 0.4, 0]]))
    np.testing.assert_array_equal(image_rows(dets, seven)[1], seven[:, :6].astype(np.float32))
    empty_dets, empty_labels = image_rows(np.zeros((0, 6)), np.zeros((0,)))
    assert empty_dets.shape == empty_labels.shape == (0, 6)


def test_score_images_applies_the_options():
    # one image: a hit (IoU 0.8 with the first box), a detection on a difficult box, a miss
    labels = np.array([[0, 0.1, 0.1, 0.5, 0.5, 0], [0, 0.6, 0.6, 0.9, 0.9, 1]])
    dets = np.array([[0, 0.9, 0.1, 0.1, 0.42, 0.5], [0, 0.8, 0.6, 0.6, 0.9, 0.9], [0, 0.7, 0.0, 0.6, 0.1, 0.7]])
    images = [(dets, labels)]
    base = score_images(images, MetricOptions(voc07=False), ["a"])
    assert base["aps"] == {"a": 1.0} and base["images"] == 1
    strict = score_images(images, MetricOptions(voc07=False, ovp_thresh=0.85), ["a"])
    assert strict["mAP"] == 0.0
    difficult = score_images(images, MetricOptions(voc07=False, use_difficult=True), ["a"])
    assert difficult["mAP"] == pytest.approx(1.0)
    assert type(score_images(images, MetricOptions(voc07=True), ["a"])["metric"]).use_07_metric
    with pytest.raises(ValueError, match="image sizes"):
        score_images(images, MetricOptions(coco=True))
