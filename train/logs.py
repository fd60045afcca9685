"""The training log: INFO lines on stderr and, while a run lasts, in its log file."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence

from config.errors import UserError


class LogFileHandler(logging.FileHandler):
    """A log file whose write errors (a full disk) stop the run with one line naming the file;
    logging's own handler prints a traceback per record and carries on."""

    def handleError(self, record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        reason = err.strerror if isinstance(err, OSError) and err.strerror else err
        raise UserError(f"{self.baseFilename}: cannot write the log ({reason})")


@contextlib.contextmanager
def logging_to(log_file: str | None) -> Iterator[logging.Logger]:
    """The root logger at INFO, also writing to ``log_file`` while the block runs (created with its first line)."""
    log_format, date_format = "%(asctime)s %(message)s", "%H:%M:%S"
    logging.basicConfig(format=log_format, datefmt=date_format)
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    handler = None
    if log_file:
        try:
            directory = os.path.dirname(os.path.abspath(log_file))
            os.makedirs(directory, exist_ok=True)
            # an unwritable log is refused now, without creating the file: the first record creates it
            # (delay=True), so a run refused by a later check leaves no empty log behind
            if os.path.exists(log_file):
                open(log_file, "a").close()
            else:
                tempfile.TemporaryFile(dir=directory).close()
            handler = LogFileHandler(log_file, delay=True)
        except OSError as err:
            raise UserError(f"--log {log_file}: cannot write ({err.strerror})") from None
        handler.setFormatter(logging.Formatter(log_format, "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
    try:
        yield logger
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            with contextlib.suppress(OSError):  # a full disk was reported already
                handler.close()


def devices_label(ctx: Sequence) -> str:
    """``(cpu(0),cpu(1))``: the devices as the logs name them."""
    return "(" + ",".join(str(c) for c in ctx) + ")"
