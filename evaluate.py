"""Evaluate a trained detector on a .rec file: a per-class AP table, then ``mAP = 0.xxxx``.

    python evaluate.py --network toy --data-shape 256 --prefix model/ssd_ --epoch 10 \
        --rec-path data/val.rec --num-class 3 --class-names data/synth/synth.names
    python evaluate.py --network faster_rcnn_small --prefix model/rcnn_ --epoch 10 \
        --rec-path data/val.rec --num-class 3 --class-names data/synth/synth.names

With the run config train.py saves (``<prefix>-ssd.json`` / ``-rcnn.json``)
no other flag is needed: ``python evaluate.py --prefix model/ssd_toy_128 --epoch 10 --rec-path data/val.rec``.
Faster R-CNN rebuilds the run's test graph and preprocessing from
``<prefix>-rcnn.json``; the SSD flags --data-shape, --mean-*/--std-*, --nms*,
--force, --batch-size, --list-path, --label-width, --deploy and --coco are
refused for it (and the R-CNN test flags for SSD).
"""
import argparse
import dataclasses
import logging
import os

import config  # noqa: F401  (thread defaults before mxnet loads)
from config.cli import (
    ArgumentParser,
    add_device_args,
    add_pixel_args,
    parse_known_given,
    refuse_given,
    require_number,
    require_writable_dir,
)
from config.defaults import EVALUATE as D
from config.errors import UserError, run_cli
from config.train_config import RCNNConfig
from evaluate.evaluate_rcnn import add_rcnn_test_args


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Evaluate a network on a record file",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--rec-path", default=D["rec_path"], help="evaluation record file")
    a("--list-path", default=D["list_path"], help="list file (replaces the labels in the record)")
    a("--network", default=D["network"], help="network name")
    a("--num-batch", type=int, default=None, help="score only this many batches (default: the whole file)")
    a("--batch-size", type=int, default=D["batch_size"], help="evaluation batch size")
    a("--num-class", type=int, default=D["num_class"], help="number of classes")
    a("--class-names", default=D["class_names"], help="comma separated class names, or a file")
    a("--epoch", type=int, default=D["epoch"], help="epoch of the trained model")
    a("--prefix", default=None,
      help=f"model prefix: the run's <prefix>-ssd.json / -rcnn.json supplies the other settings; a trailing "
           f"'_' appends <network>_<data-shape>, for Faster R-CNN <network> "
           f"(SSD: {D['prefix']}, Faster R-CNN: {RCNNConfig.prefix}_)")
    add_device_args(p)
    a("--cpu", action="store_true", help="use the CPU (same as --gpus '')")
    a("--data-shape", type=int, default=D["data_shape"], help="input side length")
    add_pixel_args(p, D)
    a("--nms", dest="nms_thresh", type=float, default=D["nms"], help="non-maximum suppression threshold")
    a("--nms-topk", type=int, default=400, help="detections kept per image before NMS")
    a("--overlap", dest="overlap_thresh", type=float, default=D["overlap"], help="evaluation overlap threshold")
    a("--force", dest="force_nms", action="store_true", help="suppress overlaps across classes")
    a("--use-difficult", action="store_true", help="count difficult objects")
    a("--voc07", dest="use_voc07_metric", action="store_true", default=True, help="VOC07 11-point metric")
    a("--no-voc07", dest="use_voc07_metric", action="store_false", help="VOC10+ area metric")
    a("--deploy", dest="deploy_net", action="store_true", help="load the model written by tools/deploy.py")
    a("--label-width", type=int, default=350, help="label pad width of the record")
    a("--coco", action="store_true", help="also print COCO AP (needs pycocotools: pip install -e '.[coco]')")
    a("--plot-pr", metavar="DIR", default="", help="write a precision-recall curve PNG per class to DIR")
    a("--analyze", metavar="DIR", default="",
      help="also write an error analysis to DIR: a confusion matrix (PNG and CSV, IoU --overlap, score >= 0.3), "
           "AP by object size in pixels, and the images with the most missed objects")
    a("--dtype", choices=("float32", "bfloat16"), default="float32",
      help="bfloat16: convolutions in bfloat16 with the float32 weights (SSD; CPUs with avx512_bf16)")
    a("--onnx", metavar="FILE", default=None,
      help="score a model written by tools/export_onnx.py with onnxruntime (its metadata supplies the settings)")
    add_rcnn_test_args(p)
    return p


def format_ap_table(aps: dict, mean_ap: float) -> str:
    """A two-column table of per-class AP followed by the ``mAP = `` line."""
    width = max([len("class")] + [len(name) for name in aps])
    lines = [f"{'class':<{width}}  AP", f"{'-' * width}  ------"]
    lines += [f"{name:<{width}}  {ap:.4f}" for name, ap in aps.items()]
    lines.append(f"mAP = {mean_ap:.4f}")
    return "\n".join(lines)


def eval_settings(model, args: argparse.Namespace, ctx: list):
    """The :class:`evaluate.evaluation.EvalSettings` of the parsed flags for ``model``
    (an :class:`evaluate.run_settings.InferenceSettings`)."""
    from evaluate.evaluation import EvalSettings
    from evaluate.scoring import MetricOptions

    options = MetricOptions(voc07=args.use_voc07_metric, ovp_thresh=args.overlap_thresh,
                            use_difficult=args.use_difficult, coco=args.coco)
    return EvalSettings(model, args.rec_path, epoch=args.epoch, ctx=ctx, batch_size=args.batch_size,
                        list_path=args.list_path, num_batch=args.num_batch, deploy=args.deploy_net, metric=options,
                        pr_dir=args.plot_pr)


def main(argv=None) -> None:
    parser = build_parser()
    args = parse_known_given(parser, argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from config.devices import parse_devices
    from evaluate.run_settings import resolve_inference

    if args.cpu:
        refuse_given(parser, args, ("gpus", "cpus"), "--cpu runs on one CPU; give one of them")
    if args.onnx:
        from evaluate.onnx_detector import refuse_with_onnx

        refuse_with_onnx(parser, args)
    if args.coco:
        try:
            import pycocotools  # noqa: F401
        except ImportError:
            raise UserError("--coco: needs pycocotools: pip install -e '.[coco]'") from None
    ctx = parse_devices("" if args.cpu else args.gpus, args.cpus)
    if args.num_batch is not None and args.num_batch <= 0:
        raise UserError(f"--num-batch {args.num_batch}: must be positive")
    if args.batch_size <= 0:
        raise UserError(f"--batch-size {args.batch_size}: must be positive")
    require_number("--num-class", args.num_class, 1)
    if args.plot_pr:
        require_writable_dir("--plot-pr", os.path.join(args.plot_pr, "pr.png"))
    if args.analyze:
        require_writable_dir("--analyze", os.path.join(args.analyze, "confusion.csv"))
    if args.onnx:  # the model's metadata, not a run config, describes it
        from evaluate.onnx_detector import onnx_settings

        model = onnx_settings(args.onnx)
        if "label_width" in args.given:
            model = dataclasses.replace(model, label_width=args.label_width)
    else:
        model = resolve_inference(parser, args, D["prefix"], D["class_names"], RCNNConfig.prefix + "_")
        if model.is_rcnn:
            from evaluate.run_settings import refuse_multi_device

            refuse_multi_device(ctx, "--gpus" if "gpus" in args.given else "--cpus")
    from evaluate.evaluation import evaluate_model

    images: dict[int, tuple] = {}
    result = evaluate_model(eval_settings(model, args, ctx),
                            on_image=(lambda i, dets, labels: images.update({i: (dets, labels)})) if args.analyze
                            else None)
    print(format_ap_table(result["aps"], result["mAP"]))
    if "coco" in result:
        print("COCO: " + ", ".join(f"{name} {value:.4f}" for name, value in result["coco"].items()))
    if args.plot_pr:
        print(f"precision-recall curves: {len(result['pr_files'])} PNG files in {args.plot_pr}")
    if args.analyze:
        files = write_error_analysis(args, model, [images[i] for i in sorted(images)])
        print(f"error analysis: {', '.join(os.path.basename(f) for f in files)} in {args.analyze}")


def write_error_analysis(args: argparse.Namespace, model, images: list[tuple]) -> list[str]:
    """``--analyze``: the confusion matrix, AP by size and worst images of the evaluated ``images``
    (``(detections, labels)`` per image in record order); returns the files written."""
    from evaluate.error_analysis import write_analysis

    if model.is_rcnn:  # sizes in pixels of the image the network saw: resized as the detector resizes it
        from dataset.rcnn_loader import resize_scale
        from dataset.recordio import image_sizes

        cfg = model.rcnn
        sizes = image_sizes(args.rec_path)[:len(images)]
        shape = [(w * resize_scale(h, w, cfg.img_short_side, cfg.img_long_side),
                  h * resize_scale(h, w, cfg.img_short_side, cfg.img_long_side)) for w, h in sizes]
    else:
        shape = model.data_shape
    written = write_analysis(args.analyze, [d for d, _ in images], [label for _, label in images], args.rec_path,
                             model.class_names, shape, iou=args.overlap_thresh,
                             use_07_metric=args.use_voc07_metric)
    return written["files"]


if __name__ == "__main__":
    run_cli(main)
