"""PROFEV for a whole site: several EVs and the site battery by decomposition of the stochastic programme.

The joint state of many EVs and a battery is far too large for one dynamic programme, so the site is solved
by block-coordinate descent over small ones (:mod:`controllers.profev_sdp`):

1. each EV present gets its own SDP (its energy still to deliver on a 1 % grid of that energy, presence from the
   site's Markov chain, a shortfall penalty at departure), seeing as "net load" the site's forecast base load
   plus the *expected* power of every other EV and of the battery;
2. the battery gets its SDP (1 % SoC grid) against the base load plus the EVs' expected power;
3. the EVs are swept once more against the battery's plan.

An EV's expected power at step t is its planned power if it is still there times the chain's probability that
it is (its policy rolled forward). The plan is re-solved every ``replan_s``; when an EV plugs in, the new EV
alone (:meth:`ProfevSite.add_ev`), then the battery (:meth:`ProfevSite.replan_battery`); when an EV leaves
that the plan still counted on (:meth:`ProfevSite.counted_on_wh`), what depended on it: the others and the
battery, or only the battery where each EV finishes first. Between solves each EV's power comes from its
policy at its measured progress (state feedback).
Sign convention: + = drawn from the grid.
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Mapping

import numpy as np

from controllers.profev_sdp import PresenceModel, SdpBattery, SdpEv, SdpPolicy, SdpProblem, solve

_NO_BATTERY = SdpBattery(capacity_wh=1.0, p_charge_max_w=0.0, p_discharge_max_w=0.0)
_NO_EV = SdpEv(capacity_wh=1.0, p_max_w=0.0, away_use_wh_per_h=0.0)
#: what plan() gets per EV: (remaining AC Wh, power it accepts now W, its minimum power W[, departure step or None])
EvRequest = tuple[float, float, float] | tuple[float, float, float, int | None]


@dataclass
class EvPlan:
    key: object  # the caller's id of the EV (wallbox, session)
    remaining_wh: float  # AC energy to deliver when planned
    t0: int  # absolute step of the plan's start
    policy: SdpPolicy | None  # None: finish first, at ``accept_w`` until done
    expected_w: np.ndarray  # [horizon] expected power from t0
    accept_w: float = 0.0

    def power_w(self, k: int, delivered_since_wh: float) -> float:
        t = k - self.t0
        if self.policy is None:
            return self.accept_w if t >= 0 and delivered_since_wh < self.remaining_wh else 0.0
        if t < 0 or t >= self.policy.d_ev.shape[0] or self.remaining_wh <= 0:
            return 0.0
        frac = min(max(delivered_since_wh / self.remaining_wh, 0.0), 1.0)
        return float(self.policy.decide(t, 0.0, frac, True)[1])


@dataclass
class ProfevSite:
    step_s: int
    presence: PresenceModel  # per step of the day (length 86400 / step_s)
    battery: SdpBattery | None = None
    horizon_steps: int = 96
    ev_eta: float = 0.92
    shortfall_penalty_per_kwh: float = 1000.0
    ev_grid: float = 0.01
    battery_grid: float = 0.01
    finish_first: bool = False  # bays turn over: each EV at what it accepts until done (no EV SDP)
    # the battery plans to keep the site's import below this (W): it charges only within it and discharges where
    # base + EVs would exceed it, where the base alone would first (LEVChAg cannot help there). The EVs' SDPs do
    # not get it: their plan is a cap that LEVChAg lowers to the measured headroom anyway, and a plan cut to a
    # forecast that overstates the load would only starve them
    import_limit_w: float = math.inf
    evs: dict = field(default_factory=dict)  # key -> EvPlan
    battery_policy: SdpPolicy | None = None
    battery_t0: int = 0
    battery_expected_w: np.ndarray | None = None
    solve_ms: float = 0.0

    def _presence(self, k0: int, departure: int | None = None) -> PresenceModel:
        """The chain over the horizon from ``k0``; an EV that declared its departure (absolute step) stays until
        then and leaves then for certain."""
        if departure is not None:
            stay = (k0 + np.arange(self.horizon_steps) < departure - 1).astype(float)
            return PresenceModel(stay, np.zeros(self.horizon_steps))
        per_day = len(self.presence.p_stay)
        idx = (k0 + np.arange(self.horizon_steps)) % per_day
        return PresenceModel(self.presence.p_stay[idx], np.zeros(self.horizon_steps))  # a session does not return

    def _others(self, k0: int, skip: object = None, battery: bool = True) -> np.ndarray:
        out = np.zeros(self.horizon_steps)
        for key, plan in self.evs.items():
            if key != skip:
                out += _shift(plan.expected_w, k0 - plan.t0, self.horizon_steps)
        if battery and self.battery_expected_w is not None:
            out += _shift(self.battery_expected_w, k0 - self.battery_t0, self.horizon_steps)
        return out

    def _solve_ev(self, k0: int, key: object, remaining_wh: float, accept_w: float, p_min_w: float,
                  base_w: np.ndarray, departure: int | None = None) -> None:
        if remaining_wh <= 1.0 or accept_w <= 0:
            self.evs.pop(key, None)
            return
        if self.finish_first:  # its expected power (what the battery plans against): full until done
            h = self.step_s / 3600.0
            full, part = divmod(remaining_wh / (accept_w * h), 1.0)
            expected = np.zeros(self.horizon_steps)
            expected[:min(int(full), self.horizon_steps)] = accept_w
            if int(full) < self.horizon_steps:
                expected[int(full)] = part * accept_w
            self.evs[key] = EvPlan(key, remaining_wh, k0, None, expected, accept_w)
            return
        ev = SdpEv(capacity_wh=remaining_wh * self.ev_eta, p_max_w=accept_w, soc_target=1.0, eta=self.ev_eta,
                   away_use_wh_per_h=0.0, shortfall_penalty_per_kwh=self.shortfall_penalty_per_kwh,
                   p_min_w=min(p_min_w, accept_w))
        problem = SdpProblem(_NO_BATTERY, ev, step_s=self.step_s, soc_step=0.5, ev_soc_step=self.ev_grid,
                             penalise_at_horizon=True)
        presence = self._presence(k0, departure)
        pol = solve(problem, base_w + self._others(k0, skip=key), presence)
        self.evs[key] = EvPlan(key, remaining_wh, k0, pol, _expected_ev(pol, presence.p_stay))

    def _solve_battery(self, k0: int, soc: float, base_w: np.ndarray) -> None:
        assert self.battery is not None  # plan() solves the battery only when the site has one
        problem = SdpProblem(self.battery, _NO_EV, step_s=self.step_s, soc_step=self.battery_grid, ev_soc_step=0.5,
                             import_limit_w=self.import_limit_w)
        evs = self._others(k0, battery=False)
        # LEVChAg caps the EVs to keep the limit: what only they would import above it matters less
        pol = solve(problem, base_w + evs, PresenceModel(np.zeros(self.horizon_steps), np.zeros(self.horizon_steps)),
                    capped_w=np.maximum(evs, 0.0))
        self.battery_policy, self.battery_t0 = pol, k0
        self.battery_expected_w = _expected_battery(pol, soc, self.battery, self.step_s)

    def plan(self, k0: int, base_w: np.ndarray, evs: Mapping[Any, EvRequest], battery_soc: float | None = None) -> None:
        """Re-plan everything at absolute step ``k0``: ``base_w`` the forecast site load without EVs and battery
        over the horizon; ``evs`` = {key: (remaining AC Wh, power the EV accepts now W, its minimum power W
        [, declared departure step or None])}."""
        t = _time.perf_counter()
        base = np.asarray(base_w, float)[: self.horizon_steps]
        for key in list(self.evs):
            if key not in evs:
                del self.evs[key]
        for key, ev in evs.items():
            self._solve_ev(k0, key, *ev[:3], base, *ev[3:])
        if self.battery is not None and battery_soc is not None and math.isfinite(battery_soc):
            self._solve_battery(k0, battery_soc, base)
            for key, ev in evs.items():
                self._solve_ev(k0, key, *ev[:3], base, *ev[3:])
        self.solve_ms = (_time.perf_counter() - t) * 1e3

    def add_ev(self, k0: int, key: object, remaining_wh: float, accept_w: float, p_min_w: float,
               base_w: np.ndarray, departure: int | None = None) -> None:
        """An EV plugged in: plan it alone against the others' and the battery's current plans."""
        t = _time.perf_counter()
        self._solve_ev(k0, key, remaining_wh, accept_w, p_min_w, np.asarray(base_w, float)[: self.horizon_steps],
                       departure)
        self.solve_ms = (_time.perf_counter() - t) * 1e3

    def counted_on_wh(self, k: int, key: object) -> float:
        """The energy the plan of EV ``key`` still expected it to draw after step ``k`` (0 if it has none)."""
        plan = self.evs.get(key)
        if plan is None:
            return 0.0
        return float(_shift(plan.expected_w, k + 1 - plan.t0, self.horizon_steps).sum()) * self.step_s / 3600.0

    def replan_battery(self, k0: int, base_w: np.ndarray, battery_soc: float | None) -> bool:
        """Re-solve the battery alone against the EVs' current plans (an EV came, or left while it was counted
        on); False when there is no battery or no SoC to start from."""
        if self.battery is None or battery_soc is None or not math.isfinite(battery_soc):
            return False
        t = _time.perf_counter()
        self._solve_battery(k0, battery_soc, np.asarray(base_w, float)[: self.horizon_steps])
        self.solve_ms = (_time.perf_counter() - t) * 1e3
        return True

    def ev_power_w(self, k: int, key: object, delivered_since_wh: float) -> float:
        plan = self.evs.get(key)
        return 0.0 if plan is None else plan.power_w(k, delivered_since_wh)

    def battery_power_w(self, k: int, soc: float) -> float:
        pol = self.battery_policy
        if pol is None or not math.isfinite(soc):
            return 0.0
        t = k - self.battery_t0
        if not 0 <= t < pol.d_battery.shape[0]:
            return 0.0
        return float(pol.decide(t, soc, 0.0, False)[0])


def _shift(x: np.ndarray, by: int, n: int) -> np.ndarray:
    """x advanced by ``by`` steps, cut or zero-padded to n."""
    out = np.zeros(n)
    if by < 0:
        return out
    seg = x[by:by + n]
    out[:seg.size] = seg
    return out


def _expected_ev(pol: SdpPolicy, p_stay: np.ndarray) -> np.ndarray:
    n = pol.d_ev.shape[0]
    out = np.zeros(n)
    frac, alive = 0.0, 1.0
    step = pol.ev_soc[1] - pol.ev_soc[0]
    for t in range(n):
        p = pol.decide(t, 0.0, frac, True)[1]
        out[t] = alive * p
        frac = min(1.0, frac + p / pol.p_ev_per_step_w * step) if pol.p_ev_per_step_w > 0 else frac
        alive *= p_stay[t]
    return out


def _expected_battery(pol: SdpPolicy, soc: float, bat: SdpBattery, step_s: int) -> np.ndarray:
    n = pol.d_battery.shape[0]
    out = np.zeros(n)
    for t in range(n):
        p = pol.decide(t, soc, 0.0, False)[0]
        out[t] = p
        soc += (p * bat.eta_charge if p >= 0 else p / bat.eta_discharge) * step_s / 3600.0 / bat.capacity_wh
    return out


__all__ = ["EvPlan", "ProfevSite"]


class ProfevPolicy:
    """PROFEV on a :class:`controllers.ev_scheduling.Fleet` (benchmark and tests): plan on plug-in and every
    ``replan_steps``; LEVChAg's executor gives each EV its planned power (at >= its minimum or 0)."""

    def __init__(self, presence: PresenceModel, step_s: int, base_w: np.ndarray | None = None,
                 replan_steps: int = 4, declared_departure: bool = False, **site_kw) -> None:
        self.declared = declared_departure
        self.site = ProfevSite(step_s, presence, **site_kw)
        self.base_w = base_w
        self.replan_steps = replan_steps
        self.known: set[int] = set()
        self.at_plan: dict[int, float] = {}
        self.solve_ms: list[float] = []

    def _base(self, k: int) -> np.ndarray:
        n = self.site.horizon_steps
        if self.base_w is None:
            return np.zeros(n)
        idx = np.clip(np.arange(k, k + n), 0, self.base_w.size - 1)
        return self.base_w[idx]

    def __call__(self, st) -> np.ndarray:
        from devices.wallbox.model import ev_accept_w

        f, k = st.fleet, st.k
        present = np.flatnonzero(st.present & (st.remaining_wh > 1e-6))
        accept = ev_accept_w(st.soc, f.p_max_w, f.cv_soc, f.floor)
        if k % self.replan_steps == 0:
            self.site.plan(k, self._base(k), {int(i): (float(st.remaining_wh[i]), float(accept[i]), float(f.p_min_w[i]),
                                                       int(f.departure[i]) if self.declared else None)
                                              for i in present})
            self.at_plan = {int(i): float(st.delivered_wh[i]) for i in present}
            self.known |= set(self.at_plan)
            self.solve_ms.append(self.site.solve_ms)
        for i in present:
            if int(i) not in self.known:
                self.site.add_ev(k, int(i), float(st.remaining_wh[i]), float(accept[i]), float(f.p_min_w[i]),
                                 self._base(k), int(f.departure[i]) if self.declared else None)
                self.at_plan[int(i)] = float(st.delivered_wh[i])
                self.known.add(int(i))
                self.solve_ms.append(self.site.solve_ms)
        from controllers.levchag import decide

        target = np.zeros(f.n)
        for i in present:
            target[i] = self.site.ev_power_w(k, int(i), float(st.delivered_wh[i]) - self.at_plan.get(int(i), 0.0))
        dep = np.where(st.present, f.departure * f.step_s, np.nan)
        return decide(st.present, st.remaining_wh, accept, f.p_min_w, dep, k * f.step_s, f.step_s, np.inf, target)
