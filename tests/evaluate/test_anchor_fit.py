"""evaluate/anchor_fit.py and tools/fit_anchors.py: anchors as the graphs make them, coverage, warnings, fitting."""
import json

import mxnet as mx
import numpy as np
import pytest
from helpers import ROOT, pack_voc, run_side_by_side, script_command, tiny_synthetic, write_rec

from config.errors import UserError
from evaluate import anchor_fit as af


def random_boxes(rng: np.random.Generator, count: int, low: float, high: float, aspect: float = 2.0) -> np.ndarray:
    """``count`` normalised boxes inside the image, side sqrt(w*h) uniform in [low, high], aspect up to 1:aspect."""
    side = rng.uniform(low, high, count)
    ratio = np.exp(rng.uniform(-np.log(aspect), np.log(aspect), count))
    w, h = np.minimum(side * np.sqrt(ratio), 1), np.minimum(side / np.sqrt(ratio), 1)
    cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


# --- coverage worked by hand ------------------------------------------------------------------

def test_coverage_by_hand_including_boxes_exactly_at_the_threshold():
    anchors = np.array([[0, 0, 1, 1], [0, 0, .5, .5]], dtype=float)
    boxes = np.array([
        [0, 0, 1, .5],      # IoU .5 with both anchors: exactly at the threshold
        [0, 0, .5, .5],     # the second anchor itself: IoU 1
        [.6, .6, .9, .9],   # .09 / 1 with the first, 0 with the second
        [0, 0, .75, 1],     # .75 with the first
    ])
    np.testing.assert_allclose(af.best_iou(boxes, anchors), [.5, 1, .09, .75])
    assert af.coverage(boxes, anchors, .5).tolist() == [True, True, False, True]
    assert af.coverage(boxes, anchors, .5, strict=True).tolist() == [False, True, False, True]
    assert af.coverage(boxes, anchors, .76).tolist() == [False, True, False, False]
    # inclusive pixel boxes (Faster R-CNN): [0, 0, 9, 4] is 10 x 5 pixels, half of [0, 0, 9, 9]
    pixel = af.coverage(np.array([[0, 0, 9, 4.]]), np.array([[0, 0, 9, 9.]]), .5, pixel_offset=1)
    assert pixel.tolist() == [True]
    assert af.coverage(np.array([[0, 0, 9, 4.]]), np.array([[0, 0, 9, 9.]]), .5).tolist() == [False]  # 45/81


def test_multibox_target_matches_strictly_above_its_threshold():
    """Why SSD coverage uses IoU > 0.5: MultiBoxTarget leaves an anchor at IoU exactly 0.5 unmatched."""
    anchors = mx.nd.array([[[0, 0, 1, 1], [0, 0, 1, .5], [.8, .8, 1, 1]]])  # IoU 1, exactly .5, ~0
    label = mx.nd.array([[[0, 0, 0, 1, 1]]])
    cls_preds = mx.nd.zeros((1, 2, 3))
    at = mx.nd.contrib.MultiBoxTarget(anchors, label, cls_preds, overlap_threshold=.5, negative_mining_ratio=-1)
    below = mx.nd.contrib.MultiBoxTarget(anchors, label, cls_preds, overlap_threshold=.4999,
                                         negative_mining_ratio=-1)
    assert at[2].asnumpy().tolist() == [[1, 0, 0]]
    assert below[2].asnumpy().tolist() == [[1, 1, 0]]
    boxes = np.array([[0, 0, 1, 1.]])
    assert af.coverage(boxes, np.array([[0, 0, 1, .5]]), .5, strict=True).tolist() == [False]


def test_chunked_coverage_agrees_with_all_pairs():
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 700, .02, .9)
    anchors = af.ssd_anchors("toy", 128)
    best = af.best_iou(boxes, anchors, max_pairs=10_000)  # many chunks
    np.testing.assert_allclose(best, af.best_iou(boxes, anchors))
    for threshold in (.3, .5, .7):
        assert (af.coverage(boxes, anchors, threshold, max_pairs=5_000) == (best >= threshold)).all()
        assert (af.coverage(boxes, anchors, threshold, strict=True) == (best > threshold)).all()


# --- anchors as the graphs make them ----------------------------------------------------------

@pytest.mark.parametrize("network, data_shape, count", [("toy", 128, 1364), ("toy", 256, 5444),
                                                         ("vgg16_reduced", 300, 8732)])
def test_ssd_anchors_equal_multibox_prior(network, data_shape, count):
    from symbol.symbol_factory import get_symbol

    anchors = af.ssd_anchors(network, data_shape)
    assert anchors.shape == (count, 4)
    graph = get_symbol(network, data_shape, num_classes=2).get_internals()["multibox_anchors_output"]
    _, out_shapes, _ = graph.infer_shape(data=(1, 3, data_shape, data_shape))
    assert out_shapes[0] == (1, count, 4)
    expected = []
    for (height, width), layer in zip(af.ssd_feature_shapes(network, data_shape), af.ssd_layers(network, data_shape)):
        steps = (layer.step_y, layer.step_x) if network == "vgg16_reduced" else (-1, -1)
        expected.append(mx.nd.contrib.MultiBoxPrior(mx.nd.zeros((1, 1, height, width)), sizes=layer.sizes,
                                                    ratios=layer.ratios, steps=steps).asnumpy().reshape(-1, 4))
    np.testing.assert_allclose(anchors, np.concatenate(expected), atol=1e-6, rtol=0)


def test_ssd_anchors_equal_the_graphs_own_anchor_output():
    """The toy graph run forward: its multibox_anchors, overrides included, are ssd_anchors' rows in order."""
    from symbol.symbol_factory import get_symbol

    sizes = [[.05, .08], [.1, .15], [.3, .4], [.5, .6], [.8, .9]]
    ratios = [[1, 1.5, .7]] * 5
    sym = get_symbol("toy", 128, num_classes=2, sizes=sizes, ratios=ratios).get_internals()["multibox_anchors_output"]
    executor = sym.simple_bind(mx.cpu(), data=(1, 3, 128, 128), grad_req="null")
    graph_anchors = executor.forward(is_train=False)[0].asnumpy()[0]
    np.testing.assert_allclose(af.ssd_anchors("toy", 128, sizes, ratios), graph_anchors, atol=1e-6, rtol=0)


def test_grid_best_iou_equals_all_pairs():
    rng = np.random.default_rng(0)
    boxes = random_boxes(rng, 1500, .01, 1.0, aspect=3)
    for network, data_shape, sizes, ratios in (("toy", 128, None, None), ("vgg16_reduced", 300, None, None),
                                               ("toy", 192, [[.04, .07], [.1, .2], [.3, .4], [.5, .6], [.7, .9]],
                                                [[1, 3, .4]] * 5)):
        layers = af.ssd_layers(network, data_shape, sizes, ratios)
        np.testing.assert_allclose(af.ssd_best_iou(boxes, layers),
                                   af.best_iou(boxes, af.ssd_anchors(network, data_shape, sizes, ratios)),
                                   atol=1e-9, rtol=0)


@pytest.mark.parametrize("image_hw, feat_hw, border", [((600, 800), (37, 50), 0), ((333, 600), None, 0),
                                                       ((500, 375), (32, 24), 20)])
def test_rcnn_best_iou_equals_all_pairs_over_inside_anchors(image_hw, feat_hw, border):
    rng = np.random.default_rng(1)
    normalised = random_boxes(rng, 600, .02, .9)
    height, width = image_hw
    gt = normalised * [width, height, width, height]
    gt[:, 2:] -= 1  # inclusive ends
    scales, ratios = (4, 8, 16, 32), (.5, 1, 2)
    anchors = af.rcnn_anchors(16, scales, ratios, image_hw, feat_hw)
    inside = af.rcnn_inside(anchors, image_hw, border)
    expected = af.best_iou(gt, anchors[inside], pixel_offset=1)
    fast = af.rcnn_best_iou(gt, np.tile(image_hw, (len(gt), 1)), 16, scales, ratios, border,
                            None if feat_hw is None else np.tile(feat_hw, (len(gt), 1)))
    np.testing.assert_allclose(fast, expected, atol=1e-9, rtol=0)


def test_rcnn_anchors_and_gt_boxes_are_the_loaders():
    from dataset.rcnn_anchor import AnchorGenerator
    from dataset.rcnn_loader import objects_to_gt_boxes, resize_scale

    np.testing.assert_array_equal(af.rcnn_anchors(16, (8, 16, 32), (.5, 1, 2), (600, 800), (37, 50)),
                                  AnchorGenerator(16, (8, 16, 32), (.5, 1, 2)).generate(37, 50))
    assert af.rcnn_anchors(16, (8, 16, 32), (.5, 1, 2), (600, 800)).shape == (38 * 50 * 9, 4)
    objects = np.array([[0, .1, .2, .5, .9, 0], [1, .0, .0, 1., 1., 0]])
    for height, width in ((375, 500), (500, 333), (200, 1200)):
        scale = resize_scale(height, width, 600, 1000)
        expected = objects_to_gt_boxes(objects, height, width, scale, int(round(width * scale)), False)[:, :4]
        gt, resized = af.rcnn_gt_boxes(objects[:, 1:5], np.tile([height, width], (2, 1)), 600, 1000)
        np.testing.assert_allclose(gt, expected)
        assert resized[0].tolist() == [round(height * scale), round(width * scale)]


# --- measured coverage and warnings ----------------------------------------------------------

def _band_shares(network: str, data_shape: int) -> list[float]:
    rng = np.random.default_rng(0)
    anchors = af.ssd_anchors(network, data_shape)
    return [af.coverage(random_boxes(rng, 2000, low, high), anchors, .5, strict=True).mean()
            for low, high in ((.03, .08), (.08, .15), (.15, .30), (.30, .90))]


def test_preset_coverage_by_object_size():
    """2,000 random boxes per band of the side, aspect 0.5-2: toy at 128 misses objects below ~15%."""
    toy = _band_shares("toy", 128)
    assert toy[0] == 0 and .05 < toy[1] < .2 and toy[2] > .99 and toy[3] > .995
    vgg = _band_shares("vgg16_reduced", 300)
    assert .1 < vgg[0] < .3 and min(vgg[1:]) > .995


def test_warnings_fire_on_small_objects_and_name_the_band_and_the_fix():
    boxes = random_boxes(np.random.default_rng(2), 500, .06, .12)
    report = af.ssd_coverage_report(boxes, "toy", 128, rec="data/train.rec")
    lines = af.warnings(report)
    assert report.share < .05 and len(lines) >= 2
    fix = "python tools/fit_anchors.py --rec data/train.rec --network toy --data-shape 128"
    assert all(fix in line for line in lines)
    assert any("objects of <16 px" in line for line in lines)
    assert any(f"{100 * report.share:.1f}%" in line for line in lines)


def test_warnings_silent_for_objects_of_20_to_60_percent():
    boxes = random_boxes(np.random.default_rng(4), 1000, .2, .6)
    report = af.ssd_coverage_report(boxes, "toy", 128)
    assert report.share > .99
    assert af.warnings(report) == []


def test_band_warning_rule():
    """A band warns when it holds >= 5% of the objects and < 80% of them are covered."""
    sizes = np.r_[np.full(90, 50.0), np.full(6, 20.0), np.full(4, 10.0)]  # 90 in 32-64, 6 in 16-32, 4 in <16
    covered = np.r_[np.ones(90, bool), [True, True, False, False, False, False], np.zeros(4, bool)]
    report = af.coverage_report(covered, sizes, .5, "toy", 128)
    assert report.share == .92
    lines = af.warnings(report)
    assert len(lines) == 2 and "only 92.0%" in lines[0]  # overall below 95%
    assert "objects of 16-32 px (6, 6% of all)" in lines[1] and "33.3%" in lines[1]  # <16: 4% of objects, silent
    covered[90:95] = True  # 16-32: 5 of 6 covered, 83%
    assert [line for line in af.warnings(af.coverage_report(covered, sizes, .5, "toy", 128)) if "16-32" in line] == []


# --- fitting --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_objects_rec(tmp_path_factory):
    """A packed synthetic set whose objects are 6-12% of the image side (300-400 px images)."""
    out = tmp_path_factory.mktemp("small_objects")
    synth = tiny_synthetic(out, num_train=40, num_val=0, classes=3, seed=1, min_side=300, max_side=400,
                           min_size=.06, max_size=.12, max_objects=6)
    return pack_voc(synth, out / "train.lst", "train")


def test_read_record_boxes_match_the_generator(small_objects_rec):
    boxes, classes, difficult, image = af.read_record_boxes(small_objects_rec)
    objects = af.read_record_objects(small_objects_rec)
    assert len(objects) == 40 and boxes.shape == (sum(len(o) for o in objects), 4)
    assert np.bincount(image, minlength=40).tolist() == [len(o) for o in objects]
    np.testing.assert_allclose(boxes, np.concatenate(objects)[:, 1:5])
    assert set(classes.tolist()) <= {0, 1, 2}
    side = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    assert np.median(side[~difficult]) < .15


def test_read_record_boxes_rereads_a_rewritten_file_and_shares_read_only_arrays(small_objects_rec, tmp_path):
    import shutil

    copy = str(shutil.copy(small_objects_rec, tmp_path / "train.rec"))
    first = af.read_record_boxes(copy)
    assert af.read_record_boxes(copy)[0] is first[0]  # the same file: not read again
    with pytest.raises(ValueError, match="read-only"):
        first[0][0, 0] = 1.0
    image = np.zeros((32, 32, 3), np.uint8)
    write_rec(str(tmp_path / "train"), [(image, np.array([[1, 0.1, 0.2, 0.3, 0.4, 0]]))])
    boxes, classes, _, _ = af.read_record_boxes(copy)
    np.testing.assert_allclose(boxes, [[0.1, 0.2, 0.3, 0.4]])
    assert classes.tolist() == [1]
    # an error names the path as given, not the file a link resolves to
    (tmp_path / "text.rec").write_text("not a record\n")
    (tmp_path / "link.rec").symlink_to(tmp_path / "text.rec")
    with pytest.raises(UserError, match=r"link\.rec.*not a RecordIO file"):
        af.read_record_boxes(str(tmp_path / "link.rec"))


def test_fit_raises_small_object_coverage_with_a_larger_data_shape(small_objects_rec):
    from symbol.symbol_factory import get_symbol_train

    boxes, _, difficult, _ = af.read_record_boxes(small_objects_rec)
    boxes = boxes[~difficult]
    fit = af.fit_ssd_anchors(boxes, "toy", 128, rec=small_objects_rec)
    assert fit.before.share < .2
    # the objects are too small for the grid at 128: the best anchors there stay far below the target ...
    assert fit.fitted_at_given.share < .95 and fit.tried[128] == fit.fitted_at_given.share
    # ... so a larger input is proposed, the smallest tried that reaches it
    assert fit.data_shape > 128 and fit.reached
    assert all(share < .95 for shape, share in fit.tried.items() if shape < fit.data_shape)
    # the proposal measured on the anchors the graph would make, all pairs
    anchors = af.ssd_anchors("toy", fit.data_shape, fit.sizes, fit.ratios)
    assert af.coverage(boxes, anchors, .5, strict=True).mean() >= .95
    # every layer keeps its number of sizes and ratios: the training graph's parameters keep their shapes
    preset = get_symbol_train("toy", fit.data_shape, num_classes=3)
    fitted = get_symbol_train("toy", fit.data_shape, num_classes=3, **fit.graph_overrides())
    shapes = dict(data=(2, 3, fit.data_shape, fit.data_shape), label=(2, 4, 6))
    assert preset.infer_shape(**shapes)[0] == fitted.infer_shape(**shapes)[0]
    flags = fit.train_flags()
    assert flags.startswith(f"--data-shape {fit.data_shape} --anchor-sizes \"[[")
    assert af.parse_anchor_list("--anchor-sizes", flags.split('"')[1]) == fit.sizes
    assert af.parse_anchor_list("--anchor-ratios", flags.split('"')[3]) == fit.ratios


def test_fit_keeps_a_preset_that_already_covers():
    boxes = random_boxes(np.random.default_rng(5), 400, .25, .6)
    fit = af.fit_ssd_anchors(boxes, "toy", 128)
    assert fit.before.share >= .95 and not fit.changed and fit.data_shape == 128


def test_fit_improves_at_the_same_data_shape():
    boxes = random_boxes(np.random.default_rng(6), 800, .045, .3)
    fit = af.fit_ssd_anchors(boxes, "vgg16_reduced", 300)
    assert fit.before.share < .9 and fit.data_shape == 300 and fit.after.share >= .95
    assert len(fit.sizes) == 6 and [len(r) for r in fit.ratios] == [3, 5, 5, 5, 3, 3]
    for layer, nxt in zip(fit.sizes, fit.sizes[1:] + [None]):
        assert layer[0] < layer[1] and (nxt is None or layer[1] < nxt[0])


def test_kmeans_ratios_find_the_aspect_clusters():
    rng = np.random.default_rng(0)
    aspects = np.exp(np.r_[rng.normal(np.log(3), .05, 300), rng.normal(0, .05, 500), rng.normal(np.log(.5), .05, 200)])
    ratios = af.kmeans_ratios(aspects, 3)
    np.testing.assert_allclose(ratios, [1, 3, .5], rtol=.06)  # most populous first


def test_anchor_list_flags():
    assert af.format_anchor_list([[.1, .141], [.2, .272]]) == "[[.1,.141],[.2,.272]]"
    assert af.format_anchor_list([[1, 2, .5, 3, 1 / 3]]) == "[[1,2,.5,3,.3333]]"
    assert af.parse_anchor_list("--anchor-sizes", "[[.1,.141],[.2,.272]]") == [[.1, .141], [.2, .272]]
    assert af.parse_anchor_list("--anchor-ratios", "[1,2,.5]") == [1, 2, .5]
    for bad in ("[[.1,-1]]", "abc", "[]", "[[.1],[]]"):
        with pytest.raises(UserError, match="--anchor-sizes"):
            af.parse_anchor_list("--anchor-sizes", bad)
    with pytest.raises(UserError, match="--anchor-sizes: 2 layer lists given, the network has 5"):
        af.check_anchor_lists("toy", 128, [[.1, .2], [.3, .4]], None)
    with pytest.raises(UserError, match="--anchor-sizes"):
        af.check_anchor_lists("toy", 128, [.1, .2], None)  # a flat list is not one per layer
    af.check_anchor_lists("toy", 128, None, [1, 2, .5])  # one ratio list serves every layer


def test_check_ssd_anchors_reads_the_rec_and_leaves_difficult_out(small_objects_rec):
    report, lines = af.check_ssd_anchors(small_objects_rec, "toy", 128)
    _, _, difficult, _ = af.read_record_boxes(small_objects_rec)
    assert report.total == int((~difficult).sum()) and lines and small_objects_rec in lines[0]
    sizes = [[.06, .08], [.1, .2], [.3, .4], [.5, .6], [.8, .9]]
    better, _ = af.check_ssd_anchors(small_objects_rec, "toy", 256, sizes=sizes, ratios=[1, 1.3, .8])
    assert better.share > report.share


# --- tools/fit_anchors.py --------------------------------------------------------------------

def test_fit_anchors_prints_coverage_and_flags_that_reach_the_target(small_objects_rec, tmp_path, capsys):
    from tools.fit_anchors import main

    out = tmp_path / "fit.json"
    assert main(["--rec", small_objects_rec, "--network", "toy", "--data-shape", "128", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "preset@128" in printed and "IoU > 0.5" in printed
    flags = printed.strip().splitlines()[-2].strip()  # the line before "wrote <json>"
    assert flags.startswith("--data-shape ")
    shape = int(flags.split()[1])
    sizes = af.parse_anchor_list("--anchor-sizes", flags.split('"')[1])
    ratios = af.parse_anchor_list("--anchor-ratios", flags.split('"')[3])
    boxes, _, difficult, _ = af.read_record_boxes(small_objects_rec)
    anchors = af.ssd_anchors("toy", shape, sizes, ratios)
    assert af.coverage(boxes[~difficult], anchors, .5, strict=True).mean() >= .95
    saved = json.loads(out.read_text())
    assert saved["data_shape"] == shape and saved["graph_overrides"] == {"sizes": sizes, "ratios": ratios}
    assert saved["after"]["share"] >= .95 > saved["before"]["share"]


def test_fit_anchors_faster_rcnn_reports_the_rpn_rule(small_objects_rec, capsys):
    from tools.fit_anchors import main

    assert main(["--rec", small_objects_rec, "--network", "faster_rcnn_small"]) == 0
    printed = capsys.readouterr().out
    assert "IoU >= 0.7" in printed and "--rpn-anchor-scales '(" in printed
    from symbol.rcnn_factory import make_config

    report, lines = af.check_rcnn_anchors(small_objects_rec, make_config("faster_rcnn_small"))
    _, _, difficult, _ = af.read_record_boxes(small_objects_rec)
    assert report.total == int((~difficult).sum()) and report.rule == ">=" and report.threshold == .7
    assert f"only {100 * report.share:.1f}%" in lines[0] and "--network faster_rcnn_small" in lines[0]


@pytest.fixture(scope="module")
def empty_rec(tmp_path_factory):
    """A .rec of two images without objects (labels [2, 6])."""
    root = tmp_path_factory.mktemp("empty_rec")
    return write_rec(str(root / "e"), [(np.full((32, 32, 3), 127, np.uint8), np.zeros((0, 6)))] * 2)


FIT_ANCHORS_ERRORS = {  # case: (argv, the reason the error line names)
    "no objects": (["--rec", "{empty}", "--network", "toy"], "no objects to fit anchors to"),
    "unknown network": (["--rec", "{rec}", "--network", "yolo9"], "--network: unknown network 'yolo9'"),
    "unwritable out": (["--rec", "{rec}", "--network", "toy", "--out", "{blocker}/x.json"], "--out"),
    "not a rec": (["--rec", "{blocker}", "--network", "toy"], "not a RecordIO file"),
    "bad data shape": (["--rec", "{rec}", "--network", "toy", "--data-shape", "20"],
                       "--data-shape: 20 does not fit network toy"),
    "data shape for rcnn": (["--rec", "{rec}", "--network", "faster_rcnn_small", "--data-shape", "300"],
                            "--data-shape: Faster R-CNN"),
}


@pytest.fixture(scope="module")
def fit_anchors_errors(empty_rec, small_objects_rec, tmp_path_factory) -> dict:
    """tools/fit_anchors.py on each case of :data:`FIT_ANCHORS_ERRORS`, side by side."""
    blocker = tmp_path_factory.mktemp("fit_errors") / "a_file"
    blocker.write_text("x")
    paths = {"empty": empty_rec, "rec": small_objects_rec, "blocker": str(blocker)}
    return run_side_by_side({case: [*script_command("tools/fit_anchors.py"), *(a.format(**paths) for a in argv)]
                             for case, (argv, _) in FIT_ANCHORS_ERRORS.items()}, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("case", list(FIT_ANCHORS_ERRORS))
def test_fit_anchors_bad_input_is_one_line(case, fit_anchors_errors):
    proc, reason = fit_anchors_errors[case], FIT_ANCHORS_ERRORS[case][1]
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], proc.stderr
