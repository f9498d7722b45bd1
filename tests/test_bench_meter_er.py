"""The HIL bench with a virtual meter and a virtual Energy Router at its boundary (both hosted on loopback).

The meter only observes: it lives in the post-grid device host, which the bench holds to the wall clock too (one
paced step, one timing row per step) and puts behind the boundary (every DLMS read in the device I/O log). The
ER's setpoints pass the operator's limits (refused beyond them, never clipped) and its controller watchdog.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import mosaik_api_v3
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel, ConfigDict

from cosim import controller_kinds
from cosim.controller_kinds import ControllerKind
from cosim.scenario import load
from hil_bench.run import run_bench

REPO = Path(__file__).resolve().parents[1]
FUR = REPO / "scenarios" / "data" / "s4g" / "fur_feeder.json"
STEP = 60
#: the battery power the test controller asks of the ER each step: 2000 W is beyond the bench's 1500 W limit
PLAN_W = [500.0, -800.0, 2000.0, 1000.0, 500.0, -500.0, 800.0, 300.0, 200.0, 100.0]


class ErStepsSim(mosaik_api_v3.Simulator):
    """A controller that writes the next value of PLAN_W to the ER's batt_p_w every step."""

    def __init__(self) -> None:
        super().__init__({"api_version": "3.0", "type": "time-based",
                          "models": {"Steps": {"public": True, "params": [], "attrs": ["p_set_w"]}}})
        self.time = 0

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = STEP, **_: Any) -> dict:
        self.step_size = step_size
        return self.meta

    def create(self, num: int, model: str) -> list[dict]:
        return [{"eid": "steps", "type": model}]

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        self.time = time
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        return {"steps": {"p_set_w": PLAN_W[(self.time // self.step_size) % len(PLAN_W)]}}


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _build(builder: Any, spec: Any, params: BaseModel) -> None:
    sim = builder.sim("ErSteps", "tests.test_bench_meter_er:ErStepsSim")
    ctl = builder.add_entity(sim.Steps())
    builder.connect(ctl, builder.devices["er"], ("p_set_w", "batt_p_w"), time_shifted=True,
                    initial_data={"p_set_w": 0.0})
    builder.record(ctl, "p_set_w", "controllers", "steps.p_set_w")


@pytest.fixture
def er_steps():
    controller_kinds.register(ControllerKind("er_steps", NoParams, _build, "test: ER battery power steps"))
    yield
    controller_kinds.unregister("er_steps")


SCENARIO = f"""
name: bench_meter_er
start: 2019-06-15T11:00:00+02:00
duration: 12min
step: {STEP}s
grid: {{source: dsf-se, path: {FUR}, mode: unbalanced}}
profiles: {{pv: {{source: s4g-pv, column: fur_denmark}}}}
sites:
  - {{id: h1, bus: bus_002, phase: 2, load: {{column: profile_1, power_factor: 0.95}}}}
devices:
  - {{id: smm, family: meter, site: h1, address: 'dlms+tcp://', config: {{phases: 1, phase: b}}}}
  - {{id: er, family: energy_router, site: h1, address: 'iec61850://', config: {{pv_kwp: 3}}}}
controllers:
  - {{id: steps, kind: er_steps}}
bench:
  rt_factor: 0.005
  virtual_step_s: 5
  read_at: 0.6
  tolerance: 50ms
  io_timeout: 5s  # a reply timeout is wall time: half a 0.3 s cycle is not fair to a healthy device on a busy machine
  monitor: {{enabled: false}}
  limits: {{er: {{p_min_w: -1500, p_max_w: 1500}}}}
  drills: [{{at: 8min, device: er, fault: controller_silent}}]
"""


def io_rows(run_dir: Path, device: str) -> list[dict]:
    return pq.read_table(run_dir / "device_io" / f"{device}.parquet").to_pylist()


def test_bench_holds_a_virtual_meter_and_a_virtual_er(tmp_path, er_steps):
    path = tmp_path / "s.yaml"
    path.write_text(textwrap.dedent(SCENARIO))
    result = run_bench(load(path), tmp_path / "run", progress=False, report=False)
    assert result.status == "complete", result.error
    run_dir = result.run_dir
    bench = json.loads((run_dir / "bench.json").read_text())
    assert {d: bench["devices"][d]["kind"] for d in ("smm", "er")} == {"smm": "hosted", "er": "hosted"}
    assert bench["devices"]["smm"]["identity"]["manufacturer"] == "S4G"  # the DLMS identity, read at connect

    # the post-grid host is paced with the rest: one timing row per step, not two
    steps = list(range(0, 12 * 60, STEP))
    assert pq.read_table(run_dir / "timing.parquet").column("t_s").to_pylist() == steps
    # ...and behind the boundary: the meter is read over DLMS at every step
    reads = [r for r in io_rows(run_dir, "smm") if r["op"] == "read"]  # one row per value read
    assert sorted({r["t_s"] for r in reads}) == steps and {r["status"] for r in reads} == {"ok"}
    # its clock runs on the scenario's calendar (the build context the bench gives its hosted devices)
    start = load(path).scenario.start.timestamp()
    clock = [r["value"] - start for r in reads if r["name"] == "clock_unix_s"]
    assert all(0 <= c <= 12 * 60 + STEP for c in clock)
    devices = pq.read_table(run_dir / "timeseries" / "devices.parquet").to_pydict()
    assert set(devices["smm.available"]) == {1.0} and devices["smm.e_import_wh"][-1] > 0

    # the ER's setpoints: beyond the operator's limit refused before the wire, never clipped
    writes = [r for r in io_rows(run_dir, "er") if r["op"] == "write" and r["source"] == "controller"]
    refused = [r for r in writes if r["status"] == "rejected"]
    assert refused and all(r["value"] == 2000.0 and "p_max_w=1500" in r["detail"] for r in refused)
    assert all(-1500 <= r["value"] <= 1500 for r in writes if r["status"] == "ok")
    # the controller goes silent (drill at 8 min): the ER gets its safe setpoint within two cycles
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    silent = [e for e in events if e["device"] == "er" and e["kind"] == "controller_silent"]
    assert [e["t_s"] for e in silent] == [540]
    safe = [r for r in io_rows(run_dir, "er") if r["source"] == "watchdog" and r["status"] == "ok"]
    assert safe and safe[0]["t_s"] == 540
    assert bench["end_safe"] == {"er": "ok", "smm": "ok"}
