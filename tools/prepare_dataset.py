"""Pack a detection data set into ``<target>.lst``, ``.rec`` and ``.idx`` for ``DetRecordIter``.

Steps: read the annotations (every box and class is checked), decode every
image with OpenCV, write the detection ``.lst`` (see ``dataset/imdb.py``), then
pack it with the ``im2rec.py`` that ships inside the mxnet package
(``--pack-label``). All three outputs are written in a temporary folder next to
the target and moved into place only when complete; on an error nothing is
left behind. The three are one set: while a run holds ``<target stem>.lock``,
a second run on the same target is refused (:mod:`config.output_lock`).

Example (the data set of tools/make_synthetic.py)::

    python tools/prepare_dataset.py --dataset pascal --year synth --set train \\
        --root data/synth/VOCdevkit --target data/train.lst --class-names data/synth/synth.names
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter

from config.cli import ArgumentParser, require_writable_dir
from config.errors import UserError, run_cli
from config.fileio import commit
from config.output_lock import output_lock
from dataset.concat_db import ConcatDB
from dataset.imdb import LABEL_HEADER_WIDTH, OBJECT_WIDTH, Imdb, ListStats
from dataset.mscoco import Coco
from dataset.pascal_voc import PascalVoc
from dataset.yolo_format import YoloFormat

LAYOUTS = """data set layouts (--root):
  pascal  ROOT/VOC<year>/{JPEGImages,Annotations,ImageSets/Main/<set>.txt}
          (ROOT is the VOCdevkit folder; --year synth reads tools/make_synthetic.py output)
  coco    ROOT/annotations/instances_<set>.json with the images in ROOT/images/<set>/
          or ROOT/<set>/ (--year is ignored; class names default to the JSON categories)
  yolo    ROOT/<set>.txt lists the images (relative to ROOT/images, extension optional);
          ROOT/labels/<name>.txt holds 'cls cx cy w h' per object, normalised
          (--class-names is required; --year is ignored)
sets and years are comma lists: --year 2007,2012 --set trainval reads both years."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0].replace("``", ""), epilog=LAYOUTS,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="pascal", choices=["pascal", "coco", "yolo"],
                        help="annotation format (default: %(default)s)")
    parser.add_argument("--year", default="2007,2012", help="VOC year(s), comma separated (default: %(default)s)")
    parser.add_argument("--set", dest="set", default="trainval",
                        help="image set(s), comma separated (default: %(default)s)")
    parser.add_argument("--target", default=os.path.join("data", "train.lst"),
                        help="output .lst; the .rec and .idx go beside it (default: %(default)s)")
    parser.add_argument("--root", default=os.path.join("data", "VOCdevkit"),
                        help="data set folder, see below (default: %(default)s)")
    parser.add_argument("--class-names", default=None,
                        help="class names: a file (one a line), a file in dataset/names/, or 'a,b,c' "
                             "(default: voc.names for pascal, the JSON categories for coco)")
    parser.add_argument("--no-shuffle", dest="shuffle", action="store_false",
                        help="keep the images in annotation order (default: shuffle the list)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the list shuffle (default: %(default)s)")
    parser.add_argument("--num-thread", type=int, default=1,
                        help="threads for checking and processes for packing images (default: %(default)s)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="drop bad images and annotations (and say which) instead of stopping")
    parser.add_argument("--quality", type=int, default=95,
                        help="JPEG quality im2rec re-encodes with (default: %(default)s)")
    parser.add_argument("--pass-through", action="store_true",
                        help="pack the image files as they are instead of re-encoding them")
    parser.add_argument("--resize", type=int, default=0,
                        help="resize the shorter side to this many pixels when packing (0: keep)")
    args = parser.parse_args(argv)
    if not args.target.endswith(".lst"):
        raise UserError(f"--target {args.target}: must end with .lst")
    return args


def _split(text: str, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise UserError(f"{flag}: empty")
    return items


def load_imdb(args: argparse.Namespace) -> Imdb:
    """The database(s) named by the flags; several sets or years become a ConcatDB."""
    sets = _split(args.set, "--set")
    if args.dataset == "pascal":
        years = _split(args.year, "--year")
        if len(sets) == 1:
            sets = sets * len(years)
        if len(years) == 1:
            years = years * len(sets)
        if len(sets) != len(years):
            raise UserError(f"--set {args.set} and --year {args.year}: give one year per set, or one of either")
        names = args.class_names or "voc.names"
        imdbs: list[Imdb] = [PascalVoc(s, y, args.root, is_train=True, names=names, skip_bad=args.skip_bad)
                             for s, y in zip(sets, years)]
    elif args.dataset == "coco":
        imdbs = []
        for s in sets:
            image_dir = os.path.join(args.root, "images", s)
            if not os.path.isdir(image_dir):
                image_dir = os.path.join(args.root, s)
            imdbs.append(Coco(os.path.join(args.root, "annotations", f"instances_{s}.json"), image_dir,
                              names=args.class_names, skip_bad=args.skip_bad))
    else:
        if not args.class_names:
            raise UserError("--class-names: required for --dataset yolo")
        imdbs = [YoloFormat(f"yolo_{s}", args.class_names, os.path.join(args.root, s + ".txt"),
                            os.path.join(args.root, "images"), os.path.join(args.root, "labels"),
                            skip_bad=args.skip_bad) for s in sets]
    return imdbs[0] if len(imdbs) == 1 else ConcatDB(imdbs)


def im2rec_path() -> str:
    """``im2rec.py`` inside the installed mxnet package, found without importing mxnet."""
    spec = importlib.util.find_spec("mxnet")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("mxnet: not installed (pip install mxnet==1.9.1)")
    path = os.path.join(list(spec.submodule_search_locations)[0], "tools", "im2rec.py")
    if not os.path.isfile(path):
        raise UserError(f"{path}: im2rec.py not found in the mxnet package")
    return path


def report_dropped(imdb: Imdb, limit: int = 20) -> None:
    """Print what --skip-bad dropped: each file (up to ``limit``) and a count per reason."""
    if not imdb.dropped:
        return
    print(f"dropped {len(imdb.dropped)} bad image(s):")
    for entry in imdb.dropped[:limit]:
        print(f"  {entry.path}: {entry.reason}")
    if len(imdb.dropped) > limit:
        print(f"  ... and {len(imdb.dropped) - limit} more")
    kinds = Counter(entry.kind for entry in imdb.dropped)
    print("  by reason: " + "; ".join(f"{n} x {kind}" for kind, n in kinds.most_common()))


def pack(imdb: Imdb, target: str, root: str, args: argparse.Namespace) -> ListStats:
    """Write ``target`` (.lst) and the .rec/.idx beside it; returns what the list holds."""
    out_dir = os.path.dirname(os.path.abspath(target))
    stem = os.path.splitext(os.path.basename(target))[0]
    os.makedirs(out_dir, exist_ok=True)
    tmp_dir = tempfile.mkdtemp(prefix=f".{stem}.", dir=out_dir)
    try:
        tmp_prefix = os.path.join(tmp_dir, stem)
        stats = imdb.save_imglist(tmp_prefix + ".lst", root=root, shuffle=args.shuffle, seed=args.seed)
        print(f"packing {stats.images} images with im2rec ...", flush=True)
        # --no-shuffle: the .rec keeps the .lst order (the .lst is shuffled already when asked)
        command = [sys.executable, im2rec_path(), tmp_prefix, os.path.abspath(root), "--pack-label",
                   "--no-shuffle", "--num-thread", str(max(1, args.num_thread)), "--quality", str(args.quality),
                   "--resize", str(args.resize)] + (["--pass-through"] if args.pass_through else [])
        # im2rec prints a 'time: ... count: ...' line per 1000 images; keep its output
        # for the error message only
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip().splitlines()
            reason = f": {detail[-1]}" if detail else ""
            raise UserError(f"{target}: im2rec.py failed with exit status {result.returncode}{reason}")
        with open(tmp_prefix + ".idx", encoding="utf-8") as f:
            packed = sum(1 for line in f if line.strip())
        if packed != stats.images:
            raise UserError(f"{target}: im2rec.py packed {packed} of {stats.images} images")
        for ext in (".rec", ".idx", ".lst"):
            commit(tmp_prefix + ext, os.path.join(out_dir, stem + ext))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return stats


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    require_writable_dir("--target", args.target)
    # one run at a time on a target: two runs' renames would leave the .lst of one beside the .rec of the other
    with output_lock(os.path.splitext(args.target)[0], f"--target {args.target}"):
        return _prepare(args)


def _prepare(args: argparse.Namespace) -> int:
    start = time.time()
    print(f"reading {args.dataset} annotations ({args.set}) under {args.root} ...", flush=True)
    imdb = load_imdb(args)
    print(f"checking {imdb.num_images} images ...", flush=True)
    imdb.check_images(args.num_thread, log=lambda line: print(line, flush=True))
    report_dropped(imdb)
    stats = pack(imdb, args.target, args.root, args)

    base = os.path.splitext(args.target)[0]
    print(f"wrote {stats.images} images with {stats.objects} objects of {imdb.num_classes} classes "
          f"({', '.join(imdb.classes[:5])}{', ...' if imdb.num_classes > 5 else ''}) to {base}.lst/.rec/.idx "
          f"in {time.time() - start:.1f}s; at most {stats.max_objects} objects per image "
          f"(needs --label-width >= {LABEL_HEADER_WIDTH + OBJECT_WIDTH * stats.max_objects})"
          + (f"; dropped {len(imdb.dropped)} bad image(s)" if imdb.dropped else "")
          + _notice(stats.without_objects, "left out {} image(s) without objects")
          + _notice(stats.repeated, "{} image(s) listed more than once, packed each time"))
    return 0


def _notice(paths: tuple, text: str, limit: int = 3) -> str:
    """``; <text> (a, b, c, ...)`` for the summary line, or '' when ``paths`` is empty."""
    if not paths:
        return ""
    names = ", ".join(os.path.basename(p) for p in paths[:limit]) + (", ..." if len(paths) > limit else "")
    return "; " + text.format(len(paths)) + f" ({names})"


if __name__ == "__main__":
    run_cli(main)
