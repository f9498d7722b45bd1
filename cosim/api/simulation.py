"""One grid simulation (the DSF-SE run): quasi-static power flows over a period, in a worker thread.

:class:`RunRequest` is the body of ``PUT /se/commands/run/{id}`` (the original's ``sim_duration_in_hours``, or its
``duration`` object, and the three voltage thresholds in % of nominal). :class:`SimulationJob` steps
:class:`simulators.grid.GridEngine` once per step with the loads and PV of :mod:`cosim.api.timeseries`, keeps
per bus and phase the min/max voltage, per line the min/max current and the energy lost, and checks its stop
flag between steps: abort stops it within one power flow (well under a second on a feeder).

Results follow the original's shape (``voltages`` / ``currents`` / ``losses`` / ``powers``) plus what the GUI
needs: each node's worst deviation and its level against the thresholds, the critical nodes, a thinned time
series of the feeder's voltage band and the assumptions the run made.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import datetime
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from simulators.grid import GridEngine, PowerFlowDiverged

from .errors import ApiError
from .grids import StoredGrid
from .timeseries import load_powers, pv_powers

MAX_STEPS = 100_000
MAX_POINT_STEPS = 5_000_000  # loads x steps held in memory
SERIES_POINTS = 500
LEVELS = ("ok", "low", "medium", "high")


class Duration(BaseModel):
    """The original's duration object (a month counts 30 days, a year 365)."""

    model_config = ConfigDict(extra="forbid")
    day: float = Field(0, ge=0)
    month: float = Field(0, ge=0)
    year: float = Field(0, ge=0)

    @property
    def hours(self) -> float:
        return 24.0 * (self.day + 30.0 * self.month + 365.0 * self.year)


class RunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    sim_duration_in_hours: float | None = Field(None, gt=0, le=8784)
    duration: Duration | None = None
    threshold_low: float = Field(3.0, gt=0, le=50, alias="thresholdLow",
                                 description="voltage deviation from nominal, % (first warning level)")
    threshold_medium: float = Field(5.0, gt=0, le=50, alias="thresholdMedium")
    threshold_high: float = Field(10.0, gt=0, le=50, alias="thresholdHigh",
                                  description="beyond this a node is critical (red)")
    step_min: float = Field(15.0, ge=1, le=60, description="minutes between power flows")
    start: datetime = Field(datetime.fromisoformat("2019-06-15T00:00:00+02:00"),
                            description="simulated start (timezone-aware): picks the days of the measured profiles")
    load_profile: Literal["file", "constant", "s4g-residential"] = "file"
    load_scale: float = Field(1.0, ge=0, le=10, description="every load's power times this (what-if)")
    pv: bool = Field(True, description="DSF-SE photovoltaics produce (else they are off)")
    gridId: str | None = Field(None, description="accepted for the original clients; the path names the grid")

    @model_validator(mode="after")
    def _check(self) -> RunRequest:
        if self.sim_duration_in_hours is None and self.duration is None:
            raise ValueError("give sim_duration_in_hours or duration {day, month, year}")
        if self.hours <= 0 or self.hours > 8784:
            raise ValueError(f"the duration must be > 0 and at most a year, found {self.hours} h")
        if not self.threshold_low <= self.threshold_medium <= self.threshold_high:
            raise ValueError("thresholds must satisfy threshold_low <= threshold_medium <= threshold_high")
        if self.start.tzinfo is None:
            raise ValueError("start needs a timezone, e.g. 2019-06-15T00:00:00+02:00")
        if int(self.step_min * 60) % 60 != 0:
            raise ValueError("step_min must be a whole number of seconds / 60 (a whole minute)")
        return self

    @property
    def hours(self) -> float:
        return self.sim_duration_in_hours if self.sim_duration_in_hours is not None else self.duration.hours  # type: ignore[union-attr]

    @property
    def step_s(self) -> int:
        return int(self.step_min) * 60

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.hours * 3600 / self.step_s))


def level_of(deviation_pct: float, req: RunRequest) -> str:
    if not math.isfinite(deviation_pct):
        return "high"
    if deviation_pct > req.threshold_high:
        return "high"
    if deviation_pct > req.threshold_medium:
        return "medium"
    if deviation_pct > req.threshold_low:
        return "low"
    return "ok"


class SimulationJob:
    """A grid and its latest run. State: created | running | done | aborted | failed."""

    def __init__(self, grid: StoredGrid) -> None:
        self.grid = grid
        self.state = "created"
        self.progress = 0.0  # 0..100
        self.error: str | None = None
        self.request: RunRequest | None = None
        self.result: dict[str, Any] | None = None
        self.started: float | None = None
        self.finished: float | None = None
        self.owner = "local"  # the user who started the latest run (per-user quota)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def start(self, req: RunRequest, owner: str = "local") -> None:
        if req.steps > MAX_STEPS:
            raise ApiError(422, f"{req.steps} steps: more than {MAX_STEPS}; use a longer step_min or a shorter "
                                "duration")
        if req.steps * (self.grid.loads + 1) > MAX_POINT_STEPS:
            raise ApiError(422, f"{req.steps} steps x {self.grid.loads} loads is over the limit of "
                                f"{MAX_POINT_STEPS}; use a longer step_min")
        self.request, self.state, self.progress, self.error, self.result = req, "running", 0.0, None, None
        self.started, self.finished, self.owner = time.time(), None, owner
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run_catching, args=(req, self._stop),
                                        name=f"se-{self.grid.id}", daemon=True)
        self._thread.start()

    def abort(self) -> None:
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the worker has ended (for tests and shutdown)."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def eta_s(self) -> float | None:
        """Seconds left by the progress so far (None before the first step)."""
        if not self.running or self.started is None or self.progress <= 0:
            return None
        return (time.time() - self.started) * (100.0 - self.progress) / self.progress

    def status(self) -> dict[str, Any]:
        return {"id": self.grid.id, "state": self.state, "progress": round(self.progress, 1), "error": self.error,
                "elapsed_s": None if self.started is None else (self.finished or time.time()) - self.started}

    def _run_catching(self, req: RunRequest, stop: threading.Event) -> None:
        try:
            result = run_simulation(self.grid, req, stop, self._set_progress)
            if stop.is_set():
                self.state = "aborted"
            else:
                self.result, self.progress, self.state = result, 100.0, "done"
        except PowerFlowDiverged as exc:
            self.error, self.state = f"the power flow did not converge: {exc}", "failed"
        except ApiError as exc:
            self.error, self.state = exc.reason, "failed"
        except Exception as exc:  # reported in the status; the server goes on
            self.error, self.state = f"{type(exc).__name__}: {exc}", "failed"
        finally:
            self.finished = time.time()

    def _set_progress(self, pct: float) -> None:
        # 100 only with the results in place: a client polling for 100 then fetching them must not get a 409
        self.progress = min(pct, 99.9)


def _prepare_engine(grid: StoredGrid,
                    req: RunRequest) -> tuple[GridEngine, list[dict[str, Any]], list[str], np.ndarray]:
    model = grid.model()
    net = model.net
    # unrated lines get 1 kA so that loading % / 100 is the current in kA; their loading is not reported
    unrated = net.line.max_i_ka.isna() | (net.line.max_i_ka <= 0)
    net.line.loc[unrated, "max_i_ka"] = 1.0
    pv_units = [d for d in model.ders if d.get("kind") == "pv"] if req.pv else []
    extra = [{"id": f"pv:{d['id']}", "bus": d["bus"]} for d in pv_units]
    mode: Literal["balanced", "unbalanced"] = (
        "unbalanced" if any(load.phase is not None for load in model.loads) else "balanced")
    engine = GridEngine(model, mode=mode, solver="fast", extra_loads=extra, static_loads="file")
    i_max_ka = (net.line.max_i_ka * net.line.df * net.line.parallel).to_numpy(dtype=float)
    return engine, pv_units, [str(x) for x in np.asarray(model.line_names)[unrated.to_numpy()]], i_max_ka


def run_simulation(grid: StoredGrid, req: RunRequest, stop: threading.Event,
                   progress: Any = lambda pct: None) -> dict[str, Any]:
    engine, pv_units, unrated, i_max_ka = _prepare_engine(grid, req)
    model = engine.model
    n, step_s = req.steps, req.step_s
    n_file = len(model.loads) - len(pv_units)
    names = engine.load_names[:n_file]
    base_p, base_q = engine.p_w[:n_file].copy(), engine.q_var[:n_file].copy()
    # reactive power follows active power at each load's own ratio; a load with Q but no P keeps its Q (scaled)
    q_ratio = np.divide(base_q, base_p, out=np.zeros_like(base_q), where=base_p != 0)
    q_fixed = np.where(base_p == 0, base_q * req.load_scale, 0.0)
    p_load = load_powers(grid.document, names, base_p, req.load_profile, req.start, step_s, n) * req.load_scale
    p_pv = pv_powers(grid.document, pv_units, req.start, step_s, n)
    nb, nl = len(model.bus_names), len(model.line_names)
    v_min, v_max = np.full((3, nb), np.inf), np.full((3, nb), -np.inf)
    i_min, i_max = np.full(nl, np.inf), np.full(nl, -np.inf)
    line_loss_wh, total_loss_wh = np.zeros(nl), 0.0
    trafo_peak_w = np.zeros(len(model.trafo_names))
    keep = max(1, n // SERIES_POINTS)
    series: dict[str, list[float]] = {"t_h": [], "v_min_pu": [], "v_max_pu": [], "load_kw": [], "losses_kw": []}
    dt_h = step_s / 3600.0
    for k in range(n):
        if stop.is_set():
            break
        engine.p_w[:n_file] = p_load[:, k]
        engine.q_var[:n_file] = p_load[:, k] * q_ratio + q_fixed
        engine.p_w[n_file:] = p_pv[:, k]
        res = engine.solve()
        v = res.v_abc_pu
        np.minimum(v_min, v, out=v_min)
        np.maximum(v_max, v, out=v_max)
        i_a = res.line_loading_pct / 100.0 * i_max_ka * 1000.0
        np.minimum(i_min, i_a, out=i_min)
        np.maximum(i_max, i_a, out=i_max)
        line_loss_wh += res.line_pl_w * dt_h
        total_loss_wh += res.losses_w * dt_h
        np.maximum(trafo_peak_w, np.abs(res.trafo_p_hv_w), out=trafo_peak_w)
        if k % keep == 0 or k == n - 1:
            series["t_h"].append(k * dt_h)
            series["v_min_pu"].append(float(np.min(v)))
            series["v_max_pu"].append(float(np.max(v)))
            series["load_kw"].append(float(engine.p_w.sum()) / 1000.0)
            series["losses_kw"].append(res.losses_w / 1000.0)
        progress(100.0 * (k + 1) / n)
    return _result(model, req, v_min, v_max, i_min, i_max, line_loss_wh, total_loss_wh, trafo_peak_w, series,
                   unrated, engine.mode)


def _phases(vmin: np.ndarray, vmax: np.ndarray, j: int) -> dict[str, dict[str, float]]:
    return {f"Phase {p + 1}": {"max": float(vmax[p, j]), "min": float(vmin[p, j])} for p in range(3)}


def _result(model: Any, req: RunRequest, v_min: np.ndarray, v_max: np.ndarray, i_min: np.ndarray,
            i_max: np.ndarray, line_loss_wh: np.ndarray, total_loss_wh: float, trafo_peak_w: np.ndarray,
            series: dict[str, list[float]], unrated: list[str], mode: str) -> dict[str, Any]:
    nodes = []
    for j, bus in enumerate(model.bus_names):
        lo, hi = float(np.min(v_min[:, j])), float(np.max(v_max[:, j]))
        dev = 100.0 * max(abs(hi - 1.0), abs(1.0 - lo))
        nodes.append({"bus": bus, "v_min_pu": lo, "v_max_pu": hi, "deviation_pct": dev,
                      "level": level_of(dev, req)})
    line_kwh = line_loss_wh / 1000.0
    trafo_kwh = max(total_loss_wh / 1000.0 - float(line_kwh.sum()), 0.0)
    assumptions = list(model.assumptions) + [
        "voltages in pu of each bus's nominal phase-to-neutral voltage; currents in A; losses in kWh",
        "currents are those of each line's most loaded phase",
        "storage units and charging stations of a DSF-SE grid are not dispatched (they stay idle)",
        f"power flow: {mode}",
    ]
    if unrated:
        assumptions.append(f"{len(unrated)} line(s) without a rating: currents reported, loading not")
    return {
        "voltages": {bus: _phases(v_min, v_max, j) for j, bus in enumerate(model.bus_names)},
        "currents": {line: {"Most loaded phase": {"max": float(i_max[k]), "min": float(i_min[k])}}
                     for k, line in enumerate(model.line_names)},
        "losses": {"circuit_total_losses": total_loss_wh / 1000.0,
                   "Line": {line: float(line_kwh[k]) for k, line in enumerate(model.line_names)},
                   "Transformer": {"all": trafo_kwh}},
        "powers": {"Transformer": {t: float(trafo_peak_w[k]) / 1000.0 for k, t in enumerate(model.trafo_names)}},
        "nodes": nodes,
        "critical_nodes": [n["bus"] for n in nodes if n["level"] == "high"],
        "thresholds": {"low": req.threshold_low, "medium": req.threshold_medium, "high": req.threshold_high},
        "summary": {"v_min_pu": float(np.min(v_min)), "v_max_pu": float(np.max(v_max)),
                    "losses_kwh": total_loss_wh / 1000.0, "steps": req.steps, "step_s": req.step_s,
                    "hours": req.hours},
        "series": series,
        "assumptions": assumptions,
    }
