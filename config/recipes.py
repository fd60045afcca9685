"""Training recipes for small data and small networks, and the synthetic sets they were measured on.

A recipe is a list of ``train.py`` flags on top of the quick start's fixed ones
(toy SSD at 128 px, mirror-only augmentation, a one-epoch warm-up).
``tools/quickstart.py --recipe`` trains with one; ``tools/recipe_ablation.py``
compares them on both sets over several seeds (docs/benchmarks.md, "Training
recipes"). ``train.py``'s own defaults stay example/ssd's recipe for VOC.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

# tools/make_synthetic.py flags of the quick start's set: 3 shapes of 20-60% of the image side, at most 4 an
# image, few cut by the border (inside the toy anchors' range of 0.2-0.96)
QUICKSTART_SET = ("--classes", "3", "--min-size", "0.2", "--max-size", "0.6", "--max-objects", "4",
                  "--truncation", "0.1")
# a harder set the recipes were not tuned on: twice the classes, smaller and more crowded objects, more of
# them cut by the border
CROWDED_SET = ("--classes", "6", "--min-size", "0.15", "--max-size", "0.5", "--max-objects", "8",
               "--truncation", "0.3")
SYNTHETIC_SETS = {"quickstart": QUICKSTART_SET, "crowded": CROWDED_SET}

# train.py flags every recipe shares; checkpoints are <prefix>_toy_128-NNNN.params
NETWORK = "toy"
DATA_SHAPE = 128
COMMON_FLAGS = ("--network", NETWORK, "--data-shape", str(DATA_SHAPE), "--warmup-epochs", "1", "--augment", "flip")


@dataclass(frozen=True)
class Recipe:
    """``epochs`` of training with ``flags`` (train.py flags other than --end-epoch)."""

    epochs: int
    flags: tuple[str, ...]

    def train_flags(self) -> list[str]:
        """The recipe's train.py flags, --end-epoch included."""
        return [*COMMON_FLAGS, *self.flags, "--end-epoch", str(self.epochs)]


# twice the updates an epoch at four times the rate, decayed by a cosine, validated every 6th epoch
B8_COSINE = Recipe(18, ("--batch-size", "8", "--lr", "0.2", "--lr-schedule", "cosine", "--val-interval", "6"))
# and twice the weight decay
B8_COSINE_WD = dataclasses.replace(B8_COSINE, flags=(*B8_COSINE.flags, "--wd", "0.001"))
# and anchors fitted to the data where the preset covers under 95% of its objects: as much mAP as the step
# recipe in half its time, on both sets (docs/benchmarks.md, "Training recipes")
FAST = dataclasses.replace(B8_COSINE_WD, flags=(*B8_COSINE_WD.flags, "--anchor-sizes", "auto"))
# each recipe after "step" adds one change to the one before it, up to "fast"; the last ones are variants of it
RECIPES = {
    # example/ssd's schedule shape at the toy's scale: lr 0.05, 10x down at 75% and 90% of the epochs
    "step": Recipe(40, ("--batch-size", "16", "--lr", "0.05", "--lr-steps", "30,36")),
    # the same cut to 16 epochs: what fewer epochs alone cost
    "step-short": Recipe(16, ("--batch-size", "16", "--lr", "0.05", "--lr-steps", "12,14")),
    "b8-cosine": B8_COSINE,
    "b8-cosine-wd": B8_COSINE_WD,
    "fast": FAST,
    # and a weight average
    "fast-ema": dataclasses.replace(FAST, flags=(*FAST.flags, "--ema", "0.998")),
    # or label smoothing
    "fast-ls": dataclasses.replace(FAST, flags=(*FAST.flags, "--label-smoothing", "0.1")),
    # or the GIoU box loss
    "fast-giou": dataclasses.replace(FAST, flags=(*FAST.flags, "--loc-loss", "giou")),
}
# the recipe make quickstart trains with
QUICKSTART_RECIPE = "fast"


def data_commands(python: str, data_dir: str, set_flags: tuple[str, ...], num_train: int, num_val: int,
                  seed: int) -> list[list[str]]:
    """The commands that make a synthetic set in ``data_dir`` and pack it to ``train.rec`` / ``val.rec``.

    Run from the repository root; ``data_dir/synth.names`` holds the class names.
    """
    devkit = f"{data_dir}/VOCdevkit"
    commands = [[python, "tools/make_synthetic.py", "--out", data_dir, *set_flags, "--num-train", str(num_train),
                 "--num-val", str(num_val), "--seed", str(seed)]]
    for split in ("train", "val"):
        commands.append([python, "tools/prepare_dataset.py", "--dataset", "pascal", "--year", "synth", "--set", split,
                         "--root", devkit, "--target", f"{data_dir}/{split}.lst", "--class-names",
                         f"{data_dir}/synth.names"] + (["--no-shuffle"] if split == "val" else []))
    return commands


def train_command(python: str, recipe: Recipe, data_dir: str, num_class: int, prefix: str, seed: int,
                  log: str) -> list[str]:
    """train.py on ``data_dir``'s train.rec/val.rec from scratch with ``recipe``; checkpoints go to ``prefix``."""
    return [python, "train.py", *recipe.train_flags(), "--num-class", str(num_class),
            "--class-names", f"{data_dir}/synth.names", "--gpus", "", "--train-path", f"{data_dir}/train.rec",
            "--val-path", f"{data_dir}/val.rec", "--pretrained", "", "--freeze", "", "--prefix", prefix,
            "--num-example", "-1", "--frequent", "10", "--seed", str(seed), "--log", log]
