"""Augmentation settings for ``DetRecordIter``: ``cfg.train`` and ``cfg.valid``.

Both are plain dicts of ``mx.io.ImageDetRecordIter`` keyword arguments, built
from the same namedtuples as the original example/ssd ``config/config.py``.
"""
import os
from collections import namedtuple

from config.utils import DotDict, config_as_dict

RandCropper = namedtuple(
    "RandCropper",
    "min_crop_scales, max_crop_scales, min_crop_aspect_ratios, max_crop_aspect_ratios, "
    "min_crop_overlaps, max_crop_overlaps, min_crop_sample_coverages, max_crop_sample_coverages, "
    "min_crop_object_coverages, max_crop_object_coverages, max_crop_trials",
)
RandCropper.__new__.__defaults__ = (0.0, 1.0, 0.5, 2.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 25)

RandPadder = namedtuple("RandPadder", "rand_pad_prob, max_pad_scale, fill_value")
RandPadder.__new__.__defaults__ = (0.0, 1.0, 127)

ColorJitter = namedtuple(
    "ColorJitter",
    "random_hue_prob, max_random_hue, random_saturation_prob, max_random_saturation, "
    "random_illumination_prob, max_random_illumination, random_contrast_prob, max_random_contrast",
)
ColorJitter.__new__.__defaults__ = (0.0, 18, 0.0, 32, 0.0, 32, 0.0, 0.5)

# Decode threads: the original asked for 48/32, which only oversubscribes small
# machines; the iterator never needs more threads than there are cores.
_THREADS = max(1, min(8, os.cpu_count() or 1))

cfg = DotDict()
cfg.ROOT_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# training: the five SSD samplers (minimum IoU .1 .. .9), pad up to 4x, jitter
train_cfg = DotDict(
    rand_crop_samplers=[
        RandCropper(min_crop_scales=0.3, min_crop_overlaps=overlap)
        for overlap in (0.1, 0.3, 0.5, 0.7, 0.9)
    ],
    crop_emit_mode="center",
    rand_pad=RandPadder(rand_pad_prob=0.5, max_pad_scale=4.0),
    color_jitter=ColorJitter(
        random_hue_prob=0.5, random_saturation_prob=0.5,
        random_illumination_prob=0.5, random_contrast_prob=0.5,
    ),
    inter_method=10,  # random interpolation
    rand_mirror_prob=0.5,
    shuffle=True,
    seed=233,
    preprocess_threads=_THREADS,
)
cfg.train = config_as_dict(train_cfg)

# validation: no augmentation at all
valid_cfg = DotDict(
    rand_crop_samplers=[],
    rand_pad=RandPadder(),
    color_jitter=ColorJitter(),
    rand_mirror_prob=0,
    shuffle=False,
    seed=0,
    preprocess_threads=_THREADS,
)
cfg.valid = config_as_dict(valid_cfg)

# lighter presets for `train.py --augment`: small models trained for few epochs
# (the quick start's toy SSD) converge far faster without the crop/pad samplers
cfg.train_flip = dict(cfg.valid, rand_mirror_prob=0.5, shuffle=True, seed=233)
cfg.train_none = dict(cfg.valid, shuffle=True, seed=233)
AUGMENTATIONS = {"ssd": "train", "flip": "train_flip", "none": "train_none"}
