"""Energy Router over IEC 61850: sign conventions at the driver boundary, setpoints with read-back, the
independent client (the iec61850 package) reading our server, protocol vs sim:// equivalence, S4G topics."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest

iec61850 = pytest.importorskip("iec61850")

from devices import registry  # noqa: E402
from devices.base import Address, ProtocolError, Setpoint, SetpointRejected  # noqa: E402
from devices.energy_router import data_map, s4g_topics  # noqa: E402
from devices.energy_router.driver import Iec61850Driver, measurement_values  # noqa: E402
from devices.energy_router.model import EnergyRouterBank  # noqa: E402
from devices.energy_router.virtual import VirtualEnergyRouter  # noqa: E402

FAMILY = registry.family("energy_router")
FC = iec61850.FC
ENV = {"pv_w_per_kwp": 450.0, "dc_load_w": 150.0, "ac_load_w": 250.0, "grid_present": 1.0}


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


async def _device(config: dict | None = None) -> VirtualEnergyRouter:
    device = VirtualEnergyRouter(FAMILY, FAMILY.parse_config(config or {}), device_id="er-test")
    await device.start()
    return device


def _driver(device: VirtualEnergyRouter, query: str = "") -> Iec61850Driver:
    return Iec61850Driver(Address.parse(device.address + query), FAMILY.capabilities(device.cfg), timeout_s=1.0)


# -- the boundary's conversions -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, device_value, ours", [
    ("p_w", 1200.0, -1200.0),  # MMXN1.Watt + = exported: ours + = imported
    ("q_var", -300.0, 300.0),
    ("pv_p_w", 800.0, -800.0),  # MMDC1.Watt + = produced: ours − = producing
    ("link_p_w", 250.0, -250.0),  # MMDC3.Watt + = exported to the neighbour
    ("batt_p_w", 900.0, 900.0),  # battery + = charging on both sides
    ("soc", 55.0, 0.55),  # ZBAT1.VolChgRte in %
    ("v_dc_v", 401.0, 401.0),
])
def test_measurement_signs_and_scales_at_the_boundary(name, device_value, ours):
    fcdas = tuple(data_map.MEASURED)
    raw = [device_value if f.name == name else 0.0 for f in fcdas]
    assert measurement_values(fcdas, raw)[name] == pytest.approx(ours)
    load = measurement_values(fcdas, raw, load_arrow=True)[name]  # ?signs=load: only scales apply
    assert load == pytest.approx(device_value * data_map.MEASURED_BY_NAME[name].scale)


def test_setpoint_signs_and_a_wrong_type_in_a_reply():
    assert data_map.SETPOINTS["p_w"].to_device(-500.0) == 500.0  # import 500 W = OutWSet -500 (generator)
    assert data_map.SETPOINTS["batt_p_w"].to_device(700.0) == 700.0
    assert data_map.SETPOINTS["link_p_w"].to_device(300.0) == -300.0
    fcdas = tuple(data_map.MEASURED)
    with pytest.raises(ProtocolError):
        measurement_values(fcdas, [b"\x00"] + [0.0] * (len(fcdas) - 1))
    with pytest.raises(ProtocolError):
        measurement_values(fcdas, [True] + [0.0] * (len(fcdas) - 1))
    with pytest.raises(ProtocolError):
        measurement_values(fcdas, [0.0])


@pytest.mark.parametrize("raw", ["iec61850://:102/ERLD0", "iec61850://h:102/", "iec61850://h/ERLD0?x=1",
                                 "iec61850://h/ERLD0?signs=weird", "iec61850://h/a/b"])
def test_bad_addresses_are_refused_with_the_accepted_keys(raw):
    with pytest.raises(ValueError):
        Iec61850Driver(Address.parse(raw), FAMILY.capabilities(FAMILY.parse_config({})))
    assert Iec61850Driver.query_keys == ("signs",)


# -- over the wire -------------------------------------------------------------------------------------------
def test_driver_writes_setpoints_in_the_device_convention_and_reads_them_back():
    async def body():
        device = await _device()
        try:
            await device.advance(0, 60, ENV)
            async with _driver(device) as driver:
                await driver.write(Setpoint({"p_w": -800.0, "q_var": 200.0, "mode": 2, "pv_limit_w": 400.0,
                                             "link_p_w": 100.0, "p_limit_w": 2500.0}))
                conn = await iec61850.IedConnection.connect(f"127.0.0.1:{device.port}", timeout_ms=2000)
                try:  # what an independent client sees on the device
                    assert await conn.read_float("ERLD0/DRCC1.OutWSet.setMag.f", FC.SP) == 800.0
                    assert await conn.read_float("ERLD0/DRCC1.OutVarSet.setMag.f", FC.SP) == -200.0
                    assert await conn.read_float("ERLD0/DRCT1.LnkWSet.setMag.f", FC.SP) == -100.0
                    assert await conn.read_float("ERLD0/MMDC1.Watt.subMag.f", FC.SV) == 400.0
                    assert await conn.read_int32("ERLD0/DRCC1.DERStr.stVal", FC.ST) == 2
                    await device.advance(60, 60, ENV)
                    grid_port = await conn.read_float("ERLD0/MMXN1.Watt.instMag.f", FC.MX)
                finally:
                    await conn.disconnect()
                m = await driver.read()
                assert m["p_w"] == pytest.approx(-800.0, abs=0.01) and grid_port == pytest.approx(800.0, abs=0.01)
                assert m["pv_p_w"] == pytest.approx(-400.0) and m["mode"] == 2 and m["control"] == 2
                with pytest.raises(SetpointRejected):
                    await driver.write(Setpoint({"mode": 9}))  # outside the capabilities: never on the wire
        finally:
            await device.stop()
    run(body())


def test_the_device_refuses_out_of_range_values_and_read_only_attributes_on_the_wire():
    async def body():
        device = await _device()
        conn = await iec61850.IedConnection.connect(f"127.0.0.1:{device.port}", timeout_ms=2000)
        try:
            for ref, fc, value, code in [("ERLD0/ZBTC1.BatChaPwr.setMag.f", FC.SP, 1e6, "ObjectValueInvalid"),
                                         ("ERLD0/MMXN1.Watt.instMag.f", FC.MX, 1.0, "ObjectAccessDenied"),
                                         ("ERLD0/ZINV1.WRtg.setMag.f", FC.SP, 1.0, "ObjectAccessDenied"),
                                         ("ERLD0/MMXN1.NoSuch.instMag.f", FC.MX, 1.0, "ObjectNonExistent")]:
                with pytest.raises(iec61850.IedDataAccessError, match=code):
                    await conn.write_float(ref, fc, value)
            with pytest.raises(iec61850.IedDataAccessError):
                await conn.write_int32("ERLD0/DRCC1.CtlMod.setVal", FC.SP, 7)
            control = conn.create_control_object("ERLD0/DRCC1.DERStr", iec61850.ControlModel.DIRECT_NORMAL)
            assert not (await control.operate(8)).success
            stop = conn.create_control_object("ERLD0/DRCC1.DERStop", iec61850.ControlModel.DIRECT_NORMAL)
            assert (await stop.operate(True)).success
            assert await conn.read_int32("ERLD0/DRCC1.DERStr.stVal", FC.ST) == 0
            await device.advance(0, 1, ENV)
            assert device.erbank.measure()["state"][0] == 0  # stopped
        finally:
            await conn.disconnect()
            await device.stop()
    run(body())


def test_an_independent_client_browses_and_reads_the_data_model_of_the_icd():
    async def body():
        device = await _device({"phases": 3})
        conn = await iec61850.IedConnection.connect(f"127.0.0.1:{device.port}", timeout_ms=2000)
        try:
            await device.advance(0, 60, ENV)
            assert await conn.get_server_directory() == ["ERLD0"]
            lns = await conn.get_logical_device_directory("ERLD0")
            assert {"LLN0", "LPHD1", "MMXN1", "MMXU1", "MMDC1", "ZBAT1", "ZBTC1", "ZINV1", "DRCC1", "DRCT1"} <= set(lns)
            assert "setMag" in await conn.get_data_directory("ERLD0/ZBTC1.BatChaPwr")
            spec = await conn.get_variable_specification("ERLD0/MMXN1.Watt", FC.MX)
            assert [c["name"] for c in spec["components"]] == ["instMag", "mag", "q", "t"]
            whole = await conn.read("ERLD0/MMXU1.W", FC.MX)
            phases = [p[0][0][0] for p in whole]  # phsA/B/C cVal.mag.f, exported power split over 3 phases
            assert sum(phases) == pytest.approx(-device.erbank.measure()["p_w"][0], abs=0.01)
            assert await conn.read_string("ERLD0/LPHD1.PhyNam.serNum", FC.DC) == device.serial
            model = await conn.get_device_model()
            assert len(model["logical_devices"][0]["variables"]) > 500
        finally:
            await conn.disconnect()
            await device.stop()
    run(body())


def test_protocol_and_sim_give_the_same_measurements_within_float32():
    """The same inputs and setpoints into a sim:// bank and through the driver into a virtual ER."""
    steps = [(ENV, {}), ({**ENV, "grid_present": 0.0}, {"batt_p_w": 500.0}), ({**ENV, "pv_w_per_kwp": 900.0}, {}),
             (ENV, {"p_w": -1000.0, "mode": 2, "pv_limit_w": 300.0}), (ENV, {"control": 0, "q_var": -100.0})]

    async def body():
        device = await _device()
        sim = EnergyRouterBank([device.cfg])
        try:
            async with _driver(device) as driver:
                for k, (env, sps) in enumerate(steps):
                    if sps:
                        await driver.write(Setpoint(sps))
                        for name, value in sps.items():
                            sim.setpoints[name][0] = value
                    await device.advance(60 * k, 60, env)
                    sim.step(60 * k, 60, {key: np.array([v]) for key, v in env.items()})
                    got, want = await driver.read(), sim.measure()
                    for name in FAMILY.measurements:
                        ref = float(want[name][0])
                        assert got[name] == pytest.approx(ref, rel=1e-6, abs=1e-3), (k, name)
        finally:
            await device.stop()
    run(body())


def test_the_data_model_is_stamped_on_the_build_context_and_readings_on_the_time_base():
    """The device clock of the virtual ER is the scenario's calendar; Measurement.t_s is the driver's clock."""
    import datetime as dt

    from devices.family import DeviceContext

    start = dt.datetime(2024, 6, 1, 8, tzinfo=dt.UTC)

    async def body():
        device = VirtualEnergyRouter(FAMILY, FAMILY.parse_config({}), context=DeviceContext(start, 60, "er-ctx"))
        await device.start()
        try:
            async with _driver(device) as driver:
                driver.clock = lambda: device.t_s  # as the device host sets it
                await device.advance(0, 60, ENV)
                await device.advance(60, 60, ENV)
                m = await driver.read()
            assert m.t_s == 120
            stamp = device.data.leaf(f"{device.cfg.ld_inst}/MMXN1.Watt.t[MX]").value
            assert stamp == (start + dt.timedelta(seconds=120)).timestamp()
            assert device.device_id == "er-ctx" and device.serial.startswith("ER")
        finally:
            await device.stop()
    run(body())


def test_s4g_topic_table_maps_both_ways():
    assert s4g_topics.MEASUREMENT_TOPICS["p_w"] == "EnergyRouterInverter/MMXN1.Watt.instMag.f"
    assert s4g_topics.SETPOINT_TOPICS["batt_p_w"] == "EnergyRouterInverter/ZBTC1.BatChaPwr.setMag.f"
    assert s4g_topics.SETPOINT_TOPICS["mode"] == "EnergyRouterInverter/DRCC1.DERStr.ctlNum"
    assert s4g_topics.SETPOINT_TOPICS["pv_limit_w"] == "EnergyRouterPV/MMDC1.Watt.subMag.f"
    assert s4g_topics.to_ours("EnergyRouterInverter/MMXN1.Watt.instMag.f", 1000.0) == ("p_w", -1000.0)
    assert s4g_topics.to_ours("EnergyRouterInverter/MMXN1.VolAmpr.subMag.f", 50.0) == ("q_var", -50.0)
    assert s4g_topics.to_topic_value("soc", 0.4) == ("EnergyRouterInverter/ZBAT1.VolChgRte.instMag.f",
                                                     pytest.approx(40.0))
    assert s4g_topics.to_topic_value("p_w", -300.0, setpoint=True)[1] == 300.0
    assert {t.name for t in s4g_topics.TOPICS if t.in_s4g} == {"p_w", "q_var", "soc", "pv_p_w", "batt_p_w",
                                                               "pv_limit_w", "mode"}
    assert all(not math.isnan(s4g_topics.to_ours(t.suffix, 1.0)[1]) for t in s4g_topics.TOPICS)


def test_device_sim_hosts_the_er_over_sim_and_iec61850_with_the_same_results(tmp_path):
    """The co-simulation's device simulator: one ER as sim://, one as a virtual ER behind MMS it starts itself."""
    from devices.simulator import DeviceSim

    sim = DeviceSim()
    sim.init("Devices-0", step_size=60, events_path=str(tmp_path / "events.jsonl"))
    config = {"pv_kwp": 3, "phases": 3}
    sim.create(1, "energy_router", address="sim://", device_id="a", config=config)
    sim.create(1, "energy_router", address="iec61850://", device_id="b", config=config, timeout_s=2.0)
    sim.setup_done()
    names = ["p_w", "q_var", "pv_p_w", "batt_p_w", "soc", "v_dc_v", "state", "control", "available"]
    try:
        for k, w in enumerate([300.0, 700.0, 0.0, 500.0]):
            inputs = {d: {"pv_w_per_kwp": {"src": w}} for d in ("a", "b")}
            if k == 1:
                for d in ("a", "b"):
                    inputs[d]["batt_p_w"] = {"ctl": 1200.0}
            sim.step(60 * k, inputs, 60 * (k + 1))
            out = sim.get_data({"a": names, "b": names})
            assert out["b"]["available"] is True
            for name in names[:-1]:
                assert out["b"][name] == pytest.approx(out["a"][name], rel=1e-6, abs=1e-3), (k, name)
        assert out["a"]["control"] == 1 and out["a"]["batt_p_w"] != 0
    finally:
        sim.close_devices()
