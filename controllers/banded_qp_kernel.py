"""The iterations of :class:`controllers.banded_qp_ipm.BandedQpIpm` compiled with numba.

A PROFESS cycle of a large grid solves hundreds of 96-step problems; as numpy code each iteration is ~40 small
array operations whose call overhead dominates (~3 ms per solve). Here the same Mehrotra iterations run as plain
loops: the sparse products over the CSR arrays of A and A', the normal matrix in LAPACK's lower banded layout,
its Cholesky factorisation and solves in the order of LAPACK's unblocked ``dpbtf2`` / ``dpbtrs``. Compiled once
per machine (``cache=True``). The one entry point, :func:`solve_batch`, solves many problems with the same matrix in
one call (a cycle of many PROFESS sites, or one site as a batch of one): one compiled signature, no Python between
the problems.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

OPTIMAL, ITERATION_LIMIT, NUMERICAL_FAILURE = 0, 1, 2


@njit(cache=True, error_model="numpy")
def _matvec(indptr, indices, data, v, out):
    for i in range(out.size):
        s = 0.0
        for p in range(indptr[i], indptr[i + 1]):
            s += data[p] * v[indices[p]]
        out[i] = s


@njit(cache=True, error_model="numpy")
def _cholesky(ab, fac, band):
    """Lower banded Cholesky of ``ab`` into ``fac`` (dpbtf2's order); False if not positive definite."""
    m = ab.shape[1]
    fac[:, :] = ab
    for j in range(m):
        ajj = fac[0, j]
        if ajj <= 0.0 or not math.isfinite(ajj):
            return False
        ajj = math.sqrt(ajj)
        fac[0, j] = ajj
        kn = min(band, m - 1 - j)
        r = 1.0 / ajj
        for i in range(1, kn + 1):
            fac[i, j] *= r
        for c in range(1, kn + 1):
            vc = fac[c, j]
            for i in range(c, kn + 1):
                fac[i - c, j + c] -= fac[i, j] * vc
    return True


@njit(cache=True, error_model="numpy")
def _chol_solve(fac, band, rhs, out):
    m = fac.shape[1]
    for j in range(m):
        out[j] = rhs[j]
    for j in range(m):  # L z = rhs
        out[j] /= fac[0, j]
        zj = out[j]
        for i in range(1, min(band, m - 1 - j) + 1):
            out[j + i] -= fac[i, j] * zj
    for j in range(m - 1, -1, -1):  # L' x = z
        s = out[j]
        for i in range(1, min(band, m - 1 - j) + 1):
            s -= fac[i, j] * out[j + i]
        out[j] = s / fac[0, j]


@njit(cache=True, error_model="numpy")
def _max_step(v, dv, sign):
    step = 1.0
    for i in range(v.size):
        d = sign * dv[i]
        if d < 0.0:
            step = min(step, v[i] / -d)
    return step


@njit(cache=True, error_model="numpy")
def _direction(a_ptr, a_idx, a_val, t_ptr, t_idx, t_val, fac, band, hinv, free, rd, rp, rl, ru, wl, wu, zlw, zuw,
               bnorm, dx, dy, dzl, dzu, tmp_n, tmp_m, tmp_m2):
    n = hinv.size
    hvec = np.empty(n)
    for k in range(n):
        hvec[k] = (-rd[k] + rl[k] / wl[k] - ru[k] / wu[k]) * free[k]
        tmp_n[k] = hinv[k] * hvec[k]
    _matvec(a_ptr, a_idx, a_val, tmp_n, tmp_m)
    for i in range(tmp_m.size):
        tmp_m[i] = rp[i] - tmp_m[i]
    _chol_solve(fac, band, tmp_m, dy)
    _matvec(t_ptr, t_idx, t_val, dy, tmp_n)
    for k in range(n):
        dx[k] = hinv[k] * (hvec[k] + tmp_n[k])
    # one step of iterative refinement keeps A dx = rp accurate when H^-1 spans many decades
    _matvec(a_ptr, a_idx, a_val, dx, tmp_m)
    err_max = 0.0
    for i in range(tmp_m.size):
        tmp_m[i] = rp[i] - tmp_m[i]
        err_max = max(err_max, abs(tmp_m[i]))
    if err_max > 1e-12 * bnorm:
        _chol_solve(fac, band, tmp_m, tmp_m2)
        for i in range(dy.size):
            dy[i] += tmp_m2[i]
        _matvec(t_ptr, t_idx, t_val, tmp_m2, tmp_n)
        for k in range(n):
            dx[k] += hinv[k] * tmp_n[k]
    for k in range(n):
        dzl[k] = rl[k] / wl[k] - zlw[k] * dx[k]
        dzu[k] = ru[k] / wu[k] + zuw[k] * dx[k]


@njit(cache=True, error_model="numpy")
def solve_kernel(a_ptr, a_idx, a_val, t_ptr, t_idx, t_val, pos, col, coef, band, q, c, b, l, u, tol, feas_tol,
                 max_iter):
    """(x, y, status code, iterations) of ``min 1/2 x'diag(q)x + c'x, A x = b, l <= x <= u`` (finite bounds,
    ``l <= u``); A as CSR (``a_*``) and its transpose as CSR (``t_*``), the normal matrix pattern as in
    BandedQpIpm."""
    n, m = q.size, b.size
    fixed = np.empty(n, dtype=np.bool_)
    free = np.empty(n)
    x = np.empty(n)
    for k in range(n):
        fixed[k] = (u[k] - l[k]) <= 1e-9 * (1.0 + abs(l[k]))
        free[k] = 0.0 if fixed[k] else 1.0
        x[k] = l[k] if fixed[k] else l[k] + 0.5 * (u[k] - l[k])
    uu = np.where(fixed, l, u)
    zl = free.copy()
    zu = free.copy()
    y = np.zeros(m)
    nfree = max(int(free.sum()), 1)
    bnorm = 1.0 + (np.max(np.abs(b)) if m else 0.0)
    cnorm = 1.0 + (np.max(np.abs(c)) if n else 0.0)
    wl, wu, rd, zlw, zuw, hinv = np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    rl, ru, dx, dzl, dzu, tmp_n = np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n), np.empty(n)
    rp, dy, tmp_m, tmp_m2 = np.empty(m), np.empty(m), np.empty(m), np.empty(m)
    size = (band + 1) * m
    ab = np.empty((band + 1, m))
    fac = np.empty((band + 1, m))
    status = ITERATION_LIMIT
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007  (the count is returned)
        for k in range(n):
            wl[k] = 1.0 if fixed[k] else max(x[k] - l[k], 1e-14)
            wu[k] = 1.0 if fixed[k] else max(uu[k] - x[k], 1e-14)
        _matvec(a_ptr, a_idx, a_val, x, rp)
        prim = 0.0
        for i in range(m):
            rp[i] = b[i] - rp[i]
            prim = max(prim, abs(rp[i]))
        _matvec(t_ptr, t_idx, t_val, y, tmp_n)
        wz = 0.0
        obj = 0.0
        dual = 0.0
        for k in range(n):
            rd[k] = (c[k] + q[k] * x[k] - tmp_n[k] - zl[k] + zu[k]) * free[k]
            dual = max(dual, abs(rd[k]))
            wz += wl[k] * zl[k] + wu[k] * zu[k]
            obj += (0.5 * q[k] * x[k] + c[k]) * x[k]
        mu = wz / (2 * nfree)
        prim /= bnorm
        dual /= cnorm
        gap = 2 * nfree * mu / (1.0 + abs(obj))
        if prim <= feas_tol and dual <= feas_tol and gap <= tol:
            status = OPTIMAL
            break
        if gap <= 1e-2 * tol and prim <= 1e4 * feas_tol and dual <= 1e4 * feas_tol:
            status = OPTIMAL  # stagnated at the accuracy the normal equations allow (< 0.1 W)
            break
        for k in range(n):
            zlw[k] = zl[k] / wl[k]
            zuw[k] = zu[k] / wu[k]
            hinv[k] = free[k] / (q[k] + zlw[k] + zuw[k] + (1.0 if fixed[k] else 0.0) + 1e-9)
        flat = np.zeros(size)
        for p in range(pos.size):
            flat[pos[p]] += coef[p] * hinv[col[p]]
        ab[:, :] = flat.reshape(band + 1, m)
        if not _cholesky(ab, fac, band):
            # near the end a row may lose all its free columns to their bounds: regularise slightly
            top = 1e-12 * (1.0 + np.max(ab[0]))
            for j in range(m):
                ab[0, j] += top
            if not _cholesky(ab, fac, band):
                status = NUMERICAL_FAILURE
                break
        # predictor (affine scaling)
        for k in range(n):
            rl[k] = -wl[k] * zl[k] * free[k]
            ru[k] = -wu[k] * zu[k] * free[k]
        _direction(a_ptr, a_idx, a_val, t_ptr, t_idx, t_val, fac, band, hinv, free, rd, rp, rl, ru, wl, wu, zlw, zuw,
                   bnorm, dx, dy, dzl, dzu, tmp_n, tmp_m, tmp_m2)
        ap = min(_max_step(wl, dx, 1.0), _max_step(wu, dx, -1.0))
        ad = min(_max_step(zl, dzl, 1.0), _max_step(zu, dzu, 1.0))
        s = 0.0
        for k in range(n):
            s += ((wl[k] + ap * dx[k]) * (zl[k] + ad * dzl[k]) + (wu[k] - ap * dx[k]) * (zu[k] + ad * dzu[k])) \
                * free[k]
        mu_aff = s / (2 * nfree)
        sigma = (mu_aff / mu) ** 3 if mu > 0 else 0.0
        # corrector with Mehrotra's centring
        for k in range(n):
            rl[k] = (sigma * mu - wl[k] * zl[k] - dx[k] * dzl[k]) * free[k]
            ru[k] = (sigma * mu - wu[k] * zu[k] + dx[k] * dzu[k]) * free[k]
        _direction(a_ptr, a_idx, a_val, t_ptr, t_idx, t_val, fac, band, hinv, free, rd, rp, rl, ru, wl, wu, zlw, zuw,
                   bnorm, dx, dy, dzl, dzu, tmp_n, tmp_m, tmp_m2)
        ap = 0.995 * min(_max_step(wl, dx, 1.0), _max_step(wu, dx, -1.0))
        ad = 0.995 * min(_max_step(zl, dzl, 1.0), _max_step(zu, dzu, 1.0))
        for k in range(n):
            x[k] += ap * dx[k]
            zl[k] += ad * dzl[k]
            zu[k] += ad * dzu[k]
        for i in range(m):
            y[i] += ad * dy[i]
    return x, y, status, it


@njit(cache=True, error_model="numpy")
def solve_batch(a_ptr, a_idx, a_val, t_ptr, t_idx, t_val, pos, col, coef, band, q, c, b, l, u, active, tol, feas_tol,
                max_iter):
    """:func:`solve_kernel` for every row of ``q, c, b, l, u`` (one problem per row, all with the same A) whose
    ``active`` is set: (x rows, y rows, status codes, iterations); an inactive row keeps zeros, code -1."""
    count, n = q.shape
    m = b.shape[1]
    xs = np.zeros((count, n))
    ys = np.zeros((count, m))
    codes = np.full(count, -1, dtype=np.int64)
    its = np.zeros(count, dtype=np.int64)
    for s in range(count):
        if active[s]:
            x, y, code, it = solve_kernel(a_ptr, a_idx, a_val, t_ptr, t_idx, t_val, pos, col, coef, band, q[s], c[s],
                                          b[s], l[s], u[s], tol, feas_tol, max_iter)
            xs[s] = x
            ys[s] = y
            codes[s] = code
            its[s] = it
    return xs, ys, codes, its


def warm_up() -> None:
    """Load the compiled kernel now (from numba's cache, ~1 s) rather than in the first control step."""
    if _WARM:
        return
    a = np.zeros(1, dtype=np.int64)
    one = np.ones(1)
    row = np.ones((1, 1))
    solve_batch(np.array([0, 1]), a, one, np.array([0, 1]), a, one, a, a, one, 0, row, row, row, row * 0.0, row * 2.0,
                np.ones(1, dtype=np.bool_), 1e-10, 1e-9, 5)
    _WARM.append(True)


_WARM: list[bool] = []
