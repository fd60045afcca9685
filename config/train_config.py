"""What a training run needs, in one object per family: :class:`SSDConfig` and :class:`RCNNConfig`.

Both share :class:`TrainConfig`, the loop settings (data, epochs, learning-rate
schedule, checkpoints, validation). ``train.py`` builds one from its flags;
``train/train_net.py`` and ``train/train_rcnn.py`` read nothing else. The
config is saved beside the checkpoints (``<prefix>-ssd.json`` /
``<prefix>-rcnn.json``, see :mod:`config.run_config`) so that evaluate.py,
demo.py and tools/deploy.py rebuild the run's graph and preprocessing.

Defaults are the original example/ssd and example/rcnn values except where
docs/upstream.md says otherwise, written here once: train.py derives its flags'
defaults from these classes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

# SSD's classification losses (--cls-loss), and its box losses (--loc-loss) with the name the training
# metric gives each in the log and metrics.csv
CLS_LOSSES = ("softmax", "focal")
LOC_LOSS_METRIC_NAMES = {"smooth_l1": "SmoothL1", "giou": "GIoU"}

@dataclass
class TrainConfig:
    """Loop settings shared by SSD and Faster R-CNN.

    ``prefix`` is the full checkpoint prefix (train.py appends ``_<network>[_<shape>]``).
    ``resume`` is an epoch, -1, or 'auto'. ``pretrained``/``pretrained_epoch``
    name the starting weights ('' to start from scratch). ``lr_steps`` is a
    comma list of epochs at which the rate is multiplied by ``lr_factor``;
    ``lr_schedule`` 'cosine' replaces the steps by a cosine decay from ``lr`` to
    ``lr_floor`` over the epochs after the warm-up (:class:`train.schedule.EpochLRScheduler`).
    ``ema`` > 0 validates and saves an exponential moving average of the weights with that
    decay (:mod:`train.ema`). ``dtype`` 'bfloat16' trains with bfloat16 convolutions and float32
    weights (:mod:`symbol.precision`; AVX-512 BF16 CPUs). ``keep`` is how many of the newest epoch
    checkpoints stay on disk (0 keeps all). ``val_interval`` N validates after every Nth epoch and
    after the last (:meth:`validates_after`).
    With a ``dist_*`` ``kv_store`` (README "Distributed training"): ``dist_timeout`` is the
    seconds a worker may go without finishing a batch before it stops the job (0: never),
    and ``lr_scale_workers`` multiplies ``lr`` by the number of workers (linear scaling).
    """

    network: str = "vgg16_reduced"
    train_path: str = os.path.join(os.getcwd(), "data", "train.rec")
    val_path: str = ""
    num_classes: int = 20
    class_names: list[str] | None = None
    prefix: str = os.path.join(os.getcwd(), "model", "ssd")
    begin_epoch: int = 0
    end_epoch: int = 240
    resume: str = "-1"
    pretrained: str = ""
    pretrained_epoch: int = 1
    frequent: int = 20
    lr: float = 0.002
    lr_steps: str = "80, 160"
    lr_factor: float = 0.1
    momentum: float = 0.9
    wd: float = 0.0005
    warmup_epochs: float = 0.0
    lr_schedule: str = "step"
    lr_floor: float = 0.0
    ema: float = 0.0
    dtype: str = "float32"
    kv_store: str = "local"
    seed: int | None = None
    log_file: str | None = None
    voc07_metric: bool = True
    ovp_thresh: float = 0.5
    use_difficult: bool = False
    keep: int = 5
    val_interval: int = 1
    dist_timeout: float = 300.0
    lr_scale_workers: bool = False

    def validates_after(self, epoch: int) -> bool:
        """Whether the run validates after 0-based ``epoch``: every ``val_interval``-th and the last."""
        return (epoch + 1) % self.val_interval == 0 or epoch + 1 >= self.end_epoch


@dataclass
class SSDConfig(TrainConfig):
    """An SSD run: the loop settings plus example/ssd's graph, data and test settings.

    ``batch_size`` is the whole batch, split over the devices. ``num_example``
    -1 counts the training images. ``finetune`` > 0 loads ``<prefix>-<finetune>``
    as example/ssd does (see :func:`train.train_net.finetune_params`).
    ``mean_pixels``/``std_pixels`` are RGB. ``nms_*``/``force_suppress`` go
    into the ``MultiBoxDetection`` node; ``label_width`` is the padded label
    width of the records (2 + 6 x objects). ``graph_overrides`` (None: the
    network's preset) holds ``get_symbol`` keywords that replace the preset's
    (``sizes``, ``ratios``, ``steps``, ``anchor_clip``, ``clip_detections``):
    tools/convert_weights.py writes them so that a converted model keeps its own
    toolkit's anchors and box decoding. ``label_smoothing`` > 0 smooths the softmax loss's
    targets (:func:`symbol.losses.softmax_cross_entropy_output`); ``loc_loss`` ``'giou'`` replaces the
    smooth L1 of the box offsets (:func:`symbol.losses.giou_loss_output`).
    """

    batch_size: int = 32
    data_shape: int = 300
    mean_pixels: tuple[float, float, float] = (123.0, 117.0, 104.0)
    std_pixels: tuple[float, float, float] = (1.0, 1.0, 1.0)
    label_width: int = 350
    train_list: str = ""
    val_list: str = ""
    finetune: int = -1
    freeze_pattern: str = "^(conv1_|conv2_).*"
    num_example: int = -1
    nms_thresh: float = 0.45
    force_suppress: bool = False
    nms_topk: int = 400
    iter_monitor: int = 0
    monitor_pattern: str = ".*"
    cls_loss: str = "softmax"
    label_smoothing: float = 0.0
    loc_loss: str = "smooth_l1"
    augment: str = "ssd"
    graph_overrides: dict[str, Any] | None = None
    # True for a saved inference graph (tools/quantize.py's INT8 model): evaluate.py and demo.py load
    # <prefix>-symbol.json as it is instead of rebuilding the FP32 graph from ``network``
    prebuilt_graph: bool = False


@dataclass
class RCNNConfig(TrainConfig):
    """A Faster R-CNN run: the loop settings plus every flag of example/rcnn's ``train.py`` / ``test.py``.

    Test-time values differ from training ones for the RPN top-k (``test_*``
    fields: 6000/300 instead of 12000/2000). ``max_per_image`` caps the
    detections kept per image (0 keeps all). The batch is
    ``rcnn_batch_size`` images on each device.
    """

    network: str = "faster_rcnn_vgg16"
    prefix: str = os.path.join(os.getcwd(), "model", "rcnn")
    end_epoch: int = 10
    frequent: int = 100
    lr: float = 0.001
    lr_steps: str = "7"
    # image
    img_short_side: int = 600
    img_long_side: int = 1000
    img_pixel_means: tuple[float, float, float] = (0.0, 0.0, 0.0)
    img_pixel_stds: tuple[float, float, float] = (1.0, 1.0, 1.0)
    net_fixed_params: tuple[str, ...] = ("conv0", "stage1", "gamma", "beta")
    # RPN
    rpn_feat_stride: int = 16
    rpn_anchor_scales: tuple[float, ...] = (8, 16, 32)
    rpn_anchor_ratios: tuple[float, ...] = (0.5, 1, 2)
    rpn_pre_nms_topk: int = 12000
    rpn_post_nms_topk: int = 2000
    rpn_nms_thresh: float = 0.7
    rpn_min_size: int = 16
    rpn_batch_rois: int = 256
    rpn_allowed_border: int = 0
    rpn_fg_fraction: float = 0.5
    rpn_fg_overlap: float = 0.7
    rpn_bg_overlap: float = 0.3
    # R-CNN head
    rcnn_feat_stride: int = 16
    rcnn_pooled_size: tuple[int, int] = (14, 14)
    rcnn_batch_size: int = 1
    rcnn_batch_rois: int = 128
    rcnn_fg_fraction: float = 0.25
    rcnn_fg_overlap: float = 0.5
    rcnn_bbox_stds: tuple[float, float, float, float] = (0.1, 0.1, 0.2, 0.2)
    # test.py / demo.py
    test_rpn_pre_nms_topk: int = 6000
    test_rpn_post_nms_topk: int = 300
    rcnn_nms_thresh: float = 0.3
    rcnn_conf_thresh: float = 1e-3
    max_per_image: int = 100
