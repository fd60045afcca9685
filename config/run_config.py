"""The run's configuration beside its checkpoints: ``<prefix>-ssd.json`` or ``<prefix>-rcnn.json``.

train.py writes it when training starts (atomically). evaluate.py, demo.py
and tools/deploy.py read it, so a checkpoint is used with the network, data
shape, classes, pixel statistics and NMS settings it was trained with, and
no flag has to be repeated. Checkpoints without one (the original example's)
keep working with explicit flags.

The file holds ``{"family": "ssd" | "rcnn", "config": {<SSDConfig or RCNNConfig fields>}}``.
"""
from __future__ import annotations

import dataclasses
import json
import os

from config.errors import UserError
from config.fileio import atomic_open
from config.train_config import RCNNConfig, SSDConfig, TrainConfig

FAMILIES: dict[str, type[TrainConfig]] = {"ssd": SSDConfig, "rcnn": RCNNConfig}


def run_config_path(prefix: str, family: str) -> str:
    """``<prefix>-ssd.json`` or ``<prefix>-rcnn.json``."""
    return f"{prefix}-{family}.json"


def family_of(cfg: TrainConfig) -> str:
    return next(name for name, kind in FAMILIES.items() if type(cfg) is kind)


def save_run_config(cfg: TrainConfig, prefix: str | None = None) -> str:
    """Write ``cfg`` as ``<prefix>-<family>.json`` (``prefix`` defaults to ``cfg.prefix``); returns the path."""
    family = family_of(cfg)
    if prefix is not None:
        cfg = dataclasses.replace(cfg, prefix=prefix)
    path = run_config_path(cfg.prefix, family)
    with atomic_open(path) as f:
        json.dump({"family": family, "config": dataclasses.asdict(cfg)}, f, indent=1)
    return path


def _from_json(kind: type[TrainConfig], values: dict) -> TrainConfig:
    fields = {field.name: field for field in dataclasses.fields(kind)}
    kept = {}
    for key, value in values.items():
        if key not in fields:
            continue  # written by another version: ignored
        if isinstance(value, list) and key != "class_names":
            value = tuple(value)  # JSON has no tuples; the configs hold them
        kept[key] = value
    return kind(**kept)


def load_run_config(prefix: str) -> TrainConfig | None:
    """The config saved with ``prefix`` (SSD or Faster R-CNN), or None when there is none.

    An unreadable file is a one-line error naming it. Files written before
    the configs held the classes (``num_classes``/``class_names`` at the top
    level) are read too.
    """
    for family, kind in FAMILIES.items():
        path = run_config_path(prefix, family)
        if not os.path.isfile(path):
            continue
        try:
            with open(path) as f:
                payload = json.load(f)
            values = dict(payload["config"])
            for key, field in (("num_classes", "num_classes"), ("class_names", "class_names")):
                if key in payload:
                    values[field] = payload[key]
            return _from_json(kind, values)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise UserError(f"{path}: not a run configuration of this toolkit ({err})") from None
    return None


def load_fp32_ssd_run(prefix: str, tool: str) -> SSDConfig:
    """The run config of an FP32 SSD checkpoint at ``prefix``, for the tools that convert one
    (``tool``: tools/quantize.py, tools/export_onnx.py); a one-line error for anything else."""
    run = load_run_config(prefix)
    if not isinstance(run, SSDConfig):
        what = "a Faster R-CNN run" if run is not None else f"{run_config_path(prefix, 'ssd')} not found"
        raise UserError(f"--prefix {prefix}: {what}; {tool} takes SSD checkpoints trained by train.py")
    if run.prebuilt_graph:
        raise UserError(f"--prefix {prefix}: already a saved inference graph (quantized?); give the FP32 checkpoint")
    return run
