"""Wallbox + EV physics: exact CC-CV integration, limits, sessions and status codes."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices import registry
from devices.base import Limit
from devices.wallbox.model import (AVAILABLE, CHARGING, ENV_INPUTS, FAULTED, FINISHING, PREPARING, SUSPENDED_EV,
                                   SUSPENDED_EVSE, WallboxBank, WallboxConfig, charge_exact, status_name)


def env(**kw) -> dict[str, np.ndarray]:
    out = {k: np.zeros(1) for k in ENV_INPUTS}
    out.update({k: np.array([float(v)]) for k, v in kw.items()})
    return out


EV = dict(ev_plugged=1, ev_id=1, ev_soc_arrival=0.2, ev_capacity_wh=50_000, ev_p_max_w=11_000, ev_phases=3)


def test_family_is_registered_with_limits_and_env_contract():
    fam = registry.family("wallbox")
    assert fam.setpoints == ("p_max_w", "i_max_a")
    assert set(ENV_INPUTS) <= set(fam.input_names)
    caps = fam.capabilities(fam.parse_config({"max_current_a": 16, "phases": 1}))
    assert caps.setpoints["p_max_w"] == Limit(0.0, 16 * 230.0)
    assert caps.setpoints["i_max_a"] == Limit(0.0, 16.0)
    assert fam.safe_setpoint == {"p_max_w": 0.0}
    assert {"ocpp16", "ocpp201"} <= set(registry.known_schemes())


def test_uncontrolled_ev_charges_at_its_onboard_limit_and_the_register_counts():
    bank = WallboxBank([WallboxConfig()])
    bank.step(0, 3600, env(**EV))
    m = bank.measure()
    assert m["p_w"][0] == pytest.approx(11_000)
    assert m["e_wh"][0] == pytest.approx(11_000) and m["e_session_wh"][0] == pytest.approx(11_000)
    assert m["soc"][0] == pytest.approx(0.2 + 11_000 * 0.92 / 50_000)
    assert m["i_a"][0] == pytest.approx(11_000 / 230 / 3)
    assert m["status"][0] == CHARGING and m["connected"][0] == 1 and m["session_active"][0] == 1
    assert m["q_var"][0] == 0


def test_power_limit_current_limit_and_minimum_current():
    bank = WallboxBank([WallboxConfig()])
    bank.setpoints["p_max_w"][:] = 5000
    bank.step(0, 60, env(**EV))
    assert bank.measure()["p_w"][0] == pytest.approx(5000)
    bank.setpoints["p_max_w"][:] = 22_080
    bank.setpoints["i_max_a"][:] = 8
    bank.step(60, 60, env(**EV))
    assert bank.measure()["p_w"][0] == pytest.approx(8 * 230 * 3)
    bank.setpoints["i_max_a"][:] = 5.9  # below the IEC 61851 minimum: the EVSE pauses
    bank.step(120, 60, env(**EV))
    m = bank.measure()
    assert m["p_w"][0] == 0 and m["status"][0] == SUSPENDED_EVSE and m["p_max_w"][0] == 0


def test_single_phase_ev_on_a_three_phase_box_uses_l1_only():
    bank = WallboxBank([WallboxConfig()])
    bank.setpoints["p_max_w"][:] = 4600
    bank.step(0, 60, env(**{**EV, "ev_phases": 1, "ev_p_max_w": 7400}))
    m = bank.measure()
    assert m["p_w"][0] == pytest.approx(4600)
    assert m["i_l1_a"][0] == pytest.approx(20) and m["i_l2_a"][0] == 0 and m["i_l3_a"][0] == 0


def test_energy_wanted_stops_the_ev_and_unplug_ends_the_session():
    bank = WallboxBank([WallboxConfig()])
    bank.step(0, 3600, env(**EV, ev_energy_wanted_wh=4000))
    m = bank.measure()
    assert m["e_session_wh"][0] == pytest.approx(4000)
    assert m["p_w"][0] == pytest.approx(4000)  # mean over the hour
    assert m["status"][0] == SUSPENDED_EV
    bank.step(3600, 60, env())
    m = bank.measure()
    assert m["status"][0] == AVAILABLE and m["connected"][0] == 0 and m["session_active"][0] == 0
    assert math.isnan(m["soc"][0]) and m["e_session_wh"][0] == pytest.approx(4000)  # last session kept


def test_a_new_ev_id_while_plugged_starts_a_new_session():
    bank = WallboxBank([WallboxConfig()])
    bank.step(0, 600, env(**EV))
    started, ended = bank.apply_env(600, env(**{**EV, "ev_id": 2}))
    assert started[0] and ended[0] and bank.sessions[0] == 2 and bank.e_session_wh[0] == 0


def test_remote_authorization_fault_and_finishing():
    bank = WallboxBank([WallboxConfig(auto_start=False)])
    bank.step(0, 60, env(**EV))
    assert bank.status[0] == PREPARING and bank.measure()["p_w"][0] == 0
    assert bank.remote_start(0)
    bank.step(60, 60, env(**EV))
    assert bank.status[0] == CHARGING and bank.measure()["p_w"][0] > 0
    assert bank.remote_stop(0)
    bank.step(120, 60, env(**EV))
    assert bank.status[0] == FINISHING and bank.measure()["p_w"][0] == 0
    bank.set_fault(0, True)
    assert bank.status[0] == FAULTED and status_name(bank.status[0]) == "Faulted"


def test_taper_above_cv_soc():
    cfg = WallboxConfig(cv_soc=0.8, taper_floor=0.1)
    bank = WallboxBank([cfg])
    bank.step(0, 60, env(**{**EV, "ev_soc_arrival": 0.9}))
    # at 90 % the taper allows (1-0.9)/(1-0.8) = half of 11 kW (a bit less by the end of the minute)
    assert 5000 < bank.measure()["p_w"][0] < 5500


@settings(max_examples=60, deadline=None)
@given(soc=st.floats(0.0, 0.999), cap=st.floats(5_000, 100_000), p_cap=st.floats(0, 25_000),
       p_ev=st.floats(1_000, 22_000), cv=st.floats(0.5, 0.95), wanted=st.floats(0, 150_000),
       n=st.integers(1, 12))
def test_integration_is_exact_bounded_and_step_size_independent(soc, cap, p_cap, p_ev, cv, wanted, n):
    args = dict(cv_soc=np.array([cv]), floor=np.array([0.1]), cap_wh=np.array([cap]), eff=np.array([0.9]))
    e1, s1 = charge_exact(np.array([soc]), np.array([wanted]), np.array([p_cap]), np.array([p_ev]), dt_s=3600, **args)
    s, left, total = np.array([soc]), np.array([wanted]), 0.0
    for _ in range(n):
        e, s = charge_exact(s, left, np.array([p_cap]), np.array([p_ev]), dt_s=3600 / n, **args)
        left = left - e
        total += float(e[0])
    assert total == pytest.approx(float(e1[0]), rel=1e-6, abs=1e-6)
    assert float(s[0]) == pytest.approx(float(s1[0]), rel=1e-9, abs=1e-9)
    assert 0 <= e1[0] <= min(p_cap, p_ev) * 1.0 + 1e-6  # never above the limits over one hour
    assert e1[0] <= wanted + 1e-6
    assert soc - 1e-12 <= s1[0] <= 1.0 + 1e-12
    assert float(s1[0]) == pytest.approx(soc + float(e1[0]) * 0.9 / cap, abs=1e-9)  # energy balance
