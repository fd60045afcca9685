"""TRAIN_AUGMENTATIONS["ssd"] augmentation keeps boxes inside the image and on the object's pixels."""
import numpy as np
import pytest
from helpers import pack, read_rec_labels, write_voc_set

from config.augmentation import TRAIN_AUGMENTATIONS

RED_BGR = (20, 20, 235)
BLUE_BGR = (150, 60, 10)
NO_JITTER = {"random_hue_prob": 0, "random_saturation_prob": 0, "random_illumination_prob": 0,
             "random_contrast_prob": 0}


@pytest.fixture(scope="module")
def red_box_rec(tmp_path_factory):
    """8 images, each one solid red rectangle in the left half of a blue background; returns
    (rec path, {record index: original normalised box})."""
    root = tmp_path_factory.mktemp("red_box")
    rng = np.random.default_rng(0)
    samples, boxes = [], {}
    for i in range(8):
        height, width = (120, 160) if i % 2 else (160, 120)
        img = np.empty((height, width, 3), np.uint8)
        img[:] = BLUE_BGR
        x0, y0 = int(rng.integers(2, width // 5)), int(rng.integers(2, height // 4))
        x1, y1 = x0 + int(width * rng.uniform(0.25, 0.3)), y0 + int(height * rng.uniform(0.4, 0.6))
        img[y0:y1 + 1, x0:x1 + 1] = RED_BGR
        samples.append((f"{i:03d}", img, [("red", x0 + 1, y0 + 1, x1 + 1, y1 + 1, 0)]))
        boxes[i] = (x0 / width, y0 / height, (x1 + 1) / width, (y1 + 1) / height)
    devkit = root / "VOCdevkit"
    write_voc_set(str(devkit), "red", "train", samples)
    pack(["--year", "red", "--set", "train", "--root", devkit, "--target", root / "red.lst",
          "--class-names", "red", "--no-shuffle"])
    return str(root / "red.rec"), boxes


def _red_mask(data: np.ndarray) -> np.ndarray:
    r, g, b = data  # RGB, mean 0
    return (r > 150) & (g < 100) & (b < 100)


def _box_pixels(box, size: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (np.asarray(box) * size)
    return int(np.floor(x1)), int(np.floor(y1)), int(np.ceil(x2)), int(np.ceil(y2))


def test_crop_pad_mirror_keep_box_on_object(red_box_rec):
    rec, originals = red_box_rec
    size = 96
    samples = read_rec_labels(rec, data_shape=size, batch_size=8, epochs=10,
                              **{**TRAIN_AUGMENTATIONS["ssd"], **NO_JITTER})
    assert len(samples) == 80
    without_box = zoomed = shrunk = padded = right_side = 0
    for index, data, rows in samples:
        red = _red_mask(data)
        if len(rows) == 0:  # the crop left out the object's centre ('center' emit mode)
            without_box += 1
            continue
        assert rows.shape == (1, 6) and rows[0, 0] == 0
        box = rows[0, 1:5]
        assert np.all(box >= 0) and np.all(box <= 1) and box[0] < box[2] and box[1] < box[3]
        x1, y1, x2, y2 = _box_pixels(box, size)
        # nearly all red pixels lie in the box (1 px slack for interpolation) ...
        inside = red[max(y1 - 1, 0):y2 + 1, max(x1 - 1, 0):x2 + 1].sum()
        assert inside >= 0.98 * red.sum() and red.sum() > 0
        # ... and the box, less a 1 px rim blurred by resizing, is red
        core = red[y1 + 1:y2 - 1, x1 + 1:x2 - 1]
        if core.size >= 16:
            assert core.mean() >= 0.9
        width = box[2] - box[0]
        original = originals[index]
        zoomed += width > 1.2 * (original[2] - original[0])
        shrunk += width < 0.8 * (original[2] - original[0])
        right_side += (box[0] + box[2]) / 2 > 0.5
        padded += bool(np.all(np.abs(data - 127) < 4, axis=0).sum() > 100)  # fill_value 127
    # the augmentations really happened, and the object was seldom cropped away
    assert without_box <= 8
    assert zoomed >= 5 and shrunk >= 5 and padded >= 5 and right_side >= 5


def test_mirror_flips_box_exactly(red_box_rec):
    rec, originals = red_box_rec
    samples = read_rec_labels(rec, data_shape=64, batch_size=8, rand_mirror_prob=1.0)
    for index, data, rows in samples:
        x1, y1, x2, y2 = originals[index]
        np.testing.assert_allclose(rows[0, 1:5], [1 - x2, y1, 1 - x1, y2], atol=1e-3)
        red = _red_mask(data)
        assert red[:, :32].sum() == 0 and red[:, 32:].sum() > 0  # the object moved to the right half


def test_full_train_augmentation_boxes_stay_in_image(synthetic_rec):
    samples = read_rec_labels(synthetic_rec.train_rec, data_shape=64, batch_size=8, epochs=3,
                              label_pad_width=synthetic_rec.label_width, **TRAIN_AUGMENTATIONS["ssd"])
    assert len(samples) == 72
    boxes = np.concatenate([rows for _, _, rows in samples])
    assert len(boxes) > 100
    assert np.all(boxes[:, 1:5] >= 0) and np.all(boxes[:, 1:5] <= 1)
    assert np.all(boxes[:, 1] < boxes[:, 3]) and np.all(boxes[:, 2] < boxes[:, 4])
    assert set(np.unique(boxes[:, 0])) <= {0, 1, 2} and set(np.unique(boxes[:, 5])) <= {0, 1}
