"""A banded interior-point solver for diagonal QPs whose rows and columns are ordered by time step.

Knows nothing about PROFESS; :mod:`controllers.profess_ipm` maps the PROFESS problem onto it.
"""

from __future__ import annotations

import numpy as np


class BandedQpIpm:
    """Mehrotra predictor-corrector interior-point method for ``min 1/2 x'diag(q)x + c'x, A x = b, l <= x <= u``.

    Made for MPC problems whose rows and columns are ordered by time step: every column touches rows of
    at most two consecutive steps, so the normal matrix ``A H^-1 A'`` is banded (half-bandwidth ``band``)
    and each Newton step is one banded Cholesky factorisation (in LAPACK ``dpbtf2``'s order), linear in the
    horizon. The sparsity pattern is analysed once; the iterations run compiled (numba,
    :mod:`controllers.banded_qp_kernel`): as numpy operations their call overhead made a 96-step solve ~4x slower.
    Variables with ``l == u`` are held fixed. All bounds must be finite.

    HiGHS's active-set QP solver needs ~450 iterations and 15-40 ms on the 96-step problem and then
    reports primal infeasibilities of 1e-5 (model status "Solve error"); this method needs ~15-25
    iterations and is exact to the tolerance (duality gap <= ``tol`` relative).
    """

    def __init__(self, a, band: int, tol: float = 1e-10, feas_tol: float = 1e-9, max_iter: int = 150) -> None:
        from scipy import sparse

        a = sparse.csc_matrix(a)
        a.sum_duplicates()
        self.a = a
        self.at = a.T.tocsr()
        self.a_csr = a.tocsr()
        self.m, self.n = a.shape
        self.band = band
        self.tol = tol
        self.feas_tol = feas_tol
        self.max_iter = max_iter
        # For each column k, every pair (i <= j) of its rows contributes a[i,k] a[j,k] / H_k to M[i,j].
        # Lower banded storage: ab[i - j, j] = M[i, j] for i >= j.
        pos, col, coef = [], [], []
        for k in range(self.n):
            lo, hi = a.indptr[k], a.indptr[k + 1]
            rows = a.indices[lo:hi]
            vals = a.data[lo:hi]
            for p in range(len(rows)):
                for q in range(p, len(rows)):
                    i, j = max(rows[p], rows[q]), min(rows[p], rows[q])
                    if i - j > band:
                        raise ValueError(f"column {k} couples rows {j} and {i}: more than the band {band}")
                    pos.append((i - j) * self.m + j)
                    col.append(k)
                    coef.append(vals[p] * vals[q])
        self._pos = np.array(pos, dtype=np.int64)
        self._col = np.array(col, dtype=np.int64)
        self._coef = np.array(coef, dtype=float)
        self._size = (band + 1) * self.m
        self._csr = tuple(np.ascontiguousarray(arr) for m in (self.a_csr, self.at)
                          for arr in (m.indptr.astype(np.int64), m.indices.astype(np.int64), m.data.astype(float)))

    def solve(self, q: np.ndarray, c: np.ndarray, b: np.ndarray, l: np.ndarray, u: np.ndarray):
        """Returns ``(x, y, status, iterations)``; status "optimal" or a reason. The iterations run compiled
        (:mod:`controllers.banded_qp_kernel`)."""
        from controllers.banded_qp_kernel import OPTIMAL, ITERATION_LIMIT, solve_kernel

        if not (np.all(np.isfinite(l)) and np.all(np.isfinite(u))):
            raise ValueError("all bounds must be finite")
        if np.any(l > u + 1e-12):
            return np.clip(0.5 * (l + u), l, u), np.zeros(self.m), "infeasible bounds", 0
        f64 = np.float64
        x, y, code, it = solve_kernel(*self._csr, self._pos, self._col, self._coef, self.band,  # type: ignore[call-arg]
                                      np.ascontiguousarray(q, f64), np.ascontiguousarray(c, f64),
                                      np.ascontiguousarray(b, f64), np.ascontiguousarray(l, f64),
                                      np.ascontiguousarray(u, f64), self.tol, self.feas_tol, self.max_iter)
        status = "optimal" if code == OPTIMAL else "iteration limit" if code == ITERATION_LIMIT else "numerical failure"
        return x, y, status, int(it)
