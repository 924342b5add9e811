"""The seed's two other shapes of a 5W1H narrative (``seeds/002``), on the same ledger line.

``seeds/002`` logs each dispatch three times: the 5W1H narrative, a Clarity Framework record
(``decision_id``, ``actor``, ``action``, ``reasoning_chain``, ``transparency_level``,
``confidence``, ``risk``) and an immutable-log entry (``actor``, ``action``, ``resource``,
``result``, ``metadata``). Here one hash-chained ledger line carries all three: the
``narrative.*`` fields, and these flat fields beside them.

A narrative call returns a :class:`NarrativeRecord`: the 5W1H dict, which can also be
awaited, so the seed's ``await clarity_5w1h.log_task_dispatch(...)`` works as written
(recording only enqueues; awaiting returns at once with the same dict).
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Mapping
from typing import Any

# The immutable log's `result` for the seed's specialised narratives.
RESULTS = {"dispatch_task": "dispatched", "shed_load": "shed", "reroute_task": "rerouted"}


class NarrativeRecord(dict[str, Any]):
    """The recorded 5W1H dict; ``await`` it where the seed awaits (it is already recorded)."""

    def __await__(self) -> Generator[Any, None, NarrativeRecord]:
        return self._ready().__await__()

    async def _ready(self) -> NarrativeRecord:
        return self


def audit_fields(
    record: Mapping[str, Any],
    *,
    confidence: float = 0.9,
    risk: float = 0.1,
    result: str | None = None,
    decision_id: str | None = None,
) -> dict[str, Any]:
    """The Clarity record and immutable-log fields of one narrative, as log attributes."""
    if not 0.0 <= confidence <= 1.0 or not 0.0 <= risk <= 1.0:
        raise ValueError(f"confidence and risk must be within 0..1, got {confidence} and {risk}")
    context = record.get("context") or {}
    return {
        "decision_id": decision_id or f"decision_{os.urandom(6).hex()}",
        "actor": record["who"],
        "action": record["what"],
        "reasoning_chain": list(record["why"]),
        "transparency_level": "COMPLETE",
        "confidence": float(confidence),
        "risk": float(risk),
        "resource": record["where"],
        "result": result or RESULTS.get(record["what"], "recorded"),
        # An attribute holds no mapping: the seed's `metadata` object is its JSON text.
        "metadata": json.dumps({**context, "method": record["how"]}, default=str, sort_keys=True),
    }
