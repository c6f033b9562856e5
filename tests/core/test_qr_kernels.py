"""The CPU LAPACK/BLAS pieces behind cqrrpt and lstsq (``sketchcore._cpu._qr``) against
plain NumPy/SciPy references."""
import numpy as np
import pytest
import scipy.linalg as sl
from hypothesis import given, settings, strategies as st

from sketchcore import _cpu

DTYPES = [np.float32, np.float64]


@settings(max_examples=40, deadline=None)
@given(m=st.integers(0, 300), n=st.integers(1, 40), r=st.integers(0, 40),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_gather_columns_f_matches_numpy(m, n, r, dtype, seed):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((m, n)).astype(dtype)
    J = rng.integers(0, n, size=r).astype(np.intp)
    out = np.full((m, r), np.nan, dtype=dtype, order="F")
    _cpu.gather_columns_f(A, J, out)
    np.testing.assert_array_equal(out, A[:, J])


def test_gather_columns_f_rejects_bad_indices_and_shapes():
    A = np.ones((5, 3))
    out = np.empty((5, 2), order="F")
    with pytest.raises(IndexError, match=r"J\[1\] = 3"):
        _cpu.gather_columns_f(A, np.array([0, 3], dtype=np.intp), out)
    with pytest.raises(IndexError, match=r"J\[0\] = -1"):
        _cpu.gather_columns_f(A, np.array([-1, 0], dtype=np.intp), out)
    with pytest.raises(ValueError, match=r"out: expected shape \(5, 3\)"):
        _cpu.gather_columns_f(A, np.array([0, 1, 2], dtype=np.intp), out)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(30, 12), (12, 30), (1, 1)])
def test_geqp3_inplace_matches_scipy(dtype, shape):
    B = np.random.default_rng(1).standard_normal(shape).astype(dtype)
    _, R_ref, J_ref = sl.qr(B, pivoting=True, mode="economic")
    F = np.asfortranarray(B)
    J = _cpu.geqp3_inplace(F)
    k = min(shape)
    np.testing.assert_array_equal(J, J_ref)
    tol = 50 * np.finfo(dtype).eps * np.abs(R_ref).max()
    np.testing.assert_allclose(np.abs(np.triu(F[:k])), np.abs(R_ref), atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
def test_potrf_upper_matches_numpy_and_reports_indefinite(dtype):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((40, 9))
    G = X.T @ X
    F = np.asfortranarray(G.astype(dtype))
    assert _cpu.potrf_upper(F) == 0
    R_ref = np.linalg.cholesky(G).T
    np.testing.assert_allclose(np.triu(F), R_ref, rtol=0, atol=1e3 * np.finfo(dtype).eps * 40)
    bad = np.asfortranarray(np.diag([1.0, 2.0, -1.0, 4.0]).astype(dtype))
    assert _cpu.potrf_upper(bad) == 3


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m", [0, 1, 63, 64, 65, 1000])
def test_normal_matvec_matches_numpy(dtype, m):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((m, 7)).astype(dtype)
    P = rng.standard_normal((7, 3)).astype(dtype)
    Q = np.empty((m, 3), dtype)
    W = np.empty((7, 3), dtype)
    _cpu.normal_matvec(A, P, Q, W)
    A64, P64 = A.astype(np.float64), P.astype(np.float64)
    tol = 100 * np.finfo(dtype).eps * max(m, 1)
    np.testing.assert_allclose(Q, A64 @ P64, rtol=0, atol=tol * 10)
    np.testing.assert_allclose(W, A64.T @ (A64 @ P64), rtol=0, atol=tol * 100)
