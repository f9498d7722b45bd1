"""Controller kinds by name (a scenario's ``controllers[i].kind``), found in the controllers package.

Any module ``controllers/<name>.py`` may define ``CONTROLLER_KINDS``: a list of :class:`ControllerKind`.
A kind is the pydantic model of its ``params`` and a ``build`` function that starts its mosaik simulator
in the world and wires it to the devices it controls (see cosim.world.WorldBuilder).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from pydantic import BaseModel

if TYPE_CHECKING:  # pragma: no cover
    from cosim.scenario import ControllerSpec
    from cosim.world import WorldBuilder


@dataclass(frozen=True)
class ControllerKind:
    name: str
    params: type[BaseModel]
    build: Callable[["WorldBuilder", "ControllerSpec", BaseModel], None]
    description: str = ""


_kinds: dict[str, ControllerKind] | None = None


def kinds() -> dict[str, ControllerKind]:
    global _kinds
    if _kinds is None:
        found: dict[str, ControllerKind] = {}
        for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
            if info.name == "registry":
                continue
            module = importlib.import_module(f"controllers.{info.name}")
            for kind in getattr(module, "CONTROLLER_KINDS", ()):
                if kind.name in found:
                    raise RuntimeError(f"controller kind {kind.name!r} defined twice")
                found[kind.name] = kind
        _kinds = found
    return _kinds


def controller(kind: str) -> ControllerKind:
    known = kinds()
    try:
        return known[kind]
    except KeyError:
        raise KeyError(f"unknown controller kind {kind!r}; known: {', '.join(sorted(known))}") from None
