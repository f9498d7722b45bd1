"""Hybrid inverter physics: PV behind an MPPT limit, an optional battery, one AC output limit.

All powers are referred to the AC terminal, load arrow (+ = drawn from the grid). The PV path has the
inverter efficiency; the battery's charge/discharge efficiencies already include its conversion.
Setpoint ``batt_p_w`` (+ = charging). When the AC limit binds, the battery setpoint is honoured first
and PV is curtailed (what the inverter does when told to charge/discharge at a fixed rate).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import Field, model_validator

from devices.arrays import clip
from devices.base import Capabilities, Limit
from devices.battery.model import BatteryBank, BatteryConfig
from devices.battery.params import ParamsModel
from devices.family import DeviceContext, Family, Input, ModelBank


class PvBatteryConfig(ParamsModel):
    pv_kwp: float = Field(0.0, ge=0, description="installed PV peak power")
    pv_mppt_max_w: float | None = Field(None, gt=0, description="DC limit of the MPPT input (default: no limit)")
    ac_max_w: float = Field(gt=0, description="inverter AC active-power rating")
    eta_inverter: float = Field(0.97, gt=0, le=1, description="PV DC -> AC efficiency")
    allow_grid_charging: bool = True
    battery: BatteryConfig | None = None

    @model_validator(mode="after")
    def _ratings(self) -> PvBatteryConfig:
        if self.battery and max(self.battery.p_charge_max_w, self.battery.p_discharge_max_w) > self.ac_max_w:
            raise ValueError("battery power ratings exceed the inverter's ac_max_w")
        return self


class PvBatteryBank(ModelBank):
    setpoint_names = ("batt_p_w",)

    def __init__(self, configs: list[PvBatteryConfig], contexts: Sequence[DeviceContext] | None = None) -> None:
        super().__init__(configs, contexts)
        n = self.n
        self.pv_kwp = np.array([c.pv_kwp for c in configs], dtype=float)
        self.pv_mppt_max_w = np.array([c.pv_mppt_max_w or np.inf for c in configs], dtype=float)
        self.ac_max_w = np.array([c.ac_max_w for c in configs], dtype=float)
        self.eta_inverter = np.array([c.eta_inverter for c in configs], dtype=float)
        self.allow_grid_charging = np.array([c.allow_grid_charging for c in configs], dtype=bool)
        self.has_battery = np.array([c.battery is not None for c in configs], dtype=bool)
        self._batt_idx = np.flatnonzero(self.has_battery)
        # fixed at set-up; when they hold for every device, the masks below would only copy
        self._all_battery = bool(self.has_battery.all())
        self._all_grid_charging = bool(self.allow_grid_charging.all())
        self.battery = BatteryBank([c.battery for c in configs if c.battery is not None])
        self.dt_s: float = 60
        self.p_w = np.zeros(n)
        self.pv_p_w = np.zeros(n)
        self.batt_p_w = np.zeros(n)
        self.pv_curtail_w = np.zeros(n)

    def step(self, t_s: float, dt_s: float, env: Mapping[str, np.ndarray], *,
             export_cap_w: np.ndarray | None = None, import_cap_w: np.ndarray | None = None) -> None:
        """``export_cap_w`` / ``import_cap_w``: tighter AC limits for this step than the rating (an inverter's
        active-power limit or volt-watt cap on what it delivers; 0 / 0 when it is disconnected)."""
        self.dt_s = dt_s
        w_per_kwp = np.maximum(np.asarray(env.get("pv_w_per_kwp", 0.0), dtype=float), 0.0)
        pv_avail = np.minimum(self.pv_kwp * w_per_kwp, self.pv_mppt_max_w) * self.eta_inverter
        export_cap = self.ac_max_w if export_cap_w is None else np.minimum(self.ac_max_w, export_cap_w)
        import_cap = self.ac_max_w if import_cap_w is None else np.minimum(self.ac_max_w, import_cap_w)

        # The inverter can route to the battery at most the PV plus the AC import rating, and take from it
        # at most the AC export rating; without grid charging only PV can charge.
        sp = self.setpoints["batt_p_w"]
        request = sp if self._all_battery else np.where(self.has_battery, sp, 0.0)
        charge_cap = pv_avail + import_cap if self._all_grid_charging else np.where(
            self.allow_grid_charging, pv_avail + import_cap, pv_avail)
        request = clip(request, -export_cap, charge_cap)

        if self._all_battery and self.n:
            batt = self.battery.step(dt_s, request).p_w.copy()  # (the battery keeps its own array)
        else:
            batt = np.zeros(self.n)
            if self._batt_idx.size:
                batt[self._batt_idx] = self.battery.step(dt_s, request[self._batt_idx]).p_w
        pv_used = clip(export_cap + batt, 0.0, pv_avail)

        self.batt_p_w = batt
        self.pv_p_w = -pv_used
        self.pv_curtail_w = pv_avail - pv_used
        self.p_w = batt - pv_used

    def measure(self) -> dict[str, np.ndarray]:
        soc = np.full(self.n, np.nan)
        e_wh = np.zeros(self.n)
        charge = np.zeros(self.n)
        discharge = np.zeros(self.n)
        if self._batt_idx.size:
            soc[self._batt_idx] = self.battery.soc
            e_wh[self._batt_idx] = self.battery.e_wh
            c, d = self.battery.available_w(self.dt_s)
            charge[self._batt_idx] = c
            discharge[self._batt_idx] = d
        return {
            "p_w": self.p_w.copy(),
            "q_var": np.zeros(self.n),
            "pv_p_w": self.pv_p_w.copy(),
            "batt_p_w": self.batt_p_w.copy(),
            "soc": soc,
            "e_wh": e_wh,
            "pv_curtail_w": self.pv_curtail_w.copy(),
            "p_charge_avail_w": charge,
            "p_discharge_avail_w": discharge,
        }


def _capabilities(cfg: PvBatteryConfig) -> Capabilities:
    setpoints = {}
    if cfg.battery is not None:
        setpoints["batt_p_w"] = Limit(-cfg.battery.p_discharge_max_w, cfg.battery.p_charge_max_w)
    return Capabilities(measurements=FAMILY.measurements, setpoints=setpoints)


FAMILY = Family(
    name="pv_battery",
    config=PvBatteryConfig,
    bank=PvBatteryBank,
    measurements=("p_w", "q_var", "pv_p_w", "batt_p_w", "soc", "e_wh", "pv_curtail_w",
                  "p_charge_avail_w", "p_discharge_avail_w"),
    capabilities=_capabilities,
    injects=True,
    inputs=(Input("pv_w_per_kwp", "site.pv_w_per_kwp"),),
    battery_setpoint="batt_p_w",
    safe_setpoint={"batt_p_w": 0.0},
    description="household hybrid inverter: PV + optional battery on one AC output",
)
