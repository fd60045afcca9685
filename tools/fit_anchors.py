"""Measure how well a network's anchors fit a data set's boxes, and propose anchors that fit.

    python tools/fit_anchors.py --rec data/train.rec --network toy --data-shape 128
    python tools/fit_anchors.py --rec data/train.rec --network faster_rcnn_vgg16

Prints the anchor coverage (the share of objects whose best anchor passes the training match
rule: SSD's IoU > 0.5, the RPN's IoU >= --rpn-fg-overlap 0.7) overall and by object size in
pixels, before and after fitting, and the exact train.py flags of the proposal. SSD proposals keep
every feature layer's number of sizes and ratios (the heads keep their shapes) and add
--data-shape when no anchors on the network's grid at the given input size reach the target.
Difficult objects are left out, as training leaves them out. See evaluate/anchor_fit.py.
"""
from __future__ import annotations

import argparse
import json
import os

from config.cli import ArgumentParser, require_writable_dir
from config.errors import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description=__doc__.split("\n\n")[0],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rec", required=True, help="training .rec (tools/prepare_dataset.py)")
    p.add_argument("--network", required=True, help="SSD network (toy, vgg16_reduced, ...) or faster_rcnn_*")
    p.add_argument("--data-shape", type=int, default=None,
                   help="SSD input side in pixels (default: the network's); not for Faster R-CNN")
    p.add_argument("--threshold", type=float, default=None,
                   help="match IoU (default: 0.5 for SSD, the network's --rpn-fg-overlap for Faster R-CNN)")
    p.add_argument("--target", type=float, default=0.95, help="coverage to reach (default: %(default)s)")
    p.add_argument("--out", default=None, help="also write the proposal and its coverage as JSON here")
    return p


def _percent(value: float) -> str:
    return "    -" if value != value else f"{100 * value:5.1f}%"


def coverage_table(columns: list[tuple[str, object]], size_note: str) -> list[str]:
    """Lines of a band x report table; ``columns`` are ``(title, CoverageReport)``, same boxes and bands."""
    first = columns[0][1]
    widths = [max(11, len(title) + 1) for title, _ in columns]
    head = f"  {'size ' + size_note:<22}{'objects':>14}" + "".join(f"{t:>{w}}" for (t, _), w in zip(columns, widths))
    lines = [head]
    for index, band in enumerate(first.bands):
        share = f"{band.count} ({100 * band.count / first.total:.0f}%)"
        cells = "".join(f"{_percent(r.bands[index].share):>{w}}" for (_, r), w in zip(columns, widths))
        lines.append(f"  {band.label + ' px':<22}{share:>14}{cells}")
    cells = "".join(f"{_percent(r.share):>{w}}" for (_, r), w in zip(columns, widths))
    lines.append(f"  {'all':<22}{first.total:>14}{cells}")
    return lines


def _report_dict(report) -> dict:
    return {"anchors": report.anchors, "threshold": report.threshold, "rule": report.rule,
            "objects": report.total, "covered": report.covered, "share": report.share,
            "bands": [{"band_px": b.label, "objects": b.count, "covered": b.covered} for b in report.bands]}


def _read_objects(rec: str):
    from evaluate.anchor_fit import read_record_boxes

    boxes, _, difficult, image = read_record_boxes(rec)
    if not (~difficult).any():
        extra = f" ({int(difficult.sum())} difficult ones are left out)" if difficult.any() else ""
        raise UserError(f"--rec {rec}: no objects to fit anchors to{extra}")
    num_difficult = int(difficult.sum())
    print(f"{rec}: {int((~difficult).sum())} objects in {len(set(image[~difficult].tolist()))} images "
          f"({num_difficult} difficult object{'' if num_difficult == 1 else 's'} left out)")
    return boxes[~difficult], image[~difficult]


def fit_ssd(args: argparse.Namespace) -> dict:
    from evaluate.anchor_fit import fit_ssd_anchors, ssd_feature_shapes
    from symbol.symbol_factory import DEFAULT_DATA_SHAPES

    data_shape = args.data_shape or DEFAULT_DATA_SHAPES[args.network]
    ssd_feature_shapes(args.network, data_shape)  # a one-line error for a size the graph refuses
    threshold = 0.5 if args.threshold is None else args.threshold
    boxes, _ = _read_objects(args.rec)
    fit = fit_ssd_anchors(boxes, args.network, data_shape, threshold=threshold, target=args.target, rec=args.rec)
    columns = [(f"preset@{data_shape}", fit.before)]
    if fit.changed:
        columns.append((f"fitted@{data_shape}", fit.fitted_at_given))
    if fit.data_shape != data_shape:
        columns.append((f"fitted@{fit.data_shape}", fit.after))
    print(f"anchor coverage: share of objects whose best anchor has IoU > {threshold:g} "
          f"(MultiBoxTarget's match), {args.network}:")
    print("\n".join(coverage_table(columns, f"(px at {data_shape})")))
    if fit.data_shape != data_shape:
        print(f"the grid of {args.network} at {data_shape} reaches at most {100 * fit.fitted_at_given.share:.1f}%; "
              + (f"{fit.data_shape} is the smallest input size that reaches {100 * args.target:.0f}%"
                 if fit.reached else f"no input size up to {max(fit.tried)} reaches {100 * args.target:.0f}%; "
                 f"{fit.data_shape} comes closest"))
    elif not fit.reached:
        print(f"no input size up to {max(fit.tried)} that {args.network} accepts reaches {100 * args.target:.0f}%")
    if not fit.changed:
        print(f"the preset anchors reach {100 * fit.before.share:.1f}% (target {100 * args.target:.0f}%): "
              "train.py needs no anchor flags")
    else:
        print("every layer keeps its number of sizes and ratios, so the prediction heads keep their shapes")
        print("train.py flags:")
        print("  " + fit.train_flags())
    return {"network": args.network, "data_shape": fit.data_shape, "given_data_shape": data_shape,
            "changed": fit.changed, "graph_overrides": fit.graph_overrides(), "train_flags": fit.train_flags(),
            "before": _report_dict(fit.before), "after": _report_dict(fit.after)}


def fit_rcnn(args: argparse.Namespace) -> dict:
    from dataset.rcnn_loader import feat_shape_from_symbol
    from evaluate.anchor_fit import RPNGrid, fit_rcnn_anchors, read_record_image_sizes
    from symbol.rcnn_factory import get_rcnn_train, make_config

    if args.data_shape is not None:
        raise UserError(f"--data-shape: Faster R-CNN resizes each image by its own size (--img-short-side, "
                        f"--img-long-side); leave --data-shape out for {args.network}")
    cfg = make_config(args.network)
    threshold = cfg.rpn_fg_overlap if args.threshold is None else args.threshold
    boxes, image = _read_objects(args.rec)
    image_hw = read_record_image_sizes(args.rec)[image]
    feat_shape = feat_shape_from_symbol(get_rcnn_train(args.network, 1, cfg))
    fit = fit_rcnn_anchors(boxes, image_hw, RPNGrid.of(cfg, feat_shape), cfg.rpn_anchor_scales, cfg.rpn_anchor_ratios,
                           threshold, rec=args.rec)
    print(f"anchor coverage: share of objects whose best inside anchor has IoU >= {threshold:g} "
          f"(the RPN's foreground rule), {args.network}, images resized to short side {cfg.img_short_side} "
          f"(long side at most {cfg.img_long_side}):")
    print("\n".join(coverage_table([("preset", fit.before), ("fitted", fit.after)], "(px, resized)")))
    if fit.after.share < args.target:
        print(f"at IoU >= {threshold:g} an anchor covers only objects close to its own size and position; with "
              f"{len(fit.scales)} scales x {len(fit.ratios)} ratios on a stride-{cfg.rpn_feat_stride} grid the "
              f"target of {100 * args.target:.0f}% is out of reach. More scales (a longer --rpn-anchor-scales; the "
              "RPN head, trained from scratch, grows with it) or larger images (--img-short-side) cover more; "
              "each box's best anchor is matched whatever its IoU")
    print("train.py flags:")
    print("  " + fit.train_flags())
    return {"network": args.network, "rpn_anchor_scales": fit.scales, "rpn_anchor_ratios": fit.ratios,
            "train_flags": fit.train_flags(), "before": _report_dict(fit.before), "after": _report_dict(fit.after)}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 0 < args.target <= 1:
        raise UserError(f"--target {args.target}: must be in (0, 1]")
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise UserError(f"--threshold {args.threshold}: must be in (0, 1)")
    if args.data_shape is not None and args.data_shape <= 0:
        raise UserError(f"--data-shape {args.data_shape}: must be a positive number of pixels")
    if args.out:
        require_writable_dir("--out", args.out)
    from symbol.rcnn_factory import NETWORKS as RCNN_NETWORKS
    from symbol.symbol_factory import NETWORKS as SSD_NETWORKS

    if args.network in SSD_NETWORKS:
        result = fit_ssd(args)
    elif args.network in RCNN_NETWORKS:
        result = fit_rcnn(args)
    else:
        raise UserError(f"--network: unknown network {args.network!r}; known networks: "
                        f"{', '.join(sorted(SSD_NETWORKS) + sorted(RCNN_NETWORKS))}")
    if args.out:
        from config.fileio import atomic_open

        with atomic_open(args.out) as f:
            json.dump(result, f, indent=1)
        print(f"wrote {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
