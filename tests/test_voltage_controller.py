"""LiBal site controller: curve points, deadband, ramp and first-order limits, availability, closed loop."""

import numpy as np
import pytest

from controllers.voltage import Curve, VoltageParams, VoltageSim, VoltVarWatt


def test_curve_points_and_deadband():
    c = Curve(v1=0.92, v2=0.98, v3=1.02, v4=1.08, low=0.44, high=0.44)
    v = np.array([0.85, 0.92, 0.95, 0.98, 1.0, 1.02, 1.05, 1.08, 1.2])
    assert np.allclose(c(v), [-0.44, -0.44, -0.22, 0.0, 0.0, 0.0, 0.22, 0.44, 0.44])
    assert np.all(c(np.linspace(0.98, 1.02, 11)) == 0.0)  # deadband
    with pytest.raises(ValueError):
        Curve(v1=1.0, v2=0.98)


def test_targets_follow_the_load_sign_convention():
    ctl = VoltVarWatt(VoltageParams(response="none"), 10000, 8000, 12000)
    p, q = ctl.target([1.10, 0.88, 1.0])
    assert p[0] == pytest.approx(10000) and p[1] == pytest.approx(-8000) and p[2] == 0  # high V: charge
    assert q[0] == pytest.approx(0.44 * 12000) and q[1] == pytest.approx(-0.44 * 12000)  # high V: absorb


def test_ramp_limit():
    ctl = VoltVarWatt(VoltageParams(response="ramp", ramp_w_per_s=50, ramp_var_per_s=20), 10000, 10000, 20000)
    p, q = ctl.step([1.10], 60)
    assert p[0] == pytest.approx(3000) and q[0] == pytest.approx(1200)
    p, q = ctl.step([1.10], 60)
    assert p[0] == pytest.approx(6000) and q[0] == pytest.approx(2400)
    p, q = ctl.step([1.00], 60)  # back in the deadband: ramps down, not a jump
    assert p[0] == pytest.approx(3000) and q[0] == pytest.approx(1200)


def test_first_order_response():
    ctl = VoltVarWatt(VoltageParams(response="first_order", tau_s=60.0), 10000, 10000, 20000)
    p, _ = ctl.step([1.10], 60)
    assert p[0] == pytest.approx(10000 * (1 - np.exp(-1)))


def test_limits_available_power_and_pcs_rating():
    ctl = VoltVarWatt(VoltageParams(response="none"), 10000, 10000, 11000)
    p, q = ctl.step([1.2], 60, p_charge_avail_w=[4000.0], p_discharge_avail_w=[10000.0])
    assert p[0] == pytest.approx(4000)
    p, q = ctl.step([1.2], 60)
    assert p[0] == pytest.approx(10000) and q[0] == pytest.approx(np.sqrt(11000**2 - 10000**2))


def test_nan_voltage_holds_the_last_setpoints():
    ctl = VoltVarWatt(VoltageParams(response="none"), 10000, 10000, 20000)
    ctl.step([1.1], 60)
    p, _q = ctl.step([np.nan], 60)
    assert p[0] == pytest.approx(10000)


@pytest.mark.parametrize("response", ["ramp", "first_order"])
def test_closed_loop_moves_the_voltage_towards_the_band(response):
    """A linear grid: v = v0 + s_p p + s_q q (p, q in kW / kvar, load sign). Starting far above the band,
    the controlled voltage ends closer to the band than without control and never overshoots below it."""
    s_p, s_q = -0.0008, -0.0015  # per kW / kvar drawn
    v0 = 1.09
    ctl = VoltVarWatt(VoltageParams(response=response, ramp_w_per_s=20, ramp_var_per_s=20, tau_s=120),
                      30000, 30000, 40000)
    p = q = 0.0
    vs = []
    for _ in range(120):
        v = v0 + s_p * p / 1e3 + s_q * q / 1e3  # measured at t, set-points apply from t + step
        vs.append(v)
        (p,), (q,) = ctl.step([v], 60)
    # the steady state of the droop curves on this grid (fixed point, by bisection)
    lo, hi = 1.03, v0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        pt, qt = VoltVarWatt(VoltageParams(response="none"), 30000, 30000, 40000).target([mid])
        lo, hi = (mid, hi) if v0 + s_p * pt[0] / 1e3 + s_q * qt[0] / 1e3 > mid else (lo, mid)
    v_star = 0.5 * (lo + hi)
    assert vs[-1] < v0 - 0.01
    assert vs[-1] >= 1.03 - 1e-9  # a proportional curve stops at its deadband edge, never beyond
    assert abs(vs[-1] - v_star) < 1e-5  # settled
    assert min(vs) >= v_star - 5e-4  # the response limit keeps any overshoot below 0.05 %


def test_fast_response_with_a_stiff_grid_still_settles():
    """Loop gain near 1 and one step of delay: damped oscillation, but it settles."""
    s_p, s_q, v0 = -0.0008, -0.0015, 1.09
    ctl = VoltVarWatt(VoltageParams(response="none"), 30000, 30000, 40000)
    p = q = 0.0
    vs = []
    for _ in range(200):
        v = v0 + s_p * p / 1e3 + s_q * q / 1e3
        vs.append(v)
        (p,), (q,) = ctl.step([v], 60)
    assert abs(vs[-1] - vs[-2]) < 1e-6 and 1.03 <= vs[-1] < v0


def test_mosaik_simulator_groups_and_steps():
    sim = VoltageSim()
    sim.init("V", step_size=60)
    params = VoltageParams(response="none").model_dump()
    a, b = (sim.create(1, "VoltVarWatt", params=params, p_charge_max_w=1000, p_discharge_max_w=1000,
                       s_max_va=2000)[0]["eid"] for _ in range(2))
    sim.setup_done()
    sim.step(0, {a: {"v_pu": {"g": 1.2}}, b: {"v_pu": {"g": 0.8}, "p_discharge_avail_w": {"d": 300.0}}}, 600)
    out = sim.get_data({a: ["p_w", "q_var", "v_seen_pu"], b: ["p_w"]})
    assert out[a]["p_w"] == pytest.approx(1000) and out[a]["v_seen_pu"] == 1.2
    assert out[b]["p_w"] == pytest.approx(-300)
