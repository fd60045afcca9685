"""No flag is accepted and then ignored: every flag of train.py, evaluate.py and demo.py, for each family
(SSD and Faster R-CNN), either changes what the script does or is a one-line ``UserError`` naming it.

Each table row is a flag with a non-default value, what to add to (or drop from) the script's baseline
command line first when the flag only means something next to another one, and what must happen for each
family: CHANGE (the outcome differs from the baseline's) or ERROR (a one-line ``UserError`` whose message
starts with one of the flag's own option strings). A meta-test checks that every option of each parser has
a row, so a new flag without one fails.

The outcome of a command line:

* train.py: ``build_run(argv)``: ``dataclasses.asdict(config)`` and the contexts (nothing is trained).
* evaluate.py / demo.py: ``main(argv)`` run in-process with recorders at the model boundary: the
  ``InferenceSettings`` that ``resolve_inference`` returned, every call to ``evaluate_model`` and to the
  detection sources it opens, ``SSDSource`` / ``RCNNSource`` (evaluate.py), or to ``load_test_model``,
  ``Detector``, ``load_rcnn_weights``, ``RCNNImageDetector`` and the detector's ``timed_detect`` (demo.py),
  with their arguments, the detections the model returned, and what the script printed and wrote. Both
  families run for real on CPU contexts: SSD on a copy of the ``trained_toy`` checkpoint (and its
  tools/deploy.py model), Faster R-CNN on ``faster_rcnn_small`` trained here for two short epochs
  (``rcnn_checkpoint``). A Faster R-CNN row that changes the outcome must also change the real output:
  the detections, what was printed or the files written, not only the arguments recorded. Whether the
  evaluator honours what it is given is tested elsewhere: tests/e2e/test_scripts.py
  (test_evaluate_metric_flags: --no-voc07, --use-difficult, --num-batch; --plot-pr; --coco; --deploy),
  tests/train/test_rcnn_train.py (Faster R-CNN evaluate and demo).

Devices are simulated (``simulate_gpus``): a CPU-only build unless a row says how many GPUs are visible,
so every row behaves the same on any machine; a simulated GPU context never reaches mxnet (the recorders
return fixed results for it, and say so in the trace).

The ``--onnx`` rows need the ``onnx`` extra; without it they are skipped and the other rows still run.
"""
from __future__ import annotations

import dataclasses
import glob
import hashlib
import importlib.util
import inspect
import os
import shlex
import shutil

import cv2
import mxnet as mx
import numpy as np
import pytest
from helpers import files_under, image_paths, load_script

import config.devices
from config.cpu import has_bfloat16
from config.errors import UserError
from config.run_config import load_run_config, save_run_config

HAS_CAMERA = os.path.exists("/dev/video0")
HAS_BF16 = has_bfloat16()  # avx512_bf16 and the AVX-512 core: --dtype bfloat16 runs, else it is refused
try:
    import pycocotools  # noqa: F401
    HAS_PYCOCOTOOLS = True
except ImportError:  # an optional extra: pip install -e '.[coco]'
    HAS_PYCOCOTOOLS = False
# the onnx extra (pip install -e '.[onnx]'): tools/export_onnx.py and --onnx; its rows are skipped without it
HAS_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
NEEDS_ONNX = "needs the onnx extra (pip install -e '.[onnx]')"
CHANGE, ERROR = "changes", "error"
FAMILIES = ("ssd", "rcnn")

train_script, evaluate_script, demo_script = (load_script(name) for name in ("train", "evaluate", "demo"))


# --- the table -------------------------------------------------------------------------------------
@dataclasses.dataclass
class Row:
    """One flag on one command line. ``args``/``base``/``drop`` are templates (``{names}`` etc. are
    filled in per script); ``args`` may differ per family. ``expect`` maps a family to CHANGE or ERROR;
    a family left out does not apply (its baseline would not run)."""

    flag: str
    args: dict[str, str]
    expect: dict[str, str]
    base: str = ""
    drop: tuple[str, ...] = ()
    gpus: int = 0

    def label(self, family: str) -> str:
        text = f"{family}: {self.args[family]}"
        if self.base:
            text += f" after {self.base}"
        if self.drop:
            text += f" without {' '.join(self.drop)}"
        return text + (f" ({self.gpus} GPUs)" if self.gpus else "")


def row(args, ssd: str | None = None, rcnn: str | None = None, *, both: str | None = None, base: str = "",
        drop: tuple[str, ...] = (), gpus: int = 0) -> Row:
    expect = {"ssd": both or ssd, "rcnn": both or rcnn}
    expect = {family: value for family, value in expect.items() if value is not None}
    per_family = args if isinstance(args, dict) else {family: args for family in FAMILIES}
    flag = next(iter(per_family.values())).split()[0]
    return Row(flag, per_family, expect, base, drop, gpus)


C, E = CHANGE, ERROR
NO_PRETRAINED = "the baseline trains from scratch (--pretrained '')"
RESUME_WINS = "a resumed run (--resume N > 0) starts from that checkpoint and its epoch"

# train.py; baseline: --train-path --val-path --network --num-class 3 --class-names NAMES --pretrained ''
# --gpus '' --prefix --log ''
TRAIN_FLAGS = [
    row("--train-path {val_rec}", both=C),
    row("--train-list {train_lst}", ssd=C, rcnn=E),
    row("--val-path {train_rec}", both=C),
    row("--val-path ''", both=C),
    row("--val-list {val_lst}", ssd=C, rcnn=E),
    row("--val-list {val_lst}", base="--val-path ''", ssd=E, rcnn=E),
    row({"ssd": "--network vgg16_reduced", "rcnn": "--network faster_rcnn_vgg16"}, both=C),
    row("--network nonesuch", both=E),
    row("--batch-size 4", ssd=C, rcnn=E),
    row("--resume 3", both=C),
    row("--finetune 2", ssd=C, rcnn=E),
    row({"ssd": "--pretrained {tmp}/vgg16_reduced", "rcnn": "--pretrained {params_file}"}, both=C),
    row({"ssd": "--pretrained {tmp}/vgg16_reduced", "rcnn": "--pretrained {params_file}"}, base="--resume 3",
        both=E),
    row("--pretrained {tmp}/vgg16_reduced", base="--finetune 2", ssd=E),
    row("--epoch 3", base="--pretrained {tmp}/vgg16_reduced", both=C),
    row("--epoch 3", both=E),
    row("--epoch 3", base="--pretrained {params_file}", rcnn=E),
    row("--prefix {tmp}/q", both=C),
    row("--save-prefix {tmp}/q", both=C),
    row("--gpus 0", both=E),  # a CPU-only build
    row("--gpus 1", both=C, gpus=2),
    row("--cpus 2", both=C),
    row("--begin-epoch 1", both=C),
    row("--start-epoch 1", both=C),
    row("--begin-epoch 1", base="--resume 3", both=E),
    row("--begin-epoch 1", base="--finetune 2", ssd=E),
    row("--finetune 2", base="--resume 3", ssd=E),
    row("--end-epoch 7", both=C),
    row("--epochs 7", both=C),
    row("--frequent 7", both=C),
    row("--log-interval 7", both=C),
    row("--data-shape 256", ssd=C, rcnn=E),
    row("--label-width 400", ssd=C, rcnn=E),
    row("--lr 0.05", both=C),
    row("--momentum 0.5", both=C),
    row("--wd 0.001", both=C),
    row("--lr-steps 3", both=C),
    row("--lr-decay-epoch 3", both=C),
    row("--lr-factor 0.5", both=C),
    row("--warmup-epochs 1", both=C),
    row("--lr-schedule cosine", both=C),
    row("--lr-steps 3", base="--lr-schedule cosine", both=E),
    row("--lr-floor 0.0001", base="--lr-schedule cosine", both=C),
    row("--lr-floor 0.0001", both=E),
    row("--ema 0.99", both=C),
    row("--val-interval 5", both=C),
    row("--val-interval 0", both=E),
    row("--dtype bfloat16", both=C),  # the CPU is checked when training starts (tests/train/test_bfloat16.py)
    row("--anchor-sizes '[[.1,.15,.2],[.37,.447],[.54,.619],[.71,.79],[.88,.961]]'", ssd=C, rcnn=E),
    row("--anchor-ratios '[1,2,.5,3]'", ssd=C, rcnn=E),
    row("--anchor-sizes '[[.1,.2]]'", ssd=E),
    row("--anchor-sizes auto --anchor-ratios '[1,2,.5]'", ssd=E, rcnn=E),  # auto fits the ratios too
    row("--ema 1", both=E),
    *[row(f"--{stat}-{channel} 2", ssd=C, rcnn=E) for stat in ("mean", "std") for channel in "rgb"],
    row("--freeze ^conv", base="--pretrained {tmp}/vgg16_reduced", ssd=C),
    row("--freeze ^conv", ssd=E, rcnn=E),
    row("--log {tmp}/x.log", both=C),
    row("--monitor 1", ssd=C, rcnn=E),
    row("--pattern conv", ssd=E, rcnn=E),  # needs --monitor N > 0
    row("--pattern conv", base="--monitor 1", ssd=C),
    row("--num-class 2", drop=("--class-names",), both=C),
    row("--num-class 2", both=E),  # disagrees with the 3 names of --class-names
    row("--num-example 24", ssd=C, rcnn=E),
    row("--class-names a,b,c", both=C),
    row("--nms 0.3", ssd=C, rcnn=E),
    row("--nms-topk 100", ssd=C, rcnn=E),
    row("--overlap 0.7", both=C),
    row("--overlap 0.7", base="--val-path ''", both=E),
    row("--force", ssd=C, rcnn=E),
    row("--use-difficult", both=C),
    row("--use-difficult", base="--val-path ''", both=E),
    row("--voc07", base="--no-voc07", both=C),  # the default: it undoes an earlier --no-voc07
    row("--voc07", base="--val-path ''", both=E),
    row("--no-voc07", both=C),
    row("--no-voc07", base="--val-path ''", both=E),
    row("--kv-store device", both=C),
    row("--dist-timeout 30", both=E),  # the baseline's --kv-store local has no peers to wait for
    row("--dist-timeout 30", base="--kv-store dist_sync", both=C),
    row("--lr-scale-workers", both=E),
    row("--lr-scale-workers", base="--kv-store dist_sync", both=C),
    row("--cls-loss focal", ssd=C, rcnn=E),
    row("--label-smoothing 0.1", ssd=C, rcnn=E),
    row("--label-smoothing 1", ssd=E),
    row("--loc-loss giou", ssd=C, rcnn=E),
    row("--loc-loss iou", ssd=E),
    row("--augment flip", ssd=C, rcnn=E),
    row("--seed 1", both=C),
    row("--keep 2", both=C),
    row("--img-short-side 200", ssd=E, rcnn=C),
    row("--img-long-side 400", ssd=E, rcnn=C),
    row("--img-pixel-means (1,2,3)", ssd=E, rcnn=C),
    row("--img-pixel-stds (2,2,2)", ssd=E, rcnn=C),
    row("--net-fixed-params \"['conv1']\"", base="--pretrained {params_file}", rcnn=C),
    row("--net-fixed-params \"['conv1']\"", ssd=E, rcnn=E),
    row("--rpn-feat-stride 8", ssd=E, rcnn=C),
    row("--rpn-anchor-scales (4,8)", ssd=E, rcnn=C),
    row("--rpn-anchor-ratios (1,)", ssd=E, rcnn=C),
    row("--rpn-pre-nms-topk 500", ssd=E, rcnn=C),
    row("--rpn-post-nms-topk 50", ssd=E, rcnn=C),
    row("--rpn-nms-thresh 0.5", ssd=E, rcnn=C),
    row("--rpn-min-size 4", ssd=E, rcnn=C),
    row("--rpn-batch-rois 64", ssd=E, rcnn=C),
    row("--rpn-allowed-border 10", ssd=E, rcnn=C),
    row("--rpn-fg-fraction 0.3", ssd=E, rcnn=C),
    row("--rpn-fg-overlap 0.6", ssd=E, rcnn=C),
    row("--rpn-bg-overlap 0.2", ssd=E, rcnn=C),
    row("--rcnn-feat-stride 8", ssd=E, rcnn=C),
    row("--rcnn-pooled-size (5,5)", ssd=E, rcnn=C),
    row("--rcnn-batch-size 2", ssd=E, rcnn=C),
    row("--rcnn-batch-rois 32", ssd=E, rcnn=C),
    row("--rcnn-fg-fraction 0.5", ssd=E, rcnn=C),
    row("--rcnn-fg-overlap 0.6", ssd=E, rcnn=C),
    row("--rcnn-bbox-stds (1,1,1,1)", ssd=E, rcnn=C),
    row("--rcnn-num-classes 4", drop=("--num-class", "--class-names"), ssd=E, rcnn=C),
    row("--rcnn-num-classes 5", ssd=E, rcnn=E),  # disagrees with --num-class 3
]

# evaluate.py; baseline: --prefix (a run config beside it) --epoch --rec-path, and SSD --batch-size 4
EVALUATE_FLAGS = [
    row("--rec-path {train_rec}", both=C),
    row("--list-path {val_lst}", ssd=C, rcnn=E),
    row("--network vgg16_reduced", both=E),  # disagrees with the run config
    row("--num-batch 1", both=C),
    row("--batch-size 3", ssd=C, rcnn=E),
    row("--num-class 2", both=E),  # disagrees with the run config
    row("--class-names a,b,c", both=C),
    row("--epoch 1", both=C),
    row({"ssd": "--prefix {toy_checkpoint}", "rcnn": "--prefix {rcnn_prefix2}"}, both=C),
    row("--gpus 0", both=E),  # a CPU-only build
    row("--gpus ''", both=C, gpus=1),
    row("--gpus 0", base="--cpu", gpus=1, both=E),
    row("--cpus 2", ssd=C, rcnn=E),
    row("--cpu", both=C, gpus=1),
    row("--data-shape 256", ssd=C, rcnn=E),
    *[row(f"--{stat}-{channel} 2", ssd=C, rcnn=E) for stat in ("mean", "std") for channel in "rgb"],
    row("--nms 0.3", ssd=C, rcnn=E),
    row("--nms 0.3", base="--deploy", ssd=E),  # the deployed graph has its NMS built in
    row("--nms-topk 100", ssd=C, rcnn=E),
    row("--overlap 0.7", both=C),
    row("--force", ssd=C, rcnn=E),  # the toy run trained without --force
    row("--use-difficult", both=C),
    row("--voc07", base="--no-voc07", both=C),  # the default: it undoes an earlier --no-voc07
    row("--no-voc07", both=C),
    row("--deploy", ssd=C, rcnn=E),
    row("--label-width 400", ssd=C, rcnn=E),
    row("--coco", ssd=C if HAS_PYCOCOTOOLS else E, rcnn=E),
    row("--plot-pr {out}/pr", both=C),
    row("--analyze {out}/analysis", both=C),
    # --onnx: the baseline is another exported model (epoch 1 of the toy run): --prefix/--epoch would be refused
    row("--onnx {onnx}", base="--onnx {onnx1}", drop=("--prefix", "--epoch"), ssd=C),
    row("--dtype bfloat16", ssd=C if HAS_BF16 else E, rcnn=E),  # a CPU without avx512_bf16: a one-line error
    row("--nms 0.3", base="--onnx {onnx1}", drop=("--prefix", "--epoch"), ssd=E),  # the metadata sets NMS
    row("--rcnn-nms-thresh 0.5", ssd=E, rcnn=C),
    row("--rcnn-conf-thresh 0.1", ssd=E, rcnn=C),
    row("--max-per-image 5", ssd=E, rcnn=C),
]

# demo.py; baseline: --prefix (a run config beside it) --epoch --images IMG0, and Faster R-CNN --thresh 0
DEMO_FLAGS = [
    row("--network vgg16_reduced", both=E),  # disagrees with the run config
    row("--images {img1}", both=C),
    row("--images {img1}", base="--dir {image_dir}", drop=("--images",), both=E),
    row("--images {img1}", base="--video {clip}", drop=("--images",), both=E),
    row("--dir {image_dir}", drop=("--images",), both=C),
    row("--ext .png", base="--dir {image_dir}", drop=("--images",), both=C),
    row("--ext .png", both=E),
    row("--epoch 1", both=C),
    row("--batch-size 2", ssd=C, rcnn=E),
    row("--batch-size 2", base="--video {clip}", drop=("--images",), ssd=E, rcnn=E),
    row({"ssd": "--prefix {toy_checkpoint}", "rcnn": "--prefix {rcnn_prefix2}"}, both=C),
    row("--cpu", both=C, gpus=1),
    row("--gpu 0", both=E),  # a CPU-only build
    row("--gpu 1", both=C, gpus=2),
    row("--gpu 1", base="--cpu", gpus=2, both=E),
    row("--data-shape 256", ssd=C, rcnn=E),
    *[row(f"--{stat}-{channel} 2", ssd=C, rcnn=E) for stat in ("mean", "std") for channel in "rgb"],
    row("--thresh 0.2", both=C),
    row("--nms 0.3", ssd=C, rcnn=E),
    row("--nms 0.3", base="--deploy", ssd=E),  # the deployed graph has its NMS built in
    row("--force", ssd=C, rcnn=E),  # the toy run trained without --force (the run config wins over the default)
    row("--no-force", base="--force", ssd=C),
    row("--no-force", rcnn=E),
    row("--nms-topk 100", ssd=C, rcnn=E),
    row("--no-timer", both=C),
    row("--deploy", ssd=C, rcnn=E),
    row("--class-names a,b,c", both=C),
    row("--camera", drop=("--images",), both=E),  # no camera here: one line (the test skips on a machine with one)
    row("--video {clip}", drop=("--images",), both=C),
    row("--frame-resize 0.5", base="--video {clip}", drop=("--images",), both=C),
    row("--frame-resize 0.5", both=E),
    row("--out-dir {out}/demo", both=C),
    row("--onnx {onnx}", base="--onnx {onnx1}", drop=("--prefix", "--epoch"), ssd=C),  # see EVALUATE_FLAGS
    row("--dtype bfloat16", ssd=C if HAS_BF16 else E, rcnn=E),
    row("--cpu", base="--onnx {onnx1}", drop=("--prefix", "--epoch"), ssd=E),  # onnxruntime runs on the CPU
    row("--rcnn-nms-thresh 0.5", ssd=E, rcnn=C),
    row("--rcnn-conf-thresh 0.1", ssd=E, rcnn=C),
    row("--max-per-image 5", ssd=E, rcnn=C),
]

SCRIPTS = {"train": (train_script, TRAIN_FLAGS), "evaluate": (evaluate_script, EVALUATE_FLAGS),
           "demo": (demo_script, DEMO_FLAGS)}


def option_strings(parser) -> dict[str, list[str]]:
    """Every option string of ``parser`` (help excepted) -> the option strings of its action."""
    return {option: list(action.option_strings) for action in parser._actions if action.dest != "help"
            for option in action.option_strings}


def uses_onnx(item: Row, family: str) -> bool:
    """The row runs an exported model (its command line names one)."""
    return "{onnx" in item.args[family] + item.base


def params(rows: list[Row]) -> list:
    out = []
    for item in rows:
        for family, expect in item.expect.items():
            marks = [pytest.mark.skipif(not HAS_ONNX, reason=NEEDS_ONNX)] if uses_onnx(item, family) else []
            out.append(pytest.param(item, family, expect, id=item.label(family), marks=marks))
    return out


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_every_flag_has_a_row(script):
    module, rows = SCRIPTS[script]
    parser = module.build_parser()
    options = option_strings(parser)
    unknown = sorted({item.flag for item in rows} - set(options))
    assert not unknown, f"rows for flags {script}.py does not have: {unknown}"
    missing = sorted(set(options) - {item.flag for item in rows})
    assert not missing, f"{script}.py flags without a row in tests/e2e/test_flags.py: {missing}"
    dests = {action.dest for action in parser._actions if action.dest != "help"}
    covered = {action.dest for action in parser._actions for item in rows if item.flag in action.option_strings}
    assert dests == covered
    for item in rows:
        assert item.expect, item
        for family in item.expect:
            first = item.args[family].split()[0]
            assert first in options[item.flag], item


# --- checking a row --------------------------------------------------------------------------------
def expand(template: str, values: dict) -> list[str]:
    return shlex.split(template.format(**values))


def command_lines(item: Row, family: str, baseline: list[str], values: dict) -> tuple[list[str], list[str]]:
    """(baseline, baseline + the row's flag) for ``family``."""
    base = list(baseline)
    for flag in item.drop:
        index = base.index(flag)
        del base[index:index + 2]
    base += expand(item.base, values)
    return base, base + expand(item.args[family], values)


def check_outcome(item: Row, expect: str, before, after, parser) -> None:
    """``before``/``after``: the outcomes (anything comparable) or the ``UserError`` raised."""
    assert not isinstance(before, UserError), f"the baseline itself fails: {before}"
    if expect == ERROR:
        what = "it changed nothing" if after == before else "it changed the outcome"
        assert isinstance(after, UserError), f"{item.flag} was accepted ({what}): expected a one-line error naming it"
        message = str(after)
        assert "\n" not in message.strip(), message
        names = tuple(option_strings(parser)[item.flag])
        assert message.startswith(names), f"the error does not start with {' or '.join(names)}: {message}"
    else:
        assert not isinstance(after, UserError), f"{item.flag} should work: {after}"
        assert after != before, f"{item.flag} was accepted and changed nothing"


def simulate_gpus(monkeypatch, count: int) -> None:
    """``count`` visible GPUs (0: a CPU-only build) for config.devices and the scripts."""
    monkeypatch.setattr(config.devices, "mxnet_has_cuda", lambda: count > 0)
    monkeypatch.setattr(config.devices, "visible_gpus", lambda: count)
    monkeypatch.setattr(mx.context, "num_gpus", lambda: count)


def plain(value):
    """Something ``==`` compares: dataclasses as dicts, contexts and arrays as text and shapes."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, mx.Context):
        return str(value)
    if isinstance(value, (np.ndarray, mx.nd.NDArray)):
        return ("array", tuple(value.shape))
    if isinstance(value, mx.sym.Symbol):
        return ("symbol", tuple(value.list_outputs()))
    return value


# --- train.py ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def train_values(synthetic_rec, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("train_flags")
    params_file = tmp / "vgg16-0000.params"
    params_file.write_bytes(b"")  # train_rcnn.load_pretrained takes an existing file as is
    return dict(train_rec=synthetic_rec.train_rec, val_rec=synthetic_rec.val_rec,
                train_lst=synthetic_rec.train_lst, val_lst=synthetic_rec.val_lst, names=synthetic_rec.names_file,
                tmp=str(tmp), params_file=str(params_file))


TRAIN_NETWORKS = {"ssd": "toy", "rcnn": "faster_rcnn_small"}


def train_outcome(argv: list[str]):
    try:
        run, ctx = train_script.build_run(argv)
    except UserError as err:
        return err
    return {"type": type(run).__name__, "config": dataclasses.asdict(run), "ctx": [str(c) for c in ctx]}


@pytest.mark.parametrize("item, family, expect", params(TRAIN_FLAGS))
def test_train_flag(item, family, expect, train_values, monkeypatch):
    simulate_gpus(monkeypatch, item.gpus)
    baseline = expand("--train-path {train_rec} --val-path {val_rec} --num-class 3 --class-names {names} "
                      "--pretrained '' --gpus '' --prefix {tmp}/p --log ''", train_values)
    baseline += ["--network", TRAIN_NETWORKS[family]]
    before, after = (train_outcome(argv) for argv in command_lines(item, family, baseline, train_values))
    if not isinstance(before, UserError):
        assert before["type"] == ("SSDConfig" if family == "ssd" else "RCNNConfig")
    check_outcome(item, expect, before, after, train_script.build_parser())


# --- evaluate.py and demo.py: the models ---------------------------------------------------------------
def fixed_detections() -> list[np.ndarray]:
    """What the stand-in detectors find in any image: ``[cls, score, x1, y1, x2, y2]`` rows."""
    return [np.array([[0, 0.9, 2, 2, 30, 30], [1, 0.3, 5, 5, 40, 40], [2, 0.05, 1, 1, 9, 9]], dtype=np.float32)]


RCNN_NETWORK = "faster_rcnn_small"


@pytest.fixture(scope="module")
def rcnn_checkpoint(trained_toy, tmp_path_factory) -> dict:
    """``faster_rcnn_small`` trained by train.py from scratch on the toy's 24 training images for as many
    epochs as the toy (one image per iteration, 112-160 px): ``rcnn_prefix``, its checkpoint (run config
    beside it), and ``rcnn_prefix2``, a second checkpoint whose last epoch holds the first epoch's weights.
    A weak detector (mAP near 0), but its scores and boxes vary with the image, the class and the
    weights, so a Faster R-CNN flag that does anything changes what it finds or how it is scored."""
    from evaluate.checkpoint import params_path

    epochs = trained_toy.epoch
    assert epochs >= 2, "the --epoch 1 rows need an earlier epoch than the baseline's"
    tmp = tmp_path_factory.mktemp("flag_rcnn")
    rec = trained_toy.rec
    train_script.main(expand(
        f"--network {RCNN_NETWORK} --train-path {{train_rec}} --val-path '' --num-class {rec.num_classes} "
        f"--class-names {{names}} --gpus '' --prefix {{tmp}}/r --pretrained '' --epochs {epochs} --lr 0.02 "
        "--log-interval 1000 --log '' --seed 0 --img-short-side 112 --img-long-side 160 "
        "--rpn-anchor-scales (2,4,8) --rpn-pre-nms-topk 1000 --rpn-post-nms-topk 200 --rcnn-batch-rois 64",
        dict(train_rec=rec.train_rec, names=rec.names_file, tmp=str(tmp))))
    checkpoint, second = str(tmp / f"r_{RCNN_NETWORK}"), str(tmp / "r2")
    shutil.copyfile(f"{checkpoint}-symbol.json", f"{second}-symbol.json")
    shutil.copyfile(params_path(checkpoint, 1), params_path(second, epochs))
    save_run_config(dataclasses.replace(load_run_config(checkpoint), prefix=second))
    return dict(rcnn_prefix=checkpoint, rcnn_prefix2=second)


@pytest.fixture(scope="module")
def models(trained_toy, rcnn_checkpoint, tmp_path_factory) -> dict:
    """The template values of evaluate.py's and demo.py's rows: a copy of the toy SSD checkpoint (with its
    run config, a tools/deploy.py model and, with the onnx extra, two exported models), the Faster R-CNN
    checkpoints, images, a folder of them, a video clip."""
    from config.defaults import DEPLOY
    from tools.deploy import deploy

    tmp = tmp_path_factory.mktemp("flag_models")
    for path in glob.glob(glob.escape(trained_toy.checkpoint) + "-*"):
        if os.path.isfile(path):
            shutil.copyfile(path, tmp / os.path.basename(path))
    checkpoint = str(tmp / os.path.basename(trained_toy.checkpoint))
    assert os.path.isfile(checkpoint + "-ssd.json")
    deploy(trained_toy.network, checkpoint, trained_toy.epoch, trained_toy.data_shape, trained_toy.num_class,
           DEPLOY["nms"], True, DEPLOY["topk"])

    images = [cv2.imread(path) for path in image_paths(trained_toy.val_lst, trained_toy.rec.synth.devkit)[:3]]
    image_dir = tmp / "images"
    image_dir.mkdir()
    for name, image in zip(("a.jpg", "b.jpg", "c.png"), images):
        cv2.imwrite(str(image_dir / name), image)
    clip = str(tmp / "clip.mp4")
    writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, (96, 80))
    assert writer.isOpened()
    for image in images[:2]:
        writer.write(cv2.resize(image, (96, 80)))
    writer.release()
    onnx_models = {}
    if HAS_ONNX:  # without the extra the --onnx rows are skipped (params), so nothing reads these
        from evaluate.onnx_export import export_onnx

        onnx_models = {key: export_onnx(checkpoint, epoch, str(tmp / f"toy-{epoch}.onnx"))
                       for key, epoch in (("onnx", trained_toy.epoch), ("onnx1", trained_toy.epoch - 1))}
    return dict(checkpoint=checkpoint, toy_checkpoint=trained_toy.checkpoint, epoch=trained_toy.epoch, **onnx_models,
                **rcnn_checkpoint, val_rec=trained_toy.val_rec,
                train_rec=trained_toy.rec.train_rec, val_lst=trained_toy.val_lst,
                img0=str(image_dir / "a.jpg"), img1=str(image_dir / "b.jpg"), image_dir=str(image_dir), clip=clip)


STAND_IN = "stand-in"  # the trace entry of a call that ``fake`` answered


class Recorder:
    """Replaces ``module.name`` (a function or class) for one test: each call's arguments, bound to the
    real signature (so a stand-in cannot drift from it), go to ``trace``; then the real one runs, or
    ``fake`` when ``use_fake(arguments)`` (and a ``(STAND_IN, name)`` entry goes to ``trace``)."""

    def __init__(self, monkeypatch, module, name: str, trace: list, fake, use_fake, skip=(), wrap=None):
        real = getattr(module, name)
        signature = inspect.signature(real)

        def record(*args, **kwargs):
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            trace.append((name, plain({key: value for key, value in arguments.items() if key not in skip})))
            if use_fake(arguments):
                trace.append((STAND_IN, name))
                result = fake(arguments)
            else:
                result = real(*args, **kwargs)
            return wrap(result) if wrap else result

        monkeypatch.setattr(module, name, record)


def on_gpu(arguments: dict) -> bool:
    """A simulated GPU context among the call's arguments (or its ``settings``): mxnet here cannot run it."""
    contexts = arguments["settings"].ctx if "settings" in arguments else arguments.get("ctx")
    contexts = contexts if isinstance(contexts, (list, tuple)) else [contexts]
    return any(isinstance(ctx, mx.Context) and ctx.device_type == "gpu" for ctx in contexts)


class StandInSource:
    """evaluate.py's detection source interface (:class:`evaluate.evaluation.RCNNSource`), finding
    :func:`fixed_detections` in one image with one made-up label."""

    engine = ""

    def images(self):
        labels = np.array([[0, 2, 2, 30, 30, 0], [1, 50, 50, 60, 60, 1]], dtype=np.float32)
        return iter([(fixed_detections()[0], labels)])


class StandInDetector:
    """demo.py's detector interface, finding :func:`fixed_detections` in every image."""

    def timed_detect(self, images, thresh=0.0):
        return [dets[dets[:, 1] >= thresh] for dets in fixed_detections() * len(images)], 0.001


def detections_entry(dets: np.ndarray) -> tuple:
    """The trace entry of one image's detections ``[n, 6]``: how many are kept (cls >= 0) and a digest
    of them to 4 decimals (an SSD image has a row per anchor, mostly dropped ones)."""
    rows = np.asarray(dets, dtype=np.float32).reshape(-1, 6)
    rows = np.round(rows[rows[:, 0] >= 0], 4)
    return ("detections", len(rows), hashlib.sha1(rows.tobytes()).hexdigest())


class RecordingDetector:
    """A detector whose ``timed_detect`` calls (image shapes, threshold) and detections go to the trace;
    it reports a fixed time so that demo.py's output is the same from run to run."""

    def __init__(self, inner, trace: list):
        self.inner, self.trace = inner, trace

    def timed_detect(self, images, thresh=0.0):
        self.trace.append(("timed_detect", [image.shape for image in images], thresh))
        dets, _ = self.inner.timed_detect(images, thresh)
        self.trace.extend(detections_entry(image_dets) for image_dets in dets)
        return dets, 0.001


class RecordingSource:
    """evaluate.py's detection source with every image's detections going to the trace as it is scored."""

    def __init__(self, inner, trace: list):
        self.inner, self.trace, self.engine = inner, trace, inner.engine

    def images(self):
        for dets, labels in self.inner.images():
            self.trace.append(detections_entry(dets))
            yield dets, labels


def record_settings(monkeypatch, trace: list) -> None:
    import evaluate.run_settings as run_settings

    real = run_settings.resolve_inference

    def resolve(*args, **kwargs):
        settings = real(*args, **kwargs)
        trace.append(("settings", plain(settings)))
        return settings

    monkeypatch.setattr(run_settings, "resolve_inference", resolve)


def script_outcome(main, argv: list[str], trace: list, capsys, out_dir: str):
    """``main(argv)``'s trace, return value, output and files written under ``out_dir``, or its UserError."""
    trace.clear()
    capsys.readouterr()
    try:
        status = main(argv)
    except UserError as err:
        return err
    return {"trace": list(trace), "status": status, "stdout": capsys.readouterr().out, "files": files_under(out_dir)}


# The dests that resolve_inference turns into InferenceSettings: their rows must change the settings.
SETTINGS_DESTS = {"network", "num_class", "class_names", "prefix", "data_shape", "mean_r", "mean_g", "mean_b",
                  "std_r", "std_g", "std_b", "nms_thresh", "nms_topk", "force_nms", "label_width",
                  "rcnn_nms_thresh", "rcnn_conf_thresh", "max_per_image"}


BASELINES: dict = {}  # (script, simulated GPUs, baseline argv) -> its outcome


def real_output(outcome: dict) -> tuple:
    """What the model and the script produced: the detections, the printed text, the files written
    (the recorded arguments left out)."""
    return ([entry for entry in outcome["trace"] if entry[0] == "detections"], outcome["stdout"], outcome["files"])


def check_script_row(script: str, item: Row, family: str, expect: str, baseline: list[str], values: dict,
                     trace: list, capsys, out_dir: str) -> None:
    module = SCRIPTS[script][0]
    values = {**values, "out": out_dir}
    base_argv, argv = command_lines(item, family, baseline, values)
    key = (script, item.gpus, tuple(base_argv))
    if key not in BASELINES:  # the baselines write nothing under out_dir, so one run serves every row
        BASELINES[key] = script_outcome(module.main, base_argv, trace, capsys, out_dir)
    before, after = BASELINES[key], script_outcome(module.main, argv, trace, capsys, out_dir)
    parser = module.build_parser()
    check_outcome(item, expect, before, after, parser)
    # a real Faster R-CNN run shows the flag's effect in its output, beyond the arguments recorded
    # (a row whose own run met a simulated GPU got fixed results: its arguments are all there is)
    if family == "rcnn" and expect == CHANGE and not any(entry[0] == STAND_IN for entry in after["trace"]):
        assert real_output(after) != real_output(before), \
            f"{item.flag} changed the recorded arguments but not the Faster R-CNN output"
    dest = next(action.dest for action in parser._actions if item.flag in action.option_strings)
    if expect == CHANGE and dest in SETTINGS_DESTS:
        settings = [dict(entry for entry in outcome["trace"] if entry[0] == "settings") for outcome in (before, after)]
        assert settings[0] != settings[1], f"{item.flag} did not change the InferenceSettings"


# --- evaluate.py ----------------------------------------------------------------------------------------
@pytest.fixture
def evaluate_trace(monkeypatch) -> list:
    """evaluate.py's recorded calls: settings, evaluate_model (for real), the SSD and Faster R-CNN
    sources (for real on CPU) and the detections they yield."""
    import evaluate.evaluation as evaluation

    trace: list = []
    record_settings(monkeypatch, trace)

    def wrap(source):
        return RecordingSource(source, trace)

    Recorder(monkeypatch, evaluation, "evaluate_model", trace, fake=None, use_fake=lambda _: False)
    for name in ("SSDSource", "RCNNSource"):
        Recorder(monkeypatch, evaluation, name, trace, fake=lambda _: StandInSource(), use_fake=on_gpu, wrap=wrap)
    return trace


def evaluate_baseline(family: str) -> str:
    if family == "ssd":
        return "--prefix {checkpoint} --epoch {epoch} --rec-path {val_rec} --batch-size 4"
    return "--prefix {rcnn_prefix} --epoch {epoch} --rec-path {val_rec}"


@pytest.mark.slow
@pytest.mark.parametrize("item, family, expect", params(EVALUATE_FLAGS))
def test_evaluate_flag(item, family, expect, models, evaluate_trace, monkeypatch, capsys, tmp_path):
    simulate_gpus(monkeypatch, item.gpus)
    baseline = expand(evaluate_baseline(family), models)
    check_script_row("evaluate", item, family, expect, baseline, models, evaluate_trace, capsys, str(tmp_path))


# --- demo.py ----------------------------------------------------------------------------------------------
@pytest.fixture
def demo_trace(monkeypatch) -> list:
    """demo.py's recorded calls: settings, the SSD model and Detector, the Faster R-CNN weights and
    detector (for real on CPU), and every timed_detect with its detections."""
    import evaluate.detector as detector_module
    import evaluate.evaluate_rcnn as evaluate_rcnn_module
    import evaluate.ssd_model as ssd_model_module

    trace: list = []
    record_settings(monkeypatch, trace)

    def wrap(detector):
        return RecordingDetector(detector, trace)

    Recorder(monkeypatch, ssd_model_module, "load_test_model", trace, fake=None, use_fake=lambda _: False)
    Recorder(monkeypatch, detector_module, "Detector", trace, fake=lambda _: StandInDetector(), use_fake=on_gpu,
             skip=("symbol", "arg_params", "aux_params"), wrap=wrap)
    Recorder(monkeypatch, evaluate_rcnn_module, "load_rcnn_weights", trace, fake=None, use_fake=lambda _: False)
    Recorder(monkeypatch, evaluate_rcnn_module, "RCNNImageDetector", trace, fake=lambda _: StandInDetector(),
             use_fake=on_gpu, skip=("arg_params", "aux_params"), wrap=wrap)
    return trace


def demo_baseline(family: str) -> str:
    if family == "ssd":
        return "--prefix {checkpoint} --epoch {epoch} --images {img0}"
    return "--prefix {rcnn_prefix} --epoch {epoch} --images {img0} --thresh 0"  # every detection it keeps shown


@pytest.mark.slow
@pytest.mark.parametrize("item, family, expect", params(DEMO_FLAGS))
def test_demo_flag(item, family, expect, models, demo_trace, monkeypatch, capsys, tmp_path):
    if item.flag == "--camera" and HAS_CAMERA:
        pytest.skip("this machine has a camera: --camera would open a window")
    simulate_gpus(monkeypatch, item.gpus)
    baseline = expand(demo_baseline(family), models)
    check_script_row("demo", item, family, expect, baseline, models, demo_trace, capsys, str(tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("script", ["evaluate", "demo"])
def test_rcnn_output_repeats(script, models, request, monkeypatch, capsys, tmp_path):
    """The Faster R-CNN baseline run twice gives the same real output, so a Faster R-CNN row whose output
    differs from its baseline's differs because of its flag."""
    trace = request.getfixturevalue(f"{script}_trace")
    simulate_gpus(monkeypatch, 0)
    baseline = expand((evaluate_baseline if script == "evaluate" else demo_baseline)("rcnn"), models)
    first, second = (script_outcome(SCRIPTS[script][0].main, baseline, trace, capsys, str(tmp_path)) for _ in range(2))
    assert not isinstance(first, UserError), first
    assert any(entry[0] == "detections" and entry[1] > 0 for entry in first["trace"])  # it found something
    assert real_output(first) == real_output(second)
