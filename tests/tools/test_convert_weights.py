"""tools/convert_weights.py against the peers' own model code, with fixed random weights.

Equal outputs on random weights mean equal outputs on trained ones: every mapping (layer names,
channel orders, priors, pixel statistics, decoding, NMS) is exercised by the random values.

* ssd.pytorch: its SSD300 rewritten from its published architecture, not that project's own file
  (``tests/peers/ssd_pytorch.py``: same layers, state-dict keys, PriorBox, Detect and input transform);
* GluonCV: ``gluoncv.model_zoo.get_model(name, pretrained=False, pretrained_base=False)``, both
  ``ssd_300_vgg16_atrous_voc`` and ``ssd_512_vgg16_atrous_voc``;
* torchvision: ``torchvision.models.vgg16(weights=None)``.

The detectors are compared on four images of the synthetic set: the raw head outputs first,
then the detections after the score threshold and NMS. The peers score every class of an anchor,
MultiBoxDetection only its best one; above a score of 0.5 at most one class of an anchor can pass,
so both rules give the same detections there (:data:`THRESH`).

Each test prints ``MEASURED <what>: <value>`` lines (``pytest -s``), the figures in the README.
Needs the ``peers`` extra (torch, torchvision, gluoncv); each peer's tests are skipped without it.
Every comparison with a peer builds a full-size VGG model (seconds each on a CPU): those tests are marked slow.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import types

import cv2
import mxnet as mx
import numpy as np
import pytest
from helpers import ROOT, image_paths, load_script, script_command

from config.errors import UserError
from config.run_config import load_run_config
from evaluate.checkpoint import check_params_fit, load_checkpoint
from evaluate.detector import Detector
from evaluate.ssd_model import deploy_prefix, load_test_model
from tools import convert_weights

NUM_IMAGES = 4
THRESH = 0.5  # detections compared above this score (see the module docstring)
SEED = 0


def measured(what: str, value) -> None:
    print(f"MEASURED {what}: {value}")


@pytest.fixture(scope="module")
def images(synthetic_voc) -> list[np.ndarray]:
    """The first four training images of the synthetic set, BGR as cv2 reads them (120-240 px)."""
    chosen = synthetic_voc.split("train")[:NUM_IMAGES]
    return [cv2.imread(synthetic_voc.image_path(image), cv2.IMREAD_COLOR) for image in chosen]


def project_outputs(prefix: str, epoch: int, images: list[np.ndarray]) -> types.SimpleNamespace:
    """The converted checkpoint run as evaluate.py and demo.py run it (its run config, its graph).

    ``loc`` ``[B, N*4]``, ``cls`` ``[B, C+1, N]`` (logits), ``anchors`` ``[N, 4]`` corners,
    ``detection`` ``[B, N, 6]``, ``input`` ``[B, 3, S, S]`` (the Detector's preprocessing), ``run``.
    """
    run = load_run_config(prefix)
    symbol, args, auxs = load_test_model(run.network, prefix, epoch, run.data_shape, run.num_classes,
                                         run.nms_thresh, run.force_suppress, run.nms_topk)
    internals = symbol.get_internals()
    group = mx.sym.Group([internals["multibox_loc_pred_output"], internals["multibox_cls_pred_output"],
                          internals["multibox_anchors_output"], symbol])
    detector = Detector(group, args, auxs, run.data_shape, run.mean_pixels, run.std_pixels,
                        batch_size=len(images))
    batch = np.stack([detector.preprocess(image) for image in images])
    detector.mod.forward(mx.io.DataBatch([mx.nd.array(batch)]), is_train=False)
    loc, cls, anchors, detection = (out.asnumpy() for out in detector.mod.get_outputs())
    return types.SimpleNamespace(loc=loc, cls=cls, anchors=anchors[0], detection=detection, input=batch, run=run)


def rows_above(detection: np.ndarray, thresh: float) -> list[np.ndarray]:
    """MultiBoxDetection ``[B, N, 6]`` -> per image the kept rows scoring above ``thresh``, sorted."""
    return [sort_rows(d[(d[:, 0] >= 0) & (d[:, 1] > thresh)]) for d in detection]


def sort_rows(rows: np.ndarray) -> np.ndarray:
    """Rows ``(cls, score, x1, y1, x2, y2)`` by class, then score descending."""
    return rows[np.lexsort((-rows[:, 1], rows[:, 0]))] if len(rows) else rows.reshape(0, 6)


def compare_detections(expected: list[np.ndarray], got: list[np.ndarray]) -> tuple[float, float, int]:
    """Same classes per image, in the same order: ``(max score diff, max box diff, detections)``.

    Boxes are normalised, so a difference is a fraction of the image side.
    """
    score_diff = box_diff = 0.0
    for i, (want, have) in enumerate(zip(expected, got)):
        assert len(want) == len(have), f"image {i}: {len(want)} detections expected, {len(have)} found"
        np.testing.assert_array_equal(want[:, 0], have[:, 0], err_msg=f"image {i}: classes")
        if len(want):
            score_diff = max(score_diff, float(np.abs(want[:, 1] - have[:, 1]).max()))
            box_diff = max(box_diff, float(np.abs(want[:, 2:] - have[:, 2:]).max()))
    return score_diff, box_diff, sum(len(rows) for rows in expected)


def max_relative(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """``(max |a - b|, max |b|)``."""
    return float(np.abs(a - b).max()), float(np.abs(b).max())


def corners(centre_form: np.ndarray) -> np.ndarray:
    """``[N, 4]`` (cx, cy, w, h) -> (x1, y1, x2, y2)."""
    return np.concatenate([centre_form[:, :2] - centre_form[:, 2:] / 2, centre_form[:, :2] + centre_form[:, 2:] / 2], 1)


def converted_torch_model(model, source: str, out_name: str, tmp_path_factory) -> tuple[str, str]:
    """Save ``model``'s state dict and convert it with ``tools/convert_weights.py --from source``:
    ``(the .pth file, the prefix written)``."""
    import torch

    out = tmp_path_factory.mktemp(source)
    pth = str(out / f"{source}_random.pth")
    torch.save(model.state_dict(), pth)
    prefix = str(out / "model" / out_name)
    convert_weights.main(["--from", source, "--input", pth, "--out", prefix])
    return pth, prefix


# --- ssd.pytorch --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ssdpytorch(images, tmp_path_factory) -> types.SimpleNamespace:
    """ssd.pytorch's SSD300 with fixed random weights, its outputs on ``images``, and its state dict
    converted by the command line (``tools/convert_weights.py --from ssdpytorch``)."""
    torch = pytest.importorskip("torch", reason="needs the peers extra (pip install -e '.[peers]')")
    from peers import ssd_pytorch

    torch.manual_seed(SEED)
    model = ssd_pytorch.build_ssd("test")
    model.eval()
    ssd_pytorch.random_init(model, SEED)
    x = ssd_pytorch.network_input(images)
    with torch.no_grad():
        sources = model.sources(x)
        ssd_pytorch.sharpen_heads(model, sources)
        loc, conf = model.heads(sources)  # what forward computes before Detect
        batch = loc.shape[0]
        # exactly the test phase of SSD.forward, on the same tensors
        detections = model.detect(loc.view(batch, -1, 4), model.softmax(conf.view(batch, -1, model.num_classes)),
                                  model.priors)
    pth, prefix = converted_torch_model(model, "ssdpytorch", "ssdpytorch_voc", tmp_path_factory)
    return types.SimpleNamespace(model=model, input=x.numpy(), loc=loc.numpy(),
                                 conf=conf.numpy().reshape(batch, -1, model.num_classes), detections=detections,
                                 priors=model.priors.numpy(), pth=pth, prefix=prefix,
                                 project=project_outputs(prefix, 0, images))


def peer_rows(detections, thresh: float) -> list[np.ndarray]:
    """ssd.pytorch's Detect output ``[B, C, top_k, 5]`` -> per image rows ``(cls - 1, score, box)`` above ``thresh``."""
    result = []
    for image in detections.numpy():
        rows = [[cl - 1, *row] for cl in range(1, image.shape[0]) for row in image[cl] if row[0] > thresh]
        result.append(sort_rows(np.array(rows, dtype=np.float32).reshape(-1, 6)))
    return result


@pytest.mark.slow
def test_ssdpytorch_input_is_rgb_minus_its_bgr_mean(ssdpytorch):
    """ssd.pytorch subtracts (104, 117, 123) from cv2's BGR image, then turns it to RGB (pull_item's
    "to rgb"): the converted run config says RGB mean (123, 117, 104), std 1, and the Detector's input
    is the peer's, value for value. Feeding BGR instead would differ."""
    run = ssdpytorch.project.run
    assert tuple(run.mean_pixels) == (123.0, 117.0, 104.0) and tuple(run.std_pixels) == (1.0, 1.0, 1.0)
    diff = float(np.abs(ssdpytorch.project.input - ssdpytorch.input).max())
    measured("ssd.pytorch input max abs diff", diff)
    assert diff == 0.0
    assert np.abs(ssdpytorch.project.input[:, ::-1] - ssdpytorch.input).max() > 10  # channel order matters


@pytest.mark.slow
def test_ssdpytorch_priors_are_clamped_in_centre_form(ssdpytorch):
    """The graph's 8,732 anchors are PriorBox's (clip=True clamps (cx, cy, w, h)), in its order."""
    from peers.ssd_pytorch import VOC, PriorBox

    anchors = ssdpytorch.project.anchors
    assert anchors.shape == (8732, 4)
    diff = float(np.abs(anchors - corners(ssdpytorch.priors)).max())
    measured("ssd.pytorch priors max abs diff (normalised)", diff)
    assert diff < 1e-6
    unclamped = PriorBox({**VOC, "clip": False}).forward().numpy()
    clamped = np.any(unclamped[:, 2:] > 1, axis=1)
    assert clamped.sum() > 0  # the clip changes some priors: the graph must clamp them too
    assert np.abs(anchors[clamped] - corners(unclamped)[clamped]).max() > 1e-3
    overrides = ssdpytorch.project.run.graph_overrides
    assert overrides["anchor_clip"] is True and overrides["clip_detections"] is False


@pytest.mark.slow
def test_ssdpytorch_heads_are_anchor_major_with_background_first(ssdpytorch):
    """Raw loc and conf outputs equal ssd.pytorch's: the same channel layout (anchor-major per
    location), prior order and class order (background 0), so no permutation is needed."""
    project = ssdpytorch.project
    loc_diff, loc_max = max_relative(project.loc, ssdpytorch.loc.reshape(project.loc.shape))
    conf_diff, conf_max = max_relative(project.cls, ssdpytorch.conf.transpose(0, 2, 1))
    measured("ssd.pytorch raw loc max abs diff", f"{loc_diff:.2e} (values up to {loc_max:.2f})")
    measured("ssd.pytorch raw conf max abs diff", f"{conf_diff:.2e} (logits up to {conf_max:.2f})")
    assert loc_diff <= 1e-4 * loc_max and conf_diff <= 1e-4 * conf_max
    background = ssdpytorch.conf.argmax(-1) == 0
    assert 0.5 < background.mean() < 1  # the sharpened heads: mostly background, some clear classes


@pytest.mark.slow
def test_ssdpytorch_detections_equal_its_detect(ssdpytorch):
    """The converted checkpoint's detections (score > 0.5, after NMS) are ssd.pytorch's Detect output:
    the same classes, scores within 1e-4, boxes within 1e-4 of the image side."""
    expected = peer_rows(ssdpytorch.detections, THRESH)
    got = rows_above(ssdpytorch.project.detection, THRESH)
    score_diff, box_diff, count = compare_detections(expected, got)
    measured("ssd.pytorch detections compared", f"{count} ({[len(rows) for rows in expected]} per image)")
    measured("ssd.pytorch detection score max abs diff", f"{score_diff:.2e}")
    measured("ssd.pytorch detection box max abs diff (fraction of side)", f"{box_diff:.2e}")
    assert count >= 20 and all(len(rows) for rows in expected)
    # Detect keeps the 200 best per class: the comparison is sound while fewer pass the threshold
    assert max(np.bincount(rows[:, 0].astype(int)).max() for rows in expected) < 200
    assert score_diff <= 1e-4 and box_diff <= 1e-4
    crossing = np.concatenate(expected)[:, 2:]
    assert ((crossing < 0) | (crossing > 1)).any()  # boxes over the border stay whole, as in Detect


# --- GluonCV ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module", params=["ssd_300_vgg16_atrous_voc", "ssd_512_vgg16_atrous_voc"])
def gluoncv(request, images, tmp_path_factory) -> types.SimpleNamespace:
    """GluonCV's own SSD with fixed random weights, its outputs on ``images`` (resized to its input
    with the Detector's resize), saved with ``save_parameters`` and converted."""
    if importlib.util.find_spec("gluoncv") is None:  # importorskip would hit gluoncv's torch check
        pytest.skip("gluoncv is not installed (pip install -e '.[peers]')")
    from peers.gluoncv_peer import build_random_ssd, forward_with_heads, network_input

    name = request.param
    size = convert_weights.GLUONCV_MODELS[name].data_shape
    # SSD512 costs 2.9 times SSD300 per image: two of the four images keep the test short
    images = images if size == 300 else images[1::2]
    rgb = [cv2.resize(image, (size, size), interpolation=cv2.INTER_LINEAR)[:, :, ::-1] for image in images]
    x = network_input(rgb)
    # calibrated on one image (one forward pass less); SSD512 has 2.8 times the anchors, hence more background
    net = build_random_ssd(name, x[:1], SEED, background=10.0 if size == 300 else 10.5)
    cls_preds, box_preds, anchors, ids, scores, boxes = forward_with_heads(net, x)
    out = tmp_path_factory.mktemp("gluoncv")
    params = str(out / f"{name}.params")
    net.save_parameters(params)
    prefix = str(out / "model" / name)
    convert_weights.main(["--from", "gluoncv", "--model", name, "--input", params, "--out", prefix])
    return types.SimpleNamespace(name=name, size=size, cls=cls_preds, loc=box_preds, anchors=anchors,
                                 ids=ids, scores=scores, boxes=boxes, params=params, prefix=prefix,
                                 project=project_outputs(prefix, 0, images))


@pytest.mark.slow
def test_gluoncv_equals_its_own_forward(gluoncv):
    """Raw heads, anchors and detections (score > 0.5, after NMS) of the converted checkpoint equal
    GluonCV's forward pass; its normalisation is carried as mean 255 x ImageNet mean, std 1."""
    project, size, tag = gluoncv.project, gluoncv.size, gluoncv.name
    assert np.allclose(project.run.mean_pixels, (123.675, 116.28, 103.53))
    assert tuple(project.run.std_pixels) == (1, 1, 1)
    loc_diff, loc_max = max_relative(project.loc, gluoncv.loc.reshape(project.loc.shape))
    conf_diff, conf_max = max_relative(project.cls, gluoncv.cls.transpose(0, 2, 1))
    anchor_diff = float(np.abs(project.anchors - corners(gluoncv.anchors / size)).max())
    measured(f"{tag} raw loc max abs diff", f"{loc_diff:.2e} (values up to {loc_max:.2f})")
    measured(f"{tag} raw conf max abs diff", f"{conf_diff:.2e} (logits up to {conf_max:.2f})")
    measured(f"{tag} anchors max abs diff (normalised)", f"{anchor_diff:.2e}")
    assert loc_diff <= 1e-4 * loc_max and conf_diff <= 1e-4 * conf_max and anchor_diff < 1e-6
    expected = []
    for ids, scores, boxes in zip(gluoncv.ids, gluoncv.scores, gluoncv.boxes):
        keep = (ids[:, 0] >= 0) & (scores[:, 0] > THRESH)
        # GluonCV returns its 100 best after NMS: sound while fewer pass the threshold
        assert keep.sum() < 100
        expected.append(sort_rows(np.concatenate([ids[keep], scores[keep], boxes[keep] / size], 1)))
    score_diff, box_diff, count = compare_detections(expected, rows_above(project.detection, THRESH))
    measured(f"{tag} detections compared", f"{count} ({[len(rows) for rows in expected]} per image)")
    measured(f"{tag} detection score max abs diff", f"{score_diff:.2e}")
    measured(f"{tag} detection box max abs diff (fraction of side)", f"{box_diff:.2e}")
    assert count >= 10 and score_diff <= 1e-4 and box_diff <= 1e-4


@pytest.mark.slow
def test_gluoncv_file_for_another_model_is_refused(gluoncv, tmp_path):
    """--model naming the other network is a one-line error naming what does not fit."""
    other = next(name for name in convert_weights.GLUONCV_MODELS if name != gluoncv.name)
    with pytest.raises(UserError, match=r"is --model right\?|no parameter 'features\.extras\.4\.0\.weight'") as err:
        convert_weights.convert("gluoncv", gluoncv.params, str(tmp_path / "wrong"), model=other)
    assert "\n" not in str(err.value)
    assert not os.listdir(tmp_path)


# --- torchvision VGG16 --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torchvision_vgg16(tmp_path_factory) -> types.SimpleNamespace:
    """torchvision's ``vgg16(weights=None)`` with its own random init (plus random biases), converted."""
    torch = pytest.importorskip("torch", reason="needs the peers extra (pip install -e '.[peers]')")
    if importlib.util.find_spec("torchvision") is None:  # a plain import may fail on its compiled ops
        pytest.skip("torchvision is not installed (pip install -e '.[peers]')")
    from peers.torchvision_peer import import_torchvision

    torchvision = import_torchvision()
    torch.manual_seed(SEED)
    model = torchvision.models.vgg16(weights=None).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.bias.normal_(0, 0.1)
    _, prefix = converted_torch_model(model, "torchvision-vgg16", "vgg16_reduced", tmp_path_factory)
    return types.SimpleNamespace(model=model, state=model.state_dict(), prefix=prefix, torch=torch)


@pytest.mark.slow
def test_torchvision_vgg16_features_equal(torchvision_vgg16, images):
    """relu4_3 and relu5_3 of the converted base equal torchvision's on the same image, torchvision
    fed its ImageNet normalisation and the base pixels minus 255 x ImageNet mean (std folded into conv1_1).
    224 pixels: torchvision's floor pool3 and this base's ceil pool3 agree on even sizes."""
    torch, model = torchvision_vgg16.torch, torchvision_vgg16.model
    rgb = cv2.resize(images[0], (224, 224), interpolation=cv2.INTER_LINEAR)[:, :, ::-1].astype(np.float32)
    mean, std = np.array(convert_weights.IMAGENET_MEAN), np.array(convert_weights.IMAGENET_STD)
    peer_input = ((rgb / 255 - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)
    with torch.no_grad():
        x = torch.from_numpy(peer_input)
        relu4_3 = model.features[:23](x).numpy()
        relu5_3 = model.features[23:30](torch.from_numpy(relu4_3)).numpy()
    from symbol.vgg16_reduced import get_symbol

    _, args, auxs = load_checkpoint(torchvision_vgg16.prefix, 1)
    internals = get_symbol().get_internals()
    group = mx.sym.Group([internals["relu4_3_output"], internals["relu5_3_output"]])
    ours_input = (rgb - 255 * mean).transpose(2, 0, 1)[None].astype(np.float32)
    executor = group.bind(mx.cpu(), {"data": mx.nd.array(ours_input),
                                     **{k: v for k, v in args.items() if k in group.list_arguments()}})
    ours4, ours5 = (out.asnumpy() for out in executor.forward(is_train=False))
    for name, ours, theirs in (("relu4_3", ours4, relu4_3), ("relu5_3", ours5, relu5_3)):
        diff, top = max_relative(ours, theirs)
        measured(f"torchvision {name} max abs diff", f"{diff:.2e} (values up to {top:.2f})")
        assert ours.shape == theirs.shape and diff <= 1e-4 * top


@pytest.mark.slow
def test_torchvision_fc6_fc7_are_subsampled(torchvision_vgg16):
    """fc6 (4096x25088) -> conv 1024x512x3x3: every 4th unit, taps 0/3/6 of the 7x7 window;
    fc7 (4096x4096) -> 1024x1024x1x1: every 4th unit of both dimensions. conv1_1 has the std folded in."""
    state = {k: v.numpy() for k, v in torchvision_vgg16.state.items()}
    _, args, _ = load_checkpoint(torchvision_vgg16.prefix, 1)
    fc6, fc7 = args["fc6_weight"].asnumpy(), args["fc7_weight"].asnumpy()
    assert fc6.shape == (1024, 512, 3, 3) and fc7.shape == (1024, 1024, 1, 1)
    w6, w7 = state["classifier.0.weight"], state["classifier.3.weight"]
    for o, c, i, j in ((0, 0, 0, 0), (1, 2, 1, 2), (1023, 511, 2, 2), (517, 300, 2, 0)):
        assert fc6[o, c, i, j] == w6[4 * o, c * 49 + (3 * i) * 7 + 3 * j]
    for o, c in ((0, 0), (3, 5), (1023, 1023), (100, 999)):
        assert fc7[o, c, 0, 0] == w7[4 * o, 4 * c]
    np.testing.assert_array_equal(args["fc6_bias"].asnumpy(), state["classifier.0.bias"][::4])
    np.testing.assert_array_equal(args["fc7_bias"].asnumpy(), state["classifier.3.bias"][::4])
    np.testing.assert_array_equal(args["conv5_3_weight"].asnumpy(), state["features.28.weight"])
    scale = 255 * np.array(convert_weights.IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(args["conv1_1_weight"].asnumpy() * scale, state["features.0.weight"], rtol=1e-6)


@pytest.mark.slow
def test_torchvision_base_loads_as_pretrained(torchvision_vgg16):
    """``train.py --network vgg16_reduced --pretrained PREFIX --epoch 1``: every base layer is there and fits."""
    from symbol.symbol_factory import get_symbol_train

    symbol = get_symbol_train("vgg16_reduced", 300, num_classes=3)
    _, args, auxs = load_checkpoint(torchvision_vgg16.prefix, 1)
    base = [name for name in symbol.list_arguments() if name.startswith(("conv", "fc6", "fc7"))]
    assert len(base) == 30 and not [name for name in base if name not in args]
    check_params_fit(symbol, args, auxs, {"data": (2, 3, 300, 300), "label": (2, 3, 6)},
                     "vgg16_reduced-0001.params", 3)
    assert os.path.isfile(f"{torchvision_vgg16.prefix}-symbol.json")


# --- converter logic and bad input (no peer needed) -------------------------------------------------------
def test_anchor_permutation_reorders_head_channels():
    """A peer whose boxes come in another order gets its head channels permuted to MultiBoxPrior's."""
    ours = convert_weights.multibox_prior_shapes([0.2, 0.3], [1, 2, 0.5])
    peer = [ours[2], ours[0], ours[3], ours[1]]  # the same boxes, shuffled
    perm = convert_weights.anchor_permutation(peer, ours, "test")
    assert perm == [1, 3, 0, 2]
    weight = np.arange(4 * 3, dtype=np.float32).reshape(12, 1, 1, 1)  # 4 anchors x 3 values
    permuted, bias = convert_weights.permute_anchors(weight, weight[:, 0, 0, 0], perm, 3)
    assert permuted[:, 0, 0, 0].tolist() == [3, 4, 5, 9, 10, 11, 0, 1, 2, 6, 7, 8]
    with pytest.raises(UserError, match="cannot express"):
        convert_weights.anchor_permutation([(0.2, 0.2), (0.5, 0.1), (0.1, 0.5), (0.9, 0.9)], ours, "layer 0")


@pytest.mark.slow
def test_bad_input_is_one_line_error(tmp_path):
    """Missing file, unknown --from, --model problems, a file of another kind: one line naming it."""
    junk = tmp_path / "junk.params"
    junk.write_bytes(b"not a weights file")
    cases = [
        (("ssdpytorch", str(tmp_path / "missing.pth")), {}, "missing.pth: file not found"),
        (("caffe", str(junk)), {}, "--from 'caffe': unknown toolkit"),
        (("gluoncv", str(junk)), {}, "--from gluoncv needs --model"),
        (("gluoncv", str(junk)), {"model": "ssd_512_resnet50_v1_voc"}, "--model 'ssd_512_resnet50_v1_voc'"),
        (("ssdpytorch", str(junk)), {"model": "ssd_300_vgg16_atrous_voc"}, "--model names a GluonCV network"),
        (("gluoncv", str(junk)), {"model": "ssd_300_vgg16_atrous_voc"}, "not an mxnet .params file"),
        (("torchvision-vgg16", str(junk)), {"epoch": -1}, "--epoch -1"),
    ]
    for (source, path), kwargs, message in cases:
        with pytest.raises(UserError) as err:
            convert_weights.convert(source, path, str(tmp_path / "out" / "model"), **kwargs)
        assert message in str(err.value) and "\n" not in str(err.value)
    assert not os.path.exists(tmp_path / "out")
    # the command line prints that one line and exits 2
    proc = subprocess.run([*script_command("tools/convert_weights.py"), "--from", "caffe",
                           "--input", str(junk), "--out", str(tmp_path / "out" / "m")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: --from 'caffe': unknown toolkit; choose one of "
                                                "ssdpytorch, gluoncv, torchvision-vgg16"]


def test_state_dict_missing_a_key_is_named(tmp_path):
    """A state dict without a tensor the network needs: one line naming the key, nothing written."""
    torch = pytest.importorskip("torch", reason="needs the peers extra (pip install -e '.[peers]')")
    partial = str(tmp_path / "partial.pth")
    torch.save({"vgg.0.weight": torch.zeros(64, 3, 3, 3)}, partial)
    for source, message in (("ssdpytorch", "no parameter 'vgg.0.bias'; is it ssd.pytorch's SSD300 state dict?"),
                            ("torchvision-vgg16", "no parameter 'features.0.weight'")):
        with pytest.raises(UserError) as err:
            convert_weights.convert(source, partial, str(tmp_path / "out" / "model"))
        assert message in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(UserError, match="not a PyTorch state dict"):
        convert_weights.convert("ssdpytorch", os.path.join(ROOT, "README.md"), str(tmp_path / "out" / "model"))
    assert not os.path.exists(tmp_path / "out")


# --- end to end: a converted ssd.pytorch model through the scripts -------------------------------------------
@pytest.mark.slow
def test_converted_ssdpytorch_runs_through_the_scripts(ssdpytorch, synthetic_rec, tmp_path, capsys):
    """evaluate.py, demo.py, tools/deploy.py (and demo.py --deploy) take the converted checkpoint
    with --prefix/--epoch alone; train.py finetunes it to the synthetic set's 3 classes (example/ssd's
    --finetune, after copying it to the run's prefix) for one epoch at batch 2 (on the 8 validation
    images, to keep the test short)."""
    evaluate_script = load_script("evaluate")
    demo_script = load_script("demo")
    deploy_script = load_script("tools/deploy")
    train_script = load_script("train")
    prefix = ssdpytorch.prefix
    with pytest.raises(UserError, match="--data-shape 512: .* anchors for data shape 300"):
        load_test_model("vgg16_reduced", prefix, 0, 512, 20)

    # --batch-size only sizes the work (8 images, one batch); the model's settings come from its run config
    evaluate_script.main(["--prefix", prefix, "--epoch", "0", "--rec-path", synthetic_rec.val_rec, "--batch-size", "8"])
    assert "mAP = " in capsys.readouterr().out

    paths = image_paths(synthetic_rec.val_lst, synthetic_rec.synth.devkit)[:2]
    demo_dir = tmp_path / "demo"
    status = demo_script.main(["--prefix", prefix, "--epoch", "0", "--images", ",".join(paths),
                               "--out-dir", str(demo_dir)])
    assert not status and len(os.listdir(demo_dir)) == 2

    deploy_script.main(["--prefix", prefix, "--epoch", "0"])
    deployed = deploy_prefix(prefix)
    assert os.path.isfile(f"{deployed}-0000.params") and load_run_config(deployed).graph_overrides
    deployed_graph = json.loads(open(f"{deployed}-symbol.json").read())
    detection = next(node for node in deployed_graph["nodes"] if node["name"] == "detection")
    assert detection["attrs"]["clip"] == "False"  # the peer's decoding is built into the deployed graph
    deployed_dir = tmp_path / "demo_deployed"
    status = demo_script.main(["--prefix", prefix, "--epoch", "0", "--images", ",".join(paths),
                               "--out-dir", str(deployed_dir), "--deploy"])
    assert not status
    for name in os.listdir(demo_dir):  # the same detections drawn: the same bytes
        assert (demo_dir / name).read_bytes() == (deployed_dir / name).read_bytes()

    run_prefix = str(tmp_path / "finetune" / "ssd")
    checkpoint = f"{run_prefix}_vgg16_reduced_300"
    os.makedirs(os.path.dirname(checkpoint))
    shutil.copy(f"{prefix}-symbol.json", f"{checkpoint}-symbol.json")
    shutil.copy(f"{prefix}-0000.params", f"{checkpoint}-0001.params")
    # one epoch on the 8 validation images (4 batches): the point is that the checkpoint trains
    train_script.main(["--network", "vgg16_reduced", "--train-path", synthetic_rec.val_rec, "--val-path", "",
                       "--num-class", "3", "--class-names", synthetic_rec.names_file, "--prefix", run_prefix,
                       "--finetune", "1", "--end-epoch", "2", "--batch-size", "2", "--gpus", "", "--lr", "0.001",
                       "--label-width", str(synthetic_rec.label_width), "--log", str(tmp_path / "train.log"),
                       "--frequent", "100", "--seed", "0"])
    _, args, _ = load_checkpoint(checkpoint, 2)
    assert args["relu4_3_cls_pred_conv_weight"].shape == (4 * 4, 512, 3, 3)  # 3 classes + background
    old = mx.nd.load(f"{checkpoint}-0001.params")
    np.testing.assert_array_equal(args["conv4_3_weight"].asnumpy(), old["arg:conv4_3_weight"].asnumpy())
    assert not np.array_equal(args["relu4_3_loc_pred_conv_weight"].asnumpy(),
                              old["arg:relu4_3_loc_pred_conv_weight"].asnumpy())
