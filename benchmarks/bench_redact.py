"""Row 9: secret redaction — the cost of one policy on every exit.

Timed side by side, interleaved (one call each, rotating):

* baseline: ``logging.Formatter().format`` of a record whose message is the same 1 KB line —
  what putting that line on a console costs anyway, and the thing the redacting formatter
  adds to;
* the redactor over a typical 1 KB log line with no secret (the common case: what *not*
  matching costs), and over a 1 KB line holding three secrets;
* ``RedactingFormatter.format`` of the clean line (the console/stderr path).

Then the hostile 100 KB inputs of the corpus (runs with no terminator, openers that never
close, dense keys without values), each timed alone, median of a few runs: no catastrophic
backtracking means each stays within 10 ms. Targets (issue 14): median ≤ 20 µs per 1 KB line,
each hostile 100 KB input ≤ 10 ms.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from benchmarks import add_profiles, interleave, profile_top, ratio, row, timed, timer_overhead_ns, variant

GLOBAL_STATE = False


def _line(secrets: bool) -> str:
    line = (
        "2025-10-29 12:00:00,123 INFO orchestration.services.queue_poller [pid=41231 thread=MainThread] "
        "processed batch batch_id=8f2a61c0d9e4 items=25 duration_ms=153.2 tokens_saved=45 max_tokens=1000 "
        "model=claude-3-5-sonnet url=https://api.example.com/v1/messages?page=2&limit=50 status=200 "
        "citizen=code_substrate_orchestration_scripts_resurrect_all_citizens_py retries=0 queue_depth=17 "
    )
    if secrets:
        line += (
            "api_key=" + "sk-live-0000SECRET0000 "
            "dsn=postgres://app:" + "Hunter2pw@db:5432/x "
            "Authorization: Bearer " + "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlc2lnbmF0dXJl "
        )
    while len(line) < 1024:
        line += "stimulus injected into substrate with novelty 0.25 and trust 0.9; "
    return line[:1024]


def run(quick: bool) -> dict[str, Any]:
    from tests.data.secret_corpus import hostile_inputs

    from membrane_otel.logs._redact import redact_secrets
    from membrane_otel.logs._redact_format import RedactingFormatter

    rounds, per_round, warmup = (5, 200, 200) if quick else (30, 1000, 2000)
    clean, dirty = _line(False), _line(True)
    record = logging.LogRecord("app", logging.INFO, __file__, 1, clean, None, None)
    plain_fmt, redacting_fmt = logging.Formatter(), RedactingFormatter()
    fns = {
        "formatter": lambda: plain_fmt.format(record),
        "clean": lambda: redact_secrets(clean),
        "dirty": lambda: redact_secrets(dirty),
        "redacting_formatter": lambda: redacting_fmt.format(record),
    }
    samples = interleave(
        {k: timed(f) for k, f in fns.items()},
        rounds=rounds,
        per_round=per_round,
        warmup=warmup,
        overhead_ns=timer_overhead_ns(),
    )
    med = {k: sorted(v)[len(v) // 2] / 1000 for k, v in samples.items()}

    # Hostile inputs: each alone (one is ~1000x a line), median of a few runs, in ms.
    repeats = 5 if quick else 9  # one 100 KB run is ~5 ms: a median of 3 swings with the load
    hostile_ms: dict[str, float] = {}
    for name, text in hostile_inputs().items():
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            redact_secrets(text)
            runs.append((time.perf_counter_ns() - t0) / 1e6)
        hostile_ms[name] = sorted(runs)[len(runs) // 2]
    worst = max(hostile_ms, key=hostile_ms.__getitem__)
    words = hostile_inputs()["words"]
    lower_ms = min(_time_ms(words.lower) for _ in range(repeats))

    result = row(
        "redact",
        "Secret redaction: a 1 KB log line, and hostile 100 KB inputs",
        variants=[
            variant("logging.Formatter().format, 1 KB message (baseline)", samples["formatter"]),
            variant("redact_secrets, clean 1 KB line", samples["clean"]),
            variant("redact_secrets, 1 KB line with 3 secrets", samples["dirty"]),
            variant("RedactingFormatter.format, clean 1 KB message", samples["redacting_formatter"]),
            variant(f"worst hostile 100 KB input ({worst})", median=hostile_ms[worst], unit="ms", n=repeats),
            variant("str.lower() of 100 KB (context: one pass)", median=lower_ms, unit="ms", n=repeats),
        ],
        ratios=[
            ratio("clean 1 KB line / 20 µs budget", med["clean"] / 20.0, 1.0, "<=", "issue 14"),
            ratio("1 KB line with secrets / 20 µs budget", med["dirty"] / 20.0, 1.0, "<=", "issue 14"),
            ratio(
                "worst hostile 100 KB input / 10 ms budget", hostile_ms[worst] / 10.0, 1.0, "<=", "issue 14"
            ),
            ratio(
                "RedactingFormatter / Formatter (context)",
                med["redacting_formatter"] / med["formatter"],
                None,
                "<=",
            ),
        ],
        note="Hostile inputs (median ms of "
        f"{repeats}): "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(hostile_ms.items(), key=lambda kv: -kv[1])),
    )
    hostile = hostile_inputs()[worst]
    return add_profiles(
        result,
        {
            "clean 1 KB line / 20 µs budget": lambda: profile_top(fns["clean"], 3000),
            "1 KB line with secrets / 20 µs budget": lambda: profile_top(fns["dirty"], 3000),
            "worst hostile 100 KB input / 10 ms budget": lambda: profile_top(
                lambda: redact_secrets(hostile), 5
            ),
        },
    )


def _time_ms(fn: Any) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e6
