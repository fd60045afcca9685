"""Augmentation settings for ``DetRecordIter``: ``TRAIN_AUGMENTATIONS[name]`` and ``VALIDATION``.

Each is a plain dict of ``mx.io.ImageDetRecordIter`` keyword arguments, built
from the same namedtuples (``RandCropper``, ``RandPadder``, ``ColorJitter``) as
the original example/ssd ``config/config.py``. ``train.py --augment NAME``
picks one of ``TRAIN_AUGMENTATIONS``; validation and evaluation use ``VALIDATION``.

Differences from the original: docs/upstream.md.
"""
from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Sequence
from typing import Any

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

# Decode threads: at most 8 and never more than the cores; more only oversubscribe small machines.
_THREADS = max(1, min(8, os.cpu_count() or 1))


def iterator_kwargs(rand_crop_samplers: Sequence[RandCropper], rand_pad: RandPadder, color_jitter: ColorJitter,
                    **settings: Any) -> dict[str, Any]:
    """Flatten samplers, padder and jitter into ``mx.io.ImageDetRecordIter`` keyword arguments.

    The samplers' fields become per-sampler lists (``min_crop_scales=[...]``), and
    a crop is tried with probability ``n / (n + 1)`` for ``n`` samplers, as the original.
    """
    kwargs = dict(settings, num_crop_sampler=len(rand_crop_samplers))
    if rand_crop_samplers:
        kwargs.update({field: [getattr(s, field) for s in rand_crop_samplers] for field in RandCropper._fields})
        kwargs["rand_crop_prob"] = len(rand_crop_samplers) / (len(rand_crop_samplers) + 1.0)
    kwargs.update(rand_pad._asdict())
    kwargs.update(color_jitter._asdict())
    return kwargs


# validation: no augmentation at all
VALIDATION = iterator_kwargs(
    rand_crop_samplers=[], rand_pad=RandPadder(), color_jitter=ColorJitter(),
    rand_mirror_prob=0, shuffle=False, seed=0, preprocess_threads=_THREADS,
)

TRAIN_AUGMENTATIONS: dict[str, dict[str, Any]] = {
    # the original's: the five SSD samplers (minimum IoU .1 .. .9), pad up to 4x, jitter
    "ssd": iterator_kwargs(
        rand_crop_samplers=[RandCropper(min_crop_scales=0.3, min_crop_overlaps=overlap)
                            for overlap in (0.1, 0.3, 0.5, 0.7, 0.9)],
        rand_pad=RandPadder(rand_pad_prob=0.5, max_pad_scale=4.0),
        color_jitter=ColorJitter(random_hue_prob=0.5, random_saturation_prob=0.5,
                                 random_illumination_prob=0.5, random_contrast_prob=0.5),
        crop_emit_mode="center", inter_method=10,  # random interpolation
        rand_mirror_prob=0.5, shuffle=True, seed=233, preprocess_threads=_THREADS,
    ),
    # lighter presets: small models trained for few epochs (the quick start's toy SSD)
    # converge far faster without the crop/pad samplers
    "flip": dict(VALIDATION, rand_mirror_prob=0.5, shuffle=True, seed=233),
    "none": dict(VALIDATION, shuffle=True, seed=233),
}
