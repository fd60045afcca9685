"""tools/browse_data.py: the grid shows what DetRecordIter yields, with the boxes where the labels put them."""

import cv2
import numpy as np
import pytest
from helpers import pack, run_side_by_side, script_command, write_voc_set

from config.augmentation import TRAIN_AUGMENTATIONS
from config.errors import UserError
from dataset.iterator import DetRecordIter
from tools import browse_data

GREY_BGR = (128, 128, 128)


@pytest.fixture(scope="module")
def two_box_rec(tmp_path_factory):
    """One 128x128 grey image: class 'a' at VOC (17, 33)-(64, 96), a difficult class 'b' at (81, 9)-(120, 40)."""
    root = tmp_path_factory.mktemp("two_box")
    image = np.empty((128, 128, 3), np.uint8)
    image[:] = GREY_BGR
    devkit = root / "VOCdevkit"
    write_voc_set(str(devkit), "grey", "train", [("000", image, [("a", 17, 33, 64, 96, 0), ("b", 81, 9, 120, 40, 1)])])
    pack(["--year", "grey", "--set", "train", "--root", devkit, "--target", root / "grey.lst", "--class-names", "a,b"])
    return str(root / "grey.rec")


@pytest.fixture(scope="module")
def shapes_rec(synthetic_rec):
    return synthetic_rec.train_rec


def _read_rgb(path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]


def test_grid_without_augmentation_draws_each_box_where_its_label_puts_it(two_box_rec, tmp_path):
    out = tmp_path / "grid.png"
    assert browse_data.main(["--rec", two_box_rec, "--augment", "none", "--num", "1", "--data-shape", "128",
                             "--class-names", "a,b", "--out", str(out)]) == 0
    grid = _read_rgb(out).astype(int)
    x0, y0 = browse_data.grid_origin(0, 1, 128)
    cell = grid[y0:y0 + 128, x0:x0 + 128]
    colour_a, colour_b = (np.array(browse_data.CLASS_COLOURS[k]) for k in (0, 1))

    def is_colour(pixels, colour):
        return np.all(np.abs(pixels - colour) <= 2, axis=-1)

    # box 'a' covers columns 16..63 and rows 32..95 (VOC 1-based 17..64, 33..96)
    assert is_colour(cell[45:90, 16], colour_a).all() and is_colour(cell[45:90, 63], colour_a).all()
    assert is_colour(cell[95, 20:60], colour_a).all() and is_colour(cell[32, 40:60], colour_a).all()
    grey = np.array(GREY_BGR)
    assert (np.abs(cell[45:90, 14] - grey) <= 6).all() and (np.abs(cell[45:90, 40] - grey) <= 6).all()
    assert (np.abs(cell[97, 20:60] - grey) <= 6).all()
    # the difficult box 'b' (columns 80..119, rows 8..39) is dashed: its bottom edge alternates
    bottom = is_colour(cell[39, 82:118], colour_b)
    assert .3 < bottom.mean() < .7 and is_colour(cell[39], colour_b).sum() > 10


def test_grid_with_ssd_augmentation_shows_what_det_record_iter_yields(shapes_rec, tmp_path):
    seed, num, size = 11, 4, 96
    out = tmp_path / "grid.png"
    assert browse_data.main(["--rec", shapes_rec, "--augment", "ssd", "--num", str(num), "--seed", str(seed),
                             "--data-shape", str(size), "--out", str(out)]) == 0
    it = DetRecordIter(shapes_rec, num, size, mean_pixels=(0, 0, 0), std_pixels=(1, 1, 1), verbose=False,
                       **dict(TRAIN_AUGMENTATIONS["ssd"], seed=seed))
    batch = it.next()
    expected = np.clip(np.round(batch.data[0].asnumpy().transpose(0, 2, 3, 1)), 0, 255)
    grid = _read_rgb(out).astype(float)
    images, labels, ids = browse_data.augmented_batch(shapes_rec, "ssd", num, seed, size)
    assert ids == [int(i) for i in batch.index]
    np.testing.assert_array_equal(images, expected)
    for k in range(num):
        x0, y0 = browse_data.grid_origin(k, num, size)
        same = np.all(grid[y0:y0 + size, x0:x0 + size] == expected[k], axis=-1)
        assert same.mean() > .8  # the rest is drawn boxes and names
        rows = batch.label[0].asnumpy()[k]
        np.testing.assert_allclose(labels[k], rows[rows[:, 0] >= 0][:, :6])
    # another seed draws other crops
    other, _, _ = browse_data.augmented_batch(shapes_rec, "ssd", num, seed + 1, size)
    assert not np.array_equal(other, images)


def test_stats_figure(shapes_rec, tmp_path):
    out = tmp_path / "grid.png"
    assert browse_data.main(["--rec", shapes_rec, "--augment", "flip", "--num", "2", "--network", "toy",
                             "--data-shape", "128", "--stats", "--out", str(out)]) == 0
    labels_png = tmp_path / "labels.png"
    figure = cv2.imread(str(labels_png))
    assert figure is not None and figure.shape[1] > 1000
    from evaluate.anchor_fit import write_label_stats

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write"):
        write_label_stats(np.array([[.1, .1, .3, .4]]), np.array([0]), np.array([0]), ["a"], None,
                          str(blocker / "labels.png"))


BAD_INPUT = [  # (argv, the reason the error line names)
    (["--rec", "missing.rec", "--out", "g.png"], "missing.rec: record file not found"),
    (["--rec", "{rec}", "--out", "g.jpg"], "--out g.jpg: must end with .png"),
    (["--rec", "{rec}", "--out", "g.png", "--stats", "--network", "nonet"], "--network: unknown SSD network"),
    (["--rec", "{rec}", "--out", "g.png", "--num", "0"], "--num 0"),
    (["--rec", "{rec}", "--out", "{blocker}/g.png"], "--out"),
]


@pytest.fixture(scope="module")
def bad_input_runs(shapes_rec, tmp_path_factory) -> dict:
    """tools/browse_data.py on each case of :data:`BAD_INPUT` (by position), side by side, in an empty folder."""
    folder = tmp_path_factory.mktemp("browse_errors")
    blocker = folder / "a_file"
    blocker.write_text("x")
    return run_side_by_side({index: [*script_command("tools/browse_data.py"),
                                     *(a.format(rec=shapes_rec, blocker=blocker) for a in argv)]
                             for index, (argv, _) in enumerate(BAD_INPUT)}, cwd=str(folder))


@pytest.mark.slow
@pytest.mark.parametrize("case", range(len(BAD_INPUT)), ids=[reason for _, reason in BAD_INPUT])
def test_bad_input_is_one_line(case, bad_input_runs):
    proc, reason = bad_input_runs[case], BAD_INPUT[case][1]
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and reason in lines[0], proc.stderr
