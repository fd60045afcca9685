"""Environment variables set for a stretch of code only: mxnet reads several of them when an
executor is bound, an optimizer created or an operator instantiated, not at import."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


@contextlib.contextmanager
def scoped_env(name: str, value: str | None) -> Iterator[None]:
    """``os.environ[name] = value`` inside the ``with`` block (None: left as it is), then what it was
    before, unset if it was unset."""
    saved = os.environ.get(name)
    if value is not None:
        os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved
