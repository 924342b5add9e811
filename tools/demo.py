"""`make demo`: the same as `membrane-otel demo` (see src/membrane_otel/cli/demo.py)."""

from membrane_otel.cli import main

raise SystemExit(main(["demo"]))
