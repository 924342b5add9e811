"""HRM tracing (``seeds/004``) on real OTel spans.

``tracer.span("alt", "transition", "altitude.py", "L3→L2")`` opens a span named
``altitude.transition`` with the ``hrm.*`` attributes; nesting follows the OTel context
(contextvars), so it is right across threads and asyncio tasks, unlike the seed's shared
list stack. The seed's readable event id (``alt_1705180800_a3f2``) travels in the same
context, so a child knows its HRM parent's id even with non-HRM spans in between.

Off (the default; ``MEMBRANE_TRACE=1`` turns it on) costs one attribute check: ``span()``
returns a shared no-op context manager and allocates nothing.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import time
import traceback
from collections.abc import Callable
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

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
HRMStatus = Literal["success", "error", "blocked"]
_EVENT_KEY = otel_context.create_key("membrane.hrm_event_id")

P = ParamSpec("P")
R = TypeVar("R")


def layer_of(hrm: str) -> tuple[str, str]:
    """``(code, name)`` of a layer given as its short code or long name."""
    key = hrm.strip().lower()
    if key in LAYERS:
        return key, LAYERS[key]
    if key in CODES:
        return CODES[key], key
    accepted = ", ".join(f"{c}/{n}" for c, n in LAYERS.items())
    raise ValueError(f"unknown HRM layer {hrm!r}: expected one of {accepted}")


_redactors: tuple[Callable[[str], str], Callable[[Any], Any]] | None = None


def _scrubbers() -> tuple[Callable[[str], str], Callable[[Any], Any]]:
    """The redaction functions, imported once on first traced call (not at import time)."""
    global _redactors
    if _redactors is None:
        from membrane_otel.redact import redact_secrets, redact_value

        _redactors = (redact_secrets, redact_value)
    return _redactors


def _summary(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    # Redact before truncating, so the scrubber sees the whole secret.
    text = _scrubbers()[0](text)
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"


def _attr(value: Any) -> Any:
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str | bool | int | float) for v in value):
        return list(value)
    return json.dumps(value, default=str, ensure_ascii=False)


def event_id(code: str) -> str:
    """The seed's readable id: ``{code}_{unix seconds}_{4 hex}``."""
    return f"{code}_{int(time.time())}_{os.urandom(2).hex()}"


def current_event_id() -> str | None:
    """The readable id of the innermost open HRM span, if any."""
    value = otel_context.get_value(_EVENT_KEY)
    return value if isinstance(value, str) else None


class TraceContext:
    """What ``tracer.span`` yields: set the output summary, metadata, or ``blocked``."""

    __slots__ = ("_span", "output", "status", "trace_id")

    def __init__(self, span: Span, trace_id: str) -> None:
        self._span = span
        self.trace_id = trace_id
        self.output: str = ""
        self.status: HRMStatus | None = None

    def set_output(self, output: Any, **metadata: Any) -> None:
        self.output = _summary(output)
        self.set_metadata(**metadata)

    def set_metadata(self, **metadata: Any) -> None:
        if metadata:
            redact_value = _scrubbers()[1]
            self._span.set_attributes({f"hrm.meta.{k}": _attr(redact_value(v)) for k, v in metadata.items()})

    def set_status(self, status: HRMStatus) -> None:
        if status not in ("success", "error", "blocked"):
            raise ValueError(f"unknown HRM status {status!r}: expected success, error or blocked")
        self.status = status

    def block(self, reason: str | None = None) -> None:
        """Mark the operation ``blocked`` (a gate said no). Blocked is not an error."""
        self.status = "blocked"
        if reason:
            self.set_metadata(blocked_reason=reason)

    @property
    def span(self) -> Span:
        return self._span

    def __bool__(self) -> bool:
        return True


class _NoopContext:
    __slots__ = ()
    trace_id = None
    output = ""
    status = None

    def set_output(self, output: Any, **metadata: Any) -> None:
        return None

    def set_metadata(self, **metadata: Any) -> None:
        return None

    def set_status(self, status: str) -> None:
        return None

    def block(self, reason: str | None = None) -> None:
        return None

    def __bool__(self) -> bool:  # the seed's `if ctx:` idiom keeps working
        return False


class _NoopSpan:
    __slots__ = ()

    def __enter__(self) -> _NoopContext:
        return _NOOP_CTX

    def __exit__(self, *exc: object) -> Literal[False]:
        return False


_NOOP_CTX = _NoopContext()
_NOOP_SPAN = _NoopSpan()


class _HRMSpan:
    __slots__ = ("_attrs", "_ctx", "_name", "_token", "_tracer")

    def __init__(self, tracer: trace.Tracer, name: str, attrs: dict[str, Any]) -> None:
        self._tracer = tracer
        self._name = name
        self._attrs = attrs
        self._token: object | None = None
        self._ctx: TraceContext | None = None

    def __enter__(self) -> TraceContext:
        attrs = self._attrs
        code = attrs.pop("_code")
        eid = event_id(code)
        parent_eid = current_event_id()
        attrs["hrm.event_id"] = eid
        if parent_eid:
            attrs["hrm.parent_event_id"] = parent_eid
        span = self._tracer.start_span(self._name, attributes=attrs)
        ctx = otel_context.set_value(_EVENT_KEY, eid, trace.set_span_in_context(span))
        self._token = otel_context.attach(ctx)
        self._ctx = TraceContext(span, eid)
        return self._ctx

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        tctx = self._ctx
        if tctx is None:
            return False
        span = tctx.span
        status: HRMStatus = tctx.status or "success"
        if exc is not None and not isinstance(exc, GeneratorExit):
            status = "error"
            redact_secrets = _scrubbers()[0]
            # Not span.record_exception(): its message and stack trace would leave unredacted.
            span.add_event(
                "exception",
                {
                    "exception.type": type(exc).__qualname__,
                    "exception.message": redact_secrets(str(exc)),
                    "exception.stacktrace": redact_secrets(
                        "".join(traceback.format_exception(type(exc), exc, tb))
                    ),
                    "exception.escaped": True,
                },
            )
            span.set_status(Status(StatusCode.ERROR, redact_secrets(f"{type(exc).__name__}: {exc}")))
            span.set_attribute("hrm.meta.error", redact_secrets(str(exc))[:SUMMARY_LIMIT])
        elif status == "error":
            span.set_status(Status(StatusCode.ERROR))
        span.set_attribute("hrm.status", status)
        span.set_attribute("hrm.output_summary", tctx.output)
        span.end()
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
        return False


class HRMTracer:
    """The seed's tracer API on OTel spans. Use the module-level ``tracer``."""

    def __init__(self, enabled: bool | None = None) -> None:
        self._enabled = enabled
        self._otel: trace.Tracer | None = None

    @property
    def enabled(self) -> bool:
        if self._enabled is None:
            from membrane_otel.config import get_settings

            self._enabled = get_settings().trace and os.environ.get("OTEL_SDK_DISABLED", "").lower() != "true"
        return self._enabled

    def set_enabled(self, enabled: bool | None) -> None:
        """Force tracing on/off; ``None`` re-reads the settings on next use."""
        self._enabled = enabled

    def _tracer(self) -> trace.Tracer:
        if self._otel is None:
            self._otel = trace.get_tracer("membrane_otel.hrm")
        return self._otel

    def span(
        self, hrm: str, operation: str, component: str = "", input_data: Any = "", **metadata: Any
    ) -> _HRMSpan | _NoopSpan:
        """A context manager tracing one operation; yields a :class:`TraceContext`."""
        if not self.enabled:
            return _NOOP_SPAN
        code, layer = layer_of(hrm)
        attrs: dict[str, Any] = {
            "_code": code,
            "hrm.layer": layer,
            "hrm.operation": operation,
            "hrm.component": component,
            "hrm.input_summary": _summary(input_data) if input_data != "" else "",
        }
        if metadata:
            redact_value = _scrubbers()[1]
            attrs.update({f"hrm.meta.{k}": _attr(redact_value(v)) for k, v in metadata.items()})
        return _HRMSpan(self._tracer(), f"{layer}.{operation}", attrs)

    def event(
        self,
        hrm: str,
        operation: str,
        component: str = "",
        input_data: Any = "",
        output_data: Any = "",
        status: HRMStatus = "success",
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """A one-shot event: a zero-length span, child of the current one."""
        if not self.enabled:
            return
        with self.span(hrm, operation, component, input_data, **(metadata or {})) as ctx:
            ctx.set_output(output_data)
            ctx.set_status(status)

    def trace(
        self,
        hrm: str,
        operation: str | None = None,
        component: str | None = None,
        *,
        summarize: Callable[..., Any] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator tracing every call of a function (sync or async)."""
        layer_of(hrm)  # a bad layer fails at decoration time, not on first call

        def wrap(fn: Callable[P, R]) -> Callable[P, R]:
            op = operation or fn.__name__
            comp = component or fn.__module__

            def summary(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                if summarize is not None:
                    return summarize(*args, **kwargs)
                return ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    if not self.enabled:
                        return await fn(*args, **kwargs)  # type: ignore[misc]
                    with self.span(hrm, op, comp, summary(args, kwargs)) as ctx:
                        result = await fn(*args, **kwargs)  # type: ignore[misc]
                        ctx.set_output(result)
                        return result

                return async_wrapper  # type: ignore[return-value]

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                if not self.enabled:
                    return fn(*args, **kwargs)
                with self.span(hrm, op, comp, summary(args, kwargs)) as ctx:
                    result = fn(*args, **kwargs)
                    ctx.set_output(result)
                    return result

            return wrapper

        return wrap


tracer = HRMTracer()
