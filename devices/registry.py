"""Address schemes and device families, resolved by name (like python-can's ``interface=``).

Families are found by looking for a ``FAMILY`` in each package under ``devices/``; a family names the
driver module of each scheme it speaks as a string, so importing the registry imports no protocol stack:
a driver module is imported the first time its scheme is used, and ``sim://`` runs never pay for pymodbus,
ocpp or python-can. Third-party packages add theirs with :func:`register_family` / :func:`register_driver`.
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import Any

from devices.base import Address, Driver
from devices.family import Family

# replay://RUN_DIR/device plays back a device recorded by a HIL bench run (any family)
_BUILTIN_DRIVERS = {"sim": "devices.sim:SimDriver", "replay": "hil_bench.replay:ReplayDriver"}
_families: dict[str, Family] | None = None
_extra_families: dict[str, str] = {}
_extra_drivers: dict[str, str] = {}


def load_spec(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _discover() -> dict[str, Family]:
    global _families
    if _families is None:
        found: dict[str, Family] = {}
        root = Path(__file__).parent
        for info in sorted(pkgutil.iter_modules([str(root)]), key=lambda i: i.name):
            if info.ispkg:
                fam = getattr(importlib.import_module(f"devices.{info.name}"), "FAMILY", None)
                if isinstance(fam, Family):
                    found[fam.name] = fam
        for name, spec in _extra_families.items():
            found[name] = load_spec(spec)
        _families = found
    return _families


def families() -> dict[str, Family]:
    return dict(_discover())


def drivers() -> dict[str, str]:
    """scheme -> "module:Class" of the driver that speaks it."""
    out = dict(_BUILTIN_DRIVERS)
    for fam in _discover().values():
        out.update(fam.drivers)
    out.update(_extra_drivers)
    return out


def register_driver(scheme: str, spec: str) -> None:
    _extra_drivers[scheme.lower()] = spec


def register_family(name: str, spec: str) -> None:
    global _families
    _extra_families[name] = spec
    _families = None


def family(name: str) -> Family:
    fams = _discover()
    try:
        return fams[name]
    except KeyError:
        raise KeyError(f"unknown device family {name!r}; known: {', '.join(sorted(fams))}") from None


def driver_class(address: Address | str) -> type[Driver]:
    addr = Address.parse(address) if isinstance(address, str) else address
    specs = drivers()
    try:
        spec = specs[addr.scheme]
    except KeyError:
        raise KeyError(
            f"no driver for address scheme {addr.scheme!r} in {addr.raw!r}; known: {', '.join(sorted(specs))}"
        ) from None
    return load_spec(spec)


def known_schemes() -> list[str]:
    return sorted(drivers())
