"""Whether the telemetry pipeline can deliver, per component (split from ``watchdog.py``, which re-exports it).

:func:`check_readiness` answers for the exporters (SDK providers set up, batch workers
alive), the membrane bus (a WebSocket handshake), the bridge (``GET /ready``) and the
Collector (its ``health_check`` URL), each only when configured, polling until all are
ready or the deadline passes. ``membrane-otel doctor`` uses the same probes.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = [
    "acheck_readiness",
    "bus_answers",
    "check_readiness",
    "http_ok",
]

ReadMetrics = Callable[[], Mapping[str, int]]


def _default_read_metrics() -> Mapping[str, int]:
    from membrane_otel._internal.counters import get_metrics

    return get_metrics()


def _exporters_ready(read_metrics: ReadMetrics) -> bool:
    """SDK providers are set up and every one of our batch workers is running."""
    from opentelemetry import trace
    from opentelemetry._logs import get_logger_provider
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk.trace import TracerProvider

    if not isinstance(trace.get_tracer_provider(), TracerProvider) and not isinstance(
        get_logger_provider(), LoggerProvider
    ):
        return False
    workers = [v for k, v in read_metrics().items() if k.startswith("worker_alive.")]
    return all(workers)


def bus_answers(url: str, token: str | None = None, timeout: float = 2.0) -> tuple[bool, str]:
    """Whether a WebSocket handshake with the bus succeeds; and what went wrong if not."""
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        with connect(url, additional_headers=headers, open_timeout=timeout, close_timeout=0.5):
            return True, "handshake ok"
    except InvalidStatus as exc:
        return False, f"handshake refused with HTTP {exc.response.status_code}"
    except TimeoutError:
        return False, f"no handshake answer within {timeout:.1f}s"
    except OSError as exc:
        return False, f"unreachable ({exc.strerror or exc})"
    except Exception as exc:
        return False, f"not a membrane bus ({type(exc).__name__}: {exc})"


def http_ok(url: str, token: str | None = None, timeout: float = 2.0) -> tuple[bool, str]:
    """Whether ``GET url`` answers 2xx; and the status or error otherwise."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return 200 <= resp.status < 300, f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"unreachable ({getattr(reason, 'strerror', None) or reason})"


def _logs_exporters() -> list[str]:
    return [
        n.strip() for n in os.environ.get("OTEL_LOGS_EXPORTER", "ledger,membrane").split(",") if n.strip()
    ]


def check_readiness(
    timeout_seconds: float = 30.0,
    *,
    bus_url: str | None = None,
    bus_token: str | None = None,
    bridge_url: str | None = None,
    bridge_token: str | None = None,
    collector_health_url: str | None = None,
    read_metrics: ReadMetrics | None = None,
    poll_interval_s: float = 0.25,
    probe_timeout_s: float = 2.0,
    components: Iterable[str] | None = None,
) -> dict[str, bool]:
    """Per component, whether it is ready; polls until all are or ``timeout_seconds`` passes.

    Components: ``exporters`` always; ``bus`` when the ``membrane`` logs exporter is on (or
    ``bus_url`` is given); ``bridge`` when ``bridge_url`` or ``MEMBRANE_BRIDGE_URL`` is set;
    ``collector`` when ``collector_health_url`` or ``MEMBRANE_COLLECTOR_HEALTH_URL`` is set.
    ``components`` narrows the check to those names.
    """
    from membrane_otel.settings import get_settings

    s = get_settings()
    read = read_metrics or _default_read_metrics
    probes: dict[str, Callable[[], bool]] = {"exporters": lambda: _exporters_ready(read)}
    if bus_url is not None or "membrane" in _logs_exporters():
        url, token = bus_url or s.bus_url, bus_token if bus_url is not None else s.bus_token
        probes["bus"] = lambda: bus_answers(url, token, probe_timeout_s)[0]
    bridge = bridge_url or (s.bridge_url if os.environ.get("MEMBRANE_BRIDGE_URL") else None)
    if bridge:
        b_token = bridge_token or s.bridge_token
        probes["bridge"] = lambda: http_ok(f"{bridge.rstrip('/')}/ready", b_token, probe_timeout_s)[0]
    health = collector_health_url or os.environ.get("MEMBRANE_COLLECTOR_HEALTH_URL")
    if health:
        probes["collector"] = lambda: http_ok(health, None, probe_timeout_s)[0]
    if components is not None:
        wanted = set(components)
        probes = {k: v for k, v in probes.items() if k in wanted}
    ready = dict.fromkeys(probes, False)
    deadline = time.monotonic() + timeout_seconds
    while True:
        for name, probe in probes.items():
            if not ready[name]:
                try:
                    ready[name] = bool(probe())
                except Exception:
                    ready[name] = False
        if all(ready.values()) or time.monotonic() + poll_interval_s > deadline:
            return ready
        time.sleep(poll_interval_s)


async def acheck_readiness(timeout_seconds: float = 30.0, **kwargs: Any) -> dict[str, bool]:
    """:func:`check_readiness` for ``await`` (the seed's form); the probes run in a thread."""
    return await asyncio.to_thread(check_readiness, timeout_seconds, **kwargs)
