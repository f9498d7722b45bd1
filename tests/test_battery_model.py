"""Battery physics: SoC window and energy conservation across efficiency losses (hypothesis)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.battery.model import BatteryBank, BatteryConfig

configs = st.builds(
    lambda cap, pc, pd, ec, ed, lo, span, init, sd: BatteryConfig(
        capacity_wh=cap, p_charge_max_w=pc, p_discharge_max_w=pd, eta_charge=ec, eta_discharge=ed,
        soc_min=lo, soc_max=min(lo + span, 1.0), soc_init=lo + init * (min(lo + span, 1.0) - lo),
        self_discharge_per_day=sd),
    st.floats(500, 200_000), st.floats(100, 50_000), st.floats(100, 50_000), st.floats(0.7, 1.0),
    st.floats(0.7, 1.0), st.floats(0.0, 0.4), st.floats(0.1, 0.6), st.floats(0, 1), st.floats(0, 0.05))


@settings(max_examples=60, deadline=None)
@given(cfgs=st.lists(configs, min_size=1, max_size=4), data=st.data(), dt_s=st.sampled_from([1, 60, 900, 3600]))
def test_soc_bounds_and_energy_balance(cfgs, data, dt_s):
    bank = BatteryBank(cfgs)
    e0 = bank.e_wh.copy()
    charged = np.zeros(bank.n)  # AC energy into the battery, Wh (+ charge)
    losses = np.zeros(bank.n)
    for _ in range(30):
        req = np.array(data.draw(st.lists(st.floats(-80_000, 80_000), min_size=bank.n, max_size=bank.n)))
        step = bank.step(dt_s, req)
        h = dt_s / 3600
        # never more than the rating, never the opposite direction of the request
        assert np.all(step.p_w <= bank.p_charge_max_w + 1e-9)
        assert np.all(step.p_w >= -bank.p_discharge_max_w - 1e-9)
        assert np.all(step.p_w * req >= 0)
        assert np.all(step.loss_w >= -1e-9)
        charged += step.p_w * h
        losses += (step.loss_w + step.self_discharge_w) * h
        assert np.all(bank.e_wh >= bank.e_min_wh - 1e-9)
        assert np.all(bank.e_wh <= bank.e_max_wh + 1e-9)
    # stored energy change = AC energy in - conversion losses - self-discharge
    np.testing.assert_allclose(bank.e_wh - e0, charged - losses, atol=1e-6 * bank.capacity_wh.max())


def test_round_trip_efficiency_is_the_product():
    cfg = BatteryConfig(capacity_wh=10_000, p_charge_max_w=5000, p_discharge_max_w=5000, eta_charge=0.9,
                        eta_discharge=0.8, soc_min=0.0, soc_max=1.0, soc_init=0.0)
    bank = BatteryBank([cfg])
    e_in = 0.0
    while bank.soc[0] < 1.0 - 1e-12:
        e_in += bank.step(60, np.array([5000.0])).p_w[0] / 60
    e_out = 0.0
    while bank.soc[0] > 1e-12:
        e_out -= bank.step(60, np.array([-5000.0])).p_w[0] / 60
    assert e_out / e_in == pytest.approx(0.72, rel=1e-9)


def test_full_battery_takes_no_charge_and_reports_zero_available():
    cfg = BatteryConfig(capacity_wh=1000, p_charge_max_w=500, p_discharge_max_w=500, soc_max=0.9, soc_init=0.9)
    bank = BatteryBank([cfg])
    charge, discharge = bank.available_w(60)
    assert charge[0] == 0 and discharge[0] == 500
    assert bank.step(60, np.array([500.0])).p_w[0] == 0


def test_self_discharge_stops_at_soc_min():
    cfg = BatteryConfig(capacity_wh=1000, p_charge_max_w=500, p_discharge_max_w=500, soc_min=0.2, soc_init=0.25,
                        self_discharge_per_day=0.5)
    bank = BatteryBank([cfg])
    for _ in range(24 * 10):
        bank.step(3600, np.array([0.0]))
    assert bank.soc[0] == pytest.approx(0.2)


def test_invalid_window_is_rejected():
    with pytest.raises(ValueError, match="soc_min"):
        BatteryConfig(capacity_wh=1000, p_charge_max_w=1, p_discharge_max_w=1, soc_min=0.9, soc_max=0.5,
                      soc_init=0.6)
