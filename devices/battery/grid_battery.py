"""A stationary grid battery: battery bank + PCS with an apparent-power rating.

Setpoints: ``p_w`` (+ = charging, AC side) and ``q_var`` (+ = absorbing reactive power, load arrow).
Active power has priority: reactive power is limited to what the PCS rating leaves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from pydantic import Field, model_validator

from devices.base import Capabilities, Limit
from devices.battery.model import BatteryBank, BatteryConfig
from devices.battery.params import ParamsModel
from devices.family import DeviceContext, Family, ModelBank


class GridBatteryConfig(ParamsModel):
    battery: BatteryConfig
    s_max_va: float = Field(gt=0, description="PCS apparent-power rating")

    @model_validator(mode="after")
    def _rating(self) -> GridBatteryConfig:
        if max(self.battery.p_charge_max_w, self.battery.p_discharge_max_w) > self.s_max_va:
            raise ValueError("battery power ratings exceed the PCS rating s_max_va")
        return self


class GridBatteryBank(ModelBank):
    setpoint_names = ("p_w", "q_var")

    def __init__(self, configs: list[GridBatteryConfig], contexts: Sequence[DeviceContext] | None = None) -> None:
        super().__init__(configs, contexts)
        self.battery = BatteryBank([c.battery for c in configs])
        self.s_max_va = np.array([c.s_max_va for c in configs], dtype=float)
        self.q_var = np.zeros(self.n)
        self.dt_s: float = 60

    def step(self, t_s: float, dt_s: float, env: Mapping[str, np.ndarray]) -> None:
        self.dt_s = dt_s
        p = self.battery.step(dt_s, self.setpoints["p_w"]).p_w
        q_room = np.sqrt(np.maximum(self.s_max_va**2 - p**2, 0.0))
        self.q_var = np.clip(self.setpoints["q_var"], -q_room, q_room)

    def measure(self) -> dict[str, np.ndarray]:
        charge, discharge = self.battery.available_w(self.dt_s)
        return {
            "p_w": self.battery.p_w.copy(),
            "q_var": self.q_var.copy(),
            "batt_p_w": self.battery.p_w.copy(),
            "soc": self.battery.soc,
            "e_wh": self.battery.e_wh.copy(),
            "p_charge_avail_w": charge,
            "p_discharge_avail_w": discharge,
        }


def _capabilities(cfg: GridBatteryConfig) -> Capabilities:
    return Capabilities(
        measurements=FAMILY.measurements,
        setpoints={
            "p_w": Limit(-cfg.battery.p_discharge_max_w, cfg.battery.p_charge_max_w),
            "q_var": Limit(-cfg.s_max_va, cfg.s_max_va),
        },
    )


FAMILY = Family(
    name="battery",
    config=GridBatteryConfig,
    bank=GridBatteryBank,
    measurements=("p_w", "q_var", "batt_p_w", "soc", "e_wh", "p_charge_avail_w", "p_discharge_avail_w"),
    capabilities=_capabilities,
    injects=True,
    battery_setpoint="p_w",
    safe_setpoint={"p_w": 0.0, "q_var": 0.0},
    description="stationary battery with a PCS (P and Q setpoints)",
)
