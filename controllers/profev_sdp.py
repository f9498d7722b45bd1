"""PROFEV's core: one EV and the site battery optimised together by stochastic dynamic programming.

The original S4G PROFEV solved, for every state and time step, a small mixed-integer program in pyomo: the
state is (battery SoC, EV SoC, EV at home or away), the EV's presence follows an inhomogeneous Markov chain
estimated from session history, and the objective is the squared grid exchange plus the expected value of
the next state. It took minutes per day on a coarse grid (10 % battery, 2.5 % EV steps).

Here the same Bellman recursion runs as one vectorised backward pass (numba) on a 1 % grid for both
batteries: a decision moves each SoC by whole grid steps, so the next state is always a grid point when the
EV is home, and the stage cost of a (battery move, EV move) pair does not depend on the state: it is
tabulated once per time step. While the EV is away it loses SoC at its expected consumption, read between
grid points by linear interpolation. Leaving with less than the target SoC costs a penalty per kWh short.

Sign convention (the framework's): battery and EV power + = drawn from the grid (charging); ``net_load_w``
is the site's load minus its PV, so the grid exchange is ``net_load_w + p_battery_w + p_ev_w``.

The site's import contract (``SdpProblem.import_limit_w``): the battery never charges where the site would
import above it (a hard bound: charging is always avoidable), and every kWh imported above it costs
``over_limit_penalty_per_kwh``, far more than any other cost can gain (an exact penalty), so the battery
discharges to cover what would exceed it wherever its power and SoC allow and otherwise as much as they do.
The part of the net load an EV agent caps to keep the limit anyway (``solve(capped_w=...)``: the EVs' expected
power) costs only ``capped_over_limit_penalty_per_kwh`` above it: the battery covers what nothing else can first,
and gives the EVs room with what is left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal
from collections.abc import Sequence

import numba
import numpy as np

Objective = Literal["grid_squared", "cost"]


@dataclass(frozen=True)
class SdpBattery:
    capacity_wh: float
    p_charge_max_w: float
    p_discharge_max_w: float
    soc_min: float = 0.0
    soc_max: float = 1.0
    eta_charge: float = 0.95
    eta_discharge: float = 0.95


@dataclass(frozen=True)
class SdpEv:
    capacity_wh: float
    p_max_w: float
    soc_target: float = 0.8  # wanted at departure
    eta: float = 0.92
    away_use_wh_per_h: float = 1500.0  # expected consumption while away (driving and parked)
    shortfall_penalty_per_kwh: float = 100.0  # objective units per kWh below target at departure
    p_min_w: float = 0.0  # IEC 61851: the EV charges at >= this or not at all (except to finish)


@dataclass(frozen=True)
class PresenceModel:
    """Inhomogeneous two-state Markov chain of the EV at the charger, one transition pair per time step.

    ``p_stay[t]`` = P(home at t+1 | home at t); ``p_arrive[t]`` = P(home at t+1 | away at t).
    """

    p_stay: np.ndarray
    p_arrive: np.ndarray

    def __post_init__(self) -> None:
        for name in ("p_stay", "p_arrive"):
            arr = np.asarray(getattr(self, name), dtype=float)
            if arr.ndim != 1 or np.any(~np.isfinite(arr)) or np.any((arr < 0) | (arr > 1)):
                raise ValueError(f"{name} must be a 1-D array of probabilities in [0, 1]")
            object.__setattr__(self, name, arr)
        if self.p_stay.shape != self.p_arrive.shape:
            raise ValueError("p_stay and p_arrive must have the same length")

    @classmethod
    def estimate(cls, sessions: Sequence[tuple[float, float]], *, step_s: int, days: int,
                 smoothing: float = 1.0) -> PresenceModel:
        """Transition probabilities per step of the day from sessions ``(arrival_s, departure_s)``.

        Times are seconds from the first midnight of a history of ``days`` days; each step of the day pools
        that step over all days. ``smoothing`` adds that many pseudo-observations of "nothing changes", so a
        step never seen in the history keeps its state (Laplace smoothing towards inertia).
        """
        if step_s <= 0 or 86400 % step_s:
            raise ValueError("step_s must divide a day")
        per_day = 86400 // step_s
        n = per_day * days
        home = np.zeros(n + 1, dtype=bool)
        for arrive, depart in sessions:
            if not (math.isfinite(arrive) and math.isfinite(depart)) or depart <= arrive:
                raise ValueError(f"session ({arrive}, {depart}) must end after it starts")
            a, d = int(math.ceil(arrive / step_s)), int(math.ceil(depart / step_s))
            home[max(a, 0):min(d, n + 1)] = True
        now, nxt = home[:-1], home[1:]
        tod = np.arange(n) % per_day
        stay = np.bincount(tod[now & nxt], minlength=per_day).astype(float)
        at_home = np.bincount(tod[now], minlength=per_day).astype(float)
        arrive_ = np.bincount(tod[~now & nxt], minlength=per_day).astype(float)
        away = np.bincount(tod[~now], minlength=per_day).astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):  # a step never observed keeps its state
            p_stay = np.where(at_home + smoothing > 0, (stay + smoothing) / (at_home + smoothing), 1.0)
            p_arrive = np.where(away + smoothing > 0, arrive_ / (away + smoothing), 0.0)
        return cls(p_stay, p_arrive)


def pooled_presence(sessions: Sequence[tuple[float, float]], *, step_s: int, smoothing: float = 1.0) -> PresenceModel:
    """The chain of *one* EV at a site with many chargers: ``p_stay[t]`` = the share of sessions present at step
    t of the day that are still there at t+1, pooled over all sessions (times in seconds from a local midnight).

    :meth:`PresenceModel.estimate` follows one charger's occupancy (any EV), which at a busy site is "always
    home"; a site planner needs each EV's own departure hazard. ``p_arrive`` is 0: a session that left does not
    come back. ``smoothing`` pseudo-observations of staying make a step never seen keep the EV.
    """
    if step_s <= 0 or 86400 % step_s:
        raise ValueError("step_s must divide a day")
    per_day = 86400 // step_s
    stay = np.zeros(per_day)
    leave = np.zeros(per_day)
    for arrive, depart in sessions:
        if not (math.isfinite(arrive) and math.isfinite(depart)) or depart <= arrive:
            raise ValueError(f"session ({arrive}, {depart}) must end after it starts")
        a, d = int(math.ceil(arrive / step_s)), int(math.ceil(depart / step_s))
        if d <= a:
            continue
        steps = np.arange(a, d) % per_day
        np.add.at(stay, steps[:-1], 1.0)
        leave[steps[-1]] += 1.0
    p_stay = (stay + smoothing) / (stay + leave + smoothing) if smoothing > 0 else \
        np.where(stay + leave > 0, stay / np.maximum(stay + leave, 1e-300), 1.0)
    return PresenceModel(p_stay, np.zeros(per_day))


@dataclass(frozen=True)
class SdpProblem:
    battery: SdpBattery
    ev: SdpEv
    step_s: int = 900
    soc_step: float = 0.01  # battery grid, as a fraction of capacity
    ev_soc_step: float = 0.01
    objective: Objective = "grid_squared"
    terminal_value_per_kwh: float = 0.0  # objective units per kWh left in the site battery at the end
    # an EV still plugged in at the horizon's end leaves then (its shortfall is penalised): a receding-horizon
    # planner must not defer charging past the horizon
    penalise_at_horizon: bool = False
    # the site's import limit (W; inf: none) and what a kWh above it costs: more than the squared exchange
    # (2 x import kW per kWh) or an EV's shortfall can gain, so it acts as a hard bound where one is feasible
    import_limit_w: float = math.inf
    over_limit_penalty_per_kwh: float = 1e6
    capped_over_limit_penalty_per_kwh: float = 1e3  # above the limit only because of ``capped_w``

    def __post_init__(self) -> None:
        if math.isnan(self.import_limit_w):
            raise ValueError("import_limit_w must be a number (inf: no limit)")
        for name in ("over_limit_penalty_per_kwh", "capped_over_limit_penalty_per_kwh"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ValueError(f"{name} must be finite and non-negative")
        if not 0 < self.soc_step <= 0.5 or not 0 < self.ev_soc_step <= 0.5:
            raise ValueError("grid steps must be in (0, 0.5]")
        if not 0 <= self.battery.soc_min < self.battery.soc_max <= 1:
            raise ValueError("battery SoC limits must satisfy 0 <= soc_min < soc_max <= 1")


@dataclass
class SdpPolicy:
    """The solved value function and decisions; :meth:`decide` maps a measured state to powers."""

    problem: SdpProblem
    value: np.ndarray  # [T + 1, Nb, Ne, 2]
    d_battery: np.ndarray  # [T, Nb, Ne, 2] grid steps
    d_ev: np.ndarray  # [T, Nb, Ne, 2] grid steps (0 when away)
    battery_soc: np.ndarray  # grid points
    ev_soc: np.ndarray
    p_battery_per_step_w: tuple[float, float] = field(default=(0.0, 0.0))  # (charge, discharge) W per grid step
    p_ev_per_step_w: float = 0.0

    def _index(self, grid: np.ndarray, soc: float) -> int:
        return int(np.clip(np.rint((soc - grid[0]) / (grid[1] - grid[0])), 0, len(grid) - 1))

    def decide(self, t: int, battery_soc: float, ev_soc: float, home: bool) -> tuple[float, float]:
        """(battery W, EV W) for step ``t``: the decision of the nearest grid state, limited so that the
        measured (off-grid) SoCs stay within their bounds after the move."""
        b, e = self._index(self.battery_soc, battery_soc), self._index(self.ev_soc, ev_soc)
        db = int(self.d_battery[t, b, e, int(home)])
        de = int(self.d_ev[t, b, e, int(home)])
        step_b = self.battery_soc[1] - self.battery_soc[0]
        step_e = self.ev_soc[1] - self.ev_soc[0]
        db = min(db, math.floor((self.battery_soc[-1] - battery_soc) / step_b + 1e-9))
        db = max(db, -math.floor((battery_soc - self.battery_soc[0]) / step_b + 1e-9))
        de = max(0, min(de, math.floor((self.ev_soc[-1] - ev_soc) / step_e + 1e-9)))
        charge, discharge = self.p_battery_per_step_w
        return (db * charge if db >= 0 else db * discharge), de * self.p_ev_per_step_w

    def expected_cost(self, battery_soc: float, ev_soc: float, home: bool) -> float:
        b, e = self._index(self.battery_soc, battery_soc), self._index(self.ev_soc, ev_soc)
        return float(self.value[0, b, e, int(home)])


def solve(problem: SdpProblem, net_load_w: np.ndarray, presence: PresenceModel, *,
          import_price: np.ndarray | None = None, export_price: np.ndarray | None = None,
          capped_w: np.ndarray | None = None) -> SdpPolicy:
    """Backward induction over ``len(net_load_w)`` steps; the presence model is indexed by the same steps.
    ``capped_w``: the part of ``net_load_w`` that is capped to keep the import limit anyway (default none)."""
    net = np.asarray(net_load_w, dtype=float)
    n = len(net)
    if n == 0 or not np.all(np.isfinite(net)):
        raise ValueError("net_load_w must be a non-empty array of finite values")
    capped = np.zeros(n) if capped_w is None else np.asarray(capped_w, dtype=float)
    if capped.shape != net.shape or not np.all(np.isfinite(capped) & (capped >= 0)):
        raise ValueError("capped_w must be finite, non-negative and as long as net_load_w")
    if len(presence.p_stay) < n:
        raise ValueError(f"the presence model covers {len(presence.p_stay)} steps, the horizon {n}")
    bat, ev = problem.battery, problem.ev
    dt_h = problem.step_s / 3600.0
    b_grid = np.arange(bat.soc_min, bat.soc_max + 1e-9, problem.soc_step)
    e_grid = np.arange(0.0, 1.0 + 1e-9, problem.ev_soc_step)
    e_step_wh = problem.ev_soc_step * ev.capacity_wh
    b_step_wh = problem.soc_step * bat.capacity_wh
    # power drawn per grid step moved: losses make charging cost more and discharging deliver less
    p_ch = b_step_wh / dt_h / bat.eta_charge
    p_dis = b_step_wh / dt_h * bat.eta_discharge
    p_ev = e_step_wh / dt_h / ev.eta
    up = int(bat.p_charge_max_w // p_ch + 1e-9) if bat.p_charge_max_w > 0 else 0
    down = int(bat.p_discharge_max_w // p_dis + 1e-9) if bat.p_discharge_max_w > 0 else 0
    ev_up = int(ev.p_max_w // p_ev + 1e-9) if ev.p_max_w > 0 else 0
    ev_min = max(1, int(math.ceil(ev.p_min_w / p_ev - 1e-9))) if ev.p_max_w > 0 else 1
    use_steps = ev.away_use_wh_per_h * dt_h / e_step_wh
    shortfall_kwh = np.maximum(ev.soc_target - e_grid, 0.0) * ev.capacity_wh / 1000.0
    penalty = shortfall_kwh * ev.shortfall_penalty_per_kwh
    if problem.objective == "cost":
        if import_price is None or export_price is None:
            raise ValueError("the cost objective needs import_price and export_price per step (per kWh)")
        price_in = np.broadcast_to(np.asarray(import_price, dtype=float), (n,)).copy()
        price_out = np.broadcast_to(np.asarray(export_price, dtype=float), (n,)).copy()
        squared = False
    else:
        price_in = price_out = np.zeros(n)
        squared = True
    terminal = -problem.terminal_value_per_kwh * (b_grid * bat.capacity_wh / 1000.0)
    end_penalty = penalty if problem.penalise_at_horizon else np.zeros_like(penalty)
    value, d_bat, d_ev = _backward(net, presence.p_stay[:n].copy(), presence.p_arrive[:n].copy(), price_in,
                                   price_out, squared, dt_h, len(b_grid), len(e_grid), up, down, ev_up, p_ch,
                                   p_dis, p_ev, use_steps, penalty, terminal, end_penalty, ev_min,
                                   problem.import_limit_w / 1000.0, problem.over_limit_penalty_per_kwh,
                                   capped, problem.capped_over_limit_penalty_per_kwh)
    return SdpPolicy(problem, value, d_bat, d_ev, b_grid, e_grid, (p_ch, p_dis), p_ev)


@numba.njit(cache=True, inline="always")
def _stage(p_w: float, squared: bool, price_in: float, price_out: float, dt_h: float, limit_kw: float,
           over_penalty: float, capped_w: float, capped_penalty: float) -> float:
    p_kw = p_w / 1000.0
    cost = p_kw * p_kw * dt_h if squared else (price_in * p_kw if p_kw > 0 else price_out * p_kw) * dt_h
    if p_kw > limit_kw:  # never with no limit (inf): the cost is then exactly the objective's
        firm = max(p_kw - capped_w / 1000.0 - limit_kw, 0.0)  # what capping the EVs would not remove
        cost += (over_penalty * firm + capped_penalty * (p_kw - limit_kw - firm)) * dt_h
    return cost


@numba.njit(cache=True)
def _interp(row: np.ndarray, x: float) -> float:
    i = int(x)
    if i >= len(row) - 1:
        return row[len(row) - 1]
    frac = x - i
    return row[i] * (1.0 - frac) + row[i + 1] * frac


@numba.njit(cache=True)
def _backward(net, p_stay, p_arrive, price_in, price_out, squared, dt_h, nb, ne, up, down, ev_up, p_ch, p_dis,
              p_ev, use_steps, penalty, terminal, end_penalty, ev_min, limit_kw, over_penalty, capped, capped_penalty):
    n = len(net)
    value = np.empty((n + 1, nb, ne, 2))
    for b in range(nb):
        for e in range(ne):
            value[n, b, e, 0] = terminal[b]
            value[n, b, e, 1] = terminal[b] + end_penalty[e]
    d_bat = np.zeros((n, nb, ne, 2), dtype=np.int8)
    d_ev = np.zeros((n, nb, ne, 2), dtype=np.int8)
    nd = up + down + 1
    stage = np.empty((nd, ev_up + 1))
    w_home = np.empty((nb, ne))
    w_away = np.empty((nb, ne))
    for t in range(n - 1, -1, -1):
        for k in range(nd):
            db = k - down
            pb = db * p_ch if db >= 0 else db * p_dis
            for de in range(ev_up + 1):
                p = net[t] + pb + de * p_ev
                # a hard bound on charging: the battery never charges where the site imports above the limit
                # (not even to shave a later excess it cannot cover: each step's import counts, not their sum)
                stage[k, de] = np.inf if db > 0 and p > limit_kw * 1000.0 else \
                    _stage(p, squared, price_in[t], price_out[t], dt_h, limit_kw, over_penalty, capped[t],
                           capped_penalty)
        ps, pa = p_stay[t], p_arrive[t]
        nxt = value[t + 1]
        # expected value of landing on (b2, e2): precomputed once per step, the inner loops only look it up
        for b2 in range(nb):
            for e2 in range(ne):
                w_home[b2, e2] = ps * nxt[b2, e2, 1] + (1.0 - ps) * (nxt[b2, e2, 0] + penalty[e2])
                e_next = max(e2 - use_steps, 0.0)
                w_away[b2, e2] = pa * _interp(nxt[b2, :, 1], e_next) + (1.0 - pa) * _interp(nxt[b2, :, 0], e_next)
        for b in range(nb):
            k_lo = max(0, down - b)
            k_hi = min(nd - 1, down + (nb - 1 - b))
            for e in range(ne):
                # EV home and plugged: both SoCs move by whole grid steps
                best, best_k, best_de = np.inf, down, 0
                de_hi = min(ev_up, ne - 1 - e)
                for k in range(k_lo, k_hi + 1):
                    row = w_home[b + k - down]
                    for de in range(de_hi + 1):
                        if 0 < de < ev_min and e + de != ne - 1:
                            continue  # below the minimum current, unless it finishes the EV (it draws less)
                        c = stage[k, de] + row[e + de]
                        if c < best:
                            best, best_k, best_de = c, k, de
                value[t, b, e, 1] = best
                d_bat[t, b, e, 1] = best_k - down
                d_ev[t, b, e, 1] = best_de
                # EV away: it uses energy; only the battery decides
                best, best_k = np.inf, down
                for k in range(k_lo, k_hi + 1):
                    c = stage[k, 0] + w_away[b + k - down, e]
                    if c < best:
                        best, best_k = c, k
                value[t, b, e, 0] = best
                d_bat[t, b, e, 0] = best_k - down
    return value, d_bat, d_ev


__all__ = ["PresenceModel", "SdpBattery", "SdpEv", "SdpPolicy", "SdpProblem", "pooled_presence", "solve"]
