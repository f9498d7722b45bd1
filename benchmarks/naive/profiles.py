"""Naive profile simulator: one entity per household load, PV profile and price, each holding its whole series.

A newcomer reads the CSV files into arrays and outputs row ``t // step`` at time t (the mosaik tutorial's
"CSV simulator"). The arrays come from :mod:`simulators.profiles`' plain functions so that both runs see exactly
the same data (the S4G files are read and resampled there); nothing of our profile simulator is used.
Powers are offered in W (for the devices) and MW (for the grid adapter).
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Load": {"public": True, "params": ["p_w", "q_var"], "attrs": ["p_w", "q_var", "P[MW]", "Q[MVar]"]},
        "PV": {"public": True, "params": ["w_per_kwp"], "attrs": ["w_per_kwp"]},
        "Price": {"public": True, "params": ["import_eur_per_kwh", "export_eur_per_kwh"],
                  "attrs": ["import_eur_per_kwh", "export_eur_per_kwh"]},
    },
}


class NaiveProfiles(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.series: dict[str, dict[str, np.ndarray]] = {}
        self.step_size = 60
        self.row = 0

    # mosaik passes the simulator's own parameters by keyword (narrower than the base's **kwargs)
    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60) -> Meta:  # type: ignore[override]
        self.step_size = int(step_size)
        return self.meta

    def create(self, num: int, model: str, **series: Any) -> list[CreateResult]:
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"{model}_{len(self.series)}"
            self.series[eid] = {k: np.asarray(v, dtype=float) for k, v in series.items()}
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.row = time // self.step_size
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        data = {}
        for eid, attrs in outputs.items():
            s = self.series[eid]
            row = {}
            for attr in attrs:
                if attr == "P[MW]":
                    row[attr] = float(s["p_w"][self.row]) / 1e6
                elif attr == "Q[MVar]":
                    row[attr] = float(s["q_var"][self.row]) / 1e6
                else:
                    row[attr] = float(s[attr][self.row])
            data[eid] = row
        return data
