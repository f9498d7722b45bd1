"""The fast power flow equals pandapower's runpp / runpp_3ph (the reference path of the same class)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import hypothesis.extra.numpy as hnp
import numpy as np
import pandas as pd
import pandapower as pp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulators.grid_loaders import GridModel, load_dsf_se, load_simbench
from simulators.powerflow import (
    FastSolverUnsupported,
    LoadRef,
    PowerFlow,
    PowerFlowDiverged,
    PowerFlowResult,
)

FUR = Path(__file__).resolve().parents[1] / "scenarios" / "data" / "s4g" / "fur_feeder.json"
# the file has no line ratings; give every code one so that line loading is compared, not NaN == NaN
FUR_AMPACITY_A = {"CU_4x10": 60.0, "CU_4x6": 45.0, "PEX_4x150": 270.0, "PEX_4x95": 210.0, "PVIKS_4x50": 140.0}
V_TOL_PU = 1e-6
PP_OPTIONS = {"numba": False}  # numba's JIT compile would cost more than it saves on these small grids
SIMBENCH = ["1-LV-semiurb4--0-sw", "1-LV-rural1--0-sw", "1-LV-rural3--0-sw"]
HYPOTHESIS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@dataclass
class Case:
    model: GridModel
    fast: PowerFlow
    ref: PowerFlow
    p_range_w: tuple[float, float]
    q_range_var: tuple[float, float]
    p_file_w: np.ndarray  # the grid file's load values, captured before any solve overwrites the net
    q_file_var: np.ndarray

    @property
    def n(self) -> int:
        return len(self.fast.loads)


def _refs(model: GridModel) -> list[LoadRef]:
    return [LoadRef(x.element, x.index, x.phase) for x in model.loads]  # type: ignore[arg-type]


def _case(model: GridModel, mode: str, p_range: tuple[float, float], q_range: tuple[float, float]) -> Case:
    refs = _refs(model)
    file_pq = np.array([_file_power(model.net, x) for x in model.loads])
    return Case(model, PowerFlow(model.net, refs, mode=mode), PowerFlow(model.net, refs, mode=mode, solver="pandapower",
                                                                          pandapower_options=PP_OPTIONS),
                p_range, q_range, file_pq[:, 0], file_pq[:, 1])


@pytest.fixture(scope="module")
def balanced_cases() -> dict[str, Case]:
    cases = {code: _case(load_simbench(code), "balanced", (-8e3, 12e3), (-3e3, 5e3)) for code in SIMBENCH}
    cases["fur"] = _case(load_dsf_se(FUR, ampacity_a=FUR_AMPACITY_A), "balanced", (-4e3, 5e3), (-1e3, 2e3))
    return cases


@pytest.fixture(scope="module")
def fur_unbalanced() -> Case:
    model = load_dsf_se(FUR, ampacity_a=FUR_AMPACITY_A)
    model.add_load("ev_sym", "node_a20", None)  # a three-phase connection point next to the single-phase ones
    model.add_load("pv_c", "node_a14", 3)
    return _case(model, "unbalanced", (-4e3, 5e3), (-1e3, 2e3))


def assert_same(a: PowerFlowResult, b: PowerFlowResult, slack_tol_w: float, loading_tol_pct: float) -> None:
    """Equal within the reference's own accuracy: runpp stops at 1e-8 MVA (0.01 W) mismatch per bus."""
    for field in ("v_pu", "v_abc_pu", "load_v_pu"):
        x, y = getattr(a, field), getattr(b, field)
        assert np.array_equal(np.isnan(x), np.isnan(y)), field
        np.testing.assert_allclose(x, y, atol=V_TOL_PU, rtol=0, err_msg=field)
    for field in ("line_loading_pct", "trafo_loading_pct"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=loading_tol_pct, rtol=0,
                                   err_msg=field)
    for field in ("line_pl_w", "trafo_p_hv_w"):
        np.testing.assert_allclose(getattr(a, field), getattr(b, field), atol=slack_tol_w, rtol=0, err_msg=field)
    for field in ("p_slack_w", "q_slack_var", "losses_w"):
        assert getattr(a, field) == pytest.approx(getattr(b, field), abs=slack_tol_w), field


def solve_both(case: Case, p: np.ndarray, q: np.ndarray) -> tuple[PowerFlowResult, PowerFlowResult] | None:
    """Both results, or None when both agree there is no solution (a random state beyond the nose point)."""
    try:
        ref = case.ref.solve(p, q)
    except PowerFlowDiverged:
        with pytest.raises(PowerFlowDiverged):
            case.fast.solve(p, q)
        return None
    return case.fast.solve(p, q), ref


def load_states(n: int, p_range: tuple[float, float], q_range: tuple[float, float]) -> st.SearchStrategy:
    p = hnp.arrays(np.float64, n, elements=st.floats(*p_range, allow_nan=False))
    q = hnp.arrays(np.float64, n, elements=st.floats(*q_range, allow_nan=False))
    return st.tuples(p, q)


# ------------------------------------------------------------------------------------------ balanced


@pytest.mark.parametrize("name", SIMBENCH + ["fur"])
def test_balanced_equals_runpp_at_file_loads(balanced_cases, name):
    case = balanced_cases[name]
    fast, ref = case.fast.solve(case.p_file_w, case.q_file_var), case.ref.solve(case.p_file_w, case.q_file_var)
    assert_same(fast, ref, slack_tol_w=0.1, loading_tol_pct=1e-4)
    assert np.nanmin(fast.v_pu) < 0.999 * np.nanmax(fast.v_pu)  # the loads really pull the voltage down


@pytest.mark.parametrize("name", SIMBENCH + ["fur"])
@HYPOTHESIS
@given(data=st.data())
def test_balanced_equals_runpp_for_random_loads(balanced_cases, name, data):
    case = balanced_cases[name]
    p, q = data.draw(load_states(case.n, case.p_range_w, case.q_range_var))
    both = solve_both(case, p, q)
    if both is not None:
        assert_same(*both, slack_tol_w=0.1, loading_tol_pct=1e-4)


def test_balanced_newton_fallback_equals_runpp(balanced_cases):
    """With too few fixed-point iterations allowed, the Newton-Raphson fallback must give the same answer."""
    case = balanced_cases["1-LV-semiurb4--0-sw"]
    limited = PowerFlow(case.model.net, _refs(case.model), max_iter=2)
    p = np.full(case.n, 20e3)  # heavy: about 0.8 MW on a 0.4 MVA transformer
    fast, ref = limited.solve(p, 0.3 * p), case.ref.solve(p, 0.3 * p)
    assert fast.iterations > 0 and np.nanmin(fast.v_pu) < 0.9
    assert_same(fast, ref, slack_tol_w=0.1, loading_tol_pct=1e-4)


# ------------------------------------------------------------------------------------------ unbalanced


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_unbalanced_equals_runpp_3ph_for_random_loads(fur_unbalanced, data):
    case = fur_unbalanced
    p, q = data.draw(load_states(case.n, case.p_range_w, case.q_range_var))
    both = solve_both(case, p, q)
    if both is not None:
        # runpp_3ph stops its outer loop at a 3e-8 MVA mismatch, so it is only that exact itself
        assert_same(*both, slack_tol_w=0.5, loading_tol_pct=1e-3)


def test_unbalanced_idle_feeder_has_zero_flows_in_both_solvers(fur_unbalanced):
    """runpp_3ph leaves branch results NaN when nothing flows; the reference backend reports zero, as we do."""
    zero = np.zeros(fur_unbalanced.n)
    fast, ref = solve_both(fur_unbalanced, zero, zero)
    assert not np.isnan(ref.line_loading_pct).any() and ref.losses_w == pytest.approx(0.0, abs=1e-6)
    assert_same(fast, ref, slack_tol_w=0.5, loading_tol_pct=1e-3)


def test_unbalanced_single_phase_load_sags_its_phase(fur_unbalanced):
    case = fur_unbalanced
    names = [x.name for x in case.model.loads]
    p = np.zeros(case.n)
    base = case.fast.solve(p, p)
    k = names.index("consumer_4018219")  # node_a20, phase 1
    p[k] = 8e3
    loaded = case.fast.solve(p, np.zeros(case.n))
    bus = case.model.bus_names.index("node_a20")
    drop = base.v_abc_pu[:, bus] - loaded.v_abc_pu[:, bus]
    assert drop[0] > 0.01 and drop[0] > 3 * max(abs(drop[1]), abs(drop[2]))
    assert loaded.load_v_pu[k] == pytest.approx(loaded.v_abc_pu[0, bus])
    j = names.index("ev_sym")  # symmetric connection point: positive-sequence magnitude
    assert loaded.load_v_pu[j] == pytest.approx(loaded.v_pu[bus])


# ------------------------------------------------------------------------------------------ robustness


@pytest.mark.parametrize("mode", ["balanced", "unbalanced"])
def test_absurd_load_diverges_then_recovers(balanced_cases, fur_unbalanced, mode):
    case = balanced_cases["fur"] if mode == "balanced" else fur_unbalanced
    with pytest.raises(PowerFlowDiverged):
        case.fast.solve(np.full(case.n, 5e6), np.zeros(case.n))
    p = np.full(case.n, 1e3)
    assert_same(case.fast.solve(p, p * 0.2), case.ref.solve(p, p * 0.2), slack_tol_w=0.5, loading_tol_pct=1e-3)


def test_warm_start_and_unchanged_state(balanced_cases):
    case = balanced_cases["1-LV-rural1--0-sw"]
    p = np.full(case.n, 3e3)
    first = case.fast.solve(p, p * 0.3)
    assert case.fast.solve(p.copy(), p * 0.3) is first  # unchanged state: the same result, no work
    nudged = case.fast.solve(p + 1.0, p * 0.3)  # 1 W more per load: starts next to the solution
    assert nudged.iterations < first.iterations


def test_out_of_service_line_gives_nan_like_pandapower(balanced_cases):
    model = copy.deepcopy(balanced_cases["1-LV-rural1--0-sw"].model)
    net = model.net
    net.line.loc[net.line.index[-1], "in_service"] = False  # radial feeder: the buses behind it are cut off
    refs = _refs(model)
    p = np.full(len(refs), 2e3)
    fast = PowerFlow(net, refs).solve(p, p * 0.3)
    ref = PowerFlow(net, refs, solver="pandapower", pandapower_options=PP_OPTIONS).solve(p, p * 0.3)
    assert np.isnan(fast.v_pu).any()
    assert_same(fast, ref, slack_tol_w=0.1, loading_tol_pct=1e-4)


def test_generators_are_refused_by_the_fast_solver(balanced_cases):
    model = copy.deepcopy(balanced_cases["1-LV-rural1--0-sw"].model)
    pp.create_gen(model.net, model.bus_index[0], p_mw=0.01, vm_pu=1.0)
    with pytest.raises(FastSolverUnsupported, match="pandapower"):
        PowerFlow(model.net, _refs(model))


def test_input_validation(balanced_cases):
    case = balanced_cases["1-LV-rural1--0-sw"]
    with pytest.raises(ValueError, match="expected"):
        case.fast.solve(np.zeros(case.n + 1), np.zeros(case.n + 1))
    with pytest.raises(ValueError, match="finite"):
        case.fast.solve(np.full(case.n, np.nan), np.zeros(case.n))
    with pytest.raises(ValueError, match="mode"):
        PowerFlow(case.model.net, [], mode="dc")  # type: ignore[arg-type]


def _file_power(net: pp.pandapowerNet, load) -> tuple[float, float]:
    row = net[load.element].loc[load.index]
    if load.element == "load":
        return row.p_mw * row.scaling * 1e6, row.q_mvar * row.scaling * 1e6
    return (row.p_a_mw + row.p_b_mw + row.p_c_mw) * 1e6, (row.q_a_mvar + row.q_b_mvar + row.q_c_mvar) * 1e6


@pytest.mark.parametrize("mode", ["balanced", "unbalanced"])
def test_set_up_leaves_the_net_and_pandapower_as_they_were(mode):
    """The fast solver's set-up zeroes the driven loads for one pandapower run and swaps pandapower's JIT helpers
    for their Python versions: afterwards the load tables and pandapower's module functions are the originals."""
    import pandapower.auxiliary as aux
    import pandapower.build_branch as bb

    model = load_dsf_se(FUR, ampacity_a=FUR_AMPACITY_A)
    model.add_load("ev_sym", "node_a20", None)
    model.add_load("pv_c", "node_a14", 3)
    refs = _refs(model)
    assert {r.element for r in refs} == {"load", "asymmetric_load"} or mode == "balanced"
    tables = {t: model.net[t].copy() for t in ("load", "asymmetric_load")}
    helpers = (aux.set_elements_oos, aux.set_isolated_buses_oos, aux.get_values, bb.get_values)
    PowerFlow(model.net, refs, mode=mode)
    for t, before in tables.items():
        pd.testing.assert_frame_equal(model.net[t], before)
    assert (aux.set_elements_oos, aux.set_isolated_buses_oos, aux.get_values, bb.get_values) == helpers
