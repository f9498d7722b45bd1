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

        from controllers.banded_qp_kernel import warm_up

        warm_up()  # the compiled kernel loads with the problem (world building), not in the first control step

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
        xs, ys, statuses, its = self.solve_many(*(np.asarray(v, dtype=np.float64)[None] for v in (q, c, b, l, u)))
        return xs[0], ys[0], statuses[0], int(its[0])

    def solve_many(self, q: np.ndarray, c: np.ndarray, b: np.ndarray, l: np.ndarray, u: np.ndarray):
        """:meth:`solve` for many problems with this matrix in one compiled call, one problem per row of ``q, c, l,
        u`` (columns) and ``b`` (rows): ``(x rows, y rows, statuses, iterations)``, each row as :meth:`solve`
        answers it alone."""
        from controllers.banded_qp_kernel import ITERATION_LIMIT, OPTIMAL, solve_batch

        f64 = np.float64
        q, c, b, l, u = (np.ascontiguousarray(v, f64) for v in (q, c, b, l, u))
        if not (np.all(np.isfinite(l)) and np.all(np.isfinite(u))):
            raise ValueError("all bounds must be finite")
        crossed = np.any(l > u + 1e-12, axis=1)
        xs, ys, codes, its = solve_batch(*self._csr, self._pos, self._col, self._coef, self.band,  # type: ignore[call-arg]
                                         q, c, b, l, u, ~crossed, self.tol, self.feas_tol, self.max_iter)
        if crossed.any():  # rare: skip the clip of every row
            xs[crossed] = np.clip(0.5 * (l + u), l, u)[crossed]
        statuses = ["infeasible bounds" if cut else "optimal" if code == OPTIMAL
                    else "iteration limit" if code == ITERATION_LIMIT else "numerical failure"
                    for cut, code in zip(crossed.tolist(), codes.tolist())]
        return xs, ys, statuses, its
