"""The DSO's settings for PV inverters, sent down the Control Broker (kind ``inverter_settings``).

A distribution operator does not steer rooftop inverters second by second; it sets their grid-support functions
(devices/pv/functions.py) and lets each inverter act on its own terminal voltage: an active-power cap (a feed-in
limit such as 70 % of the rating), a fixed power factor, and the volt-var / volt-watt curves of IEEE 1547-2018
(SunSpec models 123, 126, 132 on the wire). This kind writes those settings to every inverter it names at the
start of the run and again every ``refresh_s`` (so a device's revert timer never runs out while the DSO is there).

    controllers:
      - id: dso_pv
        kind: inverter_settings
        devices: [pv_4018368, pv_4018376]
        params:
          volt_watt: {enabled: true}              # IEEE 1547 category B: 1.06 -> 100 %, 1.10 -> 20 %
          volt_var: {enabled: true}               # 0.92 / 0.98 / 1.02 / 1.08 pu, 44 %
          p_limit_pct: 70                         # optional: cap at 70 % of each inverter's rating
          tan_phi: 0.2                            # optional: fixed power factor (+ = absorbing); excludes volt_var
          refresh_s: 900
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
from pydantic import BaseModel, ConfigDict, Field, model_validator

from controllers.registry import ControllerKind
from devices import registry as device_registry
from devices.pv.functions import SETPOINTS, TAN_PHI_MAX, VV_Q, VV_V, VW_P, VW_V, VoltVarCurve, VoltWattCurve

if TYPE_CHECKING:  # pragma: no cover
    from cosim.build_context import BuildContext
    from cosim.scenario import ControllerSpec


class InverterSettingsParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    p_limit_pct: float | None = Field(None, ge=0, le=100, description="active-power cap, % of each AC rating")
    tan_phi: float | None = Field(None, ge=-TAN_PHI_MAX, le=TAN_PHI_MAX,
                                  description="fixed power factor as q/|p| (+ = absorbing)")
    volt_var: VoltVarCurve | None = None
    volt_watt: VoltWattCurve | None = None
    refresh_s: int = Field(0, ge=0, description="send the settings again this often (0 = once, at the start)")

    @model_validator(mode="after")
    def _one_reactive_mode(self) -> InverterSettingsParams:
        if self.tan_phi is not None and self.volt_var is not None and self.volt_var.enabled:
            raise ValueError("a fixed power factor (tan_phi) and volt_var exclude each other")
        return self

    def setpoints(self, ac_max_w: float) -> dict[str, float]:
        """The family setpoints that carry these settings to one inverter."""
        out: dict[str, float] = {}
        if self.p_limit_pct is not None:
            out["p_limit_w"] = self.p_limit_pct / 100.0 * ac_max_w
        if self.tan_phi is not None:
            out["tan_phi"] = self.tan_phi
        if self.volt_var is not None:
            c = self.volt_var
            if len(c.v_pu) != len(VV_V):
                raise ValueError(f"volt_var: the inverters take {len(VV_V)}-point curves")
            out |= dict(zip(VV_V, c.v_pu)) | dict(zip(VV_Q, c.q_pct)) | {"vv_ena": float(c.enabled)}
        if self.volt_watt is not None:
            vw = self.volt_watt
            if len(vw.v_pu) != len(VW_V):
                raise ValueError(f"volt_watt: the inverters take {len(VW_V)}-point curves")
            out |= dict(zip(VW_V, vw.v_pu)) | dict(zip(VW_P, vw.p_pct)) | {"vw_ena": float(vw.enabled)}
        return out


META = {"api_version": "3.0", "type": "time-based",
        "models": {"Settings": {"public": True, "params": ["values", "refresh_s"], "attrs": list(SETPOINTS)}}}


class InverterSettingsSim(mosaik_api_v3.Simulator):
    """One entity per inverter: outputs its settings at t = 0 and every ``refresh_s``, None (nothing new) else."""

    def __init__(self) -> None:
        super().__init__(META)
        self.entities: dict[str, tuple[dict[str, float], int]] = {}
        self.step_size = 60
        self.time = 0

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params)
    def create(self, num: int, model: str, values: dict[str, float] | None = None,  # type: ignore[override]
               refresh_s: int = 0) -> list[CreateResult]:
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"Settings_{len(self.entities)}"
            self.entities[eid] = (dict(values or {}), int(refresh_s))
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.time = time
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        data = {}
        for eid, attrs in outputs.items():
            values, refresh = self.entities[eid]
            due = self.time == 0 or (refresh > 0 and self.time % refresh == 0)
            data[eid] = {a: (values.get(a) if due else None) for a in attrs}
        return data


def _build(builder: BuildContext, spec: ControllerSpec, params: InverterSettingsParams) -> None:
    targets = []
    for dev in builder.select_devices(spec.devices):
        fam = device_registry.family(dev.family)
        if "p_limit_w" not in fam.setpoints:
            if spec.devices != "*":
                raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: device {dev.id!r} "
                                           f"(family {fam.name!r}) has no grid-support functions")
            continue
        cfg: Any = fam.parse_config(dev.config)  # a family with grid-support functions: its config has ac_max_w
        try:
            targets.append((dev, params.setpoints(float(cfg.ac_max_w))))
        except ValueError as exc:
            raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: {exc}") from None
    if not targets:
        raise builder.loaded.error(("controllers",), f"controller {spec.id!r}: no inverter with grid-support "
                                   "functions among its devices")
    sim = builder.sim("InverterSettings", "controllers.inverter_settings:InverterSettingsSim")
    for dev, values in targets:
        ent = builder.add_entity(sim.Settings(values=values, refresh_s=params.refresh_s))
        # the DSO's settings travel on the Control Broker, applied from the next step like every command
        builder.connect(ent, builder.devices[dev.id], *values, role="control", time_shifted=True,
                        initial_data=dict.fromkeys(values))


INVERTER_SETTINGS = ControllerKind("inverter_settings", InverterSettingsParams, _build,
                                   "DSO settings of PV inverters: power cap, power factor, volt-var / volt-watt "
                                   "curves (IEEE 1547), over the Control Broker")
