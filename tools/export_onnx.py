"""Export a trained SSD to ONNX, detection included (see :mod:`evaluate.onnx_export`).

    python tools/export_onnx.py --prefix model/ssd_toy_128 --epoch 40 --out model/ssd_toy_128.onnx
    python evaluate.py --onnx model/ssd_toy_128.onnx --rec-path data/val.rec
    python demo.py --onnx model/ssd_toy_128.onnx --images a.jpg
"""
from __future__ import annotations

import argparse

from config.errors import UserError, run_cli
from config.output_lock import output_lock


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a trained SSD (detection included) to ONNX",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prefix", required=True, help="checkpoint prefix (its <prefix>-ssd.json supplies the settings)")
    p.add_argument("--epoch", type=int, required=True, help="epoch of the checkpoint")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    return p
def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise UserError("tools/export_onnx.py needs onnx: pip install -e '.[onnx]'") from None
    from evaluate.onnx_export import export_onnx  # mxnet and onnx load late: --help stays fast

    with output_lock(args.out, f"--out {args.out}"):  # one process writes the file at a time
        out = export_onnx(args.prefix, args.epoch, args.out)
    print(f"Saved ONNX model: {out} (input data [B, 3, S, S], output detections [B, K, 6])")
if __name__ == "__main__":
    run_cli(main)
