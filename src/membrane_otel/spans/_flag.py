"""The seed's ``--trace`` flag for the user's own scripts: ``membrane_otel.add_trace_flag(parser)``.

``seeds/004`` runs ``python -m the_assist.main --trace``. With an ``argparse`` parser::

    parser = argparse.ArgumentParser()
    membrane_otel.add_trace_flag(parser)
    args = parser.parse_args()          # --trace: HRM tracing on, the span tree printed

The flag works whether the SDK is already set up (``opentelemetry-instrument``, or an earlier
``configure()``) or not (then it is set up here, with tracing on).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any


class _TraceAction(argparse.Action):
    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        from membrane_otel._setup import enable_tracing

        setattr(namespace, self.dest, True)
        enable_tracing()


def add_trace_flag(parser: argparse.ArgumentParser, *flags: str) -> argparse.Action:
    """Add ``--trace`` (or ``flags``) to ``parser``: when given, HRM tracing is on for this run."""
    return parser.add_argument(
        *(flags or ("--trace",)),
        action=_TraceAction,
        nargs=0,
        default=False,
        help="trace HRM operations: the span tree on stderr, trace lines in the ledger",
    )
