"""The LiBal BMS's CAN frames: DBC layout, round trips within scaling resolution, and total decoding."""

import math

import cantools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.base import DeviceUnavailable, ProtocolError
from devices.libal import can_codec as cc
from devices.libal.model import Alarm

ALL_BITS = [int(f) for f in Alarm]


def state(**over) -> cc.BmsState:
    base = dict(charge_voltage_limit_v=568.0, i_charge_max_a=100.0, i_discharge_max_a=120.0,
                discharge_voltage_limit_v=464.0, soc=0.5, soh=0.99, v_v=527.2, i_a=-35.8, t_c=21.5, alarms=0,
                charge_enable=True, discharge_enable=True, e_wh=50_000.0, ems_counter_echo=3, bms_state=1,
                module_count=10)
    base.update(over)
    return cc.BmsState(**base)


def test_dbc_loads_and_follows_the_pylontech_sma_layout():
    db = cc.database()
    assert {m.frame_id for m in db.messages} == {0x351, 0x355, 0x356, 0x359, 0x35A, 0x35C, 0x35E, 0x3C0, 0x3C8}
    frames = dict(cc.encode_bms_state(state(i_charge_max_a=74.0, i_discharge_max_a=74.0, charge_voltage_limit_v=53.2,
                                            discharge_voltage_limit_v=46.0)))
    # 0x351 of a Pylontech US3000C as diyBMS documents it: 53.2 V, 74 A, 74 A, 46.0 V, little-endian
    assert frames[0x351].hex() == "1402e402e402cc01"
    assert frames[0x355][:4] == bytes([50, 0, 99, 0])  # SoC 50 %, SoH 99 %
    assert frames[0x355][4:6] == (5000).to_bytes(2, "little")  # SMA high-resolution SoC, 0.01 %
    assert frames[0x356] == (52720).to_bytes(2, "little") + (-358).to_bytes(2, "little", signed=True) + \
        (215).to_bytes(2, "little", signed=True)
    assert frames[0x359][4:7] == bytes([10]) + b"PN"
    assert frames[0x35C] == bytes([0xC0, 0])  # charge (bit 7) and discharge (bit 6) enable
    assert frames[0x35E] == b"LIBAL   "
    assert [fid for fid, _ in cc.encode_bms_state(state())][-2:] == [cc.STATUS, cc.MANUFACTURER]


def test_alarm_bits_map_to_pylontech_and_sma_bits():
    frames = dict(cc.encode_bms_state(state(alarms=int(Alarm.OVER_TEMPERATURE | Alarm.WARN_LOW_VOLTAGE))))
    assert frames[0x359][0] == 0b0000_1000 and frames[0x359][2] == 0b0000_0100
    sma = frames[0x35A]
    assert sma[0] == 0b10_01_01_10  # general alarm and high temperature active, voltages normal
    assert sma[4] == 0b01_10_01_10  # general warning and low voltage active


@given(st.lists(st.sampled_from(ALL_BITS), unique=True))
def test_alarms_round_trip_through_both_frames(bits):
    alarms = sum(bits)
    signals_359 = cc.decode_frame(0x359, dict(cc.encode_bms_state(state(alarms=alarms)))[0x359])
    signals_35a = cc.decode_frame(0x35A, dict(cc.encode_bms_state(state(alarms=alarms)))[0x35A])
    assert cc.alarms_from_protection(signals_359) == alarms
    assert cc.alarms_from_sma(signals_35a) == alarms


states = st.builds(
    cc.BmsState,
    charge_voltage_limit_v=st.floats(0, 6553.5), i_charge_max_a=st.floats(0, 3276.7),
    i_discharge_max_a=st.floats(0, 3276.7), discharge_voltage_limit_v=st.floats(0, 6553.5),
    soc=st.floats(0, 1), soh=st.floats(0, 1), v_v=st.floats(0, 655.35), i_a=st.floats(-3276.8, 3276.7),
    t_c=st.floats(-100, 200), alarms=st.sets(st.sampled_from(ALL_BITS)).map(sum),
    charge_enable=st.booleans(), discharge_enable=st.booleans(), e_wh=st.floats(0, 4e9),
    ems_counter_echo=st.integers(0, 255), bms_state=st.integers(0, 4), module_count=st.integers(1, 255),
)


@given(states)
@settings(max_examples=200, deadline=None)
def test_encode_decode_round_trip_within_scaling_resolution(s):
    view = cc.BmsView()
    for fid, data in cc.encode_bms_state(s):
        view.update(fid, data, 0.0)
    got = view.snapshot(0.0, 3.0)
    assert got.charge_voltage_limit_v == pytest.approx(s.charge_voltage_limit_v, abs=0.05 + 1e-9)
    assert got.i_charge_max_a == pytest.approx(s.i_charge_max_a, abs=0.05 + 1e-9)
    assert got.i_discharge_max_a == pytest.approx(s.i_discharge_max_a, abs=0.05 + 1e-9)
    assert got.soc == pytest.approx(s.soc, abs=0.00005 + 1e-12)
    assert got.soh == pytest.approx(s.soh, abs=0.005 + 1e-12)
    assert got.v_v == pytest.approx(s.v_v, abs=0.005 + 1e-9)
    assert got.i_a == pytest.approx(s.i_a, abs=0.05 + 1e-9)
    assert got.t_c == pytest.approx(s.t_c, abs=0.05 + 1e-9)
    assert got.e_wh == pytest.approx(s.e_wh, abs=0.5)
    assert (got.alarms, got.charge_enable, got.discharge_enable) == (s.alarms, s.charge_enable, s.discharge_enable)
    assert (got.ems_counter_echo, got.bms_state, got.module_count) == (s.ems_counter_echo, s.bms_state,
                                                                       s.module_count)
    assert got.manufacturer == "LIBAL"


def test_unrepresentable_values_raise_instead_of_wrapping():
    with pytest.raises(cantools.database.EncodeError):
        cc.encode_bms_state(state(v_v=700.0))
    with pytest.raises(cantools.database.EncodeError):
        cc.encode_bms_state(state(i_a=-4000.0))


@given(st.integers(0, 0x7FF), st.binary(max_size=12), st.booleans())
@settings(max_examples=400, deadline=None)
def test_decoding_any_payload_gives_signals_none_or_a_typed_error(frame_id, data, extended):
    try:
        out = cc.decode_frame(frame_id, data, is_extended=extended)
    except cc.CanDecodeError as exc:
        assert isinstance(exc, ProtocolError)
        return
    assert out is None or all(isinstance(v, float) and math.isfinite(v) for v in out.values())


@given(st.sampled_from(sorted(cc.REQUIRED)), st.binary(max_size=12))
@settings(max_examples=400, deadline=None)
def test_our_identifiers_with_random_or_truncated_payloads(frame_id, data):
    message = cc.database().get_message_by_frame_id(frame_id)
    try:
        out = cc.decode_frame(frame_id, data)
    except cc.CanDecodeError:
        needed = max((s.start + s.length for s in message.signals if s.name in cc.REQUIRED[frame_id]), default=0)
        assert len(data) > 8 or len(data) * 8 < needed
        return
    assert out is not None and set(cc.REQUIRED[frame_id]) <= set(out)


def test_real_pylontech_frames_without_the_sma_extras_decode():
    view = cc.BmsView()
    for fid, data in cc.encode_bms_state(state(soc=0.4567)):
        if fid == cc.SOC_SOH:
            data = data[:4]  # Pylontech sends SoC/SoH only
        if fid in (cc.STATUS, cc.ALARMS):
            continue  # and neither the LiBal extension nor 0x35A
        view.update(fid, data, 0.0)
    got = view.snapshot(0.0, 3.0)
    assert got.soc == pytest.approx(0.46)
    assert math.isnan(got.e_wh)


def test_view_reports_missing_stale_and_malformed_frames():
    view = cc.BmsView()
    with pytest.raises(DeviceUnavailable, match="no BMS frame"):
        view.snapshot(0.0, 3.0)
    for fid, data in cc.encode_bms_state(state()):
        view.update(fid, data, 10.0)
    assert view.snapshot(12.9, 3.0).v_v == pytest.approx(527.2)
    with pytest.raises(DeviceUnavailable, match="older than 3 s"):
        view.snapshot(13.5, 3.0)
    with pytest.raises(cc.CanDecodeError):
        view.update(cc.MEASUREMENTS, b"\x01\x02", 12.0)
    with pytest.raises(ProtocolError, match="0x356"):
        view.snapshot(12.0, 3.0)
    view.update(cc.MEASUREMENTS, dict(cc.encode_bms_state(state(v_v=500.0)))[cc.MEASUREMENTS], 12.1)
    assert view.snapshot(12.2, 3.0).v_v == 500.0
    assert view.update(0x123, b"\x00", 12.3) is None  # other traffic on the bus is not ours


@given(st.integers(0, 255), st.booleans(), st.booleans(), st.booleans())
def test_ems_request_round_trip(counter, valid, charge, discharge):
    req = cc.EmsRequest(counter, valid, charge, discharge)
    assert cc.decode_ems_request(cc.encode_ems_request(req)) == req
