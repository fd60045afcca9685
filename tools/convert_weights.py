"""Use trained SSDs and ImageNet VGG16 weights from other toolkits as checkpoints of this one.

    python tools/convert_weights.py --from ssdpytorch --input ssd300_mAP_77.43_v2.pth --out model/ssdpytorch_voc
    python tools/convert_weights.py --from gluoncv --model ssd_512_vgg16_atrous_voc \\
        --input ssd_512_vgg16_atrous_voc.params --out model/gluoncv_ssd512_voc
    python tools/convert_weights.py --from torchvision-vgg16 --input vgg16-397923af.pth --out model/vgg16_reduced

A detector becomes a checkpoint of the ``vgg16_reduced`` SSD: ``PREFIX-symbol.json`` and
``PREFIX-0000.params`` with this toolkit's parameter names, and ``PREFIX-ssd.json``, the run config
evaluate.py, demo.py and tools/deploy.py read (network, data shape, class names, pixel statistics,
NMS settings, and in ``SSDConfig.graph_overrides`` the peer's own anchors and box decoding). The
VGG16 base becomes ``PREFIX-symbol.json`` and ``PREFIX-0001.params`` for
``train.py --pretrained PREFIX --epoch 1``.

What each peer computes, and how the checkpoint reproduces it (tests/tools/test_convert_weights.py checks
every point against the peer's own model code):

* ssd.pytorch: reads images with cv2 (BGR), subtracts (104, 117, 123) in BGR order, and
  then turns them to RGB (``VOCDetection.pull_item``, "to rgb") before the network: the network sees
  RGB minus (123, 117, 104), which is what this toolkit feeds; the first convolution is kept as it is.
  Its priors are the project's preset except for the sizes (exact ``sqrt(min * max)`` instead of 3
  decimals) and ``clip=True``, which clamps the centre form ``(cx, cy, w, h)``: ``anchor_clip``.
  Background is class 0 and the heads are anchor-major per location, as MultiBox; the prior order
  per location (small square, large square, then ``r`` and ``1/r``) is MultiBoxPrior's. ``Detect``
  runs NMS on decoded boxes as they are, even where they cross the border: ``clip_detections`` False
  (MultiBoxDetection cuts them at the border first by default, which changes what NMS keeps).
  ``Detect`` scores every class of a prior, MultiBoxDetection only its best: above a score of 0.5
  (where one class at most can be) the two agree exactly.
* GluonCV ``ssd_*_vgg16_atrous_voc``: feeds ``(x / 255 - mean) / std`` (ImageNet statistics, RGB) and
  multiplies it by ``init_scale = 255 * std`` first, so its convolutions see ``x - 255 * mean``: the
  run config says mean ``255 * mean`` and std 1, and conv1_1 absorbs any other ``init_scale``. Its
  anchors are read from the file and checked against the model's sizes, ratios and steps. SSD512's
  last extra convolution is 4x4 (stride 1, pad 1) on a 2x2 map: only its four centre taps ever see the
  input, so it becomes this graph's 3x3 stride-2 convolution with those taps (the others are zero).
  Like ssd.pytorch, GluonCV decodes without cutting boxes at the border (``clip_detections`` False)
  and scores every class of an anchor.
* torchvision ``vgg16``: conv1_1..conv5_3 are copied, with ImageNet's ``1 / (255 * std)`` folded into
  conv1_1 so the base takes pixels minus the mean (std 1, the SSD recipe); fc6 becomes the 3x3
  dilated ``fc6`` by keeping every 4th output unit and the taps 0, 3, 6 of its 7x7 window, fc7 the
  1x1 ``fc7`` by keeping every 4th unit of both dimensions.
"""
from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

import config  # noqa: F401  (thread defaults before mxnet loads)
from config.defaults import VOC_CLASSES
from config.errors import UserError, run_cli

SOURCES = ("ssdpytorch", "gluoncv", "torchvision-vgg16")
NETWORK = "vgg16_reduced"
DETECTOR_EPOCH, BASE_EPOCH = 0, 1
VOC_NAMES = [name.strip() for name in VOC_CLASSES.split(",")]
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # RGB, of 0-1 pixels
IMAGENET_STD = (0.229, 0.224, 0.225)
ANCHOR_TOLERANCE = 1e-5  # normalised anchor sides that count as the same box


# --- the peers' anchors ---------------------------------------------------------------------
@dataclass(frozen=True)
class PeerAnchors:
    """A peer's default boxes for a square ``image_size`` input, in its pixels, per feature map ``k``.

    At each location: the square ``small[k]``, the square ``large[k]``, then for each ratio ``r`` of
    ``ratios[k]`` (width / height, in the peer's order) the box ``(small * sqrt(r), small / sqrt(r))``;
    centres at ``((j + offset) * steps[k], (i + offset) * steps[k])``. ``clip`` clamps the centre
    form ``(cx, cy, w, h)`` to the image.
    """

    image_size: int
    small: tuple[float, ...]
    large: tuple[float, ...]
    ratios: tuple[tuple[float, ...], ...]
    steps: tuple[float, ...]
    clip: bool = False
    offset: float = 0.5

    def shapes(self, k: int) -> list[tuple[float, float]]:
        """Normalised ``(w, h)`` of layer ``k``'s boxes at one location, in the peer's order."""
        small, large = self.small[k] / self.image_size, self.large[k] / self.image_size
        return [(small, small), (large, large)] + [(small * math.sqrt(r), small / math.sqrt(r))
                                                   for r in self.ratios[k]]


def ssdpytorch_priors(min_sizes: Sequence[int], max_sizes: Sequence[int],
                      aspect_ratios: Sequence[Sequence[int]], steps: Sequence[int]) -> PeerAnchors:
    """ssd.pytorch's ``PriorBox`` for one of its configs (``data/config.py``, ``min_dim`` 300, ``clip``).

    Each aspect ratio ``ar`` gives ``(s*sqrt(ar), s/sqrt(ar))`` then ``(s/sqrt(ar), s*sqrt(ar))``:
    the width/height ratios ``ar`` then ``1/ar``; the large square is ``sqrt(min * max)``.
    """
    ratios = tuple(tuple(r for ar in ars for r in (float(ar), 1.0 / ar)) for ars in aspect_ratios)
    large = tuple(math.sqrt(lo * hi) for lo, hi in zip(min_sizes, max_sizes))
    return PeerAnchors(300, tuple(float(s) for s in min_sizes), large, ratios, tuple(float(s) for s in steps),
                       clip=True)


SSDPYTORCH_ASPECT_RATIOS = ((2,), (2, 3), (2, 3), (2, 3), (2,), (2,))
SSDPYTORCH_STEPS = (8, 16, 32, 64, 100, 300)
# ssd.pytorch picks its config by class count: ``(coco, voc)[num_classes == 21]``
SSDPYTORCH_VOC = ssdpytorch_priors((30, 60, 111, 162, 213, 264), (60, 111, 162, 213, 264, 315),
                                   SSDPYTORCH_ASPECT_RATIOS, SSDPYTORCH_STEPS)
SSDPYTORCH_COCO = ssdpytorch_priors((21, 45, 99, 153, 207, 261), (45, 99, 153, 207, 261, 315),
                                    SSDPYTORCH_ASPECT_RATIOS, SSDPYTORCH_STEPS)
SSDPYTORCH_MEAN_BGR = (104.0, 117.0, 123.0)
SSDPYTORCH_NMS = 0.45  # Detect(num_classes, 0, 200, 0.01, 0.45)


@dataclass(frozen=True)
class GluonModel:
    """A GluonCV ``vgg16_atrous`` SSD preset (``gluoncv/model_zoo/ssd/presets.py``): ``get_ssd``'s
    ``sizes`` (layer ``k`` spans ``sizes[k]``..``sizes[k+1]`` pixels), ``ratios`` and ``steps``."""

    data_shape: int
    sizes: tuple[float, ...]
    ratios: tuple[tuple[float, ...], ...]
    steps: tuple[float, ...]
    classes: tuple[str, ...] = tuple(VOC_NAMES)

    def anchors(self) -> PeerAnchors:
        """``SSDAnchorGenerator``: squares ``sizes[k]`` and ``sqrt(sizes[k] * sizes[k+1])``, then
        ``ratios[k][1:]`` with ``sizes[k]``, centres at ``(j + 0.5) * step``, no clip."""
        small = self.sizes[:-1]
        large = tuple(math.sqrt(a * b) for a, b in zip(self.sizes[:-1], self.sizes[1:]))
        return PeerAnchors(self.data_shape, small, large, tuple(r[1:] for r in self.ratios), self.steps)


_GLUON_RATIOS_6 = ((1, 2, 0.5),) + ((1, 2, 0.5, 3, 1.0 / 3),) * 3 + ((1, 2, 0.5),) * 2
_GLUON_RATIOS_7 = ((1, 2, 0.5),) + ((1, 2, 0.5, 3, 1.0 / 3),) * 4 + ((1, 2, 0.5),) * 2
GLUONCV_MODELS = {
    "ssd_300_vgg16_atrous_voc": GluonModel(300, (30, 60, 111, 162, 213, 264, 315), _GLUON_RATIOS_6,
                                           (8, 16, 32, 64, 100, 300)),
    "ssd_512_vgg16_atrous_voc": GluonModel(512, (51.2, 76.8, 153.6, 230.4, 307.2, 384.0, 460.8, 537.6),
                                           _GLUON_RATIOS_7, (8, 16, 32, 64, 128, 256, 512)),
}
GLUONCV_NMS, GLUONCV_TOPK = 0.45, 400  # SSD(nms_thresh=0.45, nms_topk=400)


def multibox_prior_shapes(sizes: Sequence[float], ratios: Sequence[float]) -> list[tuple[float, float]]:
    """``(w, h)`` of MultiBoxPrior's boxes at one location of a square input, in its order:
    every size with ``ratios[0]``, then ``sizes[0]`` with each later ratio."""
    first = math.sqrt(ratios[0])
    return ([(s * first, s / first) for s in sizes]
            + [(sizes[0] * math.sqrt(r), sizes[0] / math.sqrt(r)) for r in ratios[1:]])


def anchor_permutation(peer: Sequence[tuple[float, float]], ours: Sequence[tuple[float, float]],
                       where: str) -> list[int]:
    """``perm`` with ``ours[i] == peer[perm[i]]``: which of the peer's boxes each of ours is.

    A box of ours with no counterpart means MultiBoxPrior cannot express the peer's anchors:
    a one-line error naming ``where``.
    """
    if len(peer) != len(ours):
        raise UserError(f"{where}: the peer has {len(peer)} boxes per location, this graph {len(ours)}")
    perm: list[int] = []
    for w, h in ours:
        match = [j for j, (pw, ph) in enumerate(peer)
                 if j not in perm and abs(pw - w) <= ANCHOR_TOLERANCE and abs(ph - h) <= ANCHOR_TOLERANCE]
        if not match:
            raise UserError(f"{where}: no box of the peer is {w:.5f} x {h:.5f}; MultiBoxPrior cannot express "
                            "its anchors")
        perm.append(match[0])
    return perm


def permute_anchors(weight: np.ndarray, bias: np.ndarray, perm: Sequence[int], per_anchor: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Head weights ``[A * per_anchor, C, kh, kw]`` and bias ``[A * per_anchor]`` with output channel
    block ``i`` taken from the peer's block ``perm[i]`` (the heads are anchor-major per location)."""
    index = np.concatenate([np.arange(p * per_anchor, (p + 1) * per_anchor) for p in perm])
    return weight[index], bias[index]


def anchor_settings(peer: PeerAnchors, preset_ratios: Sequence[Sequence[float]]
                    ) -> tuple[dict, list[list[int]]]:
    """``(graph settings, per-layer permutation)``: the ``get_symbol`` keywords (for
    ``SSDConfig.graph_overrides``) that make MultiBoxPrior give the peer's boxes.

    Sizes are the peer's two squares; ratios keep the network preset's order when the peer has the
    same set (the graph then differs from the preset in its sizes only), else the peer's order. The
    permutation maps each of the graph's boxes to the peer's (for the head channels).
    """
    if peer.offset != 0.5:
        raise UserError(f"anchor centres at offset {peer.offset}: MultiBoxPrior centres them at 0.5")
    size = peer.image_size
    sizes, ratios, perms = [], [], []
    for k in range(len(peer.small)):
        layer_sizes = [peer.small[k] / size, peer.large[k] / size]
        layer_ratios = [1.0] + [float(r) for r in peer.ratios[k]]
        preset = [float(r) for r in preset_ratios[k]] if k < len(preset_ratios) else []
        if (preset and preset[0] == 1 and len(preset) == len(layer_ratios)
                and np.allclose(sorted(preset[1:]), sorted(layer_ratios[1:]), rtol=0, atol=1e-9)):
            layer_ratios = preset
        perms.append(anchor_permutation(peer.shapes(k), multibox_prior_shapes(layer_sizes, layer_ratios),
                                        f"anchors of feature map {k}"))
        sizes.append(layer_sizes)
        ratios.append(layer_ratios)
    graph = {"sizes": sizes, "ratios": ratios, "steps": [s / size for s in peer.steps], "anchor_clip": peer.clip,
             "clip_detections": False}  # neither peer cuts decoded boxes at the border before NMS
    return graph, perms


# --- reading the peers' files ---------------------------------------------------------------
class Weights:
    """A peer's tensors by name; :meth:`take` names a missing key in a one-line error."""

    def __init__(self, tensors: dict[str, np.ndarray], path: str, what: str):
        self.tensors, self.path, self.what = tensors, path, what
        self.used: set[str] = set()

    def take(self, key: str) -> np.ndarray:
        if key not in self.tensors:
            raise UserError(f"--input {self.path}: no parameter {key!r}; is it {self.what}?")
        self.used.add(key)
        return np.ascontiguousarray(self.tensors[key], dtype=np.float32)

    def get(self, key: str) -> np.ndarray | None:
        return self.take(key) if key in self.tensors else None

    def unused(self) -> list[str]:
        return sorted(set(self.tensors) - self.used)


def read_torch_state(path: str) -> dict[str, np.ndarray]:
    """The tensors of a PyTorch state dict file (``torch.save(model.state_dict())``), as numpy."""
    try:
        import torch
    except ImportError:
        raise UserError(f"--input {path}: reading a PyTorch file needs torch "
                        "(pip install -e '.[peers]', or pip install torch)") from None
    try:
        # weights_only: a state dict needs no code from the file, so none is run
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many kinds for a file that is not its own
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(f"--input {path}: not a PyTorch state dict ({reason})") from None
    for wrapper in ("state_dict", "model"):  # training checkpoints wrap the weights
        if isinstance(state, dict) and isinstance(state.get(wrapper), dict):
            state = state[wrapper]
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)} if isinstance(state, dict) else {}
    if not tensors:
        raise UserError(f"--input {path}: not a PyTorch state dict (no tensors by name)")
    if all(key.startswith("module.") for key in tensors):  # saved from nn.DataParallel
        tensors = {key[len("module."):]: value for key, value in tensors.items()}
    return {key: value.detach().cpu().float().numpy() for key, value in tensors.items()}


def read_mxnet_params(path: str) -> dict[str, np.ndarray]:
    """The arrays of an mxnet ``.params`` file (GluonCV's ``save_parameters``), as numpy."""
    import mxnet as mx

    from config.errors import short_mxnet_message

    try:
        loaded = mx.nd.load(path)
    except mx.base.MXNetError as err:
        raise UserError(f"--input {path}: not an mxnet .params file ({short_mxnet_message(err)})") from None
    if not isinstance(loaded, dict) or not loaded:
        raise UserError(f"--input {path}: not an mxnet .params file of named arrays")
    # exported models prefix their names with arg:/aux:; save_parameters does not
    return {key.split(":", 1)[1] if key.startswith(("arg:", "aux:")) else key: value.asnumpy()
            for key, value in loaded.items()}


# --- this toolkit's names -------------------------------------------------------------------
def base_layer_names() -> list[str]:
    """``conv1_1`` .. ``conv5_3``, ``fc6``, ``fc7``: the convolutions of ``symbol/vgg16_reduced.py``."""
    from symbol.vgg16_reduced import CONV_GROUPS

    return [f"conv{group}_{i}" for group, count, _ in CONV_GROUPS for i in range(1, count + 1)] + ["fc6", "fc7"]


def ssd_layer_names(data_shape: int) -> tuple[list[str], list[tuple[str, str]], dict]:
    """``(head layers, extra layers, preset)`` of the vgg16_reduced SSD at ``data_shape``: the feature
    maps the heads read (``relu4_3``, ``relu7``, ``multi_feat_{k}_conv_3x3_relu``), the ``(1x1, 3x3)``
    convolutions of each extra layer, and the preset config (``symbol_factory``'s)."""
    from symbol.symbol_factory import get_config

    preset = get_config(NETWORK, data_shape)
    heads, extras = [], []
    for k, layer in enumerate(preset["from_layers"]):
        if layer.strip():
            heads.append(layer.strip())
        else:
            heads.append(f"multi_feat_{k}_conv_3x3_relu")
            extras.append((f"multi_feat_{k}_conv_1x1_conv", f"multi_feat_{k}_conv_3x3_conv"))
    return heads, extras, preset


@dataclass
class Converted:
    """What the peer's file ``source`` becomes: parameters by this toolkit's name (each with the peer's
    key it came from, for error messages) and, for a detector, the run config's settings."""

    source: str = ""
    params: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)
    data_shape: int = 300
    num_classes: int = 0
    class_names: list[str] | None = None
    mean_pixels: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std_pixels: tuple[float, float, float] = (1.0, 1.0, 1.0)
    graph: dict = field(default_factory=dict)
    nms_thresh: float = 0.45
    nms_topk: int = 400
    notes: list[str] = field(default_factory=list)

    def put(self, name: str, array: np.ndarray, key: str) -> None:
        self.params[name] = (np.ascontiguousarray(array, dtype=np.float32), key)


def put_heads(out: Converted, weights: Weights, heads: Sequence[str], keys: Sequence[tuple[str, str]],
              perms: Sequence[Sequence[int]], num_classes: int) -> None:
    """Each feature map's ``(loc key, conf key)`` prefixes to ``{head}_loc_pred_conv`` / ``_cls_pred_conv``,
    output channels permuted anchor by anchor (``perms``)."""
    for head, (loc_key, conf_key), perm in zip(heads, keys, perms):
        for kind, key, per_anchor in (("loc", loc_key, 4), ("cls", conf_key, num_classes + 1)):
            weight, bias = weights.take(f"{key}.weight"), weights.take(f"{key}.bias")
            if weight.shape[0] != len(perm) * per_anchor:
                raise UserError(f"--input {weights.path}: {key}.weight has {weight.shape[0]} outputs; "
                                f"{len(perm)} boxes per location need {len(perm) * per_anchor}")
            weight, bias = permute_anchors(weight, bias, perm, per_anchor)
            out.put(f"{head}_{kind}_pred_conv_weight", weight, f"{key}.weight")
            out.put(f"{head}_{kind}_pred_conv_bias", bias, f"{key}.bias")


def class_count(weights: Weights, key: str, boxes: int) -> int:
    """Object classes (background excluded) of a class head ``key`` with ``boxes`` boxes per location."""
    outputs = weights.take(key).shape[0]
    if outputs % boxes or outputs // boxes < 2:
        raise UserError(f"--input {weights.path}: {key} has {outputs} outputs, not {boxes} boxes x classes")
    return outputs // boxes - 1


# --- the converters -------------------------------------------------------------------------
SSDPYTORCH_VGG = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28, 31, 33)  # conv1_1 .. conv5_3, conv6, conv7


def convert_ssdpytorch(weights: Weights, class_names: list[str] | None) -> Converted:
    """ssd.pytorch's SSD300 state dict (``vgg.*``, ``L2Norm.weight``, ``extras.*``, ``loc.*``, ``conf.*``)."""
    heads, extras, preset = ssd_layer_names(300)
    out = Converted(weights.path, data_shape=300, nms_thresh=SSDPYTORCH_NMS)
    for index, name in zip(SSDPYTORCH_VGG, base_layer_names()):
        for part in ("weight", "bias"):
            out.put(f"{name}_{part}", weights.take(f"vgg.{index}.{part}"), f"vgg.{index}.{part}")
    out.put("relu4_3_scale", weights.take("L2Norm.weight").reshape(1, -1, 1, 1), "L2Norm.weight")
    for e, names in enumerate(extras):  # extras.0 .. extras.7: (1x1, 3x3) per extra layer
        for offset, name in enumerate(names):
            for part in ("weight", "bias"):
                key = f"extras.{2 * e + offset}.{part}"
                out.put(f"{name}_{part}", weights.take(key), key)
    boxes = 2 + len(SSDPYTORCH_VOC.ratios[0])
    out.num_classes = class_count(weights, "conf.0.weight", boxes)
    peer = SSDPYTORCH_VOC if out.num_classes + 1 == 21 else SSDPYTORCH_COCO
    out.graph, perms = anchor_settings(peer, preset["ratios"])
    put_heads(out, weights, heads, [(f"loc.{k}", f"conf.{k}") for k in range(len(heads))], perms, out.num_classes)
    # the network sees RGB: pull_item subtracts the BGR mean from the cv2 image, then reverses the channels
    out.mean_pixels = tuple(reversed(SSDPYTORCH_MEAN_BGR))
    out.class_names = class_names or (list(VOC_NAMES) if out.num_classes == len(VOC_NAMES) else None)
    out.notes.append(f"priors of ssd.pytorch's {'voc' if peer is SSDPYTORCH_VOC else 'coco'} config, clip=True")
    return out


def gluoncv_base_keys() -> list[str]:
    """GluonCV ``VGGAtrousExtractor`` convolutions in ``base_layer_names`` order: ``stages.0``..``4``
    hold conv, ReLU, conv, ... (convs at 0, 2, 4); ``stages.5`` is the dilated fc6 and the 1x1 fc7."""
    from symbol.vgg16_reduced import CONV_GROUPS

    keys = [f"features.stages.{s}.{2 * i}" for s, (_, count, _) in enumerate(CONV_GROUPS) for i in range(count)]
    return keys + ["features.stages.5.0", "features.stages.5.2"]


def check_gluon_anchors(weights: Weights, peer: PeerAnchors, model: str) -> None:
    """The anchors saved in the file (``anchor_generators.k.anchors`` ``[1, 1, H, W, A*4]``, centre form,
    pixels) must be those of ``model``'s preset: otherwise --model names another network."""
    for k in range(len(peer.small)):
        saved = weights.get(f"anchor_generators.{k}.anchors")
        if saved is None:  # constants; a file without them still has the preset's
            continue
        height, width = saved.shape[2:4]
        boxes = np.array(peer.shapes(k)) * peer.image_size  # [A, 2]
        cy, cx = np.meshgrid((np.arange(height) + peer.offset) * peer.steps[k],
                             (np.arange(width) + peer.offset) * peer.steps[k], indexing="ij")
        expected = np.concatenate([np.broadcast_to(cx[..., None, None], (height, width, len(boxes), 1)),
                                   np.broadcast_to(cy[..., None, None], (height, width, len(boxes), 1)),
                                   np.broadcast_to(boxes, (height, width, len(boxes), 2))], axis=-1)
        if saved.size != expected.size or np.abs(saved.reshape(expected.shape) - expected).max() > 1e-3:
            raise UserError(f"--input {weights.path}: anchor_generators.{k}.anchors are not those of {model} "
                            "(sizes, ratios or steps differ); is --model right?")


def convert_gluoncv(weights: Weights, model: str) -> Converted:
    """GluonCV ``ssd_300_vgg16_atrous_voc`` / ``ssd_512_vgg16_atrous_voc`` from ``net.save_parameters``."""
    spec = GLUONCV_MODELS[model]
    if "features.stages.0.0.weight" not in weights.tensors and any(k.startswith("ssd") for k in weights.tensors):
        # Block.save_params (before mxnet 1.3) named parameters by prefix: ssd0_vgg16atrousextractor0_conv0_weight
        raise UserError(f"--input {weights.path}: parameters named by prefix (the old save_params); load it with "
                        "GluonCV (net.load_parameters) and write it again with net.save_parameters")
    size = spec.data_shape
    heads, extras, preset = ssd_layer_names(size)
    out = Converted(weights.path, data_shape=size, nms_thresh=GLUONCV_NMS, nms_topk=GLUONCV_TOPK)
    for key, name in zip(gluoncv_base_keys(), base_layer_names()):
        out.put(f"{name}_weight", weights.take(f"{key}.weight"), f"{key}.weight")
        out.put(f"{name}_bias", weights.take(f"{key}.bias"), f"{key}.bias")
    # GluonCV's network input is (x/255 - mean)/std times init_scale: with init_scale = 255*std that is
    # x - 255*mean, this toolkit's input for std 1; any other init_scale is folded into conv1_1
    init_scale = weights.get("features.init_scale")
    factor = (np.ones(3, np.float32) if init_scale is None
              else init_scale.reshape(-1) / (255 * np.array(IMAGENET_STD, np.float32)))
    weight, key = out.params["conv1_1_weight"]
    out.put("conv1_1_weight", weight * factor.reshape(1, 3, 1, 1), key)
    out.put("relu4_3_scale", weights.take("features.norm4.scale").reshape(1, -1, 1, 1), "features.norm4.scale")
    for e, (one, three) in enumerate(extras):
        for offset, name in ((0, one), (2, three)):
            key = f"features.extras.{e}.{offset}"
            weight = weights.take(f"{key}.weight")
            if weight.shape[2:] == (4, 4):
                weight = centre_taps_of_4x4(weight, size, three, weights.path, f"{key}.weight")
            out.put(f"{name}_weight", weight, f"{key}.weight")
            out.put(f"{name}_bias", weights.take(f"{key}.bias"), f"{key}.bias")
    peer = spec.anchors()
    check_gluon_anchors(weights, peer, model)
    out.graph, perms = anchor_settings(peer, preset["ratios"])
    out.num_classes = class_count(weights, "class_predictors.0.predictor.weight", len(peer.shapes(0)))
    if out.num_classes != len(spec.classes):
        raise UserError(f"--input {weights.path}: its class heads hold {out.num_classes} classes; {model} has "
                        f"{len(spec.classes)}; is --model right?")
    keys = [(f"box_predictors.{k}.predictor", f"class_predictors.{k}.predictor") for k in range(len(heads))]
    put_heads(out, weights, heads, keys, perms, out.num_classes)
    unused = [key for key in weights.unused() if not key.startswith("anchor_generators.")]
    if unused:
        raise UserError(f"--input {weights.path}: parameter {unused[0]!r} has no place in {model}; "
                        "is --model right?")
    out.mean_pixels = tuple(float(255 * m) for m in IMAGENET_MEAN)
    out.class_names = list(spec.classes)
    out.notes.append(f"{model}: ImageNet mean x 255 (RGB), std 1 (init_scale cancels GluonCV's std)")
    return out


def centre_taps_of_4x4(weight: np.ndarray, data_shape: int, layer: str, path: str, key: str) -> np.ndarray:
    """GluonCV SSD512's last extra conv, 4x4 stride 1 pad 1, as this graph's 3x3 stride 2 pad 1 conv.

    On a 2x2 map both give one output: the 4x4 kernel's taps [1:3, 1:3] and the 3x3 kernel's taps
    [1:3, 1:3] meet the four inputs, every other tap only meets zero padding. The map must be 2x2.
    """
    from symbol.symbol_factory import get_symbol

    internals = get_symbol(NETWORK, data_shape, num_classes=1).get_internals()
    feeding = layer.replace("_conv_3x3_conv", "_conv_1x1_relu")
    _, shapes, _ = internals[f"{feeding}_output"].infer_shape(data=(1, 3, data_shape, data_shape))
    if tuple(shapes[0][2:]) != (2, 2):
        raise UserError(f"--input {path}: {key} is 4x4, which maps onto a 3x3 convolution only on a 2x2 map; "
                        f"{layer} reads a {shapes[0][2]}x{shapes[0][3]} map at {data_shape}")
    taps = np.zeros(weight.shape[:2] + (3, 3), dtype=np.float32)
    taps[:, :, 1:3, 1:3] = weight[:, :, 1:3, 1:3]
    return taps


TORCHVISION_VGG16 = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)  # features.N: conv1_1 .. conv5_3


def subsample_fc6(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fc6 ``[4096, 512*7*7]`` -> the 3x3 dilated conv ``[1024, 512, 3, 3]``: every 4th output unit,
    spatial taps 0, 3, 6 of the 7x7 window (dilation 6 on pool5's 3x3/1 map keeps the field)."""
    kernel = weight.reshape(weight.shape[0], 512, 7, 7)
    return np.ascontiguousarray(kernel[::4, :, ::3, ::3]), bias[::4]


def subsample_fc7(weight: np.ndarray, bias: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fc7 ``[4096, 4096]`` -> the 1x1 conv ``[1024, 1024, 1, 1]``: every 4th unit of both dimensions."""
    kept = weight[::4, ::4]
    return np.ascontiguousarray(kept.reshape(kept.shape + (1, 1))), bias[::4]


def convert_torchvision_vgg16(weights: Weights) -> Converted:
    """torchvision's ImageNet ``vgg16`` state dict -> the ``vgg16_reduced`` base (``fc7`` and below)."""
    out = Converted(weights.path)
    names = base_layer_names()
    for index, name in zip(TORCHVISION_VGG16, names):
        for part in ("weight", "bias"):
            out.put(f"{name}_{part}", weights.take(f"features.{index}.{part}"), f"features.{index}.{part}")
    # torchvision feeds (x/255 - mean)/std; the SSD recipe feeds x - mean with std 1: fold 1/(255*std) in
    weight, key = out.params["conv1_1_weight"]
    out.put("conv1_1_weight", weight / (255 * np.array(IMAGENET_STD, np.float32)).reshape(1, 3, 1, 1), key)
    for fc, name, subsample, shape in (("classifier.0", "fc6", subsample_fc6, (4096, 512 * 7 * 7)),
                                       ("classifier.3", "fc7", subsample_fc7, (4096, 4096))):
        weight, bias = weights.take(f"{fc}.weight"), weights.take(f"{fc}.bias")
        if weight.shape != shape:
            raise UserError(f"--input {weights.path}: {fc}.weight has shape {weight.shape}; VGG16's is {shape}")
        weight, bias = subsample(weight, bias)
        out.put(f"{name}_weight", weight, f"{fc}.weight")
        out.put(f"{name}_bias", bias, f"{fc}.bias")
    weights.take("classifier.6.weight")  # the ImageNet classifier, which SSD does not use
    weights.take("classifier.6.bias")
    out.mean_pixels = tuple(float(255 * m) for m in IMAGENET_MEAN)
    return out


# --- writing --------------------------------------------------------------------------------
def check_complete(converted: Converted, expected: dict[str, tuple], what: str) -> None:
    """Every parameter of the graph is converted, with its shape (a mismatch names the peer's key)."""
    for name, want in expected.items():
        if name not in converted.params:
            raise RuntimeError(f"convert_weights: nothing maps to {name} of {what}")
        array, key = converted.params[name]
        if tuple(array.shape) != tuple(want):
            raise UserError(f"--input {converted.source}: {key} has shape {tuple(array.shape)}; {what} needs "
                            f"{tuple(want)} for {name}")
    extra = sorted(set(converted.params) - set(expected))
    if extra:
        raise RuntimeError(f"convert_weights: {extra[0]} is not a parameter of {what}")


def write_detector(converted: Converted, out: str, epoch: int) -> list[str]:
    """``out-symbol.json`` (the training graph, as train.py saves), ``out-EPOCH.params``, ``out-ssd.json``."""
    import mxnet as mx

    from config.run_config import save_run_config
    from config.train_config import SSDConfig
    from evaluate.checkpoint import expected_shapes, params_path, save_params
    from symbol.symbol_factory import get_symbol, get_symbol_train

    size = converted.data_shape
    graph = dict(num_classes=converted.num_classes, nms_thresh=converted.nms_thresh, force_suppress=False,
                 nms_topk=converted.nms_topk, **converted.graph)
    test = get_symbol(NETWORK, size, **graph)
    check_complete(converted, expected_shapes(test, {"data": (1, 3, size, size)}), f"{NETWORK} SSD{size}")
    args = {name: mx.nd.array(array) for name, (array, _) in converted.params.items()}
    save_params(out, epoch, get_symbol_train(NETWORK, size, **graph), args, {})
    run = SSDConfig(network=NETWORK, data_shape=size, num_classes=converted.num_classes,
                    class_names=converted.class_names, prefix=out, pretrained="",
                    mean_pixels=converted.mean_pixels, std_pixels=converted.std_pixels,
                    nms_thresh=converted.nms_thresh, force_suppress=False, nms_topk=converted.nms_topk,
                    graph_overrides=converted.graph)
    config_path = save_run_config(run)
    return [f"{out}-symbol.json", params_path(out, epoch), config_path]


def write_base(converted: Converted, out: str, epoch: int) -> list[str]:
    """``out-symbol.json`` (the ``vgg16_reduced`` trunk) and ``out-EPOCH.params``, for ``--pretrained``."""
    import mxnet as mx

    from evaluate.checkpoint import expected_shapes, params_path, save_params
    from symbol.vgg16_reduced import get_symbol

    trunk = get_symbol()
    check_complete(converted, expected_shapes(trunk, {"data": (1, 3, 300, 300)}), f"the {NETWORK} base")
    save_params(out, epoch, trunk, {name: mx.nd.array(array) for name, (array, _) in converted.params.items()}, {})
    return [f"{out}-symbol.json", params_path(out, epoch)]


def convert(source: str, input_path: str, out: str, model: str | None = None, epoch: int | None = None,
            class_names: list[str] | None = None) -> dict:
    """Convert ``input_path`` from toolkit ``source`` into the checkpoint ``out``.

    Returns ``{'files', 'epoch', 'converted'}`` (the written paths, the checkpoint's epoch and the
    :class:`Converted` record). Bad input is a one-line :class:`UserError`.
    """
    if source not in SOURCES:
        raise UserError(f"--from {source!r}: unknown toolkit; choose one of {', '.join(SOURCES)}")
    if model is not None and source != "gluoncv":
        raise UserError(f"--model names a GluonCV network; --from {source} takes none")
    if source == "gluoncv" and model not in GLUONCV_MODELS:
        given = f"--model {model!r}: not a network this converter maps" if model else "--from gluoncv needs --model"
        raise UserError(f"{given}; choose one of {', '.join(GLUONCV_MODELS)} (GluonCV's other SSDs have "
                        f"ResNet or MobileNet bases, which the {NETWORK} graph cannot hold)")
    if class_names is not None and source != "ssdpytorch":
        raise UserError(f"--class-names: --from {source} has its own classes")
    if not out or out.endswith(("/", os.sep)):
        raise UserError(f"--out {out!r}: give a checkpoint prefix such as model/ssd_vgg16_reduced_300")
    if not os.path.isfile(input_path):
        raise UserError(f"--input {input_path}: file not found")
    epoch = (BASE_EPOCH if source == "torchvision-vgg16" else DETECTOR_EPOCH) if epoch is None else epoch
    if not 0 <= epoch <= 9999:
        raise UserError(f"--epoch {epoch}: must be 0 to 9999")
    if source == "ssdpytorch":
        weights = Weights(read_torch_state(input_path), input_path, "ssd.pytorch's SSD300 state dict")
        converted = convert_ssdpytorch(weights, class_names)
        if class_names is not None and len(class_names) != converted.num_classes:
            raise UserError(f"--class-names lists {len(class_names)} names; the model has "
                            f"{converted.num_classes} classes")
    elif source == "gluoncv":
        weights = Weights(read_mxnet_params(input_path), input_path, f"GluonCV's {model} (save_parameters)")
        converted = convert_gluoncv(weights, model)
    else:
        weights = Weights(read_torch_state(input_path), input_path, "torchvision's vgg16 (not vgg16_bn)")
        converted = convert_torchvision_vgg16(weights)
    ignored = weights.unused()
    if ignored and source == "ssdpytorch":
        converted.notes.append(f"ignored {len(ignored)} tensors that SSD300 does not have: {', '.join(ignored[:3])}")
    write = write_base if source == "torchvision-vgg16" else write_detector
    return {"files": write(converted, out, epoch), "epoch": epoch, "converted": converted}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Convert another toolkit's SSD or VGG16 weights into a checkpoint",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--from", dest="source", required=True, help=f"the file's toolkit: {' | '.join(SOURCES)}")
    p.add_argument("--input", required=True, help="the peer's file: a .pth state dict (ssdpytorch, "
                   "torchvision-vgg16) or a GluonCV .params file (net.save_parameters)")
    p.add_argument("--out", required=True, help="checkpoint prefix to write (PREFIX-symbol.json, "
                   "PREFIX-NNNN.params and, for detectors, PREFIX-ssd.json)")
    p.add_argument("--model", default=None, help=f"the GluonCV network: {', '.join(GLUONCV_MODELS)}")
    p.add_argument("--epoch", type=int, default=None, help=f"epoch of the checkpoint (default {DETECTOR_EPOCH} "
                   f"for detectors, {BASE_EPOCH} for the VGG16 base)")
    p.add_argument("--class-names", default=None,
                   help="ssdpytorch: the classes (comma list or file) of a model not trained on VOC's 20")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from config.cli import parse_class_names

    names = parse_class_names(args.class_names) if args.class_names is not None else None
    if args.class_names is not None and not names:
        raise UserError("--class-names: no class names given")
    result = convert(args.source, args.input, args.out, args.model, args.epoch, names)
    converted, epoch = result["converted"], result["epoch"]
    for path in result["files"]:
        print(f"Wrote {path}")
    for note in converted.notes:
        print(f"Note: {note}")
    if args.source == "torchvision-vgg16":
        print(f"Train on it: python train.py --network {NETWORK} --pretrained {args.out} --epoch {epoch} "
              "--mean-r 123.675 --mean-g 116.28 --mean-b 103.53 ... (ImageNet's mean; the default "
              "123/117/104 differs by under 1)")
    else:
        print(f"{converted.num_classes} classes, {NETWORK} at {converted.data_shape}, mean "
              f"{tuple(round(m, 3) for m in converted.mean_pixels)}, std {converted.std_pixels}. "
              f"Evaluate: python evaluate.py --prefix {args.out} --epoch {epoch} --rec-path data/val.rec")


if __name__ == "__main__":
    run_cli(main)
