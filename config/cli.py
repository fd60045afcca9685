"""Argument helpers shared by the command-line scripts (devices, pixel statistics, class names).

The error contract itself (``UserError``, ``run_cli``) lives in :mod:`config.errors`.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from collections.abc import Sequence

from config.errors import UserError


def add_device_args(parser) -> None:
    """``--gpus`` / ``--cpus``, shared by every script (resolved by config.devices.parse_devices)."""
    parser.add_argument("--gpus", default=None,
                        help="GPU ids, e.g. 0,1; '' for the CPU; default: every visible GPU, else the CPU")
    parser.add_argument("--cpus", type=int, default=0,
                        help="use N CPU contexts data-parallel (how multi-device runs are tested without GPUs)")


def add_pixel_args(parser, defaults: dict) -> None:
    """``--mean-r/g/b`` (the original's) and ``--std-r/g/b`` (1: no scaling)."""
    for channel in "rgb":
        parser.add_argument(f"--mean-{channel}", type=float, default=defaults[f"mean_{channel}"],
                            help=f"{channel} mean pixel value")
    for channel in "rgb":
        parser.add_argument(f"--std-{channel}", type=float, default=defaults.get(f"std_{channel}", 1.0),
                            help=f"{channel} pixel std value")


def pixel_stats(args) -> tuple:
    """(mean_pixels, std_pixels) from parsed ``add_pixel_args`` flags."""
    return [args.mean_r, args.mean_g, args.mean_b], [args.std_r, args.std_g, args.std_b]


def parse_class_names(value: str, num_class: int | None = None, default: str | None = None) -> list | None:
    """Class names from a comma list or a file (one a line); must agree with ``--num-class``.

    When ``value`` is the flag's ``default`` (the 20 VOC names) and ``--num-class``
    asks for another count, the user named no classes: None (classes are shown
    by index) instead of an error.
    """

    if value and os.path.isfile(value):
        with open(value) as f:
            names = [line.strip() for line in f if line.strip()]
        source = f"--class-names {value}"
        if not names:
            raise UserError(f"{source}: the file lists no class names")
    else:
        names = [n.strip() for n in (value or "").split(",") if n.strip()]
        source = "--class-names"
    if not names or (value == default and num_class is not None and len(names) != num_class):
        return None
    if num_class is not None and len(names) != num_class:
        raise UserError(f"--num-class {num_class} disagrees with {source}, which lists {len(names)} names")
    return names


def parse_known_given(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """``parser.parse_args(argv)`` plus ``given``: the dests the command line set explicitly.

    Scripts use it to refuse a flag that does not apply (rather than accept
    and ignore it), and to let explicit flags win over a saved run config.
    ``spelled`` maps a given dest to the option string the user typed
    (``--no-voc07`` rather than ``--voc07``), for error messages.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    saved = [(action, action.default) for action in parser._actions]
    for action, _ in saved:
        action.default = argparse.SUPPRESS
    try:
        explicit = parser.parse_args(argv)
    finally:
        for action, default in saved:
            action.default = default
    args.given = set(vars(explicit))
    typed = {token.split("=", 1)[0] for token in argv if token.startswith("-")}
    args.spelled = {action.dest: option for action in parser._actions for option in action.option_strings
                    if option in typed}
    return args


def flag_name(parser: argparse.ArgumentParser, dest: str, args: argparse.Namespace | None = None) -> str:
    """The option string of ``dest`` the user typed, else its first one (``nms_thresh`` -> ``--nms``)."""
    if args is not None and dest in getattr(args, "spelled", {}):
        return args.spelled[dest]
    for action in parser._actions:
        if action.dest == dest and action.option_strings:
            return action.option_strings[0]
    return "--" + dest.replace("_", "-")


def refuse_given(parser: argparse.ArgumentParser, args: argparse.Namespace, dests: Sequence[str], reason: str) -> None:
    """A one-line error for the first of ``dests`` given on the command line: ``<flag>: <reason>``."""
    for dest in dests:
        if dest in args.given:
            raise UserError(f"{flag_name(parser, dest, args)}: {reason}")


def require_number(flag: str, value: float | None, minimum: float, *, above: bool = False,
                   below: float | None = None) -> None:
    """A one-line error unless ``value`` is finite and ``>= minimum`` (``> minimum`` with ``above``),
    and ``< below`` when given. ``--lr nan`` used to train to the end without updating a weight."""
    if value is None:
        return
    too_low = value <= minimum if above else value < minimum
    if not math.isfinite(value) or too_low or (below is not None and value >= below):
        bound = f"{'>' if above else '>='} {minimum:g}" + (f" and < {below:g}" if below is not None else "")
        raise UserError(f"{flag} {value}: must be a number {bound}")


def require_writable_dir(flag: str, path: str) -> None:
    """A one-line error unless the folder of ``path`` exists (it is created) and takes a file.

    Checked before the work starts: training used to find an unwritable
    ``--prefix`` after its first epoch.
    """
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as err:
        raise UserError(f"{flag} {path}: cannot write to {directory} ({err.strerror})") from None


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose mistakes are one line: a :class:`UserError` that :func:`config.errors.run_cli`
    prints (``error: --batch-size: invalid int value: 'abc'``) instead of the usage text and a second line."""

    def error(self, message: str):
        raise UserError(message.removeprefix("argument ") + " (see --help)")
