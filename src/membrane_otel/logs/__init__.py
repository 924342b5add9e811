"""Error logs (``seeds/000``): fingerprints, dedupe keys, limits, redaction, the L2 logger."""

from __future__ import annotations

from membrane_otel._internal.lazy import lazy_exports

TYPE_CHECKING = False
if TYPE_CHECKING:
    from membrane_otel.logs._errors import dedupe_key, stack_fingerprint
    from membrane_otel.logs._l2logger import setup_l2_logger
    from membrane_otel.logs._processors import MembraneLogProcessor
    from membrane_otel.logs._redact import Redactor, redact_secrets

__all__ = [
    "MembraneLogProcessor",
    "Redactor",
    "dedupe_key",
    "redact_secrets",
    "setup_l2_logger",
    "stack_fingerprint",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "MembraneLogProcessor": "._processors",
        "Redactor": "._redact",
        "dedupe_key": "._errors",
        "redact_secrets": "._redact",
        "setup_l2_logger": "._l2logger",
        "stack_fingerprint": "._errors",
    },
)
