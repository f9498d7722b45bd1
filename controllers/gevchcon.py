"""GEVChCon: the DSO's EV charging envelopes for the sites of one feeder, day-ahead and intraday.

The original GEVChCon chose per-site EV charging profiles with a genetic algorithm minimising the standard
deviation of the feeder's aggregate over 24 hourly steps. Here the same problem is solved exactly as a convex QP
(HiGHS): with ``x[s,h]`` the EV energy site s charges in hour h (kWh, = mean kW),

    min  sum_h (P[h] - mean(P))^2 + penalty * sum_s short[s]        P[h] = sum_s (B[s,h] + x[s,h])
    s.t. L[s,h] - short[s] <= sum_{h'<=h} x[s,h'] <= U[s,h]           (energy due / energy arrived by hour h)
         0 <= x[s,h] <= Pmax[s]

``B`` is each site's forecast load without EVs, ``U`` the cumulative energy of the EVs expected to have
arrived by the end of hour h, ``L`` that of the EVs expected to have left (due), both the mean of the same day
type (working day / weekend) over the site's session history, ``Pmax`` what the site's wallboxes may draw.
Minimising the sum of squared deviations from the mean is minimising the standard deviation (24 fixed steps).
:func:`min_peak` solves the LP variant (the peak of P), :func:`genetic` is a GA of the original's kind for the
comparison (benchmarks/ev_scheduling.py reports the std of both on the same inputs).

Each site's envelope (the LEVChAg cap on its EVs for the hour) is ``x[s,h]`` plus ``headroom_w``, published
once a day (``plan_at_s``) and re-planned every ``intraday_s`` with the energy the site's EVs really took so far
(telemetry), as one SenML pack per site of 24 hourly values on the Control Broker (the GESSCon format,
controllers/gesscon.py ``to_senml``).
"""

from __future__ import annotations

import math
import time as _time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import mosaik_api_v3
from mosaik_api_v3.types import CreateResult, Meta
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from controllers.ev_scheduling import highs_with_lp
from controllers.schedule_codec import to_senml
from controllers.levchag import LevchagParams, site_agent, site_wallboxes, wallbox_views
from controllers.registry import ControllerKind

if TYPE_CHECKING:  # pragma: no cover
    from cosim.scenario import ControllerSpec
    from cosim.world import WorldBuilder

HOURS = 24


@dataclass(frozen=True)
class FeederInputs:
    base_w: np.ndarray  # [S, 24] forecast load without EVs
    due_wh: np.ndarray  # [S, 24] cumulative EV energy due by the end of each hour (L)
    arrived_wh: np.ndarray  # [S, 24] cumulative EV energy arrived by the end of each hour (U)
    p_max_w: np.ndarray  # [S]

    def check(self) -> None:
        s = self.base_w.shape[0]
        for name in ("base_w", "due_wh", "arrived_wh"):
            a = getattr(self, name)
            if a.shape != (s, HOURS) or not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be finite, shape ({s}, {HOURS})")
        if self.p_max_w.shape != (s,) or np.any(self.p_max_w < 0):
            raise ValueError("p_max_w must be >= 0, one per site")


@dataclass
class EnvelopePlan:
    x_w: np.ndarray  # [S, 24] planned EV power per site and hour
    aggregate_w: np.ndarray  # [24]
    short_wh: np.ndarray  # [S] energy the plan cannot deliver by its due hour
    std_w: float  # the original objective: standard deviation of the aggregate over 24 steps
    peak_w: float
    solve_s: float


def _solve(inp: FeederInputs, quadratic: bool, penalty: float = 1e4) -> EnvelopePlan:
    """Columns: x[s,h] (kW), short[s] (kWh) [, z (kW) for the LP]; rows: cumsum_h x + short >= L (the slack,
    penalised, reports what cannot be delivered), cumsum_h x <= U, and for the LP sum_s x[s,h] - z <= -B[h]."""
    import highspy
    import scipy.sparse as sp

    inp.check()
    t0 = _time.perf_counter()
    s = inp.base_w.shape[0]
    n = s * HOURS
    b = inp.base_w.sum(axis=0) / 1e3
    cum = sp.kron(sp.identity(s), sp.csr_matrix(np.tril(np.ones((HOURS, HOURS)))))
    short = sp.kron(sp.identity(s), sp.csr_matrix(np.ones((HOURS, 1))))
    blocks = [sp.vstack([cum, cum]), sp.vstack([short, sp.csr_matrix((n, s))])]
    row_lo = [(inp.due_wh / 1e3).ravel(), np.full(n, -np.inf)]
    row_hi = [np.full(n, np.inf), (np.maximum(inp.arrived_wh, inp.due_wh) / 1e3).ravel()]
    col_lo: list[np.ndarray | list[float]] = [np.zeros(n + s)]
    col_hi: list[np.ndarray | list[float]] = [np.repeat(inp.p_max_w / 1e3, HOURS), np.full(s, np.inf)]
    cost = np.concatenate([np.zeros(n), np.full(s, penalty)])
    if quadratic:
        cost[:n] = 2.0 * np.tile((np.eye(HOURS) - 1.0 / HOURS) @ b, s)  # linear part of |C (b + A x)|^2
        mat = sp.hstack(blocks)
    else:
        agg = sp.hstack([sp.kron(sp.csr_matrix(np.ones((1, s))), sp.identity(HOURS)), sp.csr_matrix((HOURS, s)),
                         sp.csr_matrix(-np.ones((HOURS, 1)))])
        mat = sp.vstack([sp.hstack([*blocks, sp.csr_matrix((2 * n, 1))]), agg])
        row_lo.append(np.full(HOURS, -np.inf))
        row_hi.append(-b)
        col_lo.append([-np.inf])
        col_hi.append([np.inf])
        cost = np.concatenate([cost, [1.0]])
    hs = highs_with_lp(cost, np.concatenate(col_lo), np.concatenate(col_hi), mat, np.concatenate(row_lo),
                       np.concatenate(row_hi))
    if quadratic:  # 1/2 x'Qx with Q = 2 A'CA, A = [I ... I], C the centring matrix; HiGHS takes the lower triangle
        # The aggregate's variance leaves every split of an hour's energy between sites equally good: a singular,
        # highly degenerate Hessian on which HiGHS's active-set QP can cycle for minutes. A small ridge (1e-6 of
        # the curvature) makes it strictly convex and picks the most even split, at no visible cost in variance.
        ridge = 2e-6 * sp.identity(n)
        q = sp.block_diag([sp.kron(np.ones((s, s)), 2.0 * (np.eye(HOURS) - 1.0 / HOURS)) + ridge,
                           sp.csr_matrix((s, s))])
        q = sp.tril(q).tocsc()
        hess = highspy.HighsHessian()
        hess.dim_ = mat.shape[1]
        hess.format_ = highspy.HessianFormat.kTriangular
        hess.start_, hess.index_, hess.value_ = q.indptr, q.indices, q.data
        hs.passHessian(hess)
    hs.run()
    status = hs.getModelStatus()
    if status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"GEVChCon: {hs.modelStatusToString(status)}")
    x = np.asarray(hs.getSolution().col_value)
    xw = np.maximum(x[:n].reshape(s, HOURS), 0.0) * 1e3
    agg = inp.base_w.sum(axis=0) + xw.sum(axis=0)
    return EnvelopePlan(xw, agg, x[n:n + s] * 1e3, float(agg.std()), float(agg.max()), _time.perf_counter() - t0)


def min_variance(inp: FeederInputs) -> EnvelopePlan:
    """The original objective, solved exactly: minimum standard deviation of the aggregate (QP)."""
    return _solve(inp, quadratic=True)


def min_peak(inp: FeederInputs) -> EnvelopePlan:
    """The LP variant: minimum peak of the aggregate."""
    return _solve(inp, quadratic=False)


def violation_wh(inp: FeederInputs, x_w: np.ndarray) -> float:
    """How far a plan breaks the cumulative bounds and the power limits (Wh, summed)."""
    cum = np.cumsum(x_w, axis=1)
    v = np.maximum(inp.due_wh - cum, 0).sum() + np.maximum(cum - np.maximum(inp.arrived_wh, inp.due_wh), 0).sum()
    return float(v + np.maximum(x_w - inp.p_max_w[:, None], 0).sum() + np.maximum(-x_w, 0).sum())


def genetic(inp: FeederInputs, *, population: int = 200, generations: int = 400, seed: int = 0,
            penalty_per_wh: float = 10.0) -> EnvelopePlan:
    """A genetic algorithm of the original's kind: real-coded profiles, tournament selection, blend crossover,
    Gaussian mutation, elitism; fitness = std of the aggregate + a penalty per Wh of broken bounds."""
    inp.check()
    t0 = _time.perf_counter()
    rng = np.random.default_rng(seed)
    s = inp.base_w.shape[0]
    hi = inp.p_max_w[None, :, None]
    total = inp.due_wh[:, -1]
    # start from "charge the day's energy evenly over the hours the EVs are there"
    present = np.maximum(np.diff(np.concatenate([np.zeros((s, 1)), inp.arrived_wh], axis=1)), 0) > 0
    even = np.where(present, total[:, None] / np.maximum(present.sum(axis=1, keepdims=True), 1), 0.0)
    pop = np.clip(even[None] * rng.uniform(0.5, 1.5, (population, s, HOURS)), 0, hi)

    def fitness(p: np.ndarray) -> np.ndarray:
        agg = inp.base_w.sum(axis=0)[None] + p.sum(axis=1)
        cum = np.cumsum(p, axis=2)
        v = (np.maximum(inp.due_wh[None] - cum, 0).sum(axis=(1, 2))
             + np.maximum(cum - np.maximum(inp.arrived_wh, inp.due_wh)[None], 0).sum(axis=(1, 2)))
        return agg.std(axis=1) + penalty_per_wh * v

    f = fitness(pop)
    scale = float(max(inp.p_max_w.max(), 1.0)) * 0.05
    for _ in range(generations):
        elite = pop[np.argsort(f)[: max(2, population // 20)]]
        i, j = rng.integers(0, population, (2, population))
        parents_a = np.where((f[i] < f[j])[:, None, None], pop[i], pop[j])
        i, j = rng.integers(0, population, (2, population))
        parents_b = np.where((f[i] < f[j])[:, None, None], pop[i], pop[j])
        w = rng.uniform(-0.25, 1.25, (population, s, HOURS))
        child = parents_a + w * (parents_b - parents_a)
        mutate = rng.random((population, s, HOURS)) < 0.05
        child = np.clip(child + mutate * rng.normal(0, scale, child.shape), 0, hi)
        child[: elite.shape[0]] = elite
        pop, f = child, fitness(child)
    best = pop[int(np.argmin(f))]
    agg = inp.base_w.sum(axis=0) + best.sum(axis=0)
    short = np.maximum(inp.due_wh - np.cumsum(best, axis=1), 0).max(axis=1)
    return EnvelopePlan(best, agg, short, float(agg.std()), float(agg.max()), _time.perf_counter() - t0)


# -- forecasts from history --------------------------------------------------------------------------------------

def ev_demand_forecast(sessions: list[tuple[float, float, float]], history_days: list[tuple[int, int]],
                       weekday: int) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative arrived, cumulative due) EV energy per hour of a day with this weekday: the mean over the
    history days of the same day type. ``sessions`` = (arrival_s, departure_s, energy_wh) with times from the
    local midnight of history day 0; ``history_days`` = [(day index, weekday)]."""
    same = [d for d, wd in history_days if (wd < 5) == (weekday < 5)]
    arrived = np.zeros(HOURS)
    due = np.zeros(HOURS)
    if not same:
        return arrived, due
    days = set(same)
    for a, d, e in sessions:
        day = int(a // 86400)
        if day not in days:
            continue
        ha = min(int((a - day * 86400) // 3600), HOURS - 1)
        hd = min(int(math.ceil((d - day * 86400) / 3600)) - 1, HOURS - 1)  # due by the end of the hour before it left
        arrived[ha] += e
        due[max(hd, ha)] += e
    return np.cumsum(arrived) / len(same), np.cumsum(due) / len(same)


# -- mosaik wrapper ----------------------------------------------------------------------------------------------

class GevchconParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    plan_at_s: int = Field(0, ge=0, lt=86400, description="seconds after the start of the day-ahead plan")
    intraday_s: int = Field(14400, ge=3600, description="re-plan the rest of the day this often")
    history_days: int = Field(14, ge=1, le=366)
    headroom_w: float = Field(2000.0, ge=0, description="added to each site's planned EV power in its envelope")
    forecast: str = Field("history", pattern="^(history|perfect)$")
    levchag: LevchagParams = Field(default_factory=LevchagParams)


META = {
    "api_version": "3.0",
    "type": "time-based",
    "models": {
        "Feeder": {"public": True, "params": ["params", "sites", "start_unix_s"],
                   "attrs": ["std_w", "peak_w", "solve_ms"]},
        "Site": {"public": False, "params": [], "attrs": ["ev_p_w", "envelope", "envelope_issued_s"]},
    },
}


class GevchconSim(mosaik_api_v3.Simulator):
    def __init__(self) -> None:
        super().__init__(META)
        self.feeders: dict[str, dict[str, Any]] = {}
        self.site_of: dict[str, tuple[str, int]] = {}
        self.step_size = 60

    def init(self, sid: str, time_resolution: float = 1.0, step_size: int = 60, **_: Any) -> Meta:
        self.step_size = int(step_size)
        return self.meta

    # mosaik passes the model's parameters by keyword (narrower than the base's **model_params)
    def create(self, num: int, model: str, params: dict | None = None, sites: list[dict] | None = None,  # type: ignore[override]
               start_unix_s: float = 0.0) -> list[CreateResult]:
        if model != "Feeder":
            raise ValueError("create Feeder entities; their Site children come with them")
        p = GevchconParams.model_validate(params or {})
        out: list[CreateResult] = []
        for _ in range(num):
            eid = f"Gevchcon_{len(self.feeders)}"
            ss = list(sites or [])
            self.feeders[eid] = {"p": p, "sites": ss, "start": float(start_unix_s), "plan": None, "packs": {},
                                 "issued": -1.0, "delivered_wh": np.zeros(len(ss)), "day0": 0, "solve_ms": 0.0,
                                 "x_done": np.zeros((len(ss), HOURS))}
            children: list[CreateResult] = []
            for i, s in enumerate(ss):
                cid = f"{eid}.{s['id']}"
                self.site_of[cid] = (eid, i)
                children.append({"eid": cid, "type": "Site"})
            out.append({"eid": eid, "type": "Feeder", "children": children})
        return out

    def _plan(self, f: dict, time: int) -> None:
        p, ss = f["p"], f["sites"]
        day_start = time - (time - p.plan_at_s) % 86400
        h_now = (time - day_start) // 3600
        day = (day_start - p.plan_at_s) // 86400
        base = np.array([np.resize(np.asarray(s["base_w"], float)[day * HOURS:], HOURS) for s in ss])
        arrived = np.array([s["arrived_wh"][day % len(s["arrived_wh"])] for s in ss], float)
        due = np.array([s["due_wh"][day % len(s["due_wh"])] for s in ss], float)
        if h_now > 0:  # intraday: the past hours are what the EVs took; the rest is re-planned
            done = f["x_done"][:, :h_now].sum(axis=1)
            arrived = np.maximum(arrived - done[:, None], 0.0)
            due = np.maximum(due - done[:, None], 0.0)
            arrived[:, :h_now] = due[:, :h_now] = 0.0
        inp = FeederInputs(base, due, arrived, np.array([s["p_max_w"] for s in ss], float))
        plan = min_variance(inp)
        x = plan.x_w.copy()
        if h_now > 0:
            x[:, :h_now] = f["x_done"][:, :h_now]
        f["plan"], f["solve_ms"] = plan, plan.solve_s * 1e3
        f["packs"] = {s["id"]: to_senml(s["id"], f["start"] + day_start, x[i] + p.headroom_w)
                      for i, s in enumerate(ss)}
        f["issued"] = float(time)

    def step(self, time: int, inputs: dict, max_advance: int) -> int:
        for cid, attrs in inputs.items():
            feid, i = self.site_of[cid]
            f = self.feeders[feid]
            got = [v for v in attrs.get("ev_p_w", {}).values() if v is not None]
            if got:
                h = ((time - f["p"].plan_at_s) % 86400) // 3600
                f["x_done"][i, h] += float(sum(got)) * self.step_size / 3600.0
        for f in self.feeders.values():
            p = f["p"]
            if time >= p.plan_at_s and (time - p.plan_at_s) % 86400 == 0:
                f["x_done"][:] = 0.0
            if time >= p.plan_at_s and (time - p.plan_at_s) % p.intraday_s == 0:
                self._plan(f, time)
        return time + self.step_size

    def get_data(self, outputs: dict) -> dict:
        data: dict[str, dict[str, Any]] = {}
        for eid, attrs in outputs.items():
            if eid in self.feeders:
                f = self.feeders[eid]
                plan = f["plan"]
                data[eid] = {a: (float(getattr(plan, a)) if plan is not None and a != "solve_ms" else
                                 float(f["solve_ms"]) if a == "solve_ms" else math.nan) for a in attrs}
                continue
            feid, i = self.site_of[eid]
            f = self.feeders[feid]
            sid = f["sites"][i]["id"]
            data[eid] = {a: ((f["packs"].get(sid) or []) if a == "envelope" else f["issued"]) for a in attrs
                         if a in ("envelope", "envelope_issued_s")}
        return data


def _build(builder: WorldBuilder, spec: ControllerSpec, params: GevchconParams) -> None:
    from controllers.profev import ProfevParams, base_load_w, fleet_presence

    sc = builder.scenario
    days = max(1, -(-sc.duration // 86400)) + 1
    bp = ProfevParams(step_s=3600, replan_s=3600, horizon_s=86400, history_days=params.history_days,
                      forecast=params.forecast)
    sites, agents = [], []
    from zoneinfo import ZoneInfo

    start_weekday = (sc.start.astimezone(ZoneInfo(sc.timezone)) if sc.timezone else sc.start).weekday()
    for site_id, wbs in site_wallboxes(builder, spec).items():
        agents.append((site_id, site_agent(builder, spec, site_id, wbs, params.levchag)))
        _, evs = fleet_presence(builder, wbs, 3600, params.history_days)
        first = -params.history_days * 86400 - (sc.start.hour * 3600 + sc.start.minute * 60)
        sessions = [(e.t_arrival_s - first, e.t_departure_s - first, e.energy_wanted_wh) for e in evs]
        hist_days = [(d, (start_weekday - params.history_days + d) % 7) for d in range(params.history_days - 1)]
        fc = [ev_demand_forecast(sessions, hist_days, (start_weekday + d) % 7) for d in range(days)]
        p_max = sum(w["p_hw_max_w"] for w in wallbox_views(builder, wbs))
        limit = params.levchag.site_limit_w
        sites.append({"id": site_id, "base_w": base_load_w(builder, site_id, bp),
                      "arrived_wh": [a.tolist() for a, _ in fc], "due_wh": [d.tolist() for _, d in fc],
                      "p_max_w": min(p_max, limit)})
    sim = builder.sim("Gevchcon", "controllers.gevchcon:GevchconSim")
    feeder = builder.add_entity(sim.Feeder(params=params.model_dump(), sites=sites, start_unix_s=sc.start.timestamp()))
    for attr in ("std_w", "peak_w", "solve_ms"):
        builder.record(feeder, attr, "controllers", f"{spec.id}.{attr}")
    for child, (_site_id, agent) in zip(feeder.children, agents):
        builder.add_entity(child)
        builder.connect(agent, child, "ev_p_w", role="data", sender_kind="controller")
        builder.connect(child, agent, "envelope", "envelope_issued_s", role="control", time_shifted=True,
                        initial_data={"envelope": [], "envelope_issued_s": -1.0})


GEVCHCON = ControllerKind("gevchcon", GevchconParams, _build,
                          "DSO: per-site EV power envelopes flattening the feeder's aggregate (QP, HiGHS), "
                          "day-ahead and intraday, executed by each site's LEVChAg")
