"""Grid-support functions of the PV inverters (devices/pv/functions.py) and the `pv` family's physics."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import registry
from devices.base import Limit, Setpoint, SetpointRejected
from devices.pv.functions import (
    TAN_PHI_MAX,
    InverterControls,
    VoltVarCurve,
    VoltWattCurve,
    pf_from_tan_phi,
    setpoint_rules,
    tan_phi_from_pf,
)
from devices.pv.model import PvBank, PvConfig

FAM = registry.family("pv")
SUN = {"pv_w_per_kwp": np.array([1000.0])}


def bank(**controls) -> PvBank:
    controls.setdefault("step_gain_max", 1.0)  # the curves' static response; the sampled-loop damping is tested apart
    return PvBank([PvConfig(pv_kwp=6, ac_max_w=6000, controls=InverterControls(**controls))])


def step(b: PvBank, t: int, v: float = 1.0, w_per_kwp: float = 1000.0, dt: int = 60) -> dict:
    b.step(t, dt, {"pv_w_per_kwp": np.array([w_per_kwp]), "v_pu": np.array([v])})
    return {k: float(a[0]) for k, a in b.measure().items()}


def test_without_functions_the_inverter_converts_all_it_can():
    m = step(bank(), 0)
    assert m["p_w"] == pytest.approx(-5820) and m["q_var"] == 0 and m["pv_curtail_w"] == 0
    assert m["pv_p_w"] == m["p_w"] and m["v_v"] == 230.0


def test_volt_watt_follows_ieee_1547_category_b():
    b = bank(volt_watt=VoltWattCurve(enabled=True, response_s=0))
    for v, cap in ((1.05, 6000), (1.06, 6000), (1.08, 3600), (1.10, 1200), (1.15, 1200)):
        m = step(b, 0, v)
        assert -m["p_w"] == pytest.approx(min(cap, 5820)), v
        assert m["pv_curtail_w"] == pytest.approx(5820 - min(cap, 5820))  # energy balance of the PV side


def test_volt_var_signs_and_reactive_priority():
    b = bank(volt_var=VoltVarCurve(enabled=True, response_s=0))
    m = step(b, 0, 1.10)
    assert m["q_var"] == pytest.approx(0.44 * 6000)  # absorbing at high voltage: + in the load arrow
    assert m["p_w"] ** 2 + m["q_var"] ** 2 <= 6000**2 + 1e-6  # S rating holds, Q first
    assert -m["p_w"] == pytest.approx(math.sqrt(6000**2 - (0.44 * 6000) ** 2))
    m = step(b, 60, 0.90)
    assert m["q_var"] == pytest.approx(-0.44 * 6000)  # injecting at low voltage
    m = step(b, 120, 1.0)
    assert m["q_var"] == 0.0


def test_response_is_a_first_order_lag_reaching_95_percent_at_the_response_time():
    b = bank(volt_var=VoltVarCurve(enabled=True, response_s=60))
    m = step(b, 0, 1.10, dt=60)
    assert m["q_var"] == pytest.approx(0.95 * 0.44 * 6000, rel=1e-3)


def test_power_limit_ramps_linearly_and_reverts_to_the_start_up_setting():
    b = bank(p_limit_ramp_s=120, revert_s=300)
    b.setpoints["p_limit_w"][0] = 3000.0
    m = step(b, 0)  # mid-step of a 120 s ramp from 100 % to 50 %: 87.5 %
    assert -m["p_w"] == pytest.approx(min(5820, 0.875 * 6000))
    m = step(b, 60)  # mid-step at 90 s: 62.5 %
    assert -m["p_w"] == pytest.approx(0.625 * 6000)
    m = step(b, 120)
    assert -m["p_w"] == pytest.approx(3000) and m["pv_curtail_w"] == pytest.approx(2820)
    m = step(b, 300)  # the revert timer runs out at 300 s: back to no limit, ramping up again
    assert b.functions.lim_ena[0] == 0 and -m["p_w"] > 3000


def test_fixed_power_factor_and_disconnect():
    b = bank()
    b.setpoints["tan_phi"][0] = 0.3  # absorbing
    m = step(b, 0)
    assert m["q_var"] == pytest.approx(0.3 * -m["p_w"])
    assert b.functions.pf[0] == pytest.approx(-1 / math.sqrt(1.09))  # under-excited: negative power factor
    b.setpoints["conn"][0] = 0
    m = step(b, 60)
    assert m["p_w"] == 0 and m["q_var"] == 0 and m["pv_curtail_w"] == pytest.approx(5820)


@given(st.floats(-TAN_PHI_MAX, TAN_PHI_MAX))
def test_tan_phi_and_power_factor_convert_both_ways(t):
    pf = pf_from_tan_phi(t)
    assert 0.8 - 1e-12 <= abs(pf) <= 1.0
    assert tan_phi_from_pf(pf) == pytest.approx(t, abs=1e-7)  # cos near 1 loses digits of sin


def test_refused_setpoints_name_what_is_wrong():
    caps = FAM.capabilities(PvConfig(pv_kwp=6, ac_max_w=6000))
    for values, text in (({"p_limit_w": 6001}, "outside"), ({"conn": 0.5}, "whole"),
                         ({"tan_phi": 0.9}, "outside"), ({"vw_v1_pu": 1.05}, "whole"),
                         ({"vw_v1_pu": 1.10, "vw_v2_pu": 1.06, "vw_p1_pct": 100, "vw_p2_pct": 0}, "rise"),
                         ({"vw_v1_pu": 1.05, "vw_v2_pu": 1.10, "vw_p1_pct": 0, "vw_p2_pct": 100}, "rise")):
        with pytest.raises(SetpointRejected, match=text):
            caps.check(Setpoint(values))
    caps.check(Setpoint({"vv_v1_pu": 0.9, "vv_v2_pu": 0.97, "vv_v3_pu": 1.03, "vv_v4_pu": 1.1, "vv_q1_pct": -30,
                         "vv_q2_pct": 0, "vv_q3_pct": 0, "vv_q4_pct": 30, "vv_ena": 1}))
    assert Limit(0, 1, integer=True).integer


def test_a_curve_written_through_setpoints_replaces_the_start_up_curve():
    b = bank(volt_watt=VoltWattCurve(enabled=False, response_s=0))
    for name, value in {"vw_v1_pu": 1.02, "vw_v2_pu": 1.04, "vw_p1_pct": 100, "vw_p2_pct": 0, "vw_ena": 1}.items():
        b.setpoints[name][0] = value
    m = step(b, 0, 1.03)
    assert -m["p_w"] == pytest.approx(3000)
    assert np.isnan(b.setpoints["vw_ena"][0])  # consumed: a command, not a state


def test_enabling_volt_var_ends_the_fixed_power_factor_and_back():
    b = bank(volt_var=VoltVarCurve(response_s=0))
    b.setpoints["tan_phi"][0] = 0.2
    step(b, 0)
    b.setpoints["vv_ena"][0] = 1
    step(b, 60, 1.1)
    assert b.functions.pf_ena[0] == 0 and b.functions.vv_ena[0] == 1
    b.setpoints["tan_phi"][0] = 0.1
    step(b, 120, 1.1)
    assert b.functions.pf_ena[0] == 1 and b.functions.vv_ena[0] == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.85, 1.15), min_size=4, max_size=4, unique=True),
       st.lists(st.floats(-100, 100), min_size=4, max_size=4), st.floats(0.8, 1.2))
def test_any_valid_volt_var_curve_keeps_q_within_the_curve_and_the_rating(vs, qs, v):
    vs = sorted(vs)
    if min(np.diff(vs)) < 1e-3:
        return
    b = bank(volt_var=VoltVarCurve(enabled=True, v_pu=tuple(vs), q_pct=tuple(qs), response_s=0))
    m = step(b, 0, v)
    expected = np.interp(v, vs, qs) / 100 * 6000
    assert m["q_var"] == pytest.approx(expected, abs=1e-6)
    assert m["p_w"] ** 2 + m["q_var"] ** 2 <= 6000**2 * (1 + 1e-9)
    assert m["pv_curtail_w"] >= -1e-9 and m["pv_curtail_w"] - m["p_w"] == pytest.approx(5820)


def test_setpoint_rules_pass_writes_without_curves():
    setpoint_rules({"p_limit_w": 1.0, "vv_ena": 1})


def test_the_sampled_loop_converges_to_the_continuous_equilibrium_on_a_weak_feeder():
    """v = v0 + s * p_w with a collective loop gain of ~4: undamped the loop flips every step, damped it settles
    where the curve and the grid meet."""
    def run(gain: float) -> list[float]:
        b = PvBank([PvConfig(pv_kwp=6, ac_max_w=6000, controls=InverterControls(
            step_gain_max=gain, volt_watt=VoltWattCurve(enabled=True, response_s=10)))])
        v, out = 1.0, []
        for k in range(40):
            m = step(b, 60 * k, v)
            v = 1.06 - 0.0000267 * m["p_w"]  # ~0.155 pu at 5.8 kW: the phase's inverters together
            out.append(v)
        return out

    flipping = run(1.0)
    assert abs(flipping[-1] - flipping[-2]) > 0.02  # the limit cycle of an undamped sampled loop
    settled = run(0.3)
    assert abs(settled[-1] - settled[-2]) < 1e-6
    p_cap = (100 - (settled[-1] - 1.06) / 0.04 * 80) / 100 * 6000  # on the curve at the voltage it causes
    assert settled[-1] == pytest.approx(1.06 + 0.0000267 * min(p_cap, 5820), abs=1e-6)
