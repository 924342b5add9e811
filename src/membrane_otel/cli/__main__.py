"""``python -m membrane_otel.cli``: the same as the ``membrane-otel`` command."""

from membrane_otel.cli import main

raise SystemExit(main())
