"""The membrane stimuli SDK of ``seeds/003`` (the seed's ``orchestration.libs.stimuli``).

    from membrane_otel.membrane._stimuli import emit_script_error, Scope
    emit_script_error(source="script:my_script", error_message="Operation failed",
                      scope=Scope.ORGANIZATIONAL, exc_info=sys.exc_info())

Clients carry ``scope`` and ``source``, never a routing ``citizen_id`` (physics routes).
Each call validates its arguments at once — a bad scope or a feature outside its range is a
``pydantic.ValidationError`` here, not a broken envelope downstream (valence is signed,
-1..1: see ``StimulusFeatures``) — then emits one OTel
log record (``event_name="membrane.stimulus"``) carrying everything as attributes. The
logs pipeline turns it into a ledger line and, through the one translation, into the
``membrane.inject`` envelope the bus receives. Building and enqueueing is all the caller
pays; redaction runs before the record is queued.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

from opentelemetry._logs import LogRecord, SeverityNumber, get_logger

from membrane_otel._internal.tables import OTEL_SEVERITY, truncate
from membrane_otel.logs._errors import slug
from membrane_otel.membrane._envelope import CONTENT_LIMIT, OriginType, Scope, StimulusFeatures

__all__ = [
    "MembraneEmitter",
    "OriginType",
    "Scope",
    "StimulusFeatures",
    "emit_metric",
    "emit_script_error",
    "emit_tool_result",
    "emit_ui_action",
    "get_metrics",
]

_SEVERITIES = ("info", "warn", "error", "critical")  # the envelope's categories
ExcInfo = tuple[type[BaseException] | None, BaseException | None, TracebackType | None]


def _clip(text: str) -> str:
    return truncate(text, CONTENT_LIMIT, marker="...")


class MembraneEmitter:
    """Emits stimuli for one source identity (``script:…``, ``service:…``, ``ui:…``, ``tool:…``)."""

    def __init__(self, source_id: str) -> None:
        if not source_id or not isinstance(source_id, str):
            raise ValueError("source_id must be a non-empty string such as 'script:my_script'")
        self.source_id = source_id

    def emit(
        self,
        scope: Scope | str,
        channel: str,
        content: str,
        features: StimulusFeatures | Mapping[str, float],
        origin: OriginType | str = OriginType.EXTERNAL,
        provenance: Mapping[str, Any] | None = None,
        target_nodes: Sequence[str] | None = None,
        *,
        severity: str = "info",
        signal_type: str = "stimulus",
        metadata: Mapping[str, Any] | None = None,
        fingerprint: str | None = None,
        dedupe_key: str | None = None,
    ) -> str:
        """Emit one stimulus; returns its ``stimulus_id``. Invalid values raise at once."""
        scope_v = Scope(scope)
        origin_v = OriginType(origin)
        feats = features if isinstance(features, StimulusFeatures) else StimulusFeatures(**features)
        if severity not in _SEVERITIES:
            raise ValueError(f"unknown severity {severity!r}: expected info, warn, error or critical")
        if not channel:
            raise ValueError("channel must be a non-empty string such as 'org.intent'")
        ts_ms = time.time_ns() // 1_000_000
        stimulus_id = f"{signal_type}_{slug(self.source_id)}_{ts_ms}_{os.urandom(3).hex()}"
        attrs: dict[str, Any] = {
            "membrane.stimulus_id": stimulus_id,
            "membrane.signal_type": signal_type,
            "membrane.scope": scope_v.value,
            "membrane.source": self.source_id,
            "membrane.channel": channel,
            "membrane.origin": origin_v.value,
            "membrane.severity": severity,
        }
        for name, value in feats.model_dump(exclude_none=True).items():
            attrs[f"membrane.features.{name}"] = float(value)
        if provenance:
            attrs["membrane.provenance"] = dict(provenance)
        if target_nodes:
            attrs["membrane.target_nodes"] = [str(n) for n in target_nodes]
        if metadata:
            attrs["membrane.metadata"] = dict(metadata)
        if fingerprint:
            attrs["membrane.fingerprint"] = fingerprint
        if dedupe_key:
            attrs["membrane.dedupe_key"] = dedupe_key
        _emit_record(_clip(str(content)), severity, attrs)
        return stimulus_id


def _emit_record(body: str, severity: str, attrs: dict[str, Any]) -> None:
    from membrane_otel._setup import ensure_configured

    ensure_configured()
    number, text = OTEL_SEVERITY[severity]
    get_logger("membrane_otel.membrane._stimuli").emit(
        LogRecord(
            timestamp=time.time_ns(),
            severity_number=SeverityNumber(number),
            severity_text=text,
            body=body,
            attributes=attrs,
            event_name="membrane.stimulus",
        )
    )


def emit_script_error(
    source: str,
    error_message: str,
    scope: Scope | str = Scope.ORGANIZATIONAL,
    exc_info: ExcInfo | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """A script error as a stimulus: fingerprinted, redacted, truncated, with a dedupe key."""
    from membrane_otel.logs._errors import (
        capture_frames,
        dedupe_key,
        render_stack,
        stack_fingerprint,
        truncate_stack,
    )
    from membrane_otel.logs._redact import redact_secrets

    message = redact_secrets(error_message)
    script = source.split(":", 1)[-1]
    md: dict[str, Any] = dict(metadata or {})
    error_type = "Error"
    if exc_info is not None and exc_info[0] is not None:
        error_type = exc_info[0].__name__
        frames = capture_frames(exc_info[2])
        fingerprint = stack_fingerprint(frames=[(f, fn) for f, _, fn in frames])
        text = render_stack(error_type, str(exc_info[1]) if exc_info[1] is not None else "", frames)
        md["stack_trace"] = truncate_stack(redact_secrets(text))
        if frames:
            md.setdefault("function", frames[-1][2])
            md.setdefault("line", frames[-1][1])
    else:
        import sys

        f = sys._getframe(1)
        fingerprint = stack_fingerprint(frames=[(f.f_code.co_filename, f.f_code.co_name)])
    md.update(error_type=error_type, script_name=script, level="ERROR")
    key = dedupe_key(script, error_type, message, fingerprint)
    return MembraneEmitter(source).emit(
        scope=scope,
        channel=f"signals.script.{slug(script)}",
        content=f"{script}: {message}",
        features=StimulusFeatures(urgency=0.7, novelty=0.25, trust=0.9),
        origin=OriginType.INTERNAL,
        provenance={"source": source},
        severity="error",
        signal_type="script_error",
        metadata=md,
        fingerprint=fingerprint,
        dedupe_key=key,
    )


def emit_metric(
    source: str,
    metric_name: str,
    value: float,
    scope: Scope | str = Scope.ORGANIZATIONAL,
    tags: Mapping[str, str] | None = None,
) -> str:
    """A metric as a stimulus and as an OTel metric data point (a gauge)."""
    from opentelemetry import metrics

    gauge = metrics.get_meter("membrane_otel.membrane._stimuli").create_gauge(metric_name)
    gauge.set(float(value), attributes=dict(tags or {}))
    return MembraneEmitter(source).emit(
        scope=scope,
        channel=f"metrics.{metric_name}",
        content=f"{metric_name}={value}",
        features=StimulusFeatures(urgency=0.2, novelty=0.3, trust=0.9),
        origin=OriginType.INTERNAL,
        provenance={"source": source, **({"tags": dict(tags)} if tags else {})},
        signal_type="metric",
        metadata={
            "metric_name": metric_name,
            "value": float(value),
            **({"tags": dict(tags)} if tags else {}),
        },
    )


def emit_ui_action(
    action_type: str,
    description: str,
    scope: Scope | str = Scope.PERSONAL,
    citizen_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> str:
    """A UI interaction. ``citizen_id`` is provenance only, never routing."""
    provenance: dict[str, Any] = {"action_type": action_type}
    if citizen_id:
        provenance["citizen_id"] = citizen_id
    return MembraneEmitter(f"ui:{action_type}").emit(
        scope=scope,
        channel=f"ui.{action_type}",
        content=description,
        features=StimulusFeatures(urgency=0.5, novelty=0.5, trust=0.8),
        origin=OriginType.USER,
        provenance=provenance,
        signal_type="ui_action",
        metadata=dict(metadata or {}),
    )


def emit_tool_result(
    tool_id: str,
    request_id: str,
    success: bool,
    result: Any,
    scope: Scope | str = Scope.PERSONAL,
    citizen_id: str | None = None,
    execution_time_ms: float | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> str:
    """A tool's result; failures carry warn severity and higher urgency."""
    import json

    prov: dict[str, Any] = {"tool_id": tool_id, "request_id": request_id, **(provenance or {})}
    if citizen_id:
        prov["citizen_id"] = citizen_id
    md: dict[str, Any] = {"request_id": request_id, "success": success}
    if execution_time_ms is not None:
        md["execution_time_ms"] = float(execution_time_ms)
    summary = result if isinstance(result, str) else json.dumps(result, default=str, ensure_ascii=False)
    return MembraneEmitter(f"tool:{tool_id}").emit(
        scope=scope,
        channel=f"tool.{tool_id}.result",
        content=f"{tool_id} {'succeeded' if success else 'failed'}: {summary}",
        features=StimulusFeatures(urgency=0.3 if success else 0.6, novelty=0.4, trust=0.9),
        origin=OriginType.INTERNAL,
        provenance=prov,
        severity="info" if success else "warn",
        signal_type="tool_result",
        metadata=md,
    )


def get_metrics() -> dict[str, int]:
    """The seed's ``get_metrics()``: ``dropped_count``, ``spool_writes``, ``published``, …"""
    from membrane_otel._internal.counters import get_metrics as _get

    return _get()
