"""PROFEV re-plans at the step an EV's plug-in is seen, between its own 15-min steps too: PROFEV and LEVChAg
through their mosaik interfaces as the world wires them (the plan within the step, ``p_max_w`` to the wallbox
the next step), one EV charging since the start and one plugging in at a drawn time."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controllers.levchag import LevchagSim, plan_from_senml
from controllers.profev import ProfevSim

STEP_S = 60  # the scenario step; PROFEV plans every 900 s
START = 1_560_722_400.0  # 2019-06-17 00:00 +02:00
P_MIN_W = 6 * 230.0 * 3
ACCEPT_W = 11_000.0
PROFEV_PARAMS = {"horizon_s": 6 * 3600, "replan_s": 7200}  # a short horizon keeps the SDPs quick


class _Loop:
    """Two wallboxes, PROFEV (no battery unless given) and the site's LEVChAg, stepped like the world steps them."""

    def __init__(self, bays: str, import_limit_w: float, battery: dict | None = None) -> None:
        wbs = [{"id": f"wb{i}", "p_hw_max_w": 22_080.0} for i in range(2)]
        self.profev, self.lev = ProfevSim(), LevchagSim()
        self.profev.init("P", step_size=STEP_S)
        self.lev.init("L", step_size=STEP_S)
        (p,) = self.profev.create(1, "Site", params={"bays": bays, **PROFEV_PARAMS}, site="s", wallboxes=wbs,
                                  presence={"p_stay": [1.0] * 96, "p_arrive": [0.0] * 96}, base_w=[0.0] * 400,
                                  battery=battery, start_unix_s=START)
        (lv,) = self.lev.create(1, "Site", params={"margin_w": 0.0}, site="s", wallboxes=wbs,
                                import_limit_w=import_limit_w, start_unix_s=START)
        self.p_eid, self.p_slots = p["eid"], [c["eid"] for c in p["children"]]
        self.l_eid, self.l_slots = lv["eid"], [c["eid"] for c in lv["children"]]
        self.connected = np.zeros(2)
        self.ev_id = np.zeros(2)
        self.wanted = np.zeros(2)
        self.departure = np.zeros(2)
        self.e_wh = np.zeros(2)
        self.p_w = np.zeros(2)
        self.p_max_w = np.zeros(2)  # LEVChAg's last limits (time-shifted to the wallbox)
        self.battery_e_wh = math.nan

    def plug(self, i: int, ev_id: float, wanted_wh: float, departure_s: float) -> None:
        self.connected[i], self.ev_id[i], self.wanted[i], self.departure[i] = 1.0, ev_id, wanted_wh, departure_s
        self.e_wh[i] = 0.0

    def unplug(self, i: int) -> None:
        self.connected[i], self.ev_id[i], self.wanted[i], self.departure[i] = 0.0, 0.0, 0.0, 0.0
        self.e_wh[i] = self.p_w[i] = 0.0

    def step(self, t: int, rest_w: float) -> dict:
        # the wallboxes draw what LEVChAg allowed them last step (IEC 61851: below the minimum, paused)
        left = np.maximum(self.wanted - self.e_wh, 0.0) * 3600.0 / STEP_S
        lim = np.where(self.p_max_w + 1e-9 >= P_MIN_W, self.p_max_w, 0.0)
        self.p_w = np.where(self.connected > 0, np.minimum(np.minimum(lim, ACCEPT_W), left), 0.0)
        self.e_wh += self.p_w * STEP_S / 3600.0
        ev = [{"ev_energy_wanted_wh": {"B": self.wanted[i]}, "ev_p_max_w": {"B": ACCEPT_W}, "ev_phases": {"B": 3.0},
               "ev_departure_t_s": {"B": self.departure[i]}} for i in range(2)]
        wb = [{"connected": {"W": self.connected[i]}, "e_session_wh": {"W": self.e_wh[i]}, "soc": {"W": 0.3}}
              for i in range(2)]
        p_in = {s: {**wb[i], **ev[i], "ev_id": {"B": self.ev_id[i]}} for i, s in enumerate(self.p_slots)}
        if math.isfinite(self.battery_e_wh):
            p_in[self.p_eid] = {"e_wh": {"E": self.battery_e_wh}}
        self.profev.step(t, p_in, 0)
        out = self.profev.get_data({self.p_eid: ["plan", "plan_issued_s"]})[self.p_eid]
        l_in = {s: {**wb[i], **ev[i], "status": {"W": 2.0}, "p_w": {"W": self.p_w[i]}}
                for i, s in enumerate(self.l_slots)}
        l_in[self.l_eid] = {"pcc_p_w": {"G": rest_w + self.p_w.sum()}, "plan": {"P": out["plan"]},
                            "plan_issued_s": {"P": out["plan_issued_s"]}}
        self.lev.step(t, l_in, 0)
        got = self.lev.get_data({self.l_eid: ["budget_w", "fallback"]} | {s: ["p_max_w"] for s in self.l_slots})
        self.p_max_w = np.array([got[s]["p_max_w"] for s in self.l_slots])
        return {"plan": plan_from_senml(out["plan"])[2], "issued_s": out["plan_issued_s"], **got[self.l_eid]}

    def drawn_w(self) -> float:
        """What the wallboxes draw at the next step under the current limits."""
        left = np.maximum(self.wanted - self.e_wh, 0.0) * 3600.0 / STEP_S
        lim = np.where(self.p_max_w + 1e-9 >= P_MIN_W, self.p_max_w, 0.0)
        return float(np.where(self.connected > 0, np.minimum(np.minimum(lim, ACCEPT_W), left), 0.0).sum())


@settings(max_examples=25, deadline=None)
@given(plug_min=st.integers(1, 100), bays=st.sampled_from(["turn_over", "stay"]), rest_w=st.floats(0, 40_000),
       wanted_wh=st.floats(2000, 8000))
def test_an_ev_plugging_in_between_profev_steps_is_planned_at_once_within_the_site_limit(plug_min, bays, rest_w,
                                                                                         wanted_wh):
    limit_w = 45_000.0
    loop = _Loop(bays, limit_w)
    loop.plug(0, 1.0, 40_000.0, 10 * 3600.0)
    t_plug = plug_min * STEP_S
    for t in range(0, t_plug + 2 * 900, STEP_S):
        if t == t_plug:  # the second EV needs nearly its whole stay at full power: it must charge now
            loop.plug(1, 2.0, wanted_wh, t_plug + wanted_wh / (0.9 * ACCEPT_W) * 3600.0)
        out = loop.step(t, rest_w)
        assert out["fallback"] == 0.0  # a valid plan at every step
        assert out["budget_w"] <= limit_w - rest_w + 1e-6
        assert loop.drawn_w() <= out["budget_w"] + 1e-6  # never above the site limit
        if t == t_plug:
            assert out["issued_s"] == t_plug  # re-planned at the step the plug-in is seen
            assert out["plan"]["wb1"] >= P_MIN_W  # ... with power for the new EV
            if out["budget_w"] >= 2 * ACCEPT_W:  # headroom for both: it charges from the next step
                assert loop.p_max_w[1] >= P_MIN_W


def test_a_plug_in_between_steps_replans_the_new_ev_alone():
    loop = _Loop("stay", 100_000.0)
    loop.plug(0, 1.0, 20_000.0, 8 * 3600.0)
    site = loop.profev.sites[loop.p_eid]
    t_plug, last = 900 + 5 * STEP_S, None
    for t in range(0, t_plug + 2 * STEP_S, STEP_S):
        if t == t_plug:
            loop.plug(1, 2.0, 5000.0, t + 2400.0)  # 5 kWh in 40 min: it must charge now
        plan_before = site.core.evs.get(0)
        out = loop.step(t, 5000.0)
        if t == t_plug:
            assert site.core.evs[0] is plan_before  # the EV already there keeps its plan ...
            assert last is not None and out["plan"]["wb0"] == last["plan"]["wb0"]  # ... and its power
            assert out["plan"]["wb1"] > 0 and out["issued_s"] == t
        elif t % 900:
            assert out["plan"] == last["plan"]  # nothing changed: no re-plan between PROFEV's steps
        last = out
    assert site.solves == {"periodic": 1, "plug_in": 1, "unplug": 0}


@pytest.mark.parametrize("bays", ["turn_over", "stay"])
def test_leaving_early_replans_what_counted_on_it_leaving_as_planned_does_not_and_a_plug_in_replans_the_battery(
        bays):
    battery = {"capacity_wh": 80_000.0, "p_charge_max_w": 30_000.0, "p_discharge_max_w": 30_000.0}
    loop = _Loop(bays, 100_000.0, battery=battery)
    loop.battery_e_wh = 40_000.0
    loop.plug(0, 1.0, 30_000.0, 8 * 3600.0)  # leaves at 1200 s, far from done
    loop.plug(1, 2.0, 4000.0, 2700.0)  # leaves at its declared departure, when the plan expects nothing more
    site = loop.profev.sites[loop.p_eid]
    for t in range(0, 3000, STEP_S):
        if t == 1200:
            loop.unplug(0)
        if t == 2040:
            loop.plug(0, 3.0, 6000.0, 6 * 3600.0)
        if t == 2700:
            assert loop.e_wh[1] > 0  # it did charge before it left
            loop.unplug(1)
        battery_plan = site.core.battery_policy
        out = loop.step(t, 5000.0)
        if t == 1200:  # counted on: re-planned at once (the battery; where EVs stay, the others too)
            assert site.solves["unplug"] == 1 and out["issued_s"] == 1200 and out["plan"]["wb0"] == 0.0
            assert site.core.battery_t0 == 1 and 0 not in site.core.evs
        if t == 2040:  # the battery plans around the new EV as well
            assert site.solves["plug_in"] == 1 and site.core.battery_t0 == 2
            assert site.core.battery_policy is not battery_plan and out["issued_s"] == 2040
        if t == 2700:
            assert out["plan"]["wb1"] == 0.0 and site.core.battery_policy is battery_plan
    assert site.solves == {"periodic": 1, "plug_in": 1, "unplug": 1}
