"""COCO's small/medium/large split in original-image pixels.

``dataset.recordio.image_sizes`` reads every packed image's (width,
height) from its JPEG/PNG header, ``COCOMApMetric`` scales each image's
normalised boxes by its own size, and ``evaluate_net --coco`` wires the two
together in the order the evaluation iterator yields images.
"""
import os

import cv2
import mxnet as mx
import numpy as np
import pytest
from helpers import read_lst, read_rec_labels

from config.errors import UserError
from dataset.recordio import encoded_size, header_size, image_sizes


def record_ids(rec_path: str) -> list[int]:
    """The header id of every record of ``rec_path``, in file order."""
    record = mx.recordio.MXRecordIO(rec_path, "r")
    ids = []
    while (packed := record.read()) is not None:
        ids.append(int(mx.recordio.unpack(packed)[0].id))
    record.close()
    return ids


def true_sizes(rec, split: str) -> list[tuple[int, int]]:
    """The generator's (width, height) of every image of ``split``, in record order.

    The record id is the .lst index; the .lst's last column names the image file.
    """
    by_name = {image.index: (image.width, image.height) for image in rec.synth.split(split)}
    listed = read_lst(getattr(rec, f"{split}_lst"))
    return [by_name[os.path.splitext(os.path.basename(listed[i][0]))[0]]
            for i in record_ids(getattr(rec, f"{split}_rec"))]


# --- (a) sizes from the packed bytes --------------------------------------------


@pytest.mark.parametrize("split", ["train", "val"])  # train is shuffled, val in annotation order
def test_image_sizes_match_the_generator(synthetic_rec, split):
    rec_path, idx_path = getattr(synthetic_rec, f"{split}_rec"), getattr(synthetic_rec, f"{split}_idx")
    expected = true_sizes(synthetic_rec, split)
    assert len(set(expected)) > 1  # the images differ in size, so order matters
    assert image_sizes(rec_path) == expected
    assert image_sizes(rec_path, idx_path) == expected


def test_image_sizes_follow_the_iterator_order_even_with_a_list_file(synthetic_rec, tmp_path):
    # DetRecordIter (VALIDATION) walks the .rec in order; a path_imglist only
    # replaces the labels (looked up by record id) and does not reorder images
    ids = record_ids(synthetic_rec.train_rec)
    assert [index for index, _, _ in read_rec_labels(synthetic_rec.train_rec, batch_size=5)] == ids
    with open(synthetic_rec.train_lst) as f:
        lines = f.readlines()
    reversed_lst = tmp_path / "reversed.lst"
    reversed_lst.write_text("".join(reversed(lines)))
    yielded = read_rec_labels(synthetic_rec.train_rec, batch_size=5, path_imglist=str(reversed_lst))
    assert [index for index, _, _ in yielded] == ids


def _image(width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(width * 1000 + height)
    return rng.integers(0, 255, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_header_parser_reads_opencv_output(ext):
    for width, height in [(1, 1), (37, 200), (640, 480), (300, 7)]:
        ok, data = cv2.imencode(ext, _image(width, height))
        assert ok
        assert header_size(data.tobytes()) == (width, height)


def test_header_parser_skips_segments_before_the_frame_header():
    # a progressive JPEG (SOF2) with a comment (COM) and an APP segment before it
    ok, data = cv2.imencode(".jpg", _image(90, 45), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    data = data.tobytes()
    extra = b"\xff\xfe\x00\x07hello" + b"\xff\xe5\x00\x04ab"
    assert header_size(data[:2] + extra + data[2:]) == (90, 45)
    # cut before the frame header: no size from the header, and none from the decoder
    sof = data.index(b"\xff\xc2")
    assert header_size(data[:sof + 4]) is None
    assert encoded_size(data[:sof + 4]) is None


def test_other_formats_fall_back_to_the_decoder():
    ok, data = cv2.imencode(".bmp", _image(33, 21))
    assert ok
    assert header_size(data.tobytes()) is None
    assert encoded_size(data.tobytes()) == (33, 21)


def test_image_sizes_of_a_mixed_record(tmp_path):
    # JPEG, PNG and BMP records (im2rec --pass-through packs files as they are)
    rec_path, idx_path = str(tmp_path / "mixed.rec"), str(tmp_path / "mixed.idx")
    sizes = [(64, 48), (17, 99), (120, 30), (5, 5)]
    record = mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "w")
    for key, ((width, height), ext) in enumerate(zip(sizes, [".jpg", ".png", ".bmp", ".png"])):
        ok, data = cv2.imencode(ext, _image(width, height))
        assert ok
        label = np.array([2, 6, 0, 0.1, 0.1, 0.5, 0.5, 0], dtype=np.float32)  # a packed detection label
        record.write_idx(key, mx.recordio.pack(mx.recordio.IRHeader(len(label), label, key, 0), data.tobytes()))
    record.close()
    assert image_sizes(rec_path, idx_path) == sizes


# --- (c) truncated or unreadable records ------------------------------------------


def test_truncated_record_is_a_user_error_naming_the_file(synthetic_rec, tmp_path):
    with open(synthetic_rec.val_rec, "rb") as f:
        data = f.read()
    cut = tmp_path / "cut.rec"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"cut\.rec: truncated or corrupt at record \d+"):
        image_sizes(str(cut))
    # cut exactly between two records: only the .idx can tell
    with open(synthetic_rec.val_idx) as f:
        offsets = sorted(int(line.split("\t")[1]) for line in f if line.strip())
    cut.write_bytes(data[:offsets[1]])  # the .idx's offsets: record 1 starts where record 0 ends
    assert len(image_sizes(str(cut))) == 1
    with pytest.raises(UserError, match=r"cut\.rec: holds 1 records but .*val\.idx lists \d+"):
        image_sizes(str(cut), synthetic_rec.val_idx)


def test_unreadable_image_or_file_is_a_user_error(tmp_path):
    rec_path = str(tmp_path / "bad.rec")
    record = mx.recordio.MXRecordIO(rec_path, "w")
    record.write(mx.recordio.pack(mx.recordio.IRHeader(0, 0.0, 0, 0), b"\xff\xd8\xff\xe0 not really a jpeg"))
    record.close()
    with pytest.raises(UserError, match=r"bad\.rec: record 0: image cannot be read"):
        image_sizes(rec_path)
    with pytest.raises(UserError, match=r"missing\.rec: record file not found"):
        image_sizes(str(tmp_path / "missing.rec"))
    (tmp_path / "text.rec").write_text("not a record file")
    with pytest.raises(UserError, match=r"text\.rec: not a RecordIO file"):
        image_sizes(str(tmp_path / "text.rec"))


# --- (b) the COCO size split ------------------------------------------------------


def _update(metric, labels: list[list[list[float]]], dets: list[list[list[float]]]) -> None:
    """One batch of images: per image a list of [cls, x1, y1, x2, y2, difficult] / [cls, score, x1, y1, x2, y2]."""
    def batch(rows_per_image):
        out = -np.ones((len(rows_per_image), max(len(r) for r in rows_per_image), 6), dtype=np.float32)
        for i, rows in enumerate(rows_per_image):
            out[i, :len(rows)] = rows
        return mx.nd.array(out)

    metric.update([batch(labels)], [batch(dets)])


# 0.05 x 0.05 of the image: 50 x 50 = 2500 px^2 in a 1000x1000 original (medium:
# 32^2 <= 2500 < 96^2), but 6.4 x 6.4 = 41 px^2 at a 128x128 network input (small)
BOX = [0.25, 0.25, 0.30, 0.30]


def test_coco_size_split_uses_original_pixels():
    pytest.importorskip("pycocotools")
    from evaluate.coco_eval import COCOMApMetric

    original = COCOMApMetric(image_sizes=[(1000, 1000)])
    _update(original, [[[0, *BOX, 0]]], [[[0, 0.9, *BOX]]])
    stats = dict(zip(*original.get()))
    assert stats["AP"] == pytest.approx(1.0)
    assert stats["APm"] == pytest.approx(1.0) and stats["ARm"] == pytest.approx(1.0)
    assert stats["APs"] == -1.0 and stats["APl"] == -1.0  # -1: no ground truth of that size
    # what the old metric did (scale by the network input): the same box reads as small
    network_input = COCOMApMetric((128, 128))
    _update(network_input, [[[0, *BOX, 0]]], [[[0, 0.9, *BOX]]])
    old = dict(zip(*network_input.get()))
    assert (old["APs"], old["APm"]) == pytest.approx((1.0, -1.0))


def test_coco_metric_takes_the_sizes_image_by_image():
    pytest.importorskip("pycocotools")
    from evaluate.coco_eval import COCOMApMetric

    # image 0 is 1000x1000 (BOX medium), image 1 100x100 (BOX 5x5: small), image 2
    # 4000x4000 (BOX 200x200: large); the detection on image 1 misses
    metric = COCOMApMetric(num_classes=1, image_sizes=[(1000, 1000), (100, 100), (4000, 4000)])
    miss = [0.6, 0.6, 0.65, 0.65]
    for _ in range(2):  # reset starts over at the first size
        metric.reset()
        _update(metric, [[[0, *BOX, 0]], [[0, *BOX, 0]]], [[[0, 0.9, *BOX]], [[0, 0.9, *miss]]])
        _update(metric, [[[0, *BOX, 0]]], [[[0, 0.8, *BOX]]])
        stats = dict(zip(*metric.get()))
        assert (stats["APs"], stats["APm"], stats["APl"]) == pytest.approx((0.0, 1.0, 1.0))
    # a fourth image has no size
    with pytest.raises(ValueError, match="4 images since reset but only 3 image_sizes"):
        _update(metric, [[[0, *BOX, 0]]], [[[0, 0.8, *BOX]]])
    with pytest.raises(ValueError, match="give image_sizes"):
        COCOMApMetric()
    with pytest.raises(ValueError, match="give image_sizes"):
        COCOMApMetric((128, 128), image_sizes=[(1, 1)])


@pytest.mark.slow
def test_evaluate_net_scores_with_the_record_sizes(trained_toy, monkeypatch):
    # the sizes evaluate_net hands the metric line up with the images it scores,
    # through the padded last batch and a num_batch cut
    pytest.importorskip("pycocotools")
    import evaluate.coco_eval as coco_eval
    from config.train_config import SSDConfig
    from evaluate.evaluate_net import evaluate_net

    seen = []

    class Recording(coco_eval.COCOMApMetric):
        def get(self):
            seen.append((list(self._sizes), [labels[labels[:, 0] >= 0] for labels in self._labels]))
            return super().get()

    monkeypatch.setattr(coco_eval, "COCOMApMetric", Recording)
    rec = trained_toy.rec
    sizes = true_sizes(rec, "val")
    labels = {index: objects for index, _, objects in read_rec_labels(rec.val_rec, label_pad_width=rec.label_width)}
    expected_labels = [labels[i] for i in record_ids(rec.val_rec)]
    for num_batch, count in [(None, len(sizes)), (1, 3)]:
        evaluate_net(trained_toy.network, rec.val_rec, trained_toy.num_class,
                     list(SSDConfig.mean_pixels), trained_toy.data_shape,
                     trained_toy.checkpoint, trained_toy.epoch, batch_size=3, label_pad_width=rec.label_width,
                     coco=True, num_batch=num_batch)
        got_sizes, got_labels = seen[-1]
        assert got_sizes == sizes[:count]
        assert len(got_labels) == count
        for got, want in zip(got_labels, expected_labels):
            np.testing.assert_allclose(got, want, atol=1e-6)
