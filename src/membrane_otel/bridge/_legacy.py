"""The old clients' ``POST /ingest``: a JSON array of ``membrane.inject`` envelopes (``seeds/000``).

Old L2 loggers send envelopes already built, in the ``seeds/000`` form: a routing
``citizen_id`` at the top and no ``scope`` / ``source``. ``seeds/003`` superseded that:
the node id moves into ``metadata.node_id`` and scope and source are filled in, then the
envelope is validated with the one :class:`~membrane_otel.membrane._envelope.Envelope` model.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic import ValidationError

from membrane_otel._internal.tables import iso
from membrane_otel.membrane._envelope import Envelope

__all__ = ["envelope_line", "normalise"]


def normalise(item: Any, *, default_scope: str) -> Envelope:
    """One ``/ingest`` element as a valid envelope; ``ValueError`` names what is wrong."""
    if not isinstance(item, dict):
        raise ValueError("an envelope must be a JSON object")
    data = dict(item)
    metadata = data.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, dict) else metadata
    citizen = data.pop("citizen_id", None)
    if isinstance(metadata, dict):
        if isinstance(citizen, str) and citizen:
            metadata.setdefault("node_id", citizen)
        data["metadata"] = metadata
    if "scope" not in data:
        data["scope"] = default_scope
    if "source" not in data:
        script = metadata.get("script_name") if isinstance(metadata, dict) else None
        data["source"] = f"script:{script}" if script else (citizen or "legacy")
    try:
        return Envelope.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "envelope"
        raise ValueError(f"{where}: {err['msg']}") from None


def envelope_line(env: Envelope) -> dict[str, Any]:
    """An ingested envelope as a flat ledger line, ``event`` first (its signal type)."""
    md = env.metadata
    ns = md.timestamp_ms * 1_000_000
    line: dict[str, Any] = {
        "event": md.signal_type,
        "ts": iso(ns),
        "ts_unix": round(ns / 1e9, 6),
        "otel_trace_id": md.otel_trace_id,
        "otel_span_id": md.otel_span_id,
        "level": md.level or env.severity.upper(),
        "message": env.content,
        "scope": env.scope.value,
        "source": env.source,
        "channel": env.channel,
        "severity": env.severity,
        "features_raw": env.features_raw.model_dump(exclude_none=True),
        "origin": env.origin.value,
    }
    if env.provenance:
        line["provenance"] = env.provenance
    if env.target_nodes:
        line["target_nodes"] = env.target_nodes
    line["metadata"] = md.model_dump(mode="json", exclude_none=True)
    # The stimulus id is the envelope's identity (consumers dedupe by it): a client
    # re-sending a spooled batch gets the same record ids, and the ledger skips them.
    line["record_id"] = "e" + hashlib.sha1(md.stimulus_id.encode(), usedforsecurity=False).hexdigest()[:24]
    return line
