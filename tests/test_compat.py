"""The private OpenTelemetry seams we rely on still have the shape we use."""

from __future__ import annotations

import inspect

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk._configuration import _initialize_components
from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor, ReadWriteLogRecord

from membrane_otel._internal import compat


def test_initialize_components_takes_the_keywords_we_pass() -> None:
    """An SDK that renames a keyword of _initialize_components fails here, naming it."""
    params = inspect.signature(_initialize_components).parameters
    missing = [k for k in compat.INITIALIZE_KEYWORDS if k not in params]
    assert not missing, f"opentelemetry-sdk's _initialize_components no longer takes {missing}"


def test_base_configurator_has_the_configure_hook() -> None:
    """The configurator entry point's base class still calls _configure from configure."""
    assert callable(getattr(compat.BaseConfigurator, "_configure", None))
    assert callable(getattr(compat.BaseConfigurator, "configure", None))


def test_log_attributes_are_writable_inside_on_emit() -> None:
    """A processor can still change a record's attributes while it is being emitted."""
    seen: list[object] = []

    class Redact(LogRecordProcessor):
        def on_emit(self, log_record: ReadWriteLogRecord) -> None:
            attrs = log_record.log_record.attributes
            assert isinstance(attrs, BoundedAttributes), type(attrs)
            compat.set_log_attribute(attrs, "password", "<REDACTED>")
            seen.append(dict(attrs))

        def shutdown(self) -> None:
            return None

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    provider = LoggerProvider()
    provider.add_log_record_processor(Redact())
    from opentelemetry._logs import LogRecord

    provider.get_logger("t").emit(LogRecord(body="x", attributes={"password": "hunter2"}))
    assert seen == [{"password": "<REDACTED>"}]


def test_the_sdk_makes_its_resource_with_its_modules_resource_create() -> None:
    """initialize_sdk cleans the resource by standing in for the set-up module's ``Resource``
    for one call: the SDK must still make it there, with ``Resource.create``."""
    import opentelemetry.sdk._configuration as configuration
    from opentelemetry.sdk.resources import Resource

    assert getattr(configuration, "Resource") is Resource  # noqa: B009  # not re-exported
    assert "Resource.create(" in inspect.getsource(_initialize_components)


def test_a_metric_exporter_keeps_its_preferences_where_the_reader_reads_them() -> None:
    """The periodic reader reads an exporter's private preferences; a wrapper copies them."""
    from opentelemetry.sdk.metrics import Counter
    from opentelemetry.sdk.metrics.export import AggregationTemporality, ConsoleMetricExporter

    inner = ConsoleMetricExporter(preferred_temporality={Counter: AggregationTemporality.DELTA})
    temporality, aggregation = compat.metric_exporter_preferences(inner)
    assert temporality[Counter] == AggregationTemporality.DELTA
    assert aggregation is None or isinstance(aggregation, dict)
