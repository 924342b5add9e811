"""The membrane path: records → envelopes → throttle (with held-back counts) → bus client."""

from __future__ import annotations

from typing import Any

from membrane_otel._internal import counters
from membrane_otel.membrane._publish import MembranePublisher
from membrane_otel.membrane._throttle import Throttle
from membrane_otel.settings import load_settings
from membrane_otel.translate._records import LogData


class _Collect:
    """The bus client's interface, collecting what it is given (the transport is tested in test_bus)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def publish(self, envelope: dict[str, Any]) -> None:
        self.sent.append(envelope)

    def force_flush(self, timeout_millis: float = 0) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 0) -> None:
        return None


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _error(fp: str, n: int, event_name: str | None = None, **attrs: Any) -> LogData:
    base = {
        "membrane.l2": True,
        "membrane.script_name": "s",
        "membrane.fingerprint": fp,
        "membrane.record_id": f"r{fp}{n}",
        "exception.type": "KeyError",
    }
    base.update(attrs)
    return LogData(
        time_ns=n,
        severity_number=17,
        severity_text="ERROR",
        body=f"failed {n}",
        attributes=base,
        event_name=event_name,
        trace_id=None,
        span_id=None,
        resource={},
        scope="s",
    )


def _publisher(clock: _Clock, **settings: Any) -> tuple[MembranePublisher, _Collect]:
    bus = _Collect()
    throttle = Throttle(clock=clock, random=lambda: 0.5)  # 0.5 → no jitter
    return MembranePublisher(load_settings({}, **settings), bus, throttle), bus


def test_error_storm_is_throttled_and_counted() -> None:
    """1,000 identical errors in a burst: one goes out, the rest are suppressed and later reported."""
    clock = _Clock()
    pub, bus = _publisher(clock)
    before = counters.get("suppressed")
    pub.submit_logs([_error("a" * 40, n) for n in range(1000)])
    assert len(bus.sent) == 1 and "held_back" not in bus.sent[0]["metadata"]
    assert counters.get("suppressed") - before == 999
    clock.now += 16  # past the per-type window (15 s) and the fingerprint window (10 s)
    pub.submit_logs([_error("a" * 40, 5000)])
    assert len(bus.sent) == 2
    assert bus.sent[1]["metadata"]["held_back"] == 999, "the next envelope carries the held-back count"


def test_held_back_counts_add_up_across_fingerprints() -> None:
    """Distinct fingerprints held by the type limit are all reported by the next envelope."""
    clock = _Clock()
    pub, bus = _publisher(clock)
    pub.submit_logs([_error(f"{i:040x}", i) for i in range(50)])
    clock.now += 16
    pub.submit_logs([_error("f" * 40, 99)])
    assert len(bus.sent) == 2 and bus.sent[1]["metadata"]["held_back"] == 49


def test_stimuli_are_not_throttled() -> None:
    """Stimuli (metrics, UI, tool results) pass untouched: only errors are throttled."""
    clock = _Clock()
    pub, bus = _publisher(clock)
    stim = [
        LogData(
            time_ns=n,
            severity_number=9,
            severity_text="INFO",
            body="m",
            event_name="membrane.stimulus",
            attributes={
                "membrane.signal_type": "metric",
                "membrane.source": "script:x",
                "membrane.channel": "metrics.m",
                "membrane.scope": "organizational",
                "membrane.features.urgency": 0.2,
                "membrane.record_id": f"s{n}",
            },
            trace_id=None,
            span_id=None,
            resource={},
            scope="x",
        )
        for n in range(20)
    ]
    pub.submit_logs(stim)
    assert len(bus.sent) == 20


def test_throttle_off_sends_everything() -> None:
    """MEMBRANE_THROTTLE=0 (no throttle) publishes every error."""
    bus = _Collect()
    pub = MembranePublisher(load_settings({}), bus, None)
    pub.submit_logs([_error("a" * 40, n) for n in range(30)])
    assert len(bus.sent) == 30


def test_legacy_format_switch() -> None:
    """envelope_format=legacy publishes the seeds/000 form with top-level citizen_id."""
    pub, bus = _publisher(_Clock(), envelope_format="legacy")
    pub.submit_logs([_error("a" * 40, 1, **{"membrane.node_id": "code_substrate_x_py"})])
    assert bus.sent[0]["citizen_id"] == "code_substrate_x_py"


def test_info_logs_and_ledger_events_make_no_envelope() -> None:
    """Below the L2 level, and ledger events, never reach the membrane."""
    pub, bus = _publisher(_Clock())
    info = _error("a" * 40, 1)
    info.severity_number = 9
    info.attributes.pop("membrane.l2")
    event = _error("b" * 40, 2, event_name="task_started")
    pub.submit_logs([info, event])
    assert bus.sent == []
