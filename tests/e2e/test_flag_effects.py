"""What train.py's flags do in real training runs: the toy SSD at data shape 64, a few tiny images, one epoch.

tests/e2e/test_flags.py checks the configuration each flag gives; here the run itself must honour it.
Each run calls train.py's ``main`` in this process (the ``--num-example`` error runs train.py as a user
would, in a subprocess) and watches it at the library's own boundaries: the batches ``DetRecordIter``
yields (``--train-list``, ``--val-list``), the detections the validation metric receives, the graph and
run config the run saves (``--nms``, ``--nms-topk``, ``--force``), the training loss (``--label-smoothing``,
``--loc-loss``), the log (``--monitor``, ``--pattern``), the kvstore the module pushes its gradients
through (``--kv-store device``) and the learning rate the optimizer used (``--lr-scale-workers``).
"""
from __future__ import annotations

import csv
import errno
import json
import os
import re
import subprocess
import types

import mxnet as mx
import numpy as np
import pytest
from helpers import checkpoint_weights, files_under, history, load_script, script_command, train_args, write_rec

import train.engine as engine
import train.logs as logs
import train.train_net as train_net
from config.errors import UserError
from evaluate.eval_metric import MApMetric
from train.distributed import Cluster
from train.logs import logging_to

train_script = load_script("train")

NUM_TRAIN, NUM_VAL, BATCH = 6, 2, 2


def packed_objects(k: int) -> np.ndarray:
    """The objects packed into record ``k``: one class-0 box."""
    return np.array([[0, 0.1 + 0.05 * k, 0.1, 0.5 + 0.05 * k, 0.6, 0]])


def listed_objects(k: int) -> np.ndarray:
    """The objects the .lst gives image ``k`` instead: other classes, other boxes, one or two of them."""
    rows = [[1 + k % 2, 0.2, 0.3 + 0.02 * k, 0.7, 0.9, 0]]
    if k % 2:
        rows.append([2, 0.05, 0.05, 0.3, 0.25, 0])
    return np.array(rows)


def write_list(path: str, count: int) -> str:
    """A detection .lst of :func:`listed_objects` for images 0..count-1, its lines in reverse order (the
    iterator looks an image's label up by its index, not by line)."""
    with open(path, "w") as f:
        for k in reversed(range(count)):
            values = "\t".join(f"{v:.4f}" for v in listed_objects(k).ravel())
            f.write(f"{k}\t2\t6\t{values}\timage{k}.jpg\n")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> types.SimpleNamespace:
    """6 training and 2 validation noise images (72-112 px high) packed with :func:`packed_objects`, lists
    with :func:`listed_objects`, and 3 class names. A ``synthetic_rec``-like namespace for ``train_args``."""
    out = tmp_path_factory.mktemp("flag_effects")
    rng = np.random.RandomState(0)
    samples = [(rng.randint(0, 256, (72 + 8 * k, 96, 3)).astype(np.uint8), packed_objects(k))
               for k in range(NUM_TRAIN)]
    names = out / "names.txt"
    names.write_text("a\nb\nc\n")
    return types.SimpleNamespace(
        train_rec=write_rec(str(out / "train"), samples), val_rec=write_rec(str(out / "val"), samples[:NUM_VAL]),
        train_lst=write_list(str(out / "train.lst"), NUM_TRAIN), val_lst=write_list(str(out / "val.lst"), NUM_VAL),
        names_file=str(names), num_classes=3)


def toy_argv(tiny, prefix: str, *extra: str, **flags) -> list[str]:
    """train.py's command line: the toy on ``tiny`` for one epoch at batch 2, no augmentation, seed 1."""
    flags = {"end_epoch": 1, "batch_size": BATCH, "augment": "none", "seed": 1, **flags}
    return train_args(tiny, prefix, **flags) + list(extra)


def valid_rows(rows: np.ndarray) -> np.ndarray:
    """Label or detection rows without the padding (class -1)."""
    return rows[rows[:, 0] >= 0]


# --- --train-list, --val-list ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def list_run(tiny, tmp_path_factory) -> dict[str, list[tuple[int, np.ndarray]]]:
    """A run with ``--train-list`` and ``--val-list``: {record file: [(image index, objects)]} of every
    batch the iterators yielded."""
    seen: dict[str, list] = {}

    class RecordingIter(train_net.DetRecordIter):
        def next(self) -> mx.io.DataBatch:
            batch = super().next()
            labels = batch.label[0].asnumpy()
            seen.setdefault(self.path_imgrec, []).extend(
                (int(index), valid_rows(labels[k])) for k, index in enumerate(batch.index))
            return batch

    prefix = str(tmp_path_factory.mktemp("lists") / "ssd")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_net, "DetRecordIter", RecordingIter)
        train_script.main(toy_argv(tiny, prefix, train_list=tiny.train_lst, val_path=tiny.val_rec,
                                   val_list=tiny.val_lst))
    return seen


def assert_list_labels(seen: list[tuple[int, np.ndarray]], count: int) -> None:
    assert {index for index, _ in seen} == set(range(count))
    for index, objects in seen:
        np.testing.assert_allclose(objects, listed_objects(index), atol=1e-4, err_msg=f"image {index}")


def test_train_list_labels_reach_the_training_batches(tiny, list_run):
    """Every training batch carries the list's objects for its image, not those packed in the .rec."""
    assert_list_labels(list_run[tiny.train_rec], NUM_TRAIN)


def test_val_list_labels_reach_the_validation_batches(tiny, list_run):
    assert_list_labels(list_run[tiny.val_rec], NUM_VAL)


# --- --nms, --nms-topk, --force -------------------------------------------------------------------
@pytest.fixture(scope="module")
def validation_runs(tiny, tmp_path_factory):
    """``run(*flags)``: a run with validation and ``flags`` (once per flag set), as a namespace: the
    ``detections`` the validation metric received ([images, anchors, 6] rows cls, score, box), the
    ``MultiBoxDetection`` attributes of the saved graph, the saved ``run_config`` and the rows of
    ``metrics.csv``. The same seed and
    data give every run the same weights: only the flags differ."""
    cache = {}

    def run(*flags: str) -> types.SimpleNamespace:
        if flags not in cache:
            detections = []
            update = MApMetric.update

            def recording_update(self, labels, preds):
                detections.append(preds[self.pred_idx].asnumpy())
                update(self, labels, preds)

            prefix = str(tmp_path_factory.mktemp("nms") / "ssd")
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(MApMetric, "update", recording_update)
                train_script.main(toy_argv(tiny, prefix, *flags, val_path=tiny.val_rec))
            files = prefix + "_toy_64"
            with open(files + "-symbol.json") as f:
                nodes = json.load(f)["nodes"]
            attrs = [node["attrs"] for node in nodes if node["op"] == "_contrib_MultiBoxDetection"]
            assert len(attrs) == 1
            with open(files + "-ssd.json") as f:
                run_config = json.load(f)["config"]
            with open(files + "-metrics.csv", newline="") as f:
                metrics = list(csv.DictReader(f))
            cache[flags] = types.SimpleNamespace(detections=np.concatenate(detections), detection_attrs=attrs[0],
                                                 run_config=run_config, metrics=metrics)
        return cache[flags]

    return run


def overlaps(detections: np.ndarray, same_class: bool) -> list[float]:
    """IoU of every pair of kept detections of one image, of the same class or of different classes."""
    found = []
    for image in detections:
        rows = valid_rows(image)
        boxes, classes = rows[:, 2:6], rows[:, 0]
        lo, hi = np.maximum(boxes[:, None, :2], boxes[None, :, :2]), np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
        inter = np.prod(np.clip(hi - lo, 0, None), axis=2)
        area = np.prod(boxes[:, 2:] - boxes[:, :2], axis=1)
        iou = inter / np.maximum(area[:, None] + area[None, :] - inter, 1e-12)
        pairs = np.triu(np.ones_like(iou, dtype=bool), 1) & ((classes[:, None] == classes[None, :]) == same_class)
        found.extend(iou[pairs].tolist())
    return found


def kept_per_image(detections: np.ndarray) -> list[int]:
    return [len(valid_rows(image)) for image in detections]


def test_nms_threshold_reaches_the_detection_op_and_suppresses_overlaps(validation_runs):
    """--nms 0.1: the graph's MultiBoxDetection and the run config hold 0.1, and no two kept boxes of one
    class overlap by more; the default (0.45) keeps same-class pairs above 0.1."""
    default, strict = validation_runs(), validation_runs("--nms", "0.1")
    assert strict.detection_attrs["nms_threshold"] == "0.1"
    assert strict.run_config["nms_thresh"] == 0.1
    assert max(overlaps(strict.detections, same_class=True)) <= 0.1 + 1e-4
    assert max(overlaps(default.detections, same_class=True)) > 0.1
    assert sum(kept_per_image(strict.detections)) < sum(kept_per_image(default.detections))


def test_nms_topk_caps_the_validation_detections(validation_runs):
    default, capped = validation_runs(), validation_runs("--nms-topk", "2")
    assert capped.detection_attrs["nms_topk"] == "2"
    assert capped.run_config["nms_topk"] == 2
    assert max(kept_per_image(capped.detections)) <= 2
    assert min(kept_per_image(default.detections)) > 2


def test_force_suppresses_overlaps_across_classes(validation_runs):
    """--force (``suppress overlaps across classes``): no two kept boxes overlap by more than the NMS
    threshold whatever their classes; without it boxes of different classes overlap far more."""
    default, forced = validation_runs(), validation_runs("--force")
    assert forced.detection_attrs["force_suppress"] == "True"
    assert default.detection_attrs["force_suppress"] == "False"
    assert forced.run_config["force_suppress"] is True
    assert max(overlaps(forced.detections, same_class=False)) <= 0.45 + 1e-4
    assert max(overlaps(default.detections, same_class=False)) > 0.45


def test_label_smoothing_reaches_the_training_loss(validation_runs, monkeypatch):
    """--label-smoothing 0.3: the training graph's softmax carries it (the saved inference graph has no loss),
    the run config holds it, and the same seed and data train other weights: other validation scores."""
    import symbol.symbol_builder as builder

    built = []
    loss_head = builder.softmax_cross_entropy_output
    monkeypatch.setattr(builder, "softmax_cross_entropy_output",
                        lambda *args, **kwargs: built.append(loss_head(*args, **kwargs)) or built[-1])
    smoothed = validation_runs("--label-smoothing", "0.3")
    assert [float(attrs["smooth_alpha"]) for head in built for attrs in head.attr_dict().values()
            if "smooth_alpha" in attrs] == [0.3]
    default = validation_runs()
    assert smoothed.run_config["label_smoothing"] == 0.3 and default.run_config["label_smoothing"] == 0
    assert not np.allclose(smoothed.detections[..., 1], default.detections[..., 1], atol=1e-3)


def test_giou_loss_reaches_the_training_loss(validation_runs, monkeypatch):
    """--loc-loss giou: the training graph's box loss is the GIoU head, the run config holds it, the log and
    metrics.csv name the loss GIoU, and the same seed and data train other weights: other validation scores."""
    import symbol.symbol_builder as builder

    built = []
    loss_head = builder.giou_loss_output
    monkeypatch.setattr(builder, "giou_loss_output",
                        lambda *args, **kwargs: built.append(loss_head(*args, **kwargs)) or built[-1])
    giou = validation_runs("--loc-loss", "giou")
    assert [head.name for head in built] == ["loc_loss"]
    default = validation_runs()
    assert giou.run_config["loc_loss"] == "giou" and default.run_config["loc_loss"] == "smooth_l1"
    assert "train_GIoU" in giou.metrics[-1] and "train_SmoothL1" not in giou.metrics[-1]
    assert "train_SmoothL1" in default.metrics[-1]
    # 1 - GIoU lies in [0, 2], and the metric averages it over more anchors than the matched ones
    assert 0 < float(giou.metrics[0]["train_GIoU"]) < 2
    assert not np.allclose(giou.detections[..., 1], default.detections[..., 1], atol=1e-3)


# --- --monitor, --pattern -------------------------------------------------------------------------
MONITOR_LINE = re.compile(r"Batch:\s+(\d+) (\S+)\s+(\S+)")


def test_monitor_logs_the_statistics_of_the_arrays_the_pattern_matches(tiny, tmp_path):
    """--monitor 2 --pattern P: every second batch (mxnet's Monitor counts them from 1: batches 1 and 3
    of 3) the log holds one line per argument whose name P matches, with its root mean square; after the
    last batch those are the weights of the checkpoint."""
    pattern = r"stage1_conv\d_weight"
    prefix, log = str(tmp_path / "ssd"), str(tmp_path / "train.log")
    train_script.main(toy_argv(tiny, prefix, monitor=2, pattern=pattern, log=log))
    with open(log) as f:
        lines = [MONITOR_LINE.search(line) for line in f]
    stats = [(int(m.group(1)), m.group(2), float(m.group(3))) for m in lines if m]
    weights = checkpoint_weights(prefix + "_toy_64", 1)
    names = sorted(name for name in weights if re.match(pattern, name))
    assert len(names) == 2
    assert sorted((batch, name) for batch, name, _ in stats) == [(b, n) for b in (1, 3) for n in names]
    for batch, name, value in stats:
        if batch == 3:
            rms = np.linalg.norm(weights[name]) / np.sqrt(weights[name].size)
            assert value == pytest.approx(rms, rel=1e-4), name


# --- --kv-store device ----------------------------------------------------------------------------
def test_kv_store_device_sums_the_two_cpu_slices_in_a_device_kvstore(tiny, tmp_path, monkeypatch):
    """--cpus 2 --kv-store device: the run creates a 'device' kvstore and every gradient step goes through
    it with one array from each CPU context."""
    created, pushes = [], []
    create = mx.kvstore.create

    def recording_create(name="local"):
        kv = create(name)
        created.append(kv)
        pushpull = kv.pushpull

        def recording_pushpull(key, value, out=None, priority=0):
            pushes.append([array.context for array in value])
            return pushpull(key, value, out=out, priority=priority)

        kv.pushpull = recording_pushpull
        return kv

    monkeypatch.setattr(mx.kvstore, "create", recording_create)
    train_script.main(toy_argv(tiny, str(tmp_path / "ssd"), cpus=2, kv_store="device"))
    assert [kv.type for kv in created] == ["device"]
    assert pushes and all(contexts == [mx.cpu(0), mx.cpu(1)] for contexts in pushes)
    assert history(str(tmp_path / "ssd_toy_64"))[0]["epoch"] == "1"


# --- --lr-scale-workers ---------------------------------------------------------------------------
class ThreeWorkerView(Cluster):
    """A single-process run whose job description says 'rank 0 of 3 workers'.

    A real ``dist_sync`` job needs a scheduler, servers and other workers (tests/train/test_distributed.py);
    the learning rate is decided in :meth:`Cluster.describe` from the worker count alone, so this view
    gives it 3 workers there and trains as one process everywhere else.
    """

    def __init__(self, kv_store: str):
        super().__init__("local")
        self.asked_for = kv_store

    def describe(self, logger, lr: float, lr_scale_workers: bool) -> float:
        self.kind, self.distributed, self.num_workers = self.asked_for, True, 3
        try:
            return super().describe(logger, lr, lr_scale_workers)
        finally:
            self.kind, self.distributed, self.num_workers = "local", False, 1


def test_lr_scale_workers_multiplies_the_rate_the_optimizer_uses(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "Cluster", ThreeWorkerView)
    log = str(tmp_path / "train.log")
    train_script.main(toy_argv(tiny, str(tmp_path / "ssd"), "--lr-scale-workers", kv_store="dist_sync", lr=0.01,
                               log=log))
    assert float(history(str(tmp_path / "ssd_toy_64"))[0]["lr"]) == pytest.approx(0.03)
    with open(log) as f:
        text = f.read()
    assert "--lr-scale-workers: learning rate 0.01 x 3 workers = 0.03" in text
    assert "Epoch[0] Learning rate 0.03" in text


# --- --num-example --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def num_example_mismatch(tiny, tmp_path_factory) -> types.SimpleNamespace:
    """train.py run as a user would, in an empty folder with its default log file, and --num-example 5
    for a record of 6 images: the exit status, stderr lines and the files in the folder afterwards."""
    folder = tmp_path_factory.mktemp("num_example")
    argv = script_command("train.py") + toy_argv(tiny, str(folder / "ssd"), num_example=5, log=None,
                                                 val_path=tiny.val_rec)
    proc = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=300)
    return types.SimpleNamespace(status=proc.returncode, lines=proc.stderr.strip().splitlines(),
                                 stderr=proc.stderr, files=files_under(str(folder)))


@pytest.mark.slow
def test_num_example_mismatch_is_one_line_naming_the_flag_and_both_counts(tiny, num_example_mismatch):
    run = num_example_mismatch
    assert run.status == 2, run.stderr
    assert len(run.lines) == 1, run.stderr
    assert run.lines[0].startswith(f"error: --num-example 5: {tiny.train_rec} holds {NUM_TRAIN} images"), run.lines
    assert [name for name in run.files if name != "train.log"] == []


@pytest.mark.slow
def test_num_example_mismatch_leaves_no_log_file(num_example_mismatch):
    assert num_example_mismatch.files == []


# --- --log -------------------------------------------------------------------------------------------
def test_log_that_cannot_be_written_is_refused_before_the_run_and_creates_nothing(tmp_path, monkeypatch):
    """A folder given as --log, or a folder that takes no new file, is one line as the run starts (the
    file itself is created with the first line, so a refused run leaves none)."""
    with pytest.raises(UserError, match=f"--log {tmp_path}: cannot write \\(Is a directory\\)"):
        with logging_to(str(tmp_path)):
            pass

    def no_new_file(**_kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(logs.tempfile, "TemporaryFile", no_new_file)
    log = str(tmp_path / "train.log")
    with pytest.raises(UserError, match=f"--log {log}: cannot write \\(Permission denied\\)"):
        with logging_to(log):
            pass
    assert files_under(str(tmp_path)) == []
