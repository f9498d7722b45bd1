"""LiBal rack physics: OCV/resistance voltage, thermal model, BMS current derating, alarms, PCS limits."""

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from devices import registry
from devices.libal.model import (OCV_CELL_V, Alarm, LibalBank, LibalConfig, current_for_power, ocv_cell_v)

BASE = {
    "battery": {"capacity_wh": 100_000, "p_charge_max_w": 50_000, "p_discharge_max_w": 50_000,
                "eta_charge": 0.96, "eta_discharge": 0.96, "soc_min": 0.05, "soc_max": 0.95, "soc_init": 0.5},
    "s_max_va": 60_000, "i_charge_max_a": 100, "i_discharge_max_a": 120,
}


def cfg(**over) -> LibalConfig:
    raw = {**BASE, **over}
    if "battery" in over:
        raw["battery"] = {**BASE["battery"], **over["battery"]}
    return LibalConfig.model_validate(raw)


def bank(**over) -> LibalBank:
    return LibalBank([cfg(**over)])


def test_family_is_registered_with_battery_names_and_capabilities():
    fam = registry.family("libal")
    for name in ("p_w", "q_var", "batt_p_w", "soc", "e_wh", "p_charge_avail_w", "p_discharge_avail_w",
                 "v_v", "i_a", "t_c", "soh", "alarms", "i_charge_max_a", "i_discharge_max_a"):
        assert name in fam.measurements
    assert fam.battery_setpoint == "p_w"
    caps = fam.capabilities(cfg())
    assert (caps.setpoints["p_w"].min, caps.setpoints["p_w"].max) == (-50_000, 50_000)
    assert "libal" in registry.drivers() and fam.virtual["libal"].endswith("LibalVirtualDevice")
    assert set(LibalBank([cfg()]).measure()) == set(fam.measurements)


def test_config_refuses_packs_the_can_frames_cannot_carry_and_pcs_below_rating():
    with pytest.raises(ValidationError, match="0x356"):
        cfg(cells_series=200)  # 200 * 3.65 V > 655.35 V
    with pytest.raises(ValidationError, match="s_max_va"):
        cfg(s_max_va=40_000)
    with pytest.raises(ValidationError):
        cfg(i_charge_max_a=4000)  # beyond the 0.1 A int16 field


def test_ocv_curve_is_lfp_like_and_voltage_includes_ir_drop():
    assert np.all(np.diff(OCV_CELL_V) > 0)
    plateau = ocv_cell_v(np.array([0.3, 0.7]))
    assert plateau[1] - plateau[0] < 0.05  # flat middle
    b = bank()
    v_rest = b.v_v[0]
    assert v_rest == pytest.approx(160 * ocv_cell_v(np.array([0.5]))[0])
    b.setpoints["p_w"][:] = 40_000
    b.step(0, 1, {})
    r = 160 * 0.0005
    assert b.i_a[0] > 0
    assert b.v_v[0] == pytest.approx(160 * ocv_cell_v(b.battery.soc)[0] + r * b.i_a[0])
    assert b.v_v[0] * b.i_a[0] == pytest.approx(40_000 * 0.96, rel=1e-3)  # DC power = P_ac * eta
    b.setpoints["p_w"][:] = -40_000
    b.step(1, 1, {})
    assert b.i_a[0] < 0 and b.v_v[0] < 160 * ocv_cell_v(b.battery.soc)[0]


@given(p=st.floats(-1e6, 1e6), v=st.floats(100, 650), r=st.floats(0, 0.5))
@settings(max_examples=200, deadline=None)
def test_current_for_power_solves_the_terminal_equation(p, v, r):
    i = current_for_power(np.array([p]), np.array([v]), np.array([r]))[0]
    if v * v + 4 * r * p >= 0:
        assert (v + r * i) * i == pytest.approx(p, rel=1e-6, abs=1e-6)


def test_temperature_rises_with_i2r_and_relaxes_to_ambient():
    b = bank(heat_capacity_j_per_k=1e5, t_ambient_c=25, t_init_c=25)
    b.setpoints["p_w"][:] = 50_000
    for k in range(30):
        b.step(k * 60, 60, {})
    hot = b.t_c[0]
    assert hot > 25.5
    steady = 25 + b.i_a[0] ** 2 * 160 * 0.0005 / 40
    assert hot <= steady + 1e-9
    b.setpoints["p_w"][:] = 0
    for k in range(20):
        b.step(k * 900, 900, {})  # 7 thermal time constants (C/k = 2500 s)
    assert b.t_c[0] == pytest.approx(25, abs=0.01)


def test_current_limits_derate_near_full_and_empty():
    b = bank(battery={"soc_init": 0.5})
    assert (b.i_charge_max_a[0], b.i_discharge_max_a[0]) == (100, 120)
    full = bank(battery={"soc_init": 0.925})  # half-way into the 5 % band below soc_max
    assert full.i_charge_max_a[0] == pytest.approx(50, abs=0.1)
    assert full.i_discharge_max_a[0] == 120
    top = bank(battery={"soc_init": 0.95})
    assert top.i_charge_max_a[0] == 0 and not top.charge_enable[0]
    empty = bank(battery={"soc_init": 0.05})
    assert empty.i_discharge_max_a[0] == 0 and empty.i_charge_max_a[0] == 100


@pytest.mark.parametrize("t, ch, dis", [(-25, 0, 0), (-15, 0, 60), (5, 50, 120), (25, 100, 120),
                                        (45, 50, 120), (52, 0, 36), (60, 0, 0)])
def test_current_limits_derate_with_temperature(t, ch, dis):
    b = bank(t_init_c=t)
    assert b.i_charge_max_a[0] == pytest.approx(ch, abs=0.1)
    assert b.i_discharge_max_a[0] == pytest.approx(dis, abs=0.1)


def test_alarm_and_warning_flags():
    assert bank().alarms[0] == 0
    hot = bank(t_init_c=50)
    assert hot.alarms[0] == Alarm.WARN_HIGH_TEMPERATURE
    cooked = bank(t_init_c=60)
    assert cooked.alarms[0] & Alarm.OVER_TEMPERATURE and cooked.i_charge_max_a[0] == 0
    cold = bank(t_init_c=-5)
    assert cold.alarms[0] == Alarm.WARN_LOW_TEMPERATURE
    b = bank()
    b.v_v[:] = 160 * 3.7
    b.i_a[:] = 130
    flags = Alarm(int(b._alarms()[0]))
    assert Alarm.OVER_VOLTAGE in flags and Alarm.CHARGE_OVER_CURRENT in flags and Alarm.WARN_HIGH_VOLTAGE in flags
    b.alarms = b._alarms()
    assert b._current_limits()[0][0] == 0  # protection stops charging
    b.v_v[:] = 160 * 2.4
    b.i_a[:] = -150
    flags = Alarm(int(b._alarms()[0]))
    assert Alarm.UNDER_VOLTAGE in flags and Alarm.DISCHARGE_OVER_CURRENT in flags
    assert bank().measure()["alarms"].dtype == float


def test_pcs_follows_setpoint_within_bms_power_limit_and_mode_requests():
    b = bank(battery={"soc_init": 0.94})  # CCL derated to 20 A
    ch_w, _ = b.power_limits_w()
    assert b.measure()["p_charge_avail_w"][0] == pytest.approx(min(ch_w[0], 50_000))
    b.setpoints["p_w"][:] = 50_000
    b.step(0, 1, {})
    assert b.battery.p_w[0] == pytest.approx(ch_w[0])
    b = bank()
    b.charge_request[:] = False
    b.setpoints["p_w"][:] = 10_000
    b.step(0, 60, {})
    assert b.battery.p_w[0] == 0
    assert b.measure()["p_charge_avail_w"][0] > 0  # availability does not depend on the mode request
    b.pcs_enabled[:] = False
    b.setpoints["p_w"][:] = -10_000
    b.setpoints["q_var"][:] = 5_000
    b.step(60, 60, {})
    assert b.battery.p_w[0] == 0 and b.q_var[0] == 0


def test_reactive_power_gets_what_the_rating_leaves():
    b = bank()
    b.setpoints["p_w"][:] = 48_000
    b.setpoints["q_var"][:] = -50_000
    b.step(0, 60, {})
    assert b.q_var[0] == pytest.approx(-np.sqrt(60_000**2 - 48_000**2))


def test_soh_fades_with_throughput():
    b = bank(cycle_life=10)
    b.setpoints["p_w"][:] = 40_000
    for k in range(60):
        b.step(k * 60, 60, {})
    assert 0.9 < b.soh[0] < 1.0


@given(st.lists(st.tuples(st.floats(-50_000, 50_000), st.sampled_from([1, 60, 900])), min_size=1, max_size=40),
       st.floats(0.05, 0.95), st.floats(-10, 45))
@example(steps=[(29817.0, 1), (-33156.0, 60)], soc0=0.078125, t0=6.0)  # discharge right after a charge pulse
@settings(max_examples=60, deadline=None)
def test_any_setpoint_sequence_keeps_the_pack_inside_its_limits(steps, soc0, t0):
    b = bank(battery={"soc_init": soc0}, t_init_c=t0)
    for k, (p, dt) in enumerate(steps):
        ccl, dcl = b.i_charge_max_a.copy(), b.i_discharge_max_a.copy()
        ch_w, dis_w = b.power_limits_w()
        b.setpoints["p_w"][:] = p
        b.step(k, dt, {})
        m = {k: v[0] for k, v in b.measure().items()}
        assert 0.05 - 1e-9 <= m["soc"] <= 0.95 + 1e-9
        assert -dis_w[0] - 1e-6 <= m["p_w"] <= ch_w[0] + 1e-6
        assert m["i_a"] <= ccl[0] * 1.02 + 0.1 and -m["i_a"] <= dcl[0] * 1.02 + 0.1  # p = V*I at the old V
        assert m["i_charge_max_a"] >= 0 and m["i_discharge_max_a"] >= 0
        assert round(m["i_charge_max_a"] * 10) == pytest.approx(m["i_charge_max_a"] * 10)  # 0.1 A steps
        assert m["p_charge_avail_w"] >= 0 and m["p_discharge_avail_w"] >= 0
        assert int(m["alarms"]) & 0xFF == 0  # the model never drives itself into protection
