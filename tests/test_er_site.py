"""The er_site controller's rules, one step at a time (no world needed)."""

import math

import pytest

from controllers.er_site import ErSiteParams, decide, in_window, initial_outputs

ROUTER = {"p_charge_max_w": 2500, "p_discharge_max_w": 2500, "soc_min": 0.1, "soc_max": 0.95, "capacity_wh": 5000,
          "inv_p_max_w": 3000, "pv_peak_w": 2000, "link_max_w": 1000, "nb_soc_max": 0.95}
NOON, EVENING, AFTERNOON = 12 * 60, 18 * 60, 15 * 60


def meas(**kw):
    base = {"pcc_p_w": 0.0, "p_w": 0.0, "batt_p_w": 0.0, "soc": 0.5, "pv_p_w": 0.0, "pv_curtail_w": 0.0,
            "state": 6.0, "nb_p_w": 200.0, "nb_soc": 0.5, "nb_state": 6.0}
    return base | kw


def s4g(**kw):
    return ErSiteParams(strategy="s4g", neighbour="nb", import_limit_w=500, export_limit_w=250, **kw)


def test_self_consumption_takes_over_the_pcc():
    out = decide(s4g(), ROUTER, NOON, meas(pcc_p_w=400.0, batt_p_w=-100.0), initial_outputs(ROUTER))
    assert out["batt_set_w"] == pytest.approx(-500.0) and out["mode_set"] == 3 and out["link_set_w"] == 0


def test_peak_hours_cap_the_import_and_precharge_stays_under_the_cap():
    out = decide(s4g(), ROUTER, EVENING, meas(pcc_p_w=900.0), initial_outputs(ROUTER))
    assert out["p_limit_set_w"] == 500
    pre = decide(s4g(), ROUTER, AFTERNOON, meas(pcc_p_w=200.0, soc=0.5), initial_outputs(ROUTER))
    assert 0 < pre["batt_set_w"] <= 300.0 + 1e-9  # 500 W cap minus the 200 W the site draws


def test_a_full_battery_is_not_asked_to_charge_and_the_surplus_goes_over_the_link_first():
    m = meas(pcc_p_w=-900.0, soc=0.95, pv_p_w=-1500.0)
    out = decide(s4g(), ROUTER, NOON, m, initial_outputs(ROUTER))
    assert out["batt_set_w"] == 0.0
    assert out["link_set_w"] == pytest.approx(-650.0) and out["nb_link_set_w"] == pytest.approx(650.0)
    assert out["mode_set"] == 3  # nothing left to curtail
    # the neighbour is full and does not draw: then PV is limited (the last resort)
    full_nb = decide(s4g(), ROUTER, NOON, m | {"nb_soc": 0.95, "nb_p_w": -10.0}, initial_outputs(ROUTER))
    assert full_nb["link_set_w"] == 0.0 and full_nb["mode_set"] == 2
    assert full_nb["pv_limit_set_w"] == pytest.approx(1500.0 - 650.0)


def test_rule_based_only_does_self_consumption_and_an_island_holds_the_commands():
    rb = decide(ErSiteParams(strategy="rule_based"), ROUTER, EVENING, meas(pcc_p_w=-900.0, soc=0.95),
                initial_outputs(ROUTER))
    assert rb["batt_set_w"] == 0.0 and rb["p_limit_set_w"] == 3000 and rb["mode_set"] == 3
    held = {"batt_set_w": 123.0, "link_set_w": 0.0, "nb_link_set_w": 0.0, "p_limit_set_w": 500.0,
            "pv_limit_set_w": 2000.0, "mode_set": 3.0}
    assert decide(s4g(), ROUTER, NOON, meas(state=4.0), held) is held
    assert decide(s4g(), ROUTER, NOON, meas(pcc_p_w=math.nan), held) is held


def test_windows_wrap_over_midnight_and_params_are_checked():
    assert in_window(23 * 60, 22 * 60, 6 * 60) and in_window(60, 22 * 60, 6 * 60) and not in_window(600, 1320, 360)
    with pytest.raises(ValueError, match="HH:MM"):
        ErSiteParams(peak_hours=("5pm", "21:00"))
