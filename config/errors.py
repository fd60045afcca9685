"""The one-line error contract that every package and script shares.

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


def short_mxnet_message(err: BaseException) -> str:
    """The reason inside an MXNetError, without the C++ stack trace around it.

    mxnet 1.9.1 formats its errors as ``Traceback ... File "src/x.cc", line N /
    MXNetError: Check failed: <expression>: <reason>``; the reason is what a user
    can act on (``Invalid NDArray file format``).
    """
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    for line in lines:
        if line.startswith("MXNetError:"):
            message = line[len("MXNetError:"):].strip()
            if message.startswith("Check failed: ") and ": " in message[len("Check failed: "):]:
                return message.rsplit(": ", 1)[1]  # the expression before it may hold ': ' itself
            return message
    for line in lines:
        if not line.startswith(("Traceback", "Stack trace", "[bt]", "File ")):
            return line
    return lines[0] if lines else type(err).__name__


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
        print(f"error: mxnet: {short_mxnet_message(err)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(int(status or 0))
