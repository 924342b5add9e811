"""The console tree: snapshot renders of fixed spans, the exporter's levels, the settings file."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

from membrane_otel.spans._console_tree import ConsoleTreeSpanExporter, render_tree, span_label
from membrane_otel.translate._records import EventData, SpanData
from tests._helpers import clean_env, read_ledger, run_instrumented

T0 = 1_705_180_800_000_000_000
MS = 1_000_000
TRACE = "0af7651916cd43dd8448eb211c80319c"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def hrm(
    span_id: str,
    parent: str | None,
    layer: str,
    op: str,
    inp: str,
    out: str,
    start_ms: int,
    dur_ms: int,
    status: str = "success",
    events: list[EventData] | None = None,
    trace_id: str = TRACE,
    **meta: Any,
) -> SpanData:
    attrs: dict[str, Any] = {
        "hrm.layer": layer,
        "hrm.operation": op,
        "hrm.component": f"{op}.py",
        "hrm.input_summary": inp,
        "hrm.output_summary": out,
        "hrm.status": status,
        "hrm.event_id": f"{layer[:3]}_1705180800_{span_id[-4:]}",
    }
    attrs.update({f"hrm.meta.{k}": v for k, v in meta.items()})
    return SpanData(
        name=f"{layer}.{op}",
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent,
        start_ns=T0 + start_ms * MS,
        end_ns=T0 + (start_ms + dur_ms) * MS,
        status="error" if status == "error" else "unset",
        status_message=None,
        attributes=attrs,
        events=events or [],
        resource={},
        scope="membrane_otel.spans._hrm",
    )


SEED_TREE = [
    hrm("000000000000a001", None, "altitude", "transition", "L3→L2", "success", 0, 5, reason="user requested"),
    hrm("000000000000f001", "000000000000a001", "focus", "gate_check", "WriteApprovalGate", "allowed", 1, 2),
    hrm("000000000000e001", "000000000000f001", "memory", "write", "altitude.session", "written", 2, 3,
        tokens_saved=45, tier="warm"),
]  # fmt: skip
PROBLEMS = [
    hrm("000000000000b001", None, "focus", "route", "signal", "routed", 0, 9, trace_id="1" * 32),
    hrm("000000000000b002", "000000000000b001", "focus", "consent_check", "send_email", "denied", 1, 0,
        status="blocked", trace_id="1" * 32, blocked_reason="no consent"),
    hrm("000000000000b003", "000000000000b001", "system", "execute", "flaky", "error", 2, 4, status="error",
        trace_id="1" * 32, events=[EventData("exception", T0, {"exception.type": "ConnectionError",
                                                                "exception.message": "refused"})]),
]  # fmt: skip


def test_seed_tree_renders_exactly() -> None:
    """Three nested spans render as the seed's console output, character for character."""
    assert render_tree(reversed(SEED_TREE)) == [
        "[alt] transition: L3→L2 → success (5ms)",
        "  └─[foc] gate_check: WriteApprovalGate → allowed (2ms)",
        "      └─[mem] write: altitude.session → written (3ms) [saved 45 tokens]",
    ]


def test_errors_and_blocked_say_why() -> None:
    """An error line ends with the exception, a blocked line with the gate's reason."""
    assert render_tree(PROBLEMS) == [
        "[foc] route: signal → routed (9ms)",
        "  └─[foc] consent_check: send_email → denied (0ms) [blocked: no consent]",
        "  └─[sys] execute: flaky → error (4ms) [error: ConnectionError: refused]",
    ]


def test_colour_marks_status_and_plain_has_no_escapes() -> None:
    """With colour, success is green, blocked yellow, error red; stripped, it is the plain render."""
    coloured = render_tree(PROBLEMS, colour=True)
    assert "\x1b[32mrouted\x1b[0m" in coloured[0]
    assert "\x1b[33mdenied\x1b[0m" in coloured[1] and "\x1b[33m[blocked: no consent]" in coloured[1]
    assert (
        "\x1b[31merror\x1b[0m" in coloured[2] and "\x1b[31m[error: ConnectionError: refused]" in coloured[2]
    )
    assert [ANSI.sub("", line) for line in coloured] == render_tree(PROBLEMS)
    assert not any("\x1b" in line for line in render_tree(PROBLEMS))


def test_debug_adds_id_component_and_metadata() -> None:
    """The debug level appends the event id, component and metadata of each span."""
    line = span_label(SEED_TREE[2], debug=True)
    assert line == (
        "[mem] write: altitude.session → written (3ms) [saved 45 tokens] "
        "{id=mem_1705180800_e001, component=write.py, tokens_saved=45, tier=warm}"
    )


def test_non_hrm_spans_orphans_and_cycles_render() -> None:
    """Other instrumentation's spans show as [span]; a missing parent makes a root; a cycle ends."""
    http = SpanData("GET /search", TRACE, "00000000000000c1", None, T0, T0 + 7 * MS, "error", "503",
                    {"http.status_code": 503}, [], {}, "http")  # fmt: skip
    orphan = hrm("00000000000000c2", "ffffffffffffffff", "memory", "read", "k", "hit", 1, 1)
    loop_a = hrm("00000000000000d1", "00000000000000d2", "system", "execute", "a", "ok", 2, 1)
    loop_b = hrm("00000000000000d2", "00000000000000d1", "system", "execute", "b", "ok", 3, 1)
    assert render_tree([http, orphan, loop_a, loop_b]) == [
        "[span] GET /search → error (7ms) [error: 503]",
        "[mem] read: k → hit (1ms)",
        "[sys] execute: a → ok (1ms)",
        "  └─[sys] execute: b → ok (1ms)",
    ]


def test_deep_trees_do_not_overflow() -> None:
    """A chain deeper than Python's recursion limit renders (the walk is iterative)."""
    chain = [hrm(f"{i + 1:016x}", f"{i:016x}" if i else None, "memory", "read", f"k{i}", "hit", i, 0)
             for i in range(3000)]  # fmt: skip
    lines = render_tree(chain)
    assert len(lines) == 3000 and lines[-1].startswith("  " + "    " * 2998 + "└─[mem] read: k2999")


# --------------------------------------------------------------------------- the exporter


def readable(span: SpanData) -> ReadableSpan:
    """The SDK's finished-span form of a fixed SpanData, as the batch processor hands it over."""
    ctx = SpanContext(int(span.trace_id, 16), int(span.span_id, 16), False, TraceFlags(1))
    parent = (
        SpanContext(int(span.trace_id, 16), int(span.parent_span_id, 16), False)
        if span.parent_span_id
        else None
    )
    status = Status(StatusCode.ERROR) if span.status == "error" else Status(StatusCode.UNSET)
    return ReadableSpan(
        name=span.name,
        context=ctx,
        parent=parent,
        attributes=span.attributes,
        events=[Event(e.name, e.attributes, e.time_ns) for e in span.events],
        start_time=span.start_ns,
        end_time=span.end_ns,
        status=status,
    )


def export_all(level: str, *batches: list[SpanData], colour: bool = False) -> str:
    out = io.StringIO()
    exporter = ConsoleTreeSpanExporter(out, colour=colour, level=level, clock=lambda: T0)
    for batch in batches:
        exporter.export([readable(s) for s in batch])
    exporter.shutdown()
    return out.getvalue()


# Spans reach the exporter as they end: children first, the root last.
SEED_ENDED = [SEED_TREE[2], SEED_TREE[1], SEED_TREE[0]]
PROBLEMS_ENDED = [PROBLEMS[1], PROBLEMS[2], PROBLEMS[0]]


def test_exporter_prints_each_tree_when_its_root_ends() -> None:
    """Children wait for their root; the whole tree prints at once, in the seed's format."""
    out = io.StringIO()
    exporter = ConsoleTreeSpanExporter(out, colour=False, level="info", clock=lambda: T0)
    exporter.export([readable(SEED_ENDED[0]), readable(SEED_ENDED[1])])
    assert out.getvalue() == ""
    exporter.export([readable(SEED_ENDED[2])])
    assert out.getvalue().splitlines() == render_tree(SEED_TREE)


def test_info_prints_every_tree() -> None:
    """Level info prints both the clean tree and the troubled one."""
    assert export_all("info", SEED_ENDED, PROBLEMS_ENDED).splitlines() == render_tree(
        SEED_TREE
    ) + render_tree(PROBLEMS)


def test_warn_prints_only_trees_with_error_or_blocked() -> None:
    """Level warn skips a clean tree and prints one holding an error or a blocked gate."""
    assert export_all("warn", SEED_ENDED, PROBLEMS_ENDED).splitlines() == render_tree(PROBLEMS)


def test_debug_prints_metadata() -> None:
    """Level debug prints every tree with each span's details."""
    text = export_all("debug", SEED_ENDED)
    assert "{id=alt_1705180800_a001, component=transition.py, reason=user requested}" in text


def test_late_child_prints_at_once_and_pending_prints_at_shutdown() -> None:
    """A child ending after its printed root prints immediately; an unfinished tree prints at shutdown."""
    out = io.StringIO()
    exporter = ConsoleTreeSpanExporter(out, colour=False, level="info", clock=lambda: T0)
    exporter.export([readable(SEED_TREE[0])])
    late = hrm("000000000000aa02", "000000000000a001", "memory", "read", "late", "hit", 9, 1)
    exporter.export([readable(late)])
    assert out.getvalue().splitlines()[-1] == "[mem] read: late → hit (1ms)"
    exporter.export([readable(PROBLEMS[1])])
    assert "consent_check" not in out.getvalue()
    exporter.shutdown()
    assert (
        out.getvalue().splitlines()[-1]
        == "[foc] consent_check: send_email → denied (0ms) [blocked: no consent]"
    )


def test_colour_follows_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """colour=None: escapes on a terminal only."""
    monkeypatch.delenv("NO_COLOR", raising=False)

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        exporter = ConsoleTreeSpanExporter(stream, level="info")
        exporter.export([readable(s) for s in PROBLEMS_ENDED])
    assert "\x1b[" in tty.getvalue() and "\x1b[" not in pipe.getvalue()


def test_no_color_env_turns_colour_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """NO_COLOR keeps even a terminal plain."""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setenv("NO_COLOR", "1")
    tty = Tty()
    ConsoleTreeSpanExporter(tty, level="info").export([readable(s) for s in PROBLEMS_ENDED])
    assert "\x1b[" not in tty.getvalue() and "[blocked: no consent]" in tty.getvalue()


def test_bad_level_is_refused() -> None:
    """An unknown level is a clear ValueError."""
    with pytest.raises(ValueError, match="unknown trace level 'loud'"):
        ConsoleTreeSpanExporter(io.StringIO(), level="loud")


# --------------------------------------------------------------------------- the settings file

APP = """
from membrane_otel import tracer
with tracer.span("alt", "transition", "altitude.py", "L3→L2") as ctx:
    with tracer.span("mem", "write", "manager.py", "altitude.session") as inner:
        inner.set_output("written", tokens_saved=45)
    ctx.set_output("success")
with tracer.span("foc", "gate_check", "gates.py", "ExternalSendGate") as gate:
    gate.set_output("denied")
    gate.block("no consent")
"""


@pytest.mark.parametrize("suffix", ["yaml", "toml"])
def test_settings_file_turns_tracing_on(tmp_path: Path, suffix: str) -> None:
    """A tracing settings file (enabled, output, level) switches a program's tracing on, no env flag."""
    out = tmp_path / "trace-ledger.jsonl"
    body = (
        f"tracing:\n  enabled: true\n  output: {out}\n  level: warn\n"
        if suffix == "yaml"
        else f'[tracing]\nenabled = true\noutput = "{out}"\nlevel = "warn"\n'
    )
    settings = tmp_path / f"settings.{suffix}"
    settings.write_text(body)
    app = tmp_path / "app.py"
    app.write_text(APP)
    env = clean_env(tmp_path, MEMBRANE_TRACE_CONFIG=str(settings))
    proc = run_instrumented(app, env)
    assert proc.returncode == 0, proc.stderr
    # `output` gets the seed's TraceEvent lines, in addition to the ledger's span lines.
    assert sorted(t["operation"] for t in read_ledger(out)) == ["gate_check", "transition", "write"]
    traces = [ln for ln in read_ledger(tmp_path / "ledger.jsonl") if ln["event"] == "hrm_trace"]
    assert sorted(t["operation"] for t in traces) == ["gate_check", "transition", "write"]
    # level warn: only the tree holding the blocked gate is printed.
    tree_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith(("[", "  └─"))]
    assert len(tree_lines) == 1, proc.stderr
    assert re.fullmatch(
        r"\[foc\] gate_check: ExternalSendGate → denied \(\d+ms\) \[blocked: no consent\]", tree_lines[0]
    )
