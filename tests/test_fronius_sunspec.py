"""The virtual Fronius's SunSpec map: official model definitions, an independent reader, wire errors."""

import asyncio
import json
import os

import pytest

from devices import registry
from devices.fronius.modbus_client import ModbusException, ModbusTcpClient
from devices.fronius.sunspec_map import (
    BASE_ADDRESS,
    MODELS,
    MPPT,
    SERVED_MODELS,
    STORAGE,
    FroniusRegisterMap,
    decode_model,
    decode_point,
    encode_point,
    _p,
)
from devices.fronius.virtual import FroniusSunSpecDevice

FAM = registry.family("fronius")
OFFICIAL_LENGTHS = {1: 66, 101: 50, 102: 50, 103: 50, 120: 26, 121: 30, 124: 24}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_model_lengths_are_the_official_ones():
    for mid, length in OFFICIAL_LENGTHS.items():
        assert MODELS[mid].length() == length
    assert MPPT.fixed_length == 8 and MPPT.repeat_length == 20 and MPPT.length(4) == 88


def test_point_order_types_and_scale_factors_follow_the_sunspec_json():
    sunspec2 = pytest.importorskip("sunspec2")
    folder = os.path.join(os.path.dirname(sunspec2.__file__), "models", "json")

    def points(raw):
        return [(p["name"], "uint16" if p["type"] == "count" else p["type"], p["size"], p.get("sf")) for p in raw]

    for mid, mdef in MODELS.items():
        with open(os.path.join(folder, f"model_{mid}.json"), encoding="utf-8") as f:
            group = json.load(f)["group"]
        assert points(group["points"])[2:] == [(p.name, p.type, p.size, p.sf) for p in mdef.points], mid
        repeating = group.get("groups", [])
        expected = points(repeating[0]["points"]) if repeating else []
        assert expected == [(p.name, p.type, p.size, p.sf) for p in mdef.repeating], mid
        official_rw = {p["name"] for p in group["points"] if p.get("access") == "RW"}
        assert {p.name for p in mdef.points if p.access == "RW"} <= official_rw  # we never widen write access


def test_unimplemented_values_and_signed_encoding():
    assert encode_point(_p("x", "int16"), None) == [0x8000]
    assert encode_point(_p("x", "uint16"), None) == [0xFFFF]
    assert encode_point(_p("x", "sunssf"), None) == [0x8000]
    assert encode_point(_p("x", "acc32"), None) == [0, 0]
    assert encode_point(_p("x", "uint32"), None) == [0xFFFF, 0xFFFF]
    assert encode_point(_p("x", "int16"), -2) == [0xFFFE]
    assert decode_point(_p("x", "int16"), [0xFFFE]) == -2
    assert decode_point(_p("x", "int16"), [0x8000]) is None
    assert decode_point(_p("x", "acc32"), [0, 0]) == 0  # "not accumulated" is still a value
    assert decode_point(_p("x", "int32"), [0xFFFF, 0xFFFE]) == -2
    s = _p("s", "string", size=4)
    assert decode_point(s, encode_point(s, "Fronius")) == "Fronius"
    assert encode_point(s, None) == [0, 0, 0, 0] and decode_point(s, [0, 0, 0, 0]) is None


def test_served_image_starts_with_suns_and_walks_to_the_end_marker():
    cfg = FAM.parse_config({})
    rmap = FroniusRegisterMap(cfg, "x")
    dev = FroniusSunSpecDevice(FAM, cfg, device_id="x")
    regs = dev.image
    assert regs[:2] == [0x5375, 0x6E53] and len(regs) == rmap.size
    addr, seen = 2, []
    while regs[addr] != 0xFFFF:
        seen.append(regs[addr])
        model = decode_model(regs[addr:addr + 2 + regs[addr + 1]])
        assert model.id == regs[addr]
        addr += 2 + regs[addr + 1]
    assert tuple(seen) == SERVED_MODELS and regs[addr:] == [0xFFFF, 0]
    storage = decode_model(regs[rmap.addr[124] - BASE_ADDRESS:][:26], 124)
    assert storage["VAChaMax"] is None and storage["VAChaMax_SF"] is None  # not implemented, as Fronius
    assert storage["InOutWRte_SF"] == -2 and storage["WChaMax"] == 4800
    mppt = decode_model(regs[rmap.addr[160] - BASE_ADDRESS:][:2 + 88], 160)
    assert [g["IDStr"] for g in mppt.repeats] == ["String 1", "String 2", "StCha 3", "StDisCha 4"]
    assert all(g["Tms"] is None for g in mppt.repeats)


def test_an_independent_sunspec_client_reads_and_controls_the_device():
    client_mod = pytest.importorskip("sunspec2.modbus.client")
    from devices.io_loop import IoLoop

    io = IoLoop()
    dev = FroniusSunSpecDevice(FAM, FAM.parse_config({"pv_kwp": 6}), device_id="indep")
    try:
        io.run(dev.start(), 10)
        io.run(dev.advance(0, 60, {"pv_w_per_kwp": 700.0, "site_load_w": 600.0}), 10)
        state = dev.fbank.state(0)
        c = client_mod.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=dev.port, timeout=5)
        try:
            c.scan()
            assert [k for k in c.models if isinstance(k, int)] == list(SERVED_MODELS)
            common = c.common[0]
            assert common.Mn.value == "Fronius" and common.SN.value == dev.map.serial
            inv = c.inverter_three_phase[0]
            assert inv.W.cvalue == pytest.approx(-state.p_w, abs=1)  # SunSpec W: + = output
            assert inv.Hz.cvalue == 50.0 and inv.PhVphA.cvalue == 230.0
            storage = c.storage_basic[0]
            assert storage.ChaState.cvalue == pytest.approx(state.soc * 100, abs=0.01)
            assert storage.ChaSt.value == 4  # CHARGING
            modules = {g.IDStr.value: g.DCW.cvalue for g in c.mppt[0].module}
            assert modules["StCha 3"] == pytest.approx(state.batt_p_w, abs=1) and modules["StDisCha 4"] == 0
            storage.OutWRte.cvalue = -20.0  # Fronius "charge from grid" at 20 % of WChaMax
            storage.StorCtl_Mod.value = 2
            storage.write()
            io.run(dev.advance(60, 60, {"pv_w_per_kwp": 0.0, "site_load_w": 0.0}), 10)
            c.mppt[0].read()
            modules = {g.IDStr.value: g.DCW.cvalue for g in c.mppt[0].module}
            assert modules["StCha 3"] == pytest.approx(960, abs=1)
        finally:
            c.close()
    finally:
        io.run(dev.stop(), 10)
        io.close()


async def _served(config=None):
    dev = FroniusSunSpecDevice(FAM, FAM.parse_config(config or {}), device_id="wire")
    await dev.start()
    client = ModbusTcpClient("127.0.0.1", dev.port, 1, 2.0)
    await client.open()
    return dev, client


def test_out_of_range_writes_are_illegal_data_value_and_change_nothing():
    async def body():
        dev, client = await _served()
        try:
            off = STORAGE.offsets()
            base = dev.map.addr[124]
            before = list(dev.image)
            for address, value in ((base + off["InWRte"], 10001), (base + off["OutWRte"], (-10001) & 0xFFFF),
                                   (base + off["StorCtl_Mod"], 4), (base + off["MinRsvPct"], 10001),
                                   (base + off["ChaGriSet"], 2), (base + off["InWRte"], 0x8000)):
                with pytest.raises(ModbusException) as info:
                    await client.write_register(address, value)
                assert info.value.code == 0x03 and info.value.name == "ILLEGAL_DATA_VALUE"
            with pytest.raises(ModbusException) as info:  # one bad value in a block: nothing of it applies
                await client.write_registers(base + off["OutWRte"], [1000, 20000])
            assert info.value.code == 0x03
            assert dev.image == before and dev.fbank.stor_ctl_mod[0] == 0
            await client.write_registers(base + off["OutWRte"], [1000, 2000])
            assert dev.fbank.out_w_rte_pct[0] == 10 and dev.fbank.in_w_rte_pct[0] == 20
            assert await client.read_holding(base + off["OutWRte"], 2) == [1000, 2000]
        finally:
            await client.close()
            await dev.stop()
    run(body())


def test_read_only_registers_and_unknown_units_and_addresses():
    async def body():
        dev, client = await _served()
        try:
            off = STORAGE.offsets()
            base = dev.map.addr[124]
            for address in (BASE_ADDRESS, dev.map.addr[103] + 14, base + off["WChaMax"], base + off["ChaState"]):
                with pytest.raises(ModbusException) as info:
                    await client.write_register(address, 1)
                assert info.value.code == 0x02
            with pytest.raises(ModbusException) as info:  # a block reaching into a read-only register
                await client.write_registers(base + off["StorCtl_Mod"], [1, 0])
            assert info.value.code == 0x02
            for address, count in ((BASE_ADDRESS - 1, 1), (dev.map.end_address + 1, 2)):
                with pytest.raises(ModbusException) as info:
                    await client.read_holding(address, count)
                assert info.value.code == 0x02
            other = ModbusTcpClient("127.0.0.1", dev.port, 200, 2.0)
            await other.open()
            try:
                with pytest.raises(ModbusException) as info:
                    await other.read_holding(BASE_ADDRESS, 2)
                assert info.value.code == 0x0B
            finally:
                await other.close()
            assert await client.read_holding(BASE_ADDRESS, 2) == [0x5375, 0x6E53]  # still serving
        finally:
            await client.close()
            await dev.stop()
    run(body())


def test_register_values_follow_the_model_after_each_step():
    async def body():
        dev, client = await _served({"pv_kwp": 5})
        try:
            mppt_addr = dev.map.addr[160]
            await dev.advance(0, 60, {"pv_w_per_kwp": 0.0, "site_load_w": 1000.0})
            m = decode_model(await client.read_holding(mppt_addr, 90), 160)
            assert m.value("DCW", m.repeats[3]) == 1000 and m.value("DCW", m.repeats[2]) == 0  # discharging
            await dev.advance(60, 60, {"pv_w_per_kwp": 800.0, "site_load_w": 0.0})
            m = decode_model(await client.read_holding(mppt_addr, 90), 160)
            assert m.value("DCW", m.repeats[0]) == 2000 and m.value("DCW", m.repeats[2]) == pytest.approx(3880, abs=1)
            inv = decode_model(await client.read_holding(dev.map.addr[103], 52), 103)
            assert inv.value("W") == pytest.approx(0, abs=1) and inv["St"] == 4
        finally:
            await client.close()
            await dev.stop()
    run(body())
