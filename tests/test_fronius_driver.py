"""The SunSpec driver: directory scan, read plan, sign conventions, write/read-back, errors, back-off, and
sim:// versus sunspec+tcp:// (and fronius+http://) through the device host."""

import asyncio
import math

import pytest

from devices import registry
from devices.base import Address, DeviceUnavailable, ProtocolError, Setpoint, SetpointRejected
from devices.fronius.driver import ModelEntry, SunSpecDriver, measurement_values, plan_reads, scan_directory
from devices.fronius.modbus_client import ModbusException
from devices.fronius.sunspec_map import BASE_ADDRESS, decode_model
from devices.fronius.virtual import FroniusSunSpecDevice
from devices.simulator import DeviceSim

FAM = registry.family("fronius")
BATT = {"capacity_wh": 10_000, "p_charge_max_w": 4000, "p_discharge_max_w": 4000, "soc_init": 0.5,
        "eta_charge": 0.96, "eta_discharge": 0.96, "soc_min": 0.05, "soc_max": 0.95}
CONFIG = {"pv_kwp": 6, "ac_max_w": 6000, "eta_inverter": 0.97, "battery": BATT}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def fake_space(regs: dict[int, int]):
    async def read(addr: int, count: int) -> list[int]:
        if any(a not in regs for a in range(addr, addr + count)):
            raise ModbusException(3, 0x02)
        return [regs[a] for a in range(addr, addr + count)]
    return read


def layout(base: int, models: list[tuple[int, int]], end_len: bool = True) -> dict[int, int]:
    regs = {base: 0x5375, base + 1: 0x6E53}
    addr = base + 2
    for mid, length in models:
        regs[addr], regs[addr + 1] = mid, length
        for k in range(length):
            regs[addr + 2 + k] = 0
        addr += 2 + length
    regs[addr] = 0xFFFF
    if end_len:
        regs[addr + 1] = 0
    return regs


def test_scan_walks_any_model_order_and_base():
    models = [(1, 66), (64110, 10), (103, 50), (124, 24), (160, 48)]
    found = run(scan_directory(fake_space(layout(40000, models))))
    assert [(m.id, m.length) for m in found] == models and found[0].address == 40002
    found = run(scan_directory(fake_space(layout(0, models, end_len=False))))  # base 0, map ends at the ID
    assert [m.id for m in found] == [1, 64110, 103, 124, 160] and found[0].address == 2
    with pytest.raises(ProtocolError, match="SunS"):
        run(scan_directory(fake_space({40000: 1, 40001: 2})))


def test_scan_is_bounded_without_an_end_marker():
    regs = layout(40000, [(1, 66)])
    regs.update({a: 7 if (a - 40070) % 2 == 0 else 0 for a in range(40070, 40400)})  # endless zero-length models
    with pytest.raises(ProtocolError, match="more than"):
        run(scan_directory(fake_space(regs)))


def test_read_plan_merges_neighbours_within_125_registers():
    entries = [ModelEntry(103, 40070, 50), ModelEntry(160, 40182, 88), ModelEntry(124, 40272, 24)]
    assert plan_reads(entries) == [(40070, 52), (40182, 116)]
    assert plan_reads([ModelEntry(124, 99, 24), ModelEntry(103, 0, 50)]) == [(0, 125)]  # gap read along
    assert plan_reads([ModelEntry(124, 100, 24), ModelEntry(103, 0, 50)]) == [(0, 52), (100, 26)]
    with pytest.raises(ProtocolError):
        plan_reads([ModelEntry(999, 0, 200)])


def models_from_device(dev: FroniusSunSpecDevice):
    regs = dev.image
    cut = lambda mid, n: decode_model(regs[dev.map.addr[mid] - BASE_ADDRESS:][:n + 2], mid)  # noqa: E731
    return cut(103, 50), cut(160, 88), cut(124, 24), cut(120, 26)


@pytest.mark.parametrize("pv, load, setpoint", [(0.0, 0.0, 2500.0), (800.0, 300.0, None), (0.0, 2000.0, None),
                                                 (900.0, 0.0, -3000.0)])
def test_sunspec_signs_become_ours(pv, load, setpoint):
    """Charging from the grid: SunSpec W < 0 and StCha > 0 -> p_w > 0 and batt_p_w > 0; exporting PV the
    other way round."""
    dev = FroniusSunSpecDevice(FAM, FAM.parse_config(CONFIG), device_id="signs")
    if setpoint is not None:
        dev.fbank.setpoints["batt_p_w"][:] = setpoint
    run(dev.advance(0, 60, {"pv_w_per_kwp": pv, "site_load_w": load}))
    inv, mppt, storage, plate = models_from_device(dev)
    got = measurement_values(inv, mppt, storage, plate)
    want = {k: float(v[0]) for k, v in dev.fbank.measure().items()}
    assert math.copysign(1, inv.value("W")) == -math.copysign(1, want["p_w"]) or want["p_w"] == 0
    for key in ("p_w", "batt_p_w", "pv_p_w"):
        assert got[key] == pytest.approx(want[key], abs=1.5), key
    assert got["soc"] == pytest.approx(want["soc"], abs=1e-4)
    assert got["e_wh"] == pytest.approx(want["e_wh"], abs=1)


async def _device_and_driver(config=CONFIG, query="", timeout_s=1.0):
    dev = FroniusSunSpecDevice(FAM, FAM.parse_config(config), device_id="drv")
    await dev.start()
    drv = SunSpecDriver(Address.parse(dev.address + query), FAM.capabilities(FAM.parse_config(config)),
                        timeout_s=timeout_s)
    await drv.connect()
    return dev, drv


def test_write_maps_onto_model_124_and_reads_back():
    async def body():
        dev, drv = await _device_and_driver()
        try:
            await drv.write(Setpoint({"batt_p_w": -1500.0}))
            assert dev.fbank.stor_ctl_mod[0] == 3
            assert dev.fbank.in_w_rte_pct[0] == pytest.approx(-37.5) and dev.fbank.out_w_rte_pct[0] == 37.5
            await dev.advance(0, 60, {"pv_w_per_kwp": 0.0, "site_load_w": 0.0})
            m = await drv.read()
            assert m["batt_p_w"] == pytest.approx(-1500, abs=1) and m["p_w"] == pytest.approx(-1500, abs=1)
            ident = await drv.identity()
            assert ident["manufacturer"] == "Fronius" and ident["models"] == [1, 103, 120, 121, 122, 123, 160, 124, 126, 132]
            with pytest.raises(SetpointRejected):  # outside capabilities: nothing reaches the wire
                await drv.write(Setpoint({"batt_p_w": 4001.0}))
            assert dev.fbank.in_w_rte_pct[0] == pytest.approx(-37.5)
        finally:
            await drv.close()
            await dev.stop()
    run(body())


def test_device_refusal_is_setpoint_rejected_and_a_wrong_read_back_a_protocol_error():
    async def body():
        dev, drv = await _device_and_driver()
        try:
            original = dev.fbank.set_storage_control

            def refuse(*_, **__):
                raise ValueError("not now")
            dev.fbank.set_storage_control = refuse
            with pytest.raises(SetpointRejected, match="ILLEGAL_DATA_VALUE"):
                await drv.write(Setpoint({"batt_p_w": 1000.0}))

            def without_rates(i, t, **fields):  # acknowledges the rates but keeps the old ones
                original(i, t, **{k: v for k, v in fields.items() if not k.endswith("rte_pct")})
            dev.fbank.set_storage_control = without_rates
            with pytest.raises(ProtocolError, match="read-back"):
                await drv.write(Setpoint({"batt_p_w": 1000.0}))
            dev.fbank.set_storage_control = lambda *_, **__: None  # echoes what it did not store
            with pytest.raises(ProtocolError, match=r"echo|read-back"):
                await drv.write(Setpoint({"batt_p_w": 1000.0}))
        finally:
            await drv.close()
            await dev.stop()
    run(body())


def test_revert_timer_from_the_address_returns_the_device_to_self_consumption():
    async def body():
        dev, drv = await _device_and_driver(query="?revert_s=120")
        try:
            await drv.write(Setpoint({"batt_p_w": 2000.0}))
            assert dev.fbank.rvrt_s[0] == 120
            env = {"pv_w_per_kwp": 0.0, "site_load_w": 0.0}
            for t in (0, 60):
                await dev.advance(t, 60, env)
                assert (await drv.read())["batt_p_w"] == pytest.approx(2000, abs=1)
            await dev.advance(120, 60, env)
            assert (await drv.read())["batt_p_w"] == pytest.approx(0, abs=1)
            assert dev.fbank.stor_ctl_mod[0] == 0
        finally:
            await drv.close()
            await dev.stop()
    run(body())


def test_reconnect_backs_off_instead_of_busy_looping():
    async def body():
        dev, drv = await _device_and_driver(timeout_s=0.5)
        try:
            await dev.stop()
            dials = drv.dials
            for _ in range(200):
                with pytest.raises(DeviceUnavailable):
                    await drv.read()
            assert drv.dials - dials <= 1  # 200 calls within the first back-off: at most one dial
            await asyncio.sleep(0.3)  # the first back-off (0.2 s) is over
            with pytest.raises(DeviceUnavailable):
                await drv.read()  # due again: one more dial, refused
            assert drv.dials - dials <= 2 and drv.backoff.delay_s > 0.2
        finally:
            await drv.close()
            await dev.stop()
    run(body())


def test_not_connected_and_closed_drivers_raise_device_unavailable():
    async def body():
        dev = FroniusSunSpecDevice(FAM, FAM.parse_config({}), device_id="x")
        await dev.start()
        drv = SunSpecDriver(Address.parse(dev.address), FAM.capabilities(FAM.parse_config({})))
        try:
            with pytest.raises(DeviceUnavailable, match="not connected"):
                await drv.read()
            await drv.connect()
            await drv.read()
            await drv.close()
            with pytest.raises(DeviceUnavailable, match="not connected"):
                await drv.read()
        finally:
            await drv.close()
            await dev.stop()
    run(body())


def test_an_absent_unit_behind_a_gateway_is_device_unavailable():
    async def body():
        dev = FroniusSunSpecDevice(FAM, FAM.parse_config({}), device_id="x")
        await dev.start()
        drv = SunSpecDriver(Address.parse(dev.address.rsplit("/", 1)[0] + "/7"), FAM.capabilities(FAM.parse_config({})))
        try:
            with pytest.raises(DeviceUnavailable, match="GATEWAY"):  # unit 7 does not exist behind this address
                await drv.connect()
        finally:
            await drv.close()
            await dev.stop()
        with pytest.raises(ValueError):
            SunSpecDriver(Address.parse("sunspec+tcp://host/x"), FAM.capabilities(FAM.parse_config({})))
    run(body())


def _step(sim: DeviceSim, t: int, inputs: dict) -> dict:
    sim.step(t, inputs, t + 60)
    attrs = list(FAM.measurements) + ["available", "rejected"]
    return sim.get_data(dict.fromkeys(sim.devices, attrs))


def test_sim_and_sunspec_and_solar_api_agree_through_the_device_host():
    sim = DeviceSim()
    sim.init("Devices", step_size=60)
    # "auto" is a sim:// twin that gets no setpoints: the read-only Solar API device refuses them and stays
    # in self-consumption, so that is what it must agree with.
    for eid, address in (("sim", "sim://"), ("wire", "sunspec+tcp://"), ("http", "fronius+http://"),
                         ("auto", "sim://")):
        sim.create(1, "fronius", address=address, config=CONFIG, device_id=eid, timeout_s=10.0)  # a busy CI box
    sim.setup_done()
    try:
        profile = [(0.0, 500.0, None), (300.0, 400.0, None), (800.0, 200.0, 1500.0), (800.0, 200.0, None),
                   (100.0, 1500.0, -2500.0), (0.0, 800.0, 0.0), (0.0, 800.0, 3000.0)]
        for k, (pv, load, sp) in enumerate(profile):
            inputs = {}
            for eid in ("sim", "wire", "http", "auto"):
                inputs[eid] = {"pv_w_per_kwp": {"P.pv": pv}, "site_load_w": {"P.load": load}}
                if sp is not None and eid != "auto":
                    inputs[eid]["batt_p_w"] = {"C.ctl": sp}
            data = _step(sim, 60 * k, inputs)
            ref, wire, http, auto = data["sim"], data["wire"], data["http"], data["auto"]
            assert wire["available"] and http["available"]
            for key in ("p_w", "pv_p_w", "batt_p_w"):  # W_SF = 0 and DCW_SF = 0: +-0.5 W each
                assert wire[key] == pytest.approx(ref[key], abs=1.5), (k, key)
                assert http[key] == pytest.approx(auto[key], abs=0.01), (k, key)
            assert wire["soc"] == pytest.approx(ref["soc"], abs=5e-5) and http["soc"] == pytest.approx(auto["soc"], abs=1e-5)
            assert http["e_wh"] == pytest.approx(auto["e_wh"], abs=1) and http["v_v"] == auto["v_v"]
            assert wire["e_wh"] == pytest.approx(ref["e_wh"], abs=0.5)
            assert wire["q_var"] == ref["q_var"] == 0
            assert wire["v_v"] == ref["v_v"] and wire["f_hz"] == ref["f_hz"]
            for key in ("p_charge_avail_w", "p_discharge_avail_w"):  # mid-SoC: the ratings on both paths
                assert wire[key] == pytest.approx(ref[key]), (k, key)
            assert wire["pv_curtail_w"] == pytest.approx(ref["pv_curtail_w"], abs=1.0)  # 0: St is not THROTTLED
        assert data["http"]["rejected"] == 4 and data["wire"]["rejected"] == 0  # the Solar API is read-only
        assert [e["kind"] for e in sim.events()].count("SetpointRejected") == 4
    finally:
        sim.finalize()


def test_curtailment_is_only_known_to_happen_over_sunspec():
    dev = FroniusSunSpecDevice(FAM, FAM.parse_config({**CONFIG, "pv_kwp": 12}), device_id="curtail")
    dev.fbank.setpoints["batt_p_w"][:] = -1000.0  # discharging into a full AC output: PV gives way
    run(dev.advance(0, 60, {"pv_w_per_kwp": 800.0, "site_load_w": 0.0}))
    assert dev.fbank.pv_curtail_w[0] > 1000
    values = measurement_values(*models_from_device(dev))
    assert math.isnan(values["pv_curtail_w"]) and values["p_w"] == pytest.approx(-6000, abs=1)
