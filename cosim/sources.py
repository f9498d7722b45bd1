"""The world's source vocabulary: where a device family's declared inputs (devices.family.Input) come from.

One table says what each source means; the scenario validator asks :func:`problems` whether a device's required
inputs have a source in its scenario, and the world builder wires them (cosim.world). A family names sources, never
simulators: ``site.*`` are profiles of the device's site, ``point.*`` what the grid solution shows at the device's
connection point (the site's PCC, or the device's own bus), ``fleet.*`` the EV at the fleet bay the device serves.
``point.grid_present`` comes from the scenario's events (cosim.events), not from the power flow: a device sees an
outage or its own trip in the step it happens.
"""

from __future__ import annotations

from typing import Any
from collections.abc import Callable

from devices.family import Family

SOURCES: dict[str, str] = {
    "site.pv_w_per_kwp": "the PV profile of the device's site in W per kWp (the site's 'pv_profile' or "
                         "'profiles.pv')",
    "site.load_p_w": "the load profile of the device's site in W (the site's 'load')",
    "site.dc_load_p_w": "the DC-load profile of the device's site in W (the site's 'dc_load'; not drawn at the PCC)",
    "point.v_pu": "voltage at the device's connection point in pu (its phase; three-phase: positive sequence)",
    "point.v_a_pu": "phase-a voltage at the connection point's bus in pu (balanced grids: v_pu)",
    "point.v_b_pu": "phase-b voltage at the connection point's bus in pu (balanced grids: v_pu)",
    "point.v_c_pu": "phase-c voltage at the connection point's bus in pu (balanced grids: v_pu)",
    "point.p_w": "net active power drawn at the connection point in W (load arrow: what a PCC meter sees)",
    "point.q_var": "net reactive power drawn at the connection point in var (load arrow)",
    "point.p_a_w": "active power drawn on phase a at the connection point in W",
    "point.p_b_w": "active power drawn on phase b at the connection point in W",
    "point.p_c_w": "active power drawn on phase c at the connection point in W",
    "point.grid_present": "1 while the grid is there at the connection point, 0 during an outage at the site's PCC "
                          "or a trip of the device itself (the scenario's events), in the same step",
}
#: point.<attr> sources that come from the scenario's event schedule (cosim.event_sim), not from the grid
EVENT_POINT_ATTRS = ("grid_present",)
FLEET_DESCRIPTION = "the EV at the EV-fleet bay the device serves (the device is listed in ev_fleets[].wallboxes)"

#: site.<attr> -> (field of cosim.build_context.SiteHandle, attribute of that profile entity)
SITE_ENTITIES: dict[str, tuple[str, str]] = {"pv_w_per_kwp": ("pv", "w_per_kwp"), "load_p_w": ("load", "p_w"),
                                             "dc_load_p_w": ("dc_load", "p_w")}


def fleet_attrs() -> tuple[str, ...]:
    from simulators.ev_fleet import ENV_OUTPUTS

    return tuple(ENV_OUTPUTS)


def known() -> list[str]:
    return [*SOURCES, *(f"fleet.{a}" for a in fleet_attrs())]


def describe(source: str) -> str:
    if source.startswith("fleet."):
        return f"{source}: {FLEET_DESCRIPTION}"
    return f"{source}: {SOURCES.get(source, 'unknown source')}"


def initial_value(source: str) -> float:
    """The value a time-shifted ``point.*`` input has in the first step (before any power flow)."""
    return 1.0 if source.startswith("point.v_") or source == "point.grid_present" else 0.0


def problems(sc: Any, family_of: Callable[[str], Family],
             add: Callable[[tuple[str | int, ...], str, Any], None]) -> None:
    """Report every declared input of every device that names an unknown source or, required, has none.

    ``sc`` is a validated cosim.scenario.Scenario (this module sits below it); ``add(loc, message, found)``
    records one problem at a key path of the scenario.
    """
    sites = {s.id: s for s in sc.sites}
    in_fleet = {wb for fleet in sc.ev_fleets for wb in fleet.wallboxes}
    offered = set(known())
    meter_of: dict[str, str] = {}  # site -> the device that meters its PCC
    for i, dev in enumerate(sc.devices):
        try:
            fam = family_of(dev.family)
        except KeyError:
            continue  # reported with the family
        site = sites.get(dev.site) if dev.site else None
        if fam.meters_point and dev.site:
            if dev.site in meter_of:
                add(("devices", i, "site"), f"site {dev.site!r} already has a meter at its PCC "
                    f"({meter_of[dev.site]!r}); {dev.id!r} would be a second one: one meter per site", dev.site)
            meter_of.setdefault(dev.site, dev.id)
        missing_fleet: list[str] = []
        for inp in fam.inputs:
            what = f"family {fam.name!r} reads {inp.name!r} from {inp.source}"
            if inp.source not in offered:
                add(("devices", i, "family"), f"{what}, which the world does not offer (offered: "
                    f"{', '.join(sorted(offered))})", dev.family)
                continue
            if not inp.required:
                continue
            if inp.scope == "site":
                if dev.site is None:
                    add(("devices", i, "bus"), f"{what} ({SOURCES[inp.source]}): place the device at a 'site'",
                        dev.bus)
                elif site is None:
                    pass  # a dangling site id is reported on its own
                elif inp.attr == "pv_w_per_kwp" and site.pv_profile is None and sc.profiles.pv is None:
                    add(("devices", i, "site"), f"{what}: give 'profiles.pv' or site {site.id!r} a 'pv_profile'",
                        dev.site)
                elif inp.attr == "load_p_w" and site.load is None:
                    add(("devices", i, "site"), f"{what}: give site {site.id!r} a 'load' profile", dev.site)
                elif inp.attr == "dc_load_p_w" and site.dc_load is None:
                    add(("devices", i, "site"), f"{what}: give site {site.id!r} a 'dc_load' profile", dev.site)
            elif inp.scope == "fleet" and dev.id not in in_fleet:
                missing_fleet.append(inp.name)
        if missing_fleet:
            add(("devices", i, "id"), f"family {fam.name!r} reads the EV it charges from an EV fleet "
                f"({', '.join(missing_fleet[:3])}{', ...' if len(missing_fleet) > 3 else ''}): list this device "
                "under an ev_fleets[].wallboxes", dev.id)


def reads_fleet(fam: Family) -> bool:
    """Whether a family is fed by an EV-fleet bay (and so may be listed in ev_fleets[].wallboxes)."""
    return any(inp.scope == "fleet" for inp in fam.inputs)
