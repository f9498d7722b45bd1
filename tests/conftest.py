"""Options for the whole suite (registered here so they work from the project root as well)."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

# No test asserts on wall time: hypothesis's default per-example deadline (200 ms) is such an assertion, and a busy
# machine (other jobs) trips it at random. Most tests already say deadline=None; this is the default
# for the rest (a test's own settings still win).
settings.register_profile("s4g", deadline=None)
settings.load_profile("s4g")

HOSTILE_LONG_ENV = "S4G_HOSTILE_LONG"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hostile-long", action="store_true", default=False,
                     help=f"run the hostile-peer suites' long campaign (nightly; same as {HOSTILE_LONG_ENV}=1)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--hostile-long", default=False):
        os.environ[HOSTILE_LONG_ENV] = "1"

