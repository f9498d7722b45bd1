"""Battery physics for many batteries at once (arrays, no I/O).

Power is referred to the AC side of the battery's converter, load arrow: + = charging.
The round-trip efficiency is split into a charge part (AC -> stored) and a discharge part (stored -> AC),
so ``eta_charge * eta_discharge`` is the round-trip efficiency. A request the battery cannot follow
because of its power rating or its SoC window is followed as far as possible and the delivered power is
reported; refusing a request outside the rating is the driver's job (capabilities), not the physics'.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np

from devices.arrays import clip
from devices.battery.params import BatteryParams


#: the device models' name for the shared battery parameters (devices/battery/params.py)
BatteryConfig = BatteryParams


@dataclass
class BatteryStep:
    """What one step did, per battery (W, mean over the step)."""

    p_w: np.ndarray
    loss_w: np.ndarray
    self_discharge_w: np.ndarray


class BatteryBank:
    """N batteries stepped together; index i is one battery."""

    def __init__(self, configs: list[BatteryConfig]) -> None:
        def col(name: str) -> np.ndarray:
            return np.array([getattr(c, name) for c in configs], dtype=float)

        self.capacity_wh = col("capacity_wh")
        self.p_charge_max_w = col("p_charge_max_w")
        self.p_discharge_max_w = col("p_discharge_max_w")
        self.eta_charge = col("eta_charge")
        self.eta_discharge = col("eta_discharge")
        self.e_min_wh = col("soc_min") * self.capacity_wh
        self.e_max_wh = col("soc_max") * self.capacity_wh
        self.self_discharge_per_s = col("self_discharge_per_day") / 86400.0
        self.e_wh = col("soc_init") * self.capacity_wh
        self.p_w = np.zeros(len(configs))

    @property
    def n(self) -> int:
        return len(self.capacity_wh)

    @property
    def soc(self) -> np.ndarray:
        return cast(np.ndarray, self.e_wh / self.capacity_wh)

    def available_w(self, dt_s: float) -> tuple[np.ndarray, np.ndarray]:
        """Largest charge and discharge power (AC side, >= 0) sustainable over the next ``dt_s``."""
        h = dt_s / 3600.0
        charge = np.minimum(self.p_charge_max_w, np.maximum(self.e_max_wh - self.e_wh, 0.0) / (self.eta_charge * h))
        discharge = np.minimum(
            self.p_discharge_max_w, np.maximum(self.e_wh - self.e_min_wh, 0.0) * self.eta_discharge / h
        )
        return charge, discharge

    def step(self, dt_s: float, p_request_w: np.ndarray) -> BatteryStep:
        """Follow the requested power as far as rating and SoC window allow, for ``dt_s`` seconds."""
        h = dt_s / 3600.0
        charge_max, discharge_max = self.available_w(dt_s)
        p = clip(p_request_w, -discharge_max, charge_max)
        stored_w = np.where(p >= 0, p * self.eta_charge, p / self.eta_discharge)
        e = self.e_wh + stored_w * h
        # Self-discharge never pushes the battery below its window: the BMS disconnects there.
        sd_wh = np.minimum(e * self.self_discharge_per_s * dt_s, np.maximum(e - self.e_min_wh, 0.0))
        e = e - sd_wh
        self.e_wh = clip(e, self.e_min_wh, self.e_max_wh)  # only float rounding is removed here
        self.p_w = p
        return BatteryStep(p_w=p, loss_w=p - stored_w, self_discharge_w=sd_wh / h)
