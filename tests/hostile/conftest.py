"""Hostile-peer suite: short by default; ``--hostile-long`` or S4G_HOSTILE_LONG=1 for the nightly campaign."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

LONG_ENV = "S4G_HOSTILE_LONG"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hostile-long", action="store_true", default=False,
                     help=f"run the hostile-peer suite's long campaign (same as {LONG_ENV}=1)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--hostile-long", default=False):
        os.environ[LONG_ENV] = "1"


def examples(short: int, long: int) -> int:
    """How many hypothesis examples (or flood connections) a test runs in this campaign."""
    return long if os.environ.get(LONG_ENV, "") not in ("", "0") else short


def hostile(short: int, long: int, **kwargs) -> settings:
    """Settings for a hostile test: real sockets are slow and uneven, so no deadline and no health checks."""
    return settings(max_examples=examples(short, long), deadline=None, suppress_health_check=list(HealthCheck),
                    **kwargs)
