"""How the baseline controllers plug into a world (see controllers.registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from cosim.controller_kinds import ControllerKind
from devices import registry as device_registry

if TYPE_CHECKING:  # pragma: no cover
    from cosim.build_context import BuildContext
    from cosim.scenario import ControllerSpec


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _build_baseline(model: str):
    def build(builder: BuildContext, spec: ControllerSpec, params: BaseModel) -> None:
        sim = builder.sim("Baselines", "controllers.baselines:BaselineSim")
        devs = builder.select_devices(spec.devices, needs_battery=True)
        if _build_group(builder, spec, sim, devs):
            return
        for dev in devs:
            site = builder.site_of(dev.id)
            if site is None:
                raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: device {dev.id!r} has no "
                                           "site, so there is no PCC to keep at zero")
            setpoint = device_registry.family(dev.family).battery_setpoint
            assert setpoint is not None  # a device selected with needs_battery
            ctl = builder.add_entity(getattr(sim, model)())
            device = builder.devices[dev.id]
            smx = f"smx:{site.spec.id}"  # the site's SMX broker carries the local loop
            builder.connect(site.pcc_reading, ctl, ("p_w", "pcc_p_w"), role=smx, sender_kind="device")
            builder.connect(device, ctl, "batt_p_w", "p_charge_avail_w", "p_discharge_avail_w", role=smx,
                            sender_kind="device")
            builder.connect(ctl, device, ("p_set_w", setpoint), role=smx, sender_kind="agent", time_shifted=True,
                            initial_data={"p_set_w": 0.0})
            builder.record(ctl, "p_set_w", "controllers", f"{spec.id}/{dev.id}.p_set_w")

    def _build_group(builder: BuildContext, spec: ControllerSpec, sim: Any, devs: list[Any]) -> bool:
        """Many batteries with one setpoint name on direct connections: one Group entity over vectors (mosaik's
        cost is per value and step); the same setpoints as one entity per battery."""
        setpoints = {device_registry.family(d.family).battery_setpoint for d in devs}
        sites = [builder.site_of(d.id) for d in devs]
        roles = [f"smx:{site.spec.id}" for site in sites if site is not None]
        if len(setpoints) != 1 or len(roles) != len(devs):
            return False
        vectors = builder.vectors(roles, [d.id for d in devs])
        if vectors is None:
            return False
        points, table = vectors
        (setpoint,) = setpoints
        ctl = builder.add_entity(sim.Group(kind=model, n=len(devs)))
        builder.world.connect(points, ctl, ("p_w", "pcc_p_w"))
        builder.world.connect(table, ctl, "batt_p_w", "p_charge_avail_w", "p_discharge_avail_w")
        builder.world.connect(ctl, table, ("p_set_w", setpoint), time_shifted=True,
                              initial_data={"p_set_w": [0.0] * len(devs)})
        builder.record(ctl, "p_set_w", "controllers", [f"{spec.id}/{d.id}.p_set_w" for d in devs])
        return True

    return build


def battery_base(builder: BuildContext, device_id: str, *, schedule: Any = None, follower: Any = None) -> None:
    """Meet a battery's planned power (GESSCon's ``p_schedule_w``) and a local controller that adds its own
    correction to it (the voltage controller's ``p_base_w``), whichever of the two is built first: the second one
    connects them, over the Control Broker like every schedule."""
    slots = builder.__dict__.setdefault("_s4g_battery_base", {})
    slot = slots.setdefault(device_id, {})
    if schedule is not None:
        slot["schedule"] = schedule
    if follower is not None:
        slot["follower"] = follower
    if "schedule" in slot and "follower" in slot and not slot.get("connected"):
        builder.connect(slot["schedule"], slot["follower"], ("p_schedule_w", "p_base_w"), role="control")
        slot["connected"] = True


def has_follower(builder: BuildContext, device_id: str) -> bool:
    """Does a controller of the scenario add to this battery's plan (a voltage_control naming it)?"""
    return any(c.kind == "voltage_control" and (c.devices == "*" or device_id in c.devices)
               for c in builder.scenario.controllers)


SELF_CONSUMPTION = ControllerKind("self_consumption", NoParams, _build_baseline("SelfConsumption"),
                                  "rule-based: each battery keeps its site's PCC power at zero")
NO_STORAGE = ControllerKind("no_storage", NoParams, _build_baseline("NoStorage"),
                            "batteries stay idle (the reference without storage)")
