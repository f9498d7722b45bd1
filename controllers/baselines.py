"""Baseline controllers every scenario can fall back to: rule-based self-consumption, and no storage.

Both are plain mosaik-api-v3 simulators; one entity controls one battery. They see the site's PCC power and
the battery's measurements of the previous step (time-shifted in the world) and send a battery power
setpoint (+ = charge) for the next step, within what the battery reports it can do now.
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np

INPUTS = ("pcc_p_w", "batt_p_w", "p_charge_avail_w", "p_discharge_avail_w")

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "SelfConsumption": {"public": True, "params": [], "attrs": [*INPUTS, "p_set_w"]},
        "NoStorage": {"public": True, "params": [], "attrs": [*INPUTS, "p_set_w"]},
        # n batteries of one model as vectors (inputs and p_set_w: element i for battery i)
        "Group": {"public": True, "params": ["kind", "n"], "attrs": [*INPUTS, "p_set_w"]},
    },
}


def self_consumption_setpoint(pcc_p_w: np.ndarray, batt_p_w: np.ndarray, charge_avail_w: np.ndarray,
                              discharge_avail_w: np.ndarray) -> np.ndarray:
    """Drive the PCC towards zero: the battery takes over the last measured import or export.

    The site's net demand without the battery is ``pcc - batt``; the battery should cover it, within what
    it can deliver now. NaN inputs (a device that did not answer) give a zero setpoint.
    """
    target = batt_p_w - pcc_p_w
    target = np.clip(target, -discharge_avail_w, charge_avail_w)
    return np.where(np.isfinite(target), target, 0.0)


class BaselineSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.eids: list[str] = []
        self.kind: list[str] = []
        self.p_set_w = np.zeros(0)
        self.groups: dict[str, tuple[str, int, np.ndarray]] = {}  # Group eid -> (model, n, p_set_w)
        self.step_size = 60

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    def create(self, num: int, model: str, **params: Any) -> list[CreateResult]:
        if model == "Group":
            if params.get("kind") not in ("SelfConsumption", "NoStorage"):
                raise ValueError(f"Group: kind must be SelfConsumption or NoStorage, got {params.get('kind')!r}")
            groups = []
            for _n in range(num):
                eid = f"Group_{len(self.groups)}"
                self.groups[eid] = (params["kind"], int(params["n"]), np.zeros(int(params["n"])))
                groups.append({"eid": eid, "type": model})
            return groups  # type: ignore[return-value]
        out: list[CreateResult] = []
        for _n in range(num):
            eid = f"{model}_{len(self.eids)}"
            self.eids.append(eid)
            self.kind.append(model)
            out.append({"eid": eid, "type": model})
        self.p_set_w = np.zeros(len(self.eids))
        return out

    def _step_groups(self, inputs: dict) -> None:
        for eid, (model, n, _) in self.groups.items():
            arrays = {name: np.full(n, np.nan) for name in INPUTS}
            for name, sources in inputs.get(eid, {}).items():
                (value,) = sources.values()  # one vector source each (the world connects exactly one)
                if value is not None:
                    arrays[name] = np.asarray(value, dtype=np.float64).reshape(n)
            sc = self_consumption_setpoint(arrays["pcc_p_w"], arrays["batt_p_w"], arrays["p_charge_avail_w"],
                                           arrays["p_discharge_avail_w"])
            self.groups[eid] = (model, n, sc if model == "SelfConsumption" else np.zeros(n))

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        if self.groups:
            self._step_groups(inputs)
            inputs = {eid: attrs for eid, attrs in inputs.items() if eid not in self.groups}
        n = len(self.eids)
        index = {eid: i for i, eid in enumerate(self.eids)}
        arrays = {name: np.full(n, np.nan) for name in INPUTS}
        for eid, attrs in inputs.items():
            i = index[eid]
            for name, sources in attrs.items():
                arrays[name][i] = sum(v for v in sources.values() if v is not None)
        sc = self_consumption_setpoint(arrays["pcc_p_w"], arrays["batt_p_w"], arrays["p_charge_avail_w"],
                                       arrays["p_discharge_avail_w"])
        self.p_set_w = np.where(np.array(self.kind) == "SelfConsumption", sc, 0.0)
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        index = {eid: i for i, eid in enumerate(self.eids)}
        return {eid: {attr: self.groups[eid][2].copy() if eid in self.groups else float(self.p_set_w[index[eid]])
                      for attr in attrs} for eid, attrs in outputs.items()}
