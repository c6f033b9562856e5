"""sketchcore.linalg on CuPy inputs: results on the device, CPU-path accuracy (needs a GPU)."""
import numpy as np
import pytest

import sketchcore as sc

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")


def _low_rank(m, n, rank, dtype, seed, decay=0.5):
    rng = np.random.default_rng(seed)
    U, _ = np.linalg.qr(rng.standard_normal((m, rank)))
    V, _ = np.linalg.qr(rng.standard_normal((n, rank)))
    s = decay ** np.arange(rank)
    return ((U * s) @ V.T).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n", [(5000, 64), (2000, 300), (100, 100)])
def test_cqrrpt_on_cupy(dtype, m, n):
    rng = np.random.default_rng(m + n)
    # Graded columns: cond ~ 1e4, so the preconditioning matters.
    A = (rng.standard_normal((m, n)) * np.logspace(0, -4, n)).astype(dtype)
    Q, R, J = sc.linalg.cqrrpt(cupy.asarray(A), seed=1)
    assert all(isinstance(t, cupy.ndarray) for t in (Q, R, J))
    Qh, Rh, Jh = cupy.asnumpy(Q), cupy.asnumpy(R), cupy.asnumpy(J)
    eps = np.finfo(dtype).eps
    assert sorted(Jh.tolist()) == list(range(n))
    np.testing.assert_array_equal(Rh, np.triu(Rh))
    # Householder-quality backward error and orthogonality (CholeskyQR2-style bounds:
    # O(n eps) relative, O(n eps) from identity), far below what a plain Cholesky QR reaches.
    err = np.linalg.norm(A[:, Jh] - Qh @ Rh) / np.linalg.norm(A)
    orth = np.linalg.norm(Qh.T @ Qh - np.eye(Qh.shape[1]))
    assert err <= 10 * n * eps, err
    assert orth <= 10 * n * eps, orth


def test_cqrrpt_rank_deficient_on_cupy():
    A = _low_rank(3000, 80, 20, np.float64, 3, decay=0.9)
    Q, R, J = sc.linalg.cqrrpt(cupy.asarray(A), seed=0)
    assert Q.shape[1] == 20 and R.shape == (20, 80)
    Jh = cupy.asnumpy(J)
    err = np.linalg.norm(A[:, Jh] - cupy.asnumpy(Q @ R)) / np.linalg.norm(A)
    assert err <= 1e-10


def test_cqrrpt_rejects_nonfinite_on_cupy():
    A = np.ones((500, 10))
    A[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN|finite"):
        sc.linalg.cqrrpt(cupy.asarray(A), seed=0)


@pytest.mark.parametrize("min_size", [0, 2 ** 62])     # Cholesky QR route, cuSOLVER route
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rsvd_on_cupy(monkeypatch, dtype, min_size):
    from sketchcore._linalg import _rsvd
    monkeypatch.setattr(_rsvd, "GPU_CHOLESKY_MIN_SIZE", min_size)
    A = _low_rank(2000, 300, 30, dtype, 7)
    U, s, Vt = sc.linalg.rsvd(cupy.asarray(A), 10, seed=0)
    assert all(isinstance(t, cupy.ndarray) for t in (U, s, Vt))
    s_true = np.linalg.svd(A.astype(np.float64), compute_uv=False)
    # Fast decay (0.5^i) and 2 power iterations: the top 10 values to near working precision.
    np.testing.assert_allclose(cupy.asnumpy(s), s_true[:10], rtol=1e-3 if dtype == np.float32
                               else 1e-8)
    Uc, sc_, Vtc = sc.linalg.rsvd(A, 10, seed=0)
    np.testing.assert_allclose(cupy.asnumpy(s), sc_, rtol=1e-3 if dtype == np.float32 else 1e-8)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rsvd_on_cupy_cholesky_route(monkeypatch, dtype):
    """On the Cholesky route a well-conditioned sketch is orthonormalised by mixed-precision
    Cholesky QR and the small SVD goes through the host: no cuSOLVER QR or SVD runs, U and
    V are orthonormal to working precision and the values match the CPU's."""
    from sketchcore._linalg import _rsvd
    monkeypatch.setattr(_rsvd, "GPU_CHOLESKY_MIN_SIZE", 0)
    A = _low_rank(3000, 400, 60, dtype, 11, decay=0.9)     # sigma_1 / sigma_20 = 7.4
    Uc, sc_, Vtc = sc.linalg.rsvd(A, 10, seed=0)

    def refuse(*args, **kwargs):
        raise AssertionError("cuSOLVER QR or SVD on the Cholesky route")
    monkeypatch.setattr(_rsvd, "_orth_qr", refuse)
    monkeypatch.setattr(cupy.linalg, "svd", refuse)
    U, s, Vt = sc.linalg.rsvd(cupy.asarray(A), 10, seed=0)
    assert U.dtype == dtype and s.dtype == dtype and Vt.shape == (10, 400)
    eps = np.finfo(dtype).eps
    for Q in (cupy.asnumpy(U), cupy.asnumpy(Vt).T):
        assert np.linalg.norm(Q.T.astype(np.float64) @ Q - np.eye(10)) <= 1000 * eps
    np.testing.assert_allclose(cupy.asnumpy(s), sc_,
                               rtol=1e3 * eps if dtype == np.float32 else 1e-10)


@pytest.mark.parametrize("min_size", [0, 2 ** 62])
def test_range_finder_on_cupy(monkeypatch, min_size):
    from sketchcore._linalg import _rsvd
    monkeypatch.setattr(_rsvd, "GPU_CHOLESKY_MIN_SIZE", min_size)
    A = _low_rank(1000, 200, 15, np.float64, 9, decay=0.8)
    Q = sc.linalg.range_finder(cupy.asarray(A), 15, seed=0)
    assert isinstance(Q, cupy.ndarray)
    Qh = cupy.asnumpy(Q)
    assert np.linalg.norm(A - Qh @ (Qh.T @ A)) <= 1e-8 * np.linalg.norm(A)


def test_lstsq_on_cupy():
    rng = np.random.default_rng(4)
    A = rng.standard_normal((4000, 50))
    b = rng.standard_normal(4000)
    x, info = sc.linalg.lstsq(cupy.asarray(A), cupy.asarray(b), seed=0)
    assert isinstance(x, cupy.ndarray) and x.shape == (50,)
    x_ref = np.linalg.lstsq(A, b, rcond=None)[0]
    np.testing.assert_allclose(cupy.asnumpy(x), x_ref, rtol=1e-6, atol=1e-8)


def test_sketched_matmul_on_cupy():
    rng = np.random.default_rng(5)
    A = rng.standard_normal((40, 3000)).astype(np.float32)
    B = rng.standard_normal((3000, 30)).astype(np.float32)
    Cg = sc.sketched_matmul(cupy.asarray(A), cupy.asarray(B), 2000, seed=0) \
        if hasattr(sc, "sketched_matmul") else sc.linalg.sketched_matmul(
            cupy.asarray(A), cupy.asarray(B), 2000, seed=0)
    assert isinstance(Cg, cupy.ndarray) and Cg.shape == (40, 30)
    Cc = sc.linalg.sketched_matmul(A, B, 2000, seed=0)
    # Same seed -> same operator -> the same approximation up to rounding.
    np.testing.assert_allclose(cupy.asnumpy(Cg), Cc, rtol=1e-3, atol=1e-3 * np.abs(Cc).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cqrrpt_ill_conditioned_on_cupy(dtype):
    """Correlated columns (cond ~ 1e5 in float32, 1e10 in float64 after equilibration): the
    preconditioned path (triangular solve + Cholesky QR) must keep Householder accuracy."""
    rng = np.random.default_rng(8)
    m, n = 6000, 60
    U, _ = np.linalg.qr(rng.standard_normal((m, n)))
    V, _ = np.linalg.qr(rng.standard_normal((n, n)))
    cond = 1e5 if dtype == np.float32 else 1e10
    A = ((U * np.logspace(0, -np.log10(cond), n)) @ V.T).astype(dtype)
    Q, R, J = sc.linalg.cqrrpt(cupy.asarray(A), seed=2)
    Qh, Rh, Jh = cupy.asnumpy(Q), cupy.asnumpy(R), cupy.asnumpy(J)
    eps = np.finfo(dtype).eps
    r = Qh.shape[1]
    assert r >= n - 2            # numerically full rank (rtol = max(d, n) eps)
    err = np.linalg.norm(A[:, Jh] - Qh @ Rh) / np.linalg.norm(A)
    orth = np.linalg.norm(Qh.T @ Qh - np.eye(r))
    assert err <= 10 * n * eps, err
    assert orth <= 10 * n * eps, orth


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cqrrpt_gram_route_on_cupy(monkeypatch, dtype):
    """Well-conditioned full-rank input takes the sketch-free Gram route (pivots of xPSTRF,
    the QRCP order of A itself); ill-conditioned input falls back to the sketch."""
    from sketchcore._cuda import _linalg as gl
    taken = []
    real = gl._gram_pivoted
    monkeypatch.setattr(gl, "_gram_pivoted", lambda A, rtol: taken.append(
        isinstance(real(A, rtol)[0], tuple)) or real(A, rtol))
    rng = np.random.default_rng(11)
    m, n = 4000, 40
    A = (rng.standard_normal((m, n)) * np.logspace(0, -2, n)[rng.permutation(n)]).astype(dtype)
    Q, R, J = sc.linalg.cqrrpt(cupy.asarray(A), seed=0)
    assert taken == [True]
    Qh, Rh, Jh = cupy.asnumpy(Q), cupy.asnumpy(R), cupy.asnumpy(J)
    import scipy.linalg as sl
    J_qrcp = sl.qr(A.astype(np.float64), pivoting=True, mode="economic")[2]
    # Same greedy order as a column-pivoted QR (float32: the leading pivots, where the
    # remaining norms are far apart compared with float32 rounding).
    lead = n if dtype == np.float64 else 10
    np.testing.assert_array_equal(Jh[:lead], J_qrcp[:lead])
    eps = np.finfo(dtype).eps
    assert np.linalg.norm(A[:, Jh] - Qh @ Rh) / np.linalg.norm(A) <= 10 * n * eps
    assert np.linalg.norm(Qh.T @ Qh - np.eye(n)) <= 10 * n * eps
    U, _ = np.linalg.qr(rng.standard_normal((m, n)))
    B = ((U * np.logspace(0, -6, n)) @ np.linalg.qr(rng.standard_normal((n, n)))[0].T)
    sc.linalg.cqrrpt(cupy.asarray(B), seed=0)
    assert taken == [True, False]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lstsq_on_cupy_matrix_rhs(dtype):
    rng = np.random.default_rng(6)
    A = (rng.standard_normal((6000, 40)) * np.logspace(0, -3, 40)).astype(dtype)
    B = rng.standard_normal((6000, 3)).astype(dtype)
    X, info = sc.linalg.lstsq(cupy.asarray(A), cupy.asarray(B), tol=1e-6, seed=1)
    assert isinstance(X, cupy.ndarray) and X.shape == (40, 3) and X.dtype == dtype
    Xc, info_c = sc.linalg.lstsq(A, B, tol=1e-6, seed=1)
    X_ref = np.linalg.lstsq(A.astype(np.float64), B.astype(np.float64), rcond=None)[0]
    # Each solver's own error bound (tol raised to the float32 floor 10 eps cond(R)).
    for sol, inf in ((cupy.asnumpy(X), info), (Xc, info_c)):
        assert np.all(inf.converged)
        assert np.linalg.norm(sol - X_ref) <= inf.tol * np.linalg.norm(X_ref)


def _lsqr_both_backends(A, B, tol, max_iter=200):
    """LSQR (``_lsqr_preconditioned``) on NumPy and on CuPy copies of the same problem and
    the same preconditioner R (a Gaussian sketch's R): the host recurrence is the reference
    of the device kernels (sketchcore/_cuda/lsqr.cu)."""
    from sketchcore._linalg import _lstsq
    m, n = A.shape
    d = 4 * n
    S = np.random.default_rng(9).standard_normal((d, m))
    R = np.linalg.qr(S @ A.astype(np.float64), mode="r").astype(A.dtype)
    eps = float(np.finfo(A.dtype).eps)
    rinv_norm = 1.0 / np.linalg.svd(R.astype(np.float64), compute_uv=False)[-1]
    z0 = np.zeros((n, B.shape[1]), dtype=A.dtype)
    out = []
    for xp in (np, cupy):
        ops = _lstsq._Normal(xp.asarray(A), np.arange(n), n)
        z, stats = _lstsq._lsqr_preconditioned(ops, xp.asarray(B), xp.asarray(R),
                                               xp.asarray(z0), tol, max_iter, d, eps,
                                               rinv_norm)
        out.append((cupy.asnumpy(z) if xp is cupy else z, stats))
    return out


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-10), (np.float32, 1e-4)])
@pytest.mark.parametrize("k", [1, 3])
def test_lsqr_device_iterations_match_host(dtype, tol, k):
    rng = np.random.default_rng(k)
    m, n = 4000, 60
    A = (rng.standard_normal((m, n)) * np.logspace(0, 3, n)).astype(dtype)
    B = rng.standard_normal((m, k)).astype(dtype)
    (z_h, (it_h, conv_h, err_h, rn_h, ar_h)), (z_d, (it_d, conv_d, err_d, rn_d, ar_d)) = \
        _lsqr_both_backends(A, B, tol)
    assert abs(it_d - it_h) <= 1 and it_h > 3
    assert np.all(conv_h) and np.all(conv_d)
    # Same iterates up to rounding: both stop within their bound of the same solution.
    scale = np.linalg.norm(z_h, axis=0)
    assert np.all(np.linalg.norm(z_d - z_h, axis=0) <= 20 * tol * scale)
    np.testing.assert_allclose(rn_d, rn_h, rtol=1e-3)
    assert np.all(err_d <= tol) and np.all(err_h <= tol)


def test_lsqr_device_freezes_converged_columns():
    """A column along a singular direction of M = A R^-1 converges in the first iterations
    (its Krylov space is one-dimensional); the other keeps iterating while it stays frozen."""
    rng = np.random.default_rng(4)
    m, n = 3000, 30
    A = rng.standard_normal((m, n)) * np.logspace(0, 2, n)
    R = np.linalg.qr(np.random.default_rng(9).standard_normal((4 * n, m)) @ A, mode="r")
    Um, sm, Vmt = np.linalg.svd(A @ np.linalg.inv(R), full_matrices=False)
    B = np.stack([Um[:, 0], rng.standard_normal(m)], axis=1)
    (z_h, (it_h, conv_h, _, rn_h, _)), (z_d, (it_d, conv_d, _, rn_d, _)) = \
        _lsqr_both_backends(A, B, 1e-12)
    assert np.all(conv_d) and abs(it_d - it_h) <= 1 and it_d > 10
    np.testing.assert_allclose(z_d[:, 0], Vmt[0] / sm[0], rtol=1e-10, atol=1e-13)
    assert rn_d[0] <= 1e-12 and rn_d[1] > 1e-3
    np.testing.assert_allclose(z_d, z_h, rtol=1e-9, atol=1e-12 * np.abs(z_h).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (2000, 31, 1), (777, 33, 1), (5000, 500, 1),
                                   (300, 1024, 1), (300, 1025, 1), (400, 20, 2)])
def test_normal_matvec_matches_numpy(dtype, m, n, k):
    """One pass (sc_normal_pass: k = 1, n <= 1024) or two products: Q = A P, W = A^T Q."""
    from sketchcore import _cuda
    rng = np.random.default_rng(m + n)
    A = rng.standard_normal((m, n)).astype(dtype)
    P = rng.standard_normal((n, k)).astype(dtype)
    Q, W = cupy.full((m, k), np.nan, dtype=dtype), cupy.full((n, k), np.nan, dtype=dtype)
    _cuda.normal_matvec(cupy.asarray(A), cupy.asarray(P), Q, W)
    Q_ref = A.astype(np.float64) @ P
    W_ref = A.T.astype(np.float64) @ Q_ref
    eps = np.finfo(dtype).eps
    # Elementwise rounding bounds (n-term dot products; then m-term sums of rounded q).
    assert np.all(np.abs(cupy.asnumpy(Q) - Q_ref) <= 4 * n * eps * (np.abs(A) @ np.abs(P)))
    bound = 4 * (m + n) * eps * (np.abs(A.T) @ (np.abs(A) @ np.abs(P)))
    assert np.all(np.abs(cupy.asnumpy(W) - W_ref) <= bound)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 7, 64, 200])
def test_pivoted_cholesky_matches_lapack(dtype, n):
    """sc_pivoted_cholesky against LAPACK's xPSTRF: same greedy pivots (column scales far
    apart), same R up to rounding; a rank-deficient G stops at its rank; a non-finite G is
    reported."""
    from scipy.linalg.lapack import get_lapack_funcs
    from sketchcore._cuda import _linalg as gl
    rng = np.random.default_rng(n)
    B = rng.standard_normal((3 * n + 5, n)) * np.logspace(0, 3, n)[rng.permutation(n)]
    G = (B.T @ B).astype(dtype)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    R, J, status = gl._pivoted_cholesky(cupy.asarray(G), rtol)
    assert status == n
    pstrf, = get_lapack_funcs(("pstrf",), (G,))
    _, piv, rank, info = pstrf(G.copy(), tol=rtol * rtol * float(np.diagonal(G).max()), lower=0)
    assert rank == n
    Jh = cupy.asnumpy(J)
    # float32: the leading pivots, where the remaining norms are far apart compared with
    # rounding (the two factorizations round differently).
    lead = n if dtype == np.float64 else min(n, 10)
    np.testing.assert_array_equal(Jh[:lead], piv[:lead] - 1)
    assert sorted(Jh.tolist()) == list(range(n))
    Rh = cupy.asnumpy(R).astype(np.float64)
    np.testing.assert_array_equal(Rh, np.triu(Rh))
    eps = np.finfo(dtype).eps
    Gp = G.astype(np.float64)[np.ix_(Jh, Jh)]
    assert np.linalg.norm(Rh.T @ Rh - Gp) <= 10 * n * eps * np.linalg.norm(Gp)
    d = np.diagonal(Rh)
    assert np.all(d[:-1] >= d[1:] * (1 - 10 * n * eps))    # greedy: non-increasing pivots
    if n >= 7:   # rank 5: stops there, rows past the rank are zero
        L = rng.standard_normal((n, 5))
        G5 = (L @ L.T).astype(dtype)
        R5, _, status5 = gl._pivoted_cholesky(cupy.asarray(G5), 1e-3)
        assert status5 == 5
        assert not cupy.asnumpy(R5)[5:].any()
        G[0, 0] = np.nan
        assert gl._pivoted_cholesky(cupy.asarray(G), rtol)[2] == -1


def test_pivoted_cholesky_declines_a_matrix_too_large_for_one_block():
    from sketchcore._cuda import _linalg as gl
    assert gl._pivoted_cholesky(cupy.eye(600, dtype=cupy.float64), 1e-12) is None
    assert gl._pivoted_cholesky(cupy.eye(300, dtype=cupy.float32), 1e-6) is not None
