"""Naive data collector: the mosaik tutorial's collector, writing the run-directory format.

One entity receives every recorded attribute each step and hands the row to :class:`cosim.recorder.Recorder`
(plain Parquet I/O, no mosaik), so that :mod:`cosim.kpi` can read the naive run like any other.
"""

from __future__ import annotations

from typing import Any

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta

META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {"Collector": {"public": True, "any_inputs": True, "params": ["columns", "factors"], "attrs": []}},
}


class NaiveCollector(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.recorder: Any = None
        self.factors: dict[tuple[str, str], float] = {}
        self.step_size = 60

    # mosaik passes the simulator's own parameters by keyword (narrower than the base's **kwargs)
    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, out_dir: str = ".") -> Meta:  # type: ignore[override]
        self.step_size = int(step_size)
        self.out_dir = out_dir
        return self.meta

    # mosaik passes the model's own parameters by keyword (narrower than the base's **kwargs)
    def create(self, num: int, model: str, columns: list | None = None,  # type: ignore[override]
               factors: list | None = None) -> list[CreateResult]:
        from cosim.recorder import Recorder

        self.recorder = Recorder(self.out_dir, columns or [])
        self.factors = {(src, attr): f for src, attr, f in factors or []}
        return [{"eid": "collector", "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        row: dict[tuple[str, str], Any] = {}
        for attr, sources in inputs.get("collector", {}).items():
            for src, value in sources.items():
                f = self.factors.get((src, attr))
                row[(src, attr)] = value * f if f is not None and value is not None else value
        self.recorder.record(time, row)
        return time + self.step_size

    def finalize(self) -> None:
        if self.recorder is not None:
            self.recorder.close("complete")
