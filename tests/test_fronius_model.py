"""Fronius hybrid physics: self-consumption, model-124 windows, forced charge/discharge, revert, reserve, grid charging."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import registry
from devices.fronius.model import CHA_ST_CHARGING, CHA_ST_EMPTY, CHA_ST_FULL, FroniusBank, FroniusConfig

BATT = {"capacity_wh": 10_000, "p_charge_max_w": 4000, "p_discharge_max_w": 4000, "soc_init": 0.5,
        "eta_charge": 1.0, "eta_discharge": 1.0, "soc_min": 0.0, "soc_max": 1.0}


def make(**kw):
    cfg = FroniusConfig(**{"pv_kwp": 8, "ac_max_w": 8000, "eta_inverter": 1.0, "battery": BATT, **kw})
    return FroniusBank([cfg])


def step(bank, t=0, dt=60, pv=0.0, load=0.0):
    bank.step(t, dt, {"pv_w_per_kwp": np.array([pv]), "site_load_w": np.array([load])})
    return {k: float(v[0]) for k, v in bank.measure().items()}


def test_family_is_registered_with_both_schemes():
    fam = registry.family("fronius")
    assert set(fam.drivers) == set(fam.virtual) == {"sunspec+tcp", "fronius+http"}
    assert fam.battery_setpoint == "batt_p_w" and fam.setpoints[0] == "batt_p_w" and "p_limit_w" in fam.setpoints
    assert set(fam.input_names) == {"pv_w_per_kwp", "site_load_w", "v_pu"}
    cap = fam.capabilities(fam.parse_config({"battery": {**BATT, "p_discharge_max_w": 3000}}))
    assert (cap.setpoints["batt_p_w"].min, cap.setpoints["batt_p_w"].max) == (-3000, 4000)


def test_self_consumption_stores_the_pv_surplus_and_covers_the_deficit():
    b = make()
    m = step(b, pv=500, load=1000)  # 4 kW PV, 1 kW load: 3 kW into the battery, nothing exported
    assert m["batt_p_w"] == pytest.approx(3000) and m["p_w"] == pytest.approx(-1000)
    assert b.grid_p_w[0] == pytest.approx(0)
    m = step(b, t=60, pv=0, load=1500)  # night: the battery covers the load
    assert m["batt_p_w"] == pytest.approx(-1500) and m["p_w"] == pytest.approx(-1500) and b.grid_p_w[0] == 0
    m = step(b, t=120, pv=0, load=6000)  # more than the battery can give: the rest comes from the grid
    assert m["batt_p_w"] == pytest.approx(-4000) and b.grid_p_w[0] == pytest.approx(2000)


def test_negative_out_rate_with_discharge_limit_forces_charging_from_the_grid():
    b = make()
    b.set_storage_control(0, 0, out_w_rte_pct=-50.0, stor_ctl_mod=2)  # Fronius "charge from grid" at 50 %
    m = step(b, pv=0, load=500)
    assert m["batt_p_w"] == pytest.approx(2000)  # 50 % of WChaMax
    assert b.grid_p_w[0] == pytest.approx(2500)


def test_negative_in_rate_with_charge_limit_forces_discharging():
    b = make()
    b.set_storage_control(0, 0, in_w_rte_pct=-25.0, stor_ctl_mod=1)
    m = step(b, pv=500, load=0)  # even with 4 kW of PV the battery discharges 1 kW
    assert m["batt_p_w"] == pytest.approx(-1000) and m["p_w"] == pytest.approx(-5000)


def test_positive_limits_only_cap_self_consumption():
    b = make()
    b.set_storage_control(0, 0, in_w_rte_pct=25.0, out_w_rte_pct=10.0, stor_ctl_mod=3)
    assert step(b, pv=500)["batt_p_w"] == pytest.approx(1000)  # surplus 4 kW, charge capped at 1 kW
    assert step(b, t=60, load=3000)["batt_p_w"] == pytest.approx(-400)  # deficit 3 kW, discharge capped
    assert step(b, t=120, pv=100, load=800)["batt_p_w"] == pytest.approx(0)  # balanced: nothing to do


def test_the_family_setpoint_is_a_one_point_window_and_nan_means_self_consumption():
    b = make()
    assert math.isnan(b.setpoints["batt_p_w"][0])
    b.setpoints["batt_p_w"][:] = -1234.0
    m = step(b, pv=500, load=0)
    assert m["batt_p_w"] == pytest.approx(-1234.0)
    assert b.stor_ctl_mod[0] == 3 and b.in_w_rte_pct[0] == pytest.approx(-30.85) and math.isnan(b.setpoints["batt_p_w"][0])
    assert step(b, t=60, pv=0, load=0)["batt_p_w"] == pytest.approx(-1234.0)  # the command holds


def test_revert_timer_returns_to_self_consumption():
    b = make(revert_s=120)
    b.setpoints["batt_p_w"][:] = 2000.0
    assert step(b, t=0, load=0)["batt_p_w"] == pytest.approx(2000)
    assert step(b, t=60, load=0)["batt_p_w"] == pytest.approx(2000)
    m = step(b, t=120, load=0)  # 120 s after the command: limits off, nothing to balance
    assert m["batt_p_w"] == pytest.approx(0) and b.stor_ctl_mod[0] == 0 and b.in_w_rte_pct[0] == 100
    b.set_storage_control(0, 180, stor_ctl_mod=1, in_w_rte_pct=-10.0)  # a new write re-arms the timer
    assert step(b, t=180)["batt_p_w"] == pytest.approx(-400)
    assert step(b, t=240)["batt_p_w"] == pytest.approx(-400)
    assert step(b, t=300)["batt_p_w"] == pytest.approx(0)


def test_revert_zero_means_never():
    b = make(revert_s=0)
    b.setpoints["batt_p_w"][:] = 1000.0
    for k in range(30):
        assert step(b, t=60 * k, dt=60)["batt_p_w"] == pytest.approx(1000)


def test_min_reserve_stops_discharging_also_when_forced():
    b = make(soc_reserve=0.45)
    b.setpoints["batt_p_w"][:] = -4000.0
    step(b, dt=300)  # 333 Wh: 50 % -> 46.67 %
    m = step(b, t=300, dt=300)  # only 167 Wh left above 45 %
    assert m["soc"] == pytest.approx(0.45)
    assert m["batt_p_w"] == pytest.approx(-2000)  # 166.7 Wh in 300 s
    assert m["p_discharge_avail_w"] == 0
    assert step(b, t=600, dt=300)["batt_p_w"] == pytest.approx(0)
    assert b.charge_status()[0] == CHA_ST_EMPTY


def test_without_grid_charging_only_pv_charges():
    b = make(allow_grid_charging=False)
    b.setpoints["batt_p_w"][:] = 3000.0
    assert step(b, pv=100, load=0)["batt_p_w"] == pytest.approx(800)
    b.set_storage_control(0, 60, cha_gri_set=1)
    assert step(b, t=60, pv=100, load=0)["batt_p_w"] == pytest.approx(3000)


def test_full_battery_reports_full_and_no_charge_room():
    b = make(battery={**BATT, "soc_init": 1.0})
    m = step(b, pv=500, load=0)
    assert m["batt_p_w"] == 0 and m["p_charge_avail_w"] == 0 and m["p_w"] == pytest.approx(-4000)
    assert b.charge_status()[0] == CHA_ST_FULL
    m = step(b, t=60, pv=0, load=100)
    assert b.charge_status()[0] != CHA_ST_CHARGING and m["batt_p_w"] == pytest.approx(-100)


def test_invalid_storage_control_changes_nothing():
    b = make()
    for fields in ({"stor_ctl_mod": 4}, {"in_w_rte_pct": 100.01}, {"out_w_rte_pct": -101}, {"min_rsv_pct": -1},
                   {"rvrt_s": 70000}, {"cha_gri_set": 2}, {"stor_ctl_mod": 1, "in_w_rte_pct": float("nan")}):
        with pytest.raises(ValueError):
            b.set_storage_control(0, 0, **fields)
    assert b.stor_ctl_mod[0] == 0 and b.in_w_rte_pct[0] == 100 and b.cha_gri_set[0] == 1


def test_config_rejects_battery_above_the_inverter_rating():
    with pytest.raises(ValueError, match="ac_max_w"):
        FroniusConfig(ac_max_w=3000, battery=BATT)


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.tuples(st.floats(0, 1000), st.floats(-3000, 12000), st.integers(0, 3),
                                st.floats(-100, 100), st.floats(-100, 100), st.floats(0, 100), st.booleans()),
                      min_size=1, max_size=8),
       eta=st.floats(0.8, 1.0))
def test_any_control_keeps_ratings_soc_window_and_energy_balance(steps, eta):
    cfg = FroniusConfig(pv_kwp=8, ac_max_w=8000, eta_inverter=eta,
                        battery={**BATT, "eta_charge": 0.95, "eta_discharge": 0.95, "soc_min": 0.1, "soc_max": 0.9})
    b = FroniusBank([cfg])
    for k, (pv, load, mode, rin, rout, rsv, grid) in enumerate(steps):
        b.set_storage_control(0, 60 * k, stor_ctl_mod=mode, in_w_rte_pct=rin, out_w_rte_pct=rout,
                              min_rsv_pct=rsv, cha_gri_set=int(grid))
        m = step(b, t=60 * k, pv=pv, load=load)
        assert -4000 - 1e-6 <= m["batt_p_w"] <= 4000 + 1e-6
        assert -8000 - 1e-6 <= m["p_w"] <= 8000 + 1e-6
        assert 0.1 - 1e-9 <= m["soc"] <= 0.9 + 1e-9
        assert m["pv_p_w"] <= 1e-9 and m["pv_curtail_w"] >= -1e-9
        assert m["p_w"] == pytest.approx(m["batt_p_w"] + m["pv_p_w"], abs=1e-6)
        if m["batt_p_w"] < -1e-6:  # discharging never goes below the reserve (nor the BMS window)
            assert b.battery.e_wh[0] >= max(0.1, rsv / 100) * 10_000 - 1e-6
        if not grid:
            assert m["batt_p_w"] <= -m["pv_p_w"] + m["pv_curtail_w"] + 1e-6  # charging only from PV


@pytest.mark.parametrize("replace", [False, True])
def test_a_grid_support_setpoint_is_applied_once_whether_written_in_place_or_as_a_new_array(replace):
    bank = make()
    limit = np.array([2000.0])
    if replace:
        bank.setpoints["p_limit_w"] = limit  # a writer that swaps the array still gets its setpoint applied
    else:
        bank.setpoints["p_limit_w"][:] = limit
    assert step(bank, pv=1000.0)["p_w"] == pytest.approx(-2000.0)  # 8 kW PV: 4 kW into the battery, 2 kW out
    assert math.isnan(bank.setpoints["p_limit_w"][0])  # consumed: the next step has no new command
    bank.functions.lim_ena[0] = 0  # a later step without setpoints leaves the functions alone
    assert step(bank, t=60, pv=1000.0)["p_w"] == pytest.approx(-4000.0)
