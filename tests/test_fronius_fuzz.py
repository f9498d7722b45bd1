"""Every Fronius decoder on random and truncated input: a typed error, never a crash, never a hang."""

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import registry
from devices.base import DeviceUnavailable, ProtocolError
from devices.fronius.driver import measurement_values, plan_reads, scan_directory
from devices.fronius.modbus_client import ModbusException, parse_header, parse_reply, read_request as mb_read
from devices.fronius.modbus_client import write_multiple_request, write_single_request
from devices.fronius.solar_api_driver import (
    Response,
    decode_json,
    parse_inverter_common,
    parse_power_flow,
    parse_storage_system,
)
from devices.fronius.sunspec_map import MODELS, FroniusRegisterMap, decode_model, scaled
from devices.fronius.virtual import FroniusSunSpecDevice

OUTCOMES = {"measured": 0, "scanned": 0}  # how often a fuzz case got through: the decoders ran, not only failed
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
regs16 = st.integers(0, 0xFFFF)


# -- Modbus TCP ------------------------------------------------------------------------------------------------

@FUZZ
@given(header=st.binary(max_size=9), tid=st.integers(0, 0xFFFF), unit=st.integers(0, 255))
def test_mbap_header(header, tid, unit):
    try:
        n = parse_header(header, tid, unit)
    except ProtocolError:
        return
    assert 1 <= n <= 253


@FUZZ
@given(pdu=st.binary(max_size=260), kind=st.sampled_from(["read", "single", "multi"]),
       addr=st.integers(0, 40000), count=st.integers(1, 125))
def test_reply_pdu(pdu, kind, addr, count):
    request = {"read": mb_read(addr, count), "single": write_single_request(addr, count),
               "multi": write_multiple_request(addr, [0] * min(count, 123))}[kind]
    try:
        regs = parse_reply(request, pdu)
    except ModbusException as exc:
        assert 0 <= exc.code <= 255
        return
    except ProtocolError:
        return
    assert len(regs) == (count if kind == "read" else 0)


@FUZZ
@given(regs=st.lists(regs16, max_size=120), mid=st.sampled_from(sorted(MODELS)), truncate=st.integers(0, 40))
def test_model_blocks(regs, mid, truncate):
    mdef = MODELS[mid]
    block = [mid, mdef.length(2 if mid == 160 else 0)] + regs
    block = block[:max(0, len(block) - truncate)]
    try:
        values = decode_model(block, expected_id=mid)
    except ProtocolError:
        return
    for p in mdef.points:
        try:
            values.value(p.name)
        except ProtocolError:
            pass


@FUZZ
@given(raw=st.one_of(st.none(), st.integers(-(2 ** 32), 2 ** 32), st.text(max_size=3)),
       sf=st.one_of(st.none(), st.integers(-40000, 40000), st.text(max_size=2)))
def test_scale_factors(raw, sf):
    try:
        value = scaled(raw, sf)
    except ProtocolError:
        return
    assert value is None or isinstance(value, float)


@FUZZ
@given(space=st.dictionaries(st.integers(0, 0xFFFF), regs16, max_size=300),
       suns=st.sampled_from([None, 0, 40000, 50000]), chain=st.lists(st.tuples(regs16, st.integers(0, 300)), max_size=20),
       end=st.booleans())
def test_model_directory_scan(space, suns, chain, end):
    space = dict(space)
    if suns is not None:  # give the scan something to walk: 'SunS' then random headers
        space[suns], space[suns + 1] = 0x5375, 0x6E53
        addr = suns + 2
        for mid, length in chain:
            if addr + 1 > 0xFFFF:
                break
            space[addr], space[addr + 1] = mid, length
            addr += 2 + length
        if end and addr + 1 <= 0xFFFF:
            space[addr], space[addr + 1] = 0xFFFF, 0

    async def read(addr, count):
        await asyncio.sleep(0)
        if any(a not in space for a in range(addr, addr + count)):
            raise ModbusException(3, 0x02)
        return [space[a] for a in range(addr, addr + count)]

    async def scan():
        return await asyncio.wait_for(scan_directory(read), 5)

    try:
        entries = asyncio.run(scan())
    except ProtocolError:
        return
    assert len(entries) <= 65 and all(e.id not in (0, 0xFFFF) for e in entries)
    OUTCOMES["scanned"] += 1
    try:
        plan = plan_reads(entries)
    except ProtocolError:
        return
    assert all(count <= 125 for _, count in plan)


FAM = registry.family("fronius")
DEVICE = FroniusSunSpecDevice(FAM, FAM.parse_config({}), device_id="fuzz")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inv=st.lists(regs16, min_size=50, max_size=50), mppt=st.lists(regs16, min_size=88, max_size=88),
       storage=st.lists(regs16, min_size=24, max_size=24), realistic=st.booleans(), sf=st.integers(-3, 3))
def test_measurement_from_random_register_values(inv, mppt, storage, realistic, sf):
    if realistic:  # real module labels and sane scale factors, so the arithmetic behind them runs too
        real = DEVICE.image[DEVICE.map.addr[160] - 40000 + 2:][:88]
        for k in range(4):
            mppt[8 + 20 * k + 1:8 + 20 * k + 9] = real[8 + 20 * k + 1:8 + 20 * k + 9]
        mppt[6] = 4  # N
        for mid, regs in ((103, inv), (160, mppt), (124, storage)):
            for name, off in MODELS[mid].offsets().items():
                if name.endswith("_SF"):
                    regs[off - 2] = sf & 0xFFFF
    try:
        blocks = [decode_model([mid, len(r)] + r, mid) for mid, r in ((103, inv), (160, mppt), (124, storage))]
        values = measurement_values(*blocks, None)
    except ProtocolError:
        return
    assert set(values) >= {"p_w", "batt_p_w", "soc"}
    OUTCOMES["measured"] += 1


@FUZZ
@given(address=st.integers(0, 0xFFFF), values=st.lists(regs16, min_size=1, max_size=6))
def test_written_registers_decode_or_are_refused(address, values):
    rmap: FroniusRegisterMap = DEVICE.map
    if address not in rmap.writable:  # mostly aim at the writable registers
        address = sorted(rmap.writable)[address % len(rmap.writable)]
    try:
        fields = rmap.storage_fields(address, values)
    except KeyError:
        return
    try:
        DEVICE.fbank.set_storage_control(0, 0, **fields)
    except ValueError:
        pass


# -- HTTP and the Solar API --------------------------------------------------------------------------------------

# HTTP framing is h11's; the server and the driver face malformed streams in tests/hostile/test_solar_api.py.


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=5)),
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.sampled_from(["Head", "Body", "Data", "Status", "Code", "Site",
                                                                "Inverters", "1", "0", "P", "P_Akku", "P_Grid",
                                                                "P_Load", "SOC", "UAC", "FAC", "Value", "Controller",
                                                                "Capacity_Maximum", "StateOfCharge_Relative",
                                                                "Reason"]), children, max_size=5)),
    max_leaves=30)


@FUZZ
@given(doc=json_values, parser=st.sampled_from([parse_power_flow, parse_inverter_common, parse_storage_system]))
def test_solar_api_json(doc, parser):
    try:
        parser(doc)
    except (ProtocolError, DeviceUnavailable):
        pass


@FUZZ
@given(body=st.binary(max_size=200), status=st.sampled_from([200, 404, 500]))
def test_solar_api_bodies(body, status):
    try:
        decode_json(Response(status, "", {}, body), "/x")
    except ProtocolError:
        pass


def test_a_truncated_real_reply_is_a_protocol_error():
    doc = {"Body": {"Data": {"Site": {"P_Akku": 1}, "Inverters": {"1": {"P": 2}}}},
           "Head": {"Status": {"Code": 0}}}
    text = json.dumps(doc).encode()
    for cut in range(1, len(text)):
        with pytest.raises(ProtocolError):
            parse_power_flow(decode_json(Response(200, "OK", {}, text[:cut]), "/x"))
    assert parse_power_flow(doc)["p_akku_w"] == 1
    with pytest.raises(DeviceUnavailable):
        parse_power_flow({"Head": {"Status": {"Code": 12, "Reason": "gone"}}})
    with pytest.raises(ProtocolError, match="status 6"):
        parse_power_flow({"Head": {"Status": {"Code": 6, "Reason": "bad arg"}}})
