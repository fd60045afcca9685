"""One writer per output set: ``with output_lock(prefix):`` before a command writes files named by ``prefix``.

Each file is renamed into place atomically (:mod:`config.fileio`), but a command
writes a set: ``.lst``/``.rec``/``.idx``, a run's checkpoints, run config and
metrics, a graph with its weights. Two processes writing the same set at once
would leave files of both beside each other. The lock is ``fcntl.flock`` on
``<output>.lock``, which holds the holder's pid and command line for the error
a second process gets; the kernel drops the lock when its holder dies, so a run
killed with SIGKILL never blocks the next one (the file it leaves is taken over).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import sys
import time
from collections.abc import Iterator

from config.errors import UserError

LOCK_SUFFIX = ".lock"
# how long a refused process waits for the holder to write its pid (it locks the file, then writes)
_HOLDER_WAIT_S = 2.0
_COMMAND_CHARS = 300


def lock_path(output: str) -> str:
    """``<output>.lock``: the file the lock of ``output`` is taken on."""
    return output + LOCK_SUFFIX


def _this_command() -> str:
    """This process's command line as one short line (``python train.py --prefix ...``)."""
    argv = list(getattr(sys, "orig_argv", None) or [sys.executable, *sys.argv])
    if argv:
        argv[0] = os.path.basename(argv[0])
    command = " ".join(shlex.join(argv).split())
    return command if len(command) <= _COMMAND_CHARS else command[:_COMMAND_CHARS - 3] + "..."


def _holder(fd: int) -> str:
    """``process <pid> (<command>)`` from a lock file another process holds."""
    deadline = time.monotonic() + _HOLDER_WAIT_S
    while True:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        pid, _, command = text.partition("\n")
        if text.endswith("\n") and pid.strip().isdigit():
            command = command.strip()
            return f"process {pid.strip()}" + (f" ({command})" if command else "")
        if time.monotonic() > deadline:  # a holder that never wrote (an old or foreign lock file)
            return "another process"
        time.sleep(0.05)


def _acquire(path: str, label: str) -> int:
    """An open descriptor of ``path`` holding its exclusive lock; :class:`UserError` when another process holds it."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise UserError(f"{label}: cannot create the lock file {path} ({err.strerror})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise UserError(f"{label}: {holder} is writing it; wait for that process to end, "
                            "or write somewhere else") from None
        except OSError as err:
            os.close(fd)
            raise UserError(f"{label}: cannot lock {path} ({err.strerror})") from None
        # the previous holder removes the file before it lets go: a lock on a removed file guards nothing
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(current, os.fstat(fd)):
            return fd
        os.close(fd)


@contextlib.contextmanager
def output_lock(output: str, label: str | None = None) -> Iterator[str]:
    """Hold the lock of ``output`` (a prefix or a file) for the block; yields the lock file's path.

    A second process asking for the same ``output`` gets a one-line :class:`UserError`
    (``<label>: process <pid> (<command>) is writing it; ...``; ``label`` names the flag
    and value the user gave, default ``output``) before it
    writes anything. The lock file is removed on the way out; one left by a killed
    process is taken over. Not re-entrant: one process takes an output's lock once.
    """
    path = lock_path(output)
    label = label or output
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise UserError(f"{label}: cannot write to {directory} ({err.strerror})") from None
    fd = _acquire(path, label)
    try:
        with contextlib.suppress(OSError):  # a full disk: the lock holds all the same, unnamed
            os.ftruncate(fd, 0)  # a killed holder's pid may be there
            os.pwrite(fd, f"{os.getpid()}\n{_this_command()}\n".encode(), 0)
        yield path
    finally:
        # removed while still locked, so no other process can hold the lock of the file being removed
        with contextlib.suppress(OSError):
            os.unlink(path)
        os.close(fd)
