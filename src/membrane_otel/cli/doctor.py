"""``membrane-otel doctor``: what is wrong with this set-up, and how to fix it.

One line per check, ``OK`` / ``WARN`` / ``FAIL`` / ``SKIP``, with a suggested fix under each
problem; the exit code is 1 when any check FAILs. Each network probe is bounded (≤ 2 s) and
the probes run side by side, so the whole diagnosis takes about one probe's time.

Reads the same environment a program would (``MEMBRANE_*``, ``OTEL_*``); changes nothing —
the ledger is opened for reading (and for append, writing nothing, to prove it can be written;
where it does not exist yet a scratch file is made and removed) and the spool is only listed.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from membrane_otel.settings import Settings

__all__ = ["HELP", "build_parser", "run"]

HELP = "diagnose this machine's membrane-otel set-up"

Status = Literal["OK", "WARN", "FAIL", "SKIP"]
PROBE_TIMEOUT_S = 2.0


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str | None = None


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the checks as one JSON document")
    parser.add_argument(
        "--timeout", type=float, default=PROBE_TIMEOUT_S, help="seconds per network probe (default 2)"
    )


# -- settings and exporters ----------------------------------------------------------------------


def check_settings() -> tuple[Check, Settings]:
    from membrane_otel.settings import ConfigError, load_settings

    try:
        return Check("settings", "OK", "MEMBRANE_* settings are valid"), load_settings()
    except ConfigError as exc:
        var = str(exc).split("=", 1)[0].split(" ", 1)[0]
        fix = f"correct {var} or unset it (the checks below use the default settings)"
        return Check("settings", "FAIL", str(exc), fix), load_settings(environ={})


def effective_exporters(settings: Settings) -> dict[str, list[str]]:
    """What each signal exports to: the user's OTEL_*_EXPORTER, else our defaults (as configure())."""
    defaults = {
        "traces": "ledger,console" if settings.trace else "ledger",
        "logs": "ledger,membrane",
        "metrics": "none",
    }
    out: dict[str, list[str]] = {}
    for signal, default in defaults.items():
        raw = os.environ.get(f"OTEL_{signal.upper()}_EXPORTER") or default
        out[signal] = [n.strip() for n in raw.split(",") if n.strip()]
    return out


def check_exporters(exporters: dict[str, list[str]]) -> list[Check]:
    from importlib.metadata import entry_points

    checks: list[Check] = []
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        checks.append(
            Check(
                "exporters", "WARN", "OTEL_SDK_DISABLED=true: nothing is recorded", "unset OTEL_SDK_DISABLED"
            )
        )
    unknown: list[str] = []
    for signal, names in exporters.items():
        installed = {ep.name for ep in entry_points(group=f"opentelemetry_{signal}_exporter")}
        if signal == "traces":
            installed.add("console")  # resolved to our tree exporter by configure()
        for name in names:
            if name != "none" and name not in installed:
                unknown.append(
                    f"OTEL_{signal.upper()}_EXPORTER names {name!r}; installed: {', '.join(sorted(installed))}"
                )
    summary = " · ".join(f"{s}: {','.join(n) or 'none'}" for s, n in exporters.items())
    if unknown:
        checks.append(
            Check(
                "exporters",
                "FAIL",
                "; ".join(unknown),
                "fix the exporter name, or install the package providing it",
            )
        )
    else:
        checks.append(Check("exporters", "OK", summary))
    distros = {ep.name for ep in entry_points(group="opentelemetry_distro")}
    if "membrane_otel" in distros:
        checks.append(Check("distro", "OK", "opentelemetry-instrument loads membrane-otel"))
    else:
        checks.append(
            Check(
                "distro",
                "WARN",
                "membrane-otel's distro entry point is not installed",
                "reinstall the package (pip install -e . / pip install membrane-otel)",
            )
        )
    return checks


# -- network probes ------------------------------------------------------------------------------


def _tcp(host: str, port: int, timeout: float) -> str | None:
    """None when something accepts a connection at host:port, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc.strerror or str(exc) or type(exc).__name__


def _otlp_endpoint() -> tuple[str, str]:
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc").strip() or "grpc"
    default = "http://localhost:4317" if protocol == "grpc" else "http://localhost:4318"
    return os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip() or default, protocol


def check_collector(exporters: dict[str, list[str]], timeout: float) -> Check:
    uses_otlp = any(n.startswith("otlp") for names in exporters.values() for n in names)
    endpoint, protocol = _otlp_endpoint()
    explicit = bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))
    health = os.environ.get("MEMBRANE_COLLECTOR_HEALTH_URL", "").strip()
    if not uses_otlp and not explicit and not health:
        return Check("collector", "SKIP", "not used (embedded mode: no otlp exporter)")
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    host = parts.hostname or "localhost"
    port = parts.port or (4317 if protocol == "grpc" else 4318)
    where = f"{endpoint} ({protocol})"
    start_it = (
        "start the Collector (docker compose up, or the binary from tools/build_collector.sh with "
        "collector-config/otelcol.yaml)"
    )
    problem = _tcp(host, port, timeout)
    if problem is not None:
        status: Status = "FAIL" if uses_otlp else "WARN"
        return Check(
            "collector",
            status,
            f"nothing answers at {where}: {problem}",
            f"{start_it}, or set OTEL_EXPORTER_OTLP_ENDPOINT to where it listens",
        )
    if health:
        from membrane_otel.ops._watchdog import http_ok

        ok, detail = http_ok(health, None, timeout)
        if not ok:
            return Check(
                "collector",
                "FAIL",
                f"{where} accepts connections but its health check {health} says {detail}",
                "look at the Collector's log; or fix MEMBRANE_COLLECTOR_HEALTH_URL (health_check extension)",
            )
    if not uses_otlp:
        return Check(
            "collector",
            "WARN",
            f"answers at {where}, but no exporter sends to it",
            "add otlp to OTEL_TRACES_EXPORTER / OTEL_LOGS_EXPORTER (collector mode), or unset the endpoint",
        )
    return Check("collector", "OK", f"answers at {where}" + (f"; {health} healthy" if health else ""))


def check_bridge(settings: Settings, exporters: dict[str, list[str]], timeout: float) -> Check:
    explicit = bool(os.environ.get("MEMBRANE_BRIDGE_URL"))
    collector_mode = any(n.startswith("otlp") for n in exporters["logs"] + exporters["traces"])
    if not explicit and not collector_mode:
        return Check("bridge", "SKIP", "not used (embedded mode; set MEMBRANE_BRIDGE_URL to check one)")
    from membrane_otel.ops._watchdog import http_ok

    url = f"{settings.bridge_url}/ready"
    ok, detail = http_ok(url, settings.bridge_token, timeout)
    if ok:
        return Check("bridge", "OK", f"{url} is ready")
    if detail == "HTTP 401":
        fix = "set MEMBRANE_BRIDGE_TOKEN to the bridge's token"
    elif detail.startswith("HTTP"):
        fix = "the bridge runs but is not ready: check its ledger path and bus (GET /ready shows which)"
    else:
        fix = "start it: membrane-otel bridge serve, or set MEMBRANE_BRIDGE_URL to where it runs"
    return Check("bridge", "FAIL" if explicit else "WARN", f"{url}: {detail}", fix)


def check_bus(settings: Settings, exporters: dict[str, list[str]], timeout: float) -> Check:
    if "membrane" not in exporters["logs"] and not os.environ.get("MEMBRANE_BUS_URL"):
        return Check("bus", "SKIP", "not used (no membrane logs exporter)")
    from membrane_otel.ops._watchdog import bus_answers

    ok, detail = bus_answers(settings.bus_url, settings.bus_token, timeout)
    if ok:
        return Check("bus", "OK", f"{settings.bus_url} accepts connections")
    if "401" in detail or "403" in detail:
        fix = "set MEMBRANE_BUS_TOKEN to the bus's token"
    else:
        port = urlsplit(settings.bus_url).port or 8000
        fix = (
            f"start a bus (membrane-otel bus serve --port {port}) or set MEMBRANE_BUS_URL to yours; "
            "meanwhile envelopes wait in the spool (or set OTEL_LOGS_EXPORTER=ledger to not use the membrane)"
        )
    return Check("bus", "FAIL", f"{settings.bus_url}: {detail}", fix)


# -- files ---------------------------------------------------------------------------------------


def _writable_dir(path: Path) -> bool:
    """Whether ``path`` (a directory, maybe not there yet) can be created/written by us."""
    p = path
    while not p.exists():
        if p.parent == p:
            return False
        p = p.parent
    return p.is_dir() and os.access(p, os.W_OK | os.X_OK)


def check_spool(settings: Settings) -> Check:
    from membrane_otel.membrane._spool import Spool

    directory = Path(settings.spool_dir)
    if not _writable_dir(directory):
        return Check(
            "spool",
            "FAIL",
            f"{directory} is not writable: envelopes would be dropped while the bus is down",
            "fix its permissions or set MEMBRANE_SPOOL_DIR to a writable directory",
        )
    try:
        spool = Spool(directory, max_bytes=max(1, settings.spool_max_bytes))
        spool.check()  # another user's, world-writable or symlinked: refused (an OSError)
        st = spool.status()
    except OSError as exc:
        return Check("spool", "FAIL", f"{directory}: {exc}", "fix the directory or set MEMBRANE_SPOOL_DIR")
    waiting = int(st["envelopes"])
    detail = f"{directory}: {waiting} envelopes waiting, {st['bytes']} bytes of {settings.spool_max_bytes}"
    if st.get("corrupt"):
        return Check("spool", "WARN", f"{detail}; {st['corrupt']} corrupt file(s) set aside",
                     f"inspect and delete the *.corrupt files in {directory}")  # fmt: skip
    if settings.spool_max_bytes and st["bytes"] > 0.8 * settings.spool_max_bytes:
        return Check("spool", "WARN", f"{detail}: nearly full, the oldest will be dropped",
                     "bring the bus back (membrane-otel spool flush), or raise MEMBRANE_SPOOL_MAX_BYTES")  # fmt: skip
    if waiting:
        age = st.get("oldest_age_s")
        since = f" (oldest {age:.0f}s)" if isinstance(age, int | float) else ""
        return Check("spool", "WARN", detail + since,
                     "they replay when the bus answers; or run: membrane-otel spool flush")  # fmt: skip
    return Check("spool", "OK", detail)


def _can_append(path: Path) -> bool:
    """Whether the ledger file can really be created or appended to.

    ``os.access`` says yes to root on a read-only file system (or under ``/proc``), so this
    tries: the file opened for append (nothing written), or a scratch file made and removed
    in the nearest existing directory on the way to it.
    """
    import tempfile

    try:
        if path.exists():
            if not path.is_file():
                return False
            with open(path, "ab"):
                return True
        p = path.parent
        while not p.exists():
            if p.parent == p:
                return False
            p = p.parent
        if not p.is_dir():
            return False
        fd, scratch = tempfile.mkstemp(prefix=".membrane-doctor-", dir=p)
        os.close(fd)
        os.unlink(scratch)
        return True
    except OSError:
        return False


def check_ledger(settings: Settings) -> Check:
    path = Path(settings.ledger_path)
    if not path.exists():
        if _writable_dir(path.parent) and _can_append(path):
            return Check("ledger", "OK", f"{path} will be created on the first record")
        return Check("ledger", "FAIL", f"{path.parent} cannot be created or written",
                     "set MEMBRANE_LEDGER_PATH to a writable location")  # fmt: skip
    if not os.access(path, os.W_OK) or not _writable_dir(path.parent) or not _can_append(path):
        return Check(
            "ledger", "FAIL", f"{path} is not writable", "fix its permissions or set MEMBRANE_LEDGER_PATH"
        )
    from membrane_otel.ledger._verify import verify

    try:
        report = verify(path)
    except OSError as exc:
        return Check("ledger", "FAIL", f"{path} cannot be read: {exc}", "fix its permissions")
    if report.problem is not None:
        p = report.problem
        return Check("ledger", "FAIL", f"{path}: chain broken at {p.where()} ({p.kind}): {p.message}",
                     "the ledger was changed after it was written; run membrane-otel ledger verify for details, "
                     "and keep the file as evidence")  # fmt: skip
    detail = f"{path}: {report.lines} lines, chain verifies across {len(report.files)} file(s)"
    if report.torn:
        return Check("ledger", "WARN", f"{detail}; {len(report.torn)} torn line(s) from a crashed writer",
                     "harmless (the chain continues past them); nothing to do")  # fmt: skip
    return Check("ledger", "OK", detail)


# -- the command ---------------------------------------------------------------------------------


def diagnose(timeout: float = PROBE_TIMEOUT_S) -> list[Check]:
    """Every check, in a fixed order; the network probes run concurrently."""
    timeout = min(max(timeout, 0.1), PROBE_TIMEOUT_S)
    settings_check, settings = check_settings()
    exporters = effective_exporters(settings)
    checks = [settings_check, *check_exporters(exporters)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        collector = pool.submit(check_collector, exporters, timeout)
        bridge = pool.submit(check_bridge, settings, exporters, timeout)
        bus = pool.submit(check_bus, settings, exporters, timeout)
        local = [check_spool(settings), check_ledger(settings)]
        checks += [collector.result(), bridge.result(), bus.result(), *local]
    return checks


_COLORS = {"OK": "\x1b[32m", "WARN": "\x1b[33m", "FAIL": "\x1b[31m", "SKIP": "\x1b[2m"}


def render(checks: list[Check], color: bool = False) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        tag = f"{c.status:<4}"
        if color:
            tag = f"{_COLORS[c.status]}{tag}\x1b[0m"
        lines.append(f"{tag}  {c.name.ljust(width)}  {c.detail}")
        if c.fix and c.status in ("WARN", "FAIL"):
            lines.append(f"{'':4}  {'':{width}}  → {c.fix}")
    failed = sum(c.status == "FAIL" for c in checks)
    warned = sum(c.status == "WARN" for c in checks)
    lines.append("")
    lines.append(f"{failed} problem(s), {warned} warning(s)" if failed or warned else "all good")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    checks = diagnose(args.timeout)
    broken = any(c.status == "FAIL" for c in checks)
    if args.json:
        doc: dict[str, Any] = {"ok": not broken, "checks": [asdict(c) for c in checks]}
        print(json.dumps(doc, indent=2))
    else:
        color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print(render(checks, color))
    return 1 if broken else 0
