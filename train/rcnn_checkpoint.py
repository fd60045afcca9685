"""The files of a Faster R-CNN run beside its checkpoints, and loading its weights for inference.

``<prefix>-rcnn.json`` holds the run's :class:`symbol.rcnn_factory.RCNNConfig`,
the number of object classes and their names. train.py writes it when
training starts; evaluate.py and demo.py read it to rebuild the run's test
graph and preprocessing. Checkpoints themselves are SSD's (train/checkpoint.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import NamedTuple

from config.errors import UserError
from config.fileio import atomic_open
from symbol.rcnn_factory import RCNNConfig
from train.checkpoint import load_checkpoint, params_path


class RunConfig(NamedTuple):
    """What ``<prefix>-rcnn.json`` holds: the run's config and its classes."""

    cfg: RCNNConfig
    num_classes: int
    class_names: list[str] | None


def run_config_path(prefix: str) -> str:
    return f"{prefix}-rcnn.json"


def save_run_config(prefix: str, cfg: RCNNConfig, num_classes: int, class_names: Sequence[str] | None) -> str:
    """Write ``<prefix>-rcnn.json`` atomically; returns its path."""
    path = run_config_path(prefix)
    payload = {"num_classes": num_classes, "class_names": list(class_names) if class_names else None,
               "config": dataclasses.asdict(cfg)}
    with atomic_open(path) as f:
        json.dump(payload, f, indent=1)
    return path


def load_run_config(prefix: str) -> RunConfig:
    """Read ``<prefix>-rcnn.json``; a missing or unreadable file is a one-line error naming it.

    JSON lists come back as the tuples the config holds; keys this version
    does not know are ignored.
    """
    path = run_config_path(prefix)
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found; train.py writes it for faster_rcnn_* networks (check --prefix)")
    try:
        with open(path) as f:
            payload = json.load(f)
        known = {field.name for field in dataclasses.fields(RCNNConfig)}
        values = {key: tuple(value) if isinstance(value, list) else value
                  for key, value in payload["config"].items() if key in known}
        return RunConfig(RCNNConfig(**values), int(payload["num_classes"]), payload.get("class_names"))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a Faster R-CNN run configuration ({err})") from None


def load_rcnn_weights(prefix: str, epoch: int, num_classes: int) -> tuple[dict, dict]:
    """(arg_params, aux_params) of checkpoint ``prefix-epoch``, checked for ``num_classes`` object classes."""
    _, args, auxs = load_checkpoint(prefix, epoch, flag="--prefix/--epoch")
    path = params_path(prefix, epoch)
    cls_score = args.get("cls_score_weight")
    if cls_score is None:
        raise UserError(f"{path}: has no cls_score_weight; not a Faster R-CNN checkpoint")
    if cls_score.shape[0] != num_classes + 1:
        raise UserError(f"--num-class {num_classes} disagrees with {path}: it was trained for "
                        f"{cls_score.shape[0] - 1} object classes")
    return args, auxs
