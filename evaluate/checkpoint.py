"""Checkpoints that survive interruption: params, symbol and optimizer state.

Layout for a prefix ``model/ssd_toy_256`` and epoch 3 (mxnet's own naming, so
``mx.model.load_checkpoint`` reads them):

* ``model/ssd_toy_256-symbol.json``
* ``model/ssd_toy_256-0003.states``  optimizer state (momentum), written first
* ``model/ssd_toy_256-0003.params``  written last: its presence marks the
  checkpoint complete, which is what ``--resume auto`` looks for
* ``model/ssd_toy_256-best-symbol.json`` / ``-best-0000.params`` / ``-best.json``:
  the epoch with the best validation mAP.

Only the newest ``keep`` epochs stay on disk (:func:`prune_checkpoints`); the
best checkpoint is a copy of its own and is never pruned.

Every file is written under a temporary name and renamed when complete.
"""
from __future__ import annotations

import glob
import json
import os
import pickle
import re

import mxnet as mx

from config.errors import UserError, short_mxnet_message
from config.fileio import atomic_write


def params_path(prefix: str, epoch: int) -> str:
    return f"{prefix}-{epoch:04d}.params"


def states_path(prefix: str, epoch: int) -> str:
    return f"{prefix}-{epoch:04d}.states"


def save_params(prefix: str, epoch: int, symbol: mx.sym.Symbol, arg_params: dict, aux_params: dict) -> None:
    """Write ``prefix-symbol.json`` and ``prefix-EPOCH.params`` atomically."""
    atomic_write(f"{prefix}-symbol.json", symbol.save)
    save_dict = {f"arg:{k}": v.as_in_context(mx.cpu()) for k, v in arg_params.items()}
    save_dict.update({f"aux:{k}": v.as_in_context(mx.cpu()) for k, v in aux_params.items()})
    atomic_write(params_path(prefix, epoch), lambda tmp: mx.nd.save(tmp, save_dict))


def save_checkpoint(
    prefix: str, epoch: int, symbol: mx.sym.Symbol, arg_params: dict, aux_params: dict,
    module: mx.mod.Module | None = None,
) -> None:
    """Save optimizer state (if ``module`` has one), then symbol and params."""
    if module is not None and module.optimizer_initialized:
        atomic_write(states_path(prefix, epoch), module.save_optimizer_states)
    save_params(prefix, epoch, symbol, arg_params, aux_params)


def saved_epochs(prefix: str) -> list:
    """Epochs with a complete ``prefix-NNNN.params`` file, ascending."""
    pattern = re.compile(re.escape(os.path.basename(prefix)) + r"-(\d{4})\.params$")
    epochs = []
    for path in glob.glob(glob.escape(prefix) + "-[0-9][0-9][0-9][0-9].params"):
        match = pattern.search(os.path.basename(path))
        if match:
            epochs.append(int(match.group(1)))
    return sorted(epochs)


def resolve_resume(resume: str | int, prefix: str) -> int:
    """``--resume``: an epoch number, -1 for no resume, or 'auto' for the latest complete one.

    'auto' with no checkpoint yet starts from scratch (returns -1), so the same
    command both starts and continues a run.
    """
    if str(resume).strip().lower() == "auto":
        epochs = saved_epochs(prefix)
        return epochs[-1] if epochs else -1
    try:
        return int(resume)
    except ValueError:
        raise UserError(f"--resume {resume!r}: expected an epoch number, -1 or 'auto'") from None


class CorruptCheckpointError(UserError):
    """A checkpoint file that exists but cannot be loaded (cut short, overwritten, not a checkpoint)."""


def load_params_file(path: str) -> dict:
    """``{'arg:name' | 'aux:name': NDArray}`` of a ``.params`` file; :class:`CorruptCheckpointError`
    naming the file when mxnet cannot read it (instead of mxnet's C++ trace)."""
    try:
        loaded = mx.nd.load(path)
    except mx.base.MXNetError as err:
        raise CorruptCheckpointError(f"{path}: cannot be loaded ({short_mxnet_message(err)}); the file is cut "
                                     "short or not a .params file") from None
    if not isinstance(loaded, dict) or not loaded:
        raise CorruptCheckpointError(f"{path}: holds no named parameters")
    return loaded


def load_checkpoint(prefix: str, epoch: int, flag: str = "--prefix/--epoch") -> tuple:
    """(symbol, arg_params, aux_params), or a one-line error naming the missing or unreadable file."""
    path = params_path(prefix, epoch)
    if not os.path.isfile(path):
        have = saved_epochs(prefix)
        hint = f"; saved epochs: {', '.join(map(str, have))}" if have else ""
        raise UserError(f"{flag}: checkpoint {path} does not exist{hint}")
    symbol = None
    symbol_file = f"{prefix}-symbol.json"
    if os.path.isfile(symbol_file):
        try:
            with open(symbol_file) as f:
                json.load(f)  # mxnet's own parser reports broken JSON with an undecodable message
            symbol = mx.sym.load(symbol_file)
        except (ValueError, mx.base.MXNetError) as err:
            reason = short_mxnet_message(err) if isinstance(err, mx.base.MXNetError) else f"not valid JSON: {err}"
            raise CorruptCheckpointError(f"{symbol_file}: cannot be loaded ({reason})") from None
    loaded = load_params_file(path)
    arg_params = {k[4:]: v for k, v in loaded.items() if k.startswith("arg:")}
    aux_params = {k[4:]: v for k, v in loaded.items() if k.startswith("aux:")}
    return symbol, arg_params, aux_params


def states_loadable(path: str) -> bool:
    """Whether an optimizer state file can be unpickled (it was cut short if not)."""
    try:
        with open(path, "rb") as f:
            pickle.load(f)
    except Exception:  # any unpickling failure means the same: unusable
        return False
    return True


def remove_stale_temporaries(prefix: str) -> list[str]:
    """Delete ``<prefix>*.tmp<PID>*`` files that a killed run left behind; returns their paths.

    Only files of processes that no longer run are removed, so two runs on
    one folder do not delete each other's files in flight.
    """
    removed = []
    for path in glob.glob(glob.escape(prefix) + "*.tmp[0-9]*"):
        match = re.search(r"\.tmp(\d+)", path[len(prefix):])
        if match is None or _process_alive(int(match.group(1))):
            continue
        os.remove(path)
        removed.append(path)
    return removed


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def save_best(prefix: str, epoch: int, score: float, symbol: mx.sym.Symbol, arg_params: dict,
              aux_params: dict) -> None:
    """Keep ``prefix-best`` as the checkpoint with the best validation score."""
    save_params(f"{prefix}-best", 0, symbol, arg_params, aux_params)
    from config.run_config import load_run_config, save_run_config

    run = load_run_config(prefix)
    if run is not None:  # evaluate.py / demo.py --prefix <prefix>-best --epoch 0 need no other flag
        save_run_config(run, f"{prefix}-best")
    info = {"epoch": epoch, "mAP": score}

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(info, f)

    atomic_write(f"{prefix}-best.json", write)


def best_score(prefix: str) -> float | None:
    """The mAP recorded with ``prefix-best``, or None."""
    try:
        with open(f"{prefix}-best.json") as f:
            return float(json.load(f)["mAP"])
    except (OSError, ValueError, KeyError):
        return None


def prune_checkpoints(prefix: str, keep: int) -> list[int]:
    """Delete the ``.params``/``.states`` of all but the newest ``keep`` epochs (0 keeps all).

    The ``.params`` goes first, so an interrupted prune never leaves a
    checkpoint that ``--resume auto`` would take for complete without its
    optimizer state. Returns the epochs removed.
    """
    if keep <= 0:
        return []
    removed = saved_epochs(prefix)[:-keep]
    for epoch in removed:
        for path in (params_path(prefix, epoch), states_path(prefix, epoch)):
            if os.path.exists(path):
                os.remove(path)
    return removed


def is_class_layer(name: str) -> bool:
    """SSD's ``*_cls_pred_conv_*`` and Faster R-CNN's ``cls_score_*``: their shape follows the class count."""
    return "cls_pred" in name or name.startswith("cls_score")


def expected_shapes(symbol: mx.sym.Symbol, input_shapes: dict) -> dict:
    """``{parameter name: shape}`` of every argument and auxiliary state of ``symbol`` but its inputs."""
    arg_shapes, _, aux_shapes = symbol.infer_shape(**input_shapes)
    shapes = dict(zip(symbol.list_arguments(), arg_shapes))
    shapes.update(zip(symbol.list_auxiliary_states(), aux_shapes))
    return {name: tuple(shape) for name, shape in shapes.items() if name not in input_shapes}


def shape_mismatches(symbol: mx.sym.Symbol, params: dict, input_shapes: dict) -> dict:
    """``{name: (loaded shape, needed shape)}`` of the loaded ``params`` that do not fit ``symbol``."""
    wanted = expected_shapes(symbol, input_shapes)
    return {name: (tuple(value.shape), wanted[name]) for name, value in params.items()
            if name in wanted and tuple(value.shape) != wanted[name]}


def check_params_fit(symbol: mx.sym.Symbol, args: dict, auxs: dict, input_shapes: dict, source: str,
                     num_classes: int, require_all: bool = False) -> None:
    """Raise a one-line error naming ``source`` when loaded params do not fit ``symbol``.

    A mismatch in a class layer is reported first and as what it is:
    ``--num-class`` disagrees with the weights (zhreshold/mxnet-ssd#124: a
    20-class SSD loaded for 3 classes); in Faster R-CNN the box layer then
    differs too. ``require_all`` (inference) also refuses weights that lack a
    parameter of the graph.
    """
    params = {**args, **auxs}
    mismatched = shape_mismatches(symbol, params, input_shapes)
    for name, (have, want) in sorted(mismatched.items(), key=lambda item: not is_class_layer(item[0])):
        if is_class_layer(name):
            raise UserError(f"--num-class {num_classes} disagrees with {source}: its layer {name} has shape "
                            f"{have}, this network needs {want}")
        raise UserError(f"{source}: parameter {name} has shape {have}, this network needs {want}")
    if require_all:
        missing = [name for name in expected_shapes(symbol, input_shapes) if name not in params]
        if missing:
            raise UserError(f"{source}: has no parameter {missing[0]}; was it trained with another --network "
                            "or --data-shape?")
