"""Energy Router physics: DC bus balance to rounding, modes and controls, black start and its timing, trips."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devices import registry
from devices.energy_router.model import (AC_RAMP, DC_ON, GRID, ISLAND, OFF, PRECHARGE, RESYNC, EnergyRouterBank,
                                         EnergyRouterConfig)

FAMILY = registry.family("energy_router")


def bank(n: int = 1, **cfg) -> EnergyRouterBank:
    return EnergyRouterBank([EnergyRouterConfig(**cfg) for _ in range(n)])


def env(pv=0.0, dc=100.0, ac=0.0, grid=1.0) -> dict[str, np.ndarray]:
    return {"pv_w_per_kwp": np.array([pv]), "dc_load_w": np.array([dc]), "ac_load_w": np.array([ac]),
            "grid_present": np.array([grid])}


def test_family_is_registered_injects_its_grid_port_and_reads_the_site_pv():
    assert FAMILY.name == "energy_router" and FAMILY.battery_setpoint == "batt_p_w"
    assert {"iec61850"} == set(FAMILY.drivers) == set(FAMILY.virtual)
    assert FAMILY.injects is True and {"p_w", "q_var"} <= set(FAMILY.measurements)
    assert [(i.name, i.source, i.required) for i in FAMILY.inputs] == [
        ("pv_w_per_kwp", "site.pv_w_per_kwp", False), ("dc_load_demand_w", "site.dc_load_p_w", False),
        ("grid_available", "point.grid_present", False)]  # the Bucharest pilot's sources (issue 14)


# -- DC bus balance under anything ---------------------------------------------------------------------------
step_inputs = st.fixed_dictionaries({
    "pv": st.floats(0, 1100), "dc": st.floats(0, 3000), "ac": st.floats(0, 4000), "grid": st.sampled_from([0.0, 1.0]),
    "dt": st.sampled_from([1, 7, 60, 900]),
    "sp": st.dictionaries(st.sampled_from(["mode", "control", "batt_p_w", "p_w", "q_var", "pf", "pv_limit_w",
                                           "link_p_w", "p_limit_w"]), st.floats(-1, 1), max_size=4),
})
LIMITS = FAMILY.capabilities(EnergyRouterConfig()).setpoints


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step_inputs, min_size=1, max_size=25), st.floats(0.8, 1.0), st.floats(0.11, 0.94))
def test_dc_bus_balances_to_rounding_and_soc_stays_in_its_window(steps, eta, soc0):
    b = bank(eta_inverter=eta, eta_mppt=eta, eta_dcdc=eta, eta_link=eta,
             battery={"capacity_wh": 2000, "p_charge_max_w": 2500, "p_discharge_max_w": 2500, "soc_init": soc0})
    t = 0
    for s in steps:
        for name, u in s["sp"].items():  # a fraction of the way through the setpoint's accepted range
            lim = LIMITS[name]
            value = lim.min + (u + 1) / 2 * (lim.max - lim.min)
            b.setpoints[name][0] = round(value) if name in ("mode", "control") else value
        b.step(t, s["dt"], env(s["pv"], s["dc"], s["ac"], s["grid"]))
        t += s["dt"]
        m = b.measure()
        scale = 1.0 + s["pv"] * 2 + s["dc"] + s["ac"] + 3000
        assert abs(b.dc_imbalance_w()[0]) <= 1e-9 * scale
        assert 0.05 - 1e-9 <= m["soc"][0] <= 0.95 + 1e-9  # the test battery's window
        assert m["unserved_w"][0] >= -1e-9 and m["pv_curtail_w"][0] >= -1e-9 and m["loss_w"][0] >= -1e-9
        assert m["dc_load_w"][0] <= s["dc"] + 1e-9
        if m["state"][0] not in (GRID, OFF, PRECHARGE) or s["grid"] == 0:
            assert m["p_w"][0] == 0.0  # islanded or without a grid nothing flows at the grid port
        assert m["v_dc_min_v"][0] <= m["v_dc_v"][0] + 1e-9 <= m["v_dc_max_v"][0] + 2e-9
        assert m["v_dc_max_v"][0] <= 400 * 1.1 + 1e-9


# -- grid-connected controls ------------------------------------------------------------------------------------
def test_self_consumption_holds_the_grid_port_at_zero():
    b = bank()
    b.step(0, 60, env(pv=500, dc=300, ac=400))
    m = b.measure()
    assert m["p_w"][0] == pytest.approx(0.0, abs=1e-9)
    assert m["batt_p_w"][0] != 0.0 and m["state"][0] == GRID


def test_battery_setpoint_is_followed_and_the_inverter_balances():
    b = bank()
    b.setpoints["batt_p_w"][0] = 1500.0
    b.step(0, 60, env(pv=0, dc=100))
    m = b.measure()
    assert m["batt_p_w"][0] == pytest.approx(1500.0) and m["control"][0] == 1
    assert m["p_w"][0] == pytest.approx((1500 + 100 + 10) / 0.96)  # battery + DC load + aux through the inverter


def test_grid_port_setpoint_is_followed_by_the_battery_and_the_limit_caps_it():
    b = bank()
    b.setpoints["p_w"][0] = -1200.0
    b.step(0, 60, env(pv=0, dc=0, ac=200))
    assert b.measure()["p_w"][0] == pytest.approx(-1200.0)
    b.setpoints["p_limit_w"][0] = 800.0
    b.step(60, 60, env(pv=0, dc=0, ac=200))
    assert b.measure()["p_w"][0] == pytest.approx(-800.0)
    b.setpoints["control"][0] = 0
    b.step(120, 60, env(pv=0, dc=0, ac=200))
    assert b.measure()["p_w"][0] == pytest.approx(0.0, abs=1e-9)


def test_reactive_power_by_setpoint_and_by_power_factor_within_the_s_rating():
    b = bank()
    b.setpoints["q_var"][0] = 500.0
    b.step(0, 60, env())
    assert b.measure()["q_var"][0] == pytest.approx(500.0)
    b.setpoints["batt_p_w"][0] = 2000.0
    b.setpoints["pf"][0] = 0.5  # q = p * tan(acos 0.5) would exceed the S circle: capped there
    b.step(60, 60, env())
    m = b.measure()
    inv_ac = m["p_w"][0]
    assert m["q_var"][0] == pytest.approx(np.sqrt(3300 ** 2 - inv_ac ** 2))


def test_modes_rppt_limits_pv_pv_off_stops_it_and_curtailment_is_reported():
    b = bank(pv_kwp=2.0)
    b.setpoints["mode"][0] = 2
    b.setpoints["pv_limit_w"][0] = 300.0
    b.step(0, 60, env(pv=800))
    m = b.measure()
    assert m["pv_p_w"][0] == pytest.approx(-300.0)
    assert m["pv_curtail_w"][0] == pytest.approx(1600 * 0.98 - 300)
    b.setpoints["mode"][0] = 4
    b.step(60, 60, env(pv=800))
    assert b.measure()["pv_p_w"][0] == 0.0


# -- islanding, black start, resynchronisation ----------------------------------------------------------------
def test_outage_islands_at_once_and_the_island_is_supplied_from_the_battery():
    b = bank()
    b.step(0, 60, env(pv=0, dc=100, ac=300, grid=0))
    m = b.measure()
    assert m["state"][0] == ISLAND and m["p_w"][0] == 0.0
    assert m["ac_load_w"][0] == pytest.approx(300.0) and m["dc_load_w"][0] == pytest.approx(100.0)
    assert m["batt_p_w"][0] == pytest.approx(-(100 + 10 + 300 / 0.96))
    assert m["unserved_w"][0] == 0.0 and 360 <= m["v_dc_v"][0] <= 440


def test_black_start_sequence_and_its_timing_in_one_second_steps():
    b = bank(ac_load_w=200)
    b.state[0] = OFF  # a de-energised ER during an outage
    seen = []
    for t in range(200):
        b.step(t, 1, env(dc=100, ac=200, grid=1.0 if t >= 100 else 0.0))
        m = b.measure()
        seen.append((int(m["state"][0]), m["dc_load_w"][0], m["ac_load_w"][0]))
    states = [s for s, _, _ in seen]
    # precharge 5 s, DC bus on 2 s, AC ramp 3 s, island; the grid back at 100 s: resync 60 s, then the relay closes
    assert states[:4] == [PRECHARGE] * 4 and states[4] == DC_ON  # the state at the end of each second
    assert states.index(AC_RAMP) == 6 and states.index(ISLAND) == 9
    assert states[100] == RESYNC and states[158] == RESYNC and states[159] == GRID
    assert all(dc == 0 for _, dc, _ in seen[:5]) and all(dc == pytest.approx(100) for _, dc, _ in seen[5:])
    assert all(ac == 0 for _, _, ac in seen[:10]) and all(ac == pytest.approx(200) for _, _, ac in seen[10:])


def test_black_start_timing_holds_at_any_step_size():
    fine, coarse = bank(), bank()
    fine.state[0] = coarse.state[0] = OFF
    for t in range(60):
        fine.step(t, 1, env(dc=100, ac=200, grid=0))
    coarse.step(0, 60, env(dc=100, ac=200, grid=0))
    for name in ("e_unserved_wh", "soc", "state"):
        assert coarse.measure()[name][0] == pytest.approx(fine.measure()[name][0], rel=1e-9)
    assert fine.measure()["e_unserved_wh"][0] == pytest.approx((5 * 100 + 10 * 200) / 3600)


def test_an_empty_battery_trips_the_island_and_the_grid_restarts_the_er():
    b = bank(battery={"capacity_wh": 100, "p_charge_max_w": 500, "p_discharge_max_w": 500, "soc_init": 0.12})
    for k in range(20):
        b.step(60 * k, 60, env(dc=100, ac=0, grid=0))
        if b.measure()["state"][0] == OFF:
            break
    m = b.measure()
    assert m["trips"][0] >= 1 and m["state"][0] == OFF and m["unserved_w"][0] > 0
    assert m["soc"][0] == pytest.approx(0.05)  # the battery's own floor (BatteryConfig's default soc_min)
    b.step(1200, 60, env(dc=100, grid=0))  # below black_start_soc_min: stays down
    assert b.measure()["state"][0] == OFF
    b.step(1260, 60, env(dc=100, grid=1))  # the grid precharges the bus and the ER is grid-connected again
    m = b.measure()
    assert m["state"][0] == GRID and m["dc_load_w"][0] == pytest.approx(100 * 55 / 60)


def test_a_full_battery_in_island_curtails_pv_as_the_last_resort():
    b = bank(battery={"capacity_wh": 1000, "p_charge_max_w": 500, "p_discharge_max_w": 500, "soc_init": 0.95,
                      "soc_max": 0.95})
    b.step(0, 60, env(pv=1000, dc=100, ac=0, grid=0))
    m = b.measure()
    assert m["state"][0] == ISLAND and m["pv_curtail_w"][0] > 0
    assert m["pv_p_w"][0] == pytest.approx(-110.0)  # PV covers the DC load and the ER's own use, no more
    assert m["v_dc_v"][0] == pytest.approx(400 * 1.02) and m["trips"][0] == 0


def test_commanded_island_with_the_grid_present_and_mode_off():
    b = bank()
    b.setpoints["mode"][0] = 7
    b.step(0, 60, env(pv=300, dc=100, ac=100))
    assert b.measure()["state"][0] == ISLAND and b.measure()["p_w"][0] == 0.0
    b.setpoints["mode"][0] = 0
    b.step(60, 60, env(dc=100, ac=100))
    m = b.measure()
    assert m["state"][0] == OFF and m["dc_load_w"][0] == 0 and m["p_w"][0] == pytest.approx(100.0)
    assert m["mode_changes"][0] == 2  # grid -> island -> off


def test_dc_link_import_and_export_through_its_converter():
    b = bank()
    b.setpoints["link_p_w"][0] = 500.0
    b.setpoints["batt_p_w"][0] = 0.0
    b.step(0, 60, env(dc=100))
    m = b.measure()
    assert m["link_p_w"][0] == pytest.approx(500.0)
    assert m["p_w"][0] == pytest.approx(-(500 * 0.98 - 110) * 0.96)  # the surplus is exported
    assert abs(b.dc_imbalance_w()[0]) < 1e-9


def test_grid_back_during_a_black_start_connects_without_forming_the_island():
    """Found by hypothesis: the island sequence went on, relay open, although the grid had returned."""
    b = bank(ac_load_w=100)
    b.state[0] = OFF
    b.step(0, 1, env(dc=100, ac=100, grid=0))
    assert b.measure()["state"][0] == PRECHARGE
    b.step(1, 7, env(dc=100, ac=100, grid=1))  # back while precharging from the battery
    m = b.measure()
    assert m["state"][0] == GRID and m["p_w"][0] > 0 and m["ac_load_w"][0] == pytest.approx(100.0)
    b.state[0], b.t_state[0] = DC_ON, 0.0
    b.step(8, 1, env(dc=100, ac=100, grid=1))
    assert b.measure()["state"][0] == GRID
