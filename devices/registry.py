"""Address schemes and device families, resolved by name (like python-can's ``interface=``).

Families register under the entry-point group ``s4g.device_families`` (name = family name, value =
``package.module:FAMILY``); drivers that serve any family (``replay://``, registered by hil_bench) under
``s4g.drivers`` (name = scheme, value = ``module:Class``). The project's own are listed in pyproject.toml the same
way, so a family in another installed package is found exactly like ours. A family names the driver module of each
scheme it speaks as a string, so importing the registry imports no protocol stack: a driver module is imported the
first time its scheme is used, and ``sim://`` runs never pay for pymodbus, ocpp or python-can.
:func:`register_family` / :func:`register_driver` add one at run time (tests, notebooks).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, cast

from devices.base import Address, Driver
from devices.family import Family

FAMILY_GROUP = "s4g.device_families"
DRIVER_GROUP = "s4g.drivers"

_BUILTIN_DRIVERS = {"sim": "devices.sim:SimDriver"}
_families: dict[str, Family] | None = None
_entry_drivers: dict[str, str] | None = None
_extra_families: dict[str, str | Family] = {}
_extra_drivers: dict[str, str] = {}


def load_spec(spec: str) -> Any:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _discover() -> dict[str, Family]:
    global _families
    if _families is None:
        found: dict[str, Family] = {}
        eps = sorted(entry_points(group=FAMILY_GROUP), key=lambda e: e.name)
        if not eps:
            raise RuntimeError(f"no device family is registered under the entry-point group {FAMILY_GROUP!r}: "
                               "is the package installed (pip install -e .)?")
        for ep in eps:
            found[ep.name] = _checked(ep.name, ep.load(), f"entry point {ep.value!r}")
        for name, spec in _extra_families.items():
            found[name] = _checked(name, load_spec(spec) if isinstance(spec, str) else spec, repr(spec))
        _families = found
    return _families


def _checked(name: str, fam: Any, where: str) -> Family:
    if not isinstance(fam, Family):
        raise TypeError(f"device family {name!r}: {where} is a {type(fam).__name__}, expected a devices.family.Family")
    if fam.name != name:
        raise ValueError(f"device family registered as {name!r} but declares name={fam.name!r} ({where})")
    return fam


def families() -> dict[str, Family]:
    return dict(_discover())


def generic_drivers() -> dict[str, str]:
    """scheme -> "module:Class" of the drivers that serve any family (``sim``, ``replay``, ...)."""
    global _entry_drivers
    if _entry_drivers is None:  # reading the installed metadata takes milliseconds: once per process
        _entry_drivers = {ep.name.lower(): ep.value for ep in entry_points(group=DRIVER_GROUP)}
    out = dict(_BUILTIN_DRIVERS)
    out.update(_entry_drivers)
    out.update(_extra_drivers)
    return out


def drivers() -> dict[str, str]:
    """scheme -> "module:Class" of the driver that speaks it (every family's and the generic ones)."""
    out: dict[str, str] = {}
    for fam in _discover().values():
        out.update(fam.drivers)
    out.update(generic_drivers())
    return out


def register_driver(scheme: str, spec: str) -> None:
    """Add a driver that serves any family (a family's own drivers belong in its declaration)."""
    _extra_drivers[scheme.lower()] = spec


def register_family(name: str, spec: str | Family) -> None:
    """Add a family at run time: ``"module:ATTR"`` or the :class:`Family` itself."""
    global _families
    _extra_families[name] = spec
    _families = None


def unregister_family(name: str) -> None:
    global _families
    _extra_families.pop(name, None)
    _families = None


def family(name: str) -> Family:
    fams = _discover()
    try:
        return fams[name]
    except KeyError:
        raise KeyError(f"unknown device family {name!r}; known: {', '.join(sorted(fams))}") from None


def schemes_of(fam: Family) -> list[str]:
    """Every scheme a device of ``fam`` may be addressed with: its own and the generic ones."""
    return sorted({*fam.schemes, *generic_drivers()})


def driver_class(address: Address | str, family: Family | None = None) -> type[Driver]:
    """The driver class of an address; with ``family``, only a scheme that family speaks (or a generic one)."""
    addr = Address.parse(address) if isinstance(address, str) else address
    specs = {**family.drivers, **generic_drivers()} if family is not None else drivers()
    try:
        spec = specs[addr.scheme]
    except KeyError:
        if family is not None:
            raise KeyError(f"family {family.name!r} does not speak {addr.scheme!r} ({addr.raw!r}); it speaks: "
                           f"{', '.join(schemes_of(family))}") from None
        raise KeyError(
            f"no driver for address scheme {addr.scheme!r} in {addr.raw!r}; known: {', '.join(sorted(specs))}"
        ) from None
    return cast("type[Driver]", load_spec(spec))


def known_schemes() -> list[str]:
    return sorted(drivers())
