"""THE table of performance targets: the only figures the report judges.

A row may compute any ratio it likes; only a ratio whose label is here has a target, counts
in "N of M met", and is checked by the quick run in ``make test`` (more than
:data:`QUICK_TOLERANCE` times off its target fails it). Everything else is context. Each
target names the goal it comes from and says what a user pays if it is missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Op = Literal["<=", ">="]
# The quick run is short and the machine shared: it catches a figure that is broken (an order
# of magnitude off), not one that is a little slow. The full run judges the targets.
QUICK_TOLERANCE = 3.0


@dataclass(frozen=True, slots=True)
class Target:
    row: str
    label: str
    target: float
    op: Op
    goal: str
    # A known miss: where the figure stands today (measured), and the issue it stays open in —
    # or None when its issue was resolved with this figure named as missed in the closing note.
    # The report still says "missed"; the quick run then guards the figure against getting
    # worse than QUICK_TOLERANCE times that standing, so a known miss keeps a regression check
    # instead of turning every CI run red or being dropped.
    open_at: float | None = None
    open_issue: int | None = None


TARGETS: tuple[Target, ...] = (
    Target(
        "span", "HRM / bare SDK span", 1.3, "<=", "issue 3: an HRM span costs the caller ≤ 1.3× a bare span"
    ),
    Target("span", "HRM / Logfire span", 0.5, "<=", "issue 3: an HRM span costs ≤ half a Logfire span"),
    Target("span", "tracing off / 1 µs budget", 1.0, "<=", "issue 3: tracing off costs ≤ 1 µs"),
    Target(
        "errorlog",
        "setup_l2_logger / OTel LoggingHandler",
        1.0,
        "<=",
        "issue 4: logger.exception costs the caller no more than plain OTel",
    ),
    Target("errorlog", "fingerprint / 5 µs budget", 1.0, "<=", "issue 17: a stack fingerprint ≤ 5 µs"),
    Target(
        "downstream",
        "p99 dead / p99 healthy",
        1.1,
        "<=",
        "issue 9: the caller's p99 does not move when the bus and the Collector are down",
    ),
    Target(
        "ledger",
        "ledger exporter throughput / plain orjson writes",
        0.5,
        ">=",
        "issue 6: the chained ledger writes at ≥ half the rate of raw orjson bytes to a file",
    ),
    Target(
        "ingest",
        "bridge ingest (http) / bare decode",
        0.5,
        ">=",
        "issue 7/13: the bridge (publisher on) ingests OTLP/HTTP at ≥ half the rate of a bare decode",
        open_at=0.33,
        open_issue=13,
    ),
    Target(
        "ingest",
        "bridge ingest (grpc) / bare decode",
        0.5,
        ">=",
        "issue 7/13: the bridge (publisher on) ingests OTLP/gRPC at ≥ half the rate of a bare decode",
        open_at=0.33,
        open_issue=13,
    ),
    Target(
        "e2e", "embedded logger.error p99 / 1 s", 1.0, "<=", "issue 9: an error is in the ledger within 1 s"
    ),
    Target(
        "e2e", "embedded emit_event p99 / 1 s", 1.0, "<=", "issue 6: an event is in the ledger within 1 s"
    ),
    Target("e2e", "collector p50 / 1.5 s", 1.0, "<=", "issue 7: through the Collector within 1.5 s"),
    Target("e2e", "collector p99 / 1.5 s", 1.0, "<=", "issue 7: through the Collector within 1.5 s"),
    Target(
        "emit", "emit / python -c pass", 2.0, "<=", "issue 6: the shell emitter starts like python itself"
    ),
    Target(
        "memory", "storm RSS growth, second half (MB) / 5 MB", 1.0, "<=", "bounded queues: memory stays flat"
    ),
    Target(
        "storm",
        "storm CPU per error, distinct / plain OTel",
        1.0,
        "<=",
        "issue 17: distinct errors cost the process no more CPU than plain OTel",
    ),
    Target(
        "storm",
        "storm CPU per error, same / plain OTel",
        0.3,
        "<=",
        "issue 17: a storm of one error costs the process ≤ 0.3× plain OTel",
    ),
    Target(
        "storm",
        "storm caller latency, distinct / plain OTel",
        1.0,
        "<=",
        "issue 17: the caller pays ≤ plain OTel",
    ),
    Target(
        "storm",
        "storm caller latency, same / plain OTel",
        1.0,
        "<=",
        "issue 17: the caller pays ≤ plain OTel",
    ),
    Target(
        "storm",
        "storm errors unaccounted for, distinct (count)",
        0.0,
        "<=",
        "issue 17: every error accounted for",
    ),
    Target(
        "storm",
        "storm errors unaccounted for, same (count)",
        0.0,
        "<=",
        "issue 17: every error accounted for",
    ),
    Target(
        "startup",
        "opentelemetry-instrument start-up / upstream distro",
        1.1,
        "<=",
        "issue 17: `opentelemetry-instrument python -c pass` with this distro ≤ 1.1× the upstream distro",
    ),
)

TARGETS += (
    # Redaction has a row of its own (issue 14); the errorlog row's redaction figure is context.
    Target("redact", "clean 1 KB line / 20 µs budget", 1.0, "<=", "issue 4/14: redaction ≤ 20 µs per KB"),
    Target(
        "redact",
        "1 KB line with secrets / 20 µs budget",
        1.0,
        "<=",
        "issue 4/14: redaction ≤ 20 µs per KB — the median line is a clean one (met above); a line "
        "carrying three secrets pays ~4 µs per secret found on top: a known miss",
        open_at=3.4,
    ),
    Target(
        "redact",
        "worst hostile 100 KB input / 10 ms budget",
        1.0,
        "<=",
        "issue 14: no input makes redaction run away (≤ 10 ms for 100 KB)",
    ),
)

BY_LABEL: dict[str, Target] = {t.label: t for t in TARGETS}


def lookup(label: str) -> Target | None:
    return BY_LABEL.get(label)


def quick_bound(target: Target) -> Target:
    """What the quick run holds a figure to: its target, or, while its issue is open, the figure
    it stands at today (so the check still catches a regression)."""
    if target.open_at is None:
        return target
    return Target(target.row, target.label, target.open_at, target.op, target.goal)


def off_by(value: float, target: Target) -> float:
    """How many times worse than its target a figure is (≤ 1: met). A zero target (counts
    that must be 0) is infinitely off as soon as the count is not 0."""
    if target.op == "<=":
        if target.target == 0:
            return 1.0 if value <= 0 else float("inf")
        return value / target.target
    return target.target / value if value > 0 else float("inf")
