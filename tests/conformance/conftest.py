"""Collect every DeviceHarness subclass from tests/conformance/harness_*.py and parametrize the suite."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

from tests.conformance.harness import DeviceHarness


def _harnesses() -> list[type[DeviceHarness]]:
    found = []
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name.startswith("harness_"):
            module = importlib.import_module(f"tests.conformance.{info.name}")
            found += [obj for _, obj in inspect.getmembers(module, inspect.isclass)
                      if issubclass(obj, DeviceHarness) and obj is not DeviceHarness and not inspect.isabstract(obj)
                      and obj.__module__ == module.__name__ and obj.name]  # a nameless class is a shared base
    return sorted(found, key=lambda c: c.name)


HARNESSES = _harnesses()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "harness_cls" in metafunc.fixturenames:
        metafunc.parametrize("harness_cls", HARNESSES, ids=[h.name for h in HARNESSES])
