"""Naive device simulators: one mosaik simulator per device type, one Python object per device.

Each entity owns its own model object -- a bank of exactly one device, i.e. our physics classes
(:mod:`devices.fronius.model`, :mod:`devices.pv_battery.model`, :mod:`devices.libal.model`) used one device at a
time -- and is stepped on its own: no shared arrays, no driver layer, no device host. Setpoints outside the
device's ratings are refused (kept as before), as the real devices do.
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np
from pydantic import BaseModel

from devices.family import ModelBank
from devices.fronius.model import FroniusBank, FroniusConfig
from devices.libal.model import LibalBank, LibalConfig
from devices.pv_battery.model import PvBatteryBank, PvBatteryConfig

FRONIUS = ("p_w", "q_var", "pv_p_w", "batt_p_w", "soc", "e_wh", "pv_curtail_w", "p_charge_avail_w",
           "p_discharge_avail_w", "v_v", "f_hz")
PV = ("p_w", "q_var", "pv_p_w", "batt_p_w", "soc", "e_wh", "pv_curtail_w", "p_charge_avail_w", "p_discharge_avail_w")
LIBAL = ("p_w", "q_var", "batt_p_w", "soc", "e_wh", "p_charge_avail_w", "p_discharge_avail_w", "v_v", "i_a", "t_c",
         "soh", "alarms", "i_charge_max_a", "i_discharge_max_a")
GRID = ("P[MW]", "Q[MVar]")  # what the grid adapter takes

# model: (config class, bank class, measurements, env inputs, setpoints)
MODELS: dict[str, tuple[type[BaseModel], type[ModelBank], tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "Fronius": (FroniusConfig, FroniusBank, FRONIUS, ("pv_w_per_kwp", "site_load_w"), ("batt_p_w",)),
    "PvInverter": (PvBatteryConfig, PvBatteryBank, PV, ("pv_w_per_kwp",), ("batt_p_w",)),
    "Libal": (LibalConfig, LibalBank, LIBAL, (), ("p_w", "q_var")),
}
META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {name: {"public": True, "params": ["config"],
                      "attrs": list(dict.fromkeys([*meas, *GRID, *env, *sp, "rejected"]))}
               for name, (_c, _b, meas, env, sp) in MODELS.items()},
}


class _Device:
    def __init__(self, model: str, config: dict) -> None:
        cfg_cls, bank_cls, self.measurements, self.env_names, _sp = MODELS[model]
        cfg = cfg_cls.model_validate(config)
        self.model = bank_cls([cfg])  # the physics of this one device
        self.limits = _limits(model, cfg)
        self.env = dict.fromkeys(self.env_names, 0.0)
        self.values: dict[str, float] = {}
        self.rejected = 0


def _limits(model: str, cfg: Any) -> dict[str, tuple[float, float]]:
    if model == "Libal":
        b = cfg.battery
        return {"p_w": (-b.p_discharge_max_w, b.p_charge_max_w), "q_var": (-cfg.s_max_va, cfg.s_max_va)}
    if cfg.battery is None:
        return {}
    return {"batt_p_w": (-cfg.battery.p_discharge_max_w, cfg.battery.p_charge_max_w)}


class NaiveDevices(mosaik_api_v3.Simulator):
    """One instance per device type (``world.start(...)`` once per type)."""

    def __init__(self) -> None:
        super().__init__(META)
        self.devices: dict[str, _Device] = {}
        self.step_size = 60

    # mosaik passes the simulator's own parameters by keyword (narrower than the base's **kwargs)
    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60) -> Meta:  # type: ignore[override]
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's own parameters by keyword (narrower than the base's **kwargs)
    def create(self, num: int, model: str, config: dict | None = None) -> list[CreateResult]:  # type: ignore[override]
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"{model}_{len(self.devices)}"
            self.devices[eid] = _Device(model, config or {})
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        for eid, dev in self.devices.items():
            for attr, sources in inputs.get(eid, {}).items():
                value = next(iter(sources.values()))
                if attr in dev.env:
                    dev.env[attr] = value
                elif value is not None:  # a setpoint
                    lo, hi = dev.limits.get(attr, (0.0, 0.0))
                    if lo <= value <= hi:
                        dev.model.setpoints[attr][0] = value
                    else:
                        dev.rejected += 1
            dev.model.step(time, self.step_size, {k: np.array([v], dtype=float) for k, v in dev.env.items()})
            measured = dev.model.measure()
            dev.values = {name: float(measured[name][0]) for name in dev.measurements}
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        data = {}
        for eid, attrs in outputs.items():
            dev = self.devices[eid]
            row = {}
            for attr in attrs:
                if attr == "P[MW]":
                    row[attr] = dev.values["p_w"] / 1e6
                elif attr == "Q[MVar]":
                    row[attr] = dev.values["q_var"] / 1e6
                elif attr == "rejected":
                    row[attr] = dev.rejected
                else:
                    row[attr] = dev.values[attr]
            data[eid] = row
        return data
