"""EV charging schedules on arrays: the site-level algorithms LEVChAg, PROFEV and the benchmark share.

A :class:`Fleet` is a set of charging sessions on a step grid (arrival and departure steps, the AC energy each
EV asks for, its power limits and battery). :func:`simulate` charges them step by step with the wallbox
model's exact CC-CV integration (:func:`devices.wallbox.model.charge_exact`: the EV tapers near full, so a
schedule can ask for more than the EV takes) and the IEC 61851 rule (a limit below the minimum current pauses
the EV). A policy maps the state at a step to per-EV power limits:

* :class:`Uncontrolled` - every EV at its maximum;
* :class:`EqualShare` - a site limit shared equally (controllers.ev_baselines);
* :class:`PriorityShare` - a site limit given out in priority order, earliest deadline first (``"edf"``) or
  least laxity first (``"llf"``), each EV either at >= its minimum power or paused (:func:`allocate`);
* :class:`PeakMpc` - receding-horizon LP (HiGHS) over the EVs present, knowing the energy and departure each
  declared at plug-in, and optionally the arrivals still expected today (never the day's own future sessions:
  :class:`RemainingSessions`, the sessions still to come by the count arrived so far against the history's
  daily counts; :class:`SimilarDays`, the history days most like today so far; or :class:`ExpectedArrivals`,
  the history's mean scaled by how heavy today has been so far), under an optional hard site limit: minimise
  the site's peak
  (never below the peak already reached), prefer charging early; its first step (at least the sunk peak) is the
  site budget, executed least-laxity-first after every EV that cannot wait got what it must have now;
* :func:`hindsight_lp` - the same LP over all sessions with full knowledge: the lower bound on the peak;
* :func:`billing_period` - consecutive days under one demand charge (the period's peak so far is sunk).

Powers in W, energy in Wh (AC side unless named), steps of ``step_s`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from collections.abc import Callable, Sequence

import math

import numpy as np

from controllers.ev_baselines import equal_share_limits
from devices.wallbox.model import charge_exact, ev_accept_w

MIN_CURRENT_A = 6.0  # IEC 61851-1: below it the EVSE pauses the EV


@dataclass(frozen=True)
class Fleet:
    step_s: int
    n_steps: int
    arrival: np.ndarray  # first step plugged in
    departure: np.ndarray  # first step gone (exclusive)
    energy_wh: np.ndarray  # AC energy asked for
    p_max_w: np.ndarray  # min(on-board charger, wallbox hardware)
    p_min_w: np.ndarray  # minimum current x phases x voltage
    capacity_wh: np.ndarray
    soc0: np.ndarray
    eta: float = 0.92
    cv_soc: float = 0.9
    floor: float = 0.1

    @property
    def n(self) -> int:
        return int(self.arrival.size)

    @classmethod
    def from_sessions(cls, sessions: Sequence[dict], *, step_s: int, t0_s: int = 0, n_steps: int | None = None,
                      p_hw_max_w: float = 22_080.0, voltage_v: float = 230.0) -> Fleet:
        """Sessions as dicts with ``t_arrival_s`` (or ``t_plug_s``), ``t_departure_s``, ``e_wanted_wh``,
        ``p_max_w`` (on-board charger), ``phases``, ``capacity_wh``, ``soc_arrival``; times from ``t0_s``."""
        arr = np.array([(s.get("t_plug_s", s["t_arrival_s"]) or s["t_arrival_s"]) - t0_s for s in sessions], float)
        dep = np.array([s["t_departure_s"] - t0_s for s in sessions], float)
        a = np.ceil(arr / step_s).astype(int)
        d = np.maximum(np.ceil(dep / step_s).astype(int), a)
        phases = np.array([s.get("phases", 3) for s in sessions], float)
        n = int(d.max()) if n_steps is None and d.size else int(n_steps or 0)
        return cls(step_s, n, a, d, np.array([s["e_wanted_wh"] for s in sessions], float),
                   np.minimum([s["p_max_w"] for s in sessions], p_hw_max_w),
                   MIN_CURRENT_A * voltage_v * phases, np.array([s["capacity_wh"] for s in sessions], float),
                   np.array([s["soc_arrival"] for s in sessions], float))


@dataclass
class State:
    """What a policy sees at step ``k`` (arrays over all sessions; absent EVs have ``present`` False)."""

    k: int
    present: np.ndarray
    delivered_wh: np.ndarray
    soc: np.ndarray
    fleet: Fleet

    @property
    def remaining_wh(self) -> np.ndarray:
        return np.maximum(self.fleet.energy_wh - self.delivered_wh, 0.0)

    @property
    def want_w(self) -> np.ndarray:
        """What each present EV would draw at most this step: what it accepts now, no more than finishes it."""
        f = self.fleet
        w = np.minimum(ev_accept_w(self.soc, f.p_max_w, f.cv_soc, f.floor), self.remaining_wh * 3600.0 / f.step_s)
        return np.where(self.present & (self.remaining_wh > 1e-6), w, 0.0)

    @property
    def must_now_w(self) -> np.ndarray:
        """The power each present EV must draw this step to still finish by its departure at full power after it
        (0: it can wait; at most ``want_w``)."""
        f = self.fleet
        h = f.step_s / 3600.0
        later_wh = ev_accept_w(self.soc, f.p_max_w, f.cv_soc, f.floor) * np.maximum(f.departure - self.k - 1, 0) * h
        return np.minimum(np.maximum(self.remaining_wh - later_wh, 0.0) / h, self.want_w)

    @property
    def laxity_s(self) -> np.ndarray:
        """Time left before departure minus the time needed at full power (smaller = more urgent)."""
        f = self.fleet
        accept = np.maximum(ev_accept_w(self.soc, f.p_max_w, f.cv_soc, f.floor), 1e-9)
        return (f.departure - self.k) * f.step_s - self.remaining_wh * 3600.0 / accept


class Policy(Protocol):
    def __call__(self, st: State) -> np.ndarray: ...


def allocate(order: np.ndarray, want_w: np.ndarray, p_min_w: np.ndarray, budget_w: float) -> np.ndarray:
    """Per-EV limits from a power budget, EVs served in ``order`` (indices): each gets what it wants or what is
    left, but never less than its minimum power; an EV that cannot get its minimum is paused (limit 0) and the
    next one tried. An EV wanting less than its minimum (nearly done) gets the minimum as limit and draws only
    what it wants, which is what counts against the budget."""
    limits = np.zeros(want_w.shape)
    left = float(budget_w)
    for i in order:
        w = float(want_w[i])
        if w <= 0:
            continue
        need = min(w, float(p_min_w[i]))  # the least this EV draws if it charges at all
        if left + 1e-9 < need:
            continue
        g = min(w, left)
        limits[i] = max(g, float(p_min_w[i]))
        left -= g
    return limits


def priority_order(st: State, rule: Literal["edf", "llf"]) -> np.ndarray:
    idx = np.flatnonzero(st.want_w > 0)
    key = st.fleet.departure[idx] if rule == "edf" else st.laxity_s[idx]
    return idx[np.lexsort((idx, key))]  # ties: by index, deterministic


# -- policies ---------------------------------------------------------------------------------------------------

class Uncontrolled:
    def __call__(self, st: State) -> np.ndarray:
        return np.where(st.present, st.fleet.p_max_w, 0.0)


@dataclass
class EqualShare:
    limit_w: float

    def __call__(self, st: State) -> np.ndarray:
        return equal_share_limits(st.want_w > 0, self.limit_w, st.fleet.p_max_w, st.fleet.p_min_w)


@dataclass
class PriorityShare:
    limit_w: float
    rule: Literal["edf", "llf"] = "llf"

    def __call__(self, st: State) -> np.ndarray:
        return allocate(priority_order(st, self.rule), st.want_w, st.fleet.p_min_w, self.limit_w)


@dataclass(frozen=True)
class ExpectedArrivals:
    """The sessions a site expects per day, from history: arrival and departure step (time of day), energy and
    power, each weighted by 1/days, so a day's worth of them asks for the history's mean energy. Sessions of the
    same (arrival, departure) steps are merged (their energy and power add up), which keeps the LP small."""

    arrival: np.ndarray
    departure: np.ndarray
    energy_wh: np.ndarray
    p_max_w: np.ndarray

    @classmethod
    def from_history(cls, days: Sequence[Fleet], scale: float = 1.0) -> ExpectedArrivals:
        if not days:
            raise ValueError("expected arrivals need at least one history day")
        cat = lambda a: np.concatenate([getattr(d, a) for d in days])  # noqa: E731
        return cls.merged(cat("arrival"), cat("departure"), cat("energy_wh"), cat("p_max_w"), scale / len(days))

    @classmethod
    def merged(cls, arrival: np.ndarray, departure: np.ndarray, energy_wh: np.ndarray, p_max_w: np.ndarray,
               weight: float) -> ExpectedArrivals:
        """Sessions merged by (arrival, departure) step, their energy and power summed, times ``weight``."""
        keys, inv = np.unique(np.stack([arrival, departure], axis=1).reshape(-1, 2), axis=0, return_inverse=True)
        inv = inv.ravel()
        merge = lambda v: np.bincount(inv, weights=v, minlength=len(keys)) * weight  # noqa: E731
        return cls(keys[:, 0].astype(int), keys[:, 1].astype(int), merge(energy_wh), merge(p_max_w))

    def after(self, k: int, scale: float = 1.0) -> ExpectedArrivals:
        """Those still to arrive after step ``k`` (an EV arriving at ``k`` is present, not expected), their energy
        and power times ``scale``."""
        keep = self.arrival > k
        return ExpectedArrivals(self.arrival[keep], self.departure[keep], scale * self.energy_wh[keep],
                                scale * self.p_max_w[keep])

    def intensity(self, k: int, arrived_wh: float, prior: float) -> float:
        """How heavy today looks so far: the energy of the EVs arrived up to step ``k`` over the history's
        expectation for the same hours, both plus ``prior`` x the history's daily energy (so the first few
        arrivals move the estimate little)."""
        c = prior * float(self.energy_wh.sum())
        return (arrived_wh + c) / (float(self.energy_wh[self.arrival <= k].sum()) + c)


class SimilarDays:
    """The arrivals still expected today from the ``k`` history days most like today so far: days ranked by the
    distance (sum over the steps up to now of the absolute difference) between their cumulative arrived energy
    and today's (the EVs arrived so far declared theirs at plug-in: known, not foresight); ties in history order.
    The mean of the nearest days' later sessions (:class:`ExpectedArrivals` of those days) times ``scale`` is the
    forecast. A day that started heavy is matched with heavy days, an early rush with early days, instead of
    the plain mean scaled by one intensity figure."""

    def __init__(self, days: Sequence[Fleet], k: int = 5, scale: float = 1.0) -> None:
        if not days or k < 1:
            raise ValueError("similar days need at least one history day and k >= 1")
        self.days, self.k, self.scale = list(days), min(k, len(days)), scale
        n = max(d.n_steps for d in days)
        self.curves = np.array([np.cumsum(np.bincount(np.minimum(d.arrival, n - 1), weights=d.energy_wh,
                                                      minlength=n)) for d in days])
        self._cache: dict[tuple[int, ...], ExpectedArrivals] = {}

    def nearest(self, k: int, f: Fleet) -> tuple[int, ...]:
        upto = min(k + 1, self.curves.shape[1])
        so_far = f.arrival <= k
        today = np.cumsum(np.bincount(f.arrival[so_far], weights=f.energy_wh[so_far], minlength=upto)[:upto])
        dist = np.abs(self.curves[:, :upto] - today).sum(axis=1)
        return tuple(sorted(np.argsort(dist, kind="stable")[:self.k].tolist()))

    def after(self, k: int, f: Fleet) -> ExpectedArrivals:
        near = self.nearest(k, f)
        if near not in self._cache:
            self._cache[near] = ExpectedArrivals.from_history([self.days[i] for i in near])
        return self._cache[near].after(k, self.scale)


class RemainingSessions:
    """The arrivals still expected today from how many sessions are still to come. The history's daily session
    counts are the prior of today's count N; each of a day's sessions has arrived by step ``k`` with the history's
    share ``p`` (of all its sessions, those arrived by ``k``), so after ``n`` arrivals today
    P(N | n) ~ P(N) C(N, n) p^n (1 - p)^(N - n), N >= n. The expected remainder E[N - n | n] is spread over the
    history's sessions that arrived after ``k`` (their arrival and departure steps, energies and powers), times
    ``scale``. Where the day's count is steady, a thin morning means a busy afternoon (and the reverse), which a
    forecast scaled by today's intensity so far gets backwards; where it varies like a Poisson count, the
    posterior says "the history's mean remainder" whatever the morning. A day busier than every history day
    (no N >= n) gets the history's mean remainder for the hour. ``announced``: today's count known in advance (a
    booking or reservation list: information about the day, not its sessions) replaces the history's counts."""

    def __init__(self, days: Sequence[Fleet], scale: float = 1.0, announced: int | None = None) -> None:
        if not days:
            raise ValueError("remaining sessions need at least one history day")
        if not (math.isfinite(scale) and scale >= 0):
            raise ValueError(f"scale must be finite and >= 0, got {scale}")
        if announced is not None and announced < 0:
            raise ValueError(f"an announced count must be >= 0, got {announced}")
        self.scale = scale
        counts, freq = np.unique([d.n for d in days] if announced is None else [announced], return_counts=True)
        self.counts, self.log_prior = counts.astype(float), np.log(freq / freq.sum())
        self.pool = ExpectedArrivals(np.concatenate([d.arrival for d in days]),
                                     np.concatenate([d.departure for d in days]),
                                     np.concatenate([d.energy_wh for d in days]),
                                     np.concatenate([d.p_max_w for d in days]))
        self._later: dict[int, ExpectedArrivals] = {}

    def remaining(self, k: int, n: int) -> float:
        """E[N - n | n sessions arrived by step ``k``]."""
        arrival = self.pool.arrival
        p = float(np.mean(arrival <= k)) if arrival.size else 1.0  # no history session: none still to come
        counts = self.counts
        ok = counts >= n
        if p == 0:
            ok &= n == 0  # nothing arrived this early on any history day: today's early birds are unexplained
        if p == 1:
            ok &= counts == n
        if not ok.any():
            return float(np.exp(self.log_prior) @ counts) * (1.0 - p)
        Nk = counts[ok]
        # log P(N) + log C(N, n) + (N - n) log(1 - p), less what is the same for every N (p^n, 1/n!)
        log_w = self.log_prior[ok] + np.array([math.lgamma(c + 1) - math.lgamma(c - n + 1) for c in Nk])
        if 0 < p < 1:
            log_w += (Nk - n) * math.log1p(-p)
        w = np.exp(log_w - log_w.max())
        return float(w @ (Nk - n) / w.sum())

    def after(self, k: int, f: Fleet) -> ExpectedArrivals:
        """The sessions still expected after step ``k`` of today (``f``: today's EVs; those arrived by ``k``
        count)."""
        if k not in self._later:  # the history's later sessions, one session's worth in all
            pool, keep = self.pool, self.pool.arrival > k
            self._later[k] = ExpectedArrivals.merged(pool.arrival[keep], pool.departure[keep], pool.energy_wh[keep],
                                                     pool.p_max_w[keep], 1.0 / max(int(keep.sum()), 1))
        return self._later[k].after(k, self.scale * self.remaining(k, int((f.arrival <= k).sum())))


class DayForecast(Protocol):
    """The sessions still expected after step ``k`` of today, from what has arrived of today (``f``) by then."""

    def after(self, k: int, f: Fleet) -> ExpectedArrivals: ...


@dataclass(frozen=True)
class LimitEvent:
    """A step at which the EVs that could not wait needed more than the site limit: the limit held, and
    ``shortfall_w`` of what they must have had this step was not given (they may now leave short)."""

    k: int
    must_w: float
    limit_w: float
    shortfall_w: float


@dataclass
class PeakMpc:
    """Receding-horizon min-peak LP over the EVs present (declared energy and departure), optionally the arrivals
    still expected today, under an optional hard site limit."""

    early_weight: float = 1e-4  # per kW and step of delay: among equal peaks, charge early
    peak_w: float = 0.0  # highest site power so far: sunk, so the LP never pays to go below it
    # arrivals still to come: the history's mean (optionally scaled by today's intensity so far, adapt_prior) or
    # a forecast that reads today so far (SimilarDays, RemainingSessions); None: only the EVs present
    expected: ExpectedArrivals | DayForecast | None = None
    adapt_prior: float | None = None  # scale ExpectedArrivals by today's intensity so far (None: don't)
    site_limit_w: float | None = None  # hard: the EVs together never draw more (the connection's share for them)
    events: list[LimitEvent] = field(default_factory=list)  # every step the limit cut what EVs had to have
    solve_s: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.site_limit_w is not None and not (math.isfinite(self.site_limit_w) and self.site_limit_w >= 0):
            raise ValueError(f"site_limit_w must be finite and >= 0, got {self.site_limit_w}")

    def __call__(self, st: State) -> np.ndarray:
        import time

        f = st.fleet
        idx = np.flatnonzero(st.want_w > 0)
        if idx.size == 0:
            return np.zeros(f.n)
        t0 = time.perf_counter()
        expected = None
        if isinstance(self.expected, ExpectedArrivals):
            scale = 1.0
            if self.adapt_prior is not None:  # the declared energy of the EVs arrived so far: known, not foresight
                arrived_wh = float(f.energy_wh[f.arrival <= st.k].sum())
                scale = self.expected.intensity(st.k, arrived_wh, self.adapt_prior)
            expected = self.expected.after(st.k, scale)
        elif self.expected is not None:  # a forecast that reads today so far
            expected = self.expected.after(st.k, f)
        cap = math.inf if self.site_limit_w is None else self.site_limit_w
        plan, _ = _peak_lp(f, st.k, idx, st.remaining_wh[idx], st.soc[idx], self.peak_w, self.early_weight,
                           expected=expected, peak_cap_w=cap)
        self.solve_s.append(time.perf_counter() - t0)
        # the peak reached so far is sunk: using all of it now costs nothing and rounds the plan's shares
        # below an EV's minimum current (which the LP does not model) up rather than down to a pause
        budget = min(max(float(plan[:, 0].sum()), self.peak_w), cap)
        # an EV that cannot finish unless it charges now gets first what it must have this step, and at least
        # its minimum (the LP's share for it may be below the minimum current, which would pause it and leave
        # it short); then the budget's rest goes out least laxity first. The site limit outranks this rule:
        # if the urgent EVs need more than the limit, the most urgent are served within it, the others paused,
        # and the shortfall is recorded as an event, never drawn silently.
        must = st.must_now_w
        urgent = must > 0
        base = np.where(urgent, np.minimum(st.want_w, np.maximum(must, f.p_min_w)), 0.0)
        need = float(base.sum())
        if need > cap:
            order = priority_order(st, "llf")
            granted = allocate(order[urgent[order]], base, f.p_min_w, cap)
            base = np.minimum(granted, base)
            self.events.append(LimitEvent(st.k, need, cap, need - float(base.sum())))
        budget = max(budget, float(base.sum()))
        extra = allocate(priority_order(st, "llf"), st.want_w - base, np.where(base > 0, 0.0, f.p_min_w),
                         budget - float(base.sum()) + 1e-6)
        drawn = base + np.minimum(extra, st.want_w - base)
        limits = np.where(drawn > 0, np.maximum(drawn, f.p_min_w), 0.0)
        self.peak_w = max(self.peak_w, float(np.minimum(limits, st.want_w).sum()))
        return limits


def new_highs():
    """A quiet HiGHS instance on one thread. HiGHS's global scheduler keeps the thread count of the first run in
    the process, and a later instance asking for another count fails (status "Not Set"): every HiGHS user of the
    project (PROFESS, GESSCon) runs on one thread, so this must too."""
    import highspy

    hs = highspy.Highs()
    hs.setOptionValue("output_flag", False)
    hs.setOptionValue("threads", 1)
    hs.setOptionValue("time_limit", 60.0)  # a stalled solve ends as "not optimal" (handled), never a frozen run
    return hs


def highs_with_lp(cost: Any, col_lo: Any, col_hi: Any, mat: Any, row_lo: Any, row_hi: Any) -> Any:
    """A :func:`new_highs` holding ``min cost'x, col_lo <= x <= col_hi, row_lo <= mat x <= row_hi`` (``mat``: any
    scipy sparse matrix), ready for an optional Hessian and ``run()``."""
    import highspy

    a = mat.tocsc()
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = a.shape[1], a.shape[0]
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = np.asarray(cost), np.asarray(col_lo), np.asarray(col_hi)
    lp.row_lower_, lp.row_upper_ = np.asarray(row_lo), np.asarray(row_hi)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = a.indptr, a.indices, a.data
    hs = new_highs()
    hs.passModel(lp)
    return hs


def _peak_lp(f: Fleet, k0: int, idx: np.ndarray, remaining_wh: np.ndarray, soc: np.ndarray, peak_floor_w: float,
             early_weight: float, unmet_penalty: float = 1e3,
             expected: ExpectedArrivals | None = None, peak_cap_w: float = math.inf) -> tuple[np.ndarray, float]:
    """min z + early_weight * sum_t t * P_t + penalty * unmet  (kW, kWh inside)

    s.t. sum_t p_it h + u_i = remaining_i; 0 <= p_it <= p_max_i (0 outside [arrival, departure));
    taper: p_it <= p_max_i (1 - soc_it) / (1 - cv) with soc_it = soc_i + eta/cap * sum_{s<t} p_is h
    (only for EVs that can reach cv_soc); z >= sum_i p_it, min(peak_floor, cap) <= z <= peak_cap (a hard site
    limit: what cannot be delivered under it is unmet, at the penalty).
    ``expected`` adds the arrivals still to come as EVs without taper (their energy, window and power counted
    in the peak rows like a real EV's), so the peak planned now leaves room for them.
    Returns the plan [len(idx), T] in W (the real EVs only) and z in W."""
    import highspy
    import scipy.sparse as sp

    h = f.step_s / 3600.0
    dep = f.departure[idx]
    arr = np.maximum(f.arrival[idx], k0)
    pmax = f.p_max_w[idx] / 1e3
    n_real = idx.size
    if expected is not None:
        e = expected.after(k0)  # (already after k0 when from PeakMpc: a no-op then)
        dep, arr = np.concatenate([dep, e.departure]), np.concatenate([arr, e.arrival])
        pmax = np.concatenate([pmax, e.p_max_w / 1e3])
        remaining_wh = np.concatenate([remaining_wh, e.energy_wh])
        soc = np.concatenate([soc, np.zeros(e.arrival.size)])
    T = int(max(dep.max() - k0, 1))
    m = dep.size
    zc = m * T + m
    nv = zc + 1  # p (row-major by EV), u, z
    col_p = lambda i, t: i * T + t  # noqa: E731
    ub = np.zeros(nv)
    for i in range(m):
        a, d = arr[i] - k0, dep[i] - k0
        ub[col_p(i, a):col_p(i, d)] = pmax[i]
    ub[m * T:m * T + m] = remaining_wh / 1e3
    ub[zc] = peak_cap_w / 1e3
    lb = np.zeros(nv)
    lb[zc] = min(peak_floor_w, peak_cap_w) / 1e3
    cost = np.zeros(nv)
    cost[:m * T] = early_weight * np.tile(np.arange(T), m)
    cost[m * T:m * T + m] = unmet_penalty
    cost[zc] = 1.0
    rows, cols, vals, rlo, rhi = [], [], [], [], []
    r = 0
    # energy
    for i in range(m):
        rows += [r] * (T + 1)
        cols += [col_p(i, t) for t in range(T)] + [m * T + i]
        vals += [h] * T + [1.0]
        rlo.append(remaining_wh[i] / 1e3)
        rhi.append(remaining_wh[i] / 1e3)
        r += 1
    # peak: sum_i p_it - z <= 0
    for t in range(T):
        rows += [r] * (m + 1)
        cols += [col_p(i, t) for i in range(m)] + [zc]
        vals += [1.0] * m + [-1.0]
        rlo.append(-np.inf)
        rhi.append(0.0)
        r += 1
    # taper
    span = 1.0 - f.cv_soc
    cap = f.capacity_wh[idx] / 1e3  # real EVs only: the expected ones are not tapered
    for i in range(n_real):
        if soc[i] + f.eta * remaining_wh[i] / 1e3 / cap[i] <= f.cv_soc:
            continue
        a, d = arr[i] - k0, dep[i] - k0
        c = pmax[i] / span * f.eta / cap[i] * h
        for t in range(a, d):
            rows += [r] * (t - a + 1)
            cols += [col_p(i, s) for s in range(a, t + 1)]
            vals += [c] * (t - a) + [1.0]
            rlo.append(-np.inf)
            rhi.append(max(pmax[i] * (1.0 - soc[i]) / span, f.floor * pmax[i]))
            r += 1
    hs = highs_with_lp(cost, lb, ub, sp.csc_matrix((vals, (rows, cols)), shape=(r, nv)), rlo, rhi)
    hs.run()
    if hs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"peak LP: {hs.modelStatusToString(hs.getModelStatus())}")
    x = np.asarray(hs.getSolution().col_value)
    return x[:n_real * T].reshape(n_real, T) * 1e3, float(x[zc]) * 1e3


@dataclass
class HindsightResult:
    peak_w: float
    plan_w: np.ndarray  # [n, n_steps]
    unmet_wh: float


def hindsight_lp(f: Fleet, early_weight: float = 1e-4) -> HindsightResult:
    """The min-peak schedule with every session known in advance (the perfect-foresight bound; the minimum
    current is relaxed, so it is a lower bound on any feasible schedule's peak)."""
    idx = np.arange(f.n)
    plan, z = _peak_lp(f, 0, idx, f.energy_wh.copy(), f.soc0.copy(), 0.0, early_weight)
    full = np.zeros((f.n, f.n_steps))
    full[:, :plan.shape[1]] = plan[:, :f.n_steps]
    return HindsightResult(z, full, float(np.maximum(f.energy_wh - plan.sum(axis=1) * f.step_s / 3600, 0).sum()))


class Planned:
    """Follow a precomputed plan ``[n, n_steps]`` (W) as limits (e.g. the hindsight optimum)."""

    def __init__(self, plan_w: np.ndarray) -> None:
        self.plan_w = plan_w

    def __call__(self, st: State) -> np.ndarray:
        return self.plan_w[:, st.k] if st.k < self.plan_w.shape[1] else np.zeros(st.fleet.n)


# -- simulation -------------------------------------------------------------------------------------------------

@dataclass
class SimResult:
    power_w: np.ndarray  # [n_steps, n] mean power per step
    delivered_wh: np.ndarray

    @property
    def site_w(self) -> np.ndarray:
        return self.power_w.sum(axis=1)

    @property
    def peak_w(self) -> float:
        return float(self.site_w.max()) if self.power_w.size else 0.0


def simulate(f: Fleet, policy: Callable[[State], np.ndarray]) -> SimResult:
    """Charge the fleet step by step: the policy's limits, the minimum-current pause, the EV's CC-CV curve."""
    delivered = np.zeros(f.n)
    soc = f.soc0.copy()
    power = np.zeros((f.n_steps, f.n))
    for k in range(f.n_steps):
        present = (f.arrival <= k) & (k < f.departure)
        st = State(k, present, delivered, soc, f)
        limits = np.where(present, np.asarray(policy(st), float), 0.0)
        limits = np.where(limits + 1e-9 >= f.p_min_w, limits, 0.0)  # IEC 61851: below the minimum, pause
        e, soc_new = charge_exact(soc, st.remaining_wh, limits, f.p_max_w, np.full(f.n, f.cv_soc),
                                  np.full(f.n, f.floor), f.capacity_wh, np.full(f.n, f.eta), f.step_s)
        e = np.where(present, e, 0.0)
        soc = np.where(present, soc_new, soc)
        delivered = delivered + e
        power[k] = e * 3600.0 / f.step_s
    return SimResult(power, delivered)


def min_site_limit(f: Fleet, make: Callable[[float], Policy], energy_goal: float = 0.999, tol_w: float = 100.0,
                   hi_w: float | None = None) -> tuple[float, SimResult]:
    """The lowest site limit at which ``make(limit)`` still delivers ``energy_goal`` of the energy (bisection)."""
    total = float(f.energy_wh.sum())
    hi = float(hi_w if hi_w is not None else f.p_max_w.sum())
    best = simulate(f, make(hi))
    lo = 0.0
    while hi - lo > tol_w:
        mid = (lo + hi) / 2
        res = simulate(f, make(mid))
        if res.delivered_wh.sum() >= energy_goal * total:
            hi, best = mid, res
        else:
            lo = mid
    return hi, best


def billing_period(days: Sequence[Fleet], make: Callable[[float], Policy]) -> list[SimResult]:
    """Charge consecutive days under one demand charge: the peak is billed once per period, so the highest site
    power of the days so far is sunk and ``make(sunk_peak_w)`` builds each day's policy from it (the realised
    peak only -- no later day is seen). Days are independent otherwise (every session ends the day it starts)."""
    out: list[SimResult] = []
    sunk = 0.0
    for f in days:
        res = simulate(f, make(sunk))
        out.append(res)
        sunk = max(sunk, res.peak_w)
    return out


__all__ = [
    "DayForecast",
    "EqualShare",
    "ExpectedArrivals",
    "Fleet",
    "HindsightResult",
    "LimitEvent",
    "PeakMpc",
    "Planned",
    "PriorityShare",
    "RemainingSessions",
    "SimResult",
    "SimilarDays",
    "State",
    "Uncontrolled",
    "allocate",
    "billing_period",
    "highs_with_lp",
    "hindsight_lp",
    "min_site_limit",
    "new_highs",
    "priority_order",
    "simulate",
]
