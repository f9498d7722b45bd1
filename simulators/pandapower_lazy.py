"""Defer the pandapower sub-packages a co-simulation never uses until something touches them.

``import pandapower`` imports all its sub-packages: plotting (matplotlib.pyplot, plotly), state estimation
(scipy.stats), test networks, time series, grid equivalents and short circuit; that is about half of the 3-4 s
the import costs, at every start-up. :func:`defer` registers each of them as a shell module before pandapower
is imported: the shell knows the package's folder, so pandapower's own imports of its sub-modules (e.g.
``pandapower.plotting.geo``) work as before, and the first access to anything else of the shell runs the
package's ``__init__`` just as the import would have. Nothing changes for code that uses these packages,
only when their cost is paid. Called once from ``simulators/__init__.py``; it does nothing if pandapower is
imported already or a package cannot be found.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
from typing import Any

#: what ``import pandapower`` imports and the grid simulator never needs at start-up (parents before children):
#: its plotting, state estimation, test networks, time series, grid equivalents and short circuit packages.
#: Not matplotlib (pyomo's own deferred imports look for it in sys.modules and fail on a shell), nor psycopg,
#: which pandapower's SQL input/output imports: psycopg's modules import each other in a circle that only
#: works in their order.
DEFERRED = tuple(f"pandapower.{sub}" for sub in ("plotting", "estimation", "networks", "timeseries",
                                                "grid_equivalents", "shortcircuit"))


class _Deferred(types.ModuleType):
    """A package whose ``__init__`` runs at the first access to an attribute it has not got yet."""

    def __getattr__(self, name: str) -> Any:  # only called for attributes not (yet) on the module
        spec = self.__dict__.get("__spec__")
        if spec is None or self.__dict__.get("_s4g_loaded"):
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        self.__dict__["_s4g_loaded"] = True
        try:
            spec.loader.exec_module(self)  # the package's own __init__, in this module's namespace
        except BaseException:
            del self.__dict__["_s4g_loaded"]  # the import's own error, again at the next access
            raise
        return getattr(self, name)


def _spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """The spec of ``name`` found without importing anything (its parent's folder from the parent's spec)."""
    parent, _, _ = name.rpartition(".")
    path = None
    if parent:
        parent_spec = _spec(parent)
        if parent_spec is None or not parent_spec.submodule_search_locations:
            return None
        path = list(parent_spec.submodule_search_locations)
    return importlib.machinery.PathFinder.find_spec(name, path)


def defer() -> None:
    if "pandapower" in sys.modules:
        return
    for name in DEFERRED:
        spec = _spec(name)
        if name in sys.modules or spec is None or spec.loader is None:
            continue
        module = _Deferred(name)
        module.__spec__ = spec
        module.__file__ = spec.origin
        module.__loader__ = spec.loader
        module.__package__ = name if spec.submodule_search_locations else name.rpartition(".")[0]
        if spec.submodule_search_locations is not None:
            module.__path__ = list(spec.submodule_search_locations)
        sys.modules[name] = module
        parent, _, child = name.rpartition(".")
        if parent in sys.modules:
            sys.modules[parent].__dict__.setdefault(child, module)  # as the import system binds a sub-module
