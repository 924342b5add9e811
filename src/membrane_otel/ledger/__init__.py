"""The resonance ledger (``seeds/001``): append-only, hash-chained JSONL — write, read, verify.

The events API that feeds it (``emit_event`` and the seed's wrappers) is re-exported by
``membrane_otel`` itself.
"""

from __future__ import annotations

from membrane_otel._internal.lazy import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from membrane_otel.ledger._reader import ledger_files, read_lines
    from membrane_otel.ledger._verify import Problem, verify
    from membrane_otel.ledger._writer import Ledger, ledger_for

__all__ = ["Ledger", "Problem", "ledger_files", "ledger_for", "read_lines", "verify"]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "Ledger": "._writer",
        "ledger_for": "._writer",
        "ledger_files": "._reader",
        "read_lines": "._reader",
        "Problem": "._verify",
        "verify": "._verify",
    },
)
