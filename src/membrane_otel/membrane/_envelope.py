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
    # How many identical errors this envelope stands for (coalesced before the expensive work).
    # Declared last, where it stood as an extra key, so the wire JSON keeps its order.
    occurrences: int | None = Field(None, ge=1)


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


# -- the wire form without the model ---------------------------------------------------
# Validating the model and dumping it again cost the bridge ~40 µs an envelope, a quarter
# of its ingest CPU above the bare decode (issue 13). When every value is already of the
# exact type the model declares, within its bounds (what the translation makes of a
# well-formed error record), validation could only pass it unchanged and the dump only
# copy it: :func:`wire_dict` writes that same dict, same keys in the same order. Anything
# else (a client's int where a str is declared, a bool line number, an unknown scope, a
# metadata key not declared) gives None, and the caller builds the model, which coerces
# or refuses as it always did.

_NONE = type(None)
_INT_FIELDS = ("timestamp_ms", "line", "held_back", "held_back_fingerprint", "occurrences")
# Declared metadata key → (its place in the declared order, the exact types taken as they are).
_METADATA: dict[str, tuple[int, tuple[type, ...]]] = {
    name: (i, (int, _NONE) if name in _INT_FIELDS else (str, _NONE))
    for i, name in enumerate(EnvelopeMetadata.model_fields)
}
_REQUIRED_METADATA = ("stimulus_id", "origin", "timestamp_ms", "signal_type")
_FEATURES = ("urgency", "novelty", "trust")
SCOPES = _SCOPES = frozenset(s.value for s in Scope)
_ORIGINS = frozenset(o.value for o in OriginType)
_SEVERITIES = frozenset(("info", "warn", "error", "critical"))
PLAIN = _PLAIN = frozenset((str, int, bool, _NONE))  # what the JSON dump leaves as it is


_Plan = tuple[tuple[str, ...], bool]  # the int-valued keys (checked ≥ 0), whether any is None
_md_plans: dict[tuple[tuple[str, ...], tuple[type, ...]], _Plan | None] = {}
_UNSEEN: Any = object()


def _metadata_plan(keys: tuple[str, ...], types: tuple[type, ...]) -> _Plan | None:
    """What a metadata dict of these keys holding values of these types needs checked, or
    None when the model must see it. The same keys and types come again and again."""
    last = -1
    ints = []
    present = set()
    for name, kind in zip(keys, types, strict=True):
        spec = _METADATA.get(name)
        if spec is None:
            return None  # an extra key: the model puts extras after the declared ones
        if kind is _NONE:
            continue  # exclude_none
        place, allowed = spec
        if kind not in allowed or place < last:
            return None  # to coerce, refuse, or put in the declared order: the model's job
        last = place
        present.add(name)
        if kind is int:
            ints.append(name)
    if not present.issuperset(_REQUIRED_METADATA):
        return None
    return tuple(ints), _NONE in types


def _metadata_checked(md: dict[str, Any]) -> _Plan | None:
    """The plan of a metadata dict when its values pass it, else None."""
    shape = (tuple(md), tuple(map(type, md.values())))
    plan: _Plan | None = _md_plans.get(shape, _UNSEEN)
    if plan is _UNSEEN:
        plan = _metadata_plan(*shape)
        if len(_md_plans) >= 1024:  # a flood of odd shapes must not grow it
            _md_plans.clear()
        _md_plans[shape] = plan
    if plan is None:
        return None
    for name in plan[0]:
        if md[name] < 0:
            return None
    if not (md["stimulus_id"] and md["origin"] and md["signal_type"]):
        return None  # required, and not empty (min_length=1 / the model's checks)
    return plan


def plain_metadata(md: dict[str, Any]) -> bool:
    """True when the model would dump ``md`` (no None values) as it is, same keys, same order."""
    plan = _metadata_checked(md)
    return plan is not None and not plan[1]


def _plain_metadata(md: Any) -> dict[str, Any] | None:
    if type(md) is not dict:
        return None
    plan = _metadata_checked(md)
    if plan is None:
        return None
    return {k: v for k, v in md.items() if v is not None} if plan[1] else dict(md)


def wire_dict(fields: dict[str, Any], *, legacy: bool = False) -> dict[str, Any] | None:
    """``Envelope(**fields).to_json_dict(legacy=legacy)`` for fields that need no validation
    (see above), else None. Every check is on exact types: this runs once per envelope."""
    if not fields.keys() <= _FIELD_NAMES:
        return None
    scope, source, channel = fields.get("scope"), fields.get("source"), fields.get("channel")
    content, origin = fields.get("content"), fields.get("origin", "internal")
    features, provenance = fields.get("features_raw"), fields.get("provenance", {})
    if not (
        type(scope) is str
        and scope in _SCOPES
        and type(source) is str
        and source
        and type(channel) is str
        and channel
        and type(content) is str
        and len(content) <= CONTENT_LIMIT
        and fields.get("severity") in _SEVERITIES
        and type(origin) is str
        and origin in _ORIGINS
        and fields.get("target_nodes") is None
        and type(features) is dict
        and type(provenance) is dict
    ):
        return None
    feats = {}
    for name in _FEATURES:
        value = features.get(name, 0.5)
        if type(value) is not float or not 0.0 <= value <= 1.0:
            return None
        feats[name] = value
    if len(features) != sum(1 for k in _FEATURES if k in features):
        return None  # an optional feature: the model's job
    for key, value in provenance.items():
        if type(key) is not str or type(value) not in _PLAIN:
            return None
    metadata = _plain_metadata(fields.get("metadata"))
    if metadata is None:
        return None
    data: dict[str, Any] = {"type": "membrane.inject"}
    if legacy:
        data["citizen_id"] = metadata.get("node_id") or f"code_substrate_{source}"
    data["scope"] = scope
    data["source"] = source
    data["channel"] = channel
    data["content"] = content
    data["severity"] = fields["severity"]
    data["features_raw"] = feats
    data["origin"] = origin
    data["provenance"] = dict(provenance)
    data["metadata"] = metadata
    return data


_FIELD_NAMES = frozenset(Envelope.model_fields) - {"type"}


def with_metadata(data: dict[str, Any], **values: Any) -> None:
    """Set metadata keys of a wire dict in place, keeping the model's key order (declared
    fields first, in their order, then the extras), as setting them on the model would."""
    md = {**data["metadata"], **values}
    ordered = {k: md[k] for k in EnvelopeMetadata.model_fields if md.get(k) is not None}
    ordered.update(
        (k, v) for k, v in md.items() if k not in ordered and k not in EnvelopeMetadata.model_fields
    )
    data["metadata"] = ordered
