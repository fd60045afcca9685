"""The one way the toolkit writes a file: under a temporary name, then renamed.

A reader (``--resume auto``, evaluate.py, a user's shell) never sees a
half-written checkpoint, record, list or CSV: the final name appears only
when its content is complete, flushed and synced to disk. A write that fails
(a full disk, a read-only folder) removes its temporary file, leaves the
previous version in place, and is a one-line :class:`UserError` naming the file.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from config.errors import UserError, short_mxnet_message


def temporary_path(path: str) -> str:
    """``path.tmp<PID>``, keeping the extension last (some writers pick the format from it)."""
    ext = os.path.splitext(path)[1]
    return f"{path}.tmp{os.getpid()}{ext}"


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def commit(tmp: str, path: str) -> None:
    """Sync ``tmp`` and rename it to ``path`` (for writers that stream into :func:`temporary_path`)."""
    _fsync(tmp)
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # some file systems cannot sync a folder
        _fsync(os.path.dirname(os.path.abspath(path)))


def _write_error(path: str, err: BaseException) -> UserError:
    """A full disk, a read-only folder, a quota: one line naming the file the user asked for."""
    if isinstance(err, OSError):
        reason = err.strerror or str(err)
    else:  # mxnet's nd.save reports a failed write as an MXNetError
        reason = short_mxnet_message(err)
    return UserError(f"{path}: cannot write ({reason}); the previous version, if any, is unchanged")


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator:
    """``with atomic_open(path) as f:`` writes ``path`` atomically (see :func:`atomic_write`)."""
    tmp = temporary_path(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with open(tmp, mode, **kwargs) as f:
            yield f
        commit(tmp, path)
    except OSError as err:
        raise _write_error(path, err) from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str, write: Callable[[str], object]) -> str:
    """Call ``write(tmp)`` and rename ``tmp`` to ``path``; on any error no file is left behind.

    The folder is created if needed. The file, then its folder, are synced
    around the rename, so a power cut cannot leave a renamed but empty file.
    Returns ``path``.
    """
    tmp = temporary_path(path)
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        write(tmp)
        commit(tmp, path)
    except Exception as err:
        if isinstance(err, OSError) or type(err).__name__ == "MXNetError":
            raise _write_error(path, err) from None
        raise
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
