"""The compiled banded IPM pieces (controllers/banded_qp_kernel.py) against LAPACK and against a dense QP."""

import numpy as np
from scipy import sparse
from scipy.linalg.lapack import dpbtrf, dpbtrs

from controllers.banded_qp_ipm import BandedQpIpm
from controllers.banded_qp_kernel import _chol_solve, _cholesky


def test_banded_cholesky_and_solve_equal_lapack():
    rng = np.random.default_rng(3)
    m, band = 40, 3
    dense = np.zeros((m, m))
    for k in range(1, band + 1):
        off = rng.normal(size=m - k)
        dense += np.diag(off, k) + np.diag(off, -k)
    dense += np.diag(np.abs(dense).sum(axis=1) + 1.0)  # diagonally dominant: positive definite
    ab = np.array([np.concatenate([np.diag(dense, -k), np.zeros(k)]) for k in range(band + 1)])
    fac = np.empty_like(ab)
    assert _cholesky(ab, fac, band)
    ref, info = dpbtrf(ab, lower=1)
    assert info == 0
    np.testing.assert_allclose(fac, ref, rtol=1e-13, atol=1e-14)
    rhs, out = rng.normal(size=m), np.empty(m)
    _chol_solve(fac, band, rhs, out)
    np.testing.assert_allclose(out, dpbtrs(ref, rhs, lower=1)[0], rtol=1e-12)
    np.testing.assert_allclose(dense @ out, rhs, atol=1e-12)
    bad = ab.copy()
    bad[0, 5] = -1.0
    assert not _cholesky(bad, fac, band)


def test_ipm_solves_a_small_box_qp_with_one_equality():
    """min 1/2 (x1² + 2 x2²), x1 + x2 = 1, 0 <= x <= 1, x3 fixed at 0.5: x = (2/3, 1/3, 0.5)."""
    a = sparse.csc_matrix(np.array([[1.0, 1.0, 0.0]]))
    ipm = BandedQpIpm(a, band=0)
    x, _, status, it = ipm.solve(np.array([1.0, 2.0, 0.0]), np.zeros(3), np.array([1.0]),
                                 np.array([0.0, 0.0, 0.5]), np.array([1.0, 1.0, 0.5]))
    assert status == "optimal" and 0 < it < 50
    np.testing.assert_allclose(x, [2 / 3, 1 / 3, 0.5], atol=1e-8)
    assert ipm.solve(np.ones(3), np.zeros(3), np.ones(1), np.ones(3), np.zeros(3))[2] == "infeasible bounds"


def test_many_problems_in_one_call_equal_each_solved_alone():
    """solve_many: each row as solve answers it alone; a row with crossed bounds fails alone, the others still solve."""
    a = sparse.csc_matrix(np.array([[1.0, 1.0, 0.0]]))
    ipm = BandedQpIpm(a, band=0)
    rng = np.random.default_rng(1)
    q, c, b = rng.uniform(0.5, 2.0, (4, 3)), rng.normal(size=(4, 3)), rng.uniform(0.2, 1.8, (4, 1))
    l, u = np.zeros((4, 3)), np.ones((4, 3)) * 2.0
    l[2, 0], u[2, 0] = 1.5, 1.0  # crossed
    xs, _, statuses, its = ipm.solve_many(q, c, b, l, u)
    assert statuses == ["optimal", "optimal", "infeasible bounds", "optimal"] and its[2] == 0
    for i in (0, 1, 3):
        x, _, status, it = ipm.solve(q[i], c[i], b[i], l[i], u[i])
        assert status == "optimal" and it == its[i]
        np.testing.assert_array_equal(xs[i], x)
