"""Every private OpenTelemetry name membrane-otel relies on, in this one module.

The SDK offers no public way to build its providers from the ``OTEL_*`` variables with our
processors handed in, nor a public base for a configurator entry point, nor a public way to
change an attribute of a log record while a processor sees it. We use those seams here and
nowhere else; ``tests/test_compat.py`` pins their shape, so an SDK upgrade that renames or
reshapes one fails in one place with a message that names it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

import opentelemetry.sdk._configuration as _sdk_configuration
from opentelemetry.sdk._configuration import _BaseConfigurator, _initialize_components
from opentelemetry.sdk._logs import LogRecordProcessor
from opentelemetry.sdk.resources import Resource

__all__ = [
    "INITIALIZE_KEYWORDS",
    "BaseConfigurator",
    "initialize_sdk",
    "metric_exporter_preferences",
    "set_log_attribute",
]

# The configurator entry point's base class (what upstream's own distro subclasses).
BaseConfigurator = _BaseConfigurator

# The keywords of `_initialize_components` that initialize_sdk passes; pinned by a test.
INITIALIZE_KEYWORDS = (
    "auto_instrumentation_version",
    "log_record_processors",
    "export_log_record_processor",
    "export_span_processor",
    "setup_logging_handler",
    "resource_attributes",
)


def initialize_sdk(
    *,
    auto_instrumentation_version: str | None,
    log_record_processors: Sequence[LogRecordProcessor],
    export_log_record_processor: Callable[..., LogRecordProcessor],
    export_span_processor: Callable[..., Any],
    resource_attributes: Mapping[str, str] | None = None,
    clean_resource: Callable[[Resource], Resource] | None = None,
) -> None:
    """Build the tracer, meter and logger providers from ``OTEL_*`` as the SDK itself does,
    with our processors in front of the exporters it selects by name.

    ``clean_resource`` gets the resource the SDK makes (``OTEL_RESOURCE_ATTRIBUTES``, the
    resource detectors: a DSN, a process's command line) before any provider holds it, so
    every exporter, ours or not, sends what it returns. The SDK builds it inside
    ``_initialize_components`` with its module's ``Resource.create``, and takes no resource
    from outside: for this one call that name makes the resource and then cleans it.
    """
    if clean_resource is not None:
        setattr(_sdk_configuration, "Resource", _CleanedResource(clean_resource))  # noqa: B010
    try:
        _initialize_components(
            auto_instrumentation_version=auto_instrumentation_version,
            log_record_processors=log_record_processors,
            export_log_record_processor=export_log_record_processor,
            export_span_processor=export_span_processor,
            # stdlib logging comes in through opentelemetry-instrumentation-logging instead.
            setup_logging_handler=False,
            # Merged over OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME by Resource.create.
            resource_attributes=dict(resource_attributes) if resource_attributes else None,
        )
    finally:
        setattr(_sdk_configuration, "Resource", Resource)  # noqa: B010


class _CleanedResource:
    """``Resource`` as the SDK's set-up module calls it (``Resource.create``), cleaned."""

    def __init__(self, clean: Callable[[Resource], Resource]) -> None:
        self._clean = clean

    def create(self, attributes: Any = None, schema_url: str | None = None) -> Resource:
        return self._clean(Resource.create(attributes, schema_url))


def set_log_attribute(attributes: object, key: str, value: Any) -> None:
    """Set one attribute of a log record inside ``LogRecordProcessor.on_emit``.

    The record's ``BoundedAttributes`` stays mutable until the record is read; there is no
    public setter, and replacing the mapping would drop the SDK's attribute limits.
    """
    mapping: MutableMapping[str, Any] = attributes  # type: ignore[assignment]  # BoundedAttributes is a MutableMapping
    mapping[key] = value


def otlp_log_exporter_class(protocol: str) -> Any:
    """The SDK's OTLP log exporter class for ``grpc`` or ``http`` (it lives in a ``_``-module)."""
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as Grpc

        return Grpc
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as Http

    return Http


def metric_exporter_preferences(exporter: Any) -> tuple[Any, Any]:
    """A metric exporter's preferred temporality and aggregation, which the SDK's periodic reader
    reads from its private attributes: a wrapper must carry the inner exporter's own."""
    return exporter._preferred_temporality, exporter._preferred_aggregation
