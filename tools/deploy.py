"""Write the inference graph (no loss layers) and its weights for deployment.

    python tools/deploy.py --network toy --data-shape 256 --num-class 3 --prefix model/ssd_ --epoch 10

writes ``model/deploy_ssd_toy_256-symbol.json`` and ``-0010.params`` (the
original's naming). ``evaluate.py --deploy`` and ``demo.py --deploy`` load it,
and so does ``mx.gluon.SymbolBlock.imports(json, ['data'], params)``.
"""
import argparse
import dataclasses

import config  # noqa: F401  (thread defaults before mxnet loads)
from config.cli import ArgumentParser, parse_known_given, require_number, require_writable_dir
from config.defaults import DEPLOY as D
from config.errors import UserError, run_cli
from config.output_lock import output_lock


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(description="Convert a trained model to a deployable one",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--network", default=D["network"], help="network name")
    a("--epoch", type=int, default=D["epoch"], help="epoch of the trained model")
    a("--prefix", default=D["prefix"], help="model prefix: the run's <prefix>-ssd.json supplies the other settings; "
      "a trailing '_' appends <network>_<data-shape>")
    a("--data-shape", type=int, default=D["data_shape"], help="input side length")
    a("--num-class", type=int, default=D["num_class"], help="number of object classes")
    a("--nms", dest="nms_thresh", type=float, default=D["nms"], help="non-maximum suppression threshold")
    a("--force", dest="force_nms", action="store_true", default=True,
      help="suppress overlapping boxes of different classes (default)")
    a("--no-force", dest="force_nms", action="store_false", help="suppress only within a class")
    a("--topk", dest="nms_topk", type=int, default=D["topk"], help="detections kept per image before NMS")
    return p


def deploy(network: str, prefix: str, epoch: int, data_shape: int, num_class: int, nms_thresh: float,
           force_nms: bool, nms_topk: int) -> str:
    """Save the test graph of ``prefix-epoch`` as ``deploy_<prefix>``; returns the new prefix."""
    from evaluate.checkpoint import save_params
    from evaluate.ssd_model import deploy_prefix, load_test_model

    symbol, args, auxs = load_test_model(network, prefix, epoch, data_shape, num_class, nms_thresh, force_nms,
                                         nms_topk)
    wanted = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    out_prefix = deploy_prefix(prefix)
    save_params(out_prefix, epoch, symbol, {k: v for k, v in args.items() if k in wanted},
                {k: v for k, v in auxs.items() if k in wanted})
    return out_prefix


def main(argv=None) -> None:
    parser = build_parser()
    args = parse_known_given(parser, argv)
    from config.run_config import save_run_config
    from config.train_config import SSDConfig
    from evaluate.run_settings import resolve_inference

    args.prefix = args.prefix or D["prefix"]
    require_number("--num-class", args.num_class, 1)
    settings = resolve_inference(parser, args, D["prefix"], "", D["prefix"])
    require_writable_dir("--prefix", settings.prefix)
    if settings.is_rcnn:
        raise UserError(f"--prefix {settings.prefix}: a Faster R-CNN run; tools/deploy.py writes SSD graphs")
    from evaluate.ssd_model import deploy_prefix

    out = deploy_prefix(settings.prefix)
    with output_lock(out):  # the graph, weights and run config of one run, never of two
        deploy(settings.network, settings.prefix, args.epoch, settings.data_shape, settings.num_classes,
               settings.nms_thresh, settings.force_suppress, settings.nms_topk)
        # the deployed model's own run config: the run's, with the NMS settings now built into its graph
        run = settings.run if isinstance(settings.run, SSDConfig) else SSDConfig(
            network=settings.network, data_shape=settings.data_shape, num_classes=settings.num_classes)
        save_run_config(dataclasses.replace(run, prefix=out, nms_thresh=settings.nms_thresh,
                                            force_suppress=settings.force_suppress, nms_topk=settings.nms_topk))
    print(f"Saved deploy model: {out}-symbol.json, {out}-{args.epoch:04d}.params, {out}-ssd.json")


if __name__ == "__main__":
    run_cli(main)
