"""The bench's parts on their own: config, limits, watchdog rules, pacing policy, boundary driver, replay, monitor."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import registry
from devices.base import Address, DeviceUnavailable, Driver, Measurement, Setpoint, SetpointRejected
from devices.io_loop import IoLoop
from hil_bench.boundary import Boundary, DevicePlan, device_kind, with_revert
from hil_bench.config import BenchSpec, DeviceLimits, parse_seconds
from hil_bench.control import find_running, read_ctl, write_ctl
from hil_bench.flow import records, token, unit_of
from hil_bench.realtime import Pacer, StepTiming, TimingLog
from hil_bench.records import EventSink, IoLog, read_io
from hil_bench.replay import ReplayDriver, parse_replay
from hil_bench.safety import ControllerWatch, DeviceHealth, check_limits

FRONIUS = registry.family("fronius")
CFG = FRONIUS.parse_config({})
CAPS = FRONIUS.capabilities(CFG)


# -- config --------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.floats(min_value=0, max_value=8e4, allow_nan=False), st.sampled_from(["ms", "s", "min", "h", ""]))  # <= 10 years
def test_parse_seconds_units(value, unit):
    scale = {"ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0, "": 1.0}[unit]
    text = f"{value:.6f}{unit}"
    assert parse_seconds(text) == pytest.approx(float(f"{value:.6f}") * scale)


@pytest.mark.parametrize("bad", ["-1s", "fast", True, None, "1 lightyear", float("inf")])
def test_parse_seconds_refuses(bad):
    with pytest.raises(ValueError):
        parse_seconds(bad)


def test_bench_section_errors_name_the_key(tmp_path):
    from cosim.scenario import ScenarioError, load
    from hil_bench.testing import pilot_data, write_scenario

    data = pilot_data(bench={"rt_factor": 0, "policy": "panic", "limits": {"x": {"p_min_w": 5, "p_max_w": 1}},
                             "colour": "red"})
    with pytest.raises(ScenarioError) as err:
        load(write_scenario(data, tmp_path / "bad.yaml"))
    text = str(err.value)
    for key in ("bench.rt_factor", "bench.policy", "bench.limits.x", "bench.colour"):
        assert key in text, text


def test_bench_section_device_references_are_checked(tmp_path):
    from cosim.scenario import ScenarioError, load
    from hil_bench.boundary import plan_devices
    from hil_bench.testing import pilot_data, write_scenario

    data = pilot_data(bench={"drills": [{"at": "5min", "device": "fronius_4006773", "fault": "device_silent"}]},
                      fronius_address="sunspec+tcp://127.0.0.1:1502/1")
    loaded = load(write_scenario(data, tmp_path / "s.yaml"))
    with pytest.raises(ScenarioError, match="device_silent needs a device the bench hosts"):
        plan_devices(loaded, loaded.scenario.bench)
    data["bench"] = {"limits": {"nobody": {"p_max_w": 1}}}
    with pytest.raises(ScenarioError, match=r"bench\.limits\.nobody"):  # found by validation, before any bench run
        load(write_scenario(data, tmp_path / "s.yaml"))
    # only a served device (an address with a host) can follow the bench's clock, and only with clock: steps
    data["bench"] = {"device_clocks": {"fronius_4006773": "tcp://127.0.0.1:9"}}
    with pytest.raises(ScenarioError, match="only with clock: steps"):
        load(write_scenario(data, tmp_path / "s.yaml"))
    hosted = pilot_data(bench={"clock": "steps", "device_clocks": {"fronius_4006773": "tcp://127.0.0.1:9"}})
    loaded = load(write_scenario(hosted, tmp_path / "s.yaml"))
    with pytest.raises(ScenarioError, match=r"bench\.device_clocks\.fronius_4006773"):
        plan_devices(loaded, loaded.scenario.bench)


def test_device_kinds_and_revert_timer():
    assert device_kind("sim://") == "sim"
    assert device_kind("sunspec+tcp://") == "hosted"
    assert device_kind("sunspec+tcp://10.0.0.7:502/1") == "real"
    assert device_kind("replay://runs/x/dev") == "replay"
    assert with_revert("sunspec+tcp://h:502/1", 120) == "sunspec+tcp://h:502/1?revert_s=120"
    assert with_revert("sunspec+tcp://h:502/1?revert_s=30", 120) == "sunspec+tcp://h:502/1?revert_s=30"
    assert with_revert("libal://h:5020/1?can=h:29536", 120) == "libal://h:5020/1?can=h:29536"


# -- limits and watchdog rules ----------------------------------------------------------------------------------
LIMITS = DeviceLimits(p_min_w=-1000, p_max_w=2000, soc_min=0.1, soc_max=0.9, ramp_w_per_s=10)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=-5000, max_value=5000, allow_nan=False), st.floats(min_value=0, max_value=1),
       st.floats(min_value=-5000, max_value=5000, allow_nan=False), st.integers(min_value=0, max_value=600))
def test_check_limits_refuses_exactly_what_breaks_a_limit(value, soc, last, dt):
    ok = (-1000 <= value <= 2000 and abs(value - last) <= 10 * max(dt, 1)
          and not (value > 0 and soc >= 0.9) and not (value < 0 and soc <= 0.1))
    call = lambda: check_limits(LIMITS, {"batt_p_w": value}, t_s=1000 + dt, soc=soc,  # noqa: E731
                                battery_setpoint="batt_p_w", last_written={"batt_p_w": (1000, last)})
    if ok:
        call()
    else:
        with pytest.raises(SetpointRejected):
            call()


def test_check_limits_messages():
    with pytest.raises(SetpointRejected, match="above the bench limit p_max_w=2000"):
        check_limits(LIMITS, {"batt_p_w": 2500}, t_s=0, soc=0.5, battery_setpoint="batt_p_w", last_written={})
    with pytest.raises(SetpointRejected, match="soc_max"):
        check_limits(LIMITS, {"batt_p_w": 5}, t_s=0, soc=0.95, battery_setpoint="batt_p_w", last_written={})
    with pytest.raises(SetpointRejected, match="NaN"):
        check_limits(LIMITS, {"batt_p_w": math.nan}, t_s=0, soc=0.5, battery_setpoint="batt_p_w", last_written={})


def test_controller_watch_trips_once_after_the_timeout_and_resets():
    w = ControllerWatch(step_s=60, timeout_cycles=2)
    assert not w.check(0)  # never commanded: no watch
    w.seen(0)
    assert not w.check(60)
    assert w.check(120) and not w.check(180)  # once
    assert w.seen(240)  # the controller is back
    assert not w.check(300) and w.check(360)


def test_device_health_estop_is_final():
    h = DeviceHealth()
    assert h.go("faulted", 60, "gone") and h.faults == 1 and not h.passes_controller
    assert h.go("armed", 120, "back") and h.passes_controller
    assert h.go("estop", 180, "stop") and not h.go("armed", 240, "back")
    assert [s for _, s, _ in h.history] == ["faulted", "armed", "estop"]


# -- pacing -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("policy,action", [("warn", "run"), ("skip", "skip"), ("stop", "stop")])
def test_pacer_policy_on_a_late_step(policy, action):
    timing = TimingLog(0.01)
    pacer = Pacer(0.001, 1, tolerance_s=0.01, policy=policy, read_at=0.5, timing=timing, stop=threading.Event())
    started = []
    pacer.on_start(started.append)
    row = pacer.begin(0)
    assert started == [pacer.t0] and row.action == "run"
    pacer.end(row)
    pacer.t0 -= 1.0  # as if the step before had taken a second: step 1 is ~1 s late
    row = pacer.begin(1)
    assert row.late_s > 0.9 and row.action == action
    pacer.end(row)
    s = timing.summary()
    assert s["steps"] == 2 and s["late_steps"] == 1 and sum(s["histogram"]["counts"]) == 2
    assert s["warmup_steps"] == 0
    assert s["skipped_steps"] == (1 if policy == "skip" else 0)


def test_pacer_warmup_steps_trigger_no_policy_and_stay_out_of_the_statistics():
    timing = TimingLog(0.01)
    pacer = Pacer(0.001, 1, tolerance_s=0.01, policy="stop", read_at=0.5, timing=timing, stop=threading.Event(),
                  warmup_steps=2)
    for t in range(3):
        pacer.t0 = (pacer.t0 or 0.0) - 1.0 if t else None  # steps 1 and 2 start ~1 s late
        row = pacer.begin(t)
        pacer.end(row)
        assert row.warmup == (t < 2) and row.action == ("stop" if t == 2 else "run")
    s = timing.summary()
    assert s["steps"] == 3 and s["warmup_steps"] == 2 and s["lateness"]["n"] == 1 and s["late_steps"] == 1


def test_pacer_wait_is_cut_short_by_an_emergency_stop():
    stop = threading.Event()
    pacer = Pacer(10.0, 60, tolerance_s=0.05, policy="warn", read_at=0.8, timing=TimingLog(0.05), stop=stop)
    pacer.begin(0)
    stop.set()
    row = pacer.begin(60)  # due in 600 s: returns at once
    assert row.late_s < 0 and row.action == "run"


def test_timing_parquet(tmp_path):
    import pyarrow.parquet as pq

    log = TimingLog(0.005)
    for t in range(5):
        log.add_step(StepTiming(t, float(t), 0.001 * t, "run", writes_done_s=0.01, read_late_s=0.002, end_s=0.5,
                                writes=1, reads=1))
    log.add_op("write", 0.003)
    log.write_parquet(tmp_path / "timing.parquet")
    table = pq.read_table(tmp_path / "timing.parquet")
    assert table.num_rows == 5 and table.column("late_s").to_pylist()[4] == pytest.approx(0.004)
    s = log.summary()
    assert s["late_steps"] == 0 and s["lateness"]["max_ms"] == pytest.approx(4.0)
    assert s["write_roundtrip"]["n"] == 1


# -- the boundary driver, against a fake device ---------------------------------------------------------------------
class FakeDriver(Driver):
    schemes = ("fake",)

    def __init__(self, address, capabilities, *, timeout_s=2.0):
        super().__init__(address, capabilities, timeout_s=timeout_s)
        self.written: list[dict] = []
        self.down = False
        self.soc = 0.5

    async def connect(self):
        pass

    async def read(self):
        if self.down:
            raise DeviceUnavailable("fake: no answer")
        return Measurement(0.0, {"p_w": 100.0, "soc": self.soc})

    async def _write(self, setpoint):
        if self.down:
            raise DeviceUnavailable("fake: no answer")
        self.written.append(dict(setpoint.values))

    async def close(self):
        pass


@pytest.fixture
def boundary(tmp_path):
    io = IoLoop("test-bench")
    caller = IoLoop("test-host")  # the device host calls the boundary from its own loop
    spec = BenchSpec(rt_factor=0.001, limits={"dev": DeviceLimits(p_min_w=-500, p_max_w=500)})
    timing = TimingLog(spec.tolerance)
    pacer = Pacer(spec.rt_factor, 60, tolerance_s=spec.tolerance, policy="warn", read_at=0.5, timing=timing,
                  stop=threading.Event())
    plan = DevicePlan("dev", FRONIUS, "real", "fake://x", "site", 0.1, spec.limits["dev"])
    iolog = IoLog(tmp_path)
    events = EventSink(tmp_path / "events.jsonl")
    b = Boundary(spec, 60, {"dev": plan}, io, pacer, timing, iolog, events)
    inner = FakeDriver(Address.parse("fake://x"), CAPS)
    wrapped = b.wrap("dev", inner)
    caller.run(wrapped.connect())
    pacer.begin(0)
    b.begin_step(pacer.current)
    yield b, wrapped, inner, caller, events, iolog
    caller.close()
    io.close()


def test_boundary_arms_the_safe_state_and_refuses_beyond_limits_before_the_wire(boundary):
    _b, wrapped, inner, caller, events, iolog = boundary
    assert inner.written == [{"batt_p_w": 0.0}]  # armed at connect
    caller.run(wrapped.write(Setpoint({"batt_p_w": 300.0})))
    with pytest.raises(SetpointRejected, match="p_max_w=500"):
        caller.run(wrapped.write(Setpoint({"batt_p_w": 900.0})))
    with pytest.raises(SetpointRejected, match="not accepted"):
        caller.run(wrapped.write(Setpoint({"q_var": 1.0})))
    assert inner.written == [{"batt_p_w": 0.0}, {"batt_p_w": 300.0}]  # the refused ones never reached the wire
    assert wrapped.rejected == 2 and any(e["kind"] == "setpoint_refused" for e in events.events)
    iolog.close()
    rows = read_io(iolog.dir.parent, "dev").to_pylist()
    assert [(r["source"], r["status"], r["value"]) for r in rows if r["op"] == "write"] == [
        ("arm", "ok", 0.0), ("controller", "ok", 300.0), ("controller", "rejected", 900.0),
        ("controller", "rejected", 1.0)]


def test_boundary_faults_a_silent_device_and_brings_it_back_safe(boundary):
    b, wrapped, inner, caller, events, _ = boundary
    assert caller.run(wrapped.read())["p_w"] == 100.0
    inner.down = True
    with pytest.raises(DeviceUnavailable):
        caller.run(wrapped.read())
    assert wrapped.health.state == "faulted"
    caller.run(wrapped.write(Setpoint({"batt_p_w": 200.0})))  # held, not sent
    assert inner.written == [{"batt_p_w": 0.0}]
    with pytest.raises(DeviceUnavailable, match="probing"):
        caller.run(wrapped.read())  # no wire while faulted
    back = threading.Event()
    original = b.events.emit

    def emit(*args, **kwargs):
        event = original(*args, **kwargs)
        if event["kind"] == "device_back":
            back.set()
        return event

    b.events.emit = emit
    inner.down = False
    assert back.wait(10)  # the probe, one cycle (60 ms here) later
    assert inner.written[-1] == {"batt_p_w": 0.0} and wrapped.health.state == "armed"
    kinds = [e["kind"] for e in events.events]
    assert kinds.index("device_unavailable") < kinds.index("safe_state") < kinds.index("device_back")


class HangingDriver(FakeDriver):
    """A device that, once ``hang`` is set, accepts writes and never answers them (until ``release``)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.hang = False
        self.on_wire = threading.Event()
        self.release: asyncio.Event | None = None

    async def _write(self, setpoint):
        if self.hang:
            self.release = self.release or asyncio.Event()
            self.on_wire.set()
            await self.release.wait()
            raise DeviceUnavailable("fake: no reply")
        await super()._write(setpoint)


def test_probing_a_faulted_device_does_not_hold_up_the_others(tmp_path):
    """io_concurrency 1: the watchdog's background probe of a device that does not answer waits out its timeout
    outside the I/O slot, so the healthy devices' exchange of the step goes on meanwhile."""
    io, caller = IoLoop("test-bench"), IoLoop("test-host")
    spec = BenchSpec(rt_factor=0.001)
    timing = TimingLog(spec.tolerance)
    pacer = Pacer(spec.rt_factor, 60, tolerance_s=spec.tolerance, policy="warn", read_at=0.5, timing=timing,
                  stop=threading.Event())
    plans = {dev: DevicePlan(dev, FRONIUS, "real", f"fake://{dev}", "site", 0.1) for dev in ("dead", "alive")}
    b = Boundary(spec, 60, plans, io, pacer, timing, IoLog(tmp_path), EventSink(None))
    dead_inner = HangingDriver(Address.parse("fake://dead"), CAPS)
    dead, alive = b.wrap("dead", dead_inner), b.wrap("alive", FakeDriver(Address.parse("fake://alive"), CAPS))
    try:
        caller.run(dead.connect())
        caller.run(alive.connect())
        b.begin_step(pacer.begin(0))
        dead_inner.down, dead_inner.hang = True, True
        with pytest.raises(DeviceUnavailable):
            caller.run(dead.read())  # faulted: the probe starts and its safe setpoint hangs on the wire
        assert dead_inner.on_wire.wait(10) and dead.health.state == "faulted"
        assert caller.run(alive.read(), timeout_s=10)["p_w"] == 100.0  # not queued behind the hanging probe
        caller.run(alive.write(Setpoint({"batt_p_w": 50.0})), timeout_s=10)
    finally:
        if dead_inner.release is not None:
            io.loop.call_soon_threadsafe(dead_inner.release.set)
        b.safe_all("end", timeout_s=10)
        caller.close()
        io.close()


def test_boundary_controller_watchdog_and_emergency_stop(boundary):
    b, wrapped, inner, caller, events, _ = boundary
    caller.run(wrapped.write(Setpoint({"batt_p_w": -200.0})))
    for t in (60, 120):  # no setpoint at 60 and 120: the second silent cycle trips the watchdog
        b.pacer.t0 -= 1.0
        b.begin_step(b.pacer.begin(t))
        caller.run(wrapped.read())
    assert inner.written[-1] == {"batt_p_w": 0.0}
    assert [e["t_s"] for e in events.events if e["kind"] == "controller_silent"] == [120]
    report = b.emergency_stop("test")
    assert report == {"dev": "ok"} and wrapped.health.state == "estop"
    caller.run(wrapped.write(Setpoint({"batt_p_w": 100.0})))  # dropped after the stop
    assert inner.written[-1] == {"batt_p_w": 0.0}


def test_boundary_skipped_step_holds_and_defers(boundary):
    b, wrapped, inner, caller, _, _ = boundary
    caller.run(wrapped.read())
    b.pacer.t0 -= 10.0
    row = b.pacer.begin(60)
    row.action = "skip"
    b.begin_step(row)
    caller.run(wrapped.write(Setpoint({"batt_p_w": 50.0})))
    assert caller.run(wrapped.read())["p_w"] == 100.0 and inner.written[-1] == {"batt_p_w": 0.0}
    row = b.pacer.begin(120)
    row.action = "run"
    b.begin_step(row)
    caller.run(wrapped.read())  # the deferred setpoint goes out first
    assert inner.written[-1] == {"batt_p_w": 50.0}


# -- replay -------------------------------------------------------------------------------------------------------
@settings(max_examples=50, deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,10}", fullmatch=True), min_size=1, max_size=4),
       st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_\-]{0,10}", fullmatch=True), st.booleans())
def test_parse_replay_keeps_the_path(parts, device, absolute):
    run_dir = "/".join(parts)
    raw = f"replay://localhost/{run_dir}/{device}" if absolute else f"replay://{run_dir}/{device}?tol=1"
    got_dir, got_dev = parse_replay(Address.parse(raw))
    assert got_dev == device
    assert got_dir == Path(("/" if absolute else "") + run_dir)


def test_replay_driver_plays_back_reads_and_compares_writes(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"step_s": 60}))
    log = IoLog(tmp_path)
    for k in (0, 1, 3):  # step 2 missing: the device did not answer then
        log.add("dev", 60 * k, 0.0, "read", "ok", "bench", {"p_w": 10.0 * k, "soc": 0.5})
        log.add("dev", 60 * k, 0.0, "write", "ok", "controller", {"batt_p_w": -100.0 * k})
    log.close()
    cmp_log = tmp_path / "cmp.jsonl"
    drv = ReplayDriver(Address.parse(f"replay://localhost{tmp_path}/dev?log={cmp_log}"), CAPS)

    async def play():
        await drv.connect()
        got = []
        for k in range(5):
            await drv.write(Setpoint({"batt_p_w": -100.0 * k if k != 1 else 7.0}))
            try:
                got.append((await drv.read())["p_w"])
            except DeviceUnavailable as exc:
                got.append(str(exc))
        await drv.close()
        return got

    got = asyncio.run(play())
    assert got[:2] == [0.0, 10.0] and "did not answer" in got[2] and got[3] == 30.0 and "end" in got[4]
    assert (drv.matched, drv.differed, drv.unrecorded) == (2, 1, 2)
    lines = [json.loads(x) for x in cmp_log.read_text().splitlines()]
    assert len(lines) == 5 and lines[1] == {"t_s": 60, "name": "batt_p_w", "recorded": -100.0, "replayed": 7.0,
                                            "match": False}


def test_replay_driver_without_recording_is_unavailable(tmp_path):
    drv = ReplayDriver(Address.parse(f"replay://localhost{tmp_path}/nobody"), CAPS)
    with pytest.raises(DeviceUnavailable, match="cannot open the recording"):
        asyncio.run(drv.connect())


# -- flow, control, monitor --------------------------------------------------------------------------------------
def test_flow_tokens_units_and_records():
    assert token("site 1/ä") == "site_1__" and token("_x") == "x_x"
    assert unit_of("p_w") == "W" and unit_of("e_wh") == "Wh" and unit_of("q_var") == "var"
    assert unit_of("soc") == "/" and unit_of("v_pu") == "pu" and unit_of("alarms") is None
    assert [r.name for r in records({"p_w": 1.0, "soc": math.nan, "x": None})] == ["p_w"]


def test_control_file(tmp_path):
    assert find_running(tmp_path) == [] and read_ctl(tmp_path) is None
    (tmp_path / "run").mkdir()
    write_ctl(tmp_path / "run", "http://127.0.0.1:1/")
    assert read_ctl(tmp_path / "run")["url"] == "http://127.0.0.1:1/"
    assert find_running(tmp_path) == [tmp_path / "run"]  # this very process is alive


def test_monitor_server_routes():
    from hil_bench.monitor import MonitorServer

    stops = []
    state = {"scenario": "s", "status": "running", "devices": [{"id": "d1", "value": math.nan}], "timing": {}}
    server = MonitorServer(lambda: json.loads(json.dumps(state)), lambda why: stops.append(why) or {"d1": "ok"},
                           port=0)
    url = server.start()
    try:
        page = urllib.request.urlopen(url, timeout=5).read().decode()
        assert "S4G bench monitor" in page and "/app.js" in page
        assert b"EventSource" in urllib.request.urlopen(url + "app.js", timeout=5).read()
        got = json.loads(urllib.request.urlopen(url + "api/state", timeout=5).read())
        assert got["devices"][0]["value"] is None and got["devices"][0]["meas"] == {}
        with pytest.raises(urllib.error.HTTPError, match="403"):  # no CSRF token: a foreign page cannot stop it
            urllib.request.urlopen(urllib.request.Request(url + "api/stop", data=b"", method="POST"), timeout=5)
        csrf = json.loads(urllib.request.urlopen(url + "auth/me", timeout=5).read())["csrf"]
        req = urllib.request.Request(url + "api/stop", data=b"", method="POST", headers={"X-CSRF-Token": csrf})
        assert json.loads(urllib.request.urlopen(req, timeout=5).read()) == {"ok": True, "safe": {"d1": "ok"}}
        assert stops == ["stop requested over HTTP"]
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as s:
            s.sendall(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b"event: state" not in data or not data.endswith(b"\n\n"):
                data += s.recv(65536)
        assert b"text/event-stream" in data and b'"scenario":"s"' in data
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(url + "nope", timeout=5)
    finally:
        server.close()


def test_hosted_wallbox_behind_the_boundary(tmp_path):
    """OCPP turns roles around (our CSMS, the charge point dials in): hosting and drivers share the bench loop."""
    from hil_bench.hosting import Hosting

    fam = registry.family("wallbox")
    cfg = fam.parse_config({"max_current_a": 16, "phases": 3})
    io, caller = IoLoop("test-bench"), IoLoop("test-host")
    hosting = Hosting(io, 0.01, 5)
    spec = BenchSpec(rt_factor=0.01)
    timing = TimingLog(spec.tolerance)
    pacer = Pacer(0.01, 60, tolerance_s=0.05, policy="warn", read_at=0.1, timing=timing, stop=threading.Event())
    try:
        address = hosting.start("wb1", fam, cfg, "ocpp16")
        plan = DevicePlan("wb1", fam, "hosted", "ocpp16://", "site", 5.0, driver_address=address)
        b = Boundary(spec, 60, {"wb1": plan}, io, pacer, timing, IoLog(tmp_path), EventSink(None))
        inner = registry.driver_class(address)(Address.parse(address), fam.capabilities(cfg), timeout_s=5.0)
        wrapped = b.wrap("wb1", inner)
        caller.run(wrapped.connect(), timeout_s=30)  # BootNotification, then armed: p_max_w = 0
        assert wrapped.identity_info["protocol"] == "OCPP 1.6" and wrapped.identity_info["cp_id"] == "wb1"
        pacer.begin(0)
        b.begin_step(pacer.current)
        caller.run(wrapped.write(Setpoint({"p_max_w": 7000.0})), timeout_s=30)
        assert "p_w" in caller.run(wrapped.read(), timeout_s=30).values
        assert b.emergency_stop("test") == {"wb1": "ok"}
        caller.run(wrapped.close(), timeout_s=30)
    finally:
        hosting.stop()
        caller.close()
        io.close()


PV_LIMITS = DeviceLimits(p_min_w=-3000, pf_min=0.9, allow_disconnect=False, curve_v_min_pu=1.0, curve_v_max_pu=1.12)


@pytest.mark.parametrize("values,refused", [
    ({"p_limit_w": 3000}, None), ({"p_limit_w": 3001}, "p_min_w"), ({"p_limit_w": 0}, None),
    ({"tan_phi": 0.48}, None), ({"tan_phi": -0.49}, "pf_min"), ({"conn": 1}, None), ({"conn": 0}, "disconnect"),
    ({"vw_v1_pu": 1.06, "vw_v2_pu": 1.1}, None), ({"vw_v1_pu": 0.99}, "curve_v_min_pu"),
    ({"vv_v4_pu": 1.13}, "curve_v_max_pu"), ({"vv_q1_pct": -44}, None),
])
def test_bench_limits_cover_the_inverter_functions(values, refused):
    """An output cap is checked against the most negative power allowed; the ramp limit is not applied to it."""
    call = lambda: check_limits(PV_LIMITS, values, t_s=0, soc=None, battery_setpoint=None,  # noqa: E731
                                last_written={"p_limit_w": (0.0, 0.0)})
    if refused is None:
        call()
    else:
        with pytest.raises(SetpointRejected, match=refused):
            call()
