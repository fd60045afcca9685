"""Shared pytest fixtures. Importing ``config`` first fixes mxnet's thread defaults."""
import os
import types
from pathlib import Path

import numpy as np
import pytest
from helpers import record_returns

import config  # noqa: F401
from dataset.synthetic import SynthDataset

REPOSITORY = Path(__file__).resolve().parent.parent
CACHES = {".pytest_cache", ".ruff_cache", ".import_linter_cache", "__pycache__"}
_ROOT_ENTRIES = pytest.StashKey[set]()


# --- the suite writes only under its temporary folders ------------------------
def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_ROOT_ENTRIES] = set(os.listdir(REPOSITORY))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run when a test left a file in the repository's top folder (a script's default output, such
    as train.py's ``train.log``, written because a test ran it in the repository without an output flag)."""
    left = sorted(set(os.listdir(REPOSITORY)) - session.config.stash.get(_ROOT_ENTRIES, set()) - CACHES)
    if left:
        session.config.pluginmanager.get_plugin("terminalreporter").write_line(
            f"error: the tests left {', '.join(left)} in {REPOSITORY}; give those commands an output under tmp_path",
            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# --- data fixtures (tests/helpers.py builds them) ------------------------------
@pytest.fixture(scope="session")
def synthetic_voc(tmp_path_factory) -> SynthDataset:
    """A tiny generated VOC set, made once per test session.

    ``dataset.synthetic.SynthDataset``: 3 classes (circle, square, triangle),
    24 train + 8 val images of 120-240 px, seed 0. Attributes: ``devkit``
    (``.../VOCdevkit``, year ``synth``), ``data_dir``, ``names_file``,
    ``classes``, and ``images`` / ``split('train'|'val')``: the generator's own
    record of every object (``SynthObject``: VOC 1-based pixel box, ``cls_id``,
    ``difficult``; ``normalised(w, h)`` gives the box as the ``.rec`` holds it).
    Read-only: copy it before changing files.
    """
    from helpers import tiny_synthetic

    out = tmp_path_factory.mktemp("synthetic_voc")
    return tiny_synthetic(out, num_train=24, num_val=8, classes=3, seed=0, min_side=120, max_side=240)


@pytest.fixture(scope="session")
def synthetic_rec(synthetic_voc, tmp_path_factory) -> types.SimpleNamespace:
    """``synthetic_voc`` packed by tools/prepare_dataset.py, once per session.

    A namespace with ``train_rec``, ``train_idx``, ``train_lst`` (shuffled list),
    ``val_rec``, ``val_idx``, ``val_lst`` (``--no-shuffle``: annotation order),
    ``names_file``, ``classes``, ``num_classes``, ``label_width`` (the packed
    label width the widest image needs: pass it or more as ``--label-width`` /
    ``label_pad_width``) and ``synth`` (the ``synthetic_voc`` record).
    Read-only.
    """
    from helpers import pack_voc, read_lst

    out = tmp_path_factory.mktemp("synthetic_rec")
    paths = {}
    for split in ("train", "val"):
        lst = str(out / f"{split}.lst")
        pack_voc(synthetic_voc, lst, split, shuffle=split == "train")
        paths.update({f"{split}_lst": lst, f"{split}_rec": str(out / f"{split}.rec"),
                      f"{split}_idx": str(out / f"{split}.idx")})
    widest = max(len(objects) for split in ("train", "val") for _, objects in read_lst(paths[f"{split}_lst"]).values())
    return types.SimpleNamespace(**paths, names_file=synthetic_voc.names_file, classes=list(synthetic_voc.classes),
                                 num_classes=len(synthetic_voc.classes), label_width=2 + 6 * widest,
                                 synth=synthetic_voc)


@pytest.fixture(scope="session")
def learnable(tmp_path_factory) -> types.SimpleNamespace:
    """A set the toy SSD learns in a few epochs, made once per session: :func:`helpers.learnable_rec`
    (2 classes, 128 training and 24 validation images of 1-3 large objects, seed 5) and ``names_file``.
    Read-only."""
    from helpers import learnable_rec

    folder = tmp_path_factory.mktemp("learnable")
    rec = learnable_rec(folder, num_val=24, seed=5)
    names = folder / "classes.names"
    names.write_text("\n".join(rec.classes) + "\n")
    return types.SimpleNamespace(**vars(rec), names_file=str(names))


@pytest.fixture
def no_augmentation(monkeypatch):
    """SSD training on the validation settings: no crop, pad, jitter, mirror or shuffle, so that two
    runs can be compared parameter by parameter."""
    from config.augmentation import TRAIN_AUGMENTATIONS, VALIDATION

    monkeypatch.setitem(TRAIN_AUGMENTATIONS, "ssd", dict(VALIDATION))


# --- model fixtures -------------------------------------------------------------
@pytest.fixture(scope="session")
def trained_toy(synthetic_rec, tmp_path_factory) -> types.SimpleNamespace:
    """The ``toy`` SSD at data shape 128 trained for 2 epochs on ``synthetic_rec`` (seed 0, CPU).

    A namespace with ``prefix`` (the scripts' ``--prefix``, ending in ``_`` so
    ``toy_128`` is appended), ``checkpoint`` (the full prefix the files carry:
    ``<checkpoint>-symbol.json``, ``<checkpoint>-0002.params``), ``network``,
    ``data_shape``, ``epoch``, ``num_class``, ``classes``, ``names_file``,
    ``val_rec``, ``val_lst`` and ``rec`` (the ``synthetic_rec`` record). A weak
    model (mAP near 0), but a real checkpoint of the training loop. Read-only.
    """
    from helpers import read_lst, train_toy

    model_dir = tmp_path_factory.mktemp("trained_toy")
    network, data_shape, epoch = "toy", 128, 2
    checkpoint = str(model_dir / f"ssd_{network}_{data_shape}")
    train_toy(synthetic_rec, checkpoint, epoch, data_shape=data_shape, label_width=350, batch_size=8,
              frequent=1000, lr=0.01, lr_factor=1.0, num_example=len(read_lst(synthetic_rec.train_lst)), seed=0)
    return types.SimpleNamespace(
        prefix=str(model_dir / "ssd_"), checkpoint=checkpoint, network=network, data_shape=data_shape,
        epoch=epoch, num_class=synthetic_rec.num_classes, classes=list(synthetic_rec.classes),
        names_file=synthetic_rec.names_file, val_rec=synthetic_rec.val_rec, val_lst=synthetic_rec.val_lst,
        rec=synthetic_rec)


@pytest.fixture
def scored(monkeypatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every image evaluate.py scores, as ``(detections [n, 6], labels [m, 6])``: the kept rows the metric reads,
    in scoring order (tests empty the list between runs)."""
    import evaluate.scoring as scoring

    return record_returns(monkeypatch, scoring, "image_rows")
