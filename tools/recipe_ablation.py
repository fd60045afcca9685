"""Compare training recipes on synthetic sets over several seeds: VOC07 mAP and training time.

    python tools/recipe_ablation.py --out /tmp/ablation
    python tools/recipe_ablation.py --out /tmp/ablation --sets crowded --recipes step,fast --seeds 1

For each set (config/recipes.py SYNTHETIC_SETS) the data is made and packed once
(data seed fixed); each recipe (config/recipes.py RECIPES) then trains the toy
SSD from scratch once per training seed, and evaluate.py scores the last epoch
on the set's validation images. A finished run keeps ``result.json`` in its
folder and is not run again, so an interrupted ablation continues where it
stopped. The table (mean, sample standard deviation and range over the seeds)
is printed and written to ``OUT/ablation.md``, every run to ``OUT/ablation.csv``
(both cover the runs of the command line, finished earlier or now).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

from config.cli import parse_class_names
from config.errors import UserError, run_cli
from config.recipes import DATA_SHAPE, NETWORK, RECIPES, SYNTHETIC_SETS, data_commands, train_command

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="folder for the data, the runs and the table")
    p.add_argument("--sets", default=",".join(SYNTHETIC_SETS), help="synthetic sets, comma-separated")
    p.add_argument("--recipes", default=",".join(RECIPES), help="recipes, comma-separated")
    p.add_argument("--seeds", default="7,8,9", help="training seeds, comma-separated")
    p.add_argument("--data-seed", type=int, default=7, help="seed of every set's images")
    p.add_argument("--num-train", type=int, default=1000, help="training images of each set")
    p.add_argument("--num-val", type=int, default=200, help="validation images of each set")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                   help="train.py --dtype of every run (bfloat16: CPUs with avx512_bf16)")
    args = p.parse_args(argv)
    args.sets = _choices("--sets", args.sets, SYNTHETIC_SETS)
    args.recipes = _choices("--recipes", args.recipes, RECIPES)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        raise UserError(f"--seeds {args.seeds!r}: expected integers separated by commas") from None
    return args


def _choices(flag: str, value: str, known: dict) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise UserError(f"{flag} {value!r}: choose from {', '.join(known)}")
    return names


def run(cmd: list[str], log_path: str) -> None:
    """Run ``cmd`` from the repository root, its output to ``log_path``; a failure names the log."""
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    with open(log_path, "a") as log:
        if subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise UserError(f"{cmd[1]} failed: see {log_path}")


def make_set(out: str, name: str, args: argparse.Namespace) -> str:
    """Make and pack set ``name`` under ``out`` once; returns its data folder."""
    data_dir = os.path.join(out, name, "data")
    done = os.path.join(data_dir, "packed")
    if not os.path.exists(done):
        os.makedirs(data_dir, exist_ok=True)
        for cmd in data_commands(sys.executable, data_dir, SYNTHETIC_SETS[name], args.num_train, args.num_val,
                                 args.data_seed):
            run(cmd, os.path.join(data_dir, "make.log"))
        open(done, "w").close()
    return data_dir


def train_and_score(data_dir: str, run_dir: str, recipe_name: str, seed: int, dtype: str = "float32") -> dict:
    """Train ``recipe_name`` with ``seed`` in ``dtype`` into ``run_dir`` (once) and score its last epoch."""
    result_path = os.path.join(run_dir, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as f:
            return json.load(f)
    os.makedirs(run_dir, exist_ok=True)
    recipe = RECIPES[recipe_name]
    num_class = len(parse_class_names(os.path.join(data_dir, "synth.names")))
    prefix = os.path.join(run_dir, "ssd")
    log = os.path.join(run_dir, "run.log")
    load = os.getloadavg()[0]
    tic = time.time()
    run([*train_command(sys.executable, recipe, data_dir, num_class, prefix, seed,
                        os.path.join(run_dir, "train.log")), "--dtype", dtype], log)
    seconds = time.time() - tic
    checkpoint = f"{prefix}_{NETWORK}_{DATA_SHAPE}"
    run([sys.executable, "evaluate.py", "--prefix", checkpoint, "--epoch", str(recipe.epochs),
         "--rec-path", os.path.join(data_dir, "val.rec")], log)
    with open(log) as f:
        found = re.findall(r"^mAP = (\d\.\d+)$", f.read(), re.MULTILINE)
    if not found:
        raise UserError(f"evaluate.py printed no 'mAP = ' line: see {log}")
    result = {"map": float(found[-1]), "train_seconds": round(seconds, 1), "load_at_start": round(load, 2)}
    with open(result_path, "w") as f:
        json.dump(result, f)
    return result


def summary_rows(results: dict) -> list[list[str]]:
    """Markdown rows of ``{(set, recipe, dtype): [result, ...]}``: set, recipe, dtype, epochs, mAP mean ± sd,
    range, mean training minutes, time relative to the float32 'step' recipe on the same set."""
    rows = []
    for (set_name, recipe_name, dtype), runs in results.items():
        maps = [r["map"] for r in runs]
        minutes = statistics.mean(r["train_seconds"] for r in runs) / 60
        base = results.get((set_name, "step", "float32"))
        ratio = minutes / (statistics.mean(r["train_seconds"] for r in base) / 60) if base else float("nan")
        spread = statistics.stdev(maps) if len(maps) > 1 else 0.0
        rows.append([set_name, recipe_name, dtype, str(RECIPES[recipe_name].epochs),
                     f"{statistics.mean(maps):.4f} ± {spread:.4f}", f"{min(maps):.4f}-{max(maps):.4f}",
                     f"{minutes:.1f}", f"{ratio:.2f}", " ".join(RECIPES[recipe_name].flags)])
    return rows


def main(argv=None) -> None:
    args = parse_args(argv)
    out = os.path.abspath(args.out)
    results: dict = {}
    total = len(args.sets) * len(args.recipes) * len(args.seeds)
    done = 0
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "ablation.csv"), "w") as table:
        writer = csv.writer(table)
        writer.writerow(["set", "recipe", "dtype", "seed", "epochs", "map", "train_seconds", "load_at_start"])
        for set_name in args.sets:
            data_dir = make_set(out, set_name, args)
            for recipe_name in args.recipes:
                for seed in args.seeds:
                    done += 1
                    print(f"[{done}/{total}] {set_name} / {recipe_name} / {args.dtype} / seed {seed}", flush=True)
                    run_dir = os.path.join(out, set_name, f"{recipe_name}-{args.dtype}-{seed}")
                    result = train_and_score(data_dir, run_dir, recipe_name, seed, args.dtype)
                    print(f"    mAP {result['map']:.4f}, trained in {result['train_seconds'] / 60:.1f} min",
                          flush=True)
                    results.setdefault((set_name, recipe_name, args.dtype), []).append(result)
                    writer.writerow([set_name, recipe_name, args.dtype, seed, RECIPES[recipe_name].epochs,
                                     result["map"], result["train_seconds"], result["load_at_start"]])
                    table.flush()
    header = ["set", "recipe", "dtype", "epochs", "VOC07 mAP (mean ± sd)", "range", "train min", "time / step",
              "train.py flags"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in summary_rows(results)]
    lines.append(f"\n{len(args.seeds)} training seeds ({', '.join(map(str, args.seeds))}), data seed "
                 f"{args.data_seed}, {args.num_train} training / {args.num_val} validation images per set.")
    with open(os.path.join(out, "ablation.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    run_cli(main)
