"""The package's shape: each public module's surface pinned, no import cycles, small modules."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "membrane_otel"
MAX_LINES = 450

# Every public module (no `_`-prefixed part in its dotted name) and exactly what it exports.
# Adding a public name is a promise to users: add it here on purpose.
PUBLIC: dict[str, list[str]] = {
    "membrane_otel.bridge": [
        "DEFAULT_MAX_BODY",
        "Bridge",
        "BridgeHTTPServer",
        "LedgerUnavailable",
        "Outcome",
        "ServerOptions",
        "make_server",
    ],
    "membrane_otel.cli": ["main"],
    "membrane_otel.cli.bridge": ["HELP", "build_parser", "run"],
    "membrane_otel.cli.bus": ["HELP", "build_parser", "run"],
    "membrane_otel.cli.chaos": ["HELP", "build_parser", "run"],
    "membrane_otel.cli.demo": ["HELP", "build_parser", "run"],
    "membrane_otel.cli.doctor": ["HELP", "build_parser", "run"],
    "membrane_otel.cli.emit": ["HELP", "build_parser", "fast_main", "run"],
    "membrane_otel.cli.ledger": ["HELP", "build_parser", "run"],
    "membrane_otel.cli.spool": ["HELP", "build_parser", "run"],
    "membrane_otel.cli.traces": ["HELP", "build_parser", "run"],
    "membrane_otel.distro": ["MembraneConfigurator", "MembraneDistro"],
    "membrane_otel.events": [
        "append_ledger",
        "emit_alert",
        "emit_event",
        "emit_monitoring_snapshot",
        "emit_system_event",
        "emit_task_lifecycle",
    ],
    "membrane_otel.exporters": [
        "ConsoleTreeSpanExporter",
        "LedgerLogExporter",
        "LedgerSpanExporter",
        "MembraneLogExporter",
    ],
    "membrane_otel.ledger": ["Ledger", "Problem", "ledger_files", "ledger_for", "read_lines", "verify"],
    "membrane_otel.logs": [
        "MembraneLogProcessor",
        "Redactor",
        "dedupe_key",
        "redact_secrets",
        "setup_l2_logger",
        "stack_fingerprint",
    ],
    "membrane_otel.membrane": [
        "BusClient",
        "BusError",
        "BusServer",
        "Envelope",
        "MembranePublisher",
        "Spool",
        "StimulusFeatures",
    ],
    "membrane_otel.ops": ["Narrator", "PipelineWatchdog", "acheck_readiness", "check_readiness", "narrate"],
    "membrane_otel.settings": ["ConfigError", "Settings", "get_settings", "load_settings"],
    "membrane_otel.spans": ["ConsoleTreeSpanExporter", "HRMTracer", "TraceEvent", "tracer"],
    "membrane_otel.stimuli": [
        "MembraneEmitter",
        "OriginType",
        "Scope",
        "StimulusFeatures",
        "emit_metric",
        "emit_script_error",
        "emit_tool_result",
        "emit_ui_action",
        "get_metrics",
    ],
    "membrane_otel.testing": ["Captured", "capture"],
    "membrane_otel.watchdog": ["Layer2Watchdog", "clarity_5w1h", "layer2_watchdog", "register_component"],
    "membrane_otel.translate": [
        "EventData",
        "LogData",
        "SpanData",
        "log_envelope",
        "log_from_sdk",
        "log_line",
        "span_from_sdk",
        "span_line",
    ],
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_public(name: str) -> bool:
    return not any(part.startswith("_") for part in name.split("."))


def test_every_public_module_is_pinned() -> None:
    """A module users can import without a `_` in its path is listed above, and nothing else is."""
    public = {name for name in _modules() if _is_public(name) and name != "membrane_otel"}
    assert public == set(PUBLIC), "new public modules need a pinned __all__; removed ones, a deletion here"


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_module_exports_exactly_its_pinned_names(name: str) -> None:
    """__all__ is the pinned list and every name in it resolves."""
    module = importlib.import_module(name)
    assert sorted(module.__all__) == sorted(PUBLIC[name])
    for attr in module.__all__:
        assert getattr(module, attr) is not None, f"{name}.{attr}"


def _imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports at run time (type-checking-only imports aside)."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {name for name in found if name in known and name != module}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    """No two modules import each other, directly or through others (function-level imports count)."""
    known = _modules()
    graph = {name: _imports(name, path, known) for name, path in known.items()}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    """The check above can fail: a two-module loop is reported."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_modules_stay_small() -> None:
    """A module over ~450 lines holds two ideas: split it."""
    big = {
        name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert big == {}
