"""The one way the toolkit writes a file: under a temporary name, then renamed.

A reader (``--resume auto``, evaluate.py, a user's shell) never sees a
half-written checkpoint, record, list or CSV: the final name appears only
when its content is complete, flushed and synced to disk.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator


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


@contextlib.contextmanager
def atomic_open(path: str, mode: str = "w", **kwargs) -> Iterator:
    """``with atomic_open(path) as f:`` writes ``path`` atomically (see :func:`atomic_write`)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, mode, **kwargs) as f:
            yield f
        commit(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write(path: str, write: Callable[[str], object]) -> str:
    """Call ``write(tmp)`` and rename ``tmp`` to ``path``; on any error no file is left behind.

    The folder is created if needed. The file, then its folder, are synced
    around the rename, so a power cut cannot leave a renamed but empty file.
    Returns ``path``.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temporary_path(path)
    try:
        write(tmp)
        commit(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
