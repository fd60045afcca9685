"""Anchors set on train.py's command line travel with the checkpoint, and the anchor check runs at the start.

A toy SSD is trained one epoch at 64 px with three sizes on its first layer (the preset has two), so
its first head has a different shape: any script that rebuilt the preset anchors could not even
load the weights, and one that rebuilt other anchors would score differently.
"""
import json
import logging
import os

import numpy as np
import pytest
from helpers import history, load_script, pack_voc, tiny_synthetic, train_args

from config.errors import UserError
from config.run_config import load_run_config
from evaluate import anchor_fit
from evaluate.anchor_fit import fit_ssd_anchors, read_record_boxes, ssd_anchors

SIZES = "[[.1,.15,.2],[.37,.447],[.54,.619],[.71,.79],[.88,.961]]"
RATIOS = "[1,2,.5]"


def train(rec, prefix: str, **flags) -> None:
    """train.py in this process: one epoch of the toy at 64 px with validation; ``flags`` as
    :func:`helpers.train_args` takes them."""
    settings = dict(val_path=rec.val_rec, batch_size=8, end_epoch=1, lr=0.01, lr_steps="",
                    label_width=rec.label_width, seed=0)
    load_script("train").main(train_args(rec, prefix, **{**settings, **flags}))


@pytest.fixture(scope="module")
def custom(synthetic_rec, tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("custom") / "ssd")
    train(synthetic_rec, prefix, anchor_sizes=SIZES, anchor_ratios=RATIOS)
    return prefix + "_toy_64"


@pytest.mark.slow
def test_the_run_config_holds_the_anchors_and_every_script_uses_them(custom, synthetic_rec, tmp_path, capsys):
    run = load_run_config(custom)
    assert run.graph_overrides == {"sizes": json.loads(SIZES.replace(".", "0.")), "ratios": [1, 2, 0.5]}
    trained = float(history(custom)[-1]["val_mAP"])
    evaluate = load_script("evaluate")
    evaluate.main(["--prefix", custom, "--epoch", "1", "--rec-path", synthetic_rec.val_rec])
    mxnet_map = float(capsys.readouterr().out.strip().splitlines()[-1].split("=")[1])
    assert mxnet_map == pytest.approx(trained, abs=6e-5)
    pytest.importorskip("onnx", reason="needs the onnx extra (pip install -e '.[onnx]')")
    onnx_file = str(tmp_path / "custom.onnx")
    load_script("tools/export_onnx").main(["--prefix", custom, "--epoch", "1", "--out", onnx_file])
    capsys.readouterr()
    evaluate.main(["--onnx", onnx_file, "--rec-path", synthetic_rec.val_rec])
    assert float(capsys.readouterr().out.strip().splitlines()[-1].split("=")[1]) == pytest.approx(mxnet_map, abs=2e-4)


@pytest.mark.slow
def test_demo_runs_the_custom_anchors(custom, synthetic_rec, capsys):
    """The first head has 4 anchors a cell (3 sizes + 2 ratios - 1): the preset's 3 would not load."""
    image = synthetic_rec.synth.image_path(synthetic_rec.synth.split("val")[0])
    assert load_script("demo").main(["--prefix", custom, "--epoch", "1", "--images", image, "--cpu",
                                     "--thresh", "0.01"]) == 0
    assert f"{image}:" in capsys.readouterr().out


@pytest.mark.slow
def test_deploy_builds_the_custom_anchors(custom, tmp_path):
    import mxnet as mx

    load_script("tools/deploy").main(["--prefix", custom, "--epoch", "1"])
    deployed = [f for f in os.listdir(os.path.dirname(custom)) if f.startswith("deploy_") and f.endswith(".json")]
    assert deployed
    symbol = mx.sym.load(os.path.join(os.path.dirname(custom), deployed[0]))
    priors = [s for s in symbol.get_internals() if s.name.endswith("_anchors") and s.name != "multibox_anchors"]
    executor = mx.sym.Group(priors).simple_bind(mx.cpu(), data=(1, 3, 64, 64))
    anchors = np.concatenate([o.asnumpy().reshape(-1, 4) for o in executor.forward()])
    expected = ssd_anchors("toy", 64, sizes=json.loads(SIZES.replace(".", "0.")), ratios=[1, 2, .5])
    np.testing.assert_allclose(anchors, expected, atol=1e-6)


@pytest.mark.slow
def test_resume_keeps_the_saved_anchors(custom, synthetic_rec, tmp_path):
    """--resume auto with no anchor flags trains on with the run config's anchors (the heads fit)."""
    prefix = str(tmp_path / "ssd")
    train(synthetic_rec, prefix, anchor_sizes=SIZES)
    train(synthetic_rec, prefix, resume="auto", end_epoch=2)
    assert load_run_config(prefix + "_toy_64").graph_overrides["sizes"][0] == [0.1, 0.15, 0.2]
    assert os.path.isfile(prefix + "_toy_64-0002.params")


@pytest.fixture(scope="module")
def sized_recs(synthetic_rec, tmp_path_factory):
    """``{'small': rec of 6-12% objects, 'quickstart': rec made as the quick start makes its data (20-60%)}``,
    16 training images each (the validation set is ``synthetic_rec``'s)."""
    tmp_path = tmp_path_factory.mktemp("sized")
    recs = {}
    for name, sizes in (("small", dict(min_size=.06, max_size=.12, max_objects=6)),
                        ("quickstart", dict(min_size=.2, max_size=.6, max_objects=4, truncation=.1))):
        synth = tiny_synthetic(tmp_path / name, num_train=16, num_val=0, seed=1, min_side=300, max_side=400, **sizes)
        train_rec = pack_voc(synth, tmp_path / f"{name}.lst", "train")
        recs[name] = type(synthetic_rec)(**{**vars(synthetic_rec), "train_rec": train_rec})
    return recs


def _coverage(records: list[logging.LogRecord]) -> list[float]:
    """The share of each ``Anchor coverage: 91.6% of ...`` line logged."""
    return [float(r.getMessage().split()[2].rstrip("%")) for r in records
            if r.getMessage().startswith("Anchor coverage:")]


@pytest.fixture(scope="module")
def preset_runs(sized_recs, tmp_path_factory) -> dict:
    """One epoch on each of ``sized_recs`` with the preset toy anchors at 128 px (the quick start's shape):
    ``{name: (prefix, the logged coverage lines' shares, the anchor warnings)}``."""
    folder = tmp_path_factory.mktemp("preset")
    runs = {}
    with pytest.MonkeyPatch.context() as patch:
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger().addHandler(handler)
        patch.setattr(logging.getLogger(), "level", logging.INFO)
        try:
            for name, rec in sized_recs.items():
                records.clear()
                train(rec, str(folder / name), data_shape=128)
                warned = [r.getMessage() for r in records
                          if r.levelno == logging.WARNING and "anchor" in r.getMessage()]
                runs[name] = (str(folder / f"{name}_toy_128"), _coverage(records), warned)
        finally:
            logging.getLogger().removeHandler(handler)
    return runs


@pytest.mark.slow
def test_anchor_check_warns_on_small_objects_only(preset_runs):
    """A set of 6-12% objects is warned about, a set made as the quick start makes its data (20-60%) is not;
    both runs log one coverage line and keep the report and the label figure."""
    for name, (prefix, coverage, warned) in preset_runs.items():
        assert len(coverage) == 1
        assert bool(warned) == (name == "small")
        assert all("tools/fit_anchors.py --rec" in line for line in warned)
        assert os.path.isfile(prefix + "-anchors.txt")
        assert os.path.isfile(prefix + "-labels.png")


@pytest.mark.slow
def test_auto_anchors_are_fitted_where_the_preset_covers_too_few(sized_recs, preset_runs, tmp_path, caplog,
                                                               monkeypatch):
    """--anchor-sizes auto: the small objects' run trains on tools/fit_anchors.py's proposal (more of them
    covered, kept in the run config, the same on --resume auto); the quick start's set keeps the preset."""
    caplog.set_level(logging.INFO)
    reads = []
    read = anchor_fit.read_record_objects
    monkeypatch.setattr(anchor_fit, "read_record_objects", lambda path: reads.append(path) or read(path))
    coverage = {}
    for name, rec in sized_recs.items():
        caplog.clear()
        anchor_fit._RECENT_BOXES.clear()
        train(rec, str(tmp_path / name), data_shape=128, anchor_sizes="auto")
        coverage[name] = preset_runs[name][1] + _coverage(caplog.records)
        # the fit and the fitted run's coverage check: one read of the file
        assert reads.count(rec.train_rec) == 1
        reads.clear()
    boxes, _, difficult, _ = read_record_boxes(sized_recs["small"].train_rec)
    fit = fit_ssd_anchors(boxes[~difficult], "toy", 128, data_shapes=())
    assert fit.changed
    assert load_run_config(str(tmp_path / "small_toy_128")).graph_overrides == fit.graph_overrides()
    preset, fitted = coverage["small"]
    assert fitted > preset and fitted == pytest.approx(100 * fit.after.share, abs=0.05)
    assert load_run_config(str(tmp_path / "quickstart_toy_128")).graph_overrides is None
    assert coverage["quickstart"][0] == coverage["quickstart"][1] >= 95
    train(sized_recs["small"], str(tmp_path / "small"), data_shape=128, anchor_sizes="auto", resume="auto",
          end_epoch=2)
    assert os.path.isfile(str(tmp_path / "small_toy_128-0002.params"))
    assert load_run_config(str(tmp_path / "small_toy_128")).graph_overrides == fit.graph_overrides()


def test_auto_sizes_with_given_ratios_is_one_line(synthetic_rec, tmp_path):
    with pytest.raises(UserError, match=r"^--anchor-sizes auto: fits the ratios as well; drop --anchor-ratios or "
                                        r"give both lists$"):
        train(synthetic_rec, str(tmp_path / "ssd"), anchor_sizes="auto", anchor_ratios=RATIOS)
    assert not os.listdir(tmp_path)
