"""amdegroot/ssd.pytorch's SSD300 in PyTorch, rewritten here from its published architecture (it has no
package): this is not that project's own file.

What a converted ``ssd300_mAP_77.43_v2.pth`` must reproduce, with ssd.pytorch's own names so that
its state dict has the same keys (``vgg.N.*``, ``L2Norm.weight``, ``extras.N.*``, ``loc.N.*``,
``conf.N.*``):

* the network: ``vgg`` (VGG16 up to fc7 as dilated convolutions, ``'C'`` = ceil-mode pool3), the
  ``L2Norm`` of conv4_3 (scale 20), the ``extras`` (ReLU after each), the 3x3 ``loc``/``conf``
  heads whose outputs are permuted to channels-last and flattened: per location, anchor-major;
* :class:`PriorBox` with the VOC config (``clip=True``: ``clamp_(0, 1)`` on the centre-form rows);
* :class:`Detect`: per class from 1 (0 is background), scores above 0.01, greedy NMS at 0.45 over
  the 200 best, on unclipped decoded boxes;
* the input: :func:`network_input` is ``VOCDetection.pull_item`` with ``BaseTransform``: a cv2 BGR
  image resized to 300x300, the BGR mean (104, 117, 123) subtracted, then turned to RGB.

Detect is a plain module here (ssd.pytorch's legacy ``autograd.Function`` fails on current PyTorch,
issues #444/#508); NMS is pure torch (torchvision's compiled ops need not load).
"""
from __future__ import annotations

from itertools import product
from math import sqrt

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# data/config.py: voc
VOC = {
    "num_classes": 21,
    "feature_maps": [38, 19, 10, 5, 3, 1],
    "min_dim": 300,
    "steps": [8, 16, 32, 64, 100, 300],
    "min_sizes": [30, 60, 111, 162, 213, 264],
    "max_sizes": [60, 111, 162, 213, 264, 315],
    "aspect_ratios": [[2], [2, 3], [2, 3], [2, 3], [2], [2]],
    "variance": [0.1, 0.2],
    "clip": True,
}
MEANS_BGR = (104, 117, 123)  # data/__init__.py MEANS, subtracted in BGR order (cv2 images)

BASE = [64, 64, "M", 128, 128, "M", 256, 256, 256, "C", 512, 512, 512, "M", 512, 512, 512]
# extras.0 .. extras.7 as ssd.pytorch prints them: (in, out, kernel, stride, pad)
EXTRAS = [(1024, 256, 1, 1, 0), (256, 512, 3, 2, 1), (512, 128, 1, 1, 0), (128, 256, 3, 2, 1),
          (256, 128, 1, 1, 0), (128, 256, 3, 1, 0), (256, 128, 1, 1, 0), (128, 256, 3, 1, 0)]
MBOX = [4, 6, 6, 6, 4, 4]  # priors per location on each source


def vgg(cfg: list, in_channels: int) -> list[nn.Module]:
    """``vgg.0`` .. ``vgg.34``: conv1_1 .. conv5_3 with pools, pool5 3x3/1, conv6 (dilation 6), conv7."""
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif v == "C":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        else:
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = v
    layers += [nn.MaxPool2d(kernel_size=3, stride=1, padding=1),
               nn.Conv2d(512, 1024, kernel_size=3, padding=6, dilation=6), nn.ReLU(inplace=True),
               nn.Conv2d(1024, 1024, kernel_size=1), nn.ReLU(inplace=True)]
    return layers


def add_extras(cfg: list[tuple[int, int, int, int, int]]) -> list[nn.Module]:
    """``extras.0`` .. ``extras.7``: a 1x1 conv then a 3x3 conv per extra scale (ReLU applied in forward)."""
    return [nn.Conv2d(cin, cout, kernel_size=k, stride=s, padding=p) for cin, cout, k, s, p in cfg]


def multibox(vgg_layers: list[nn.Module], extra_layers: list[nn.Module], mbox: list[int],
             num_classes: int) -> tuple[list[nn.Module], list[nn.Module]]:
    """3x3 ``loc``/``conf`` heads on conv4_3 (vgg.21), conv7 (vgg.33) and every second extra layer."""
    loc, conf = [], []
    sources = [vgg_layers[21].out_channels, vgg_layers[-2].out_channels]
    sources += [layer.out_channels for layer in extra_layers[1::2]]
    for channels, boxes in zip(sources, mbox):
        loc.append(nn.Conv2d(channels, boxes * 4, kernel_size=3, padding=1))
        conf.append(nn.Conv2d(channels, boxes * num_classes, kernel_size=3, padding=1))
    return loc, conf


class L2Norm(nn.Module):
    """Per-position L2 normalisation over channels times a learned per-channel scale (init ``scale``)."""

    def __init__(self, n_channels: int, scale: float):
        super().__init__()
        self.eps = 1e-10
        self.weight = nn.Parameter(torch.full((n_channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = x.pow(2).sum(dim=1, keepdim=True).sqrt() + self.eps
        return self.weight.view(1, -1, 1, 1) * (x / norm)


class PriorBox:
    """The 8,732 default boxes ``[N, 4]`` as ``(cx, cy, w, h)``, normalised.

    Per location: the min-size square, the sqrt(min * max) square, then for each aspect ratio
    ``ar`` the boxes ``(s*sqrt(ar), s/sqrt(ar))`` and ``(s/sqrt(ar), s*sqrt(ar))``. Centres are
    ``(j + 0.5) / f_k`` with ``f_k = min_dim / step``. With ``clip`` every number of the
    centre form is clamped to [0, 1].
    """

    def __init__(self, cfg: dict):
        self.cfg = cfg

    def forward(self) -> torch.Tensor:
        cfg, rows = self.cfg, []
        size = cfg["min_dim"]
        for k, f in enumerate(cfg["feature_maps"]):
            f_k = size / cfg["steps"][k]
            for i, j in product(range(f), repeat=2):
                cx, cy = (j + 0.5) / f_k, (i + 0.5) / f_k
                s_k = cfg["min_sizes"][k] / size
                rows.append([cx, cy, s_k, s_k])
                s_k_prime = sqrt(s_k * (cfg["max_sizes"][k] / size))
                rows.append([cx, cy, s_k_prime, s_k_prime])
                for ar in cfg["aspect_ratios"][k]:
                    rows.append([cx, cy, s_k * sqrt(ar), s_k / sqrt(ar)])
                    rows.append([cx, cy, s_k / sqrt(ar), s_k * sqrt(ar)])
        output = torch.tensor(rows, dtype=torch.float32)
        if cfg["clip"]:
            output.clamp_(max=1, min=0)
        return output


def decode(loc: torch.Tensor, priors: torch.Tensor, variances: list[float]) -> torch.Tensor:
    """Offsets ``[N, 4]`` (dx, dy, dw, dh) on centre-form priors ``[N, 4]`` -> corner boxes ``[N, 4]``."""
    boxes = torch.cat((priors[:, :2] + loc[:, :2] * variances[0] * priors[:, 2:],
                       priors[:, 2:] * torch.exp(loc[:, 2:] * variances[1])), 1)
    boxes[:, :2] -= boxes[:, 2:] / 2
    boxes[:, 2:] += boxes[:, :2]
    return boxes


def nms(boxes: torch.Tensor, scores: torch.Tensor, overlap: float = 0.5, top_k: int = 200
        ) -> tuple[torch.Tensor, int]:
    """Greedy NMS over the ``top_k`` best of ``scores`` ``[M]``: ``(kept indices [M], count)``.

    A box is dropped when its IoU with a kept, higher-scored box exceeds ``overlap``.
    """
    keep = torch.zeros(scores.size(0), dtype=torch.long)
    if boxes.numel() == 0:
        return keep, 0
    x1, y1, x2, y2 = boxes.unbind(1)
    area = (x2 - x1) * (y2 - y1)
    _, idx = scores.sort(0)  # ascending: the best is last
    idx = idx[-top_k:]
    count = 0
    while idx.numel() > 0:
        i = idx[-1]
        keep[count] = i
        count += 1
        if idx.size(0) == 1:
            break
        idx = idx[:-1]
        w = (torch.minimum(x2[idx], x2[i]) - torch.maximum(x1[idx], x1[i])).clamp(min=0.0)
        h = (torch.minimum(y2[idx], y2[i]) - torch.maximum(y1[idx], y1[i])).clamp(min=0.0)
        inter = w * h
        iou = inter / (area[idx] - inter + area[i])
        idx = idx[iou.le(overlap)]
    return keep, count


class Detect:
    """Test-time output ``[B, num_classes, top_k, 5]``: rows ``(score, x1, y1, x2, y2)`` per class.

    Class 0 (background) stays empty. For every other class, the priors scoring above
    ``conf_thresh`` go through :func:`nms`; unused rows are zero.
    """

    def __init__(self, num_classes: int, bkg_label: int, top_k: int, conf_thresh: float, nms_thresh: float):
        self.num_classes, self.background_label, self.top_k = num_classes, bkg_label, top_k
        self.conf_thresh, self.nms_thresh = conf_thresh, nms_thresh
        self.variance = VOC["variance"]

    def __call__(self, loc_data: torch.Tensor, conf_data: torch.Tensor, prior_data: torch.Tensor) -> torch.Tensor:
        num, num_priors = loc_data.size(0), prior_data.size(0)
        output = torch.zeros(num, self.num_classes, self.top_k, 5)
        conf_preds = conf_data.view(num, num_priors, self.num_classes).transpose(2, 1)
        for i in range(num):
            decoded = decode(loc_data[i], prior_data, self.variance)
            conf_scores = conf_preds[i].clone()
            for cl in range(1, self.num_classes):
                c_mask = conf_scores[cl].gt(self.conf_thresh)
                scores = conf_scores[cl][c_mask]
                if scores.numel() == 0:
                    continue
                boxes = decoded[c_mask]
                ids, count = nms(boxes, scores, self.nms_thresh, self.top_k)
                output[i, cl, :count] = torch.cat((scores[ids[:count]].unsqueeze(1), boxes[ids[:count]]), 1)
        return output


class SSD(nn.Module):
    """ssd.pytorch's ``SSD``: ``phase`` 'train' returns ``(loc [B, N, 4], conf [B, N, C], priors [N, 4])``,
    'test' returns :class:`Detect`'s ``[B, C, 200, 5]`` on softmax scores."""

    def __init__(self, phase: str, size: int, base: list, extras: list, head: tuple, num_classes: int):
        super().__init__()
        self.phase, self.size, self.num_classes = phase, size, num_classes
        self.cfg = VOC
        self.priors = PriorBox(self.cfg).forward()
        self.vgg = nn.ModuleList(base)
        self.L2Norm = L2Norm(512, 20)
        self.extras = nn.ModuleList(extras)
        self.loc = nn.ModuleList(head[0])
        self.conf = nn.ModuleList(head[1])
        self.softmax = nn.Softmax(dim=-1)
        self.detect = Detect(num_classes, 0, 200, 0.01, 0.45)

    def sources(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The six feature maps the heads read: L2Norm(conv4_3), conv7, and every second extra layer."""
        sources = []
        for k in range(23):  # up to the ReLU of conv4_3
            x = self.vgg[k](x)
        sources.append(self.L2Norm(x))
        for k in range(23, len(self.vgg)):  # up to fc7 (conv7)
            x = self.vgg[k](x)
        sources.append(x)
        for k, v in enumerate(self.extras):
            x = F.relu(v(x), inplace=True)
            if k % 2 == 1:
                sources.append(x)
        return sources

    def heads(self, sources: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc [B, N*4], conf [B, N*C])``: each head's output channels-last, flattened, concatenated."""
        loc, conf = [], []
        for source, loc_head, conf_head in zip(sources, self.loc, self.conf):
            loc.append(loc_head(source).permute(0, 2, 3, 1).contiguous())
            conf.append(conf_head(source).permute(0, 2, 3, 1).contiguous())
        return (torch.cat([o.view(o.size(0), -1) for o in loc], 1),
                torch.cat([o.view(o.size(0), -1) for o in conf], 1))

    def forward(self, x: torch.Tensor):
        loc, conf = self.heads(self.sources(x))
        if self.phase == "test":
            return self.detect(loc.view(loc.size(0), -1, 4),
                               self.softmax(conf.view(conf.size(0), -1, self.num_classes)), self.priors)
        return loc.view(loc.size(0), -1, 4), conf.view(conf.size(0), -1, self.num_classes), self.priors


def build_ssd(phase: str, size: int = 300, num_classes: int = 21) -> SSD:
    if size != 300:
        raise ValueError("ssd.pytorch supports SSD300 only")
    base, extras = vgg(BASE, 3), add_extras(EXTRAS)
    head = multibox(base, extras, MBOX, num_classes)
    return SSD(phase, size, base, extras, head, num_classes)


def base_transform(image: np.ndarray, size: int, mean: tuple) -> np.ndarray:
    """``BaseTransform``: cv2 resize to ``size`` x ``size`` (bilinear), float32, minus ``mean`` (image order)."""
    x = cv2.resize(image, (size, size)).astype(np.float32)
    x -= np.array(mean, dtype=np.float32)
    return x.astype(np.float32)


def network_input(images_bgr: list[np.ndarray], size: int = 300) -> torch.Tensor:
    """What eval.py feeds the network, ``[B, 3, size, size]``: ``VOCDetection.pull_item`` reads with cv2
    (BGR), applies ``BaseTransform(size, MEANS)`` and then ``img[:, :, (2, 1, 0)]`` ("to rgb")."""
    batch = [base_transform(image, size, MEANS_BGR)[:, :, (2, 1, 0)] for image in images_bgr]
    return torch.from_numpy(np.ascontiguousarray(np.stack(batch))).permute(0, 3, 1, 2).contiguous()


def random_init(model: SSD, seed: int) -> None:
    """A fixed random initialisation that keeps activations in range through the 20-odd layers:
    He-normal convolutions, small random biases, L2Norm scales spread over [10, 30]."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.in_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * sqrt(2.0 / fan_in))
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator) * 0.1)
        model.L2Norm.weight.copy_(10 + 20 * torch.rand(model.L2Norm.weight.shape, generator=generator))


def sharpen_heads(model: SSD, sources: list[torch.Tensor], loc_std: float = 0.5, conf_std: float = 2.0,
                  background: float = 8.0) -> None:
    """Rescale the heads on ``model.sources(x)`` so random weights give detections worth comparing:
    offsets of about ``loc_std``, class logits of about ``conf_std`` and a background logit raised by
    ``background``, so that most priors are background and a few have one clearly winning class."""
    with torch.no_grad():
        for source, loc, conf in zip(sources, model.loc, model.conf):
            loc.weight.mul_(loc_std / loc(source).std())
            loc.bias.mul_(loc_std / 0.1)
            conf.weight.mul_(conf_std / conf(source).std())
            conf.bias.view(-1, model.num_classes)[:, 0] += background
