"""Train an SSD (or Faster R-CNN) detector from RecordIO files.

    python train.py --network vgg16_reduced --gpus 0,1
    python train.py --network toy --data-shape 256 --pretrained '' --gpus ''

Flags and defaults are example/ssd's; see README "Training" for what was added.
"""
import argparse
import os

import config  # noqa: F401  (thread defaults before mxnet loads)
from config.defaults import TRAIN as D
from tools.cli import UserError, add_device_args, add_pixel_args, parse_class_names, pixel_stats, run_cli


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a Single-shot detection network",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--train-path", default=D["train_path"], help="train record to use")
    a("--train-list", default=D["train_list"], help="train list to use (replaces the labels in the record)")
    a("--val-path", default=D["val_path"], help="validation record to use ('' for none)")
    a("--val-list", default=D["val_list"], help="validation list to use")
    a("--network", default=D["network"], help="network name (see README for the list)")
    a("--batch-size", type=int, default=D["batch_size"], help="training batch size")
    a("--resume", default=D["resume"], help="resume from this epoch, or 'auto' for the latest checkpoint")
    a("--finetune", type=int, default=D["finetune"], help="finetune from this epoch")
    a("--pretrained", default=D["pretrained"], help="pretrained model prefix ('' to train from scratch)")
    a("--epoch", type=int, default=D["epoch"], help="epoch of the pretrained model")
    a("--prefix", default=D["prefix"], help="checkpoint prefix; _<network>_<shape> is appended")
    add_device_args(p)
    a("--begin-epoch", type=int, default=D["begin_epoch"], help="start epoch")
    a("--end-epoch", type=int, default=D["end_epoch"], help="end epoch")
    a("--frequent", type=int, default=D["frequent"], help="report every N batches")
    a("--data-shape", type=int, default=D["data_shape"], help="input image side")
    a("--label-width", type=int, default=D["label_width"], help="label pad width (train and val share it)")
    a("--lr", type=float, default=D["lr"], help="learning rate")
    a("--momentum", type=float, default=D["momentum"], help="momentum")
    a("--wd", type=float, default=D["wd"], help="weight decay")
    a("--lr-steps", default=D["lr_steps"], help="epochs at which the learning rate is multiplied by --lr-factor")
    a("--lr-factor", type=float, default=D["lr_factor"], help="learning rate factor at each step")
    a("--warmup-epochs", type=float, default=D["warmup_epochs"], help="linear learning-rate warm-up epochs")
    add_pixel_args(p, D)
    a("--freeze", dest="freeze_pattern", default=D["freeze"], help="regex of parameters to freeze")
    a("--log", dest="log_file", default=D["log"], help="log file ('' for none)")
    a("--monitor", type=int, default=D["monitor"], help="log network stats every N iterations if > 0")
    a("--pattern", dest="monitor_pattern", default=D["pattern"], help="monitor parameter pattern (regex)")
    a("--num-class", type=int, default=D["num_class"], help="number of object classes")
    a("--num-example", type=int, default=D["num_example"],
      help="training images per epoch, for the LR schedule; -1 counts the .rec")
    a("--class-names", default=D["class_names"], help="comma separated class names, or a file with one a line")
    a("--nms", dest="nms_thresh", type=float, default=D["nms"], help="non-maximum suppression threshold")
    a("--nms-topk", type=int, default=D["nms_topk"], help="final number of detections")
    a("--overlap", dest="overlap_thresh", type=float, default=D["overlap"], help="evaluation overlap threshold")
    a("--force", dest="force_nms", action="store_true", help="suppress overlaps across classes")
    a("--use-difficult", action="store_true", help="count difficult objects in evaluation")
    a("--voc07", dest="use_voc07_metric", action="store_true", default=True, help="VOC07 11-point metric")
    a("--no-voc07", dest="use_voc07_metric", action="store_false", help="VOC10+ area metric")
    a("--kv-store", default=D["kv_store"], help="kvstore type (local, device, dist_sync, ...)")
    a("--cls-loss", choices=("softmax", "focal"), default=D["cls_loss"], help="classification loss")
    a("--seed", type=int, default=None, help="random seed for initialisation")
    return p.parse_args(argv)


def count_records(rec_path: str) -> int:
    """Images in a .rec: lines of its .idx, else a scan of the record headers."""
    idx_path = os.path.splitext(rec_path)[0] + ".idx"
    if os.path.isfile(idx_path):
        with open(idx_path) as f:
            return sum(1 for line in f if line.strip())
    import mxnet as mx

    reader = mx.recordio.MXRecordIO(rec_path, "r")
    count = 0
    while reader.read() is not None:
        count += 1
    reader.close()
    return count


def main(argv=None) -> None:
    args = parse_args(argv)
    from config.devices import parse_devices

    ctx = parse_devices(args.gpus, args.cpus)
    if not os.path.isfile(args.train_path):
        raise UserError(f"--train-path {args.train_path}: file not found (make one with tools/prepare_dataset.py)")
    val_path = args.val_path
    if val_path and not os.path.isfile(val_path):
        if val_path != D["val_path"]:
            raise UserError(f"--val-path {val_path}: file not found")
        print(f"warning: {val_path} not found: training without validation")
        val_path = ""
    class_names = parse_class_names(args.class_names, args.num_class)
    mean_pixels, std_pixels = pixel_stats(args)
    num_example = args.num_example if args.num_example > 0 else count_records(args.train_path)
    prefix = f"{args.prefix}_{args.network}_{args.data_shape}"

    from symbol.symbol_factory import NETWORKS

    if args.network not in NETWORKS:
        from symbol.rcnn_factory import NETWORKS as RCNN_NETWORKS

        if args.network in RCNN_NETWORKS:
            raise UserError(f"--network {args.network}: Faster R-CNN training is not wired into train.py yet")
        known = ", ".join(sorted(NETWORKS) + sorted(RCNN_NETWORKS))
        raise UserError(f"--network {args.network}: unknown network; known: {known}")

    from train.train_net import train_net

    train_net(
        args.network, args.train_path, args.num_class, args.batch_size, args.data_shape,
        mean_pixels, args.resume, args.finetune, args.pretrained, args.epoch,
        prefix, ctx, args.begin_epoch, args.end_epoch, args.frequent, args.lr, args.momentum, args.wd,
        args.lr_steps, args.lr_factor, args.freeze_pattern, num_example, args.label_width,
        args.nms_thresh, args.force_nms, args.overlap_thresh, args.use_difficult, class_names,
        args.use_voc07_metric, args.nms_topk, args.force_nms, args.train_list, val_path, args.val_list,
        args.monitor, args.monitor_pattern, args.log_file or None, args.kv_store,
        std_pixels=std_pixels, warmup_epochs=args.warmup_epochs,
        cls_loss=args.cls_loss, seed=args.seed,
    )


if __name__ == "__main__":
    run_cli(main)
