"""LEVChAg: least-laxity-first within the budget, minimum current, the plan codec, the shared fallback policy."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.levchag import LevchagSim, decide, plan_from_senml, plan_to_senml

START = 1_560_722_400.0  # 2019-06-17 00:00 +02:00


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 22_000), st.sampled_from([1380.0, 4140.0]), st.floats(0, 40_000),
                          st.floats(0, 36_000)), min_size=1, max_size=30),
       st.floats(0, 150_000))
def test_limits_keep_the_budget_and_the_minimum_current(evs, budget):
    accept = np.array([e[0] for e in evs])
    p_min = np.array([e[1] for e in evs])
    remaining = np.array([e[2] for e in evs])
    dep = np.array([e[3] for e in evs])
    limits = decide(np.ones(len(evs), bool), remaining, accept, p_min, dep, 0.0, 300, budget)
    want = np.minimum(accept, remaining * 3600 / 300)
    drawn = np.minimum(limits, want)
    assert drawn.sum() <= budget + 1e-6
    # what the EVs draw when the step starts: a nearly done EV draws its minimum too, not only what it still wants
    assert np.minimum(limits, accept).sum() <= budget + 1e-6
    assert np.all((limits == 0) | (limits >= p_min - 1e-9))  # at least the minimum, or paused
    assert np.all(limits <= np.maximum(want, p_min) + 1e-9)


def test_least_laxity_goes_first():
    # same need, different departures; only one fits the budget
    remaining = np.array([5000.0, 5000.0, 5000.0])
    accept = np.full(3, 11_000.0)
    dep = np.array([8 * 3600.0, 2 * 3600.0, 5 * 3600.0])
    limits = decide(np.ones(3, bool), remaining, accept, np.full(3, 4140.0), dep, 0.0, 900, 11_000.0)
    assert list(limits) == [0.0, 11_000.0, 0.0]
    # an EV that declared nothing comes last
    dep[1] = np.nan
    limits = decide(np.ones(3, bool), remaining, accept, np.full(3, 4140.0), dep, 0.0, 900, 11_000.0)
    assert list(limits) == [0.0, 0.0, 11_000.0]


def test_a_plan_caps_each_ev_and_small_targets_round():
    args = (np.ones(3, bool), np.full(3, 10_000.0), np.full(3, 11_000.0), np.full(3, 4140.0),
            np.array([3600.0, 7200.0, 10_800.0]), 0.0, 900, math.inf)
    limits = decide(*args, target_w=np.array([6000.0, 3000.0, 1000.0]))
    assert list(limits) == [6000.0, 4140.0, 0.0]  # 3000 -> the minimum, 1000 -> paused
    # a target that finishes the EV is kept although below the minimum
    limits = decide(np.ones(1, bool), np.array([200.0]), np.array([11_000.0]), np.array([4140.0]),
                    np.array([3600.0]), 0.0, 900, math.inf, target_w=np.array([800.0]))
    assert limits[0] >= 4140.0


def test_plan_round_trip_and_bad_plans():
    pack = plan_to_senml("site", START, 1800, {"wb1": 7000.0, "wb2": 0.0})
    assert plan_from_senml(pack) == (START, 1800.0, {"wb1": 7000.0, "wb2": 0.0})
    assert plan_from_senml(plan_to_senml("site", START, 900, {})) == (START, 900.0, {})
    bad = [None, [], ["x"], [{"bt": START}], [{"bt": START, "ut": 0, "n": "wb1/p_ev", "v": 1.0, "bu": "W"}],
           [{"bt": START, "ut": 60, "n": "wb1/p_ev", "v": -1.0, "bu": "W"}],
           [{"bt": START, "ut": 60, "n": "wb1/p_ev", "v": float("nan"), "bu": "W"}],
           [{"bt": START, "ut": 60, "n": "wb1/other", "v": 1.0, "bu": "W"}],
           [{"bt": START, "ut": 60, "n": "wb1/p_ev", "v": 1.0, "bu": "kW"}],
           [{"bt": START, "ut": 60, "n": "wb1/p_ev", "v": True, "bu": "W"}]]
    for pack in bad:
        with pytest.raises(ValueError):
            plan_from_senml(pack)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.text(max_size=8) | st.integers(),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(["bn", "bt", "ut", "n", "v",
                                                                                         "u", "bu", "t"]), c,
                                                                        max_size=5), max_leaves=12))
def test_plan_decoder_refuses_garbage_with_value_error_only(pack):
    try:
        plan_from_senml(pack)
    except ValueError:
        pass


def _sim(**params):
    sim = LevchagSim()
    sim.init("L", step_size=300)
    wbs = [{"id": f"wb{i}", "p_hw_max_w": 22_080.0} for i in range(3)]
    (site,) = sim.create(1, "Site", params=params, site="s", wallboxes=wbs, import_limit_w=30_000.0,
                         start_unix_s=START)
    return sim, site["eid"], [c["eid"] for c in site["children"]]


def _inputs(eid, slots, t, pcc=10_000.0, plan=None, issued=None, ev_p=(0, 0, 0)):
    inp = {eid: {"pcc_p_w": {"G": pcc}}}
    if plan is not None:
        inp[eid]["plan"] = {"P": plan}
        inp[eid]["plan_issued_s"] = {"P": issued}
    for i, s in enumerate(slots):
        inp[s] = {"connected": {"W": 1.0}, "status": {"W": 2.0}, "p_w": {"W": float(ev_p[i])},
                  "soc": {"W": 0.5}, "e_session_wh": {"W": 0.0}, "ev_departure_t_s": {"B": t + 3600.0 * (i + 1)},
                  "ev_energy_wanted_wh": {"B": 20_000.0}, "ev_p_max_w": {"B": 11_000.0}, "ev_phases": {"B": 3.0}}
    return inp


def test_import_limit_is_kept_from_the_measured_pcc_and_fallback_is_logged():
    sim, eid, slots = _sim(margin_w=1000.0)
    sim.step(0, _inputs(eid, slots, 0, pcc=22_000.0, ev_p=(4000, 4000, 4000)), 0)
    out = sim.get_data({s: ["p_max_w"] for s in slots} | {eid: ["fallback", "budget_w"]})
    # rest of the site = 22 - 12 = 10 kW; EVs may take 30 - 10 - 1 = 19 kW
    assert out[eid]["budget_w"] == pytest.approx(19_000.0)
    limits = [out[s]["p_max_w"] for s in slots]
    assert sum(limits) <= 19_000.0 + 1e-6 and limits[0] == 11_000.0  # least laxity first: slot 0 leaves first
    assert out[eid]["fallback"] == 1.0
    assert sim.events() == [{"t_s": 0, "eid": eid, "event": "fallback", "reason": "missing"}]


@pytest.mark.parametrize("case", ["stale", "expired"])
def test_plan_followed_then_stale_or_expired(case):
    sim, eid, slots = _sim(max_age_s=3600)
    plan = plan_to_senml("s", START, 7200, {"wb0": 5000.0, "wb1": 0.0, "wb2": 6000.0})
    sim.step(0, _inputs(eid, slots, 0, plan=plan, issued=0.0), 0)
    out = sim.get_data({s: ["p_max_w"] for s in slots} | {eid: ["fallback"]})
    assert [out[s]["p_max_w"] for s in slots] == [5000.0, 0.0, 6000.0] and out[eid]["fallback"] == 0.0
    t = 3900 if case == "stale" else 7200
    issued = 0.0 if case == "stale" else 7000.0
    sim.step(t, _inputs(eid, slots, t, plan=plan, issued=issued), 0)
    out = sim.get_data({eid: ["fallback"]})
    assert out[eid]["fallback"] == 1.0
    assert sim.events()[-1] == {"t_s": t, "eid": eid, "event": "fallback", "reason": case}
