"""What evaluate.py, demo.py and tools/deploy.py run: a checkpoint and the settings it was trained with.

``python evaluate.py --prefix P --epoch N --rec-path val.rec`` needs no other
flag: the network, data shape, classes, pixel statistics, NMS settings and
label width come from the run config train.py saved beside the checkpoint
(``P-ssd.json`` / ``P-rcnn.json``, :mod:`config.run_config`). The order is:

1. a flag given on the command line;
2. the run config;
3. the script's default (the original example's).

A flag that contradicts the checkpoint (another ``--network``, ``--num-class``
or number of ``--class-names``) is a one-line error rather than a shape
mismatch deep in mxnet. Checkpoints without a run config (the original
example's) work with explicit flags, as before. A prefix ending in ``_`` gets
``<network>_<data-shape>`` (Faster R-CNN: ``<network>``) appended, the
original's rule, when no run config sits at the prefix itself.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from config.cli import parse_class_names, refuse_given
from config.errors import UserError
from config.run_config import load_run_config, run_config_path
from config.train_config import RCNNConfig, SSDConfig, TrainConfig

# evaluate.py/demo.py dests that only SSD uses, and those that only Faster R-CNN uses
SSD_INFERENCE_FLAGS = ("data_shape", "mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b", "nms_thresh",
                       "nms_topk", "force_nms", "batch_size", "list_path", "label_width", "deploy_net", "coco", "dtype")
RCNN_INFERENCE_FLAGS = ("rcnn_nms_thresh", "rcnn_conf_thresh", "max_per_image")


@dataclass
class InferenceSettings:
    """A checkpoint to run and how: ``prefix`` is the full checkpoint prefix.

    ``rcnn`` is the Faster R-CNN run's config made ready for testing (None
    for SSD); ``run`` the saved run config, if there was one; ``onnx``: ``prefix``
    is a model written by tools/export_onnx.py (:func:`evaluate.onnx_detector.onnx_settings`);
    ``dtype`` 'bfloat16' runs the SSD graph with bfloat16 convolutions (:mod:`symbol.precision`).
    """

    prefix: str
    network: str
    num_classes: int
    class_names: list[str] | None
    data_shape: int = 0
    mean_pixels: tuple = (0.0, 0.0, 0.0)
    std_pixels: tuple = (1.0, 1.0, 1.0)
    nms_thresh: float = 0.45
    nms_topk: int = 400
    force_suppress: bool = False
    label_width: int = 350
    rcnn: RCNNConfig | None = None
    run: TrainConfig | None = None
    onnx: bool = False
    dtype: str = "float32"

    @property
    def is_rcnn(self) -> bool:
        return self.rcnn is not None


def find_run(prefix: str, network: str, data_shape: int) -> tuple[str, TrainConfig | None]:
    """``(full prefix, run config or None)``: the config at ``prefix`` itself, else the original's
    ``_`` rule (``<prefix><network>_<data_shape>``, Faster R-CNN ``<prefix><network>``)."""
    run = load_run_config(prefix)
    if run is not None or not prefix.endswith("_"):
        return prefix, run
    from symbol.rcnn_factory import NETWORKS as RCNN_NETWORKS

    full = f"{prefix}{network}" if network in RCNN_NETWORKS else f"{prefix}{network}_{data_shape}"
    return full, load_run_config(full)


def _pick(args: argparse.Namespace, dest: str, saved):
    """The flag's value if given (or if there is no saved value), else the saved one."""
    if not hasattr(args, dest):  # a script without this flag
        return saved
    if dest in args.given or saved is None:
        return getattr(args, dest)
    return saved


def _classes(parser: argparse.ArgumentParser, args: argparse.Namespace, run: TrainConfig | None,
             default_names: str) -> tuple[int, list[str] | None]:
    """``(num_classes, class_names)`` from ``--num-class`` / ``--class-names`` and the run config."""
    num_classes = getattr(args, "num_class", None) if "num_class" in args.given else None
    if run is not None:
        if num_classes is not None and num_classes != run.num_classes:
            raise UserError(f"--num-class {num_classes} disagrees with the checkpoint: it was trained for "
                            f"{run.num_classes} classes")
        num_classes = run.num_classes
    elif num_classes is None:
        num_classes = getattr(args, "num_class", None)
    if not hasattr(args, "class_names"):  # tools/deploy.py
        names = list(run.class_names) if run is not None and run.class_names else None
    elif run is None:
        names = parse_class_names(args.class_names, num_classes, default=default_names)
    elif "class_names" in args.given:
        names = parse_class_names(args.class_names)
        if names is not None and len(names) != run.num_classes:
            raise UserError(f"--class-names lists {len(names)} names; the checkpoint was trained for "
                            f"{run.num_classes} classes")
    else:
        names = list(run.class_names) if run.class_names else None
    if num_classes is None:  # demo.py without --num-class or a run config: the names count
        if not names:
            raise UserError("--class-names: no class names given")
        num_classes = len(names)
    return num_classes, names


def resolve_inference(parser: argparse.ArgumentParser, args: argparse.Namespace, default_prefix: str,
                      default_names: str, rcnn_default_prefix: str) -> InferenceSettings:
    """The :class:`InferenceSettings` of evaluate.py's or demo.py's parsed flags (``args.given`` set
    by :func:`config.cli.parse_known_given`). Flags the chosen family does not use are refused."""
    from symbol.rcnn_factory import NETWORKS as RCNN_NETWORKS

    prefix = args.prefix or (rcnn_default_prefix if args.network in RCNN_NETWORKS else default_prefix)
    prefix, run = find_run(prefix, args.network, args.data_shape)
    if run is not None and "network" in args.given and args.network != run.network:
        raise UserError(f"--network {args.network} disagrees with {run_config_path(prefix, _family(run))}: "
                        f"the run trained {run.network}")
    network = run.network if run is not None else args.network
    num_classes, class_names = _classes(parser, args, run, default_names)
    if network in RCNN_NETWORKS:
        refuse_given(parser, args, [d for d in SSD_INFERENCE_FLAGS if hasattr(args, d)],
                     "an SSD flag; Faster R-CNN takes its image sizes and pixel statistics from its run config")
        if run is None:
            raise UserError(f"{run_config_path(prefix, 'rcnn')}: not found; train.py writes it for faster_rcnn_* "
                            "networks (check --prefix)")
        from evaluate.evaluate_rcnn import inference_config

        overrides = {dest: getattr(args, dest) for dest in RCNN_INFERENCE_FLAGS if dest in args.given}
        return InferenceSettings(prefix, network, num_classes, class_names, rcnn=inference_config(run, **overrides),
                                 run=run)
    refuse_given(parser, args, [d for d in RCNN_INFERENCE_FLAGS if hasattr(args, d)],
                 f"a Faster R-CNN flag; --network {network} is an SSD network")
    if getattr(args, "deploy_net", False):
        # the deployed graph has its NMS settings baked into MultiBoxDetection
        refuse_given(parser, args, ("nms_thresh", "nms_topk", "force_nms"),
                     "the --deploy graph has its NMS settings built in; set them with tools/deploy.py")
    if getattr(run, "prebuilt_graph", False):
        # a saved inference graph (tools/quantize.py): its graph, data shape and NMS are fixed
        refuse_given(parser, args, ("nms_thresh", "nms_topk", "force_nms", "data_shape", "dtype"),
                     f"{prefix} is a saved inference graph with its shape, precision and NMS settings built in")
    ssd = run if isinstance(run, SSDConfig) else None
    saved = (lambda field: getattr(ssd, field)) if ssd is not None else (lambda field: None)
    means = [_pick(args, f"mean_{c}", ssd.mean_pixels[i] if ssd else SSDConfig.mean_pixels[i])
             for i, c in enumerate("rgb")]
    stds = [_pick(args, f"std_{c}", ssd.std_pixels[i] if ssd else SSDConfig.std_pixels[i]) for i, c in enumerate("rgb")]
    return InferenceSettings(
        prefix, network, num_classes, class_names, data_shape=_pick(args, "data_shape", saved("data_shape")),
        mean_pixels=tuple(means), std_pixels=tuple(stds), nms_thresh=_pick(args, "nms_thresh", saved("nms_thresh")),
        nms_topk=_pick(args, "nms_topk", saved("nms_topk")),
        force_suppress=_pick(args, "force_nms", saved("force_suppress")),
        label_width=_pick(args, "label_width", saved("label_width")) if hasattr(args, "label_width") else 350,
        run=run, dtype=getattr(args, "dtype", "float32"),
    )


def _family(run: TrainConfig) -> str:
    return "rcnn" if isinstance(run, RCNNConfig) else "ssd"


def refuse_multi_device(ctx: list, flag: str = "--gpus") -> None:
    """Faster R-CNN tests one image at a time on one device: several devices would sit idle."""
    if len(ctx) > 1:
        raise UserError(f"{flag}: Faster R-CNN evaluates on one device; give one (e.g. {flag} 0)")

