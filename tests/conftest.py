"""Test-suite wide fixtures."""

from __future__ import annotations

import os

# Tests build their own settings; nothing from the developer's shell may leak in.
for _key in list(os.environ):
    if _key.startswith(("MEMBRANE_", "AGI_LEDGER", "DOPEJAR_")):
        del os.environ[_key]
