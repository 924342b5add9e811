"""Package faces that import their names on first use.

A stage package re-exports its public names without importing its implementation up
front, so that ``membrane-otel emit`` (which touches ``membrane_otel.ledger``) does not pay
for the OTel SDK, pydantic or websockets. Standard library only, and not even ``typing``:
the shell emitter's start-up budget is counted in milliseconds.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable


def lazy_exports(
    package: str, exports: dict[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for *package*, resolving ``name -> ".module"`` on first use."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module, package), name)
        # Cache on the package so the next lookup is an ordinary attribute read.
        setattr(importlib.import_module(package), name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(importlib.import_module(package)), *exports})

    return __getattr__, __dir__
