"""The ``membrane-otel`` command.

Each sub-command lives in its own module and is imported only when it is run, so that
``membrane-otel emit`` does not pay for the OTel SDK or the bridge (start-up time is
a feature of the shell emitter). A sub-command module defines::

    HELP: str
    def build_parser(parser: argparse.ArgumentParser) -> None: ...
    def run(args: argparse.Namespace) -> int: ...
"""

from __future__ import annotations

import importlib
import os
import sys

# Not `from typing import TYPE_CHECKING`: the shell emitter's start-up budget is a few ms.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]

# name -> (module, one-line help). Kept as data so `--help` needs no imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "emit": ("membrane_otel.cli.emit", "append one event to the ledger (the shell emitter)"),
    "ledger": ("membrane_otel.cli.ledger", "tail, query, stats and verify the ledger"),
    "traces": ("membrane_otel.cli.traces", "view HRM trace trees and stats from the ledger"),
    "bridge": ("membrane_otel.cli.bridge", "run the OTLP/HTTP bridge behind the Collector"),
    "bus": ("membrane_otel.cli.bus", "run the reference membrane bus, or tail one"),
    "spool": ("membrane_otel.cli.spool", "show or flush the envelope spool"),
    "doctor": ("membrane_otel.cli.doctor", "diagnose this machine's membrane-otel set-up"),
    "demo": ("membrane_otel.cli.demo", "run the example HRM agent in the embedded default"),
    "chaos": ("membrane_otel.cli.chaos", "list or run the chaos scenarios against this pipeline"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        "usage: membrane-otel [--trace] COMMAND [ARGS...]",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()),
        "",
        "options:",
        "  --trace     turn HRM tracing on (same as MEMBRANE_TRACE=1)",
        "  --version   print the version",
        "",
        "Run 'membrane-otel COMMAND --help' for a command's options.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    while args and args[0].startswith("-"):
        flag = args.pop(0)
        if flag == "--trace":
            os.environ["MEMBRANE_TRACE"] = "1"
        elif flag in ("-h", "--help"):
            print(_usage())
            return 0
        elif flag == "--version":
            from importlib.metadata import version

            print(f"membrane-otel {version('membrane-otel')}")
            return 0
        else:
            print(f"membrane-otel: unknown option {flag!r}\n\n{_usage()}", file=sys.stderr)
            return 2
    if not args:
        print(_usage(), file=sys.stderr)
        return 2
    name, rest = args[0], args[1:]
    if name == "emit":
        # The shell emitter's ordinary command lines skip argparse entirely (start-up time).
        from membrane_otel.cli.emit import fast_main

        code = fast_main(rest)
        if code is not None:
            return code
    if name not in COMMANDS:
        print(f"membrane-otel: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    import argparse

    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"membrane-otel {name}", description=COMMANDS[name][1])
    module.build_parser(parser)
    ns = parser.parse_args(rest)
    try:
        return int(module.run(ns))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `membrane-otel ledger query | head` closes our stdout early; that is not an error.
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
