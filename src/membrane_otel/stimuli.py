"""The membrane stimuli SDK (``seeds/003``): ``from membrane_otel.stimuli import emit_script_error``.

The implementation lives in :mod:`membrane_otel.membrane._stimuli`; this is its public name,
with exactly its ``__all__`` (pinned in tests/test_layout.py).
"""

from membrane_otel.membrane import _stimuli
from membrane_otel.membrane._stimuli import *  # noqa: F403  # the names listed in its __all__

__all__ = list(_stimuli.__all__)
