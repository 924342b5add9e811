"""5W1H narratives (``seeds/002``): who did what, when, where, why and how.

    from membrane_otel import narrative
    narrative.log_task_dispatch(dispatcher="htm_orchestrator", task_id="task_12345",
                                task_type="execute_sandbox", target_worker="worker_3",
                                queue_depth=247, selection_method="least_loaded_worker",
                                reasons=["Worker 3 has lowest CPU utilization (23%)"])
    narrative.get_narratives(actor="htm_orchestrator", since=datetime.now() - timedelta(hours=1))

A narrative is recorded twice, from the caller's thread and without waiting on I/O:

* as an event ``narrative.<what>`` on the active span, so it shows on the trace in Jaeger;
* as an OTel log record with ``event_name="narrative.<what>"`` and the attributes
  ``narrative.who/what/when/where/why/how`` (context fields as ``narrative.context.<key>``,
  and ``task_id``/``persona_id``/``session_id`` also under their own names), which the
  ledger exporter writes as one hash-chained line. The chain is the seed's "immutable log";
  :func:`get_narratives` and ``membrane-otel ledger query --actor … --action …`` read it.

Every string is redacted before it is recorded (span events are not seen by the logs
pipeline's redaction, so this module does it itself).

Every call returns the 5W1H dict, awaitable: ``await narrative.log_task_dispatch(...)`` is
the seed's ``await clarity_5w1h.log_task_dispatch(...)``. The async twins (``anarrate``,
``alog_*``) remain; recording only enqueues, so nothing runs in an executor and the active
span, a contextvar, stays the caller's.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry._logs import LoggerProvider, LogRecord, SeverityNumber, get_logger

from membrane_otel._internal.tables import ID_KEYS, attr_value
from membrane_otel.ops._clarity import NarrativeRecord, audit_fields

__all__ = [
    "Narrator",
    "alog_load_shedding",
    "alog_reroute",
    "alog_task_dispatch",
    "anarrate",
    "get_narratives",
    "log_load_shedding",
    "log_reroute",
    "log_task_dispatch",
    "narrate",
]

PREFIX = "narrative."
CONTEXT_PREFIX = "narrative.context."
_NOT_NAME = re.compile(r"[^0-9A-Za-z_.-]+")

Redact = Callable[[Any], Any]


def event_name(what: str) -> str:
    """``narrative.<what>``, with anything but letters, digits, ``_.-`` made ``_``."""
    return PREFIX + (_NOT_NAME.sub("_", what).strip("_") or "unknown")


def _attr(value: Any) -> Any:
    return attr_value(value, sort_keys=True)


def _reasons(why: str | Iterable[str]) -> list[str]:
    if isinstance(why, str):
        return [why]
    return [str(r) for r in why]


def _default_redact() -> Redact:
    from membrane_otel.logs._redact import configured_redactor

    return configured_redactor().redact_value


class Narrator:
    """Records narratives through a logger provider (the global one unless given)."""

    def __init__(
        self,
        *,
        logger_provider: LoggerProvider | None = None,
        redact: Redact | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self._provider = logger_provider
        self._redact = redact
        self._clock_ns = clock_ns

    def narrate(
        self,
        who: str,
        what: str,
        where: str,
        why: str | Sequence[str],
        how: str,
        context: Mapping[str, Any] | None = None,
        **audit: Any,
    ) -> dict[str, Any]:
        """Record one narrative; returns its 5W1H dict (redacted, as recorded), awaitable.

        ``audit`` (``confidence``, ``risk``, ``result``, ``decision_id``) fills the seed's
        Clarity record and immutable-log fields on the same line (:mod:`._clarity`).
        """
        if not isinstance(who, str) or not who:
            raise ValueError("narrative 'who' must be a non-empty string (the actor)")
        if not isinstance(what, str) or not what:
            raise ValueError("narrative 'what' must be a non-empty string (the action)")
        if self._redact is None:
            self._redact = _default_redact()
        redact = self._redact
        now_ns = self._clock_ns()
        when = datetime.fromtimestamp(now_ns / 1e9, tz=UTC).isoformat(timespec="milliseconds")
        ctx = dict(redact(dict(context))) if context else {}
        record = {
            "who": redact(who),
            "what": redact(what),
            "when": when.replace("+00:00", "Z"),
            "where": redact(str(where)),
            "why": redact(_reasons(why)),
            "how": redact(str(how)),
            "context": ctx,
        }
        attrs: dict[str, Any] = {
            f"{PREFIX}{k}": record[k] for k in ("who", "what", "when", "where", "why", "how")
        }
        for key, value in ctx.items():
            attrs[f"{CONTEXT_PREFIX}{key}"] = _attr(value)
            if key in ID_KEYS:
                attrs[key] = _attr(value)
        attrs.update(audit_fields(record, **audit))
        name = event_name(what)
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(name, attributes=attrs, timestamp=now_ns)
        self._logger().emit(
            LogRecord(
                timestamp=now_ns,
                severity_number=SeverityNumber.INFO,
                severity_text="INFO",
                body=_sentence(record),
                attributes=attrs,
                event_name=name,
            )
        )
        return NarrativeRecord(record)

    def _logger(self) -> Any:
        if self._provider is not None:
            return self._provider.get_logger("membrane_otel.ops._narrative")
        from membrane_otel._setup import ensure_configured

        ensure_configured()
        return get_logger("membrane_otel.ops._narrative")

    # -- the seed's specialised narratives ---------------------------------------------------

    def log_task_dispatch(
        self,
        dispatcher: str,
        task_id: str,
        task_type: str,
        target_worker: str,
        queue_depth: int,
        selection_method: str,
        reasons: str | Sequence[str],
    ) -> dict[str, Any]:
        """``dispatcher`` sent ``task_id`` to ``target_worker``, chosen by ``selection_method``."""
        return self.narrate(
            who=dispatcher,
            what="dispatch_task",
            where=target_worker,
            why=reasons,
            how=selection_method,
            context={"task_id": task_id, "task_type": task_type, "queue_depth": queue_depth},
        )

    def log_load_shedding(
        self,
        shedder: str,
        shed_count: int,
        total_load: int,
        shed_criteria: str,
        reasons: str | Sequence[str],
    ) -> dict[str, Any]:
        """``shedder`` dropped ``shed_count`` of ``total_load`` items matching ``shed_criteria``."""
        return self.narrate(
            who=shedder,
            what="shed_load",
            where=shedder,
            why=reasons,
            how=shed_criteria,
            context={"shed_count": shed_count, "total_load": total_load, "shed_criteria": shed_criteria},
        )

    def log_reroute(
        self,
        router: str,
        task_id: str,
        from_target: str,
        to_target: str,
        reroute_reason: str | Sequence[str],
        method: str,
    ) -> dict[str, Any]:
        """``router`` moved ``task_id`` from ``from_target`` to ``to_target`` by ``method``."""
        return self.narrate(
            who=router,
            what="reroute_task",
            where=to_target,
            why=reroute_reason,
            how=method,
            context={"task_id": task_id, "from_target": from_target, "to_target": to_target},
        )


def _sentence(n: Mapping[str, Any]) -> str:
    """The ledger line's readable body: ``who what → where (how): why; why``."""
    why = "; ".join(n["why"])
    return f"{n['who']} {n['what']} → {n['where']} ({n['how']})" + (f": {why}" if why else "")


_default = Narrator()


def narrate(
    who: str,
    what: str,
    where: str,
    why: str | Sequence[str],
    how: str,
    context: Mapping[str, Any] | None = None,
    **audit: Any,
) -> dict[str, Any]:
    """Record a 5W1H narrative on the active span and in the ledger; returns the 5W1H dict."""
    return _default.narrate(who, what, where, why, how, context, **audit)


def log_task_dispatch(
    dispatcher: str,
    task_id: str,
    task_type: str,
    target_worker: str,
    queue_depth: int,
    selection_method: str,
    reasons: str | Sequence[str],
) -> dict[str, Any]:
    """Narrate a task dispatch (action ``dispatch_task``)."""
    return _default.log_task_dispatch(
        dispatcher, task_id, task_type, target_worker, queue_depth, selection_method, reasons
    )


def log_load_shedding(
    shedder: str, shed_count: int, total_load: int, shed_criteria: str, reasons: str | Sequence[str]
) -> dict[str, Any]:
    """Narrate a load-shedding decision (action ``shed_load``)."""
    return _default.log_load_shedding(shedder, shed_count, total_load, shed_criteria, reasons)


def log_reroute(
    router: str,
    task_id: str,
    from_target: str,
    to_target: str,
    reroute_reason: str | Sequence[str],
    method: str,
) -> dict[str, Any]:
    """Narrate a task reroute (action ``reroute_task``)."""
    return _default.log_reroute(router, task_id, from_target, to_target, reroute_reason, method)


async def anarrate(
    who: str,
    what: str,
    where: str,
    why: str | Sequence[str],
    how: str,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Async twin of :func:`narrate`."""
    return narrate(who, what, where, why, how, context)


async def alog_task_dispatch(
    dispatcher: str,
    task_id: str,
    task_type: str,
    target_worker: str,
    queue_depth: int,
    selection_method: str,
    reasons: str | Sequence[str],
) -> dict[str, Any]:
    """Async twin of :func:`log_task_dispatch`."""
    return log_task_dispatch(
        dispatcher, task_id, task_type, target_worker, queue_depth, selection_method, reasons
    )


async def alog_load_shedding(
    shedder: str, shed_count: int, total_load: int, shed_criteria: str, reasons: str | Sequence[str]
) -> dict[str, Any]:
    """Async twin of :func:`log_load_shedding`."""
    return log_load_shedding(shedder, shed_count, total_load, shed_criteria, reasons)


async def alog_reroute(
    router: str,
    task_id: str,
    from_target: str,
    to_target: str,
    reroute_reason: str | Sequence[str],
    method: str,
) -> dict[str, Any]:
    """Async twin of :func:`log_reroute`."""
    return log_reroute(router, task_id, from_target, to_target, reroute_reason, method)


# -- reading them back ---------------------------------------------------------------------------


def _since_unix(since: datetime | float | int | None) -> float | None:
    if since is None:
        return None
    if isinstance(since, datetime):
        return since.timestamp()  # a naive datetime is local time, as datetime.now() gives
    return float(since)


def _context_value(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def from_line(line: Mapping[str, Any]) -> dict[str, Any] | None:
    """The 5W1H dict of a narrative ledger line, or None for any other line."""
    if not str(line.get("event", "")).startswith(PREFIX) or f"{PREFIX}who" not in line:
        return None
    why = line.get(f"{PREFIX}why")
    return {
        "who": line.get(f"{PREFIX}who"),
        "what": line.get(f"{PREFIX}what"),
        "when": line.get(f"{PREFIX}when") or line.get("ts"),
        "where": line.get(f"{PREFIX}where"),
        "why": list(why) if isinstance(why, list) else ([] if why is None else [str(why)]),
        "how": line.get(f"{PREFIX}how"),
        "context": {
            k[len(CONTEXT_PREFIX) :]: _context_value(v)
            for k, v in line.items()
            if k.startswith(CONTEXT_PREFIX)
        },
        "otel_trace_id": line.get("otel_trace_id"),
        "otel_span_id": line.get("otel_span_id"),
        "ts_unix": line.get("ts_unix"),
    }


def get_narratives(
    actor: str | None = None,
    action: str | None = None,
    since: datetime | float | None = None,
    limit: int | None = None,
    ledger_path: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Narratives from the ledger, newest first, filtered by actor (who), action (what), time.

    ``since`` is a ``datetime`` (naive means local time) or unix seconds. Records still in
    the export queue are not in the ledger yet: call ``membrane_otel.force_flush()`` first
    when you need what was narrated a moment ago.
    """
    from membrane_otel.ledger._reader import read_lines

    if ledger_path is None:
        from membrane_otel.settings import get_settings

        ledger_path = get_settings().ledger_path
    floor = _since_unix(since)
    found: list[dict[str, Any]] = []
    # read_lines walks the rotated files too, oldest first: the whole immutable log.
    for line in read_lines(ledger_path):
        n = from_line(line)
        if n is None:
            continue
        if actor is not None and n["who"] != actor:
            continue
        if action is not None and n["what"] != action:
            continue
        ts = n["ts_unix"]
        if floor is not None and (not isinstance(ts, int | float) or ts < floor):
            continue
        found.append(n)
    # Lines are in append order; a stable sort by time keeps append order among equal stamps.
    found.reverse()
    found.sort(key=lambda n: n["ts_unix"] if isinstance(n["ts_unix"], int | float) else 0.0, reverse=True)
    return found if limit is None else found[: max(0, limit)]
