"""One-line errors for every command-line entry point.

Library code raises :class:`UserError` (or lets ``FileNotFoundError`` out) with a
message that names the file or flag and the reason. :func:`run_cli` turns that
into ``error: <message>`` on stderr and exit status 2, instead of a traceback.
Set ``MXDET_DEBUG=1`` to see the full traceback.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable


class UserError(Exception):
    """Bad input from the user: a file, a flag or a value. Printed as one line."""


def _short_mxnet_message(err: BaseException) -> str:
    # MXNetError carries the whole C++ stack trace; its first line is the reason.
    text = str(err).strip()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("Stack trace", "[bt]", "File ")):
            return line
    return text.splitlines()[0] if text else type(err).__name__


def run_cli(main: Callable[[], object]) -> None:
    """Run ``main()``; bad input exits 2 with one line, Ctrl-C exits 130."""
    try:
        status = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except (UserError, FileNotFoundError) as err:
        if os.environ.get("MXDET_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except Exception as err:  # mxnet's C++ errors become one line as well
        if type(err).__name__ != "MXNetError" or os.environ.get("MXDET_DEBUG"):
            raise
        print(f"error: mxnet: {_short_mxnet_message(err)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(int(status or 0))


def add_device_args(parser) -> None:
    """``--gpus`` / ``--cpus``, shared by every script (resolved by config.devices.parse_devices)."""
    parser.add_argument("--gpus", default=None,
                        help="GPU ids, e.g. 0,1; '' for the CPU; default: every visible GPU, else the CPU")
    parser.add_argument("--cpus", type=int, default=0,
                        help="use N CPU contexts data-parallel (how multi-device runs are tested without GPUs)")


def add_pixel_args(parser, defaults: dict) -> None:
    """``--mean-r/g/b`` (the original's) and ``--std-r/g/b`` (new; 1 keeps the original behaviour)."""
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
    import os

    if value and os.path.isfile(value):
        with open(value) as f:
            names = [line.strip() for line in f if line.strip()]
        source = f"--class-names {value}"
    else:
        names = [n.strip() for n in (value or "").split(",") if n.strip()]
        source = "--class-names"
    if not names or (value == default and num_class is not None and len(names) != num_class):
        return None
    if num_class is not None and len(names) != num_class:
        raise UserError(f"--num-class {num_class} disagrees with {source}, which lists {len(names)} names")
    return names
