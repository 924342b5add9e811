"""Frozen dataclasses checked like a validation library would, without importing one.

:mod:`membrane_otel.settings` is read at every start-up of the distro; pydantic there cost
more than the rest of our start-up together (its import, its plugin scan over every installed
distribution, building the model's validator). A field here is a ``dataclasses`` field with
its documentation and bounds in ``metadata``; :func:`check_fields` (called from
``__post_init__``) coerces each value to its annotated type — a string from the environment is
parsed — checks the bounds, and runs the converters registered with :func:`converts`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

__all__ = ["FieldProblem", "check_fields", "converts", "setting"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class FieldProblem(ValueError):
    """A field's value failed its type, bounds or converter."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        super().__init__(f"{field}={value!r}: {reason}")
        self.field, self.value, self.reason = field, value, reason


# Converters per field, registered by @converts: "before" ones see the raw value (a string from
# the environment), "after" ones the value of the field's type.
_CONVERTERS: dict[tuple[str, str], list[tuple[str, Callable[[Any, Any], Any]]]] = {}


def setting(
    default: Any = dataclasses.MISSING,
    *,
    description: str,
    default_factory: Callable[[], Any] | None = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    repr: bool = True,
) -> Any:
    """A settings field: its default, its documentation (the README table) and its bounds."""
    meta = {"description": description, "ge": ge, "gt": gt, "le": le}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta, repr=repr)
    return dataclasses.field(default=default, metadata=meta, repr=repr)


def converts(*names: str, mode: str = "after") -> Callable[[Any], Any]:
    """Register a classmethod converting the named fields ("before": the raw value)."""

    def register(method: Any) -> Any:
        owner = method.__func__.__qualname__.rpartition(".")[0]
        for name in names:
            _CONVERTERS.setdefault((owner, name), []).append((mode, method.__func__))
        return method

    return register


def check_fields(obj: Any) -> None:
    """Coerce and check every field of a frozen dataclass instance, in place.

    Raises :class:`FieldProblem` naming the first field that fails."""
    cls = type(obj)
    for name, kind in _kinds(cls).items():
        value = raw = getattr(obj, name)
        converters = _CONVERTERS.get((cls.__qualname__, name), ())
        try:
            for mode, convert in converters:
                if mode == "before":
                    value = convert(cls, value)
            value = _coerce(value, kind)
            for mode, convert in converters:
                if mode == "after" and value is not None:
                    value = convert(cls, value)
        except (TypeError, ValueError) as exc:
            raise FieldProblem(name, raw, str(exc)) from None
        if value is not raw:
            object.__setattr__(obj, name, value)


# (optional, base type, Literal choices, bounds) per field, read once from the annotations.
_Kind = tuple[bool, Any, tuple[Any, ...], Mapping[str, Any]]
_KINDS: dict[type, dict[str, _Kind]] = {}


def _kinds(cls: type) -> dict[str, _Kind]:
    kinds = _KINDS.get(cls)
    if kinds is None:
        kinds = _KINDS[cls] = {}
        hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint, optional = hints[f.name], False
            args = get_args(hint)
            if type(None) in args:  # X | None
                optional, hint = True, next(a for a in args if a is not type(None))
            choices = get_args(hint) if get_origin(hint) is Literal else ()
            base = str if choices else (get_origin(hint) or hint)
            kinds[f.name] = (optional, base, choices, f.metadata)
    return kinds


def _coerce(value: Any, kind: _Kind) -> Any:
    """``value`` as the field's type (a string from the environment is parsed), within bounds."""
    optional, base, choices, meta = kind
    if value is None:
        if optional:
            return None
        raise ValueError("a value is required")
    if choices:
        if value not in choices:
            raise ValueError("expected " + " or ".join(repr(c) for c in choices))
        return value
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError("expected 1/0, true/false, yes/no or on/off")
    if base is int or base is float:
        out = _number(value, base)
        for bound, ok, text in (("ge", out.__ge__, "≥"), ("gt", out.__gt__, ">"), ("le", out.__le__, "≤")):
            limit = meta.get(bound)
            if limit is not None and not ok(limit):
                raise ValueError(f"expected a {'whole ' if base is int else ''}number {text} {limit:g}")
        return out
    if base is Path:
        if isinstance(value, str | os.PathLike):
            return value if isinstance(value, Path) else Path(value)
        raise ValueError("expected a path")
    if base is tuple:
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise ValueError("expected a list of strings")
    if base is str:
        if isinstance(value, str):
            return value
        raise ValueError("expected a string")
    return value


def _number(value: Any, base: type) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    if isinstance(value, int | float):
        if base is int and isinstance(value, float) and not value.is_integer():
            raise ValueError("expected a whole number")
        return base(value)
    if isinstance(value, str):
        try:
            return base(value.strip())
        except ValueError:
            pass
    raise ValueError("expected a whole number" if base is int else "expected a number")
