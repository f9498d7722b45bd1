"""The DLMS drivers against the virtual meter: protocol == sim:// exactly, the load profile, security, addresses,
block transfer, a single-phase meter, and HDLC on a real (pseudo) serial line."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import os
import tty

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import registry
from devices.base import Address, DeviceUnavailable, ProtocolError, Setpoint, SetpointRejected
from devices.family import DeviceContext
from devices.meter.client import AssociationRefused
from devices.meter.driver import DlmsHdlcDriver, DlmsTcpDriver
from devices.meter.model import PROFILE_KEYS, MeterBank
from devices.meter.server import hdlc_link
from devices.meter.virtual import VirtualMeter

FAM = registry.family("meter")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
CONTEXT = DeviceContext(START, 900, "m-test")  # a scenario starting at START (the meter's clock starts there)


async def started(**cfg) -> tuple[VirtualMeter, str, str]:
    config = FAM.parse_config(cfg)
    meter = VirtualMeter(FAM, config, context=CONTEXT)
    return meter, await meter.start(), await meter.start_hdlc()


def driver(address: str, **kw):
    addr = Address.parse(address)
    cls = DlmsTcpDriver if addr.scheme == "dlms+tcp" else DlmsHdlcDriver
    return cls(addr, FAM.capabilities(FAM.parse_config({})), **kw)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


points = st.fixed_dictionaries({
    "point_p_w": st.floats(-80_000, 80_000, allow_nan=False),
    "point_q_var": st.floats(-30_000, 30_000, allow_nan=False),
    "point_v_pu": st.floats(0.85, 1.15),
    "point_v_b_pu": st.one_of(st.just(math.nan), st.floats(0.85, 1.15)),
})


@settings(max_examples=8, deadline=None)
@given(st.lists(points, min_size=1, max_size=4), st.sampled_from([1, 3]))
def test_protocol_reads_equal_sim_exactly(steps, phases):
    """The same inputs on a sim:// bank and on the virtual meter: every measurement identical, both transports."""
    async def body():
        meter, tcp, hdlc = await started(phases=phases, phase="b")
        ref = MeterBank([meter.cfg], [CONTEXT])
        try:
            async with driver(tcp) as a, driver(hdlc) as b:
                a.clock = b.clock = lambda: meter.t_s  # as the device host sets it: the simulated time
                for k, point in enumerate(steps):
                    await meter.advance(k * 900, 900, point)
                    ref.step(k * 900, 900, {n: np.array([v]) for n, v in point.items()})
                    expected = {n: float(v[0]) for n, v in ref.measure().items()}
                    for m in (await a.read(), await b.read()):
                        assert m.t_s == (k + 1) * 900  # the time base; the meter's clock is a measurement
                        assert m["clock_unix_s"] == START.timestamp() + (k + 1) * 900
                        bad = {n: (m.values[n], e) for n, e in expected.items() if not same(m.values[n], e)}
                        assert not bad
        finally:
            await meter.stop()
    run(body())


def test_load_profile_for_a_time_range_over_both_transports():
    async def body():
        meter, tcp, hdlc = await started(max_pdu_size=128)  # a day of entries needs block transfer
        try:
            for k in range(4 * 30):  # 30 h of 15 min steps with a changing load
                await meter.advance(k * 900, 900, {"point_p_w": 400.0 + 10 * k, "point_q_var": -50.0})
            start = START + dt.timedelta(hours=2)
            end = start + dt.timedelta(days=1)
            times, values = meter.mbank.profile(0)
            wanted = [(t, v) for t, v in zip(times, values) if start.timestamp() <= t <= end.timestamp()]
            assert len(wanted) == 97  # both ends included
            for address in (tcp, hdlc):
                before = meter.server.requests
                async with driver(address) as d:
                    entries = await d.read_profile(start, end)
                assert meter.server.requests - before > 5  # AARQ, scalers, capture objects, several blocks
                assert [e.t.timestamp() for e in entries] == [t for t, _ in wanted]
                for e, (_, v) in zip(entries, wanted):
                    assert e.values == {key: float(v[k]) for k, key in enumerate(PROFILE_KEYS)}
                async with driver(address) as d:
                    assert await d.read_profile(end + dt.timedelta(days=1), end + dt.timedelta(days=2)) == []
        finally:
            await meter.stop()
    run(body())


def test_low_level_security_password_from_the_environment(monkeypatch):
    async def body():
        meter, tcp, hdlc = await started(password="s3cret-pw")
        try:
            monkeypatch.setenv("METER_PW", "s3cret-pw")
            for base in (tcp, hdlc):
                good = base.replace("client=16", "client=32") + "&password_env=METER_PW"
                async with driver(good) as d:
                    assert (await d.read()).values["f_hz"] == 50.0
            monkeypatch.setenv("METER_PW", "wrong")
            for base in (tcp, hdlc):
                d = driver(base.replace("client=16", "client=32") + "&password_env=METER_PW")
                with pytest.raises(AssociationRefused, match="authentication-failure"):
                    await d.connect()
                await d.close()
                d = driver(base.replace("client=16", "client=32"))  # no password, not the public client
                with pytest.raises(AssociationRefused, match="authentication-required"):
                    await d.connect()
                await d.close()
            d = driver(tcp + "&password_env=METER_PW_UNSET")
            with pytest.raises(DeviceUnavailable, match="METER_PW_UNSET"):
                await d.connect()
        finally:
            await meter.stop()
    monkeypatch.delenv("METER_PW_UNSET", raising=False)
    run(body())


def test_a_meter_without_a_password_refuses_low_level_security(monkeypatch):
    monkeypatch.setenv("METER_PW", "anything")

    async def body():
        meter, tcp, _ = await started(password=None)
        try:
            d = driver(tcp + "&password_env=METER_PW")
            with pytest.raises(AssociationRefused, match="authentication-mechanism-name-not-recognised"):
                await d.connect()
        finally:
            await meter.stop()
    run(body())


def test_writes_are_refused_and_the_meter_keeps_answering():
    async def body():
        meter, tcp, _ = await started()
        try:
            async with driver(tcp) as d:
                for sp in (Setpoint({}), Setpoint({"p_w": 0.0}), Setpoint({"e_import_wh": 0.0})):
                    with pytest.raises(SetpointRejected):
                        await d.write(sp)
                await meter.advance(0, 60, {"point_p_w": 100.0})
                assert (await d.read()).values["p_w"] == 100.0
                ident = await d.identity()
                assert ident["serial"] == meter.serial and ident["logical_device_name"].startswith("S4GSMM")
        finally:
            await meter.stop()
    run(body())


def test_a_single_phase_meter_reads_nan_for_the_phases_it_does_not_have():
    async def body():
        meter, tcp, _ = await started(phases=1, phase="a")
        try:
            await meter.advance(0, 60, {"point_p_w": -900.0, "point_v_pu": 1.0})
            async with driver(tcp) as d:
                m = (await d.read()).values
                assert m["p_a_w"] == -900.0 and m["p_w"] == -900.0 and m["v_v"] == 230.0
                assert math.isnan(m["v_b_v"]) and math.isnan(m["i_c_a"]) and math.isnan(m["p_b_w"])
                assert (await d.identity())["registers"] == 26 - 8
        finally:
            await meter.stop()
    run(body())


@pytest.mark.parametrize("address, message", [
    ("dlms+tcp://h:4059/?client=16&bogus=1", "unknown address key"),
    ("dlms+tcp://h/?client=999", "client must be"),
    ("dlms+tcp:///?client=16", "needs a host"),
    ("dlms+hdlc+tcp://h:1/?baud=9600", "baud applies to a serial line"),
    ("dlms+hdlc+tcp://h/?client=16", "needs host and port"),
    ("dlms+hdlc://h/dev/ttyS0", "a serial address"),
    ("dlms+hdlc:///dev/ttyS0?physical=abc", "not a number"),
])
def test_bad_addresses_are_refused_with_the_reason(address, message):
    with pytest.raises(ValueError, match=message):
        driver(address)


def test_address_scheme_resolves_through_the_registry():
    assert registry.driver_class("dlms+tcp://h:4059/?client=16") is DlmsTcpDriver
    assert registry.driver_class("dlms+hdlc:///dev/ttyUSB0") is DlmsHdlcDriver
    assert {"client", "server", "password_env", "physical", "baud"} == DlmsHdlcDriver.QUERY_KEYS
    assert {"client", "server", "password_env"} == DlmsTcpDriver.QUERY_KEYS


def test_hdlc_on_a_serial_line(tmp_path):
    """dlms+hdlc:///dev/pts/N: the driver's pyserial path against the meter's HDLC link on the pty master."""
    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)

    async def body():
        meter, _, _ = await started()
        loop = asyncio.get_running_loop()
        link = hdlc_link(meter.server)

        def on_bytes() -> None:
            try:
                data = os.read(master, 4096)
            except OSError:
                return
            for frame in link.feed(data):
                os.write(master, frame)
        loop.add_reader(master, on_bytes)
        try:
            await meter.advance(0, 900, {"point_p_w": 1234.0, "point_q_var": 10.0})
            async with driver(f"dlms+hdlc://{path}?physical=17&baud=9600") as d:
                m = await d.read()
                assert m.values["p_w"] == 1234.0 and m.values["e_import_wh"] == 308.0
        finally:
            loop.remove_reader(master)
            await meter.stop()
    try:
        run(body())
    finally:
        os.close(master)
        os.close(slave)


def test_driver_reconnects_after_a_protocol_error():
    async def body():
        meter, tcp, _ = await started()
        try:
            async with driver(tcp, timeout_s=1.0) as d:
                await d.read()
                meter.corrupt_next_reply()
                with pytest.raises(ProtocolError):
                    await d.read()
                d.backoff.retry_at = 0  # do not wait for the back-off in a test
                await d.read()
                assert d.dials == 2
        finally:
            await meter.stop()
    run(body())


@pytest.mark.parametrize("scheme", ["dlms+tcp://", "dlms+hdlc+tcp://"])
def test_device_host_gives_the_same_readings_for_sim_and_a_virtual_meter(scheme):
    """DeviceSim (the mosaik host every scenario uses) with one sim:// meter and one virtual DLMS meter fed the
    same connection point: identical measurements every step."""
    from devices.simulator import DeviceSim

    sim = DeviceSim()
    sim.init("Devices", step_size=900)
    a, = sim.create(1, "meter", address="sim://", device_id="m_sim")
    b, = sim.create(1, "meter", address=scheme, device_id="m_dlms")
    sim.setup_done()
    try:
        names = list(FAM.measurements)
        for k, p in enumerate([1500.0, -2300.5, 0.0, 800.25]):
            point = {"point_p_w": {"src": p}, "point_q_var": {"src": p / 4}, "point_v_pu": {"src": 1.03}}
            sim.step(k * 900, {a["eid"]: point, b["eid"]: point}, 10**9)
            out = sim.get_data({a["eid"]: names, b["eid"]: names})
            bad = {n: (out["m_sim"][n], out["m_dlms"][n]) for n in names if not same(out["m_sim"][n], out["m_dlms"][n])}
            assert not bad
        assert out["m_sim"]["e_import_wh"] == 575  # (1500 + 800.25) W for 15 min each: 575.06 Wh, whole Wh
        assert sim.drivers()["m_dlms"].dials == 1  # one association for the whole run
    finally:
        sim.finalize()
