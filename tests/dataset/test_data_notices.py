"""Data that is suspicious but not broken is reported with a count and the file names, never changed
silently: repeated image ids, images without objects, an EXIF-rotated JPEG, a truncated JPEG in demo."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from helpers import load_script, write_voc_set

from config.errors import UserError
from tools.prepare_dataset import main as prepare


def image(seed: int, width: int = 80, height: int = 60) -> np.ndarray:
    return (np.random.RandomState(seed).rand(height, width, 3) * 255).astype(np.uint8)


def pack(devkit: str, target: str, capsys) -> str:
    capsys.readouterr()
    assert prepare(["--dataset", "pascal", "--year", "t", "--set", "train", "--root", devkit, "--target", target,
                    "--class-names", "box", "--no-shuffle"]) == 0
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_repeated_ids_and_images_without_objects_are_counted_and_named(tmp_path, capsys):
    devkit = str(tmp_path / "VOCdevkit")
    samples = [("a", image(0), [("box", 10, 10, 40, 40, 0)]), ("b", image(1), [("box", 5, 5, 30, 30, 0)]),
               ("empty", image(2), [])]
    data = write_voc_set(devkit, "t", "train", samples)
    with open(os.path.join(data, "ImageSets", "Main", "train.txt"), "a") as f:
        f.write("a\n")  # listed twice
    summary = pack(devkit, str(tmp_path / "train.lst"), capsys)
    assert summary.startswith("wrote 3 images with 3 objects")  # a is packed twice, as listed
    assert "; left out 1 image(s) without objects (empty.jpg)" in summary
    assert "; 1 image(s) listed more than once, packed each time (a.jpg)" in summary
    with open(tmp_path / "train.lst") as f:
        assert [line.split("\t")[-1].strip() for line in f] == ["VOCt/JPEGImages/a.jpg", "VOCt/JPEGImages/b.jpg",
                                                                 "VOCt/JPEGImages/a.jpg"]


def test_clean_data_has_no_notice(tmp_path, capsys):
    devkit = str(tmp_path / "VOCdevkit")
    write_voc_set(devkit, "t", "train", [("a", image(0), [("box", 10, 10, 40, 40, 0)])])
    summary = pack(devkit, str(tmp_path / "train.lst"), capsys)
    assert "without objects" not in summary and "more than once" not in summary


def test_exif_rotated_jpeg_says_why_its_size_differs(tmp_path):
    """The annotation was drawn on the stored 80x60 pixels; the EXIF tag 6 makes OpenCV (and im2rec)
    rotate the image to 60x80, so the boxes would be wrong."""
    from PIL import Image

    devkit = str(tmp_path / "VOCdevkit")
    data = write_voc_set(devkit, "t", "train", [("rot", image(0), [("box", 10, 10, 40, 40, 0)])])
    path = os.path.join(data, "JPEGImages", "rot.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(image(0)[:, :, ::-1]).save(path, exif=exif.tobytes())
    with pytest.raises(UserError, match=r"rot\.jpg: image is 60x80 but its annotation says 80x60: its EXIF "
                                        r"orientation tag \(6: rotated 90 degrees clockwise\)"):
        prepare(["--dataset", "pascal", "--year", "t", "--set", "train", "--root", devkit,
                 "--target", str(tmp_path / "train.lst"), "--class-names", "box"])
    assert not os.path.exists(tmp_path / "train.lst")


@pytest.mark.slow
def test_demo_names_a_truncated_jpeg(trained_toy, tmp_path, capsys):
    demo = load_script("demo")
    whole = str(tmp_path / "whole.jpg")
    cut = str(tmp_path / "cut.jpg")
    cv2.imwrite(whole, image(3, 200, 160))
    data = open(whole, "rb").read()
    with open(cut, "wb") as f:
        f.write(data[: len(data) * 2 // 3])
    assert demo.jpeg_truncated(cut) and not demo.jpeg_truncated(whole)
    capsys.readouterr()
    assert demo.main(["--prefix", trained_toy.checkpoint, "--epoch", "2", "--cpu", "--images", f"{whole},{cut}"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("warning:")] == [
        f"warning: {cut}: the JPEG is cut short (no end marker); its lower part is missing and detections "
        "there are meaningless"]
