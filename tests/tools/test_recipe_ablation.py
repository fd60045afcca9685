"""config/recipes.py and tools/recipe_ablation.py: the recipes reach train.py, the table's arithmetic,
and an interrupted ablation continuing without running a finished row again."""
import json
import os

import pytest
from helpers import load_script

from config.errors import UserError
from config.recipes import RECIPES, train_command

ablation = load_script("tools/recipe_ablation")
train_script = load_script("train")


@pytest.mark.parametrize("name", list(RECIPES))
def test_each_recipe_is_a_valid_train_command(name, synthetic_rec, tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for split, rec in (("train", synthetic_rec.train_rec), ("val", synthetic_rec.val_rec)):
        for ext in (".rec", ".idx"):
            os.symlink(rec[:-4] + ext, data_dir / f"{split}{ext}")
    (data_dir / "synth.names").write_text("circle\nsquare\ntriangle\n")
    recipe = RECIPES[name]
    argv = train_command("python", recipe, str(data_dir), 3, str(tmp_path / "m" / "ssd"), 1, "")[2:]
    config, _ = train_script.build_run(argv)
    assert config.end_epoch == recipe.epochs
    flags = dict(zip(recipe.flags[::2], recipe.flags[1::2]))
    assert config.batch_size == int(flags["--batch-size"])
    assert config.lr == float(flags["--lr"])
    assert config.lr_schedule == flags.get("--lr-schedule", "step")
    assert config.ema == float(flags.get("--ema", 0.0))
    assert (config.network, config.data_shape, config.warmup_epochs, config.augment) == ("toy", 128, 1, "flip")


def test_short_recipes_take_at_most_half_the_epochs_and_each_row_adds_one_change():
    names = list(RECIPES)
    for name in names[1:]:
        assert RECIPES[name].epochs * 2 <= RECIPES["step"].epochs
    # a chain up to "fast", then variants of "fast"
    chain = names[2:names.index("fast") + 1]
    pairs = [*zip(chain, chain[1:]), *(("fast", name) for name in names[names.index("fast") + 1:])]
    added = {name: set(RECIPES[name].flags) - set(RECIPES[before].flags) for before, name in pairs}
    assert added == {"b8-cosine-wd": {"--wd", "0.001"}, "fast": {"--anchor-sizes", "auto"},
                     "fast-ema": {"--ema", "0.998"}, "fast-ls": {"--label-smoothing", "0.1"},
                     "fast-giou": {"--loc-loss", "giou"}}
    assert all(set(RECIPES[before].flags) <= set(RECIPES[name].flags) for before, name in pairs)


def test_summary_is_mean_sample_sd_range_and_time_relative_to_the_step_recipe():
    results = {("a", "step", "float32"): [{"map": 0.8, "train_seconds": 600}, {"map": 0.9, "train_seconds": 660}],
               ("a", "fast", "float32"): [{"map": 0.85, "train_seconds": 300}, {"map": 0.95, "train_seconds": 330},
                               {"map": 0.90, "train_seconds": 315}]}
    rows = {row[1]: row for row in ablation.summary_rows(results)}
    # step: mean 0.85, sd sqrt(((0.05)^2 * 2) / 1) = 0.0707, 10.5 min
    assert rows["step"][4:8] == ["0.8500 ± 0.0707", "0.8000-0.9000", "10.5", "1.00"]
    # fast: mean 0.90, sd 0.05, 5.25 min = 0.5 of step
    assert rows["fast"][4:8] == ["0.9000 ± 0.0500", "0.8500-0.9500", "5.2", "0.50"]
    assert rows["fast"][2:4] == ["float32", str(RECIPES["fast"].epochs)]
    assert rows["fast"][-1] == " ".join(RECIPES["fast"].flags)


def test_a_finished_run_is_not_run_again(tmp_path, monkeypatch):
    run_dir = tmp_path / "quickstart" / "fast-7"
    run_dir.mkdir(parents=True)
    (run_dir / "result.json").write_text(json.dumps({"map": 0.5, "train_seconds": 1.0, "load_at_start": 0.1}))
    monkeypatch.setattr(ablation, "run", lambda *a: pytest.fail("a finished run ran again"))
    assert ablation.train_and_score(str(tmp_path), str(run_dir), "fast", 7)["map"] == 0.5


def test_a_run_without_a_map_line_is_an_error_naming_its_log(tmp_path, monkeypatch):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "synth.names").write_text("a\n")
    monkeypatch.setattr(ablation, "run", lambda cmd, log: open(log, "a").close())
    with pytest.raises(UserError, match="run.log"):
        ablation.train_and_score(str(data_dir), str(tmp_path / "run"), "fast", 1)
    assert not (tmp_path / "run" / "result.json").exists()


@pytest.mark.parametrize("argv, flag", [(["--recipes", "fast,nope"], "--recipes"), (["--sets", ""], "--sets"),
                                        (["--seeds", "1,x"], "--seeds")])
def test_bad_selection_is_a_one_line_error(argv, flag, tmp_path):
    with pytest.raises(UserError, match=flag):
        ablation.parse_args(["--out", str(tmp_path), *argv])
