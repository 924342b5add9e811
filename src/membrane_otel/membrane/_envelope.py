"""The ``membrane.inject`` envelope and its parts, field for field as the seeds show them.

``seeds/003`` supersedes ``seeds/000`` on routing: an envelope carries ``scope`` and
``source``, never a routing ``citizen_id``; the graph attribution node id
(``code_substrate_…``) stays in ``metadata.node_id``. :meth:`Envelope.to_json_dict` with
``legacy=True`` emits the ``seeds/000`` form (top-level ``citizen_id``) for old consumers.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from membrane_otel._internal.tables import CONTENT_MAX_CHARS

CONTENT_LIMIT = CONTENT_MAX_CHARS


class Scope(StrEnum):
    """Level targeting: engines self-select by scope (``seeds/003``)."""

    PERSONAL = "personal"  # L1: one citizen's consciousness
    ORGANIZATIONAL = "organizational"  # L2: collective
    ECOSYSTEM = "ecosystem"  # L3: public ecosystem


class OriginType(StrEnum):
    """Where a stimulus comes from, as the integrator weighs it."""

    EXTERNAL = "external"
    INTERNAL = "internal"
    SELF = "self"
    USER = "user"
    SYSTEM = "system"


Severity = Literal["info", "warn", "error", "critical"]

_unit = Field(ge=0.0, le=1.0)


class StimulusFeatures(BaseModel):
    """The seven stimulus features. Error envelopes carry the first three.

    Each is in 0..1 except ``valence``, which is signed, -1..1 (negative to positive):
    ``seeds/003`` calls ``valence=0.3`` "Positive (awakening)", which only a scale centred
    on 0 makes true (on 0..1, 0.3 would sit below neutral 0.5).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    urgency: float = Field(0.5, ge=0.0, le=1.0)
    novelty: float = Field(0.5, ge=0.0, le=1.0)
    trust: float = Field(0.5, ge=0.0, le=1.0)
    uncertainty: float | None = Field(None, ge=0.0, le=1.0)
    valence: float | None = Field(None, ge=-1.0, le=1.0)
    scale: float | None = Field(None, ge=0.0, le=1.0)
    intensity: float | None = Field(None, ge=0.0, le=1.0)


class EnvelopeMetadata(BaseModel):
    """``metadata`` of an envelope: the seeds' keys, plus OTel ids for Jaeger correlation."""

    model_config = ConfigDict(extra="allow")

    stimulus_id: str = Field(min_length=1)
    origin: str
    timestamp_ms: int = Field(ge=0)
    signal_type: str
    dedupe_key: str | None = None
    stack_fingerprint: str | None = None
    script_name: str | None = None
    script_path: str | None = None
    module: str | None = None
    function: str | None = None
    line: int | None = None
    level: str | None = None
    error_type: str | None = None
    stack_trace: str | None = None
    node_id: str | None = None
    held_back: int | None = Field(None, ge=0)
    held_back_fingerprint: int | None = Field(None, ge=0)
    otel_trace_id: str | None = None
    otel_span_id: str | None = None


class Envelope(BaseModel):
    """A ``membrane.inject`` envelope."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["membrane.inject"] = "membrane.inject"
    scope: Scope
    source: str = Field(min_length=1)
    channel: str = Field(min_length=1)
    content: str = Field(max_length=CONTENT_LIMIT)
    severity: Severity
    features_raw: StimulusFeatures
    origin: OriginType = OriginType.INTERNAL
    provenance: dict[str, Any] = Field(default_factory=dict)
    target_nodes: list[str] | None = None
    metadata: EnvelopeMetadata

    def to_json_dict(self, *, legacy: bool = False) -> dict[str, Any]:
        """The wire form. ``legacy`` adds the ``seeds/000`` top-level ``citizen_id``."""
        data = self.model_dump(mode="json", exclude_none=True)
        if legacy:
            node = self.metadata.node_id or f"code_substrate_{self.source}"
            data = {"type": data.pop("type"), "citizen_id": node, **data}
        return data
