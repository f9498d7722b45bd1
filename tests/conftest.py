"""Options for the whole suite (registered here so they work from the project root as well), and how the suite
runs in parallel.

The suite runs in ``WORKERS`` processes (pytest-xdist, ``--dist loadgroup``) unless the command line says
otherwise: ``-n 0`` or ``-p no:xdist`` runs it serially in one process, ``-n N`` in N. The default is set here
rather than in ``addopts`` so that ``-p no:xdist`` (and a venv without pytest-xdist) still works.

Under ``loadgroup`` a test that uses a module- or class-scoped fixture of the suite runs on the same worker as the
other tests of that module (class), so an expensive fixture (a pilot run, a broker) is built once, not once per
worker; every other test is dispatched on its own. A test may name its own group with
``@pytest.mark.xdist_group("name")`` (tests that must not run at the same time as each other).
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import settings

# No test asserts on wall time: hypothesis's default per-example deadline (200 ms) is such an assertion, and a busy
# machine (two workers, other jobs) trips it at random. Most tests already say deadline=None; this is the default
# for the rest (a test's own settings still win).
settings.register_profile("s4g", deadline=None)
settings.load_profile("s4g")

HOSTILE_LONG_ENV = "S4G_HOSTILE_LONG"
#: the machines the suite is sized for have 2 cores; more workers than cores only add contention
WORKERS = 2
_GROUPED_SCOPES = ("package", "module", "class")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--hostile-long", action="store_true", default=False,
                     help=f"run the hostile-peer suites' long campaign (nightly; same as {HOSTILE_LONG_ENV}=1)")


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config: pytest.Config) -> None:
    """Default to ``-n WORKERS --dist loadgroup``; before xdist's own hook turns the numbers into workers."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    if hasattr(config, "workerinput"):  # a worker: tell xdist that the controller groups (it re-parsed argv)
        config.option.loadgroup = config.workerinput.get("s4g_dist") == "loadgroup"
        return
    usepdb = config.getoption("usepdb", False)
    if config.option.numprocesses is None and not config.option.tx and not usepdb:
        config.option.numprocesses = WORKERS
    if config.option.numprocesses and config.option.dist == "no":
        config.option.dist = "loadgroup"


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:  # xdist's WorkerController (xdist is optional)
    node.workerinput["s4g_dist"] = node.config.option.dist


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--hostile-long", default=False):
        os.environ[HOSTILE_LONG_ENV] = "1"


@pytest.hookimpl(tryfirst=True)  # before xdist appends the group names to the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group") is None and (group := _shared_fixture_scope(item)):
            item.add_marker(pytest.mark.xdist_group(group))


def _shared_fixture_scope(item: pytest.Item) -> str | None:
    """The node id of the widest package, module or class whose fixture this test uses (None: no such fixture)."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    scopes = {defs[-1].scope for defs in info.name2fixturedefs.values() if defs}
    for scope in _GROUPED_SCOPES:
        if scope in scopes:
            node = item.getparent({"package": pytest.Package, "module": pytest.Module, "class": pytest.Class}[scope])
            return node.nodeid if node is not None else None
    return None
