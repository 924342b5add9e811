"""``membrane-otel emit EVENT_TYPE``: the shell emitter (replaces the seed's ``emit_event.ps1``).

    membrane-otel emit system_startup -p component=quick_status -p version=1.0
    membrane-otel emit health_check --payload '{"status": "HEALTHY", "confidence": 0.786}' \\
        --session-id "$SESSION_ID"

It appends one line straight to the ledger with :class:`membrane_otel.ledger._writer.Ledger`: the
same hash chain, the same lock and the same line shape as the OTel exporter writes. Start-up
time is the feature here (shell scripts call it in loops), so this module and what it
imports are standard library only: no OTel SDK, no pydantic; and :func:`fast_main` parses
the usual command lines without even ``argparse`` (anything else falls back to it).
"""

from __future__ import annotations

import json
import os
import sys

from membrane_otel._internal.tables import DEFAULT_LEDGER_MAX_BYTES

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy honours the name)
if TYPE_CHECKING:
    import argparse

__all__ = ["HELP", "build_parser", "fast_main", "run"]

HELP = "append one event to the ledger (the shell emitter)"

DEFAULT_LEDGER = "memory/resonance_ledger.jsonl"
DEFAULT_MAX_BYTES = DEFAULT_LEDGER_MAX_BYTES
_WORDS = {"true": True, "false": False, "null": None, "none": None}


def build_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("event_type", metavar="EVENT_TYPE", help="e.g. task_started, health_check, migration")
    parser.add_argument("--payload", metavar="JSON", help="payload fields as one JSON object")
    parser.add_argument(
        "-p",
        "--param",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="one payload field; numbers, true/false/null are typed, the rest are strings "
        "(KEY:=JSON takes a raw JSON value); repeatable, wins over --payload",
    )
    parser.add_argument("--task-id")
    parser.add_argument("--persona-id")
    parser.add_argument("--session-id")
    parser.add_argument(
        "--ledger",
        metavar="PATH",
        help=f"ledger file (default: $MEMBRANE_LEDGER_PATH, $AGI_LEDGER_PATH, else {DEFAULT_LEDGER})",
    )
    parser.add_argument(
        "--echo", action="store_true", help="print the line as written (without its chain fields)"
    )


def parse_value(raw: str) -> object:
    """``-p`` values: ints, floats, true/false/null as such; anything else stays a string."""
    word = raw.strip().lower()
    if word in _WORDS:
        return _WORDS[word]
    text = raw.strip()
    # Only plain decimal numbers: "007", "1e3" or "0x10" are kept as written (ids, versions).
    digits = text[1:] if text[:1] in "+-" else text
    if digits.isdigit() and (digits == "0" or not digits.startswith("0")):
        return int(text)
    whole, dot, frac = digits.partition(".")
    if dot and whole.isdigit() and frac.isdigit() and (whole == "0" or not whole.startswith("0")):
        return float(text)
    return raw


def _payload(args: argparse.Namespace) -> dict[str, object]:
    payload: dict[str, object] = {}
    if args.payload:
        try:
            data = json.loads(args.payload)
        except ValueError as exc:
            raise SystemExit(f"membrane-otel emit: --payload is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise SystemExit("membrane-otel emit: --payload must be a JSON object, e.g. '{\"k\": 1}'")
        payload.update(data)
    for item in args.params:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"membrane-otel emit: -p {item!r}: expected KEY=VALUE")
        if key.endswith(":"):
            try:
                payload[key[:-1]] = json.loads(raw)
            except ValueError as exc:
                raise SystemExit(f"membrane-otel emit: -p {item!r}: not valid JSON: {exc}") from None
        else:
            payload[key] = parse_value(raw)
    return payload


def _redacted(payload: dict[str, object], ids: dict[str, str | None]) -> dict[str, object]:
    """The payload (and ids) through the redaction policy: ``-p api_key=sk-…`` never reaches the file.

    Imported only when there is something to redact; the rules themselves are compiled only
    when a value looks like it could hold a secret, so a plain emit stays cheap.
    """
    if not payload and not any(ids.values()):
        return payload
    from membrane_otel.logs._redact import Redactor

    raw = os.environ.get("MEMBRANE_REDACT_PATTERNS", "").strip()
    patterns: list[str] = []
    if raw:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise SystemExit(
                'MEMBRANE_REDACT_PATTERNS is not valid: expected a JSON array of regex strings, e.g. ["sess-[0-9a-f]+"]'
            )
        patterns = data
    try:
        redactor = Redactor(extra_patterns=patterns)
    except ValueError as exc:
        raise SystemExit(f"MEMBRANE_REDACT_PATTERNS is not valid: {exc}") from None
    for key, value in ids.items():
        if value:
            ids[key] = redactor(value)
    return redactor.redact_value(payload)


def resolve_ledger_path(explicit: str | None) -> str:
    """``--ledger``, else ``$MEMBRANE_LEDGER_PATH``, else ``$AGI_LEDGER_PATH``, else the default."""
    return (
        explicit
        or os.environ.get("MEMBRANE_LEDGER_PATH")
        or os.environ.get("AGI_LEDGER_PATH")
        or DEFAULT_LEDGER
    )


def _max_bytes() -> int:
    raw = os.environ.get("MEMBRANE_LEDGER_MAX_BYTES", "").strip()
    if not raw:
        return DEFAULT_MAX_BYTES
    if not raw.isdigit():
        raise SystemExit(f"MEMBRANE_LEDGER_MAX_BYTES={raw!r} is not valid: expected a whole number of bytes")
    return int(raw)


def _service() -> str:
    return os.environ.get("OTEL_SERVICE_NAME") or "membrane-otel-emit"


def run(args: argparse.Namespace) -> int:
    import time

    from membrane_otel.ledger._chain import builtin_sha256
    from membrane_otel.ledger._writer import Ledger
    from membrane_otel.translate._shape import event_line

    ids = {"task_id": args.task_id, "persona_id": args.persona_id, "session_id": args.session_id}
    payload = _redacted(_payload(args), ids)
    line = event_line(
        args.event_type,
        payload,
        time_ns=time.time_ns(),
        record_id=os.urandom(12).hex(),
        ids=ids,
        service=_service(),
    )
    # A fresh record id every run: no dedupe window needed, and none read from the file.
    try:
        ledger = Ledger(
            resolve_ledger_path(args.ledger), max_bytes=_max_bytes(), dedupe_window=0, sha256=builtin_sha256()
        )
    except ValueError as exc:  # a bad MEMBRANE_LEDGER_FILE_MODE: one line, as for every setting
        print(f"membrane-otel emit: {exc}", file=sys.stderr)
        return 2
    try:
        ledger.append(line)
    except OSError as exc:
        print(f"membrane-otel emit: cannot append to {ledger.path}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    finally:
        ledger.close()
    if args.echo:
        print(json.dumps(line, ensure_ascii=False))
    return 0


class _Args:
    """What :func:`run` reads, filled by :func:`fast_main` instead of argparse."""

    def __init__(self) -> None:
        self.event_type = ""
        self.payload: str | None = None
        self.params: list[str] = []
        self.task_id: str | None = None
        self.persona_id: str | None = None
        self.session_id: str | None = None
        self.ledger: str | None = None
        self.echo = False


_VALUE_OPTIONS = {
    "--payload": "payload", "--task-id": "task_id", "--persona-id": "persona_id",
    "--session-id": "session_id", "--ledger": "ledger",
}  # fmt: skip


def fast_main(argv: list[str]) -> int | None:
    """Run ``emit`` for an ordinary command line without importing argparse.

    Returns None for anything it does not handle plainly (``--help``, an unknown or
    incomplete option, a missing or second EVENT_TYPE): the caller then goes through
    argparse, which gives the usual help and error messages.
    """
    args = _Args()
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            positional.extend(argv[i:])
            break
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in ("-p", "--param") or name in _VALUE_OPTIONS:
            if eq:
                value = inline
            elif i < len(argv):
                value, i = argv[i], i + 1
            else:
                return None
            if name in ("-p", "--param"):
                args.params.append(value)
            else:
                setattr(args, _VALUE_OPTIONS[name], value)
        elif arg == "--echo":
            args.echo = True
        elif arg.startswith("-") and arg != "-":
            return None
        else:
            positional.append(arg)
    if len(positional) != 1:
        return None
    args.event_type = positional[0]
    try:
        return run(args)  # type: ignore[arg-type]  # duck-typed: run reads these attributes only
    except SystemExit as exc:  # a bad payload: one line, as through argparse
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            return 1
        return int(exc.code or 0)
