"""Controller kinds: the registry lives in :mod:`cosim.controller_kinds` (entry-point group
``s4g.controller_kinds``); this module re-exports it for the controllers that define kinds."""

from __future__ import annotations

from cosim.controller_kinds import ControllerKind, controller, kinds, names, register

__all__ = ["ControllerKind", "controller", "kinds", "names", "register"]
