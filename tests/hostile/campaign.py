"""How long a hostile-peer test runs: short by default; ``--hostile-long`` or S4G_HOSTILE_LONG=1 for the nightly
campaign (the option is registered in tests/conftest.py)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from tests.conftest import HOSTILE_LONG_ENV


def examples(short: int, long: int) -> int:
    """How many hypothesis examples (or flood connections) a test runs in this campaign."""
    return long if os.environ.get(HOSTILE_LONG_ENV, "") not in ("", "0") else short


def hostile(short: int, long: int, **kwargs) -> settings:
    """Settings for a hostile test: real sockets are slow and uneven, so no deadline and no health checks."""
    return settings(max_examples=examples(short, long), deadline=None, suppress_health_check=list(HealthCheck),
                    **kwargs)
