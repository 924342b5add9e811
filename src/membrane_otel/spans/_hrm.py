"""HRM tracing (``seeds/004``) on real OTel spans.

``tracer.span("alt", "transition", "altitude.py", "L3→L2")`` opens a span named
``altitude.transition`` with the ``hrm.*`` attributes; ``tracer.event(...)`` records a
one-shot operation; ``@tracer.trace("mem")`` traces every call of a function, sync or async.

Parent and child follow the OTel context (contextvars), not the seed's shared list stack:

* asyncio tasks copy the context when they are created, so each task's spans are children
  of the span that was open where the task was created, and tasks never see each other's;
* a ``Thread`` or ``ThreadPoolExecutor`` task started inside a span is that span's child:
  the distro enables ``opentelemetry-instrumentation-threading`` (under the wrapper and from
  ``configure()``). ``tracer.wrap(fn)`` does the same by hand for other thread pools.

The seed's readable event id (``alt_1705180800_a3f2``) travels in the same context, so a
child knows its HRM parent's id even with non-HRM spans (an HTTP client, say) in between.

Off (the default; ``MEMBRANE_TRACE=1`` turns it on) costs one check: ``span()`` returns a
shared no-op context manager and allocates nothing.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, Status, StatusCode

from membrane_otel.spans._layers import (
    _EVENT_KEY,
    STATUSES,
    HRMStatus,
    current_event_id,
    event_id,
    layer_of,
)
from membrane_otel.spans._scrub import AttrValue, _record_exception, _repr, _Scrubber

if TYPE_CHECKING:
    from membrane_otel.logs._redact import Redactor

_log = logging.getLogger("membrane_otel.spans._hrm")

P = ParamSpec("P")
R = TypeVar("R")


class TraceContext:
    """What ``tracer.span`` yields: set the output summary, metadata, or ``blocked``."""

    __slots__ = ("_meta", "_scrub", "_span", "output", "status", "trace_id")

    def __init__(self, span: Span, trace_id: str, scrub: _Scrubber) -> None:
        self._span = span
        self._scrub = scrub
        self._meta: dict[str, Any] | None = None
        self.trace_id = trace_id
        self.output: str = ""
        self.status: HRMStatus | None = None

    def set_output(self, output: Any, **metadata: Any) -> None:
        """The seed's ``set_output``: the output summary (≤100 chars, redacted) and metadata."""
        self.output = self._scrub.summary(output)
        if metadata:
            self.set_metadata(**metadata)

    def set_metadata(self, **metadata: Any) -> None:
        """More ``hrm.meta.*`` attributes (redacted; written when the span ends)."""
        if self._meta is None:
            self._meta = metadata
        else:
            self._meta.update(metadata)

    def set_status(self, status: HRMStatus) -> None:
        if status not in STATUSES:
            raise ValueError(f"unknown HRM status {status!r}: expected success, error or blocked")
        self.status = status

    def block(self, reason: str | None = None) -> None:
        """Mark the operation ``blocked`` (a gate said no). Blocked is not an error."""
        self.status = "blocked"
        if reason:
            self.set_metadata(blocked_reason=reason)

    @property
    def span(self) -> Span:
        """The underlying OTel span, for anything the HRM API does not cover."""
        return self._span

    def __bool__(self) -> bool:
        return True


class _NoopContext:
    """Yielded when tracing is off: every method accepts and ignores, and it is falsy."""

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


def _is_failure(exc: BaseException) -> bool:
    # A generator closed early, or a clean sys.exit(), ends the operation; it does not fail it.
    if isinstance(exc, GeneratorExit):
        return False
    return not (isinstance(exc, SystemExit) and exc.code in (None, 0))


class _HRMSpan:
    """One traced operation: a context manager lighter than ``start_as_current_span``."""

    __slots__ = ("_attrs", "_code", "_ctx", "_name", "_owner", "_token")

    def __init__(self, owner: HRMTracer, code: str, name: str, attrs: dict[str, AttrValue]) -> None:
        self._owner = owner
        self._code = code
        self._name = name
        self._attrs = attrs
        self._token: object = None
        self._ctx: TraceContext | None = None

    def __enter__(self) -> TraceContext:
        attrs = self._attrs
        eid = event_id(self._code)
        attrs["hrm.event_id"] = eid
        parent_eid = otel_context.get_value(_EVENT_KEY)
        if parent_eid is not None:
            attrs["hrm.parent_event_id"] = parent_eid  # type: ignore[assignment]  # always a str
        owner = self._owner
        span = owner._tracer().start_span(self._name, attributes=attrs)
        self._token = otel_context.attach(
            otel_context.set_value(_EVENT_KEY, eid, trace.set_span_in_context(span))
        )
        self._ctx = ctx = TraceContext(span, eid, owner._scrubber())
        return ctx

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        ctx = self._ctx
        if ctx is None:  # __exit__ without __enter__
            return False
        span = ctx._span
        scrub = ctx._scrub
        status: HRMStatus = ctx.status or "success"
        attrs: dict[str, AttrValue] = scrub.metadata(ctx._meta) if ctx._meta else {}
        if exc is not None and _is_failure(exc):
            status = "error"
            # The ledger line's metadata.error/error_type come from this event, as the seed's do.
            _record_exception(span, scrub, exc, tb)
        elif status == "error":
            span.set_status(Status(StatusCode.ERROR))
        attrs["hrm.status"] = status
        attrs["hrm.output_summary"] = ctx.output
        span.set_attributes(attrs)
        span.end()
        try:
            otel_context.detach(self._token)  # type: ignore[arg-type]  # the attach() token
        finally:
            self._token = None
        return False


class HRMTracer:
    """The seed's tracer API on OTel spans. Use the module-level ``tracer``.

    ``enabled`` None follows the settings (``MEMBRANE_TRACE``, the trace config file);
    ``tracer_provider`` None means the global one; ``redactor`` None means one built from
    the settings' ``redact_patterns``.
    """

    def __init__(
        self,
        enabled: bool | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        self._enabled = enabled
        self._provider = tracer_provider
        self._redactor = redactor
        self._otel: trace.Tracer | None = None
        self._scrub: _Scrubber | None = None

    # ------------------------------------------------------------------ switches

    @property
    def enabled(self) -> bool:
        enabled = self._enabled
        return self._resolve() if enabled is None else enabled

    def _resolve(self) -> bool:
        from membrane_otel.settings import ConfigError, get_settings

        try:
            on = get_settings().trace
        except ConfigError as exc:
            # Under opentelemetry-instrument a bad setting stops start-up; here, in the
            # middle of the app, the honest answer is "off" and one warning.
            _log.warning("HRM tracing off: %s", exc)
            on = False
        self._enabled = on and os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true"
        return self._enabled

    def set_enabled(self, enabled: bool | None) -> None:
        """Force tracing on/off; ``None`` re-reads the settings (and redaction rules) on next use."""
        self._enabled = enabled
        if enabled is None:
            self._scrub = None

    def _tracer(self) -> trace.Tracer:
        otel = self._otel
        if otel is None:
            provider = self._provider or trace.get_tracer_provider()
            otel = provider.get_tracer("membrane_otel.spans._hrm")
            # Before the SDK is set up this is a proxy; keep asking until the real one exists,
            # so spans do not pay the proxy's indirection for the life of the process.
            if not isinstance(provider, trace.ProxyTracerProvider):
                self._otel = otel
        return otel

    def _scrubber(self) -> _Scrubber:
        scrub = self._scrub
        if scrub is None:
            redactor = self._redactor
            if redactor is None:
                from membrane_otel.logs._redact import configured_redactor

                redactor = configured_redactor()
            self._scrub = scrub = _Scrubber(redactor)
        return scrub

    # ------------------------------------------------------------------ the seed's API

    def generate_id(self, hrm: str) -> str:
        """The seed's readable id for a layer (code or name): ``alt_1705180800_a3f2``."""
        return event_id(layer_of(hrm)[0])

    def span(
        self,
        hrm: str,
        operation: str,
        component: str = "",
        input_data: Any = "",
        metadata: Mapping[str, Any] | None = None,
    ) -> _HRMSpan | _NoopSpan:
        """A context manager tracing one operation; yields a :class:`TraceContext`.

        ``hrm`` is a layer code (``alt``) or name (``altitude``); ``metadata`` becomes
        ``hrm.meta.*`` attributes. An exception leaving the block marks the span ``error``
        (with a redacted ``exception`` event) and propagates unchanged.
        """
        # No **kwargs here: CPython would build an empty dict on every call, tracing off too.
        enabled = self._enabled
        if enabled is None:
            enabled = self._resolve()
        if not enabled:
            return _NOOP_SPAN
        code, layer = layer_of(hrm)
        scrub = self._scrubber()
        attrs: dict[str, AttrValue] = {
            "hrm.layer": layer,
            "hrm.operation": operation,
            "hrm.component": component,
            "hrm.input_summary": scrub.summary(input_data),
        }
        if metadata:
            attrs.update(scrub.metadata(metadata))
        return _HRMSpan(self, code, f"{layer}.{operation}", attrs)

    def event(
        self,
        hrm: str,
        operation: str,
        component: str = "",
        input_data: Any = "",
        output_data: Any = "",
        status: HRMStatus = "success",
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """A one-shot operation: a zero-length span, child of the current one."""
        enabled = self._enabled
        if enabled is None:
            enabled = self._resolve()
        if not enabled:
            return
        if status not in STATUSES:
            raise ValueError(f"unknown HRM status {status!r}: expected success, error or blocked")
        code, layer = layer_of(hrm)
        scrub = self._scrubber()
        eid = event_id(code)
        attrs: dict[str, AttrValue] = {
            "hrm.layer": layer,
            "hrm.operation": operation,
            "hrm.component": component,
            "hrm.input_summary": scrub.summary(input_data),
            "hrm.output_summary": scrub.summary(output_data),
            "hrm.status": status,
            "hrm.event_id": eid,
        }
        parent_eid = current_event_id()
        if parent_eid is not None:
            attrs["hrm.parent_event_id"] = parent_eid
        if metadata:
            attrs.update(scrub.metadata(metadata))
        span = self._tracer().start_span(f"{layer}.{operation}", attributes=attrs)
        if status == "error":
            span.set_status(Status(StatusCode.ERROR))
        span.end()

    def trace(
        self,
        hrm: str,
        operation: str | None = None,
        component: str | None = None,
        *,
        summarize: Callable[..., Any] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorator tracing every call of a function or method, sync or async.

        The input summary is the call's arguments (``self``/``cls`` left out) unless
        ``summarize(*args, **kwargs)`` says otherwise; the output summary is the result.
        Put it *under* ``@classmethod`` / ``@staticmethod``. Generator functions are refused:
        their work happens after the call returns, so trace inside them with ``span()``.
        """
        layer_of(hrm)  # a bad layer fails at decoration time, not on the first call

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
                raise TypeError(
                    f"tracer.trace cannot trace generator function {fn.__qualname__}: "
                    "use `with tracer.span(...)` inside it"
                )
            op = operation or fn.__name__
            comp = component or fn.__module__
            try:
                params = list(inspect.signature(fn).parameters)
            except (TypeError, ValueError):  # builtins without a signature
                params = []
            skip = 1 if params and params[0] in ("self", "cls") else 0

            def summary(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                if summarize is not None:
                    return summarize(*args, **kwargs)
                args = args[skip:]
                if len(args) == 1 and not kwargs and isinstance(args[0], str):
                    return args[0]  # one text argument reads best bare, as the seed's summaries do
                parts = [_repr.repr(a) for a in args]
                parts.extend(f"{k}={_repr.repr(v)}" for k, v in kwargs.items())
                return ", ".join(parts)

            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                    if not self.enabled:
                        return await fn(*args, **kwargs)
                    with self.span(hrm, op, comp, summary(args, kwargs)) as ctx:
                        result = await fn(*args, **kwargs)
                        ctx.set_output(result)
                        return result

                return async_wrapper  # type: ignore[return-value]  # same signature, awaitable result

            @functools.wraps(fn)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                if not self.enabled:
                    return fn(*args, **kwargs)
                with self.span(hrm, op, comp, summary(args, kwargs)) as ctx:
                    result = fn(*args, **kwargs)
                    ctx.set_output(result)
                    return result

            return wrapper

        return decorate

    def wrap(self, fn: Callable[P, R]) -> Callable[P, R]:
        """``fn`` bound to the caller's trace context, to run in another thread.

        A new thread starts with an empty context (its spans are new roots); a function
        wrapped here, where a span is open, makes its spans that span's children wherever
        it runs. One wrapped function may run in several threads at once.
        """
        captured = otel_context.get_current()

        @functools.wraps(fn)
        def in_context(*args: P.args, **kwargs: P.kwargs) -> R:
            token = otel_context.attach(captured)
            try:
                return fn(*args, **kwargs)
            finally:
                otel_context.detach(token)

        return in_context


tracer = HRMTracer()
