"""Bad input and broken files against the real commands, each run as a subprocess.

Every case must end with exit status 2 and exactly one line on stderr, ``error: ...``, that
names the offending file or flag; never ``Traceback``, ``Segmentation fault`` or mxnet's bare
``Check failed``. The folder the command would write to holds the same files before and after:
no partial output, no temporary file.

The cases run a few at a time in one module fixture (each pays mxnet's import once).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import types
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from helpers import files_under, script_command, train_args, write_rec

# every case runs the real commands as subprocesses, on the trained toy
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def broken(trained_toy, tmp_path_factory) -> types.SimpleNamespace:
    """The broken files the cases use, made from the shared tiny data set and toy checkpoint."""
    tmp = tmp_path_factory.mktemp("broken")
    rec = trained_toy.rec
    names = rec.names_file
    b = types.SimpleNamespace(tmp=tmp, names=names, rec=rec, toy=trained_toy)

    # records: cut mid-record (with and without its .idx), an .idx of another pack, not a record at all,
    # and class ids the 3-class toy has no output for
    data = open(rec.train_rec, "rb").read()
    for stem, with_idx in (("cut", True), ("cut_noidx", False)):
        with open(tmp / f"{stem}.rec", "wb") as f:
            f.write(data[: len(data) // 2 + 7])
        if with_idx:
            shutil.copy(rec.train_idx, tmp / f"{stem}.idx")
    shutil.copy(rec.train_rec, tmp / "other_idx.rec")
    shutil.copy(rec.val_idx, tmp / "other_idx.idx")
    (tmp / "text.rec").write_text("this is not a record file\n")
    image = (np.random.RandomState(0).rand(64, 64, 3) * 255).astype(np.uint8)
    b.bad_class_rec = write_rec(str(tmp / "bad_class"), [(image, np.array([[5, 0.1, 0.1, 0.6, 0.6, 0]]))] * 4)

    # class-name files with nothing in them
    (tmp / "empty.names").write_text("")
    (tmp / "blank.names").write_text("\n   \n\t\n")

    # checkpoints: the toy's, with its .params cut in half, and with a broken symbol file
    for folder in ("cut_params", "bad_symbol"):
        (tmp / folder).mkdir()
        for name in os.listdir(os.path.dirname(trained_toy.checkpoint)):
            if name.startswith(os.path.basename(trained_toy.checkpoint) + "-"):
                shutil.copy(os.path.join(os.path.dirname(trained_toy.checkpoint), name), tmp / folder / name)
    base = os.path.basename(trained_toy.checkpoint)
    b.cut_params = str(tmp / "cut_params" / base)
    params = open(b.cut_params + "-0002.params", "rb").read()
    with open(b.cut_params + "-0002.params", "wb") as f:
        f.write(params[: len(params) // 2])
    b.bad_symbol = str(tmp / "bad_symbol" / base)
    with open(b.bad_symbol + "-symbol.json", "w") as f:
        f.write('{"nodes": [')

    # a file where a folder should be: nothing can be written below it (root ignores permissions)
    (tmp / "a_file").write_text("x")
    b.unwritable = str(tmp / "a_file" / "sub")

    # VOC sets: an empty image-set file, an unparsable annotation, a missing image
    devkit = rec.synth.devkit
    for variant in ("empty_set", "bad_xml", "missing_image"):
        shutil.copytree(devkit, tmp / variant)
    voc = "VOCsynth"
    (tmp / "empty_set" / voc / "ImageSets" / "Main" / "train.txt").write_text("")
    first_id = open(tmp / "bad_xml" / voc / "ImageSets" / "Main" / "train.txt").readline().split()[0]
    (tmp / "bad_xml" / voc / "Annotations" / f"{first_id}.xml").write_text("<annotation><object>")
    os.remove(tmp / "missing_image" / voc / "JPEGImages" / f"{first_id}.jpg")
    b.first_id = first_id
    return b


def cases(b: types.SimpleNamespace) -> dict:
    """name -> (command line, regex the error line must match, folder whose files must not change)."""
    tmp, rec, toy = b.tmp, b.rec, b.toy
    out = str(tmp / "out")

    def t(**flags: str) -> list[str]:
        """train.py on the tiny set into ``out`` for one epoch at batch 4 with ``flags`` (``--x-y`` written
        ``x_y``) replaced."""
        prefix = flags.pop("prefix", os.path.join(out, "ssd"))
        return script_command("train.py") + train_args(rec, prefix, **{
            "val_path": "", "end_epoch": 1, "batch_size": 4, "class_names": b.names, **flags})

    evaluate = script_command("evaluate.py") + ["--epoch", "2", "--cpu"]
    demo = script_command("demo.py") + ["--epoch", "2", "--cpu"]
    image = os.path.join(rec.synth.devkit, "VOCsynth", "JPEGImages", f"{b.first_id}.jpg")
    prepare = script_command("tools/prepare_dataset.py") + ["--dataset", "pascal", "--year", "synth", "--set",
                                                            "train", "--class-names", b.names]
    deploy = script_command("tools/deploy.py") + ["--epoch", "2"]
    ckpt_dir = os.path.dirname(toy.checkpoint)
    return {
        # train.py: values checked before any work
        "train_batch_zero": (t(batch_size="0"), r"--batch-size 0: must be a number >= 1", out),
        "train_batch_negative": (t(batch_size="-4"), r"--batch-size -4: must be a number >= 1", out),
        "train_batch_not_a_number": (t(batch_size="four"), r"--batch-size: invalid int value: 'four'", out),
        "train_num_class_zero": (t(num_class="0", class_names=""), r"--num-class 0: must be a number >= 1", out),
        "train_lr_nan": (t(lr="nan"), r"--lr nan: must be a number > 0", out),
        "train_lr_inf": (t(lr="inf"), r"--lr inf: must be a number > 0", out),
        "train_lr_zero": (t(lr="0"), r"--lr 0\.0: must be a number > 0", out),
        "train_lr_negative": (t(lr="-0.1"), r"--lr -0\.1: must be a number > 0", out),
        "train_momentum_one": (t(momentum="1"), r"--momentum 1\.0: must be a number >= 0 and < 1", out),
        "train_empty_names": (t(class_names=str(tmp / "empty.names")), r"--class-names .*empty\.names: the file "
                              r"lists no class names", out),
        "train_blank_names": (t(class_names=str(tmp / "blank.names")), r"--class-names .*blank\.names: the file "
                              r"lists no class names", out),
        "train_class_id_too_large": (t(train_path=b.bad_class_rec), r".*bad_class\.rec: image 0 has class id 5, "
                                     r"but --num-class 3 allows 0\.\.2", out),
        "train_prefix_unwritable": (t(prefix=os.path.join(b.unwritable, "ssd")), r"--prefix .*a_file/sub/ssd_toy_64: "
                                    r"cannot write to .*\(Not a directory\)", str(tmp / "a_file")),
        "train_log_unwritable": (t(log=os.path.join(b.unwritable, "train.log")), r"--log .*a_file/sub/train\.log: "
                                 r"cannot write", out),
        "train_rec_cut": (t(train_path=str(tmp / "cut.rec")), r".*cut\.rec: truncated or corrupt at record \d+", out),
        "train_rec_cut_no_idx": (t(train_path=str(tmp / "cut_noidx.rec")), r".*cut_noidx\.rec: truncated or corrupt",
                                 out),
        "train_idx_of_another_pack": (t(train_path=str(tmp / "other_idx.rec")), r".*other_idx\.rec: holds 24 records "
                                      r"but .*other_idx\.idx lists 8", out),
        "train_rec_not_a_record": (t(train_path=str(tmp / "text.rec")), r".*text\.rec: not a RecordIO file", out),
        "train_val_missing": (t(val_path=str(tmp / "none.rec")), r"--val-path .*none\.rec: file not found", out),
        "train_unknown_network": (t(network="nonet"), r"--network nonet: unknown network", out),
        "train_resume_cut_params": (t(prefix=os.path.join(str(tmp / "cut_params"), "ssd"), data_shape="128",
                                      resume="2", end_epoch="3"),
                                    r".*cut_params/ssd_toy_128-0002\.params: cannot be loaded \(Invalid NDArray file "
                                    r"format\)", str(tmp / "cut_params")),
        "train_pretrained_cut_params": (t(pretrained=b.cut_params, epoch="2", data_shape="128"),
                                        r".*cut_params/ssd_toy_128-0002\.params: cannot be loaded", out),
        "train_resume_missing": (t(resume="4", end_epoch="5"), r"--resume: checkpoint .*ssd_toy_64-0004\.params does "
                                 r"not exist", out),
        "train_freeze_from_scratch": (t(freeze="^conv"), r"--freeze: freezes pretrained layers", out),
        # evaluate.py
        "evaluate_rec_cut": (evaluate + ["--prefix", toy.checkpoint, "--rec-path", str(tmp / "cut.rec")],
                             r".*cut\.rec: truncated or corrupt at record \d+", ckpt_dir),
        "evaluate_idx_of_another_pack": (evaluate + ["--prefix", toy.checkpoint, "--rec-path",
                                                     str(tmp / "other_idx.rec")],
                                         r".*other_idx\.idx lists 8", ckpt_dir),
        "evaluate_class_id_too_large": (evaluate + ["--prefix", toy.checkpoint, "--rec-path", b.bad_class_rec],
                                        r".*bad_class\.rec: image 0 has class id 5", ckpt_dir),
        "evaluate_params_cut": (evaluate + ["--prefix", b.cut_params, "--rec-path", rec.val_rec],
                                r".*cut_params/ssd_toy_128-0002\.params: cannot be loaded", str(tmp / "cut_params")),
        "evaluate_symbol_broken": (evaluate + ["--prefix", b.bad_symbol, "--rec-path", rec.val_rec],
                                   r".*bad_symbol/ssd_toy_128-symbol\.json: cannot be loaded", str(tmp / "bad_symbol")),
        "evaluate_batch_zero": (evaluate + ["--prefix", toy.checkpoint, "--rec-path", rec.val_rec, "--batch-size", "0"],
                                r"--batch-size 0: must be positive", ckpt_dir),
        "evaluate_plot_pr_unwritable": (evaluate + ["--prefix", toy.checkpoint, "--rec-path", rec.val_rec,
                                                    "--plot-pr", b.unwritable], r"--plot-pr .*a_file/sub/pr\.png: "
                                        r"cannot write", str(tmp / "a_file")),
        "evaluate_missing_epoch": (evaluate[:2] + ["--epoch", "9", "--cpu", "--prefix", toy.checkpoint,
                                                   "--rec-path", rec.val_rec],
                                   r"--prefix/--epoch: checkpoint .*ssd_toy_128-0009\.params does not exist", ckpt_dir),
        "evaluate_gpus_with_cpu": (evaluate + ["--gpus", "0", "--prefix", toy.checkpoint, "--rec-path", rec.val_rec],
                                   r"--gpus: --cpu runs on one CPU", ckpt_dir),
        # demo.py
        "demo_params_cut": (demo + ["--prefix", b.cut_params, "--images", image],
                            r".*cut_params/ssd_toy_128-0002\.params: cannot be loaded", str(tmp / "cut_params")),
        "demo_out_dir_unwritable": (demo + ["--prefix", toy.checkpoint, "--images", image, "--out-dir", b.unwritable],
                                    r"--out-dir .*a_file/sub/demo\.jpg: cannot write", str(tmp / "a_file")),
        "demo_batch_zero": (demo + ["--prefix", toy.checkpoint, "--images", image, "--batch-size", "0"],
                            r"--batch-size 0: must be positive", ckpt_dir),
        "demo_ext_without_dir": (demo + ["--prefix", toy.checkpoint, "--images", image, "--ext", ".png"],
                                 r"--ext: picks the images of --dir", ckpt_dir),
        "demo_class_count": (demo + ["--prefix", toy.checkpoint, "--images", image, "--class-names", "a,b"],
                             r"--class-names lists 2 names; the checkpoint was trained for 3 classes", ckpt_dir),
        # tools/deploy.py
        "deploy_params_cut": (deploy + ["--prefix", b.cut_params],
                              r".*cut_params/ssd_toy_128-0002\.params: cannot be loaded", str(tmp / "cut_params")),
        "deploy_class_count": (deploy + ["--prefix", toy.checkpoint, "--num-class", "5"],
                               r"--num-class 5 disagrees with the checkpoint", ckpt_dir),
        "deploy_missing_epoch": (deploy[:2] + ["--epoch", "9", "--prefix", toy.checkpoint],
                                 r"--prefix/--epoch: checkpoint .*-0009\.params does not exist", ckpt_dir),
        # tools/prepare_dataset.py
        "prepare_empty_image_set": (prepare + ["--root", str(tmp / "empty_set"), "--target", f"{out}/p.lst"],
                                    r".*empty_set/VOCsynth/ImageSets/Main/train\.txt: lists no images", out),
        "prepare_bad_xml": (prepare + ["--root", str(tmp / "bad_xml"), "--target", f"{out}/p.lst"],
                            rf".*bad_xml/VOCsynth/Annotations/{b.first_id}\.xml: .*", out),
        "prepare_missing_image": (prepare + ["--root", str(tmp / "missing_image"), "--target", f"{out}/p.lst"],
                                  rf".*missing_image/VOCsynth/JPEGImages/{b.first_id}\.jpg: image file not found", out),
        "prepare_target_unwritable": (prepare + ["--root", rec.synth.devkit, "--target", f"{b.unwritable}/p.lst"],
                                      r"--target .*a_file/sub/p\.lst: cannot write to", str(tmp / "a_file")),
        "prepare_target_not_lst": (prepare + ["--root", rec.synth.devkit, "--target", f"{out}/p.txt"],
                                   r"--target .*p\.txt: must end with \.lst", out),
        "prepare_missing_root": (prepare + ["--root", str(tmp / "nowhere"), "--target", f"{out}/p.lst"],
                                 r".*nowhere: VOC devkit folder not found", out),
    }


@pytest.fixture(scope="module")
def runs(broken) -> dict:
    """Each case's (exit status, stdout, stderr, files before, files after), four processes at a time.

    Each case writes under its own ``out/<name>``: commands on one output refuse to run at the same time
    (config/output_lock.py), and a neighbour's lock file would show up in the "nothing written" check."""
    table = cases(broken)
    shared = str(broken.tmp / "out")

    def run(item):
        name, (argv, _, folder) = item
        own = os.path.join(shared, name)
        argv = [arg.replace(shared, own) for arg in argv]
        folder = folder.replace(shared, own)
        before = files_under(folder)
        proc = subprocess.run(argv, cwd=broken.tmp, capture_output=True, text=True, timeout=300)
        return name, (proc.returncode, proc.stdout, proc.stderr, before, files_under(folder))

    with ThreadPoolExecutor(4) as pool:
        return dict(pool.map(run, table.items()))


def test_at_least_forty_cases_over_every_command(broken):
    table = cases(broken)
    assert len(table) >= 40
    commands = {os.path.basename(argv[1]) for argv, _, _ in table.values()}
    assert commands == {"train.py", "evaluate.py", "demo.py", "deploy.py", "prepare_dataset.py"}


CASE_NAMES = sorted(cases(types.SimpleNamespace(
    tmp=__import__("pathlib").Path("/x"), names="n", first_id="0", bad_class_rec="r", cut_params="c",
    bad_symbol="s", unwritable="u",
    rec=types.SimpleNamespace(train_rec="r", val_rec="v", num_classes=3, names_file="n",
                              synth=types.SimpleNamespace(devkit="d")),
    toy=types.SimpleNamespace(checkpoint="/x/c"))))


@pytest.mark.parametrize("name", CASE_NAMES)
def test_one_line_naming_the_cause_and_nothing_written(broken, runs, name):
    import re

    _, pattern, _ = cases(broken)[name]
    status, stdout, stderr, before, after = runs[name]
    assert status == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for bad in ("Traceback", "Segmentation fault", "Check failed", "malloc", "core dumped"):
        assert bad not in stdout + stderr
    assert re.fullmatch("error: " + pattern + ".*", lines[0]), lines[0]
    assert after == before
    assert not [path for path in after if ".tmp" in path]
