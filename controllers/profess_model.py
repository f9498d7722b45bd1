"""PROFESS's optimisation for one site: choose the solver for a problem and guarantee complementarity.

The pieces, one idea per module:

* :mod:`controllers.profess_problem` states the problem (battery, horizon, objective weights, one cycle's
  inputs and result, sign conventions) and maps a cycle's inputs to solver units (kW, kWh, h).
* :mod:`controllers.profess_highs` writes it once against ``highspy`` and updates it in place each cycle
  (warm-started simplex): the production path for linear objectives.
* :mod:`controllers.profess_ipm` maps it onto the banded interior-point QP solver of
  :mod:`controllers.banded_qp_ipm`: the production path for quadratic objectives.
* :mod:`controllers.profess_pyomo` states it independently in pyomo: the reference the tests compare
  objective values against, and the benchmarks' naive baseline.

Simultaneous charge and discharge are excluded without binaries: see docs/controllers/profess.md and
:class:`Profess` below.
"""

from __future__ import annotations

import functools
import time as _time
from collections.abc import Sequence
from typing import Literal

import numpy as np

from controllers.profess_highs import HighsProfess
from controllers.profess_ipm import IpmProfess
from controllers.profess_problem import CycleInputs, ProfessProblem, ProfessResult
from controllers.profess_pyomo import PyomoProfess


def make_solver(problem: ProfessProblem, engine: Literal["auto", "highs", "ipm", "pyomo"] = "auto"):
    """The production solver for a problem: HiGHS (warm-started simplex) for LPs, the banded IPM for QPs."""
    w = problem.weights
    is_qp = w.grid_exchange > 0 or w.schedule > 0 or w.voltage > 0
    if engine == "auto":
        engine = "ipm" if is_qp else "highs"
    if engine == "highs":
        return HighsProfess(problem)
    if engine == "ipm":
        return shared_ipm(problem)
    if engine == "pyomo":
        return PyomoProfess(problem)
    raise ValueError(f"unknown engine {engine!r}")


@functools.lru_cache(maxsize=64)
def shared_ipm(problem: ProfessProblem) -> IpmProfess:
    """One banded-IPM formulation per distinct problem: it keeps nothing between solves, so sites with equal
    problems share it (its matrix analysis, ~50 ms, once) and :func:`solve_many` solves them in one call."""
    return IpmProfess(problem)


class Profess:
    """PROFESS for one site: the production solver plus the complementarity guarantee.

    The LP/QP relaxation of "never charge and discharge at once" is exact for the objectives and costs
    discussed in docs/controllers/profess.md. Where an objective rewards dissipating energy (e.g. the
    voltage objective above nominal voltage, a schedule that asks to charge a full battery, negative
    prices), the solver may return steps with both P_ch and P_dis > 0. Those steps are then fixed to the
    direction of their net power (the other variable's bound set to zero) and the problem is re-solved,
    until no step has both (at most ``max_rounds`` times). The result is always complementary; in the
    exact cases no re-solve happens.
    """

    def __init__(self, problem: ProfessProblem, engine: Literal["auto", "highs", "ipm", "pyomo"] = "auto",
                 tol_w: float = 1.0, max_rounds: int = 6) -> None:
        self.problem = problem
        self.solver = make_solver(problem, engine)
        self.tol_w = tol_w
        self.max_rounds = max_rounds

    def solve(self, inp: CycleInputs, t_s: int | None = None) -> ProfessResult:
        t0 = _time.perf_counter()
        res = self.complementary(inp, self.solver.solve(inp, t_s), t_s)
        res.solve_s = _time.perf_counter() - t0
        return res

    def complementary(self, inp: CycleInputs, res: ProfessResult, t_s: int | None = None) -> ProfessResult:
        """The solver's first result ``res`` of ``inp``, re-solved until no step charges and discharges at once."""
        rounds = 0
        n = self.problem.horizon_steps
        fc = np.zeros(n, bool) if inp.forbid_charge is None else np.asarray(inp.forbid_charge, bool).copy()
        fd = np.zeros(n, bool) if inp.forbid_discharge is None else np.asarray(inp.forbid_discharge, bool).copy()
        while res.status == "optimal" and res.simultaneous_w > self.tol_w and rounds < self.max_rounds:
            both = np.minimum(res.p_charge_w, res.p_discharge_w) > self.tol_w
            charging = res.p_charge_w >= res.p_discharge_w
            fd |= both & charging
            fc |= both & ~charging
            inp = CycleInputs(**{**inp.__dict__, "forbid_charge": fc, "forbid_discharge": fd})
            res = self.solver.solve(inp, t_s)
            rounds += 1
        res.extra["complementarity_rounds"] = rounds
        return res


def solve_many(sites: Sequence[Profess], inputs: Sequence[CycleInputs], t_s: int | None = None) -> list[ProfessResult]:
    """``sites[i].solve(inputs[i], t_s)`` for every i, with the same plans; the sites that share a banded-IPM
    formulation (equal problems, :func:`shared_ipm`) are solved in one compiled call, the Python of one solve per site
    (stacking the problems, reading the plans) done once as array operations. Each result's ``solve_s`` is its share
    of the call plus its own complementarity re-solves."""
    out: list[ProfessResult | None] = [None] * len(sites)
    batches: dict[int, list[int]] = {}
    for i, site in enumerate(sites):
        if isinstance(site.solver, IpmProfess):
            batches.setdefault(id(site.solver), []).append(i)
        else:
            out[i] = site.solve(inputs[i], t_s)
    for members in batches.values():
        first = sites[members[0]].solver.solve_many([inputs[i] for i in members], t_s)
        for i, res in zip(members, first):
            t0 = _time.perf_counter()
            share = res.solve_s
            res = sites[i].complementary(inputs[i], res, t_s)
            res.solve_s = share + _time.perf_counter() - t0
            out[i] = res
    return out  # type: ignore[return-value]
