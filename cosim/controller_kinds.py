"""Controller kinds by name (a scenario's ``controllers[i].kind``), found by entry point.

A kind is the pydantic model of its ``params`` and a ``build(ctx, spec, params)`` function that starts its mosaik
simulator in the world and wires it to the devices it controls through the world's
:class:`~cosim.build_context.BuildContext`. Kinds register under the entry-point group ``s4g.controller_kinds``
(name = kind name, value = ``module:KIND``); the project's own are listed in pyproject.toml, and :func:`register`
adds one at run time. cosim never imports a controller: a kind's module is imported the first time a scenario
names it, so validating a scenario does not load the optimisers of the kinds it does not use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any
from collections.abc import Callable

from pydantic import BaseModel

GROUP = "s4g.controller_kinds"


@dataclass(frozen=True)
class ControllerKind:
    name: str
    params: type[BaseModel]
    #: build(ctx: cosim.build_context.BuildContext, spec: cosim.scenario.ControllerSpec, params) -> None
    build: Callable[[Any, Any, Any], None]  # (builder, spec, the kind's own params model)
    description: str = ""


_entry: dict[str, EntryPoint] | None = None
_loaded: dict[str, ControllerKind] = {}


def _entry_points() -> dict[str, EntryPoint]:
    global _entry
    if _entry is None:
        _entry = {ep.name: ep for ep in entry_points(group=GROUP)}
    return _entry


def names() -> list[str]:
    """Every known kind (imports none of them)."""
    return sorted({*_entry_points(), *_loaded})


def controller(name: str) -> ControllerKind:
    """The kind called ``name`` (its module is imported on first use)."""
    kind = _loaded.get(name)
    if kind is None:
        ep = _entry_points().get(name)
        if ep is None:
            raise KeyError(f"unknown controller kind {name!r}; known: {', '.join(names())}")
        module, _, attr = ep.value.partition(":")
        kind = getattr(importlib.import_module(module), attr.strip())
        if not isinstance(kind, ControllerKind) or kind.name != name:
            raise TypeError(f"entry point {name} = {ep.value!r} ({GROUP}) must be a ControllerKind named {name!r}")
        _loaded[name] = kind
    return kind


def kinds() -> dict[str, ControllerKind]:
    """Every kind, loaded (imports each kind's module)."""
    return {name: controller(name) for name in names()}


def register(kind: ControllerKind) -> None:
    """Add a kind at run time (tests, notebooks, benchmarks); replaces one of the same name."""
    _loaded[kind.name] = kind


def unregister(name: str) -> None:
    _loaded.pop(name, None)
