"""``configure()`` and ``shutdown()``: the SDK set-up shared by the wrapper and by code.

``opentelemetry-instrument`` reaches :func:`configure` through the distro's configurator;
programs that do not use the wrapper call ``membrane_otel.configure()`` themselves.
Either way the SDK is built through its own set-up (:mod:`membrane_otel._internal.compat`) with our processors
handed in through its public parameters, and the exporters chosen by the standard
``OTEL_*_EXPORTER`` variables (our defaults are set only where the user set nothing).
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from membrane_otel import settings as config

_lock = threading.RLock()
_configured = False
_sdk_disabled = False
_shut_down = False

# configure()'s keywords that name the service (Logfire's names) -> OTel resource attributes.
RESOURCE_KEYWORDS = {
    "service_name": "service.name",
    "service_version": "service.version",
    "environment": "deployment.environment.name",
}


def _sdk_is_disabled() -> bool:
    return os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true"


def apply_env_defaults(settings: config.Settings) -> None:
    """Our exporters as defaults, the user's ``OTEL_*`` choices untouched (as upstream's distro)."""
    os.environ.setdefault("OTEL_TRACES_EXPORTER", "ledger,console" if settings.trace else "ledger")
    traces = [n.strip() for n in os.environ["OTEL_TRACES_EXPORTER"].split(",") if n.strip()]
    if settings.trace and "none" not in traces and not {"console", "membrane_console"} & set(traces):
        # MEMBRANE_TRACE=1 means the seed's tree on the console, whatever else the spans go to
        # (the README's collector command sets OTEL_TRACES_EXPORTER=otlp).
        os.environ["OTEL_TRACES_EXPORTER"] = ",".join([*traces, "console"])
    os.environ.setdefault("OTEL_LOGS_EXPORTER", "ledger,membrane")
    os.environ.setdefault("OTEL_METRICS_EXPORTER", "none")
    # Each record's file, function and line: the envelope's script_path/module/function/line.
    os.environ.setdefault("OTEL_PYTHON_LOG_CODE_ATTRIBUTES", "true")
    if "OTEL_SERVICE_NAME" not in os.environ and "service.name=" not in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    ):
        argv0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else ""
        # `python - < script.py` reads the program from stdin: its argv[0] is "-".
        name = "stdin" if argv0 == "-" else Path(argv0).stem if argv0 else ""
        if name:
            os.environ["OTEL_SERVICE_NAME"] = name


# The standard exporter-selection variables and the entry-point group each name resolves in.
EXPORTER_VARS = {
    "OTEL_TRACES_EXPORTER": "opentelemetry_traces_exporter",
    "OTEL_LOGS_EXPORTER": "opentelemetry_logs_exporter",
    "OTEL_METRICS_EXPORTER": "opentelemetry_metrics_exporter",
}


def check_exporter_names(environ: Mapping[str, str] | None = None) -> None:
    """A name in ``OTEL_*_EXPORTER`` that no installed exporter has: one line naming it.

    The SDK would raise from deep in its set-up (a traceback, then a run without telemetry).
    """
    from importlib.metadata import entry_points

    env = os.environ if environ is None else environ
    for var, group in EXPORTER_VARS.items():
        raw = env.get(var)
        if not raw:
            continue
        names = [n.strip() for n in raw.split(",") if n.strip()]
        known = {ep.name for ep in entry_points(group=group)} | {"none"}
        unknown = [n for n in names if n not in known]
        if unknown:
            raise config.ConfigError(
                f"{var}={raw!r} is not valid: no exporter named {unknown[0]!r} "
                f"(installed: {', '.join(sorted(known))})"
            )


def _prefer_tree_console() -> None:
    """``console`` for traces means the seed's span tree under this distro.

    The SDK registers its own ``console`` span exporter (one JSON document per span) under
    the same entry-point name, and which of two same-named entry points wins depends on
    install order; so the name is resolved here, explicitly, to ours.
    """
    names = os.environ.get("OTEL_TRACES_EXPORTER")
    if names:
        parts = [n.strip() for n in names.split(",")]
        os.environ["OTEL_TRACES_EXPORTER"] = ",".join(
            "membrane_console" if n == "console" else n for n in parts
        )


def _quiet_own_loggers() -> None:
    # Our own diagnostics must never re-enter the pipeline they report on.
    own = logging.getLogger("membrane_otel")
    if not own.handlers:
        from membrane_otel.logs._redact_format import RedactingFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(RedactingFormatter("membrane-otel: %(levelname)s %(message)s"))
        own.addHandler(handler)
        own.setLevel(logging.WARNING)
    own.propagate = False


def configure(*, _auto_instrumentation_version: str | None = None, **overrides: Any) -> config.Settings:
    """Set up OTel with membrane-otel's pipeline. Keyword arguments override the environment.

    ``service_name``, ``service_version`` and ``environment`` become the resource attributes
    ``service.name``, ``service.version`` and ``deployment.environment.name`` (over
    ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``); every other keyword is a setting.
    Calling it again is harmless: the settings are re-read, the SDK is built once.
    Raises :class:`membrane_otel.settings.ConfigError` (one readable line) for bad values.
    """
    global _configured, _sdk_disabled
    resource: dict[str, str] = {}
    for key, attribute in RESOURCE_KEYWORDS.items():
        value = overrides.pop(key, None)
        if value is not None:
            if not isinstance(value, str) or not value.strip():
                raise config.ConfigError(
                    f"argument {key}={value!r} is not valid: expected a non-empty string"
                )
            resource[attribute] = value
    with _lock:
        settings = config.load_settings(**overrides)
        config.set_settings(settings)
        from membrane_otel.spans._hrm import tracer

        tracer.set_enabled(None)
        if _configured:
            return settings
        if not _sdk_is_disabled():
            check_exporter_names()
        _configured = True
        _quiet_own_loggers()
        if _sdk_is_disabled():
            _sdk_disabled = True
            tracer.set_enabled(False)
            return settings
        apply_env_defaults(settings)
        _prefer_tree_console()
        from membrane_otel.logs._redact_otlp import route_otlp_through_redaction

        route_otlp_through_redaction()

        from membrane_otel._internal.batching import BatchLogProcessor, BatchSpanProcessorWithCounts
        from membrane_otel._internal.compat import initialize_sdk
        from membrane_otel.logs._processors import MembraneLogProcessor, configured_value_redactor
        from membrane_otel.logs._redact_spans import redacted_resource

        initialize_sdk(
            auto_instrumentation_version=_auto_instrumentation_version,
            log_record_processors=[MembraneLogProcessor(configured_value_redactor())],
            export_log_record_processor=BatchLogProcessor,
            export_span_processor=BatchSpanProcessorWithCounts,
            resource_attributes=resource,
            clean_resource=redacted_resource,
        )
        if settings.trace and settings.trace_output:
            _add_trace_file(settings.trace_output)
        # atexit runs last-registered first: the providers' hooks were registered above and
        # the bus client's after them (its exporter is built inside), so on their own the bus
        # client stops before the log batcher hands it the last records. Ours runs first and
        # shuts down in order: providers (flushing into the bus queue), then the bus client.
        atexit.register(shutdown)
        if _auto_instrumentation_version is None:
            # Not under opentelemetry-instrument: bring stdlib logging in ourselves, through
            # the same instrumentation the wrapper would load.
            from opentelemetry.instrumentation.logging import LoggingInstrumentor
            from opentelemetry.instrumentation.threading import ThreadingInstrumentor

            # Logs from stdlib logging; and a thread or executor task started inside a span
            # is that span's child (under the wrapper both load as installed instrumentors).
            for instrumentor in (LoggingInstrumentor(), ThreadingInstrumentor()):
                if not instrumentor.is_instrumented_by_opentelemetry:
                    instrumentor.instrument()
        from membrane_otel._internal.console_fallback import keep_console_output

        keep_console_output()
        if settings.watchdog:
            # The pipeline watches itself (seeds/002): alerts as events, figures as metrics.
            from membrane_otel.ops._watchdog import start_watchdog

            start_watchdog()
        return settings


def enable_tracing() -> None:
    """Tracing on for the rest of this run (the ``--trace`` flag), with the console tree.

    Before any set-up it is ``MEMBRANE_TRACE=1`` and a configure; after one (the wrapper
    read the environment with tracing off) the tree exporter is added to the running SDK.
    """
    from opentelemetry import trace

    from membrane_otel.spans._hrm import tracer

    os.environ["MEMBRANE_TRACE"] = "1"
    with _lock:
        if not _configured:
            configure()
            return
        config.set_settings(config.load_settings())
        if _sdk_disabled:
            return
        tracer.set_enabled(None)
        names = os.environ.get("OTEL_TRACES_EXPORTER", "")
        if "console" in names or "none" in names.split(","):
            return
        from membrane_otel._internal.batching import BatchSpanProcessorWithCounts
        from membrane_otel.spans._console_tree import ConsoleTreeSpanExporter

        add = getattr(trace.get_tracer_provider(), "add_span_processor", None)
        if callable(add):
            add(BatchSpanProcessorWithCounts(ConsoleTreeSpanExporter()))
            os.environ["OTEL_TRACES_EXPORTER"] = ",".join(n for n in (names, "membrane_console") if n)


def _add_trace_file(path: Path) -> None:
    """The seed's ``tracing.output``: trace lines there too, through the SDK's own seam."""
    from opentelemetry import trace

    from membrane_otel._internal.batching import BatchSpanProcessorWithCounts
    from membrane_otel.spans._trace_file import TraceFileSpanExporter

    add = getattr(trace.get_tracer_provider(), "add_span_processor", None)
    if callable(add):
        add(BatchSpanProcessorWithCounts(TraceFileSpanExporter(path)))


def _l2() -> Any:
    # Records captured by setup_l2_logger wait on their own worker before reaching the SDK.
    return sys.modules.get("membrane_otel.logs._l2logger")


def _flush_l2(timeout_millis: float) -> bool:
    l2 = _l2()
    return bool(l2.flush(timeout_millis)) if l2 is not None else True


def ensure_configured() -> None:
    """Configure with the environment unless the SDK was already set up (by us or the user)."""
    if _configured:
        return
    from opentelemetry._logs import get_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider

    if not isinstance(get_logger_provider(), LoggerProvider):
        configure()


def _stages() -> list[Any]:
    """Providers in pipeline order: spans, logs, metrics (each flushes its processors)."""
    from opentelemetry import metrics, trace
    from opentelemetry._logs import get_logger_provider

    return [trace.get_tracer_provider(), get_logger_provider(), metrics.get_meter_provider()]


def force_flush(timeout_millis: int = 30000) -> bool:
    """Flush spans, logs and the membrane path; True when everything went out in time.

    One deadline for all stages: each is given what the ones before it left over.
    """
    from membrane_otel._internal.worker import one_deadline, remaining_ms

    deadline = time.monotonic() + timeout_millis / 1000
    with one_deadline(deadline):
        ok = _flush_l2(timeout_millis)
        for provider in _stages()[:2]:
            flush = getattr(provider, "force_flush", None)
            if callable(flush):
                ok = bool(flush(remaining_ms(deadline))) and ok
    # The batch processors also flush their exporters (the membrane exporter's bus client),
    # within what is left of the same deadline.
    return ok


def shutdown(timeout_millis: int = 30000) -> None:
    """Flush everything and stop the background threads, within one deadline. Idempotent.

    The README's ``configure()`` … ``shutdown()`` also runs this at exit: the second call
    does nothing (the SDK would print "shutdown can only be called once").
    """
    global _shut_down
    from membrane_otel._internal.worker import one_deadline

    with _lock:
        if _shut_down:
            return
        _shut_down = _configured
    deadline = time.monotonic() + timeout_millis / 1000
    with one_deadline(deadline):
        _shutdown_stages(deadline)


def _shutdown_stages(deadline: float) -> None:
    from membrane_otel._internal.worker import remaining_ms

    l2 = _l2()
    if l2 is not None:
        l2.shutdown(remaining_ms(deadline))
    events = sys.modules.get("membrane_otel.ledger._events")
    if events is not None:
        events.pipeline_stopped()
    for provider in _stages():
        # The SDK's providers pass no timeout to their processors, so flush ours first with
        # what is left of the deadline; the providers' shutdown then finds empty queues.
        flush = getattr(provider, "force_flush", None)
        stop = getattr(provider, "shutdown", None)
        try:
            if callable(flush):
                flush(remaining_ms(deadline))
            if callable(stop):
                stop()
        except Exception:  # shutting down twice, or a provider that never started
            pass
    # Not imported means never built: importing it now (at exit) would only cost start-up time.
    membrane = sys.modules.get("membrane_otel.membrane._publish")
    if membrane is not None and membrane._publisher is not None:
        membrane._publisher.shutdown(remaining_ms(deadline))
