"""THE translation: a span or log record → a ledger line, and → a ``membrane.inject`` envelope.

Written once. The in-process exporters (embedded mode) and the bridge (collector mode)
both call it on the neutral records of :mod:`membrane_otel.translate._records`, so a program
produces the same lines and envelopes either way (ids and times aside).

Producers put everything the translation needs into attributes (``membrane.*``,
``exception.*``, ``code.*``, ``hrm.*``), because attributes are what survives the trip
through OTLP and a Collector.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from opentelemetry.instrumentation.log_utils import std_to_otel

from membrane_otel._internal.tables import (
    ID_KEYS,
    RESERVED,
    SEED_LEVEL_NAMES,
    SEV_ERROR,
    STIMULUS_EVENT,
    iso,
    otel_to_severity,
    severity_to_urgency,
    slug,
    truncate,
)
from membrane_otel.logs._redact_spans import redact_span_data
from membrane_otel.membrane._envelope import CONTENT_LIMIT, PLAIN, SCOPES, Envelope, plain_metadata, wire_dict
from membrane_otel.translate._records import LogData, SpanData
from membrane_otel.translate._shape import put

# Attributes a log line does not copy as payload: the ids have their own keys, the rest is plumbing.
_NOT_PAYLOAD = frozenset(
    (*ID_KEYS, "membrane.record_id", "membrane.l2", "membrane.first_ts_ns", "membrane.last_ts_ns")
)


def otel_severity(py_level: int) -> int:
    """Python logging level → OTel severity number (ERROR → 17), as the logging handler maps it."""
    return std_to_otel(py_level).value


def severity_and_urgency(severity_number: int) -> tuple[str, float]:
    """OTel severity → the seeds' categorical severity and its urgency (ERROR → error, 0.7)."""
    known = _SEVERITIES.get(severity_number)
    if known is None:
        name = otel_to_severity(severity_number)
        known = (name, severity_to_urgency(name))
        if len(_SEVERITIES) < 64:  # a client's odd numbers must not grow it
            _SEVERITIES[severity_number] = known
    return known


_SEVERITIES: dict[int, tuple[str, float]] = {}

# What the translation computes again and again from the same few inputs, remembered
# (bounded: a flood of distinct inputs clears them). The translation runs once per record
# on the bridge's hot path, and a batch repeats its scripts and its timestamps' seconds.
_MEMO_MAX = 4096
_slugs: dict[str, str] = {}
_last_second: tuple[int | None, str] = (None, "")  # the last whole second iso() formatted, and its text


def _slug(text: str) -> str:
    done = _slugs.get(text)
    if done is None:
        if len(_slugs) >= _MEMO_MAX:
            _slugs.clear()
        done = _slugs[text] = slug(text)
    return done


def _iso(ns: int) -> str:
    """``iso(ns)``, formatting each whole second once (records of a batch share most of them)."""
    global _last_second
    seconds, rest = divmod(ns, 1_000_000_000)
    known, head = _last_second  # one read: another thread may swap it meanwhile
    if known != seconds:
        head = iso(seconds * 1_000_000_000)[:-4]  # "…T12:00:00." without "000Z"
        _last_second = (seconds, head)
    return f"{head}{rest // 1_000_000:03d}Z"


# The last resource seen and its digest: every record of one resource block shares one dict,
# so a batch hashes its resource once, not once a record. (A strong reference, so that the
# identity test cannot be fooled by a recycled id.)
_last_resource: tuple[dict[str, Any], str] = ({}, "")


def _resource_digest(resource: dict[str, Any]) -> str:
    global _last_resource
    last = _last_resource  # one read: another thread may swap it meanwhile
    if last[0] is resource:
        return last[1]
    digest = json.dumps(resource, sort_keys=True, default=str)
    _last_resource = (resource, digest)
    return digest


def record_id(record: SpanData | LogData, occurrence: int = 0) -> str:
    """A stable id: the same record replayed or re-delivered gets the same id.

    A log record's id covers its content, its resource and its scope, so the same line
    logged by two services is two records. ``occurrence`` tells identical records of one
    batch apart (the second of two twins is occurrence 1), so a legitimate twin is kept
    while a re-delivery of the whole batch still gets the same ids. A ``membrane.record_id``
    attribute (set by our SDK side) wins; the bridge drops it from unauthenticated clients.
    """
    if isinstance(record, SpanData):
        return f"s{record.trace_id}{record.span_id}"
    rid = record.attributes.get("membrane.record_id")
    if isinstance(rid, str) and rid:
        return rid
    basis = json.dumps(
        [
            record.time_ns,
            record.trace_id,
            record.span_id,
            record.event_name,
            record.severity_number,
            record.body,
            record.attributes,
            record.scope,
            occurrence,
        ],
        sort_keys=True,
        default=str,
    )
    digest = hashlib.sha1(basis.encode(), usedforsecurity=False)
    digest.update(_resource_digest(record.resource).encode())
    return "l" + digest.hexdigest()[:24]


# --------------------------------------------------------------------------- ledger lines


def span_line(span: SpanData) -> dict[str, Any]:
    """A span as a ledger line; HRM spans keep the seed's ``TraceEvent`` fields by name."""
    # Every span, not only HRM ones: third-party instrumentations' http.url, db.statement…
    span = redact_span_data(span)
    a = span.attributes
    hrm = "hrm.layer" in a
    line: dict[str, Any] = {
        "event": "hrm_trace" if hrm else "span",
        "ts": iso(span.start_ns),
        "ts_unix": round(span.start_ns / 1e9, 6),
    }
    for key in ID_KEYS:
        if key in a:
            line[key] = a[key]
    line["otel_trace_id"] = span.trace_id
    line["otel_span_id"] = span.span_id
    line["otel_parent_span_id"] = span.parent_span_id
    duration_ms = round((span.end_ns - span.start_ns) / 1e6)  # an int, as the seed's TraceEvent
    metadata = {k[len("hrm.meta.") :]: v for k, v in a.items() if k.startswith("hrm.meta.")}
    if hrm:
        line.update(
            trace_id=a.get("hrm.event_id"),
            parent_id=a.get("hrm.parent_event_id"),
            timestamp=line["ts"],
            hrm_layer=a.get("hrm.layer"),
            operation=a.get("hrm.operation"),
            component=a.get("hrm.component", ""),
            input_summary=a.get("hrm.input_summary", ""),
            output_summary=a.get("hrm.output_summary", ""),
            duration_ms=duration_ms,
            status=a.get("hrm.status", "error" if span.status == "error" else "success"),
        )
    else:
        metadata.update({k: v for k, v in a.items() if not k.startswith("hrm.") and k not in ID_KEYS})
        line.update(
            name=span.name, duration_ms=duration_ms, status="error" if span.status == "error" else "success"
        )
    if span.status == "error" and span.status_message:
        metadata.setdefault("error", span.status_message)
    for ev in span.events:
        if ev.name == "exception":
            metadata.setdefault("error_type", ev.attributes.get("exception.type"))
            metadata.setdefault("error", ev.attributes.get("exception.message"))
    line["metadata"] = metadata
    line["name"] = span.name
    line["service"] = span.resource.get("service.name")
    line["record_id"] = record_id(span)
    return line


def log_line(log: LogData) -> dict[str, Any]:
    """A log record (error, ledger event, narrative, stimulus) as a flat ledger line."""
    a = log.attributes
    if log.event_name:
        event = log.event_name
    else:
        event = "script_error" if log.severity_number >= SEV_ERROR else "log"
    line: dict[str, Any] = {"event": event, "ts": _iso(log.time_ns), "ts_unix": round(log.time_ns / 1e9, 6)}
    for key in ID_KEYS:
        if key in a:
            line[key] = a[key]
    line["otel_trace_id"] = log.trace_id
    line["otel_span_id"] = log.span_id
    if not log.event_name:
        text = log.severity_text or severity_and_urgency(log.severity_number)[0].upper()
        line["level"] = SEED_LEVEL_NAMES.get(text, text)  # the seeds' CRITICAL/WARNING, not FATAL/WARN
        line["message"] = log.body if isinstance(log.body, str) else json.dumps(log.body, default=str)
        if event == "script_error":
            # How many identical errors this line stands for (logs/_coalesce.py), and when.
            line["occurrences"] = occurrences(log)
            first, last = a.get("membrane.first_ts_ns"), a.get("membrane.last_ts_ns")
            line["first_ts"] = _iso(int(first)) if first else line["ts"]
            line["last_ts"] = _iso(int(last)) if last else line["ts"]
    elif log.body not in (None, ""):
        put(line, "body", log.body)
    # The payload: every attribute but plumbing, under its own name unless the line owns it.
    plan = _payload_plan(tuple(line), tuple(a))
    if plan[0]:
        line.update(zip(plan[1], map(a.__getitem__, plan[0]), strict=True))
    line["service"] = log.resource.get("service.name")
    line["record_id"] = record_id(log)
    return line


# (the line's keys so far, the attribute keys) → (attributes copied, the keys they go under)
_plans: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _payload_plan(
    line_keys: tuple[str, ...], attr_keys: tuple[str, ...]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Which attributes a line copies, and under which keys: worked out once per shape (the
    records of a producer share their keys), then applied with one ``dict.update``."""
    cache_key = (line_keys, attr_keys)
    plan = _plans.get(cache_key)
    if plan is None:
        taken = set(line_keys)
        pairs = []
        for key in attr_keys:
            if key in _NOT_PAYLOAD or key == "membrane.occurrences":
                continue
            # Never overwrite the line's own fields (nor one an earlier attribute took).
            dst = f"payload_{key}" if key in taken or key == "service" or key in RESERVED else key
            taken.add(dst)
            pairs.append((key, dst))
        plan = (tuple(k for k, _ in pairs), tuple(d for _, d in pairs))
        if len(_plans) >= _MEMO_MAX:
            _plans.clear()
        _plans[cache_key] = plan
    return plan


def occurrences(log: LogData) -> int:
    """How many errors a record stands for: ≥ 1 (identical errors are coalesced into one)."""
    n = log.attributes.get("membrane.occurrences", 1)
    return n if isinstance(n, int) and n >= 1 else 1


# --------------------------------------------------------------------------- envelopes


def wants_envelope(log: LogData, l2_level_otel: int) -> bool:
    """Only records meant for the membrane: stimuli (incl. metrics) and errors at/above L2."""
    if log.event_name == STIMULUS_EVENT:
        return True
    if log.event_name:
        return False
    if log.attributes.get("membrane.l2") is True:
        return True
    return log.severity_number >= l2_level_otel


def log_envelope(log: LogData, *, default_scope: str = "organizational") -> Envelope:
    """The ``membrane.inject`` envelope of an error record or a stimulus record."""
    return Envelope(**_envelope_fields(log, default_scope))


def log_envelope_wire(
    log: LogData, *, default_scope: str = "organizational", legacy: bool = False
) -> dict[str, Any]:
    """``log_envelope(log).to_json_dict(legacy=legacy)``, the same dict, without the model's
    round trip when the record's values need no validation (the bridge's hot path: see
    :func:`~membrane_otel.membrane._envelope.wire_dict`). Raises ValidationError alike."""
    if log.event_name == STIMULUS_EVENT:
        fields = _envelope_fields(log, default_scope)
    else:
        fields = _error_fields(log, default_scope)
        md = fields["metadata"]
        # What an error's fields can hold that the model would coerce or refuse comes from
        # the client's attributes (the rest the translation itself makes valid): checked
        # here, so that the wire dict is the fields in order (as wire_dict would make it).
        if (
            type(fields["scope"]) is str
            and fields["scope"] in SCOPES
            and fields["source"]
            and fields["channel"]
            and type(fields["provenance"]["service"]) in PLAIN
            and plain_metadata(md)
        ):
            if legacy:
                citizen = md.get("node_id") or f"code_substrate_{fields['source']}"
                return {"type": "membrane.inject", "citizen_id": citizen, **fields}
            return {"type": "membrane.inject", **fields}
    data = wire_dict(fields, legacy=legacy)
    return data if data is not None else Envelope(**fields).to_json_dict(legacy=legacy)


def _envelope_fields(log: LogData, default_scope: str) -> dict[str, Any]:
    """The keyword arguments of the envelope of ``log``."""
    a = log.attributes
    rid = record_id(log)
    ts_ms = log.time_ns // 1_000_000
    body = log.body if isinstance(log.body, str) else json.dumps(log.body, default=str)
    if log.event_name == STIMULUS_EVENT:
        features = {
            k[len("membrane.features.") :]: v for k, v in a.items() if k.startswith("membrane.features.")
        }
        provenance = a.get("membrane.provenance") or {}
        if isinstance(provenance, str):
            try:
                provenance = json.loads(provenance)
            except json.JSONDecodeError:
                provenance = {"raw": provenance}
        extra = a.get("membrane.metadata") or {}
        if isinstance(extra, str):
            try:
                extra = json.loads(extra)
            except json.JSONDecodeError:
                extra = {"raw": extra}
        signal_type = str(a.get("membrane.signal_type", "stimulus"))
        metadata: dict[str, Any] = {
            **(extra if isinstance(extra, dict) else {}),
            "stimulus_id": str(a.get("membrane.stimulus_id") or f"{signal_type}_{ts_ms}_{rid[-12:]}"),
            "origin": str(a.get("membrane.origin_tag", "stimuli_sdk")),
            "timestamp_ms": ts_ms,
            "signal_type": signal_type,
        }
        for src, dst in (
            ("membrane.dedupe_key", "dedupe_key"),
            ("membrane.fingerprint", "stack_fingerprint"),
        ):
            if src in a:
                metadata[dst] = a[src]
        severity = a.get("membrane.severity") or severity_and_urgency(log.severity_number)[0]
        target = a.get("membrane.target_nodes")
        fields: dict[str, Any] = dict(
            scope=a.get("membrane.scope", default_scope),
            source=a.get("membrane.source", "unknown"),
            channel=a.get("membrane.channel", "signals.stimulus"),
            content=truncate(body, CONTENT_LIMIT, marker="..."),
            severity=severity,
            features_raw=features,
            origin=a.get("membrane.origin", "internal"),
            provenance=provenance if isinstance(provenance, dict) else {"value": provenance},
            target_nodes=list(target) if target else None,
            metadata=metadata,
        )
    else:
        return _error_fields(log, default_scope)
    if log.trace_id:
        fields["metadata"] = {
            **fields["metadata"],
            "otel_trace_id": log.trace_id,
            "otel_span_id": log.span_id,
        }
    return fields


def _error_fields(log: LogData, default_scope: str) -> dict[str, Any]:
    """The keyword arguments of the envelope of an error record, in the wire's order, every
    value the translation makes itself of its declared type (see :func:`log_envelope_wire`)."""
    a = log.attributes
    rid = record_id(log)
    ts_ms = log.time_ns // 1_000_000
    body = log.body if isinstance(log.body, str) else json.dumps(log.body, default=str)
    severity, urgency = severity_and_urgency(log.severity_number)
    script = str(a.get("membrane.script_name") or log.resource.get("service.name") or log.scope or "app")
    content = f"{script}: {body}"
    metadata = {
        "stimulus_id": f"script_log_{_slug(script)}_{ts_ms}_{rid[-12:]}",
        "origin": "script_logger",
        "timestamp_ms": ts_ms,
        "signal_type": str(a.get("membrane.signal_type", "script_error")),
        "dedupe_key": a.get("membrane.dedupe_key"),
        "stack_fingerprint": a.get("membrane.fingerprint"),
        "script_name": script,
        "script_path": a.get("membrane.script_path") or a.get("code.file.path"),
        "module": a.get("code.namespace"),
        "function": a.get("code.function") or a.get("code.function.name"),
        "line": a.get("code.lineno") or a.get("code.line.number"),
        "level": SEED_LEVEL_NAMES.get(log.severity_text or "", log.severity_text),
        "error_type": a.get("exception.type"),
        "stack_trace": a.get("exception.stacktrace"),
        "node_id": a.get("membrane.node_id"),
        "otel_trace_id": log.trace_id,
        "otel_span_id": log.span_id,
        "occurrences": occurrences(log),
    }
    return {
        "scope": a.get("membrane.scope", default_scope),
        "source": str(a.get("membrane.source") or f"script:{script}"),
        "channel": str(a.get("membrane.channel") or f"signals.script.{_slug(script)}"),
        "content": content
        if len(content) <= CONTENT_LIMIT
        else truncate(content, CONTENT_LIMIT, marker="..."),
        "severity": severity,
        "features_raw": {"urgency": urgency, "novelty": 0.25, "trust": 0.9},
        "origin": "internal",
        "provenance": {"service": log.resource.get("service.name"), "logger": log.scope},
        "metadata": {k: v for k, v in metadata.items() if v is not None},
    }
