"""INT8 post-training quantization of a trained SSD with MKLDNN (see :mod:`evaluate.quantization`).

    python tools/quantize.py --prefix model/ssd_toy_128 --epoch 40 --calib-rec data/val.rec
    python evaluate.py --prefix model/ssd_toy_128-quantized --epoch 0 --rec-path data/val.rec
"""
from __future__ import annotations

import argparse
import logging

from config.errors import run_cli
from config.output_lock import output_lock
from evaluate.quantization import CALIB_MODES, QUANTIZED_DTYPES, QUANTIZED_SUFFIX, quantize


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Quantize a trained SSD to INT8 (MKLDNN, CPU)",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--prefix", required=True, help="checkpoint prefix (its <prefix>-ssd.json supplies network, shape, classes)")
    a("--epoch", type=int, required=True, help="epoch of the checkpoint")
    a("--calib-rec", required=True, help="record file whose first batches calibrate the ranges")
    a("--calib-mode", choices=CALIB_MODES, default="naive",
      help="none: ranges at run time; naive: min/max of the calibration outputs; entropy: KL thresholds")
    a("--num-calib-batches", type=int, default=5, help="calibration batches of --batch-size images")
    a("--batch-size", type=int, default=32, help="calibration batch size")
    a("--quantized-dtype", choices=QUANTIZED_DTYPES, default="auto",
      help="auto: uint8 after ReLU, int8 elsewhere")
    a("--out", default=None, help=f"output prefix (default: <prefix>{QUANTIZED_SUFFIX})")
    return p
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = args.out or args.prefix + QUANTIZED_SUFFIX
    with output_lock(out, f"--out {out}" if args.out else out):  # graph, weights, run config: one run's
        quantize(args.prefix, args.epoch, args.calib_rec, args.calib_mode, args.num_calib_batches,
                 args.batch_size, args.quantized_dtype, out, logger=logging.getLogger())
    print(f"Saved quantized model: {out}-symbol.json, {out}-0000.params, {out}-ssd.json")
if __name__ == "__main__":
    run_cli(main)
