"""Write the inference graph (no loss layers) and its weights for deployment.

    python tools/deploy.py --network toy --data-shape 256 --num-class 3 --prefix model/ssd_ --epoch 10

writes ``model/deploy_ssd_toy_256-symbol.json`` and ``-0010.params`` (the
original's naming). ``evaluate.py --deploy`` and ``demo.py --deploy`` load it,
and so does ``mx.gluon.SymbolBlock.imports(json, ['data'], params)``.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import config  # noqa: E402,F401  (thread defaults before mxnet loads)
from config.defaults import DEPLOY as D  # noqa: E402
from config.errors import run_cli  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Convert a trained model to a deployable one",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--network", default=D["network"], help="network name")
    a("--epoch", type=int, default=D["epoch"], help="epoch of the trained model")
    a("--prefix", default=D["prefix"], help="model prefix; a trailing '_' appends <network>_<data-shape>")
    a("--data-shape", type=int, default=D["data_shape"], help="input side length")
    a("--num-class", type=int, default=D["num_class"], help="number of object classes")
    a("--nms", dest="nms_thresh", type=float, default=D["nms"], help="non-maximum suppression threshold")
    a("--force", dest="force_nms", action="store_true", default=True,
      help="suppress overlapping boxes of different classes (default)")
    a("--no-force", dest="force_nms", action="store_false", help="suppress only within a class")
    a("--topk", dest="nms_topk", type=int, default=D["topk"], help="detections kept per image before NMS")
    return p.parse_args(argv)


def deploy(network: str, prefix: str, epoch: int, data_shape: int, num_class: int, nms_thresh: float,
           force_nms: bool, nms_topk: int) -> str:
    """Save the test graph of ``prefix-epoch`` as ``deploy_<prefix>``; returns the new prefix."""
    from evaluate.evaluate_net import deploy_prefix, load_test_model
    from train.checkpoint import save_params

    symbol, args, auxs = load_test_model(network, prefix, epoch, data_shape, num_class, nms_thresh, force_nms,
                                         nms_topk)
    wanted = set(symbol.list_arguments()) | set(symbol.list_auxiliary_states())
    out_prefix = deploy_prefix(prefix)
    save_params(out_prefix, epoch, symbol, {k: v for k, v in args.items() if k in wanted},
                {k: v for k, v in auxs.items() if k in wanted})
    return out_prefix


def main(argv=None) -> None:
    args = parse_args(argv)
    from evaluate.evaluate_net import model_prefix

    prefix = model_prefix(args.prefix, args.network, args.data_shape)
    out = deploy(args.network, prefix, args.epoch, args.data_shape, args.num_class, args.nms_thresh,
                 args.force_nms, args.nms_topk)
    print(f"Saved deploy model: {out}-symbol.json, {out}-{args.epoch:04d}.params")


if __name__ == "__main__":
    run_cli(main)
