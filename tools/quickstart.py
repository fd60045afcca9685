"""The toolkit's main job end to end, on data it makes itself (``make quickstart``).

1. generate a synthetic VOC-layout data set (3 classes, 1,000 train / 200 val);
2. pack it to RecordIO with tools/prepare_dataset.py;
3. train the toy SSD on the CPU with train.py;
4. score VOC07 mAP on the validation split with evaluate.py;
5. run demo.py on a few validation images.

Each step is the command a user would type; it is printed before it runs.

The data and the recipe are config/recipes.py's (QUICKSTART_SET, RECIPES):

* objects span 20% to 60% of the image side, inside the toy anchors' range of
  0.2 to 0.96; at most 4 per image, and only 10% may be cut by the border;
* the input is 128x128: at 256 the toy network's first two scales see less of
  the image than their anchors cover (receptive fields of about 52 and 108 px
  for 51-70 and 95-115 px anchors), and it learns several times slower;
* mirror-only augmentation (``--augment flip``): the SSD crop/pad samplers need
  hundreds of epochs, not tens;
* ``--recipe fast`` (the default): 18 epochs, batch 8, lr 0.2 after a one-epoch
  warm-up, cosine decay, weight decay 0.001, validation every 6th epoch, anchors
  fitted where the preset covers under 95% of the objects; ``--recipe step``: 40
  epochs, batch 16, lr 0.05, 10x down at epochs 30 and 36, the same mAP in twice
  the time (docs/benchmarks.md, "Training recipes").
"""
import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import time

from config.cli import parse_class_names
from config.errors import UserError, run_cli
from config.recipes import DATA_SHAPE, NETWORK, QUICKSTART_RECIPE, QUICKSTART_SET, RECIPES, data_commands, train_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))



def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", default=os.path.join(ROOT, "output", "quickstart"), help="where everything goes")
    p.add_argument("--num-train", type=int, default=1000, help="training images")
    p.add_argument("--num-val", type=int, default=200, help="validation images")
    p.add_argument("--recipe", choices=tuple(RECIPES), default=QUICKSTART_RECIPE,
                   help="training recipe (config/recipes.py)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the recipe's)")
    p.add_argument("--seed", type=int, default=7, help="data and initialisation seed")
    p.add_argument("--demo-images", type=int, default=4, help="validation images to annotate")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="train.py --dtype (bfloat16: CPUs with avx512_bf16)")
    return p.parse_args(argv)


def run(cmd: list, log: list) -> None:
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    tic = time.time()
    result = subprocess.run(cmd, cwd=ROOT)
    log.append((cmd[1], time.time() - tic))
    if result.returncode != 0:
        raise UserError(f"quickstart step failed (exit {result.returncode}): {' '.join(cmd[:2])}")


def main(argv=None) -> None:
    args = parse_args(argv)
    py = sys.executable
    out = os.path.abspath(args.out)
    data_dir = os.path.join(out, "data")
    model_prefix = os.path.join(out, "model", "ssd")
    names = os.path.join(data_dir, "synth.names")
    demo_dir = os.path.join(out, "demo")
    steps: list = []
    start = time.time()

    for cmd in data_commands(py, data_dir, QUICKSTART_SET, args.num_train, args.num_val, args.seed):
        run(cmd, steps)
    num_class = len(parse_class_names(names))
    recipe = RECIPES[args.recipe]
    if args.epochs is not None:
        recipe = dataclasses.replace(recipe, epochs=args.epochs)
    overrides = ["--batch-size", str(args.batch_size)] if args.batch_size is not None else []
    run([*train_command(py, recipe, data_dir, num_class, model_prefix, args.seed, os.path.join(out, "train.log")),
         *overrides, "--dtype", args.dtype], steps)
    prefix = f"{model_prefix}_{NETWORK}_{DATA_SHAPE}"
    # the run config (<prefix>-ssd.json) supplies network, shape, classes, pixels and NMS settings
    run([py, "evaluate.py", "--prefix", prefix, "--epoch", str(recipe.epochs),
         "--rec-path", os.path.join(data_dir, "val.rec"), "--plot-pr", os.path.join(out, "pr")], steps)
    with open(os.path.join(data_dir, "VOCdevkit", "VOCsynth", "ImageSets", "Main", "val.txt")) as f:
        val_ids = [line.strip() for line in f if line.strip()][: args.demo_images]
    images = ",".join(os.path.join(data_dir, "VOCdevkit", "VOCsynth", "JPEGImages", f"{i}.jpg") for i in val_ids)
    run([py, "demo.py", "--prefix", prefix, "--epoch", str(recipe.epochs), "--cpu", "--images", images,
         "--thresh", "0.5", "--out-dir", demo_dir], steps)

    total = time.time() - start
    print("\nQuick start finished in %.1f min:" % (total / 60))
    for name, seconds in steps:
        print(f"  {name:<28} {seconds / 60:5.1f} min")
    print(f"  checkpoints:      {prefix}-NNNN.params (best: {prefix}-best-0000.params)")
    print(f"  curves and log:   {prefix}-curves.png, {prefix}-metrics.csv, {os.path.join(out, 'train.log')}")
    print(f"  PR curves:        {os.path.join(out, 'pr')}")
    print(f"  annotated images: {demo_dir}")


if __name__ == "__main__":
    run_cli(main)
