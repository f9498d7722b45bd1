"""Options for the whole suite (registered here so they work from the project root as well)."""

from __future__ import annotations

import os

import pytest

HOSTILE_LONG_ENV = "S4G_HOSTILE_LONG"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hostile-long", action="store_true", default=False,
                     help=f"run the hostile-peer suites' long campaign (nightly; same as {HOSTILE_LONG_ENV}=1)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--hostile-long", default=False):
        os.environ[HOSTILE_LONG_ENV] = "1"
