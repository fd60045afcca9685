"""Round trips: generated objects -> VOC XML / COCO JSON / YOLO text -> .lst -> .rec -> DetRecordIter."""
import os

import numpy as np
import pytest
from helpers import expected_labels, pack, read_lst, read_rec_labels, write_coco, write_voc_set, write_yolo

from config.errors import UserError
from dataset.concat_db import ConcatDB
from dataset.imdb import load_class_names
from dataset.iterator import DetRecordIter
from dataset.mscoco import Coco
from dataset.pascal_voc import PascalVoc
from dataset.testdb import TestDB
from dataset.yolo_format import YoloFormat


def _assert_rec_matches_generator(rec: str, lst: str, images, with_difficult: bool = True) -> None:
    """Every image of ``images`` comes out of the iterator once, with exactly the generator's objects."""
    paths = {index: path for index, (path, _) in read_lst(lst).items()}
    expected = {image.index: expected_labels(image, with_difficult) for image in images}
    seen = {}
    for index, data, rows in read_rec_labels(rec, data_shape=48, batch_size=5):
        image_id = os.path.splitext(os.path.basename(paths[index]))[0]
        assert image_id not in seen
        seen[image_id] = rows
        assert data.shape == (3, 48, 48)
    assert sorted(seen) == sorted(expected)
    for image_id, rows in seen.items():
        want = expected[image_id]
        assert rows.shape == want.shape, image_id
        np.testing.assert_array_equal(rows[:, 0], want[:, 0])  # classes, in annotation order
        np.testing.assert_allclose(rows[:, 1:5], want[:, 1:5], atol=1e-3)
        np.testing.assert_array_equal(rows[:, 5], want[:, 5])  # difficult


def test_voc_round_trip_matches_generator(synthetic_rec):
    synth = synthetic_rec.synth
    for split in ("train", "val"):
        _assert_rec_matches_generator(getattr(synthetic_rec, f"{split}_rec"), getattr(synthetic_rec, f"{split}_lst"),
                                      synth.split(split))
    # the fixture exercises both flags
    flags = {o.difficult for im in synth.images for o in im.objects}
    assert flags == {0, 1}


def test_lst_format_and_order(synthetic_rec):
    """idx, header width 2, object width 6, 4-decimal values, path relative to the devkit."""
    with open(synthetic_rec.val_lst) as f:
        lines = f.read().splitlines()
    val = synthetic_rec.synth.split("val")
    assert len(lines) == len(val)
    for number, (line, image) in enumerate(zip(lines, val)):  # --no-shuffle keeps annotation order
        fields = line.split("\t")
        assert fields[0] == str(number) and fields[1:3] == ["2", "6"]
        assert fields[-1] == f"VOCsynth/JPEGImages/{image.index}.jpg"
        assert len(fields) == 4 + 6 * len(image.objects)
        assert all(len(v.split(".")[1]) == 4 for v in fields[3:-1])
    with open(synthetic_rec.train_lst) as f:
        train_order = [int(line.split("\t")[0]) for line in f]
    assert sorted(train_order) == list(range(24)) and train_order != list(range(24))  # shuffled
    assert synthetic_rec.label_width == 2 + 6 * max(len(im.objects) for im in synthetic_rec.synth.images)


def test_coco_round_trip_matches_generator(synthetic_voc, tmp_path):
    root = tmp_path / "coco"
    write_coco(synthetic_voc, str(root), "val")
    target = tmp_path / "out" / "coco_val.lst"
    pack(["--dataset", "coco", "--set", "val", "--root", root, "--target", target, "--no-shuffle"])
    # iscrowd objects (the generator's difficult ones here) come back as difficult
    _assert_rec_matches_generator(str(target).replace(".lst", ".rec"), str(target), synthetic_voc.split("val"))
    db = Coco(str(root / "annotations" / "instances_val.json"), str(root / "images" / "val"))
    assert db.classes == synthetic_voc.classes and db.num_images == 8


def test_yolo_round_trip_matches_generator(synthetic_voc, tmp_path):
    root = tmp_path / "yolo"
    write_yolo(synthetic_voc, str(root), "train")
    target = tmp_path / "out" / "yolo.lst"
    pack(["--dataset", "yolo", "--set", "train", "--root", root, "--target", target,
          "--class-names", ",".join(synthetic_voc.classes)])
    # YOLO has no difficult flag: every object comes back with 0
    _assert_rec_matches_generator(str(target).replace(".lst", ".rec"), str(target), synthetic_voc.split("train"),
                                  with_difficult=False)


def test_pascal_voc_hand_worked_normalisation(tmp_path):
    """VOC pixels 1..100 of a 200-wide image are the continuous span [0, 100] -> [0, 0.5]."""
    img = np.zeros((50, 200, 3), np.uint8)
    objects = [("cat", 1, 11, 100, 50, 1), ("dog", 101, 1, 200, 25, 0)]
    write_voc_set(str(tmp_path), "2007", "test", [("a", img, objects)])
    db = PascalVoc("test", "2007", str(tmp_path), names=["cat", "dog"])
    np.testing.assert_allclose(db.label_from_index(0), [[0, 0, 0.2, 0.5, 1.0, 1], [1, 0.5, 0, 1.0, 0.5, 0]])
    assert db.image_size_from_index(0) == (200, 50)
    lazy = PascalVoc("test", "2007", str(tmp_path), names="cat,dog", is_train=False)
    assert lazy.labels is None
    np.testing.assert_array_equal(lazy.label_from_index(0), db.label_from_index(0))


def test_yolo_hand_worked_and_bad_line(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "list.txt").write_text("a\nb.png\n")
    (tmp_path / "labels" / "a.txt").write_text("1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.2 0.2\n")
    (tmp_path / "labels" / "b.txt").write_text("")
    db = YoloFormat("y", ["p", "q"], str(tmp_path / "list.txt"), str(tmp_path / "images"), str(tmp_path / "labels"))
    assert db.name == "y_2" and db.num_images == 2
    np.testing.assert_allclose(db.label_from_index(0), [[1, 0.4, 0.3, 0.6, 0.7, 0], [0, 0, 0, 0.2, 0.2, 0]])
    assert db.label_from_index(1).shape == (0, 6)
    assert db.image_path_from_index(0).endswith(os.path.join("images", "a.jpg"))
    assert db.image_path_from_index(1).endswith(os.path.join("images", "b.png"))
    (tmp_path / "labels" / "b.txt").write_text("0 0.5 0.5 0.2\n")
    with pytest.raises(UserError, match=r"b\.txt: line 1: expected 'cls cx cy w h'"):
        YoloFormat("y", ["p", "q"], str(tmp_path / "list.txt"), str(tmp_path / "images"), str(tmp_path / "labels"))


def test_coco_crowd_becomes_difficult_and_unannotated_images_drop(tmp_path):
    import json

    anno = {"images": [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 50},
                       {"id": 2, "file_name": "b.jpg", "width": 100, "height": 50}],
            "annotations": [{"id": 7, "image_id": 1, "category_id": 5, "bbox": [10, 5, 30, 20], "iscrowd": 0},
                            {"id": 8, "image_id": 1, "category_id": 3, "bbox": [0, 0, 100, 50], "iscrowd": 1}],
            "categories": [{"id": 5, "name": "dog"}, {"id": 3, "name": "cat"}]}
    (tmp_path / "a.json").write_text(json.dumps(anno))
    db = Coco(str(tmp_path / "a.json"), str(tmp_path))
    assert db.classes == ["cat", "dog"] and db.num_images == 1  # categories by id; b.jpg has no objects
    np.testing.assert_allclose(db.label_from_index(0), [[1, 0.1, 0.1, 0.4, 0.5, 0], [0, 0, 0, 1, 1, 1]])


def test_concat_db_and_class_mismatch(synthetic_voc, tmp_path):
    train = PascalVoc("train", "synth", synthetic_voc.devkit, names=synthetic_voc.names_file)
    val = PascalVoc("val", "synth", synthetic_voc.devkit, names=synthetic_voc.names_file)
    both = ConcatDB([train, val])
    assert both.num_images == 32 and both.classes == synthetic_voc.classes
    assert both.image_path_from_index(24) == val.image_path_from_index(0)
    np.testing.assert_array_equal(both.label_from_index(25), val.label_from_index(1))
    shuffled = ConcatDB([train, val], shuffle=True)
    assert sorted(shuffled.image_set_index) == sorted(both.image_set_index)
    assert shuffled.image_set_index != both.image_set_index
    other = PascalVoc("val", "synth", synthetic_voc.devkit, names=["circle", "square", "triangle", "star"])
    with pytest.raises(UserError, match="class lists differ"):
        ConcatDB([train, other])


def test_prepare_joins_sets_and_years(synthetic_voc, tmp_path):
    target = tmp_path / "tv.lst"
    pack(["--year", "synth", "--set", "train,val", "--root", synthetic_voc.devkit, "--target", target,
          "--class-names", synthetic_voc.names_file, "--num-thread", "2", "--pass-through"])
    entries = read_lst(str(target))
    assert len(entries) == 32 and sorted(entries) == list(range(32))
    assert all((tmp_path / f"tv{ext}").is_file() for ext in (".rec", ".idx"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # temporary folder gone


def test_load_class_names_forms(tmp_path):
    assert load_class_names("voc.names")[:3] == ["aeroplane", "bicycle", "bird"]
    assert len(load_class_names("voc.names")) == 20 and len(load_class_names("coco.names")) == 80
    assert load_class_names("a, b,c") == ["a", "b", "c"] == load_class_names(["a", "b", "c"])
    (tmp_path / "x.names").write_text("p\n\nq\n")
    assert load_class_names(str(tmp_path / "x.names")) == ["p", "q"]
    with pytest.raises(UserError, match="missing.names: class-names file not found"):
        load_class_names(str(tmp_path / "missing.names"))
    with pytest.raises(UserError, match="repeated: a"):
        load_class_names("a,b,a")


def test_testdb_paths(tmp_path):
    (tmp_path / "x.jpg").write_bytes(b"")
    db = TestDB(["x"], root_dir=str(tmp_path), extension=".jpg")
    assert db.num_images == 1 and db.image_path_from_index(0) == str(tmp_path / "x.jpg")
    with pytest.raises(FileNotFoundError, match="y.jpg: image file not found"):
        TestDB("y.jpg", root_dir=str(tmp_path)).image_path_from_index(0)
    with pytest.raises(NotImplementedError):
        db.label_from_index(0)


def test_iterator_interface(synthetic_rec):
    from config.augmentation import VALIDATION

    it = DetRecordIter(synthetic_rec.train_rec, 8, (3, 40, 56), label_pad_width=350, **VALIDATION)
    (data,) = it.provide_data
    (label,) = it.provide_label
    assert (data.name, tuple(data.shape)) == ("data", (8, 3, 40, 56))
    # 350 packed values = 2 header + 58 objects of 6
    assert (label.name, tuple(label.shape)) == ("label", (8, 58, 6))
    batches = list(it)
    assert len(batches) == 3 and it.batch_size == 8
    assert all(b.label[0].shape == (8, 58, 6) and b.data[0].shape == (8, 3, 40, 56) for b in batches)
    it.reset()
    np.testing.assert_array_equal(next(iter(it)).label[0].asnumpy(), batches[0].label[0].asnumpy())


def test_iterator_mean_and_std(synthetic_rec):
    from config.augmentation import VALIDATION

    raw = DetRecordIter(synthetic_rec.val_rec, 4, 32, mean_pixels=(0, 0, 0), **VALIDATION).next().data[0].asnumpy()
    it = DetRecordIter(synthetic_rec.val_rec, 4, 32, mean_pixels=(10, 20, 30), std_pixels=(2, 4, 5), **VALIDATION)
    normed = it.next().data[0].asnumpy()
    expected = (raw - np.array([10, 20, 30])[None, :, None, None]) / np.array([2, 4, 5])[None, :, None, None]
    np.testing.assert_allclose(normed, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("batch_size, pads", [(3, [0, 0, 1]), (12, [4])])
def test_every_epoch_yields_each_image_once(synthetic_rec, batch_size, pads):
    """8 val images: no epoch skips one, and the padding repeats the batch's own first images."""
    from config.augmentation import VALIDATION

    it = DetRecordIter(synthetic_rec.val_rec, batch_size, 32, **VALIDATION)
    for _ in range(3):
        batches = list(it)
        assert [b.pad for b in batches] == pads
        seen = [int(i) for b in batches for i in b.index[:batch_size - b.pad]]
        assert seen == list(range(8))
        last = batches[-1]
        real = batch_size - last.pad
        for k in range(real, batch_size):
            assert last.index[k] == last.index[k - real]
            np.testing.assert_array_equal(last.data[0][k].asnumpy(), last.data[0][k - real].asnumpy())
            np.testing.assert_array_equal(last.label[0][k].asnumpy(), last.label[0][k - real].asnumpy())
        it.reset()


def test_module_fit_accepts_iterator(synthetic_rec):
    """Module.fit binds 'data' and 'label' from provide_data/provide_label and runs every batch."""
    import mxnet as mx

    from config.augmentation import TRAIN_AUGMENTATIONS

    it = DetRecordIter(synthetic_rec.train_rec, 8, 32, label_pad_width=synthetic_rec.label_width,
                       **TRAIN_AUGMENTATIONS["ssd"])
    data, label = mx.sym.Variable("data"), mx.sym.Variable("label")
    pooled = mx.sym.Pooling(data, kernel=(1, 1), global_pool=True, pool_type="avg")
    score = mx.sym.FullyConnected(mx.sym.flatten(pooled), num_hidden=1)
    # regress the number of objects, read from the label rows that are not padding
    count = mx.sym.sum(mx.sym.slice_axis(label, axis=2, begin=0, end=1) >= 0, axis=(1, 2))
    loss = mx.sym.MakeLoss(mx.sym.mean(mx.sym.square(mx.sym.flatten(score) - count.reshape((-1, 1))) * 1e-6))
    mod = mx.mod.Module(loss, data_names=["data"], label_names=["label"], context=mx.cpu())
    batches = []
    mod.fit(it, num_epoch=2, optimizer="sgd", optimizer_params={"learning_rate": 1e-3},
            eval_metric=mx.metric.Loss(), batch_end_callback=lambda p: batches.append((p.epoch, p.nbatch)))
    assert batches == [(e, b) for e in range(2) for b in range(3)]
