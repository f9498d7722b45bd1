"""Models behind the study kinds: rainflow counting (ASTM E1049 examples), the Xu et al. 2018 ageing model,
economics (NPV, payback, TCO against hand-computed cases), bisection, Pareto fronts, and LiBal's SoH acting on
its usable capacity."""

import math

import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

from cosim.study import economics as eco
from cosim.study.report import pareto
from cosim.study.search import Bisection
from devices.battery import ageing
from devices.libal.model import LibalBank, LibalConfig


def _histogram(cycles):
    out: dict[float, float] = {}
    for rng, _, n in cycles:
        out[rng] = out.get(rng, 0.0) + n
    return out


def test_rainflow_astm_e1049_example():
    """ASTM E1049-85 section 5.4.4, Fig. 6 history: -2 1 -3 5 -1 3 -4 4 -2 gives ranges 3 (0.5), 4 (1.5),
    6 (0.5), 8 (1.0), 9 (0.5), counted by hand in the standard's Table 4."""
    cycles = ageing.rainflow(np.array([-2, 1, -3, 5, -1, 3, -4, 4, -2], dtype=float))
    assert _histogram(cycles) == {3.0: 0.5, 4.0: 1.5, 6.0: 0.5, 8.0: 1.0, 9.0: 0.5}
    # the full cycle of range 4 is the 1 -> ... pair -1/3 with mean 1
    assert (4.0, 1.0, 1.0) in cycles


def test_rainflow_hand_counted_soc_days():
    # two days 0.2 -> 0.9 -> 0.2 with a small dip 0.8 -> 0.7 -> 0.8 on the way up the second day
    soc = np.array([0.2, 0.5, 0.9, 0.5, 0.2, 0.8, 0.7, 0.8, 0.9, 0.2])
    assert list(ageing.reversals(soc)) == [0.2, 0.9, 0.2, 0.8, 0.7, 0.9, 0.2]
    # by hand: the dip 0.8/0.7 closes one full cycle of 0.1; 0.2-0.9-0.2-0.9-0.2 leaves 4 half cycles of 0.7
    h = {round(k, 9): v for k, v in _histogram(ageing.rainflow(soc)).items()}
    assert h == {0.7: 2.0, 0.1: 1.0}


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=0, max_size=60))
@example([1.0, 0.0, 2.225073858507203e-309, 1.1754943508222875e-38, 1.0])  # tiny steps: a product underflowed
def test_rainflow_counts_every_reversal_range_once(series):
    rev = ageing.reversals(np.array(series))
    cycles = ageing.rainflow(np.array(series))
    half_cycles = sum(2 * n for _, _, n in cycles)
    assert half_cycles == max(len(rev) - 1, 0)
    assert all(r >= 0 and n in (0.5, 1.0) for r, _, n in cycles)
    if len(rev) >= 2:
        assert max(r for r, _, _ in cycles) == pytest.approx(rev.max() - rev.min())


def test_xu_model_values_and_calibrated_chemistries():
    p = ageing.XU2018_LMO
    assert float(ageing.loss(0.0, p)) == pytest.approx(0.0)
    # a 100 % DoD cycle at 50 % mean SoC and 25 degC: S_DoD(1) = 1 / (1.40e5 - 1.23e5)
    r = ageing.analyse(np.array([0.0, 1.0, 0.0]), 28800.0, 25.0, p)  # three samples = one day
    assert r.fd_cycle_per_day == pytest.approx(1.0 / (1.40e5 - 1.23e5), rel=1e-9)
    assert r.efc_per_day == pytest.approx(1.0)
    for params, cycles in ((ageing.NMC, 3000), (ageing.LFP, 6000)):
        fd = cycles * float(ageing._stress_dod(1.0, params))
        assert float(ageing.loss(fd, params)) == pytest.approx(0.2, rel=1e-6)
    # deeper and hotter is worse; SoH falls with time; RUL consistent with soh_after
    shallow = ageing.analyse(np.tile([0.4, 0.6], 100), 3600, 25, p)
    deep = ageing.analyse(np.tile([0.1, 0.9], 100), 3600, 25, p)
    assert deep.fd_cycle_per_day > shallow.fd_cycle_per_day
    hot = ageing.analyse(np.tile([0.1, 0.9], 100), 3600, 40, p)
    assert hot.soh_after(3650, p) < deep.soh_after(3650, p) < deep.soh_after(365, p) < 1.0
    years = deep.years_to(0.8, p)
    assert deep.soh_after(years * 365.25, p) == pytest.approx(0.8, abs=1e-6)


def test_npv_and_payback_hand_computed():
    # -1000 now, +300 a year for 5 years at 10 %: NPV = -1000 + 300 * (1 - 1.1^-5) / 0.1 = 137.236
    cf = [-1000, 300, 300, 300, 300, 300]
    assert eco.npv(cf, 0.10) == pytest.approx(137.2360, abs=1e-3)
    # cumulative discounted: -1000, -727.27, -479.34, -253.94, -49.04, +137.24 -> 4 + 49.04/186.28
    assert eco.payback_years(cf, 0.10) == pytest.approx(4 + 49.0400 / 186.2764, abs=1e-4)
    assert eco.payback_years([-100, 10, 10], 0.0) is None
    assert eco.payback_years([0, 5], 0.05) == 0.0
    assert eco.npv([-100, 110], 0.0) == 10.0


def test_tco_hand_computed_household_storage():
    a = eco.Assumptions(years=4, discount_rate=0.05, battery_eur_per_kwh=500, battery_price_trend=-0.1,
                        battery_lifetime_years=2, permit_eur_per_kwh=100, energy_eur_per_kwh=0.2,
                        loss_share_dso=0.5, opex_share=0.02)
    case = eco.Case(pv_kwp=0, dso_storage_kwh=0, household_storage_kwh=10, losses_kwh_per_year=1000,
                    bill_eur_per_year=2000, strengthening=False)
    flows = eco.cash_flows(case, a)
    # households: 10 kWh x (500 + 100) now; replaced in year 2 at 500 x 0.9^2 = 405 EUR/kWh (+ 100 permits);
    # years 1..4: half the losses (1000 kWh x 0.2 EUR / 2 = 100) and the bill (2000)
    assert list(flows["households"]) == pytest.approx([6000, 2100, 2100 + 5050, 2100, 2100])
    assert list(flows["dso"]) == pytest.approx([0, 100, 100, 100, 100])
    expected = 6000 + 2100 / 1.05 + 7150 / 1.05**2 + 2100 / 1.05**3 + 2100 / 1.05**4
    assert eco.tco(case, a)["households"] == pytest.approx(expected)
    assert case.kind == 1


def test_strengthening_follows_the_dsf_ee_regression():
    assert eco.strengthening_capex_eur(100) == pytest.approx(
        24.426 + 2994.1 * 100 - 90.806 * 100**2 + 0.8923 * 100**3 - 0.0027 * 100**4)
    assert eco.strengthening_capex_eur(300) == pytest.approx(2 * eco.strengthening_capex_eur(150))
    assert eco.strengthening_capex_eur(0) == 0.0
    a = eco.Assumptions(years=2, discount_rate=0.0)
    case = eco.Case(50, 0, 0, 0, 0, strengthening=True)
    capex = eco.strengthening_capex_eur(50)
    assert list(eco.cash_flows(case, a)["dso"]) == pytest.approx([capex, 0.02 * capex, 0.02 * capex])
    ref = eco.Case(50, 0, 0, 0, 0, strengthening=True)
    cheaper = eco.Case(50, 0, 0, 0, 0, strengthening=False)
    assert eco.versus(cheaper, ref, a)["npv_eur"] == pytest.approx(capex * 1.04)


@pytest.mark.parametrize("find,threshold,expect", [("min", 37.0, 37.0), ("max", 63.0, 63.0)])
def test_bisection_finds_a_threshold_within_tolerance(find, threshold, expect):
    b = Bisection({}, "x", 0.0, 100.0, 1.0, find)
    todo = b.first()
    probes = 0
    while todo:
        x = todo.pop()
        probes += 1
        todo += b.feed(x, x >= threshold if find == "min" else x <= threshold)
    assert b.done and abs(b.answer - expect) <= 1.0 and probes <= b.max_probes
    assert (b.answer >= threshold) if find == "min" else (b.answer <= threshold)


def test_bisection_edges_and_failures():
    b = Bisection({}, "x", 0.0, 10.0, 1.0, "min")
    b.feed(0.0, False)
    assert b.feed(10.0, False) == [] and b.done and b.answer is None and "no value" in b.reason
    b = Bisection({}, "x", 0.0, 10.0, 1.0, "min")
    b.feed(10.0, True)
    assert b.feed(0.0, True) == [] and b.answer == 0.0
    b = Bisection({}, "x", 0.0, 10.0, 1.0, "min")
    assert b.feed(0.0, None) == [] and b.done and "failed" in b.reason


def test_pareto_front():
    pts = [(1, 5), (2, 2), (3, 1), (4, 4), (2, 3)]
    assert pareto(pts, ("min", "min")) == [0, 1, 2]
    assert pareto(pts, ("max", "max")) == [0, 3]


def _libal(soh_init: float) -> LibalBank:
    cfg = LibalConfig.model_validate({"s_max_va": 60000, "i_charge_max_a": 120, "i_discharge_max_a": 120,
                                      "soh_init": soh_init, "battery": {
                                          "capacity_wh": 100000, "p_charge_max_w": 50000, "p_discharge_max_w": 50000,
                                          "soc_init": 0.5, "soc_min": 0.1, "soc_max": 0.95}})
    return LibalBank([cfg])


def test_libal_soh_shrinks_usable_capacity():
    new, aged = _libal(1.0), _libal(0.8)
    assert aged.battery.capacity_wh[0] == pytest.approx(80000) and aged.battery.soc[0] == pytest.approx(0.5)
    assert aged.battery.e_wh[0] == pytest.approx(0.8 * new.battery.e_wh[0])
    for bank in (new, aged):
        bank.setpoints["p_w"][:] = 50000.0
        for t in range(0, 6 * 3600, 60):
            bank.step(t, 60, {})
    # both end full; the aged one holds 80 % of the energy
    assert new.battery.soc[0] == pytest.approx(0.95, abs=1e-3) and aged.battery.soc[0] == pytest.approx(0.95, abs=1e-3)
    assert aged.battery.e_wh[0] == pytest.approx(0.8 * new.battery.e_wh[0], rel=2e-3)
    assert aged.soh[0] < 0.8 and new.soh[0] < 1.0 and math.isfinite(aged.battery.e_wh[0])


def test_bisection_reports_a_non_monotone_range():
    b = Bisection({}, "x", 0.0, 10.0, 1.0, "min")
    b.feed(10.0, False)
    assert b.feed(0.0, True) == [] and b.done and b.answer == 0.0 and "not monotone" in b.reason
