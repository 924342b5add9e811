"""The HRM layers of ``seeds/004`` and the seed's readable event ids (``alt_1705180800_a3f2``)."""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from typing import Literal

from opentelemetry import context as otel_context

LAYERS: dict[str, str] = {
    "alt": "altitude",
    "foc": "focus",
    "rsn": "reasoning",
    "lrn": "learning",
    "mem": "memory",
    "sys": "system",
}
CODES: dict[str, str] = {name: code for code, name in LAYERS.items()}
SUMMARY_LIMIT = 100
STATUSES = ("success", "error", "blocked")
HRMStatus = Literal["success", "error", "blocked"]

_EVENT_KEY = otel_context.create_key("membrane.hrm_event_id")
_LOOKUP: dict[str, tuple[str, str]] = {
    **{code: (code, name) for code, name in LAYERS.items()},
    **{name: (code, name) for code, name in LAYERS.items()},
}


def layer_of(hrm: str) -> tuple[str, str]:
    """``(code, name)`` of a layer given as its short code or long name (any case)."""
    hit = _LOOKUP.get(hrm)
    if hit is None:
        hit = _LOOKUP.get(hrm.strip().lower()) if isinstance(hrm, str) else None
        if hit is None:
            accepted = ", ".join(f"{c}/{n}" for c, n in LAYERS.items())
            raise ValueError(f"unknown HRM layer {hrm!r}: expected one of {accepted}")
    return hit


# Our own generator, so an application's random.seed() cannot make two processes' ids collide.
_rng = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_rng.seed)


def event_id(code: str, *, now: Callable[[], float] = time.time) -> str:
    """The seed's readable id: ``{code}_{unix seconds}_{4 hex}`` (``alt_1705180800_a3f2``)."""
    return f"{code}_{int(now())}_{_rng.getrandbits(16):04x}"


def current_event_id() -> str | None:
    """The readable id of the innermost open HRM span in this context, if any."""
    value = otel_context.get_value(_EVENT_KEY)
    return value if isinstance(value, str) else None
