"""evaluate.py, demo.py and tools/deploy.py on the trained toy model (``trained_toy``), and
evaluate_pascal_voc on a hand-made VOC set.

Bad-input cases run the scripts as subprocesses, all at once, and check the user gets
one ``error: ...`` line and exit status 2. Everything else runs in-process.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import types

import cv2
import mxnet as mx
import numpy as np
import pytest
from helpers import assert_same_detections, image_paths, load_script, read_lst, script_command, write_voc_set

from config.defaults import DEMO, DEPLOY
from dataset.pascal_voc import PascalVoc
from evaluate.detector import Detector, draw_detections
from evaluate.eval_metric import MApMetric, VOC07MApMetric
from evaluate.eval_voc import evaluate_pascal_voc, voc_ap
from evaluate.ssd_model import load_test_model

HAS_CAMERA = os.path.exists("/dev/video0")
MEAN_PIXELS = [DEMO["mean_r"], DEMO["mean_g"], DEMO["mean_b"]]


evaluate_script = load_script("evaluate")
demo_script = load_script("demo")
deploy_script = load_script("tools/deploy")


def model_args(toy, *, num_class: bool = True) -> list[str]:
    args = ["--network", toy.network, "--data-shape", str(toy.data_shape), "--prefix", toy.prefix,
            "--epoch", str(toy.epoch), "--class-names", toy.names_file]
    return args + (["--num-class", str(toy.num_class)] if num_class else [])


def val_images(toy) -> list[tuple[str, np.ndarray]]:
    """(path, BGR image) of the validation images, in .rec order."""
    return [(path, cv2.imread(path, cv2.IMREAD_COLOR)) for path in image_paths(toy.val_lst, toy.rec.synth.devkit)]


def val_objects(toy) -> list[np.ndarray]:
    """The packed [N, 6] objects ``[cls, x1, y1, x2, y2, difficult]`` per validation image, in .rec order."""
    entries = read_lst(toy.val_lst)
    return [entries[key][1] for key in entries]


def demo_detector(toy, deploy: bool = False) -> Detector:
    """A Detector built as demo.py builds it with its default NMS settings (those tools/deploy.py bakes in)."""
    symbol, args, auxs = load_test_model(toy.network, toy.checkpoint, toy.epoch, toy.data_shape, toy.num_class,
                                         DEMO["nms"], True, 400, deploy)
    return Detector(symbol, args, auxs, toy.data_shape, MEAN_PIXELS, batch_size=2)


# --- evaluate.py ----------------------------------------------------------------------
@pytest.fixture
def run_evaluate(trained_toy, monkeypatch, capsys):
    """Run evaluate.py's ``main`` in-process; returns ``(stdout, evaluate_model's result dict)``."""
    import evaluate.evaluation as evaluation

    real_evaluate_model = evaluation.evaluate_model
    results = []

    def recording_evaluate_model(*args, **kwargs):
        results.append(real_evaluate_model(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(evaluation, "evaluate_model", recording_evaluate_model)

    def run(*extra: str) -> tuple[str, dict]:
        capsys.readouterr()
        evaluate_script.main(model_args(trained_toy) + ["--rec-path", trained_toy.val_rec, "--batch-size", "4",
                                                        "--cpu", *extra])
        return capsys.readouterr().out, results[-1]

    return run


@pytest.mark.slow
def test_evaluate_prints_ap_table_and_writes_pr_curves(trained_toy, run_evaluate, tmp_path):
    out, result = run_evaluate("--plot-pr", str(tmp_path / "pr"))
    lines = out.splitlines()
    table = lines[:lines.index(next(line for line in lines if line.startswith("mAP")))]
    rows = [line.split() for line in table[2:]]
    assert table[0].split() == ["class", "AP"]
    assert [name for name, _ in rows] == trained_toy.classes
    assert re.fullmatch(r"mAP = 0\.\d{4}", lines[len(table)])
    printed_aps = [float(ap) for _, ap in rows]
    printed_map = float(lines[len(table)].split("=")[1])
    # every class has ground truth in the set, so the mAP is the plain mean of the rows
    assert printed_map == pytest.approx(np.mean(printed_aps), abs=1e-4)
    assert printed_aps == pytest.approx([result["aps"][name] for name in trained_toy.classes], abs=5e-5)
    assert result["images"] == len(val_objects(trained_toy))

    pngs = sorted(os.listdir(tmp_path / "pr"))
    assert pngs == sorted(f"pr_{name}.png" for name in trained_toy.classes)
    for name in pngs:
        image = cv2.imread(str(tmp_path / "pr" / name))
        assert image is not None and image.shape[0] > 100 and image.shape[1] > 100
    assert f"3 PNG files in {tmp_path / 'pr'}" in lines[-1]


@pytest.mark.slow
def test_evaluate_metric_flags(trained_toy, run_evaluate):
    objects = val_objects(trained_toy)
    all_objects = np.concatenate(objects)
    assert all_objects[:, 5].sum() > 0, "the validation set needs a difficult object for this test"

    def positives(rows: np.ndarray, use_difficult: bool) -> dict[int, int]:
        counted = rows if use_difficult else rows[rows[:, 5] == 0]
        return {cls: int(np.sum(counted[:, 0] == cls)) for cls in range(trained_toy.num_class)}

    _, voc07 = run_evaluate()
    _, area = run_evaluate("--no-voc07")
    _, difficult = run_evaluate("--use-difficult")
    _, one_batch = run_evaluate("--num-batch", "1")

    assert type(voc07["metric"]) is VOC07MApMetric
    assert type(area["metric"]) is MApMetric
    # same matches, different AP rule: each AP is its curve's 11-point / area value
    for result, use_07 in ((voc07, True), (area, False)):
        for name, (precision, recall, _) in result["metric"].pr_curves().items():
            assert result["aps"][name] == pytest.approx(voc_ap(recall, precision, use_07))
    assert any(voc07["aps"][name] != pytest.approx(area["aps"][name]) for name in trained_toy.classes)

    assert dict(voc07["metric"]._num_positives) == positives(all_objects, use_difficult=False)
    assert dict(difficult["metric"]._num_positives) == positives(all_objects, use_difficult=True)
    assert difficult["images"] == voc07["images"] == len(objects)

    assert one_batch["images"] == 4
    assert dict(one_batch["metric"]._num_positives) == positives(np.concatenate(objects[:4]), use_difficult=False)


# --- tools/deploy.py --------------------------------------------------------------------
@pytest.fixture
def deployed_toy(trained_toy, tmp_path, capsys) -> types.SimpleNamespace:
    """A copy of the toy checkpoint with its deployed model written by tools/deploy.py's main."""
    base = os.path.basename(trained_toy.checkpoint)
    for suffix in ("-symbol.json", f"-{trained_toy.epoch:04d}.params"):
        shutil.copyfile(trained_toy.checkpoint + suffix, tmp_path / (base + suffix))
    toy = types.SimpleNamespace(**{**vars(trained_toy), "prefix": str(tmp_path / "ssd_"),
                                   "checkpoint": str(tmp_path / base)})
    capsys.readouterr()
    deploy_script.main(["--network", toy.network, "--data-shape", str(toy.data_shape), "--num-class",
                        str(toy.num_class), "--prefix", toy.prefix, "--epoch", str(toy.epoch)])
    deployed = str(tmp_path / f"deploy_{base}")
    toy.deploy_json, toy.deploy_params = f"{deployed}-symbol.json", f"{deployed}-{toy.epoch:04d}.params"
    assert capsys.readouterr().out.strip() == (
        f"Saved deploy model: {toy.deploy_json}, {toy.deploy_params}, {deployed}-ssd.json")
    return toy


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Cannot decide type")  # SymbolBlock.imports on a float32 graph
def test_deploy_round_trip_gives_the_same_detections(deployed_toy):
    assert DEPLOY["nms"] == DEMO["nms"]  # demo_detector's settings are what deploy.py baked in
    images = [image for _, image in val_images(deployed_toy)[:3]]
    assert len({image.shape for image in images}) > 1  # images of different sizes
    from_checkpoint = demo_detector(deployed_toy).detect(images)
    from_deployed = demo_detector(deployed_toy, deploy=True).detect(images)
    for before, after in zip(from_checkpoint, from_deployed):
        assert before.shape[0] > 0
        np.testing.assert_array_equal(before, after)

    # the deployed files alone, through Gluon, give the module's raw output
    detector = demo_detector(deployed_toy, deploy=True)
    batch = mx.nd.array(np.stack([detector.preprocess(image) for image in images[:2]]))
    detector.mod.forward(mx.io.DataBatch([batch]), is_train=False)
    module_output = detector.mod.get_outputs()[0].asnumpy()
    net = mx.gluon.SymbolBlock.imports(deployed_toy.deploy_json, ["data"], deployed_toy.deploy_params)
    gluon_output = net(batch).asnumpy()
    assert gluon_output.shape == module_output.shape
    assert_same_up_to_ties(gluon_output, module_output)


def assert_same_up_to_ties(first: np.ndarray, second: np.ndarray, tol: float = 1e-5) -> None:
    """Two ``[B, N, 6]`` detection outputs are the same, except where two anchors' scores agree to ``tol``:
    unfused (Gluon) and fused (Module) convolutions round differently, so such a pair can swap places in the
    score order, and NMS then keeps the other one of the two. Each differing row must be such a swap."""
    np.testing.assert_allclose(first[:, :, 1], second[:, :, 1], atol=tol)  # the score order holds
    differing = np.argwhere(np.abs(first - second).max(axis=2) > tol)
    for image, row in differing:
        neighbours = second[image, max(row - 2, 0): row + 3]
        partner = np.abs(neighbours[:, 1:] - first[image, row, 1:]).max(axis=1) <= tol
        assert partner.any(), f"image {image} row {row}: {first[image, row]} is not a tie swap"
    assert len(differing) <= 0.01 * first.shape[1] * first.shape[0]


@pytest.mark.slow
def test_evaluate_deployed_model_matches_checkpoint(deployed_toy, capsys, scored):
    """The same detections, not only the same table: the toy scores an mAP near 0, whose 4-decimal table
    would hide differences; its detection rows would not."""
    outputs, detections = [], []
    # the checkpoint with deploy.py's NMS settings, the deployed graph that has them built in, and (to show
    # that the comparison sees a change) the checkpoint with another NMS threshold
    for extra in (["--nms", str(DEPLOY["nms"]), "--force"], ["--deploy"], ["--nms", "0.3", "--force"]):
        scored.clear()
        evaluate_script.main(model_args(deployed_toy) + ["--rec-path", deployed_toy.val_rec, "--cpu", *extra])
        outputs.append(capsys.readouterr().out)
        detections.append(list(scored))
    checkpoint_run, deployed_run, other_nms = detections
    assert len(checkpoint_run) == len(val_objects(deployed_toy))
    assert_same_detections(checkpoint_run, deployed_run)
    assert outputs[0] == outputs[1]
    assert sum(len(d) for d, _ in other_nms) < sum(len(d) for d, _ in checkpoint_run)


# --- demo.py --------------------------------------------------------------------------
@pytest.mark.slow
def test_demo_draws_boxes_on_a_copy_of_each_image(trained_toy, tmp_path, capsys):
    # PNG inputs are written as PNG, so the output can be compared pixel for pixel
    inputs = []
    for k, (_, image) in enumerate(val_images(trained_toy)[:2]):
        path = str(tmp_path / f"in{k}.png")
        cv2.imwrite(path, image)
        inputs.append((path, image))
    images = [image for _, image in inputs]
    # a threshold that leaves at least three boxes in each image
    all_dets = demo_detector(trained_toy).detect(images)
    thresh = float(min(np.sort(dets[:, 1])[-3] for dets in all_dets))
    expected_dets = demo_detector(trained_toy).detect(images, thresh)

    out_dir = tmp_path / "out"
    status = demo_script.main(model_args(trained_toy, num_class=False) + [
        "--images", ",".join(path for path, _ in inputs), "--out-dir", str(out_dir), "--thresh", str(thresh),
        "--cpu", "--batch-size", "2", "--nms", str(DEMO["nms"]), "--force"])  # flags win over the run config
    assert status == 0
    stdout = capsys.readouterr().out
    assert sorted(os.listdir(out_dir)) == ["in0.png", "in1.png"]
    for (path, image), dets in zip(inputs, expected_dets):
        assert f"{path}: {len(dets)} detections" in stdout
        drawn = cv2.imread(str(out_dir / os.path.basename(path)), cv2.IMREAD_COLOR)
        assert drawn.shape == image.shape
        np.testing.assert_array_equal(drawn, draw_detections(image, dets, trained_toy.classes))
        check_changes_follow_boxes(image, drawn, dets)


def check_changes_follow_boxes(image: np.ndarray, drawn: np.ndarray, dets: np.ndarray) -> None:
    """Changed pixels lie on the box outlines or in a label strip above a box's top-left corner; the
    outlines themselves changed; the rest of the image is untouched."""
    height, width = image.shape[:2]
    changed = np.any(drawn != image, axis=2)
    thickness = max(1, round(min(height, width) / 200))
    near_box = np.zeros((height, width), dtype=bool)
    outline = np.zeros((height, width), dtype=bool)
    # the label (text of scale 0.4 * thickness, about 10 px high and 8 px a character per unit) sits
    # above the box's top-left corner, or just inside the box when that corner touches the top
    label_height, label_width = 14 * thickness, 150 * thickness
    for x1, y1, x2, y2 in np.round(dets[:, 2:6]).astype(int):
        ring = np.zeros((height, width), dtype=bool)
        pad = thickness
        ring[max(y1 - pad, 0):max(y2 + pad + 1, 0), max(x1 - pad, 0):max(x2 + pad + 1, 0)] = True
        ring[max(y1 + pad + 1, 0):max(y2 - pad, 0), max(x1 + pad + 1, 0):max(x2 - pad, 0)] = False
        near_box |= ring
        near_box[max(y1 - label_height, 0):max(y1, label_height) + pad + 1,
                 max(x1 - pad, 0):max(x1, 0) + label_width] = True
        for y in (y1, y2):
            if 0 <= y < height:
                outline[y, max(x1, 0):min(x2, width - 1) + 1] = True
        for x in (x1, x2):
            if 0 <= x < width:
                outline[max(y1, 0):min(y2, height - 1) + 1, x] = True
    assert not np.any(changed & ~near_box), "pixels changed away from every drawn box"
    assert changed[outline].mean() > 0.9
    assert (~changed).sum() > 0.3 * changed.size


@pytest.mark.slow
def test_demo_annotates_a_video(trained_toy, tmp_path, capsys):
    frame_size = (160, 128)  # width, height
    frames = [cv2.resize(image, frame_size) for _, image in val_images(trained_toy)[:5]]
    clip = str(tmp_path / "clip.mp4")
    writer = cv2.VideoWriter(clip, cv2.VideoWriter_fourcc(*"mp4v"), 5.0, frame_size)
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()

    out_dir = tmp_path / "annotated"
    status = demo_script.main(model_args(trained_toy, num_class=False) + [
        "--video", clip, "--out-dir", str(out_dir), "--thresh", "0.2", "--cpu"])
    assert status == 0
    out_path = str(out_dir / "clip_det.mp4")
    assert f"annotated video: {out_path} (5 frames)" in capsys.readouterr().out
    assert os.listdir(out_dir) == ["clip_det.mp4"]
    capture = cv2.VideoCapture(out_path)
    decoded = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        decoded.append(frame)
    capture.release()
    assert len(decoded) == len(frames)
    assert all(frame.shape == (frame_size[1], frame_size[0], 3) for frame in decoded)


# --- bad input: one line on stderr, exit status 2 ------------------------------------------
@pytest.fixture(scope="module")
def bad_input_runs(trained_toy, tmp_path_factory) -> dict:
    """Every bad-input case run as a subprocess, all started together (each pays mxnet's import once)."""
    tmp = tmp_path_factory.mktemp("bad_input")
    (tmp / "empty").mkdir()
    (tmp / "broken.jpg").write_bytes(b"not an image")
    good = val_images(trained_toy)[0][0]
    evaluate = script_command("evaluate.py") + ["--cpu", "--rec-path", trained_toy.val_rec]
    demo = script_command("demo.py") + ["--cpu"]
    no_model = str(tmp / "nowhere" / "ssd_")

    def replace(args: list[str], flag: str, value: str) -> list[str]:
        args = list(args)
        args[args.index(flag) + 1] = value
        return args

    with_count, without_count = model_args(trained_toy), model_args(trained_toy, num_class=False)
    cases = {
        "evaluate_missing_epoch": evaluate + replace(with_count, "--epoch", "7"),
        "evaluate_missing_checkpoint": evaluate + replace(with_count, "--prefix", no_model),
        "evaluate_class_count": evaluate + replace(replace(with_count, "--num-class", "2"), "--class-names", "a,b"),
        "evaluate_missing_rec": evaluate + with_count + ["--rec-path", str(tmp / "missing.rec")],
        "demo_missing_epoch": demo + replace(without_count, "--epoch", "7") + ["--images", good],
        "demo_missing_checkpoint": demo + replace(without_count, "--prefix", no_model) + ["--images", good],
        "demo_class_names": demo + replace(without_count, "--class-names", "a,b") + ["--images", good],
        "demo_empty_dir": demo + without_count + ["--dir", str(tmp / "empty")],
        "demo_unreadable_image": demo + without_count + [
            "--images", f"{tmp / 'broken.jpg'},{good},{tmp / 'missing.jpg'}", "--out-dir", str(tmp / "out")],
    }
    if not HAS_CAMERA:
        cases["demo_camera"] = demo + without_count + ["--camera"]
    running = {name: subprocess.Popen(args, cwd=str(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name, args in cases.items()}
    results = {}
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        results[name] = (process.returncode, stdout, stderr)
    return {"results": results, "tmp": tmp, "good": good}


ONE_LINE_ERRORS = {
    "evaluate_missing_epoch": r"--prefix/--epoch: checkpoint .*ssd_toy_128-0007\.params does not exist; "
                              r"saved epochs: 1, 2",
    "evaluate_missing_checkpoint": r"--prefix/--epoch: checkpoint .*nowhere/ssd_toy_128-0002\.params does not "
                                   r"exist",
    "evaluate_class_count": r"--num-class 2 disagrees with the checkpoint: it was trained for 3 classes",
    "evaluate_missing_rec": r"--rec-path .*missing\.rec: file not found",
    "demo_missing_epoch": r"--prefix/--epoch: checkpoint .*ssd_toy_128-0007\.params does not exist; "
                          r"saved epochs: 1, 2",
    "demo_missing_checkpoint": r"--prefix/--epoch: checkpoint .*nowhere/ssd_toy_128-0002\.params does not exist",
    "demo_class_names": r"--class-names lists 2 names; the checkpoint was trained for 3 classes",
    "demo_empty_dir": r"--dir .*empty: no \*\.jpg images found",
    "demo_camera": r"--camera: no camera could be opened \(device 0\)",
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(ONE_LINE_ERRORS))
def test_bad_input_gives_one_line(bad_input_runs, case):
    if case == "demo_camera" and HAS_CAMERA:
        pytest.skip("this machine has a camera: --camera would open a window")
    status, stdout, stderr = bad_input_runs["results"][case]
    assert status == 2
    assert len(stderr.splitlines()) == 1, stderr
    assert re.fullmatch("error: " + ONE_LINE_ERRORS[case], stderr.strip()), stderr
    assert "Traceback" not in stdout + stderr


@pytest.mark.slow
def test_demo_reports_unreadable_images_and_runs_the_others(bad_input_runs):
    status, stdout, stderr = bad_input_runs["results"]["demo_unreadable_image"]
    tmp, good = bad_input_runs["tmp"], bad_input_runs["good"]
    assert status == 2
    assert "Traceback" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("error:")] == [
        f"error: {tmp / 'broken.jpg'}: cannot be decoded as an image",
        f"error: {tmp / 'missing.jpg'}: file not found",
        "error: 2 of 3 images could not be read",
    ]
    assert re.search(rf"^{re.escape(good)}: \d+ detections", stdout, re.MULTILINE)
    assert os.listdir(tmp / "out") == [os.path.basename(good)]


# --- evaluate_pascal_voc -----------------------------------------------------------
@pytest.fixture
def tiny_voc(tmp_path) -> PascalVoc:
    """Three 100x80 images; 'cat' has 3 objects (one difficult), 'dog' has 2."""
    rng = np.random.default_rng(0)
    samples = [
        ("a", [("cat", 11, 11, 50, 40, 0), ("dog", 55, 20, 95, 75, 0)]),
        ("b", [("cat", 1, 1, 40, 30, 0), ("cat", 60, 40, 100, 80, 1)]),
        ("c", [("dog", 20, 10, 70, 60, 0), ("cat", 5, 50, 30, 78, 0)]),
    ]
    write_voc_set(str(tmp_path / "VOCdevkit"), "2007", "test",
                  [(name, rng.integers(0, 255, (80, 100, 3), dtype=np.uint8), objects) for name, objects in samples])
    return PascalVoc("test", "2007", str(tmp_path / "VOCdevkit"), names=["cat", "dog"])


def ground_truth_detections(voc: PascalVoc) -> list[np.ndarray]:
    """Every labelled box as a detection of score 1 (``[cls, score, x1, y1, x2, y2]``)."""
    return [np.insert(voc.label_from_index(i)[:, :5], 1, 1.0, axis=1) for i in range(voc.num_images)]


def test_pascal_voc_evaluate_detections(tiny_voc, tmp_path):
    # detecting the ground truth (difficult box included: it counts neither way) is perfect
    result = evaluate_pascal_voc(tiny_voc, ground_truth_detections(tiny_voc))
    assert result == {"cat": 1.0, "dog": 1.0, "mAP": 1.0}
    results_dir = os.path.join(tiny_voc.devkit_path, "results", "VOC2007", "Main")
    assert {f"comp4_det_test_{name}.txt" for name in ("cat", "dog")} <= set(os.listdir(results_dir))

    # hand-worked 'dog': a false positive ranked above both true ones; precision 0, 1/2, 2/3 at
    # recall 0, 1/2, 1, so every one of the 11 points takes 2/3 (VOC2007: year < 2010)
    dets = ground_truth_detections(tiny_voc)
    dog = tiny_voc.classes.index("dog")
    dets[1] = np.vstack([dets[1], [dog, 2.0, 0.0, 0.0, 0.2, 0.2]])
    result = evaluate_pascal_voc(tiny_voc, dets, output_dir=str(tmp_path / "hand"))
    assert result["cat"] == 1.0 and result["dog"] == pytest.approx(2 / 3)
    assert result["mAP"] == pytest.approx((1 + 2 / 3) / 2)
    assert os.path.isfile(tmp_path / "hand" / "comp4_det_test_dog.txt")

    rng = np.random.default_rng(1)
    random_dets = []
    for _ in range(tiny_voc.num_images):
        corners = np.sort(rng.uniform(0, 1, (10, 2, 2)), axis=1).reshape(10, 4)[:, [0, 2, 1, 3]]
        random_dets.append(np.column_stack([rng.integers(0, 2, 10), rng.uniform(0, 1, 10), corners]))
    result = evaluate_pascal_voc(tiny_voc, random_dets, output_dir=str(tmp_path / "random"))
    assert result["mAP"] < 0.5

    with pytest.raises(ValueError, match="2 detection arrays for 3 images"):
        evaluate_pascal_voc(tiny_voc, dets[:2])


@pytest.mark.slow
def test_evaluate_coco_prints_the_twelve_cocoeval_numbers(trained_toy, run_evaluate):
    pytest.importorskip("pycocotools")
    from evaluate.coco_eval import STAT_NAMES

    out, result = run_evaluate("--coco")
    assert list(result["coco"]) == list(STAT_NAMES) and len(STAT_NAMES) == 12
    coco_line = [line for line in out.splitlines() if line.startswith("COCO: ")]
    assert len(coco_line) == 1 and f"{STAT_NAMES[0]} {result['coco'][STAT_NAMES[0]]:.4f}" in coco_line[0]
    # AP averages IoU .5:.95, so it cannot exceed AP at IoU .5
    assert result["coco"]["AP"] <= result["coco"]["AP50"] + 1e-9
