"""GluonCV's own SSD (``gluoncv.model_zoo``), built with a fixed random initialisation.

gluoncv 0.10.5 imports beside mxnet 1.9.1, but its ``__init__`` raises ``RuntimeError`` (not the
``ImportError`` it catches) when it finds torch 2.x installed, for its optional PyTorch half.
:func:`import_gluoncv` hides torch while gluoncv imports; its mxnet model zoo never uses torch.
"""
from __future__ import annotations

import sys
import types

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
    the heads rescaled on ``x`` as ssd.pytorch's peer does: offsets of about ``loc_std``, class logits
    of about ``conf_std``, background raised by ``background``, so that a few anchors per image
    have one clearly winning class.
    """
    gluoncv = import_gluoncv()
    mx.random.seed(seed)
    rng = np.random.RandomState(seed)
    net = gluoncv.model_zoo.get_model(name, pretrained=False, pretrained_base=False)
    net.initialize()
    net(x)  # deferred initialisation happens here
    for param_name, param in net.collect_params().items():
        if param_name.endswith("bias"):
            param.set_data(mx.nd.array(rng.normal(0, 0.1, param.shape)))
        elif param_name.endswith("normalize_scale"):
            param.set_data(mx.nd.array(rng.uniform(10, 30, param.shape)))
    features = net.features(x)
    num_classes = len(net.classes) + 1
    for feature, cls_head, box_head in zip(features, net.class_predictors, net.box_predictors):
        for head, std in ((box_head, loc_std), (cls_head, conf_std)):
            weight, bias = head.predictor.weight, head.predictor.bias
            weight.set_data(weight.data() * (std / head(feature).asnumpy().std()))
            if head is box_head:
                bias.set_data(bias.data() * (loc_std / 0.1))
        bias = cls_head.predictor.bias.data().asnumpy().reshape(-1, num_classes)
        bias[:, 0] += background
        cls_head.predictor.bias.set_data(mx.nd.array(bias.reshape(-1)))
    return net
