"""Hybrid inverter physics: AC limit, curtailment, sign convention, energy balance."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.battery.model import BatteryConfig
from devices.pv_battery.model import FAMILY, PvBatteryBank, PvBatteryConfig

BATT = BatteryConfig(capacity_wh=4500, p_charge_max_w=2400, p_discharge_max_w=2400, soc_init=0.5,
                     eta_charge=1.0, eta_discharge=1.0)


def bank(*cfgs):
    return PvBatteryBank(list(cfgs))


def test_pv_producing_is_negative_and_battery_charging_positive():
    b = bank(PvBatteryConfig(pv_kwp=5, ac_max_w=5000, eta_inverter=1.0, battery=BATT))
    b.setpoints["batt_p_w"][:] = 1000
    b.step(0, 60, {"pv_w_per_kwp": np.array([600.0])})
    m = b.measure()
    assert m["pv_p_w"][0] == -3000
    assert m["batt_p_w"][0] == 1000
    assert m["p_w"][0] == -2000  # exporting the rest


def test_ac_limit_curtails_pv_but_honours_the_battery():
    b = bank(PvBatteryConfig(pv_kwp=10, ac_max_w=5000, eta_inverter=1.0, battery=BATT))
    b.setpoints["batt_p_w"][:] = -2000  # discharge while PV is high: PV must give way
    b.step(0, 60, {"pv_w_per_kwp": np.array([800.0])})
    m = b.measure()
    assert m["p_w"][0] == pytest.approx(-5000)
    assert m["batt_p_w"][0] == pytest.approx(-2000)
    assert m["pv_curtail_w"][0] == pytest.approx(8000 - 3000)


def test_no_grid_charging_limits_charge_to_pv():
    b = bank(PvBatteryConfig(pv_kwp=1, ac_max_w=5000, eta_inverter=1.0, allow_grid_charging=False, battery=BATT))
    b.setpoints["batt_p_w"][:] = 2400
    b.step(0, 60, {"pv_w_per_kwp": np.array([500.0])})
    assert b.measure()["batt_p_w"][0] == pytest.approx(500)


def test_pv_only_device_has_no_setpoints_and_nan_soc():
    cfg = PvBatteryConfig(pv_kwp=4, ac_max_w=4000)
    assert FAMILY.capabilities(cfg).setpoints == {}
    b = bank(cfg)
    b.step(0, 60, {"pv_w_per_kwp": np.array([100.0])})
    assert np.isnan(b.measure()["soc"][0])


def test_battery_rating_above_inverter_is_a_config_error():
    with pytest.raises(ValueError, match="ac_max_w"):
        PvBatteryConfig(pv_kwp=4, ac_max_w=1000, battery=BATT)


@settings(max_examples=50, deadline=None)
@given(kwp=st.floats(0, 20), ac=st.floats(1000, 20000), eta=st.floats(0.8, 1.0),
       w=st.lists(st.floats(0, 1100), min_size=5, max_size=5), sp=st.lists(st.floats(-2400, 2400), min_size=5, max_size=5))
def test_ac_power_is_pv_plus_battery_within_rating(kwp, ac, eta, w, sp):
    ac = max(ac, 2400)
    b = bank(PvBatteryConfig(pv_kwp=kwp, ac_max_w=ac, eta_inverter=eta, battery=BATT))
    for wi, si in zip(w, sp):
        b.setpoints["batt_p_w"][:] = si
        b.step(0, 60, {"pv_w_per_kwp": np.array([wi])})
        m = b.measure()
        assert m["p_w"][0] == pytest.approx(m["pv_p_w"][0] + m["batt_p_w"][0], abs=1e-9)
        assert abs(m["p_w"][0]) <= ac + 1e-6
        assert m["pv_curtail_w"][0] >= -1e-9
        assert -m["pv_p_w"][0] + m["pv_curtail_w"][0] == pytest.approx(kwp * wi * eta, abs=1e-6)
        assert 0.05 - 1e-12 <= m["soc"][0] <= 0.95 + 1e-12
