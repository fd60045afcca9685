"""Train an SSD or Faster R-CNN detector from RecordIO files.

    python train.py --network vgg16_reduced --gpus 0,1
    python train.py --network toy --data-shape 256 --pretrained '' --gpus ''
    python train.py --network faster_rcnn_vgg16 --gpus 0 --rpn-anchor-scales '(8,16,32)'

Flags and defaults are example/ssd's; see README "Training" for what was added.
``--network faster_rcnn_*`` trains Faster R-CNN (train/train_rcnn.py) with
example/rcnn's flags (the "Faster R-CNN" group, and its names for the shared
ones: --epochs, --lr-decay-epoch, --start-epoch, --log-interval, --save-prefix);
flags whose default differs between the two families are resolved per family.
"""
import argparse
import ast
import dataclasses
import os

import config  # noqa: F401  (thread defaults before mxnet loads)
from config.augmentation import TRAIN_AUGMENTATIONS
from config.cli import (
    ArgumentParser,
    add_device_args,
    add_pixel_args,
    parse_class_names,
    parse_known_given,
    pixel_stats,
    refuse_given,
    require_number,
    require_writable_dir,
)
from config.defaults import VOC_CLASSES
from config.errors import UserError, run_cli
from config.train_config import CLS_LOSSES, LOC_LOSS_METRIC_NAMES, RCNNConfig, SSDConfig

# every default is a field default of SSDConfig / RCNNConfig, except the paths only the command line assumes
SSD, RCNN = SSDConfig(), RCNNConfig()
DEFAULT_VAL_PATH = os.path.join(os.getcwd(), "data", "val.rec")
DEFAULT_PRETRAINED = os.path.join(os.getcwd(), "model", "vgg16_reduced")
DEFAULT_LOG = "train.log"
AUTO_ANCHORS = "auto"  # --anchor-sizes auto: fitted to the training objects where the preset covers too few
# Flags whose default depends on the family (None on the command line), as TrainConfig fields
FAMILY_DEFAULTS = ("batch_size", "pretrained", "prefix", "end_epoch", "frequent", "lr", "lr_steps")

# example/rcnn's flags: (flag, value kind, help). Each sets the RCNNConfig field of its name; a kind
# that is a string is a tuple written as the original wrote it, e.g. '(8,16,32)'.
RCNN_FLAGS = (
    ("--img-short-side", int, "resize images so that the shorter side is this many pixels"),
    ("--img-long-side", int, "... unless the longer side would pass this many"),
    ("--img-pixel-means", "3 numbers", "RGB means subtracted from the pixels"),
    ("--img-pixel-stds", "3 numbers", "RGB stds the pixels are divided by"),
    ("--net-fixed-params", "names", "parameters whose name contains one of these stay frozen (with --pretrained)"),
    ("--rpn-feat-stride", int, "stride of the RPN feature map in pixels"),
    ("--rpn-anchor-scales", "numbers", "anchor sides in units of the stride"),
    ("--rpn-anchor-ratios", "numbers", "anchor aspect ratios"),
    ("--rpn-pre-nms-topk", int, "proposals kept before NMS in training"),
    ("--rpn-post-nms-topk", int, "proposals kept after NMS in training"),
    ("--rpn-nms-thresh", float, "NMS threshold of the proposals"),
    ("--rpn-min-size", int, "smallest proposal side in pixels"),
    ("--rpn-batch-rois", int, "anchors sampled per image"),
    ("--rpn-allowed-border", int, "anchors may cross the image border by this many pixels"),
    ("--rpn-fg-fraction", float, "largest foreground share of the sampled anchors"),
    ("--rpn-fg-overlap", float, "anchors with IoU >= this are foreground"),
    ("--rpn-bg-overlap", float, "anchors with IoU < this are background"),
    ("--rcnn-feat-stride", int, "stride of the ROI pooling feature map"),
    ("--rcnn-pooled-size", "2 ints", "ROI pooling output (height, width)"),
    ("--rcnn-batch-size", int, "images per device"),
    ("--rcnn-batch-rois", int, "ROIs sampled per image"),
    ("--rcnn-fg-fraction", float, "largest foreground share of the sampled ROIs"),
    ("--rcnn-fg-overlap", float, "ROIs with IoU >= this are foreground"),
    ("--rcnn-bbox-stds", "4 numbers", "stds of the box regression targets"),
)
# value kind -> (number of items or None for any, item types)
TUPLE_KINDS = {"3 numbers": (3, (int, float)), "4 numbers": (4, (int, float)), "2 ints": (2, (int,)),
               "numbers": (None, (int, float)), "names": (None, (str,))}


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except None: those flags name their defaults in the help text."""

    def _get_help_string(self, action):
        return action.help if action.default is None else super()._get_help_string(action)


def add_rcnn_args(parser: argparse.ArgumentParser) -> None:
    """The "Faster R-CNN" group: example/rcnn's flags, default None = the network's value."""
    from symbol.registry import RCNN, get_network, network_names

    per_network = {key for name in network_names(RCNN) for key in get_network(name).defaults}
    group = parser.add_argument_group(
        "Faster R-CNN", "for --network faster_rcnn_*; defaults are config/train_config.py's RCNNConfig "
        "and the network's own values")
    for flag, kind, text in RCNN_FLAGS:
        name = flag[2:].replace("-", "_")
        default = getattr(RCNNConfig, name)
        note = ", or the network's" if name in per_network else ""
        if isinstance(kind, str):
            group.add_argument(flag, metavar="TUPLE", default=None,
                               help=f"{text}, a tuple of {kind} (default: '{default}'{note})")
        else:
            group.add_argument(flag, metavar=kind.__name__.upper(), type=kind, default=None,
                               help=f"{text} (default: {default}{note})")
    group.add_argument("--rcnn-num-classes", metavar="INT", type=int, default=None,
                       help="classes including background (the original's count): --num-class + 1")


def parse_literal(flag: str, text: str, kind: str, example) -> tuple:
    """A tuple flag as the original wrote it ('(8,16,32)', '["conv1","conv2"]'); one-line error otherwise."""
    count, types = TUPLE_KINDS[kind]
    try:
        value = ast.literal_eval(text) if text.strip() else ()
    except (ValueError, SyntaxError):
        value = None
    items = tuple(value) if isinstance(value, (tuple, list)) else (value,)
    valid = all(isinstance(item, types) and not isinstance(item, bool) for item in items)
    if not valid or (count is not None and len(items) != count) or (kind == "numbers" and not items):
        raise UserError(f"{flag} {text!r}: expected a tuple of {kind}, such as '{str(example)}'")
    return items


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Train a Single-shot detection or Faster R-CNN network",
                                formatter_class=HelpFormatter)
    a = p.add_argument
    a("--train-path", default=SSD.train_path, help="train record to use")
    a("--train-list", default=SSD.train_list, help="train list to use (replaces the labels in the record)")
    a("--val-path", default=DEFAULT_VAL_PATH, help="validation record to use ('' for none)")
    a("--val-list", default=SSD.val_list, help="validation list to use")
    a("--network", default=SSD.network, help="network name (see README for the list)")
    a("--batch-size", type=int, default=None,
      help=f"training batch size (default: {SSD.batch_size}; Faster R-CNN: --rcnn-batch-size x devices)")
    a("--resume", default=SSD.resume, help="resume from this epoch, or 'auto' for the latest checkpoint")
    a("--finetune", type=int, default=SSD.finetune, help="finetune from this epoch")
    a("--pretrained", default=None,
      help=f"pretrained model prefix ('' to train from scratch) (default: {DEFAULT_PRETRAINED}; "
           "Faster R-CNN: a .params file, by default the network's, e.g. model/vgg16-0000.params)")
    a("--epoch", type=int, default=SSD.pretrained_epoch, help="epoch of the pretrained model")
    a("--prefix", "--save-prefix", dest="prefix", default=None,
      help=f"checkpoint prefix; _<network>_<shape> is appended, for Faster R-CNN _<network> "
           f"(default: {SSD.prefix}; Faster R-CNN: {RCNN.prefix})")
    add_device_args(p)
    a("--begin-epoch", "--start-epoch", dest="begin_epoch", type=int, default=SSD.begin_epoch, help="start epoch")
    a("--end-epoch", "--epochs", dest="end_epoch", type=int, default=None,
      help=f"end epoch (default: {SSD.end_epoch}; Faster R-CNN: {RCNN.end_epoch})")
    a("--frequent", "--log-interval", dest="frequent", type=int, default=None,
      help=f"report every N batches (default: {SSD.frequent}; Faster R-CNN: {RCNN.frequent})")
    a("--data-shape", type=int, default=SSD.data_shape, help="input image side")
    a("--label-width", type=int, default=SSD.label_width, help="label pad width (train and val share it)")
    a("--lr", type=float, default=None, help=f"learning rate (default: {SSD.lr}; Faster R-CNN: {RCNN.lr})")
    a("--momentum", type=float, default=SSD.momentum, help="momentum")
    a("--wd", type=float, default=SSD.wd, help="weight decay")
    a("--lr-steps", "--lr-decay-epoch", dest="lr_steps", default=None,
      help="epochs at which the learning rate is multiplied by --lr-factor "
           f"(default: '{SSD.lr_steps}'; Faster R-CNN: '{RCNN.lr_steps}')")
    a("--lr-factor", type=float, default=SSD.lr_factor, help="learning rate factor at each step")
    a("--warmup-epochs", type=float, default=SSD.warmup_epochs, help="linear learning-rate warm-up epochs")
    a("--lr-schedule", choices=("step", "cosine"), default=SSD.lr_schedule,
      help="step: multiply by --lr-factor at --lr-steps; cosine: decay to --lr-floor by the last epoch")
    a("--lr-floor", type=float, default=SSD.lr_floor, help="the rate a cosine schedule ends at")
    a("--dtype", choices=("float32", "bfloat16"), default=SSD.dtype,
      help="bfloat16: convolutions in bfloat16, weights, optimizer state and losses in float32 (CPUs with "
           "avx512_bf16); checkpoints stay float32")
    a("--val-interval", type=int, default=SSD.val_interval, metavar="N",
      help="validate after every Nth epoch and after the last (the best checkpoint is chosen among those)")
    a("--ema", type=float, default=SSD.ema, metavar="DECAY",
      help="validate and save a moving average of the weights with this decay, e.g. 0.999 (0: off)")
    add_pixel_args(p, dict(zip(("mean_r", "mean_g", "mean_b", "std_r", "std_g", "std_b"),
                               SSD.mean_pixels + SSD.std_pixels)))
    a("--freeze", dest="freeze_pattern", default=SSD.freeze_pattern, help="regex of parameters to freeze")
    a("--log", dest="log_file", default=DEFAULT_LOG, help="log file ('' for none)")
    a("--monitor", type=int, default=SSD.iter_monitor, help="log network stats every N iterations if > 0")
    a("--pattern", dest="monitor_pattern", default=SSD.monitor_pattern, help="monitor parameter pattern (regex)")
    a("--num-class", type=int, default=None, help=f"number of object classes (default: {SSD.num_classes})")
    a("--num-example", type=int, default=SSD.num_example,
      help="training images per epoch, for the LR schedule; -1 counts them (a different count is an error)")
    a("--class-names", default=VOC_CLASSES, help="comma separated class names, or a file with one a line")
    a("--nms", dest="nms_thresh", type=float, default=SSD.nms_thresh, help="non-maximum suppression threshold")
    a("--nms-topk", type=int, default=SSD.nms_topk, help="final number of detections")
    a("--overlap", dest="overlap_thresh", type=float, default=SSD.ovp_thresh, help="evaluation overlap threshold")
    a("--force", dest="force_nms", action="store_true", help="suppress overlaps across classes")
    a("--use-difficult", action="store_true", help="count difficult objects in evaluation")
    a("--voc07", dest="use_voc07_metric", action="store_true", default=True, help="VOC07 11-point metric")
    a("--no-voc07", dest="use_voc07_metric", action="store_false", help="VOC10+ area metric")
    a("--kv-store", default=SSD.kv_store,
      help="kvstore type (local, device; dist_sync, dist_device_sync, dist_async under tools/launch.py)")
    a("--dist-timeout", type=float, default=SSD.dist_timeout,
      help="dist_* kvstores: a worker that finishes no batch for this many seconds stops the job (0: never)")
    a("--lr-scale-workers", action="store_true",
      help="dist_* kvstores: multiply --lr by the number of workers (the global batch is workers x --batch-size)")
    a("--cls-loss", choices=CLS_LOSSES, default=SSD.cls_loss, help="classification loss")
    a("--label-smoothing", type=float, default=SSD.label_smoothing, metavar="ALPHA",
      help="softmax loss: the target class's share is 1-ALPHA, the rest spread over the other classes (0: off)")
    a("--loc-loss", choices=tuple(LOC_LOSS_METRIC_NAMES), default=SSD.loc_loss,
      help="box loss: smooth L1 of the encoded offsets, or 1 - generalised IoU of the decoded boxes")
    a("--anchor-sizes", default=None, metavar="LISTS",
      help="SSD anchor sizes per feature layer as fractions of the input, e.g. '[[.1,.141],[.2,.272],...]'; "
           "'auto': where the preset covers under 95%% of the training objects, sizes and ratios fitted to them "
           "(default: the network's preset; tools/fit_anchors.py shows the fit)")
    a("--anchor-ratios", default=None, metavar="LISTS",
      help="SSD anchor aspect ratios per feature layer (or one list for all), e.g. '[[1,2,.5],...]'")
    a("--augment", choices=tuple(TRAIN_AUGMENTATIONS), default=SSD.augment,
      help="SSD training augmentation: the original's crop/pad/jitter/mirror, mirror only, or none")
    a("--seed", type=int, default=None,
      help="random seed: initialisation, shuffle order, augmentation (Faster R-CNN: also anchor and ROI sampling)")
    a("--keep", type=int, default=SSD.keep, help="keep the newest N epoch checkpoints (0 keeps all); -best stays")
    add_rcnn_args(p)
    return p


def resolve_family_defaults(args: argparse.Namespace, defaults: SSDConfig | RCNNConfig) -> None:
    """Give the flags of FAMILY_DEFAULTS left unset their family's default, and --num-class its own.

    ``--rcnn-num-classes N`` (background included) means ``--num-class N-1``.
    """
    for name in FAMILY_DEFAULTS:
        if getattr(args, name) is not None:
            continue
        if isinstance(defaults, RCNNConfig) and name in ("batch_size", "pretrained"):
            continue  # Faster R-CNN: images per device, and the network's own weights file
        setattr(args, name, DEFAULT_PRETRAINED if name == "pretrained" else getattr(defaults, name))
    if args.rcnn_num_classes is not None:
        if args.num_class is not None and args.num_class != args.rcnn_num_classes - 1:
            raise UserError(f"--rcnn-num-classes {args.rcnn_num_classes} (background included) disagrees with "
                            f"--num-class {args.num_class}; give one of them")
        args.num_class = args.rcnn_num_classes - 1
    elif args.num_class is None:
        args.num_class = SSD.num_classes


def check_data_paths(args: argparse.Namespace) -> str:
    """One-line errors for missing records; returns the validation record to use ('' for none)."""
    if not os.path.isfile(args.train_path):
        raise UserError(f"--train-path {args.train_path}: file not found (make one with tools/prepare_dataset.py)")
    val_path = args.val_path
    if val_path and not os.path.isfile(val_path):
        if val_path != DEFAULT_VAL_PATH:
            raise UserError(f"--val-path {val_path}: file not found")
        print(f"warning: {val_path} not found: training without validation")
        val_path = ""
    return val_path


# SSD flags that Faster R-CNN has no use for, and what to use instead
SSD_ONLY = {
    "freeze_pattern": "use --net-fixed-params", "monitor": "", "monitor_pattern": "",
    "mean_r": "use --img-pixel-means", "mean_g": "use --img-pixel-means", "mean_b": "use --img-pixel-means",
    "std_r": "use --img-pixel-stds", "std_g": "use --img-pixel-stds", "std_b": "use --img-pixel-stds",
    "cls_loss": "", "label_smoothing": "", "loc_loss": "",
    "augment": "(Faster R-CNN flips images)", "data_shape": "use --img-short-side/--img-long-side",
    "label_width": "", "nms_thresh": "use --rpn-nms-thresh", "nms_topk": "use --rpn-post-nms-topk",
    "force_nms": "", "train_list": "the labels come from the .rec", "val_list": "the labels come from the .rec",
    "finetune": "pass the checkpoint's .params file as --pretrained", "num_example": "it counts the images itself",
    "anchor_sizes": "use --rpn-anchor-scales", "anchor_ratios": "use --rpn-anchor-ratios",
}


def check_start_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, rcnn: bool) -> None:
    """Flags that the chosen start (resume, finetune, pretrained, scratch) would ignore are refused.

    The original's precedence stays: ``--resume N`` over ``--finetune`` over ``--pretrained``.
    ``--resume auto`` is the exception: it resumes when a checkpoint exists and otherwise starts as
    the other flags say, so the same command both starts and continues a run.
    """
    resume = str(args.resume).strip()
    # flags the start would ignore; empty or zero values ask for nothing and pass
    meaningful = [dest for dest, value in (("finetune", args.finetune > 0), ("pretrained", bool(args.pretrained)),
                                           ("epoch", True), ("begin_epoch", args.begin_epoch != 0))
                  if value and dest in args.given]
    if resume.lstrip("-").isdigit() and int(resume) > 0:
        refuse_given(parser, args, meaningful, f"a resumed run (--resume {resume}) starts from that checkpoint "
                     "and its epoch")
    elif not rcnn and args.finetune > 0:
        refuse_given(parser, args, [d for d in meaningful if d != "finetune"],
                     f"--finetune {args.finetune} starts from <prefix>-{args.finetune:04d} at that epoch")
        if args.freeze_pattern.strip():
            refuse_given(parser, args, ("freeze_pattern",), "--finetune freezes every loaded layer but the "
                         "predictions (example/ssd's finetune rule)")
    elif not args.pretrained:
        refuse_given(parser, args, ("epoch",), "the epoch of --pretrained; this run starts from scratch "
                     "(--pretrained '')")
        if not rcnn and args.freeze_pattern.strip():
            refuse_given(parser, args, ("freeze_pattern",), "freezes pretrained layers; from scratch "
                         "(--pretrained '') every layer must learn (pass --freeze '')")
    elif rcnn and os.path.isfile(args.pretrained):
        refuse_given(parser, args, ("epoch",), f"--pretrained {args.pretrained} is a .params file, not a prefix")


def check_validation_flags(parser: argparse.ArgumentParser, args: argparse.Namespace, val_path: str) -> None:
    """Validation settings without validation data would be ignored: refuse them."""
    if not val_path:
        refuse_given(parser, args, ("overlap_thresh", "use_difficult", "use_voc07_metric"),
                     "applies to validation, and there is no --val-path")


def rcnn_config(parser: argparse.ArgumentParser, args: argparse.Namespace, ctx: list):
    """Faster R-CNN: the :class:`RCNNConfig` of the flags (``--network faster_rcnn_*``)."""
    from symbol.rcnn_factory import make_config

    for dest, hint in SSD_ONLY.items():
        refuse_given(parser, args, [dest], "an SSD flag; not used by Faster R-CNN" + (f" ({hint})" if hint else ""))
    resolve_family_defaults(args, RCNN)
    if args.pretrained is None:
        args.pretrained = make_config(args.network).pretrained
    check_start_flags(parser, args, rcnn=True)
    val_path = check_data_paths(args)
    check_validation_flags(parser, args, val_path)
    class_names = parse_class_names(args.class_names, args.num_class, default=VOC_CLASSES)
    overrides = {}
    for flag, kind, _ in RCNN_FLAGS:
        name = flag[2:].replace("-", "_")
        value = getattr(args, name)
        if value is not None and isinstance(kind, str):
            value = parse_literal(flag, value, kind, getattr(RCNNConfig, name))
        overrides[name] = value
    cfg = make_config(args.network, **overrides, pretrained=args.pretrained)
    if not cfg.pretrained and cfg.net_fixed_params:
        refuse_given(parser, args, ("net_fixed_params",), "freezes pretrained layers; from scratch "
                     "(--pretrained '') every layer must learn")
    batch_size = cfg.rcnn_batch_size * len(ctx)
    if args.batch_size is not None and args.batch_size != batch_size:
        raise UserError(f"--batch-size {args.batch_size}: Faster R-CNN trains --rcnn-batch-size "
                        f"{cfg.rcnn_batch_size} image(s) on each of {len(ctx)} device(s), a batch of {batch_size}; "
                        "leave --batch-size out")
    loop = common_loop_settings(args, val_path, class_names)
    return dataclasses.replace(cfg, prefix=f"{args.prefix}_{args.network}", **loop)


def common_loop_settings(args: argparse.Namespace, val_path: str, class_names: list | None) -> dict:
    """The :class:`config.train_config.TrainConfig` fields both families take from the same flags."""
    return dict(
        train_path=args.train_path, val_path=val_path, num_classes=args.num_class, class_names=class_names,
        begin_epoch=args.begin_epoch, end_epoch=args.end_epoch, resume=str(args.resume),
        pretrained_epoch=args.epoch, frequent=args.frequent, lr=args.lr, lr_steps=args.lr_steps,
        lr_factor=args.lr_factor, momentum=args.momentum, wd=args.wd, warmup_epochs=args.warmup_epochs,
        lr_schedule=args.lr_schedule, lr_floor=args.lr_floor, ema=args.ema, dtype=args.dtype,
        kv_store=args.kv_store, seed=args.seed, log_file=args.log_file or None,
        voc07_metric=args.use_voc07_metric, ovp_thresh=args.overlap_thresh, use_difficult=args.use_difficult,
        keep=args.keep, val_interval=args.val_interval, dist_timeout=args.dist_timeout,
        lr_scale_workers=args.lr_scale_workers,
    )


def ssd_config(parser: argparse.ArgumentParser, args: argparse.Namespace):
    """SSD: the :class:`SSDConfig` of the flags."""
    given = [flag for flag in [flag for flag, _, _ in RCNN_FLAGS] + ["--rcnn-num-classes"]
             if getattr(args, flag[2:].replace("-", "_")) is not None]
    if given:
        raise UserError(f"{given[0]}: a Faster R-CNN flag; --network {args.network} is not a faster_rcnn_* network")
    if "monitor_pattern" in args.given and args.monitor <= 0:
        raise UserError(f"--pattern {args.monitor_pattern}: applies with --monitor N > 0")
    resolve_family_defaults(args, SSD)
    check_start_flags(parser, args, rcnn=False)
    val_path = check_data_paths(args)
    check_validation_flags(parser, args, val_path)
    refuse_given(parser, args, ["val_list"] if not val_path else [], "there is no --val-path")
    class_names = parse_class_names(args.class_names, args.num_class, default=VOC_CLASSES)
    mean_pixels, std_pixels = pixel_stats(args)
    prefix = f"{args.prefix}_{args.network}_{args.data_shape}"
    return SSDConfig(
        network=args.network, batch_size=args.batch_size, data_shape=args.data_shape, mean_pixels=tuple(mean_pixels),
        std_pixels=tuple(std_pixels), label_width=args.label_width, train_list=args.train_list,
        val_list=args.val_list, finetune=args.finetune, pretrained=args.pretrained,
        freeze_pattern=args.freeze_pattern, num_example=args.num_example, nms_thresh=args.nms_thresh,
        force_suppress=args.force_nms, nms_topk=args.nms_topk, iter_monitor=args.monitor,
        monitor_pattern=args.monitor_pattern, cls_loss=args.cls_loss, label_smoothing=args.label_smoothing,
        loc_loss=args.loc_loss, augment=args.augment,
        graph_overrides=anchor_overrides(args, prefix), prefix=prefix,
        **common_loop_settings(args, val_path, class_names),
    )


def anchor_overrides(args: argparse.Namespace, prefix: str) -> dict | None:
    """The graph overrides of ``--anchor-sizes/--anchor-ratios``; a resumed or finetuned run keeps those of its
    saved run config for what is not given (so that ``--resume auto`` needs no other flag). None: the preset."""
    # mxnet loads late: --help stays fast
    from config.run_config import load_run_config
    from evaluate.anchor_fit import check_anchor_lists, fitted_ssd_overrides, parse_anchor_list

    overrides = {}
    if str(args.resume).strip() not in ("-1", "0", "") or args.finetune > 0:
        saved = load_run_config(prefix)
        overrides = dict(getattr(saved, "graph_overrides", None) or {})
    if args.anchor_sizes == AUTO_ANCHORS:
        if args.anchor_ratios is not None:
            raise UserError("--anchor-sizes auto: fits the ratios as well; drop --anchor-ratios or give both lists")
        overrides.pop("sizes", None)
        overrides.pop("ratios", None)
        overrides.update(fitted_ssd_overrides(args.train_path, args.network, args.data_shape))
        return overrides or None
    for key in ("sizes", "ratios"):
        text = getattr(args, f"anchor_{key}")
        if text is not None:
            overrides[key] = parse_anchor_list(f"--anchor-{key}", text)
    if "sizes" in overrides or "ratios" in overrides:
        check_anchor_lists(args.network, args.data_shape, overrides.get("sizes"), overrides.get("ratios"))
    return overrides or None


def check_values(args: argparse.Namespace) -> None:
    """Numbers that would train garbage, crash mxnet or do nothing are one-line errors up front."""
    require_number("--lr", args.lr, 0, above=True)
    require_number("--lr-factor", args.lr_factor, 0, above=True)
    require_number("--momentum", args.momentum, 0, below=1)
    require_number("--wd", args.wd, 0)
    require_number("--warmup-epochs", args.warmup_epochs, 0)
    require_number("--lr-floor", args.lr_floor, 0)
    require_number("--ema", args.ema, 0, below=1)
    require_number("--label-smoothing", args.label_smoothing, 0, below=1)
    require_number("--val-interval", args.val_interval, 1)
    if args.lr_schedule == "cosine":
        given = [args.spelled.get(dest, "--" + dest.replace("_", "-")) for dest in ("lr_steps", "lr_factor")
                 if dest in args.given]
        if given:
            raise UserError(f"{given[0]}: applies to --lr-schedule step; a cosine schedule has no steps")
        if args.lr is not None and args.lr_floor >= args.lr:
            raise UserError(f"--lr-floor {args.lr_floor}: must be below --lr {args.lr}")
    elif "lr_floor" in args.given:
        raise UserError(f"--lr-floor {args.lr_floor}: applies to --lr-schedule cosine")
    require_number("--batch-size", args.batch_size, 1)
    require_number("--num-class", args.num_class, 1)
    require_number("--end-epoch", args.end_epoch, 1)
    require_number("--begin-epoch", args.begin_epoch, 0)
    require_number("--frequent", args.frequent, 1)
    require_number("--keep", args.keep, 0)
    require_number("--label-width", args.label_width, 7)
    require_number("--data-shape", args.data_shape, 1)
    require_number("--dist-timeout", args.dist_timeout, 0)
    if not str(args.kv_store).startswith("dist"):
        given = [flag for flag, dest in (("--dist-timeout", "dist_timeout"), ("--lr-scale-workers", "lr_scale_workers"))
                 if dest in args.given]
        if given:
            raise UserError(f"{given[0]}: applies to a distributed job (--kv-store dist_sync, dist_device_sync or "
                            f"dist_async); --kv-store is {args.kv_store}")


def build_run(argv=None) -> tuple:
    """``(config, contexts)`` of a command line, every flag checked; nothing is trained or written."""
    parser = build_parser()
    args = parse_known_given(parser, argv)
    check_values(args)
    from config.devices import parse_devices

    ctx = parse_devices(args.gpus, args.cpus)
    from symbol.registry import RCNN, get_network

    run = rcnn_config(parser, args, ctx) if get_network(args.network).family == RCNN else ssd_config(parser, args)
    require_writable_dir("--prefix", run.prefix)
    if run.log_file:
        require_writable_dir("--log", run.log_file)
    return run, ctx


def main(argv=None) -> None:
    run, ctx = build_run(argv)
    if isinstance(run, RCNNConfig):
        from train.train_rcnn import train_rcnn

        train_rcnn(run, ctx)
    else:
        from train.train_net import train_ssd

        train_ssd(run, ctx)


if __name__ == "__main__":
    from train.distributed import exit_hard_on_error

    run_cli(exit_hard_on_error(main))
