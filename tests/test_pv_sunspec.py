"""The grid-support functions on the wire: SunSpec 122/123/126/132 of the virtual inverters, an independent client
(pySunSpec2), the driver's writes and read-backs, refusals, and the same results over the wire as on sim://."""

import asyncio

import numpy as np
import pytest

from devices import registry
from devices.base import Address, Setpoint, SetpointRejected
from devices.fronius.modbus_client import ModbusException, ModbusTcpClient
from devices.fronius.sunspec_map import (
    CONTROLS,
    SERVED_MODELS_PV,
    VOLT_VAR,
    VOLT_WATT,
    FroniusRegisterMap,
    decode_model,
)
from devices.fronius.virtual import FroniusSunSpecDevice
from devices.fronius.driver import SunSpecDriver
from devices.pv.model import PvBank
from devices.pv.virtual import PvSunSpecDevice

PV = registry.family("pv")
FRONIUS = registry.family("fronius")
CFG = {"pv_kwp": 6, "ac_max_w": 6000}
VW = {"vw_v1_pu": 1.04, "vw_v2_pu": 1.08, "vw_p1_pct": 100.0, "vw_p2_pct": 10.0}
VV = {"vv_v1_pu": 0.92, "vv_v2_pu": 0.98, "vv_v3_pu": 1.02, "vv_v4_pu": 1.08, "vv_q1_pct": -44.0, "vv_q2_pct": 0.0,
      "vv_q3_pct": 0.0, "vv_q4_pct": 44.0}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_an_independent_client_reads_the_curves_and_sets_a_limit():
    client_mod = pytest.importorskip("sunspec2.modbus.client")
    from devices.io_loop import IoLoop

    io = IoLoop()
    cfg = PV.parse_config(CFG | {"controls": {"volt_var": {"enabled": True}}})
    dev = PvSunSpecDevice(PV, cfg, device_id="indep")
    try:
        io.run(dev.start(), 10)
        io.run(dev.advance(0, 60, {"pv_w_per_kwp": 800.0, "v_pu": 1.0}), 10)
        c = client_mod.SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=dev.port, timeout=5)
        try:
            c.scan()
            assert [k for k in c.models if isinstance(k, int)] == list(SERVED_MODELS_PV)
            assert c.nameplate[0].DERTyp.value == 4  # PV
            vv = c.volt_var[0]
            assert vv.ModEna.value == 1 and vv.NCrv.value == 1 and len(vv.curve) == 1
            crv = vv.curve[0]
            assert [crv.V1.cvalue, crv.V2.cvalue, crv.V3.cvalue, crv.V4.cvalue] == [92.0, 98.0, 102.0, 108.0]
            assert [crv.VAr1.cvalue, crv.VAr4.cvalue] == [44.0, -44.0]  # SunSpec: + = injecting
            status = c.status[0]
            assert status.WAval.cvalue == pytest.approx(800 * 6 * 0.97, abs=1)
            ctl = c.controls[0]
            ctl.WMaxLimPct.cvalue = 40.0
            ctl.WMaxLim_Ena.value = 1
            ctl.write()
            io.run(dev.advance(60, 60, {"pv_w_per_kwp": 800.0, "v_pu": 1.0}), 10)
            c.inverter_three_phase[0].read()
            assert c.inverter_three_phase[0].W.cvalue == pytest.approx(2400, abs=1)
            c.status[0].read()
            assert c.status[0].StActCtl.value & 1  # FixedW active
        finally:
            c.close()
    finally:
        io.run(dev.stop(), 10)
        io.close()


async def _served(cfg=None, fronius=False):
    fam = FRONIUS if fronius else PV
    cls = FroniusSunSpecDevice if fronius else PvSunSpecDevice
    config = fam.parse_config(cfg or ({} if fronius else CFG))
    dev = cls(fam, config, device_id="wire")
    await dev.start()
    client = ModbusTcpClient("127.0.0.1", dev.port, 1, 2.0)
    await client.open()
    return dev, client


@pytest.mark.parametrize("fronius", [False, True])
def test_values_the_device_refuses_are_illegal_data_value_and_change_nothing(fronius):
    async def body():
        dev, client = await _served(fronius=fronius)
        try:
            ctl, vv, vw = dev.map.addr[123], dev.map.addr[126], dev.map.addr[132]
            c, g = CONTROLS.offsets(), VOLT_VAR.group_offsets(0)
            before = list(dev.image)
            for address, value in ((ctl + c["WMaxLimPct"], 10001), (ctl + c["Conn"], 2),
                                   (ctl + c["OutPFSet"], 500), (ctl + c["OutPFSet"], (-700) & 0xFFFF),
                                   (ctl + c["WMaxLim_Ena"], 0xFFFF), (vv + g["ActPt"], 5), (vv + g["DeptRef"], 1),
                                   (vv + g["V2"], 9000), (vw + VOLT_WATT.group_offsets(0)["W2"], 10001)):
                with pytest.raises(ModbusException) as info:
                    await client.write_register(address, value)
                assert info.value.code == 0x03, (address, value)
            # one bad value in a block that touches two functions of 123: nothing of it applies
            with pytest.raises(ModbusException) as info:
                await client.write_registers(ctl + c["WMaxLimPct_RmpTms"], [10, 1, 600])
            assert info.value.code == 0x03
            for address in (ctl + c["Conn_WinTms"], ctl + c["VArPct_Ena"], vv + VOLT_VAR.offsets()["NPt"],
                            vv + g["V5"], vv + g["ReadOnly"]):
                with pytest.raises(ModbusException) as info:
                    await client.write_register(address, 1)
                assert info.value.code == 0x02, address
            assert dev.image == before
        finally:
            await client.close()
            await dev.stop()
    run(body())


def test_driver_writes_every_function_and_reads_it_back():
    async def body():
        dev = PvSunSpecDevice(PV, PV.parse_config(CFG), device_id="drv")
        addr = await dev.start()
        drv = SunSpecDriver(Address.parse(addr + "?revert_s=900"), PV.capabilities(PV.parse_config(CFG)))
        try:
            await drv.connect()
            await drv.write(Setpoint({**VW, **VV, "vw_ena": 1, "vv_ena": 1, "p_limit_w": 4500.0}))
            fn = dev.pbank.functions
            assert fn.vw_ena[0] == 1 and fn.vv_ena[0] == 1 and fn.lim_pct[0] == 75.0
            assert list(fn.vw_v[0][:2]) == [1.04, 1.08] and list(fn.vw_p[0][:2]) == [100.0, 10.0]
            assert list(fn.vv_q[0]) == [-44.0, 0.0, 0.0, 44.0]
            assert fn.rvrt_s["vw"][0] == fn.rvrt_s["lim"][0] == 900
            await drv.write(Setpoint({"tan_phi": -0.2}))  # injecting: over-excited, PF > 0
            assert fn.pf_ena[0] == 1 and fn.vv_ena[0] == 0 and fn.pf[0] == pytest.approx(0.981, abs=1e-3)
            await drv.write(Setpoint({"conn": 0}))
            await dev.advance(0, 60, {"pv_w_per_kwp": 900.0, "v_pu": 1.0})
            m = await drv.read()
            assert m["p_w"] == 0 and m["pv_curtail_w"] == pytest.approx(900 * 6 * 0.97, abs=1)
            with pytest.raises(SetpointRejected):
                await drv.write(Setpoint({"p_limit_w": 7000.0}))  # beyond the capabilities: never on the wire
            with pytest.raises(SetpointRejected, match="whole"):
                await drv.write(Setpoint({"vv_v1_pu": 0.9}))
            regs = await drv._client.read_holding(dev.map.addr[123], 26)
            assert decode_model(regs, 123)["Conn"] == 0
        finally:
            await drv.close()
            await dev.stop()
    run(body())


def test_a_device_without_the_curve_models_refuses_curve_setpoints():
    async def body():
        dev = PvSunSpecDevice(PV, PV.parse_config(CFG), device_id="old")
        dev.map = FroniusRegisterMap(dev.cfg, "old", served=(1, 103, 120, 121, 123, 160))  # no 122, 126, 132
        dev.sync()
        addr = await dev.start()
        drv = SunSpecDriver(Address.parse(addr), PV.capabilities(dev.cfg))
        try:
            await drv.connect()
            with pytest.raises(SetpointRejected, match="model 132"):
                await drv.write(Setpoint({"vw_ena": 1}))
            await drv.write(Setpoint({"p_limit_w": 3000.0}))  # 123 is there
            assert dev.pbank.functions.lim_pct[0] == 50.0
        finally:
            await drv.close()
            await dev.stop()
    run(body())


def test_the_same_commands_give_the_same_physics_on_sim_and_over_the_wire():
    """A script of setpoints and voltages, once into a bank (sim://), once through driver + server."""
    script = [({"p_limit_w": 4000.0}, 1.0), ({}, 1.0), ({**VW, "vw_ena": 1}, 1.07), ({}, 1.09),
              ({**VV, "vv_ena": 1}, 1.09), ({"tan_phi": 0.25}, 1.05), ({"conn": 0}, 1.0), ({"conn": 1}, 1.0)]
    cfg = PV.parse_config(CFG | {"controls": {"p_limit_ramp_s": 90}})
    sim = PvBank([cfg])
    sim_out = []
    for t, (sp, v) in enumerate(script):
        for name, value in sp.items():
            sim.setpoints[name][0] = value
        sim.step(60 * t, 60, {"pv_w_per_kwp": np.array([850.0]), "v_pu": np.array([v])})
        sim_out.append({k: float(a[0]) for k, a in sim.measure().items()})

    async def wire():
        dev = PvSunSpecDevice(PV, cfg, device_id="eq")
        drv = SunSpecDriver(Address.parse(await dev.start()), PV.capabilities(cfg))
        out = []
        try:
            await drv.connect()
            for t, (sp, v) in enumerate(script):
                if sp:
                    await drv.write(Setpoint(sp))
                await dev.advance(60 * t, 60, {"pv_w_per_kwp": 850.0, "v_pu": v})
                out.append(dict((await drv.read()).values))
        finally:
            await drv.close()
            await dev.stop()
        return out

    wire_out = run(wire())
    for k, (a, b) in enumerate(zip(sim_out, wire_out)):
        for name in ("p_w", "q_var", "pv_curtail_w", "v_v"):
            # registers carry whole watts and vars, OutPFSet three decimals (tan_phi 0.25 -> PF 0.970)
            assert b[name] == pytest.approx(a[name], abs=12.0), (k, name, a, b)
    assert any(b["pv_curtail_w"] > 1000 for b in wire_out) and any(abs(b["q_var"]) > 1000 for b in wire_out)
