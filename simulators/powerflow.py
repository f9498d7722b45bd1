"""Fast repeated power flow for co-simulation steps, equal to pandapower's runpp / runpp_3ph.

A co-simulation step changes only the load injections, so the network model is taken once from pandapower's own
conversion (pd2ppc + makeYbus: exactly the matrices runpp / runpp_3ph use) and every step solves with the implicit
Z-bus method: V = W + Y_LL^-1 I(V), with W the no-load voltage and Y_LL^-1 prepared once (a dense inverse for small
feeders, SuperLU factors otherwise). On radial LV feeders the fixed point contracts fast: a handful of iterations
from the previous step's voltages, each one matrix-vector product, so a step costs well under a millisecond where
runpp spends ~50 ms on conversion, checks and result tables. A polar Newton-Raphson takes over if the fixed point
stops contracting (heavy loading near the voltage-collapse point).

Unbalanced mode reproduces runpp_3ph's sequence-frame model: constant-power wye loads per phase give phase
currents, which are transformed to sequence currents; zero and negative sequence are solved on their full
admittance matrices (external grid impedance to earth included), the positive sequence with the slack voltage fixed.

``solver="pandapower"`` keeps runpp / runpp_3ph as the reference path behind the same interface.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import pandapower as pp
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import ArrayLike, NDArray
from pandapower.auxiliary import Tabc, T012
from pandapower.pypower.dSbus_dV import dSbus_dV
from pandapower.pypower.idx_brch import F_BUS, T_BUS
from pandapower.pypower.idx_bus import BASE_KV, BUS_TYPE, PD, QD, REF, VA, VM
from pandapower.pypower.makeYbus import makeYbus

__all__ = ["FastSolverUnsupported", "LoadRef", "PowerFlow", "PowerFlowDiverged", "PowerFlowResult"]

Mode = Literal["balanced", "unbalanced"]
Solver = Literal["fast", "pandapower"]
FloatArray = NDArray[np.float64]
ComplexArray = NDArray[np.complex128]
SQRT3 = math.sqrt(3.0)


class PowerFlowDiverged(RuntimeError):
    """The power flow found no solution for the given injections (no result is returned)."""


class FastSolverUnsupported(ValueError):
    """The grid has elements the fast solver does not model; use solver='pandapower'."""


@dataclass(frozen=True)
class LoadRef:
    """A load row the co-simulation drives: pandapower table, row index and phase (1..3; None = symmetric)."""

    element: Literal["load", "asymmetric_load"]
    index: int
    phase: int | None = None


@dataclass
class PowerFlowResult:
    """One solution. Arrays follow the pandapower table order (net.bus / net.line / net.trafo index)."""

    v_pu: FloatArray  # balanced: |V|; unbalanced: positive-sequence |V1|
    v_abc_pu: FloatArray  # (3, n_bus) phase-to-neutral magnitudes; balanced: three equal rows
    line_loading_pct: FloatArray  # of max_i_ka * df * parallel, max over ends (and phases)
    line_pl_w: FloatArray
    trafo_loading_pct: FloatArray  # current based, like pandapower's trafo_loading="current"
    trafo_p_hv_w: FloatArray
    load_v_pu: FloatArray  # at each driven load: its phase, or |V1| for symmetric loads
    p_slack_w: float
    q_slack_var: float
    losses_w: float  # sum of line and transformer losses
    iterations: int


class _Backend(Protocol):
    def solve(self, p_mw: FloatArray, q_mvar: FloatArray) -> PowerFlowResult: ...

    def scale_source(self, k: float) -> None: ...


class PowerFlow:
    """Repeated power flow on one pandapower net with a fixed set of driven loads.

    ``solve(p_w, q_var)`` takes one value per driven load (load convention, + = consumption) and returns a
    :class:`PowerFlowResult`; the other injections of the net (sgens, undriven loads) stay as they are in the net
    when the PowerFlow is built. Driven loads get ``scaling = 1``. ``pandapower_options`` are passed to
    runpp / runpp_3ph on the reference path (e.g. ``{"numba": False}`` to skip numba's JIT compile).
    """

    def __init__(
        self,
        net: pp.pandapowerNet,
        loads: Sequence[LoadRef],
        mode: Mode = "balanced",
        solver: Solver = "fast",
        tol_mva: float = 1e-10,
        max_iter: int = 100,
        pandapower_options: dict[str, object] | None = None,
    ) -> None:
        if mode not in ("balanced", "unbalanced"):
            raise ValueError(f"mode must be 'balanced' or 'unbalanced', got {mode!r}")
        if solver not in ("fast", "pandapower"):
            raise ValueError(f"solver must be 'fast' or 'pandapower', got {solver!r}")
        self.net = net
        self.loads = list(loads)
        self.mode: Mode = mode
        self.solver: Solver = solver
        _validate_loads(net, self.loads)
        for ref in self.loads:
            net[ref.element].at[ref.index, "scaling"] = 1.0
        backend: _Backend
        if solver == "pandapower":
            backend = _PandapowerBackend(net, self.loads, mode, pandapower_options or {})
        elif mode == "balanced":
            backend = _FastBalanced(net, self.loads, tol_mva, max_iter)
        else:
            backend = _FastUnbalanced(net, self.loads, tol_mva, max_iter)
        self._backend = backend
        self._last: tuple[FloatArray, FloatArray, PowerFlowResult] | None = None
        self.source_scale = 1.0

    def set_source_scale(self, k: float) -> None:
        """Scale the source (slack) voltage by ``k`` from the next solve on: a voltage sag upstream (1 = as built)."""
        k = float(k)
        if not (math.isfinite(k) and k > 0):
            raise ValueError(f"source voltage scale must be finite and > 0, got {k!r}")
        if k != self.source_scale:
            self.source_scale = k
            self._backend.scale_source(k)
            self._last = None

    def solve(self, p_w: ArrayLike, q_var: ArrayLike) -> PowerFlowResult:
        p = np.asarray(p_w, dtype=np.float64) * 1e-6
        q = np.asarray(q_var, dtype=np.float64) * 1e-6
        if p.shape != (len(self.loads),) or q.shape != p.shape:
            raise ValueError(f"expected {len(self.loads)} values for p_w and q_var, got {p.shape} and {q.shape}")
        if not (np.all(np.isfinite(p)) and np.all(np.isfinite(q))):
            raise ValueError("load powers must be finite")
        if self._last is not None and np.array_equal(p, self._last[0]) and np.array_equal(q, self._last[1]):
            return self._last[2]  # unchanged state: same answer, bit for bit, and no work
        result = self._backend.solve(p, q)
        self._last = (p, q, result)
        return result


def _validate_loads(net: pp.pandapowerNet, loads: Sequence[LoadRef]) -> None:
    for ref in loads:
        if ref.element not in ("load", "asymmetric_load"):
            raise ValueError(f"driven loads must be 'load' or 'asymmetric_load' rows, got {ref.element!r}")
        if ref.index not in net[ref.element].index:
            raise ValueError(f"net.{ref.element} has no row {ref.index}")
        if ref.phase not in (None, 1, 2, 3):
            raise ValueError(f"phase must be 1, 2, 3 or None, got {ref.phase!r}")
        if ref.element == "load" and ref.phase is not None:
            raise ValueError("a symmetric 'load' row cannot be driven on one phase; use an asymmetric_load")


# ------------------------------------------------------------------------------------------ writing loads to net


#: the columns _write_loads writes, per table
_WRITTEN_COLUMNS = {"load": ["p_mw", "q_mvar"],
                    "asymmetric_load": [c for ph in "abc" for c in (f"p_{ph}_mw", f"q_{ph}_mvar")]}


def _write_loads(net: pp.pandapowerNet, loads: Sequence[LoadRef], p_mw: FloatArray, q_mvar: FloatArray) -> None:
    for ref, p, q in zip(loads, p_mw, q_mvar, strict=True):
        table = net[ref.element]
        if ref.element == "load":
            table.at[ref.index, "p_mw"] = p
            table.at[ref.index, "q_mvar"] = q
            continue
        for k, ph in enumerate("abc", start=1):
            share = 1.0 if ref.phase == k else (1.0 / 3.0 if ref.phase is None else 0.0)
            table.at[ref.index, f"p_{ph}_mw"] = p * share
            table.at[ref.index, f"q_{ph}_mvar"] = q * share


class _ZeroedLoads:
    """Context: driven loads at zero, so what pandapower builds is the static rest of the net."""

    def __init__(self, net: pp.pandapowerNet, loads: Sequence[LoadRef]) -> None:
        self.net, self.loads = net, loads

    def __enter__(self) -> None:
        # the columns _write_loads writes, one block per table (a row at a time took 0.1 s for 40 loads)
        self.saved = []
        for element, cols in _WRITTEN_COLUMNS.items():
            rows = list(dict.fromkeys(r.index for r in self.loads if r.element == element))
            if rows:
                self.saved.append((element, rows, cols, self.net[element].loc[rows, cols].to_numpy(copy=True)))
        _write_loads(self.net, self.loads, np.zeros(len(self.loads)), np.zeros(len(self.loads)))

    def __exit__(self, *exc: object) -> None:
        for element, rows, cols, values in self.saved:
            self.net[element].loc[rows, cols] = values


@contextlib.contextmanager
def _plain_python_helpers() -> Iterator[None]:
    """pandapower's own pure-Python versions of the three small helpers it JIT-compiles, for the one set-up run.

    Even with ``numba=False`` pandapower's conversion calls these numba functions; loading them from numba's
    cache imports numba's compiler (1-1.5 s of a start-up) for three loops over a few hundred elements.
    The Python versions are the functions numba compiles, so the matrices are the same.
    """
    import pandapower.auxiliary as aux
    import pandapower.build_branch as bb

    swaps = [(aux, "set_elements_oos", getattr(aux, "_python_set_elements_oos", None)),
             (aux, "set_isolated_buses_oos", getattr(aux, "_python_set_isolated_buses_oos", None)),
             (aux, "get_values", getattr(aux, "_get_values", None)),
             (bb, "get_values", getattr(aux, "_get_values", None))]
    swaps = [(m, name, plain) for m, name, plain in swaps if plain is not None and hasattr(m, name)]
    saved = [(m, name, getattr(m, name)) for m, name, _ in swaps]
    for m, name, plain in swaps:
        setattr(m, name, plain)
    try:
        yield
    finally:
        for m, name, old in saved:
            setattr(m, name, old)


# ------------------------------------------------------------------------------------------ reference backend


class _PandapowerBackend:
    """runpp / runpp_3ph on the net itself (slow, the reference)."""

    def __init__(self, net: pp.pandapowerNet, loads: Sequence[LoadRef], mode: Mode, options: dict[str, object]) -> None:
        self.net, self.loads, self.mode, self.options = net, list(loads), mode, options
        self.load_bus_pos = _load_bus_positions(net, self.loads)
        self.vm_source = net.ext_grid.vm_pu.to_numpy(dtype=float).copy()

    def scale_source(self, k: float) -> None:
        self.net.ext_grid["vm_pu"] = self.vm_source * k

    def solve(self, p_mw: FloatArray, q_mvar: FloatArray) -> PowerFlowResult:
        net = self.net
        _write_loads(net, self.loads, p_mw, q_mvar)
        try:
            if self.mode == "balanced":
                pp.runpp(net, **self.options)
            else:
                pp.runpp_3ph(net, **self.options)
        except pp.LoadflowNotConverged as exc:
            raise PowerFlowDiverged(f"pandapower power flow did not converge: {exc}") from exc
        if self.mode == "balanced":
            v = net.res_bus.vm_pu.to_numpy(dtype=float)
            v_abc = np.vstack([v, v, v])
            line_pl = net.res_line.pl_mw.to_numpy(dtype=float)
            trafo_pl = net.res_trafo.pl_mw.to_numpy(dtype=float)
            result = PowerFlowResult(
                v_pu=v, v_abc_pu=v_abc,
                line_loading_pct=net.res_line.loading_percent.to_numpy(dtype=float),
                line_pl_w=line_pl * 1e6,
                trafo_loading_pct=net.res_trafo.loading_percent.to_numpy(dtype=float),
                trafo_p_hv_w=net.res_trafo.p_hv_mw.to_numpy(dtype=float) * 1e6,
                load_v_pu=np.empty(0),
                p_slack_w=float(net.res_ext_grid.p_mw.sum()) * 1e6,
                q_slack_var=float(net.res_ext_grid.q_mvar.sum()) * 1e6,
                losses_w=float(line_pl.sum() + trafo_pl.sum()) * 1e6,
                iterations=int(net._ppc.get("iterations", 0) or 0),
            )
        else:
            rb = net.res_bus_3ph
            v_abc = rb[["vm_a_pu", "vm_b_pu", "vm_c_pu"]].to_numpy(dtype=float).T
            va = np.deg2rad(rb[["va_a_degree", "va_b_degree", "va_c_degree"]].to_numpy(dtype=float).T)
            v1 = np.abs((T012 @ (v_abc * np.exp(1j * va)))[1])
            rl, rt, re = net.res_line_3ph, net.res_trafo_3ph, net.res_ext_grid_3ph
            # runpp_3ph leaves branch results NaN when nothing flows at all; on a live branch that means zero
            live_line = np.isfinite(rb.vm_a_pu.reindex(net.line.from_bus).to_numpy(dtype=float))
            live_trafo = np.isfinite(rb.vm_a_pu.reindex(net.trafo.hv_bus).to_numpy(dtype=float))

            def flow(values: pd.Series, live: NDArray[np.bool_]) -> FloatArray:
                x = values.to_numpy(dtype=float)
                return np.where(np.isnan(x) & live, 0.0, x)

            line_pl = flow(rl.pl_a_mw + rl.pl_b_mw + rl.pl_c_mw, live_line)
            trafo_pl = flow(rt.pl_a_mw + rt.pl_b_mw + rt.pl_c_mw, live_trafo)
            result = PowerFlowResult(
                v_pu=v1, v_abc_pu=v_abc,
                line_loading_pct=flow(rl.loading_percent, live_line),
                line_pl_w=line_pl * 1e6,
                trafo_loading_pct=flow(rt.loading_percent, live_trafo),
                trafo_p_hv_w=flow(rt.p_a_hv_mw + rt.p_b_hv_mw + rt.p_c_hv_mw, live_trafo) * 1e6,
                load_v_pu=np.empty(0),
                p_slack_w=float((re.p_a_mw + re.p_b_mw + re.p_c_mw).sum()) * 1e6,
                q_slack_var=float((re.q_a_mvar + re.q_b_mvar + re.q_c_mvar).sum()) * 1e6,
                losses_w=float(line_pl.sum() + trafo_pl.sum()) * 1e6,
                iterations=0,
            )
        result.load_v_pu = _load_voltages(result, self.load_bus_pos, self.loads)
        return result


def _load_bus_positions(net: pp.pandapowerNet, loads: Sequence[LoadRef]) -> NDArray[np.int64]:
    """Position of each driven load's bus in net.bus (the order of all result arrays)."""
    pos = {int(b): k for k, b in enumerate(net.bus.index)}
    return np.array([pos[int(net[r.element].at[r.index, "bus"])] for r in loads], dtype=np.int64)


def _load_voltages(res: PowerFlowResult, bus_pos: NDArray[np.int64], loads: Sequence[LoadRef]) -> FloatArray:
    phases = np.array([(r.phase or 0) for r in loads], dtype=np.int64)
    v = res.v_pu[bus_pos].copy()
    single = phases > 0
    v[single] = res.v_abc_pu[phases[single] - 1, bus_pos[single]]
    return v


# ------------------------------------------------------------------------------------------ shared topology


@dataclass
class _Topology:
    """Where net elements sit in pandapower's internal (ppci) arrays, with result factors precomputed.

    Row/position arrays use -1 for "not in the power flow" (out of service, isolated); result arrays get one
    extra trailing element (0 or NaN) so that index -1 picks it without masking.
    """

    n_bus: int  # ppci buses
    bus_pos: NDArray[np.int64]  # net.bus order -> ppci bus
    line_rows: NDArray[np.int64]  # net.line order -> ppci branch row
    trafo_rows: NDArray[np.int64]
    br_from: NDArray[np.int64]  # ppci branch -> ppci bus
    br_to: NDArray[np.int64]
    kv_from: FloatArray  # nominal kV at each branch end
    kv_to: FloatArray
    line_inv_imax: FloatArray  # 100 / (max_i_ka * df * parallel); inf where the rating is 0, like pandapower
    trafo_k: FloatArray  # (2, n_trafo): vn_kv * sqrt(3) * 100 / (sn * parallel * df) for hv, lv
    ref: NDArray[np.int64]
    ref_kv: FloatArray
    pq: NDArray[np.int64]
    load_bus: NDArray[np.int64]  # driven load -> ppci bus (-1 if the load or its bus is out of service)
    load_net_bus_pos: NDArray[np.int64]  # driven load -> position in net.bus


def _build_topology(net: pp.pandapowerNet, bus_table: np.ndarray, branch_is: np.ndarray, branch: np.ndarray,
                    loads: Sequence[LoadRef]) -> _Topology:
    n_bus = bus_table.shape[0]
    raw = net._pd2ppc_lookups["bus"][net.bus.index.to_numpy()]
    bus_pos = np.where((raw >= 0) & (raw < n_bus), raw, -1).astype(np.int64)
    ppci_row = np.cumsum(branch_is) - 1

    def rows(element: str) -> NDArray[np.int64]:
        if element not in net._pd2ppc_lookups["branch"]:
            return -np.ones(len(net[element]), dtype=np.int64)
        f, t = net._pd2ppc_lookups["branch"][element]
        return np.where(branch_is[f:t], ppci_row[f:t], -1).astype(np.int64)

    line, trafo = net.line, net.trafo
    line_rows, trafo_rows = rows("line"), rows("trafo")
    pos_of = dict(zip(net.bus.index.to_numpy(), bus_pos, strict=True))

    def dead_end(table: pd.DataFrame, rows_: NDArray[np.int64], ends: tuple[str, str]) -> NDArray[np.bool_]:
        """Branches outside the power flow with an unsupplied end: pandapower reports NaN loading for them."""
        pairs = zip(table[ends[0]], table[ends[1]], strict=True)
        cut = np.array([pos_of[a] < 0 or pos_of[b] < 0 for a, b in pairs], dtype=bool)
        return (rows_ < 0) & cut

    i_max = (line.max_i_ka * line.df * line.parallel).to_numpy(dtype=float)
    with np.errstate(divide="ignore"):
        inv_imax = np.where(i_max != 0, 100.0 / i_max, np.inf)
    inv_imax[dead_end(line, line_rows, ("from_bus", "to_bus"))] = np.nan
    sn = (trafo.sn_mva * trafo.parallel * trafo.df).to_numpy(dtype=float)
    trafo_k = np.vstack([trafo.vn_hv_kv.to_numpy(dtype=float), trafo.vn_lv_kv.to_numpy(dtype=float)]) * SQRT3 * 100 / sn
    trafo_k[:, dead_end(trafo, trafo_rows, ("hv_bus", "lv_bus"))] = np.nan
    ref = np.flatnonzero(bus_table[:, BUS_TYPE] == REF).astype(np.int64)
    load_bus = []
    for r in loads:
        row = net[r.element].loc[r.index]
        b = bus_pos[net.bus.index.get_loc(int(row.bus))]
        load_bus.append(b if bool(row.in_service) else -1)
    br_from = branch[:, F_BUS].real.astype(np.int64)
    br_to = branch[:, T_BUS].real.astype(np.int64)
    base_kv = bus_table[:, BASE_KV].real.astype(float)
    return _Topology(
        n_bus=n_bus, bus_pos=bus_pos, line_rows=line_rows, trafo_rows=trafo_rows,
        br_from=br_from, br_to=br_to, kv_from=base_kv[br_from], kv_to=base_kv[br_to],
        line_inv_imax=inv_imax, trafo_k=trafo_k.reshape(2, -1), ref=ref, ref_kv=base_kv[ref],
        pq=np.setdiff1d(np.arange(n_bus), ref).astype(np.int64),
        load_bus=np.array(load_bus, dtype=np.int64), load_net_bus_pos=_load_bus_positions(net, loads),
    )


def _check_supported(net: pp.pandapowerNet) -> None:
    active = [name for name in ("gen", "xward", "dcline", "trafo3w", "svc", "tcsc", "ssc", "vsc")
              if name in net and len(net[name]) and ("in_service" not in net[name] or net[name].in_service.any())]
    if active:
        raise FastSolverUnsupported(f"the fast solver supports slack + PQ grids only; found {active}. "
                                    "Use solver='pandapower'.")
    for col in ("const_z_p_percent", "const_i_p_percent", "const_z_q_percent", "const_i_q_percent",
                "const_z_percent", "const_i_percent"):
        if col in net.load and (net.load[col].fillna(0) != 0).any():
            raise FastSolverUnsupported(f"voltage-dependent loads (net.load.{col}) are not modelled by the fast "
                                        "solver. Use solver='pandapower'.")


class _LinearSolve:
    """x = A^-1 b for a fixed sparse A: a dense inverse for small systems (one matvec), else the SuperLU factors.

    The dense limit keeps OpenBLAS's gemv single-threaded: above ~9000 matrix entries it spawns threads, and on a
    busy machine (mosaik runs other simulators in the same process) a threaded tiny matvec costs 10-100x more
    than the whole SuperLU solve.
    """

    DENSE_MAX = 64

    def __init__(self, a: sp.spmatrix, what: str) -> None:
        try:
            lu = spla.splu(sp.csc_matrix(a))
        except RuntimeError as exc:  # exactly singular: a part of the network without any reference
            raise FastSolverUnsupported(f"{what} admittance matrix is singular ({exc}); use solver='pandapower'") \
                from exc
        n = a.shape[0]
        if n <= self.DENSE_MAX:
            z = np.ascontiguousarray(lu.solve(np.eye(n, dtype=complex)))
            self.solve = z.__matmul__
        else:
            self.solve = lu.solve


def _injection_matrix(topo: _Topology, n_loads: int, share: FloatArray | None = None) -> sp.csr_matrix:
    """Sparse map from driven-load powers to ppci bus injections (out-of-service loads map nowhere)."""
    cols = np.flatnonzero(topo.load_bus >= 0)
    data = np.ones(len(cols)) if share is None else share[cols]
    return sp.csr_matrix((data, (topo.load_bus[cols], cols)), shape=(topo.n_bus, n_loads))


def _stacked_outputs(yf: Sequence[sp.spmatrix], yt: Sequence[sp.spmatrix],
                     y_ref: Sequence[sp.spmatrix]) -> sp.csr_matrix:
    """One matrix giving all branch-end and slack currents (of all sequences) in a single sparse matvec."""
    k = len(yf)
    blocks = [[m if i == j else None for j in range(k)] for mats in (yf, yt, y_ref) for i, m in enumerate(mats)]
    return sp.csr_matrix(sp.bmat(blocks, format="csr"))


def _diverging(history: list[float]) -> bool:
    return not math.isfinite(history[-1]) or (len(history) > 8 and history[-1] > history[-5] > history[-9])


# ------------------------------------------------------------------------------------------ balanced


class _FastBalanced:
    """Positive-sequence power flow equal to pp.runpp."""

    def __init__(self, net: pp.pandapowerNet, loads: Sequence[LoadRef], tol_mva: float, max_iter: int) -> None:
        _check_supported(net)
        self.loads = list(loads)
        with _ZeroedLoads(net, self.loads), _plain_python_helpers():
            try:
                pp.runpp(net, numba=False)  # only its matrices are used; numba would add seconds of JIT compile
            except pp.LoadflowNotConverged as exc:
                raise PowerFlowDiverged(f"initial power flow (driven loads at zero) did not converge: {exc}") from exc
            internal = net._ppc["internal"]
        if len(internal["pv"]):
            raise FastSolverUnsupported("voltage-controlled (PV) buses are not supported; use solver='pandapower'")
        bus_table = internal["bus"]
        self.base_mva = float(internal["baseMVA"])
        self.topo = t = _build_topology(net, bus_table, internal["branch_is"], internal["branch"], self.loads)
        # static injections (sgens, undriven loads) in p.u. with the load arrow reversed
        self.s_static = -(bus_table[:, PD] + 1j * bus_table[:, QD]).astype(complex) / self.base_mva
        self.c_load = _injection_matrix(t, len(self.loads)) * (-1.0 / self.base_mva)
        ybus = internal["Ybus"].tocsr()
        self.ybus = ybus
        self.n_br = internal["Yf"].shape[0]
        self.out = _stacked_outputs([internal["Yf"]], [internal["Yt"]], [ybus[t.ref]])
        self.v_ref = internal["V"][t.ref].astype(complex)
        self.z = _LinearSolve(ybus[t.pq][:, t.pq], "positive-sequence")
        self.w = -self.z.solve(np.asarray(ybus[t.pq][:, t.ref] @ self.v_ref, dtype=complex).ravel())
        self.v_pq = self.w.copy()  # warm start: the previous step's solution
        self.tol, self.max_iter = tol_mva / self.base_mva, max_iter
        self._source = (self.v_ref.copy(), self.w.copy())

    def scale_source(self, k: float) -> None:
        # the no-load voltages are linear in the slack voltage
        self.v_ref, self.w = self._source[0] * k, self._source[1] * k
        self.v_pq = self.w.copy()

    def solve(self, p_mw: FloatArray, q_mvar: FloatArray) -> PowerFlowResult:
        s = self.s_static + self.c_load @ (p_mw + 1j * q_mvar)
        s_pq = s[self.topo.pq]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            v, iterations = self._zbus(s_pq, self.v_pq)
        if v is None:
            v, iterations = self._newton(s, self.v_pq)
        self.v_pq = v
        full = np.empty(self.topo.n_bus, dtype=complex)
        full[self.topo.ref] = self.v_ref
        full[self.topo.pq] = v
        return self._results(full, s, iterations)

    def _zbus(self, s_pq: ComplexArray, v: ComplexArray) -> tuple[ComplexArray | None, int]:
        i_prev = np.conj(s_pq / v)
        history: list[float] = []
        for k in range(1, self.max_iter + 1):
            v = self.w + self.z.solve(i_prev)
            i = np.conj(s_pq / v)
            # Y_LL v = I(v_prev) - Y_LR v_ref holds exactly, so I(v_prev) - I(v) is the current mismatch at v
            # (= power mismatch / |V|, with |V| ~ 1)
            mismatch = float(np.abs(i_prev - i).max()) if len(v) else 0.0
            if mismatch < self.tol:
                return v, k
            history.append(mismatch)
            if _diverging(history):
                break
            i_prev = i
        return None, self.max_iter

    def _newton(self, s: ComplexArray, v_pq: ComplexArray) -> tuple[ComplexArray, int]:
        """Polar Newton-Raphson fallback for heavy loading, where the Z-bus fixed point stops contracting."""
        t = self.topo
        pq, npq = t.pq, len(t.pq)
        v = np.empty(t.n_bus, dtype=complex)
        v[t.ref] = self.v_ref
        usable = np.all(np.isfinite(v_pq)) and np.abs(v_pq).min() > 0.5
        v[pq] = v_pq if usable else self.w
        for k in range(1, 31):
            mis = v * np.conj(self.ybus @ v) - s
            f = np.r_[mis[pq].real, mis[pq].imag]
            if not np.all(np.isfinite(f)):
                break
            if np.max(np.abs(f)) < self.tol:
                return v[pq], k
            ds_dvm, ds_dva = dSbus_dV(self.ybus, v)
            ds_dvm, ds_dva = ds_dvm[pq][:, pq], ds_dva[pq][:, pq]
            jac = sp.bmat([[ds_dva.real, ds_dvm.real], [ds_dva.imag, ds_dvm.imag]], format="csc")
            dx = spla.spsolve(jac, -f)
            v[pq] = (np.abs(v[pq]) + dx[npq:]) * np.exp(1j * (np.angle(v[pq]) + dx[:npq]))
        self.v_pq = self.w.copy()  # never warm-start the next step from a failed iterate
        raise PowerFlowDiverged("power flow did not converge (more load than the grid can supply?)")

    def _results(self, v: ComplexArray, s: ComplexArray, iterations: int) -> PowerFlowResult:
        t, base = self.topo, self.base_mva
        cur = self.out @ v
        i_f, i_t, i_ref = cur[:self.n_br], cur[self.n_br:2 * self.n_br], cur[2 * self.n_br:]
        s_f = v[t.br_from] * np.conj(i_f)
        pl = np.append((s_f + v[t.br_to] * np.conj(i_t)).real * base, 0.0)
        p_f = np.append(s_f.real * base, 0.0)
        # pandapower's i_ka = |S| / (|V| kV sqrt3) = |I_pu| * base / (kV sqrt3)
        amp_f = np.append(np.abs(i_f) * base / (SQRT3 * t.kv_from), 0.0)
        amp_t = np.append(np.abs(i_t) * base / (SQRT3 * t.kv_to), 0.0)
        lr, tr = t.line_rows, t.trafo_rows
        line_pl, trafo_pl = pl[lr], pl[tr]
        # external grid output = injection into the network at the slack plus what is connected there
        s_ref = (v[t.ref] * np.conj(i_ref) - s[t.ref]) * base
        vm = np.append(np.abs(v), np.nan)[t.bus_pos]
        return PowerFlowResult(
            v_pu=vm, v_abc_pu=np.broadcast_to(vm, (3, len(vm))),
            line_loading_pct=np.maximum(amp_f[lr], amp_t[lr]) * t.line_inv_imax, line_pl_w=line_pl * 1e6,
            trafo_loading_pct=np.maximum(amp_f[tr] * t.trafo_k[0], amp_t[tr] * t.trafo_k[1]),
            trafo_p_hv_w=p_f[tr] * 1e6, load_v_pu=vm[t.load_net_bus_pos],
            p_slack_w=float(s_ref.real.sum()) * 1e6, q_slack_var=float(s_ref.imag.sum()) * 1e6,
            losses_w=float(line_pl.sum() + trafo_pl.sum()) * 1e6, iterations=iterations,
        )


# ------------------------------------------------------------------------------------------ unbalanced


class _FastUnbalanced:
    """Sequence-frame power flow equal to pp.runpp_3ph (constant-power wye loads)."""

    def __init__(self, net: pp.pandapowerNet, loads: Sequence[LoadRef], tol_mva: float, max_iter: int) -> None:
        _check_supported(net)
        self.loads = list(loads)
        for r in self.loads:
            if r.element == "asymmetric_load" and str(net.asymmetric_load.at[r.index, "type"]) != "wye":
                raise FastSolverUnsupported("delta asymmetric loads are not supported; use solver='pandapower'")
        with _ZeroedLoads(net, self.loads), _plain_python_helpers():
            ppci0, ppci1, ppci2, y_eg = _sequence_networks(net)
            s_delta, s_wye = _static_phase_loads(net, ppci1)
        if np.any(s_delta != 0):
            raise FastSolverUnsupported("delta-connected loads are not supported; use solver='pandapower'")
        self.base_mva = float(ppci1["baseMVA"])
        self.topo = t = _build_topology(net, ppci1["bus"], ppci1["internal"]["branch_is"], ppci1["branch"],
                                        self.loads)
        ys = [makeYbus(p["baseMVA"], p["bus"], p["branch"]) for p in (ppci0, ppci1, ppci2)]
        y = [m[0].tocsr() for m in ys]
        # runpp_3ph takes the external grid admittance (negative-sequence value, for sequence 0 and 2) out of
        # the slack rows before it computes the slack power; do the same
        eg = sp.csr_matrix((y_eg, (np.arange(len(t.ref)), t.ref)), shape=(len(t.ref), t.n_bus))
        y_ref = [y[0][t.ref] - eg, y[1][t.ref], y[2][t.ref] - eg]
        self.out = _stacked_outputs([m[1] for m in ys], [m[2] for m in ys], y_ref)
        self.n_br = ys[0][1].shape[0]
        self.v1_ref = (ppci1["bus"][t.ref, VM] * np.exp(1j * np.deg2rad(ppci1["bus"][t.ref, VA]))).astype(complex)
        # zero and negative sequence: full matrices (external grid impedance to earth included);
        # positive sequence: PQ buses only, with the slack voltage fixed
        self.z0 = _LinearSolve(y[0], "zero-sequence")
        self.z1 = _LinearSolve(y[1][t.pq][:, t.pq], "positive-sequence")
        self.z2 = _LinearSolve(y[2], "negative-sequence")
        self.w1 = -self.z1.solve(np.asarray(y[1][t.pq][:, t.ref] @ self.v1_ref, dtype=complex).ravel())
        self.v012 = self._no_load()  # warm start: the previous step's solution
        self.s_static = -np.asarray(s_wye, dtype=complex) / self.base_mva  # (3, n_bus) per-phase injection, p.u.
        phases = np.array([r.phase or 0 for r in self.loads], dtype=np.int64)
        # each driven load puts its whole power on its phase, or a third on each phase if symmetric
        per_phase = [_injection_matrix(t, len(self.loads), np.where(phases == 0, 1 / 3, (phases == k) * 1.0))
                     for k in (1, 2, 3)]
        self.c_load = sp.csr_matrix(sp.vstack(per_phase) * (-1.0 / self.base_mva))
        self.load_phase = phases
        self.tol, self.max_iter = tol_mva / self.base_mva, max_iter
        self._source = (self.v1_ref.copy(), self.w1.copy())

    def scale_source(self, k: float) -> None:
        # the no-load voltages are linear in the slack voltage
        self.v1_ref, self.w1 = self._source[0] * k, self._source[1] * k
        self.v012 = self._no_load()

    def _no_load(self) -> ComplexArray:
        v012 = np.zeros((3, self.topo.n_bus), dtype=complex)
        v012[1, self.topo.ref] = self.v1_ref
        v012[1, self.topo.pq] = self.w1
        return v012

    def solve(self, p_mw: FloatArray, q_mvar: FloatArray) -> PowerFlowResult:
        s_abc = self.s_static + (self.c_load @ (p_mw + 1j * q_mvar)).reshape(3, -1)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            v012, iterations = self._iterate(s_abc, self.v012.copy())
        if v012 is None:
            self.v012 = self._no_load()
            raise PowerFlowDiverged("unbalanced power flow did not converge (more load than the grid can supply?)")
        self.v012 = v012
        return self._results(Tabc @ v012, iterations)

    def _iterate(self, s_abc: ComplexArray, v012: ComplexArray) -> tuple[ComplexArray | None, int]:
        """Constant-power wye loads -> phase currents -> sequence currents -> sequence voltages, to a fixed point."""
        pq = self.topo.pq
        i_prev = T012 @ np.conj(s_abc / (Tabc @ v012))
        history: list[float] = []
        for k in range(1, self.max_iter + 1):
            v012[0] = self.z0.solve(i_prev[0])
            v012[1, pq] = self.w1 + self.z1.solve(i_prev[1, pq])
            v012[2] = self.z2.solve(i_prev[2])
            i = T012 @ np.conj(s_abc / (Tabc @ v012))
            # the sequence equations hold exactly for I(v_prev), so I(v_prev) - I(v) is the mismatch at v
            # (the slack's positive-sequence entry is included; it converges with the rest)
            mismatch = float(np.abs(i_prev - i).max())
            if mismatch < self.tol:
                return v012, k
            history.append(mismatch)
            if _diverging(history):
                break
            i_prev = i
        return None, self.max_iter

    def _results(self, vabc: ComplexArray, iterations: int) -> PowerFlowResult:
        t, base, nb = self.topo, self.base_mva, self.n_br
        v012 = T012 @ vabc
        cur = (self.out @ v012.ravel()).reshape(-1)
        # branch currents (kA) and phase voltages (kV) exactly as pandapower's _get_branch_flows_3ph
        iabc_f = Tabc @ (cur[:3 * nb].reshape(3, nb) * (base * SQRT3 / t.kv_from))
        iabc_t = Tabc @ (cur[3 * nb:6 * nb].reshape(3, nb) * (base * SQRT3 / t.kv_to))
        s_f = vabc[:, t.br_from] * t.kv_from * np.conj(iabc_f) / SQRT3
        s_t = vabc[:, t.br_to] * t.kv_to * np.conj(iabc_t) / SQRT3
        pl = np.append((s_f + s_t).real.sum(axis=0), 0.0)
        p_f = np.append(s_f.real.sum(axis=0), 0.0)
        zero = np.zeros((3, 1))
        amp_f, amp_t = np.hstack([np.abs(iabc_f), zero]), np.hstack([np.abs(iabc_t), zero])
        lr, tr = t.line_rows, t.trafo_rows
        line_pl, trafo_pl = pl[lr], pl[tr]
        vm = np.hstack([np.abs(vabc), zero + np.nan])[:, t.bus_pos]
        v1 = np.append(np.abs(v012[1]), np.nan)[t.bus_pos]
        load_v = np.where(self.load_phase > 0, vm[self.load_phase - 1, t.load_net_bus_pos],
                          v1[t.load_net_bus_pos])
        # slack power like runpp_3ph: sequence currents at the slack -> phase currents and voltages
        i_ref = cur[6 * nb:].reshape(3, -1) * (base * SQRT3 / t.ref_kv)
        s_ref = (vabc[:, t.ref] * (t.ref_kv / SQRT3)) * np.conj(Tabc @ i_ref)
        return PowerFlowResult(
            v_pu=v1, v_abc_pu=vm,
            line_loading_pct=np.maximum(amp_f[:, lr], amp_t[:, lr]).max(axis=0) * t.line_inv_imax,
            line_pl_w=line_pl * 1e6,
            trafo_loading_pct=np.maximum(amp_f[:, tr] * t.trafo_k[0], amp_t[:, tr] * t.trafo_k[1]).max(axis=0),
            trafo_p_hv_w=p_f[tr] * 1e6, load_v_pu=load_v,
            p_slack_w=float(s_ref.real.sum()) * 1e6, q_slack_var=float(s_ref.imag.sum()) * 1e6,
            losses_w=float(line_pl.sum() + trafo_pl.sum()) * 1e6, iterations=iterations,
        )


def _sequence_networks(net: pp.pandapowerNet) -> tuple[dict, dict, dict, ComplexArray]:
    """The three internal sequence networks exactly as runpp_3ph builds them (it runs once to set its options)."""
    from pandapower.build_bus import _add_ext_grid_sc_impedance
    from pandapower.pd2ppc import _pd2ppc

    try:
        pp.runpp_3ph(net, numba=False)  # only its options and lookups are used; numba would add JIT compile time
    except pp.LoadflowNotConverged as exc:
        raise PowerFlowDiverged(f"initial 3-phase power flow (driven loads at zero) did not converge: {exc}") \
            from exc
    _, ppci1 = _pd2ppc(net, 1)
    _, ppci2 = _pd2ppc(net, 2)
    gs_eg, bs_eg = _add_ext_grid_sc_impedance(net, ppci2)
    _, ppci0 = _pd2ppc(net, 0)
    if ppci0["branch"].shape[0] != ppci1["branch"].shape[0]:
        raise FastSolverUnsupported("zero- and positive-sequence branch tables differ; use solver='pandapower'")
    # one value per slack bus, ascending ppci bus order (= the order of the REF buses)
    y_eg = (np.asarray(gs_eg) + 1j * np.asarray(bs_eg)).astype(complex) / ppci2["baseMVA"]
    return ppci0, ppci1, ppci2, y_eg


def _static_phase_loads(net: pp.pandapowerNet, ppci1: dict) -> tuple[ComplexArray, ComplexArray]:
    from pandapower.pf.runpp_3ph import _load_mapping

    s_delta, s_wye = _load_mapping(net, ppci1)
    return np.asarray(s_delta, dtype=complex), np.asarray(s_wye, dtype=complex)
