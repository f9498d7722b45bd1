"""The libal driver end to end against the virtual rig: signs, BMS current limits, the CAN mode switch,
staleness, malformed frames, parity with sim:// in DeviceSim, and the stand-alone server."""

import asyncio
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import can
import pytest

from devices import registry
from devices.base import Address, DeviceUnavailable, ProtocolError, Setpoint, SetpointRejected
from devices.libal import can_codec, rtu
from devices.libal.driver import LibalAddress, LibalDriver, current_needed_a
from devices.libal.virtual import LibalVirtualDevice
from devices.simulator import DeviceSim
from tests.conformance.harness_libal import CONFIG

ROOT = Path(__file__).resolve().parents[1]
FAMILY = registry.family("libal")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=60))


def config(**battery):
    return FAMILY.parse_config({**CONFIG, "battery": {**CONFIG["battery"], **battery}})


class Rig:
    """A virtual rig and a connected driver, for one test."""

    def __init__(self, cfg=None, query: str = "", timeout_s: float = 1.0):
        self.cfg = cfg or config()
        self.device = LibalVirtualDevice(FAMILY, self.cfg, device_id="rig")
        self.query = query
        self.timeout_s = timeout_s
        self.t = 0

    async def __aenter__(self):
        address = await self.device.start()
        self.driver = LibalDriver(Address.parse(address + self.query), FAMILY.capabilities(self.cfg),
                                  timeout_s=self.timeout_s)
        await self.driver.connect()
        return self

    async def __aexit__(self, *exc):
        await self.driver.close()
        await self.device.stop()

    async def step(self, dt=60):
        await self.device.advance(self.t, dt, {})
        self.t += dt


def test_address_formats():
    tcp = LibalAddress.parse(Address.parse("libal://10.0.0.5:5020/3?can=10.0.0.6:29536&channel=can1"))
    assert (tcp.rtu_host, tcp.rtu_port, tcp.unit, tcp.can.host, tcp.can.port, tcp.can.channel) == \
        ("10.0.0.5", 5020, 3, "10.0.0.6", 29536, "can1")
    assert tcp.transport().description == "rtu-over-tcp 10.0.0.5:5020"
    ser = LibalAddress.parse(Address.parse("libal://serial/2?port=/dev/ttyUSB0&baud=9600&parity=E"
                                           "&can_interface=socketcan&channel=can0&bms_echo=0"))
    assert (ser.serial_port, ser.baud, ser.parity, ser.unit, ser.can.interface, ser.bms_echo) == \
        ("/dev/ttyUSB0", 9600, "E", 2, "socketcan", False)
    assert ser.transport().description == "rtu-serial /dev/ttyUSB0 9600 8E1"
    for bad in ("libal://h:1/1", "libal://h:1/0?can=h:2", "libal://serial/1?can=h:2", "libal://?can=h:2"):
        with pytest.raises(ValueError):
            LibalAddress.parse(Address.parse(bad))
    assert Address.parse("libal://").is_virtual_request
    assert registry.driver_class("libal://h:1/1?can=h:2") is LibalDriver


def test_current_needed_follows_p_equals_v_i_at_the_pcs_efficiency():
    assert current_needed_a(20_000, 500, 0.96, 0.96) == pytest.approx(38.4)
    assert current_needed_a(-20_000, 500, 0.96, 0.96) == pytest.approx(41.667, abs=1e-3)


def test_signs_are_converted_at_both_protocol_boundaries():
    async def body():
        async with Rig() as rig:
            await rig.driver.write(Setpoint({"p_w": 20_000, "q_var": 3_000}))
            assert rig.device.image.get("P_SET_W") == -20_000  # PCS register: + = discharge
            assert rig.device.image.get("Q_SET_VAR") == -3_000
            assert rig.device.model.setpoints["p_w"][0] == 20_000
            await rig.step()
            assert rig.device.image.get("P_MEAS_W") == -20_000
            m = await rig.driver.read()
            assert m["p_w"] == 20_000 and m["batt_p_w"] == 20_000 and m["q_var"] == 3_000
            assert m["i_a"] > 0  # CAN: + = charging, as the model
            assert m["i_a"] * m["v_v"] == pytest.approx(20_000 * 0.96, rel=2e-3)
            await rig.driver.write(Setpoint({"p_w": -15_000}))
            await rig.step()
            m = await rig.driver.read()
            assert m["p_w"] == -15_000 and m["i_a"] < 0 and m["q_var"] == 3_000  # Q kept from the last write
            assert rig.device.image.get("P_MEAS_W") == 15_000
    run(body())


def test_mode_switch_goes_to_the_bms_over_can_before_the_power_over_rtu():
    async def body():
        async with Rig() as rig:
            model = rig.device.model
            await rig.driver.write(Setpoint({"p_w": 10_000}))
            assert (model.charge_request[0], model.discharge_request[0]) == (True, False)
            assert rig.driver._view.frames[can_codec.REQUEST_FLAGS][1]["ChargeEnable"] == 1
            await rig.driver.write(Setpoint({"p_w": -10_000}))
            assert (model.charge_request[0], model.discharge_request[0]) == (False, True)
            await rig.driver.write(Setpoint({"p_w": 0}))
            assert (model.charge_request[0], model.discharge_request[0]) == (False, False)
            # a PCS setpoint written behind the BMS's back (raw RTU) does not move power: discharge is not enabled
            rig.device.rtu_server.slave.handle(rtu.write_multiple_pdu(2, rtu.REGS["P_SET_W"].encode(10_000)))
            await rig.step()
            assert model.battery.p_w[0] == 0
    run(body())


def test_bms_that_refuses_to_enable_gives_setpoint_rejected(monkeypatch):
    async def body():
        async with Rig(timeout_s=0.3) as rig:
            real = rig.device.bms_state

            def refusing():
                s = real()
                return can_codec.BmsState(**{**s.__dict__, "charge_enable": False})
            monkeypatch.setattr(rig.device, "bms_state", refusing)
            with pytest.raises(SetpointRejected, match="did not enable charging"):
                await rig.driver.write(Setpoint({"p_w": 5_000}))
            assert rig.device.image.get("MODE") == 0  # the PCS was not touched
    run(body())


def test_setpoints_beyond_the_bms_current_limit_are_rejected_before_the_wire():
    async def body():
        async with Rig(config(soc_init=0.94)) as rig:  # 1 % below soc_max: CCL derated to 20 A
            m = await rig.driver.read()
            assert m["i_charge_max_a"] == pytest.approx(20.0)
            assert m["p_charge_avail_w"] == pytest.approx(20 * m["v_v"] / 0.96, abs=1)
            with pytest.raises(SetpointRejected, match=r"BMS allows 20\.0 A charge"):
                await rig.driver.write(Setpoint({"p_w": 15_000}))
            assert rig.device.image.get("P_SET_W") == 0 and rig.device.model.charge_request[0]
            await rig.driver.write(Setpoint({"p_w": math.floor(m["p_charge_avail_w"])}))  # exactly what it offers
            assert rig.device.image.get("P_SET_W") == -math.floor(m["p_charge_avail_w"])
            await rig.driver.write(Setpoint({"p_w": -50_000}))  # discharge is not derated
            with pytest.raises(SetpointRejected):
                await rig.driver.write(Setpoint({"p_w": 60_000}))  # the PCS rating, from capabilities
    run(body())


def test_the_pcs_refusal_on_the_wire_is_a_setpoint_rejected():
    async def body():
        async with Rig() as rig:
            rig.device.image.set("P_CHARGE_RATED_W", 10_000)  # the device is stricter than the driver believes
            with pytest.raises(SetpointRejected, match="ILLEGAL_DATA_VALUE"):
                await rig.driver.write(Setpoint({"p_w": 20_000}))
    run(body())


def test_the_safe_setpoint_reaches_the_pcs_even_when_the_bms_link_is_down():
    async def body():
        async with Rig(timeout_s=0.5) as rig:
            await rig.driver.write(Setpoint({"p_w": 20_000}))
            await rig.device.can_server.stop()  # the CAN gateway dies, the PCS still answers
            with pytest.raises(DeviceUnavailable):
                await rig.driver.write(Setpoint({"p_w": 0.0}))  # the BMS standby request cannot go out...
            assert rig.device.image.get("P_SET_W") == 0  # ...but the power is stopped
            with pytest.raises(DeviceUnavailable):
                await rig.driver.write(Setpoint({"p_w": 5_000}))  # no BMS limits: no power
            assert rig.device.image.get("P_SET_W") == 0
    run(body())


def test_stale_bms_frames_give_device_unavailable_and_recover():
    async def body():
        async with Rig(query="&bms_stale_s=0.2", timeout_s=0.3) as rig:
            await rig.driver.read()
            rig.device.silent = True  # the BMS goes quiet, the PCS still answers
            with pytest.raises(DeviceUnavailable, match=r"older than 0\.2 s"):
                await rig.driver.read()
            with pytest.raises(DeviceUnavailable):
                await rig.driver.write(Setpoint({"p_w": 1_000}))  # no fresh BMS limits: no write
            rig.device.silent = False
            assert (await rig.driver.read())["soc"] == pytest.approx(0.5)
    run(body())


def test_malformed_bms_frame_gives_protocol_error(monkeypatch):
    async def body():
        async with Rig() as rig:
            real = can_codec.encode_bms_state

            def truncated(state):
                return [(fid, data[:2] if fid == can_codec.MEASUREMENTS else data) for fid, data in real(state)]
            monkeypatch.setattr("devices.libal.virtual.can_codec.encode_bms_state", truncated)
            with pytest.raises(ProtocolError, match="0x356"):
                await rig.driver.read()
            monkeypatch.setattr("devices.libal.virtual.can_codec.encode_bms_state", real)
            assert (await rig.driver.read())["v_v"] > 0
    run(body())


def test_reconnect_attempts_back_off_while_the_rig_is_down():
    async def body():
        async with Rig(timeout_s=0.5) as rig:
            await rig.driver.read()
            await rig.device.stop()
            with pytest.raises(DeviceUnavailable):
                await rig.driver.read()  # the link is gone
            with pytest.raises(DeviceUnavailable, match=r"cannot connect|greeting|refused"):
                await rig.driver.read()  # one reconnect attempt, refused
            with pytest.raises(DeviceUnavailable, match="next attempt in"):
                await rig.driver.read()  # inside the backoff window: no attempt at all
            backoff = rig.driver.backoff
            first = backoff.delay_s
            backoff.retry_at = 0.0  # skip the wait instead of sleeping through it
            with pytest.raises(DeviceUnavailable):
                await rig.driver.read()
            assert backoff.delay_s == 2 * first  # exponential
            await rig.device.start("127.0.0.1", rig.device.rtu_server.port, can_port=rig.device.can_server.port)
            backoff.retry_at = 0.0
            assert (await rig.driver.read())["soc"] == pytest.approx(0.5)
            assert backoff.delay_s == backoff.min_s and backoff.retry_at == 0.0
    run(body())


def test_other_nodes_on_the_bus_see_the_bms_and_the_driver():
    async def body():
        async with Rig() as rig:
            port = rig.device.can_server.port

            def sniff():
                bus = can.Bus(interface="socketcand", host="127.0.0.1", port=port, channel="can0")
                seen = set()
                try:
                    for _ in range(200):
                        msg = bus.recv(1.0)
                        if msg is None:
                            break
                        seen.add(msg.arbitration_id)
                        if {can_codec.EMS_REQUEST, can_codec.LIMITS, can_codec.MANUFACTURER} <= seen:
                            break
                finally:
                    bus.shutdown()
                return seen
            sniffer = asyncio.create_task(asyncio.to_thread(sniff))
            while rig.device.can_server.open_connections() < 2:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            while not sniffer.done():
                await rig.driver.read()
                await asyncio.sleep(0.02)
            assert {can_codec.EMS_REQUEST, can_codec.LIMITS, can_codec.MANUFACTURER} <= await sniffer
            ident = await rig.driver.identity()
            assert ident["manufacturer"] == "LIBAL" and ident["p_charge_rated_w"] == 50_000
    run(body())


TOLERANCE = {  # the protocol's quantisation: what a libal:// reading may differ from sim://
    "p_w": 0.5, "q_var": 0.5, "batt_p_w": 0.5, "p_charge_avail_w": 0.5, "p_discharge_avail_w": 0.5,  # 1 W registers
    "soc": 5e-5,  # 0x355 high-resolution SoC, 0.01 %
    "e_wh": 0.5,  # 0x3C0, 1 Wh
    "v_v": 0.005, "i_a": 0.05, "t_c": 0.05,  # 0x356: 0.01 V, 0.1 A, 0.1 degC
    "soh": 0.005,  # 0x355: 1 %
    "i_charge_max_a": 0.0, "i_discharge_max_a": 0.0, "alarms": 0.0,  # exact (the BMS rounds to 0.1 A itself)
}


def test_libal_device_in_devicesim_matches_sim_within_quantisation():
    cfg = {**CONFIG, "battery": {**CONFIG["battery"], "soc_init": 0.85}}
    sim = DeviceSim()
    sim.init("Devices", time_resolution=1.0, step_size=60)
    sim.create(1, "libal", address="sim://", config=cfg, device_id="ref")
    sim.create(1, "libal", address="libal://", config=cfg, device_id="wire")
    sim.setup_done()
    attrs = list(FAMILY.measurements) + ["available", "rejected"]
    targets = [50_000] * 12 + [-40_000, 0, 12_345, -777, 30_000] * 3 + [-50_000] * 10
    last = {"p_charge_avail_w": 50_000.0, "p_discharge_avail_w": 50_000.0}  # nameplate before the first step
    worst = dict.fromkeys(FAMILY.measurements, 0.0)
    lowest_ccl = math.inf
    try:
        for k, target in enumerate(targets):
            # a controller's setpoint: within what the battery offered at the last reading, whole watts
            p = float(math.floor(min(target, last["p_charge_avail_w"])) if target >= 0
                      else -math.floor(min(-target, last["p_discharge_avail_w"])))
            q = 2_000.0 * (k % 3 - 1)
            sim.step(k * 60, {eid: {"p_w": {"ctl": p}, "q_var": {"ctl": q}} for eid in ("ref", "wire")}, 10**9)
            data = sim.get_data({"ref": attrs, "wire": attrs})
            ref, wire = data["ref"], data["wire"]
            assert wire["available"] and wire["rejected"] == 0, sim.events()
            for name, tol in TOLERANCE.items():
                diff = abs(ref[name] - wire[name])
                worst[name] = max(worst[name], diff)
                assert diff <= tol + 1e-9, (k, name, ref[name], wire[name])
            last = ref
            lowest_ccl = min(lowest_ccl, ref["i_charge_max_a"])
        assert lowest_ccl < 50  # the run went deep into the derating band below soc_max
        assert sim.events() == []
    finally:
        sim.finalize()


def test_serve_command_prints_the_address_serves_and_stops_cleanly():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "s4g", "device", "serve", "libal", "--rtu-port", "0",
                             "--can-port", "0", "--soc-init", "0.6"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("driver address:"):
                break
        address = lines[-1].split(":", 1)[1].strip()
        assert address.startswith("libal://127.0.0.1:")

        async def use():
            cfg = config(soc_init=0.6)
            async with LibalDriver(Address.parse(address), FAMILY.capabilities(cfg)) as driver:
                m = await driver.read()
                await driver.write(Setpoint({"p_w": -5_000}))
                return m
        m = run(use())
        assert m["soc"] == pytest.approx(0.6, abs=1e-3) and m["e_wh"] == pytest.approx(60_000, abs=100)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "stopped" in out
