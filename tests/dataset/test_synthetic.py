"""tools/make_synthetic.py: VOC layout, annotations that match the pixels, determinism."""
import dataclasses
import os
import subprocess
import xml.etree.ElementTree as ET

import cv2
import numpy as np
import pytest
from helpers import ROOT, load_script, script_command, tiny_synthetic

from config.errors import UserError
from dataset.synthetic import SHAPE_NAMES, SynthSettings, make_synthetic


def _tree_bytes(root: str) -> dict[str, bytes]:
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def test_voc_layout_names_and_xml(synthetic_voc):
    data = synthetic_voc.data_dir
    assert data == os.path.join(synthetic_voc.devkit, "VOCsynth")
    with open(synthetic_voc.names_file) as f:
        assert f.read() == "circle\nsquare\ntriangle\n"
    sets = {}
    for name in ("train", "val", "trainval", "test"):
        with open(os.path.join(data, "ImageSets", "Main", name + ".txt")) as f:
            sets[name] = f.read().split()
    assert len(sets["train"]) == 24 and len(sets["val"]) == 8
    assert sets["test"] == sets["val"] and sets["trainval"] == sets["train"] + sets["val"]
    assert [im.index for im in synthetic_voc.split("train")] == sets["train"]

    for image in synthetic_voc.images:
        img = cv2.imread(synthetic_voc.image_path(image))
        assert img.shape == (image.height, image.width, 3)
        root = ET.parse(synthetic_voc.annotation_path(image)).getroot()
        assert root.findtext("filename") == image.index + ".jpg"
        assert (int(root.findtext("size/width")), int(root.findtext("size/height"))) == (image.width, image.height)
        assert root.findtext("size/depth") == "3"
        objects = root.findall("object")
        assert 1 <= len(objects) <= 8 and len(objects) == len(image.objects)
        for node, obj in zip(objects, image.objects):
            assert node.findtext("name") == synthetic_voc.classes[obj.cls_id] == SHAPE_NAMES[obj.cls_id]
            assert node.findtext("pose") == "Unspecified"
            assert (int(node.findtext("truncated")), int(node.findtext("difficult"))) == (obj.truncated,
                                                                                          obj.difficult)
            box = [int(node.findtext(f"bndbox/{k}")) for k in ("xmin", "ymin", "xmax", "ymax")]
            assert box == [obj.xmin, obj.ymin, obj.xmax, obj.ymax]
            assert 1 <= obj.xmin < obj.xmax <= image.width and 1 <= obj.ymin < obj.ymax <= image.height
            # a shape cut by the border is clipped to it and marked truncated
            if obj.truncated:
                assert obj.xmin == 1 or obj.ymin == 1 or obj.xmax == image.width or obj.ymax == image.height
    # not all square; the flags all occur
    assert len({(im.width, im.height) for im in synthetic_voc.images}) > 1
    assert any(im.width != im.height for im in synthetic_voc.images)
    objects = [o for im in synthetic_voc.images for o in im.objects]
    assert {o.cls_id for o in objects} == {0, 1, 2}
    assert any(o.truncated for o in objects) and not all(o.truncated for o in objects)


def test_boxes_are_tight_around_painted_pixels(tmp_path, monkeypatch):
    """On a black background with white objects, each box is exactly the extent of the bright pixels."""
    import dataset.synthetic as gen

    monkeypatch.setattr(gen, "_background", lambda rng, h, w: np.zeros((h, w, 3), np.uint8))
    monkeypatch.setattr(gen, "_contrasting_colour", lambda rng, under: np.array([255, 255, 255]))
    synth = tiny_synthetic(tmp_path, num_train=60, max_objects=1, classes=12, seed=3, quality=100)
    assert {im.objects[0].cls_id for im in synth.images} == set(range(12))
    for image in synth.images:
        img = cv2.imread(synth.image_path(image))
        ys, xs = np.nonzero(img.mean(axis=2) > 128)
        (obj,) = image.objects
        painted = (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)  # VOC 1-based
        np.testing.assert_allclose((obj.xmin, obj.ymin, obj.xmax, obj.ymax), painted, atol=1)
        touches_border = obj.xmin == 1 or obj.ymin == 1 or obj.xmax == image.width or obj.ymax == image.height
        assert touches_border or not obj.truncated


def test_same_seed_same_files_other_seed_differs(tmp_path):
    a = tiny_synthetic(tmp_path / "a", num_train=5, num_val=2, seed=11)
    b = tiny_synthetic(tmp_path / "b", num_train=5, num_val=2, seed=11)
    c = tiny_synthetic(tmp_path / "c", num_train=5, num_val=2, seed=12)
    files_a, files_b, files_c = (_tree_bytes(s.out) for s in (a, b, c))
    assert files_a == files_b and len(files_a) == 7 * 2 + 4 + 1
    assert a.images == b.images
    xml = [k for k in files_a if k.endswith(".xml")]
    assert any(files_a[k] != files_c[k] for k in xml)


def test_worker_count_does_not_change_output(tmp_path):
    settings = SynthSettings(num_train=64, num_val=0, seed=5, min_side=48, max_side=64, workers=1)
    one = make_synthetic(str(tmp_path / "one"), settings, log=None)
    two = make_synthetic(str(tmp_path / "two"), dataclasses.replace(settings, workers=2), log=None)
    assert one.images == two.images
    assert _tree_bytes(one.out) == _tree_bytes(two.out)


def test_one_class_and_size_range(tmp_path):
    synth = tiny_synthetic(tmp_path, num_train=10, classes=1, min_size=0.3, max_size=0.4, seed=2)
    assert synth.classes == ["circle"]
    for image in synth.images:
        for obj in image.objects:
            assert obj.cls_id == 0
            if not obj.truncated:
                # size 0.3-0.4 of the short side, aspect ratio up to 1.5 -> each side within these bounds
                side = min(image.width, image.height)
                for extent in (obj.xmax - obj.xmin + 1, obj.ymax - obj.ymin + 1):
                    assert 0.3 / 1.25 * side - 2 <= extent <= 0.4 * 1.23 * side + 2


def test_bad_arguments_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="--classes"):
        make_synthetic(str(tmp_path), SynthSettings(classes=len(SHAPE_NAMES) + 1), log=None)
    with pytest.raises(UserError, match="--min-size"):
        make_synthetic(str(tmp_path), SynthSettings(min_size=0.5, max_size=0.2), log=None)
    assert not os.listdir(tmp_path)  # refused before anything is written


@pytest.mark.slow
def test_cli_writes_and_summarises(tmp_path):
    out = tmp_path / "cli"
    result = subprocess.run([*script_command("tools/make_synthetic.py"), "--out", str(out), "--classes", "10",
                             "--num-train", "3", "--num-val", "1", "--seed", "4", "--min-size", "0.15",
                             "--max-size", "0.6", "--min-side", "64", "--max-side", "96"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "wrote 4 images (3 train, 1 val)" in result.stdout
    with open(out / "synth.names") as f:
        assert f.read().split() == SHAPE_NAMES[:10]
    assert sorted(os.listdir(out / "VOCdevkit" / "VOCsynth" / "JPEGImages")) == [f"00000{i}.jpg" for i in range(1, 5)]


def test_cli_flags_are_the_settings_fields_with_their_defaults(monkeypatch):
    script = load_script("tools/make_synthetic")
    args = script.parse_args(["--out", "x"])
    assert {name: value for name, value in vars(args).items() if name != "out"} == dataclasses.asdict(SynthSettings())
    # every flag reaches the generator, with the type of its field
    calls = []
    monkeypatch.setattr(script, "make_synthetic", lambda out, settings, log: calls.append((out, settings)))
    script.main(["--out", "y", "--num-train", "7", "--max-size", "0.5", "--workers", "2", "--truncation", "0"])
    assert calls == [("y", SynthSettings(num_train=7, max_size=0.5, workers=2, truncation=0.0))]
    assert isinstance(calls[0][1].truncation, float) and isinstance(calls[0][1].num_train, int)


def test_truncation_share_controls_objects_cut_by_the_border(tmp_path):
    def truncated_share(truncation):
        synth = tiny_synthetic(tmp_path / str(truncation), num_train=40, classes=3, seed=5, min_size=0.2,
                               max_size=0.45, truncation=truncation)
        objects = [o for image in synth.images for o in image.objects]
        return sum(o.truncated for o in objects) / len(objects)

    # objects up to 0.45 of the side always fit inside, so 0 means none is cut
    assert truncated_share(0.0) == 0.0
    assert truncated_share(1.0) > 0.2
    with pytest.raises(UserError, match="--truncation"):
        make_synthetic(str(tmp_path / "bad"), SynthSettings(num_train=1, truncation=1.5), log=None)
