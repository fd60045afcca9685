"""Bad input gives one line naming the file and the reason, and leaves no output behind."""
import json
import os
import re
import subprocess

import pytest
from helpers import ROOT, pack, read_lst, script_command, tiny_synthetic, write_coco

from config.augmentation import VALIDATION
from config.errors import UserError
from dataset.iterator import DetRecordIter


@pytest.fixture
def voc(tmp_path):
    """A fresh 4-image synthetic VOC set (safe to damage) and an empty output folder."""
    synth = tiny_synthetic(tmp_path / "src", num_train=4, seed=1)
    out = tmp_path / "out"
    return synth, out


def _prepare(synth, out, *extra):
    pack(["--year", "synth", "--set", "train", "--root", synth.devkit, "--target", out / "train.lst",
          "--class-names", synth.names_file, *extra])


def _assert_no_output(out):
    assert not out.exists() or list(out.iterdir()) == []


def _edit_xml(synth, number: int, old: str, new: str) -> str:
    path = synth.annotation_path(synth.images[number])
    with open(path) as f:
        text = f.read()
    assert old in text
    with open(path, "w") as f:
        f.write(text.replace(old, new, 1))
    return path


def _first_box_value(synth, number: int, key: str) -> int:
    return getattr(synth.images[number].objects[0], key)


def test_missing_root(voc):
    synth, out = voc
    with pytest.raises(UserError, match=re.escape(f"{out}/nowhere: VOC devkit folder not found")):
        pack(["--year", "synth", "--set", "train", "--root", out / "nowhere", "--target", out / "t.lst"])
    _assert_no_output(out)


def test_missing_image_set_file(voc):
    synth, out = voc
    expected = os.path.join(synth.data_dir, "ImageSets", "Main", "holdout.txt")
    with pytest.raises(UserError, match=re.escape(f"{expected}: image-set file not found")):
        pack(["--year", "synth", "--set", "holdout", "--root", synth.devkit, "--target", out / "t.lst"])
    _assert_no_output(out)


def test_unparsable_xml(voc):
    synth, out = voc
    path = synth.annotation_path(synth.images[1])
    with open(path, "w") as f:
        f.write("<annotation><size><width>10</width>")
    with pytest.raises(UserError, match=re.escape(path) + ": cannot parse XML"):
        _prepare(synth, out)
    _assert_no_output(out)


def test_missing_image(voc):
    synth, out = voc
    path = synth.image_path(synth.images[2])
    os.remove(path)
    with pytest.raises(UserError, match=re.escape(f"{path}: image file not found")):
        _prepare(synth, out)
    _assert_no_output(out)


def test_undecodable_image(voc):
    synth, out = voc
    path = synth.image_path(synth.images[0])
    with open(path, "wb") as f:
        f.write(b"\xff\xd8 this is not really a JPEG")
    with pytest.raises(UserError, match=re.escape(f"{path}: cannot decode image")):
        _prepare(synth, out)
    _assert_no_output(out)


@pytest.mark.parametrize("key, other", [("xmin", "xmax"), ("ymin", "ymax")])
def test_empty_box(voc, key, other):
    synth, out = voc
    value = _first_box_value(synth, 1, other)
    path = _edit_xml(synth, 1, f"<{key}>{_first_box_value(synth, 1, key)}</{key}>", f"<{key}>{value}</{key}>")
    with pytest.raises(UserError, match=re.escape(path) + r": object 0 \('\w+'\): empty box.*needs xmin < xmax"):
        _prepare(synth, out)
    _assert_no_output(out)


def test_box_outside_image(voc):
    synth, out = voc
    image = synth.images[3]
    path = _edit_xml(synth, 3, f"<xmax>{image.objects[0].xmax}</xmax>", f"<xmax>{image.width + 5}</xmax>")
    with pytest.raises(UserError, match=re.escape(path) + rf".*lies outside the {image.width}x{image.height} image"):
        _prepare(synth, out)
    _assert_no_output(out)


def test_unknown_class(voc):
    synth, out = voc
    name = synth.images[0].objects[0].name
    path = _edit_xml(synth, 0, f"<name>{name}</name>", "<name>dog</name>")
    with pytest.raises(UserError, match=re.escape(path) + r".*class 'dog' is not in the class list \(circle, square"):
        _prepare(synth, out)
    _assert_no_output(out)


def test_coco_unknown_class_and_bad_box(tmp_path):
    synth = tiny_synthetic(tmp_path / "src", num_train=2, seed=1)
    anno = write_coco(synth, str(tmp_path / "coco"), "train")
    first = synth.images[0].objects[0].name
    others = ",".join(n for n in synth.classes if n != first)
    expected = re.escape(anno) + rf": image \d+ \(000001.jpg\): annotation 1: class '{first}' is not in"
    with pytest.raises(UserError, match=expected):
        pack(["--dataset", "coco", "--set", "train", "--root", tmp_path / "coco", "--target", tmp_path / "o/a.lst",
              "--class-names", others])
    with open(anno) as f:
        data = json.load(f)
    data["annotations"][0]["bbox"][2] = 0
    with open(anno, "w") as f:
        json.dump(data, f)
    with pytest.raises(UserError, match=re.escape(anno) + r": .*annotation 1: empty box"):
        pack(["--dataset", "coco", "--set", "train", "--root", tmp_path / "coco", "--target", tmp_path / "o/a.lst"])
    _assert_no_output(tmp_path / "o")


def test_label_width_too_small(synthetic_rec):
    needed = synthetic_rec.label_width
    with pytest.raises(UserError) as err:
        DetRecordIter(synthetic_rec.train_rec, 4, 32, label_pad_width=needed - 6, **VALIDATION)
    message = str(err.value)
    assert "\n" not in message
    assert message == (f"--label-width {needed - 6} is too small for {synthetic_rec.train_rec}: its largest label "
                       f"needs {needed}; pass --label-width {needed} or more")
    DetRecordIter(synthetic_rec.train_rec, 4, 32, label_pad_width=needed, **VALIDATION)  # exactly enough works


def test_missing_or_wrong_record_file(synthetic_rec, tmp_path):
    with pytest.raises(UserError, match=re.escape(f"{tmp_path}/none.rec: record file not found")):
        DetRecordIter(str(tmp_path / "none.rec"), 4, 32, **VALIDATION)
    with pytest.raises(UserError, match=re.escape(f"{synthetic_rec.train_lst}: not a RecordIO file")):
        DetRecordIter(synthetic_rec.train_lst, 4, 32, **VALIDATION)


def test_failed_packing_leaves_nothing(voc, monkeypatch, tmp_path):
    """If im2rec dies half way, its partial .rec is removed with the temporary folder."""
    import tools.prepare_dataset as prepare

    fake = tmp_path / "fake_im2rec.py"
    fake.write_text("import sys\nopen(sys.argv[1] + '.rec', 'wb').write(b'partial')\nsys.exit(3)\n")
    monkeypatch.setattr(prepare, "im2rec_path", lambda: str(fake))
    synth, out = voc
    with pytest.raises(UserError, match=re.escape(f"{out}/train.lst: im2rec.py failed with exit status 3")):
        _prepare(synth, out)
    _assert_no_output(out)


def test_skip_bad_drops_and_reports(voc, capsys):
    synth, out = voc
    os.remove(synth.image_path(synth.images[0]))
    _edit_xml(synth, 2, f"<name>{synth.images[2].objects[0].name}</name>", "<name>dog</name>")
    _prepare(synth, out, "--skip-bad", "--no-shuffle")
    printed = capsys.readouterr().out
    assert "dropped 2 bad image(s):" in printed
    assert f"{synth.image_path(synth.images[0])}: image file not found" in printed
    assert "class 'dog' is not in the class list" in printed
    reasons = printed.split("by reason: ")[1].splitlines()[0]
    assert sorted(reasons.split("; ")) == ["1 x image file not found", "1 x unknown class"]
    kept = [os.path.basename(path) for path, _ in read_lst(str(out / "train.lst")).values()]
    assert kept == [synth.images[1].index + ".jpg", synth.images[3].index + ".jpg"]
    assert sorted(p.name for p in out.iterdir()) == ["train.idx", "train.lst", "train.rec"]


@pytest.mark.slow
def test_cli_prints_one_line_and_exits_2(voc):
    synth, out = voc
    path = synth.annotation_path(synth.images[1])
    with open(path, "w") as f:
        f.write("not xml")
    result = subprocess.run([*script_command("tools/prepare_dataset.py"), "--year", "synth", "--set", "train",
                             "--root", synth.devkit, "--target", str(out / "train.lst"),
                             "--class-names", synth.names_file], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {path}: cannot parse XML")
    _assert_no_output(out)


def test_image_list_with_fixed_label_width(synthetic_rec):
    """A .lst given as path_imglist works with the default label_width -1, and names itself otherwise."""
    it = DetRecordIter(synthetic_rec.val_rec, 4, 32, path_imglist=synthetic_rec.val_lst, **VALIDATION)
    assert it.provide_label[0].shape[2] == 6
    with pytest.raises(UserError, match=re.escape(f"{synthetic_rec.val_lst}: every line must hold label_width=50")):
        DetRecordIter(synthetic_rec.val_rec, 4, 32, path_imglist=synthetic_rec.val_lst, label_width=50, **VALIDATION)


def test_image_size_differs_from_annotation(voc):
    synth, out = voc
    image = synth.images[1]
    path = _edit_xml(synth, 1, f"<width>{image.width}</width>", f"<width>{image.width + 10}</width>")
    assert path.endswith(".xml")
    message = (f"{synth.image_path(image)}: image is {image.width}x{image.height} but its annotation says "
               f"{image.width + 10}x{image.height}")
    with pytest.raises(UserError, match=re.escape(message)):
        _prepare(synth, out)
    _assert_no_output(out)
