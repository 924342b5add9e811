"""The envelope's wire dict built without the model is the model's dump, byte for byte.

``log_envelope_wire`` skips pydantic when every value is already of its declared type (the
bridge's hot path); for anything else it must build the model, which coerces or refuses.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from membrane_otel.membrane._envelope import wire_dict, with_metadata
from membrane_otel.translate._core import _envelope_fields, log_envelope, log_envelope_wire
from membrane_otel.translate._records import LogData


def _log(event_name: str | None = None, trace: bool = True, **attrs: Any) -> LogData:
    base: dict[str, Any] = {
        "membrane.l2": True,
        "membrane.record_id": "r1",
        "code.function": "handler",
        "code.lineno": 42,
        "code.namespace": "app.module",
        "code.file.path": "/srv/app/module.py",
        "exception.type": "KeyError",
        "exception.stacktrace": "Traceback (most recent call last):\n  ...\nKeyError: 'x'",
        "membrane.fingerprint": "f" * 40,
    }
    base.update(attrs)
    return LogData(
        time_ns=1_700_000_000_123_456_789,
        severity_number=17,
        severity_text="ERROR",
        body="boom",
        attributes=base,
        event_name=event_name,
        trace_id="a" * 32 if trace else None,
        span_id="b" * 16 if trace else None,
        resource={"service.name": "svc"},
        scope="app.logger",
    )


def _model(log: LogData, legacy: bool) -> bytes | type[ValidationError]:
    try:
        return orjson.dumps(log_envelope(log).to_json_dict(legacy=legacy))
    except ValidationError:
        return ValidationError


def _wire(log: LogData, legacy: bool) -> bytes | type[ValidationError]:
    try:
        return orjson.dumps(log_envelope_wire(log, legacy=legacy))
    except ValidationError:
        return ValidationError


CASES: dict[str, LogData] = {
    "error record": _log(),
    "no trace": _log(trace=False),
    "ecosystem scope": _log(**{"membrane.scope": "ecosystem"}),
    "bool line (coerced by the model)": _log(**{"code.lineno": True}),
    "str line (coerced by the model)": _log(**{"code.lineno": "7"}),
    "negative line": _log(**{"code.lineno": -1}),
    "int dedupe key (refused)": _log(**{"membrane.dedupe_key": 5}),
    "unknown scope (refused)": _log(**{"membrane.scope": "galactic"}),
    "list function (refused)": _log(**{"code.function": ["a"]}),
    "empty source falls back": _log(**{"membrane.source": ""}),
    "str subclass": _log(**{"exception.type": type("S", (str,), {})("KeyError")}),
    "stimulus": _log(
        "membrane.stimulus",
        **{
            "membrane.features.urgency": 0.9,
            "membrane.features.novelty": 1,
            "membrane.metadata": '{"extra": 1}',
            "membrane.provenance": '{"via": "test"}',
            "membrane.target_nodes": ["n1"],
        },
    ),
}


@pytest.mark.parametrize("legacy", [False, True])
@pytest.mark.parametrize("name", list(CASES))
def test_wire_dict_is_the_models_dump(name: str, legacy: bool) -> None:
    log = CASES[name]
    assert _wire(log, legacy) == _model(log, legacy)


def test_a_well_formed_error_record_skips_the_model() -> None:
    assert wire_dict(_envelope_fields(_log(), "organizational")) is not None
    # ...and what needs coercion or refusal does not.
    for name in ("bool line (coerced by the model)", "int dedupe key (refused)", "stimulus"):
        assert wire_dict(_envelope_fields(CASES[name], "organizational")) is None, name


def test_with_metadata_keeps_the_models_key_order() -> None:
    log = _log()
    env = log_envelope(log)
    env.metadata.held_back = 3
    env.metadata.held_back_fingerprint = 2
    data = log_envelope_wire(log)
    with_metadata(data, held_back=3, held_back_fingerprint=2)
    assert orjson.dumps(data) == orjson.dumps(env.to_json_dict())


def test_the_bus_frame_is_the_stdlib_json_it_replaced() -> None:
    """orjson frames, and frames joined from each envelope's bytes, are the compact stdlib JSON."""
    import datetime
    import json

    from membrane_otel.membrane._bus_wire import encode_envelope, encode_frame

    envs = [log_envelope_wire(CASES[name]) for name in ("error record", "no trace", "stimulus")]
    envs[1]["provenance"]["when"] = datetime.datetime(2026, 1, 1)  # a stray one: default=str
    envs[2]["metadata"]["big"] = 2**70  # past orjson's 64 bits: the stdlib encodes the frame
    stdlib = json.dumps(envs, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    assert encode_frame(envs) == stdlib
    assert b"[" + b",".join(encode_envelope(e) for e in envs) + b"]" == stdlib
    plain = envs[:2]  # the orjson path itself (no int past 64 bits)
    assert (
        encode_frame(plain)
        == json.dumps(plain, separators=(",", ":"), ensure_ascii=False, default=str).encode()
    )
