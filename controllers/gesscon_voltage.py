"""The feeder's voltage limits in GESSCon's plan: a power flow at the forecast, linear in the planned batteries.

For each hour of the plan GESSCon knows (forecasts) the net power of every connection point of the feeder with the
batteries idle; one power flow of the grid model at those injections gives the base voltages ``V0[h, node]``
(every bus-phase). The batteries it plans move them; for each battery, one more power flow with 1 kW more drawn at
its connection point gives the sensitivity ``S[h, node, b] = dV/dP`` (pu per kW, negative: charging lowers the
voltage). The plan then keeps ``V0 + S x`` within ``[v_min + margin, v_max - margin]`` (soft, with a penalty far
above any price), ``x`` the batteries' hourly power (kW, + = charging). Only node-hours whose base voltage comes
within ``watch_pu`` of a limit get a constraint: the rest cannot reach a limit with the batteries at hand.

PV for the voltage check. A causal day-ahead forecast (persistence, seasonal naive, ridge) follows the last days; on
the Fur summer week the hot days come after cloudy ones, so the forecast misses exactly the hours the limits are for.
The voltage rows therefore use, for each hour, the largest PV seen at that hour over the last ``pv_days`` days (or
the forecast, if larger): still causal, planned for the sunniest recent day. The energy part of the plan keeps the
forecast.

The linearisation error is measured after each plan: the power flow with the planned battery powers against
``V0 + S x`` (the largest absolute difference over node-hours). Linearised at idle batteries it grows with the
battery power: on the Fur feeder with the 50 kW LiBal battery at node_a12 at midday 2.6e-4 pu at 10 kW, 2.7e-3 at
30 kW, 8.3e-3 at 50 kW (tests/test_gesscon_voltage.py) -- at full power more than the margin. So the plan is
re-linearised where it ended up (``V(x_k) + S(x_k) (x - x_k)``) and solved again, up to ``refinements`` times or
until the error is below ``tolerance_pu``; the error of the final plan is reported (``v_lin_error_pu``).
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


class VoltageLimits(BaseModel):
    """``params.voltage_limits`` of a gesscon controller."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    v_min_pu: float = Field(0.90, gt=0)
    v_max_pu: float = Field(1.10, gt=0)
    margin_pu: float = Field(0.005, ge=0, description="kept inside the band (forecast and linearisation error)")
    watch_pu: float = Field(0.05, gt=0, description="node-hours with V0 this close to a limit get a constraint")
    penalty_eur_per_pu_h: float = Field(1000.0, gt=0, description="cost of a planned violation")
    perturbation_w: float = Field(1000.0, gt=0)
    pv_days: int = Field(7, ge=0, le=31, description="plan the voltages for the sunniest of the last N days seen at "
                         "each hour (a day-ahead PV forecast cannot tell a clear day after cloudy ones); 0 = the "
                         "forecast itself")
    refinements: int = Field(3, ge=0, le=10, description="re-linearise at the plan and solve again, at most")
    tolerance_pu: float = Field(5e-4, gt=0, description="stop refining when the plan's error is below this")

    @model_validator(mode="after")
    def _band(self) -> VoltageLimits:
        if not self.v_min_pu + self.margin_pu < self.v_max_pu - self.margin_pu:
            raise ValueError("the band [v_min + margin, v_max - margin] is empty")
        return self


@dataclass
class VoltageRows:
    """The voltage constraints of one plan: ``lo <= coef @ x[:, hour] <= hi`` per selected node-hour."""

    hour: np.ndarray  # (k,)
    node: np.ndarray  # (k,) index into the flattened (phase, bus) voltages
    coef: np.ndarray  # (k, n_batteries) pu per kW
    lo: np.ndarray  # (k,) pu
    hi: np.ndarray  # (k,)
    penalty: float = 1000.0  # EUR per pu of violation and hour


class FeederVoltageModel:
    """Base voltages and battery sensitivities on a grid engine (simulators.grid.GridEngine)."""

    def __init__(self, engine, battery_loads: list[str], limits: VoltageLimits) -> None:
        self.engine = engine
        self.limits = limits
        self.battery_pos = np.array([engine.load_pos[name] for name in battery_loads], dtype=int)
        self.n_loads = len(engine.load_names)

    def _voltages(self, p_w: np.ndarray, q_var: np.ndarray) -> np.ndarray:
        res = self.engine.powerflow.solve(p_w, q_var)
        return np.asarray(res.v_abc_pu, dtype=float).ravel()

    def base(self, p_w: np.ndarray, q_var: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(V0 (H, nodes), S (H, nodes, batteries)) for hourly injections ``p_w``, ``q_var`` (H, loads), W/var."""
        icpt, sens, _ = self.linearise(p_w, q_var, np.zeros((self.battery_pos.size, p_w.shape[0])))
        return icpt, sens

    def linearise(self, p_w: np.ndarray, q_var: np.ndarray, x_kw: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Linear model around battery powers ``x_kw`` (batteries, H): (intercept, S, V(x)) with
        ``V(x') ~ intercept + S x'`` (H, nodes)."""
        hours = p_w.shape[0]
        step = self.limits.perturbation_w
        v_x = np.zeros((hours, 3 * len(self.engine.model.bus_names)))
        sens = np.zeros((hours, v_x.shape[1], self.battery_pos.size))
        for h in range(hours):
            p = p_w[h].copy()
            p[self.battery_pos] += x_kw[:, h] * 1e3
            v_x[h] = self._voltages(p, q_var[h])
            for b, k in enumerate(self.battery_pos):
                pb = p.copy()
                pb[k] += step
                sens[h, :, b] = (self._voltages(pb, q_var[h]) - v_x[h]) / (step / 1e3)
        icpt = v_x - np.einsum("hnb,bh->hn", np.nan_to_num(sens), x_kw)
        return icpt, sens, v_x

    def rows(self, v0: np.ndarray, sens: np.ndarray, v_watch: np.ndarray | None = None) -> VoltageRows:
        """Constraint rows of the linear model ``v0 + S x`` (``v0`` the intercept); node-hours are watched where
        ``v0`` or ``v_watch`` (the voltages at the linearisation point) come near a limit."""
        lim = self.limits
        hi_lim, lo_lim = lim.v_max_pu - lim.margin_pu, lim.v_min_pu + lim.margin_pu
        finite = np.isfinite(v0)
        near = (v0 > lim.v_max_pu - lim.watch_pu) | (v0 < lim.v_min_pu + lim.watch_pu)
        if v_watch is not None:
            near |= (v_watch > lim.v_max_pu - lim.watch_pu) | (v_watch < lim.v_min_pu + lim.watch_pu)
        watch = finite & near
        hour, node = np.nonzero(watch)
        coef = np.nan_to_num(sens[hour, node, :])
        base = v0[hour, node]
        return VoltageRows(hour, node, coef, lo_lim - base, hi_lim - base, lim.penalty_eur_per_pu_h)

    def error(self, p_w: np.ndarray, q_var: np.ndarray, v0: np.ndarray, sens: np.ndarray,
              x_kw: np.ndarray) -> float:
        """Largest |power flow - (V0 + S x)| over node-hours for battery powers ``x_kw`` (batteries, H)."""
        worst = 0.0
        for h in range(p_w.shape[0]):
            p = p_w[h].copy()
            p[self.battery_pos] += x_kw[:, h] * 1e3
            true = self._voltages(p, q_var[h])
            lin = v0[h] + sens[h] @ x_kw[:, h]
            ok = np.isfinite(true) & np.isfinite(lin)
            if ok.any():
                worst = max(worst, float(np.max(np.abs(true[ok] - lin[ok]))))
        return worst


def plan_within_band(model: FeederVoltageModel, p_w: np.ndarray, q_var: np.ndarray,
                     solve: Callable[[VoltageRows], np.ndarray | None]) -> tuple[np.ndarray | None, float, int]:
    """Successive linearisation: solve with rows linearised at idle batteries, then at the plan, until the plan's
    error against the power flow is below ``tolerance_pu`` or ``refinements`` are used. ``solve(rows)`` returns the
    batteries' hourly powers (kW, batteries x H) or None (no plan). Returns (x, error, solves)."""
    lim = model.limits
    x = np.zeros((model.battery_pos.size, p_w.shape[0]))
    best: np.ndarray | None = None
    err = float("nan")
    for k in range(lim.refinements + 1):
        icpt, sens, v_x = model.linearise(p_w, q_var, x)
        rows = model.rows(icpt, sens, v_watch=v_x)
        new = solve(rows)
        if new is None:
            return best, err, k + 1
        best, x = new, new
        err = model.error(p_w, q_var, icpt, sens, x)
        if err < lim.tolerance_pu:
            return best, err, k + 1
    return best, err, lim.refinements + 1


def sunniest_recent(history: np.ndarray, k: int, hours: int, days: int) -> np.ndarray:
    """For hours ``k .. k+hours-1`` (hourly series), the largest value at the same hour of the day over the last
    ``days`` days observed before ``k`` (NaN where nothing is known)."""
    out = np.full(hours, np.nan)
    for m in range(hours):
        src = [k + m - 24 * d for d in range(1, days + 1) if 0 <= k + m - 24 * d < min(k, history.size)]
        vals = history[src] if src else np.zeros(0)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[m] = vals.max()
    return out
