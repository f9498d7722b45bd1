"""The Fur/Skive pilot on the bench: all Fronius virtual over SunSpec, then one "real" (a separate process).

Both runs are paced by the wall clock at 200x real time (rt_factor 0.005: a 60 s step is a 0.3 s cycle). The
virtual devices keep the bench's time (``clock: steps``): after each step's writes and before its reads the bench
advances them to the step's end -- its own hosted ones in-process, the separately started one
(``s4g device serve fronius --clock-port 0``) over its clock link, with the same exogenous inputs from the grid
simulation. So what each device has done when it is read does not depend on how the machine schedules threads and
processes, and the two runs must give the same KPIs however busy the machine is.

Tolerance of the comparison, as in tests/test_protocol_equivalence.py: 10 Wh per energy KPI (SunSpec's 1 W
quantisation) and 0.2 % of SoC; voltage KPIs within 1e-4 pu.
"""

from __future__ import annotations

import json
import urllib.request

import pyarrow.parquet as pq
import pytest

from cosim.kpi import flatten
from cosim.run import run as run_offline
from cosim.scenario import load
from hil_bench.run import run_bench
from hil_bench.testing import pilot_data, serve_fronius, write_scenario
from tests.kpi_tolerance import assert_kpis_match_within_quantisation

RT = 0.005
# io_timeout: a reply timeout is wall time, and half a 0.3 s cycle (the default) can pass on a busy machine before a
# healthy device's reply is handled; these runs are about results, tests/test_bench_faults.py about faults
BENCH = {"rt_factor": RT, "virtual_step_s": 5, "read_at": 0.6, "tolerance": "50ms", "monitor": {"port": 0},
         "clock": "steps", "io_timeout": "5s"}
DURATION = "30min"
REAL = "fronius_4006773"


@pytest.fixture(scope="module")
def all_virtual(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_pilot")
    seen: dict = {}

    def look_at_monitor(t_s, rt):  # in the middle of the run: what does the monitor get from the broker?
        if t_s == 20 * 60:
            with urllib.request.urlopen(rt.monitor_url + "api/state", timeout=10) as reply:
                seen.update(json.loads(reply.read()))

    data = pilot_data(duration=DURATION, bench=BENCH)
    loaded = load(write_scenario(data, tmp / "all_virtual.yaml"))
    result = run_bench(loaded, tmp / "all_virtual", progress=False, report=False, observers=(look_at_monitor,))
    return data, result, seen, tmp


def test_pilot_runs_in_real_time_with_every_fronius_over_sunspec(all_virtual):
    data, result, seen, _ = all_virtual
    assert result.status == "complete", result.error
    assert result.steps == 30
    t = result.timing
    # warm-up: at least the first wall-clock second, 4 cycles of 0.3 s
    assert t["steps"] == 30 and t["warmup_steps"] == 4 and sum(t["histogram"]["counts"]) == 26
    assert t["write_roundtrip"]["n"] >= 5 * 30 and t["read_roundtrip"]["n"] == 5 * 30
    run_dir = result.run_dir
    bench = json.loads((run_dir / "bench.json").read_text())
    fronius = [d["id"] for d in data["devices"] if d["family"] == "fronius"]
    for dev in fronius:
        info = bench["devices"][dev]
        assert info["kind"] == "hosted" and "revert_s=120" in info["driver_address"]
        assert info["identity"]["manufacturer"] == "Fronius"
        io = pq.read_table(run_dir / "device_io" / f"{dev}.parquet").to_pylist()
        reads = {r["t_s"] for r in io if r["op"] == "read" and r["status"] == "ok"}
        assert reads == set(range(0, 1800, 60))
        assert next(r["source"] for r in io if r["op"] == "write") == "arm"
        assert [r for r in io if r["op"] == "write"][-1]["source"] == "end"  # left safe at the end
    assert bench["end_safe"] == dict.fromkeys(fronius, "ok")
    timing = pq.read_table(run_dir / "timing.parquet")
    assert timing.num_rows == 30 and timing.column("t_s").to_pylist() == list(range(0, 1800, 60))
    run_json = json.loads((run_dir / "run.json").read_text())
    assert run_json["mode"] == "bench" and run_json["bench"]["lateness_ms"]["n"] == 26
    # the batteries really worked: the comparison below is not trivially equal
    assert flatten(result.kpis)["total.batt_discharge_kwh"] > 0.3
    # the live monitor saw measurements and setpoints that went through the (embedded) broker
    devices = {d["id"]: d for d in seen["devices"]}
    assert seen["broker_messages"] > 0 and seen["status"] == "running"
    for dev in fronius:
        assert devices[dev]["meas"]["p_w"] < 0 and 0 < devices[dev]["meas"]["soc"] < 1
        assert "batt_p_w" in devices[dev]["set"] and "site_load_w" in devices[dev]["signals"]
    assert "p_w" in devices["pv_4005492"]["meas"]  # sim:// devices are shown too
    # and what flows on the scenario's own brokers (its telemetry on the Data Broker, an embedded MQTT broker)
    assert any(m["role"] == "data" and m["values"] for m in seen["traffic"]), seen["traffic"][:3]


def test_one_real_device_gives_the_same_kpis(all_virtual, tmp_path):
    data, virtual, _, _ = all_virtual
    config = next(d for d in data["devices"] if d["id"] == REAL)["config"]
    with serve_fronius(config, tmp_path, device_id=REAL, pv_w_per_kwp=0.0, site_load_w=0.0,
                       follow_clock=True) as served:
        hybrid = pilot_data(duration=DURATION, bench={**BENCH, "device_clocks": {REAL: served.clock_address}})
        next(d for d in hybrid["devices"] if d["id"] == REAL)["address"] = served.address
        result = run_bench(load(write_scenario(hybrid, tmp_path / "hybrid.yaml")), tmp_path / "hybrid",
                           progress=False, report=False)
    assert result.status == "complete", result.error
    check = next(c for c in result.checks if c.device == REAL)
    assert check.reachable and check.armed and check.identity["manufacturer"] == "Fronius"
    bench = json.loads((result.run_dir / "bench.json").read_text())
    assert bench["devices"][REAL]["kind"] == "real"
    # the served device kept the bench's time: told the end of every step, and it answered each time
    clock = [r for r in pq.read_table(result.run_dir / "device_io" / f"{REAL}.parquet").to_pylist() if r["op"] == "clock"]
    assert [(r["t_s"], r["value"], r["status"]) for r in clock] == [(t, t + 60.0, "ok") for t in range(0, 1800, 60)]
    assert assert_kpis_match_within_quantisation(virtual.kpis, result.kpis) > 100
    # the real device's measured power went into the power flow every step
    devices = pq.read_table(result.run_dir / "timeseries" / "devices.parquet")
    p_w = devices.column(f"{REAL}.p_w").to_pylist()
    assert len(p_w) == 30 and all(x < 0 for x in p_w[1:])


def test_offline_run_replays_the_recorded_device(all_virtual, tmp_path):
    _data, virtual, _, _ = all_virtual
    cmp_log = tmp_path / "comparison.jsonl"
    offline = pilot_data(duration=DURATION, fronius_address="sim://")
    next(d for d in offline["devices"] if d["id"] == REAL)["address"] = \
        f"replay://localhost{virtual.run_dir}/{REAL}?log={cmp_log}"
    result = run_offline(load(write_scenario(offline, tmp_path / "replay.yaml")), tmp_path / "replay",
                         progress=False, report=False)
    assert result.status == "complete", result.error
    recorded = pq.read_table(virtual.run_dir / "timeseries" / "devices.parquet")
    replayed = pq.read_table(tmp_path / "replay" / "timeseries" / "devices.parquet")
    for attr in ("p_w", "batt_p_w", "soc"):
        assert replayed.column(f"{REAL}.{attr}").to_pylist() == recorded.column(f"{REAL}.{attr}").to_pylist()
    lines = [json.loads(x) for x in cmp_log.read_text().splitlines()]
    assert len(lines) == 30 and all(line["match"] for line in lines), [x for x in lines if not x["match"]]
