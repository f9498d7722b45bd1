"""Framework overhead: 100 devices with trivial physics and a trivial controller, ours versus raw mosaik.

    python -m benchmarks.overhead [--quick]

The workload is the same on both sides and deliberately trivial, so what is measured is the machinery around it:
100 batteries (``e += p dt``), each with a proportional controller (``p_set = -k (e - e_ref)``, clipped) closing
a time-shifted loop, every device's powers feeding one grid connection point, every device's measurements and the
grid's exchange recorded to Parquet, 1-minute steps.

* **ours**: a scenario (generated: a two-bus grid, 100 devices of a trivial family registered through
  :func:`devices.registry.register_family`, a trivial controller kind) built by :class:`cosim.world.WorldBuilder`
  and run by :func:`cosim.run.run` -- the device host (:class:`devices.simulator.DeviceSim`, capability checks,
  event log), the grid simulator with its fast power flow, the recorder simulator and the progress clock.
* **raw mosaik**: a hand-written world of four plain mosaik-api-v3 simulators (devices, controller, a grid that
  sums the powers, a collector writing one Parquet file at the end), one entity per device and controller.

Timed: the stepping (``World.run`` on both sides; our recorder writes its Parquet row groups while stepping, the
raw collector writes its file at shutdown), after a warm-up run of each; building the world and closing the run
(ours: Parquet footers, results.duckdb, run.json; raw: the collector's file) are reported apart.
Goal: ours at most 1.3x the raw mosaik time per step (issue 17).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path
from typing import Any
from collections.abc import Mapping, Sequence

import mosaik
import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np
from pydantic import BaseModel, ConfigDict

from benchmarks.common import median_spread, print_rows, row
from cosim.controller_kinds import ControllerKind
from devices.base import Capabilities, Limit
from devices.family import DeviceContext, Family, ModelBank

N_DEVICES = 100
STEP_S = 60
K_GAIN = 0.5  # W per Wh
E_REF_WH = 5000.0
P_MAX_W = 3000.0
GOAL = 1.3


# ---------------------------------------------------------------------------------------------- trivial physics
class TrivialConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    e0_wh: float = 1000.0


class TrivialBank(ModelBank):
    """``e += p dt``: the cheapest physics that still has a state and a setpoint."""

    setpoint_names = ("p_set_w",)

    def __init__(self, configs: list[TrivialConfig], contexts: Sequence[DeviceContext] | None = None) -> None:
        super().__init__(configs, contexts)
        self.e_wh = np.array([c.e0_wh for c in configs], dtype=float)
        self.p_w = np.zeros(self.n)

    def step(self, t_s: float, dt_s: float, env: Mapping[str, np.ndarray]) -> None:
        self.p_w = self.setpoints["p_set_w"].copy()
        self.e_wh = self.e_wh + self.p_w * dt_s / 3600.0

    def measure(self) -> dict[str, np.ndarray]:
        return {"p_w": self.p_w.copy(), "q_var": np.zeros(self.n), "e_wh": self.e_wh.copy()}


TRIVIAL = Family(name="bench_trivial", config=TrivialConfig, bank=TrivialBank, measurements=("p_w", "q_var", "e_wh"),
                 injects=True, capabilities=lambda c: Capabilities(measurements=("p_w", "q_var", "e_wh"),
                                                     setpoints={"p_set_w": Limit(-P_MAX_W, P_MAX_W)}),
                 battery_setpoint="p_set_w", safe_setpoint={"p_set_w": 0.0},
                 description="benchmark only: trivial battery physics")


def control(e_wh):
    return np.clip(-K_GAIN * (np.asarray(e_wh, dtype=float) - E_REF_WH), -P_MAX_W, P_MAX_W)


# ---------------------------------------------------------------------------------------------- ours: a controller kind
class TrivialParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


CTL_META = {"api_version": "3.0", "type": "time-based",
            "models": {"P": {"public": True, "params": [], "attrs": ["e_wh", "p_set_w"]}}}


class TrivialControllerSim(mosaik_api_v3.Simulator):
    """Written the way our controllers are: all entities of the simulator stepped as one array."""

    def __init__(self) -> None:
        super().__init__(CTL_META)
        self.eids: list[str] = []
        self.p = np.zeros(0)

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's own parameters by keyword (narrower than the base's **kwargs)
    def create(self, num: int, model: str) -> list[CreateResult]:  # type: ignore[override]
        out: list[CreateResult] = []
        for _ in range(num):
            out.append({"eid": f"P_{len(self.eids)}", "type": model})
            self.eids.append(out[-1]["eid"])
        self.index = {eid: i for i, eid in enumerate(self.eids)}
        self.p = np.zeros(len(self.eids))
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        e = np.full(len(self.eids), np.nan)
        for eid, attrs in inputs.items():
            e[self.index[eid]] = sum(attrs["e_wh"].values())
        self.p = np.where(np.isfinite(e), control(e), 0.0)
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        return {eid: {"p_set_w": float(self.p[self.index[eid]])} for eid in outputs}


def _build_trivial(builder: Any, spec: Any, params: BaseModel) -> None:
    sim = builder.sim("BenchTrivial", "benchmarks.overhead:TrivialControllerSim")
    for dev in builder.select_devices(spec.devices, needs_battery=True):
        ctl = builder.add_entity(sim.P())
        device = builder.devices[dev.id]
        builder.connect(device, ctl, "e_wh")
        builder.connect(ctl, device, "p_set_w", time_shifted=True, initial_data={"p_set_w": 0.0})


def register() -> None:
    """Make the trivial family and controller kind known (idempotent)."""
    from cosim import controller_kinds
    from devices import registry as devices

    if "bench_trivial" not in devices.families():
        devices.register_family("bench_trivial", "benchmarks.overhead:TRIVIAL")
    if "bench_trivial" not in controller_kinds.names():
        controller_kinds.register(ControllerKind("bench_trivial", TrivialParams, _build_trivial,
                                                 "benchmark only: proportional controller"))


def two_bus_grid(path: Path) -> Path:
    import pandapower as pp

    net = pp.create_empty_network()
    b0 = pp.create_bus(net, 0.4, name="slack")
    b1 = pp.create_bus(net, 0.4, name="lv")
    pp.create_ext_grid(net, b0, vm_pu=1.0)
    pp.create_line_from_parameters(net, b0, b1, 0.05, r_ohm_per_km=0.206, x_ohm_per_km=0.08, c_nf_per_km=0.0,
                                   max_i_ka=2.0, name="feeder")
    pp.to_json(net, str(path))
    return path


def scenario_text(grid: Path, n: int, duration_s: int) -> str:
    devices = "\n".join(f"  - {{id: d{i:03d}, family: bench_trivial, bus: lv, config: {{e0_wh: {1000 + 30 * i}}}}}"
                        for i in range(n))
    ids = ", ".join(f"d{i:03d}" for i in range(n))
    return f"""name: overhead
start: 2019-06-15T00:00:00+02:00
duration: {duration_s}
step: {STEP_S}
grid: {{source: pandapower, path: {grid}, mode: balanced, solver: fast}}
outputs: {{buses: false, lines: false}}
devices:
{devices}
controllers:
  - {{id: p, kind: bench_trivial, devices: [{ids}]}}
"""


def run_ours(tmp: Path, n: int, duration_s: int) -> tuple[float, float]:
    """(stepping seconds, build seconds) of one run."""
    from benchmarks import memory
    from cosim import run as run_mod
    from cosim.scenario import load

    register()
    path = tmp / "overhead.yaml"
    path.write_text(scenario_text(two_bus_grid(tmp / "grid.json"), n, duration_s))
    loaded = load(path)
    memory._hook_clock()  # times World.run: stepping only, as on the raw side
    memory._STEPPING.clear()
    t0 = time.perf_counter()
    res = run_mod.run(loaded, tmp / f"ours-{time.monotonic_ns()}", progress=False, kpis=False, report=False)
    total = time.perf_counter() - t0
    if res.status != "complete":
        raise RuntimeError(res.error)
    stepping = memory._STEPPING[-1] - memory._STEPPING[0]
    return stepping, total - stepping


# ---------------------------------------------------------------------------------------------- raw mosaik
RAW_META = {
    "api_version": "3.0", "type": "time-based",
    "models": {
        "Battery": {"public": True, "params": ["e0_wh"], "attrs": ["p_set_w", "p_w", "q_var", "e_wh"]},
        "Controller": {"public": True, "params": [], "attrs": ["e_wh", "p_set_w"]},
        "Bus": {"public": True, "params": [], "attrs": ["p_w", "q_var", "p_slack_w", "q_slack_var"]},
        "Collector": {"public": True, "params": ["path"], "attrs": [], "any_inputs": True},
    },
}


class RawSim(mosaik_api_v3.Simulator):
    """Plain mosaik: a dict per entity, one entity per device and per controller."""

    def __init__(self) -> None:
        super().__init__(RAW_META)
        self.ents: dict[str, dict[str, Any]] = {}
        self.rows: list[dict] = []

    # mosaik passes the simulator's own parameters by keyword (narrower than the base's **kwargs)
    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60) -> Meta:  # type: ignore[override]
        self.step_size = int(step_size)
        return self.meta

    def create(self, num: int, model: str, **params: Any) -> list[CreateResult]:
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"{model}_{len(self.ents)}"
            self.ents[eid] = {"model": model, "p_w": 0.0, "q_var": 0.0, "p_set_w": 0.0,
                              "e_wh": params.get("e0_wh", 0.0), "path": params.get("path")}
            out.append({"eid": eid, "type": model})
        return out

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        for eid, attrs in inputs.items():
            ent = self.ents[eid]
            if ent["model"] == "Battery":
                p = sum(attrs["p_set_w"].values())
                ent["p_w"] = p if -P_MAX_W <= p <= P_MAX_W else ent["p_w"]
                ent["e_wh"] += ent["p_w"] * self.step_size / 3600.0
            elif ent["model"] == "Controller":
                e = sum(attrs["e_wh"].values())
                ent["p_set_w"] = min(max(-K_GAIN * (e - E_REF_WH), -P_MAX_W), P_MAX_W)
            elif ent["model"] == "Bus":
                ent["p_slack_w"] = sum(attrs["p_w"].values())
                ent["q_slack_var"] = sum(attrs["q_var"].values())
            else:
                row: dict[str, float] = {"t_s": time}
                for attr, values in attrs.items():
                    for src, v in values.items():
                        row[f"{src}.{attr}"] = float(v)
                self.rows.append(row)
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        return {eid: {a: self.ents[eid][a] for a in attrs} for eid, attrs in outputs.items()}

    def finalize(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        for ent in self.ents.values():
            if ent["model"] == "Collector" and self.rows:
                cols = {k: [r.get(k) for r in self.rows] for k in self.rows[0]}
                pq.write_table(pa.table(cols), ent["path"])


def run_raw(tmp: Path, n: int, duration_s: int) -> tuple[float, float]:
    t0 = time.perf_counter()
    world = mosaik.World({name: {"python": "benchmarks.overhead:RawSim"} for name in ("Dev", "Ctl", "Grid", "Col")},
                         time_resolution=1.0, skip_greetings=True, configure_logging=False)
    dev = world.start("Dev", step_size=STEP_S)
    ctl = world.start("Ctl", step_size=STEP_S)
    bus = world.start("Grid", step_size=STEP_S).Bus()
    col = world.start("Col", step_size=STEP_S).Collector(path=str(tmp / f"raw-{time.monotonic_ns()}.parquet"))
    for i in range(n):
        b = dev.Battery(e0_wh=1000.0 + 30 * i)
        c = ctl.Controller()
        world.connect(b, c, "e_wh")
        world.connect(c, b, "p_set_w", time_shifted=True, initial_data={"p_set_w": 0.0})
        world.connect(b, bus, "p_w", "q_var")
        world.connect(b, col, "p_w", "q_var", "e_wh")
    world.connect(bus, col, "p_slack_w", "q_slack_var")
    t1 = time.perf_counter()
    world.run(until=duration_s, print_progress=False, shutdown=False)
    t2 = time.perf_counter()
    world.shutdown()  # the collector writes its file: reported with building, as ours closes its run directory
    return t2 - t1, t1 - t0 + time.perf_counter() - t2


# ---------------------------------------------------------------------------------------------- the benchmark
def run(quick: bool) -> list[dict]:
    from benchmarks.memory import tiny

    duration = 1800 if tiny() else (7200 if quick else 86400)
    reps = 1 if tiny() else (2 if quick else 3)
    steps = duration // STEP_S
    ours, raw, ours_build, raw_build = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="s4g-overhead-") as d:
        tmp = Path(d)
        run_ours(tmp, N_DEVICES, 600)  # warm-up: imports, numba, first-call costs
        run_raw(tmp, N_DEVICES, 600)
        for _ in range(reps):  # interleaved, so a busy moment of the machine hits both sides alike
            gc.collect()
            s, b = run_ours(tmp, N_DEVICES, duration)
            ours.append(s / steps * 1e3)
            ours_build.append(b)
            gc.collect()
            s, b = run_raw(tmp, N_DEVICES, duration)
            raw.append(s / steps * 1e3)
            raw_build.append(b)
    o, r = median_spread(ours), median_spread(raw)
    ratios = [a / b for a, b in zip(ours, raw)]
    return [
        row(f"overhead: {N_DEVICES} trivial devices + controller, per step, ours vs raw mosaik", o, r, "ms"),
        row("overhead: ours / raw mosaik time per step", median_spread(ratios), None, "x", goal_max=GOAL),
        row("overhead: building the world and closing the run (ours: scenario + WorldBuilder + run directory; "
            "raw: hand-written world + the collector's file)",
            median_spread(ours_build), median_spread(raw_build), "s"),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    print_rows(run(parser.parse_args().quick), title="framework overhead")
