"""GluonCV's own SSD (``gluoncv.model_zoo``), built with a fixed random initialisation.

gluoncv 0.10.5 imports beside mxnet 1.9.1, but its ``__init__`` raises ``RuntimeError`` (not the
``ImportError`` it catches) when it finds torch 2.x installed, for its optional PyTorch half.
:func:`import_gluoncv` hides torch while gluoncv imports; its mxnet model zoo never uses torch.
"""
from __future__ import annotations

import sys
import types
import warnings

import mxnet as mx
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def import_gluoncv() -> types.ModuleType:
    """``import gluoncv`` with torch hidden (``sys.modules['torch'] = None`` makes ``import torch`` fail
    with ImportError, which gluoncv's check catches); torch is restored afterwards."""
    if "gluoncv" in sys.modules:
        return sys.modules["gluoncv"]
    missing = object()
    saved = sys.modules.get("torch", missing)
    sys.modules["torch"] = None  # type: ignore[assignment]
    try:
        with warnings.catch_warnings():  # its version check uses distutils' deprecated LooseVersion
            warnings.simplefilter("ignore", DeprecationWarning)
            import gluoncv
    finally:
        if saved is missing:
            del sys.modules["torch"]
        else:
            sys.modules["torch"] = saved
    return gluoncv


def network_input(images_rgb: list[np.ndarray]) -> mx.nd.NDArray:
    """GluonCV's normalisation of RGB uint8 images already at the network's size: ``[B, 3, S, S]``
    ``(x / 255 - mean) / std`` (``mx.nd.image.to_tensor`` + ``normalize``, as its presets do)."""
    batch = [mx.nd.image.normalize(mx.nd.image.to_tensor(mx.nd.array(image, dtype=np.uint8)),
                                   mean=IMAGENET_MEAN, std=IMAGENET_STD) for image in images_rgb]
    return mx.nd.stack(*batch)


def build_random_ssd(name: str, x: mx.nd.NDArray, seed: int, loc_std: float = 0.5, conf_std: float = 2.0,
                     background: float = 8.0):
    """``get_model(name, pretrained=False, pretrained_base=False)`` with a fixed random initialisation.

    GluonCV's own initialisers (Xavier for the convolutions) with random biases and L2 scales, then
    the heads rescaled on the calibration batch ``x`` as ssd.pytorch's peer does: offsets of about
    ``loc_std``, class logits of about ``conf_std``, background raised by ``background``, so that a
    few anchors per image have one clearly winning class.
    """
    gluoncv = import_gluoncv()
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    net = gluoncv.model_zoo.get_model(name, pretrained=False, pretrained_base=False)
    net.initialize()
    net.features(x)  # deferred initialisation of the base and extras ...
    for name_, param in net.collect_params().items():
        if name_.endswith("normalize_scale"):
            param.set_data(mx.nd.array(rng.uniform(10, 30, param.shape)))
        elif name_.endswith("bias") and "predictor" not in name_:
            param.set_data(mx.nd.array(rng.normal(0, 0.1, param.shape)))
    features = net.features(x)
    num_classes = len(net.classes) + 1
    for feature, cls_head, box_head in zip(features, net.class_predictors, net.box_predictors):
        for head, std in ((box_head, loc_std), (cls_head, conf_std)):
            raw = head(feature)  # ... and of the heads
            bias_std = loc_std if head is box_head else 0.1
            head.predictor.bias.set_data(mx.nd.array(rng.normal(0, bias_std, head.predictor.bias.shape)))
            head.predictor.weight.set_data(head.predictor.weight.data() * (std / raw.asnumpy().std()))
        bias = cls_head.predictor.bias.data().asnumpy().reshape(-1, num_classes)
        bias[:, 0] += background
        cls_head.predictor.bias.set_data(mx.nd.array(bias.reshape(-1)))
    return net


def forward_with_heads(net, x: mx.nd.NDArray) -> tuple[np.ndarray, ...]:
    """One forward pass of GluonCV's SSD: ``(cls_preds [B, N, C+1], box_preds [B, N, 4], anchors [N, 4]
    centre form in pixels, ids [B, K, 1], scores [B, K, 1], bboxes [B, K, 4])``.

    The raw heads are caught with forward hooks on GluonCV's own predictor and anchor blocks and
    arranged as its ``hybrid_forward`` arranges them (channels-last, flattened, concatenated).
    """
    caught: dict[str, list] = {"cls": [], "box": [], "anchor": []}
    hooks = []
    for kind, blocks in (("cls", net.class_predictors), ("box", net.box_predictors), ("anchor", net.anchor_generators)):
        for block in blocks:
            hooks.append(block.register_forward_hook(lambda _, __, out, kind=kind: caught[kind].append(out.asnumpy())))
    try:
        ids, scores, bboxes = (out.asnumpy() for out in net(x))
    finally:
        for hook in hooks:
            hook.detach()
    batch = x.shape[0]
    flat = {kind: np.concatenate([o.transpose(0, 2, 3, 1).reshape(batch, -1) for o in caught[kind]], 1)
            for kind in ("cls", "box")}
    anchors = np.concatenate([a.reshape(-1, 4) for a in caught["anchor"]])
    return (flat["cls"].reshape(batch, -1, len(net.classes) + 1), flat["box"].reshape(batch, -1, 4), anchors,
            ids, scores, bboxes)
