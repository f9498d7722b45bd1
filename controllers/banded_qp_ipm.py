"""A banded interior-point solver for diagonal QPs whose rows and columns are ordered by time step.

Knows nothing about PROFESS; :mod:`controllers.profess_ipm` maps the PROFESS problem onto it.
"""

from __future__ import annotations

import numpy as np


class BandedQpIpm:
    """Mehrotra predictor-corrector interior-point method for ``min 1/2 x'diag(q)x + c'x, A x = b, l <= x <= u``.

    Made for MPC problems whose rows and columns are ordered by time step: every column touches rows of
    at most two consecutive steps, so the normal matrix ``A H^-1 A'`` is banded (half-bandwidth ``band``)
    and each Newton step is one banded Cholesky factorisation (LAPACK ``pbtrf``), linear in the horizon.
    The sparsity pattern is analysed once; an iteration is a handful of vectorised numpy operations.
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

    def _normal(self, hinv: np.ndarray) -> np.ndarray:
        ab = np.bincount(self._pos, weights=self._coef * hinv[self._col], minlength=self._size)
        return ab.reshape(self.band + 1, self.m)

    def solve(self, q: np.ndarray, c: np.ndarray, b: np.ndarray, l: np.ndarray, u: np.ndarray):
        """Returns ``(x, y, status, iterations)``; status "optimal" or a reason."""
        from scipy.linalg.lapack import dpbtrf as pbtrf, dpbtrs as pbtrs

        a, at = self.a_csr, self.at
        if not (np.all(np.isfinite(l)) and np.all(np.isfinite(u))):
            raise ValueError("all bounds must be finite")
        if np.any(l > u + 1e-12):
            return np.clip(0.5 * (l + u), l, u), np.zeros(self.m), "infeasible bounds", 0
        fixed = (u - l) <= 1e-9 * (1.0 + np.abs(l))
        u = np.where(fixed, l, u)
        free = (~fixed).astype(float)
        width = np.where(fixed, 1.0, u - l)
        # Start in the middle of each box (fixed variables at their value), unit duals. Fixed variables
        # keep dx = dz = 0 (their H^-1 is zero) and unit slacks, so no masking is needed in the loop.
        x = np.where(fixed, l, l + 0.5 * width)
        zl = free.copy()
        zu = free.copy()
        y = np.zeros(self.m)
        nfree = max(int(free.sum()), 1)
        bnorm = 1.0 + np.max(np.abs(b), initial=0.0)
        cnorm = 1.0 + np.max(np.abs(c), initial=0.0)
        status = "iteration limit"
        it = 0

        def max_step(v, dv):
            neg = dv < 0.0
            if not neg.any():
                return 1.0
            return min(1.0, float(np.min(v[neg] / -dv[neg])))

        for it in range(1, self.max_iter + 1):  # noqa: B007  (the count is returned)
            wl = np.where(fixed, 1.0, np.maximum(x - l, 1e-14))
            wu = np.where(fixed, 1.0, np.maximum(u - x, 1e-14))
            rp = b - a @ x
            rd = (c + q * x - (at @ y) - zl + zu) * free
            wz = wl * zl + wu * zu
            mu = float(wz.sum()) / (2 * nfree)
            obj = float(((0.5 * q * x + c) * x).sum())  # no BLAS dot: threaded BLAS stalls on busy machines
            prim = np.abs(rp).max(initial=0.0) / bnorm
            dual = np.abs(rd).max(initial=0.0) / cnorm
            gap = 2 * nfree * mu / (1.0 + abs(obj))
            if prim <= self.feas_tol and dual <= self.feas_tol and gap <= self.tol:
                status = "optimal"
                break
            if gap <= 1e-2 * self.tol and prim <= 1e4 * self.feas_tol and dual <= 1e4 * self.feas_tol:
                status = "optimal"  # stagnated at the accuracy the normal equations allow (< 0.1 W)
                break
            zlw, zuw = zl / wl, zu / wu
            hinv = free / (q + zlw + zuw + fixed + 1e-9)  # 1e-9: primal regularisation caps H^-1
            ab = self._normal(hinv)
            fac, info = pbtrf(ab, lower=1)
            if info != 0:
                # Near the end a row may lose all its free columns to their bounds: regularise slightly.
                ab[0] += 1e-12 * (1.0 + ab[0].max())
                fac, info = pbtrf(ab, lower=1)
                if info != 0:
                    status = "numerical failure"
                    break
            rd_neg = -rd

            def direction(rl, ru):
                hvec = (rd_neg + rl / wl - ru / wu) * free
                rhs = rp - a @ (hinv * hvec)
                dy = pbtrs(fac, rhs, lower=1)[0]
                dx = hinv * (hvec + at @ dy)
                # One step of iterative refinement keeps A dx = rp accurate when H^-1 spans many decades.
                err = rp - a @ dx
                if np.abs(err).max(initial=0.0) > 1e-12 * bnorm:
                    ddy = pbtrs(fac, err, lower=1)[0]
                    dy = dy + ddy
                    dx = dx + hinv * (at @ ddy)
                return dx, dy, rl / wl - zlw * dx, ru / wu + zuw * dx

            # Predictor (affine scaling), then the corrector with Mehrotra's centring.
            dx, dy, dzl, dzu = direction(-wl * zl * free, -wu * zu * free)
            ap = min(max_step(wl, dx), max_step(wu, -dx))
            ad = min(max_step(zl, dzl), max_step(zu, dzu))
            mu_aff = float((((wl + ap * dx) * (zl + ad * dzl) + (wu - ap * dx) * (zu + ad * dzu)) * free).sum()) \
                / (2 * nfree)
            sigma = (mu_aff / mu) ** 3 if mu > 0 else 0.0
            rl = (sigma * mu - wl * zl - dx * dzl) * free
            ru = (sigma * mu - wu * zu + dx * dzu) * free
            dx, dy, dzl, dzu = direction(rl, ru)
            ap = 0.995 * min(max_step(wl, dx), max_step(wu, -dx))
            ad = 0.995 * min(max_step(zl, dzl), max_step(zu, dzu))
            x = x + ap * dx
            y = y + ad * dy
            zl = zl + ad * dzl
            zu = zu + ad * dzu
        return x, y, status, it
