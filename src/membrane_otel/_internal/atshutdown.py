"""Imports the first export needs, made safe when that first export runs at interpreter exit.

A short script's records are often exported for the first time by ``shutdown()`` at exit. The
translation and the envelope model are imported then (they are kept off the start-up path), and
building a pydantic model loads every installed pydantic plugin — Logfire's among them, whose
import registers a threading exit hook, which Python refuses once shutdown has begun
("can't register atexit after shutdown"): the export failed and the script's records were lost.
So while the interpreter is shutting down, our models are built with plugins off
(``PYDANTIC_DISABLE_PLUGINS``, read by pydantic at each model build and not cached when set, so
a model built later still gets its plugins). At any other time nothing changes.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["export_imports"]

_VAR = "PYDANTIC_DISABLE_PLUGINS"


@contextmanager
def export_imports() -> Iterator[None]:
    """Wrap the first imports of the export path (see the module doc)."""
    # threading's own flag, set before exit hooks run; a stdlib private name, read defensively.
    if not getattr(threading, "_SHUTTING_DOWN", False) or _VAR in os.environ:
        yield
        return
    os.environ[_VAR] = "__all__"
    try:
        yield
    finally:
        os.environ.pop(_VAR, None)
