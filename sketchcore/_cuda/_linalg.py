"""Randomized factorizations for CuPy inputs: the GPU side of ``sketchcore.linalg``.

``sketchcore.linalg.cqrrpt`` hands CuPy matrices to :func:`cqrrpt` here: the same
algorithm as the CPU path (sketch, column-pivoted QR of the small sketch on the host,
Cholesky QR of the preconditioned matrix), with every pass over the tall matrix on the GPU
(sketch kernels, cuBLAS trsm/gemm through CuPy) and only ``n x n`` work on the host, plus a
sketch-free route for well-conditioned input (:func:`_gram_pivoted`). ``rsvd`` and
``lstsq`` need no GPU-specific module: their passes over A are CuPy products (see
``sketchcore/_linalg/_rsvd.py`` and ``_lstsq.py``).
"""

import numpy as np

from sketchcore._linalg._cqrrpt import _inv_upper   # explicit triangular inverse (xTRTRI)

__all__ = ["cqrrpt"]

#: Second Cholesky QR pass when the first one's orthogonality bound eps * cond(Rc)^2 exceeds
#: this many eps (the CPU path's REORTH_UNITS).
REORTH_UNITS = 1000.0
#: Safety factor on the condition checks of the direct paths: LAPACK's 1-norm estimate
#: (pocon) may undershoot, and the Gram route's exact cond_1 may exceed cond_2 (kept alike).
POCON_MARGIN = 10.0


def _solve_right_upper(Y, R):
    """``Y @ inv(R)`` on the GPU for an upper-triangular host/device R (cuBLAS trsm)."""
    import cupy
    from cupyx.scipy.linalg import solve_triangular
    Rd = cupy.asarray(R, dtype=Y.dtype)
    return cupy.ascontiguousarray(solve_triangular(Rd, Y.T, trans="T", lower=False).T)


def _host_lapack():
    """BLAS on one thread for the small host factorizations (as on the CPU path)."""
    from sketchcore._cpu._threads import blas_single_thread
    return blas_single_thread()


def _direct(A, J1, G=None):
    """Cholesky QR of ``A[:, J1]`` from the Gram matrix of A (no gather pass), for a
    well-conditioned ``A[:, J1]``: ``G = A^T A`` (one GEMM), equilibrated Cholesky on the host,
    ``Q = A W`` with ``W[J1] = inv(R)`` (one GEMM). Returns None when the Cholesky fails or
    ``cond(R)^2`` exceeds ``REORTH_UNITS`` (the caller then preconditions). ``G``: the host
    float64 ``A^T A`` when already computed."""
    import cupy
    from sketchcore import _cpu
    n = A.shape[1]
    if G is None:
        G = cupy.asnumpy(A.T @ A).astype(np.float64)
    GJ = G[np.ix_(J1, J1)]
    D = np.sqrt(np.diagonal(GJ))
    if not (np.all(D > 0) and np.isfinite(D).all()):
        return None
    Gs0 = GJ / D[:, None] / D[None, :]
    anorm = float(np.abs(Gs0).sum(axis=0).max())
    Gs = np.asfortranarray(Gs0)
    with _host_lapack():
        if _cpu.potrf_upper(Gs) != 0:
            return None
    Rs_ = np.triu(Gs)
    # cond(Rs_)^2 = cond_2(Gs0) <= cond_1(Gs0), estimated by LAPACK's pocon in O(n^2) (the
    # estimate is within a small factor of cond_1; POCON_MARGIN covers it), instead of the
    # power/inverse iteration the preconditioned path uses.
    from scipy.linalg.lapack import get_lapack_funcs
    pocon, = get_lapack_funcs(("pocon",), (Rs_,))
    rcond, info = pocon(Rs_, anorm)
    if info != 0 or not rcond > 0 or 1.0 / rcond > REORTH_UNITS / POCON_MARGIN:
        return None
    W = np.zeros((n, len(J1)), dtype=np.float64)
    W[J1, :] = _inv_upper(Rs_) / D[:, None]            # inv(Rs_ D) = D^-1 inv(Rs_)
    X = A @ cupy.asarray(W.astype(A.dtype))
    return X, np.triu(Rs_ * D[None, :])


def _pivoted_cholesky(Gd, rtol):
    """``(R, J, status)`` from ``sc_pivoted_cholesky`` for a CuPy symmetric ``Gd`` (n, n):
    R (n, n) upper and J (n,) int32 on the device, ``status`` on the host (the rank
    reached, n when complete; -1 for a non-finite Gd). Pivots stop where the largest
    remaining diagonal is at most ``rtol^2 max(diag Gd)``, xPSTRF's rule with cqrrpt's
    tolerance. None when the packed triangle does not fit one block's shared memory (n
    above about 330 in float32, 235 in float64): the caller factors on the host."""
    import cupy
    from sketchcore._cuda._common import ctype_of, f64, i32
    from sketchcore._cuda._loader import device_properties, launch
    n = Gd.shape[0]
    size = Gd.dtype.itemsize
    smem = (n * (n + 1) // 2 + n) * size + 4 * n
    if smem > device_properties()[1] - 1024:
        return None
    R = cupy.empty((n, n), dtype=Gd.dtype)
    J = cupy.empty(n, dtype=cupy.int32)
    status = cupy.empty(1, dtype=cupy.int32)
    launch(f"sc_pivoted_cholesky<{ctype_of(Gd)}>", (1,), (1024,),
           (cupy.ascontiguousarray(Gd), i32(n), f64(rtol * rtol), R, J, status),
           shared_mem=smem)
    return R, J, int(status.get()[0])


def _gram_pivoted(A, rtol):
    """CQRRPT's direct path with the pivots from the Gram matrix itself: ``G = A^T A`` (one
    GEMM on the GPU), pivoted Cholesky ``G[J, J] = R^T R`` in xPSTRF's greedy
    largest-remaining-norm order (that of a column-pivoted QR of A) on the GPU
    (``_pivoted_cholesky``; on the host by LAPACK's xPSTRF where n is too large for it),
    ``Q = A W`` with ``W[J] = inv(R)`` (one GEMM; the inverse by a triangular solve on the
    GPU).

    Taken only when that is as accurate as the sketch's route: full numerical rank by the
    same relative criterion (``|R[i, i]| > rtol |R[0, 0]|``) and ``cond(R D^-1)^2`` within
    ``REORTH_UNITS`` (D the column norms: Cholesky QR's errors are column-scaling invariant),
    checked with the exact ``cond_1(D^-1 G D^-1) >= cond_2(R D^-1)^2`` (symmetric matrix:
    ``||.||_2 <= ||.||_1``), formed from the inverse on the GPU. It skips the sketch and the
    host ``geqp3`` of the sketch (2.9 ms for a 320 x 256 sketch on the H200 machine's host,
    against 0.27 ms for the Gram GEMM over a 100000 x 256 float32 A).

    Returns
    -------
    (out, G)
        ``out``: ``(Q, R, J)`` as CuPy arrays; or, when the sketch's route is needed,
        ``"ill-conditioned"`` (full rank, but the condition check failed: the direct path
        would fail it too) or None; ``G``: the host float64 Gram matrix that route reuses
        (None when ``out`` is the result, A is wide or G is not finite).
    """
    import cupy
    from scipy.linalg.lapack import get_lapack_funcs
    from sketchcore._linalg._common import rank_from_diagonal
    m, n = A.shape
    if m < n:
        return None, None
    Gd = A.T @ A

    def host_gram():
        return cupy.asnumpy(Gd).astype(np.float64)

    dev = _pivoted_cholesky(Gd, rtol)
    if dev is not None:
        Rd, Jd, status = dev
        if status < 0:
            return None, None             # NaN/inf/overflow: the sketch route reports it
        if status < n:
            return None, host_gram()
        return _gram_finish(A, Gd, Rd, Jd, host_gram)
    G = host_gram()
    if not np.isfinite(G).all():
        return None, None                 # NaN/inf/overflow: the sketch route reports it
    # Factored in A's precision: the Gram matrix carries no more than that.
    Gw = G.astype(A.dtype)
    pstrf, = get_lapack_funcs(("pstrf",), (Gw,))
    # Stop where R[i, i] <= rtol R[0, 0] (pivots are R[i, i]^2): cqrrpt's rank criterion,
    # not LAPACK's default sqrt(n eps), which would truncate graded float32 columns.
    with _host_lapack():
        C, piv, rank, info = pstrf(Gw, tol=rtol * rtol * float(np.diagonal(G).max()), lower=0)
    if info < 0 or rank < n:
        return None, G
    J = piv - 1
    R = np.triu(C)
    if rank_from_diagonal(R, rtol) < n or not np.isfinite(R).all():
        return None, G
    return _gram_finish(A, Gd, cupy.asarray(R), cupy.asarray(J), lambda: G)


def _gram_finish(A, Gd, Rd, Jd, host_gram):
    """The Gram route after its factorization ``Gd[J, J] = R^T R`` (R, J on the device):
    the condition check, then ``Q = A W`` with ``W[J] = inv(R)``. ``host_gram()``: the
    float64 host Gram matrix the sketch's route reuses when this one declines."""
    import cupy
    from cupyx.scipy.linalg import solve_triangular
    n = A.shape[1]
    Rinv = solve_triangular(Rd, cupy.eye(n, dtype=A.dtype), lower=False)
    dJ = cupy.sqrt(cupy.diagonal(Gd)[Jd]).astype(A.dtype)
    Rs_inv = Rinv * dJ[:, None]                      # inv(R D^-1) = D inv(R)
    Gs_inv = Rs_inv @ Rs_inv.T                       # inv(D^-1 G[J, J] D^-1)
    Gs = Gd[Jd][:, Jd] / dJ[:, None] / dJ[None, :]
    cond1 = float(cupy.abs(Gs).sum(axis=0).max() * cupy.abs(Gs_inv).sum(axis=0).max())
    if not cond1 <= REORTH_UNITS / POCON_MARGIN:
        return "ill-conditioned", host_gram()
    W = cupy.zeros((n, n), dtype=A.dtype)
    W[Jd] = Rinv
    return (A @ W, Rd, Jd.astype(cupy.int64)), None


def cqrrpt(A, d, seed, sketch, rtol):
    """CQRRPT for a CuPy matrix: ``A[:, J] = Q @ R`` with Q, R, J CuPy arrays.

    Called by ``sketchcore.linalg.cqrrpt`` after its argument checks, with the sketch size
    ``d``, the resolved ``seed``, the ``sketch`` kind and the rank threshold ``rtol``. A full
    rank A that is well conditioned up to column scaling takes ``_gram_pivoted`` (two GEMMs,
    no sketch); otherwise ``_sketch_route``, with every host BLAS/LAPACK call of the small
    matrices on one thread: on a many-core host a threaded OpenBLAS costs more to wake for
    these 256 x 256 solves than they take, and leaves spinning workers behind (measured on
    the H200 machine's 16-core host: the sketch route of a 100000 x 256 float32 cqrrpt took
    40 ms with its condition estimates and inverses on 16 threads, 12 ms on one)."""
    fast, G = _gram_pivoted(A, rtol)
    if isinstance(fast, tuple):
        return fast
    with _host_lapack():
        return _sketch_route(A, d, seed, sketch, rtol, fast, G)


def _sketch_route(A, d, seed, sketch, rtol, fast, G):
    """The CPU path's algorithm for a CuPy matrix the Gram route declined (``fast``, ``G``:
    its verdict and host Gram matrix): sketch, ``geqp3`` of the sketch on the host; the
    direct Cholesky QR from ``A^T A`` with the sketch's pivots when accurate; else
    ``A[:, J1] Rs11^-1`` formed with a triangular solve (backward stable for any
    conditioning) and factored, with a second pass when the first one's orthogonality bound
    asks for it."""
    import cupy
    from sketchcore import _cpu
    from sketchcore._linalg._common import (make_sketch, rank_from_diagonal,
                                            extreme_singular_values_upper)
    m, n = A.shape
    dtype = A.dtype
    SA = make_sketch(sketch, d, m, seed, dtype) @ A if d < m else A
    B = np.asfortranarray(cupy.asnumpy(SA))
    if not np.isfinite(B).all():
        if not bool(cupy.isfinite(A).all()):
            raise ValueError("A must not contain NaN or infinity")
        raise ValueError("the sketch of the input overflowed: scale the input down "
                         "(input A is finite but too large)")
    with _host_lapack():
        J = _cpu.geqp3_inplace(B)
    Rs = np.triu(B[:min(B.shape), :])
    r = rank_from_diagonal(Rs, rtol)
    empty = (cupy.zeros((m, 0), dtype), cupy.zeros((0, n), dtype), cupy.asarray(J))
    if r == 0:
        return empty
    Jd = cupy.asarray(J)
    # The direct Cholesky QR is tried first: its own check (cond(R)^2 <= REORTH_UNITS, after
    # column equilibration) decides, and a failure costs one Gram pass (a GEMM) on the GPU,
    # less than estimating the sketch's condition number on the host beforehand.
    # Skipped when the Gram route found all n columns too ill-conditioned: the same columns
    # in another order fail the same test.
    out = None if (fast == "ill-conditioned" and r == n) else _direct(A, J[:r], G)
    if out is not None:
        X, R1 = out
        Rc = None
    else:
        while True:
            # X = A[:, J1] Rs11^-1, well conditioned whatever cond(A) (S embeds range(A)).
            X = _solve_right_upper(A[:, Jd[:r]], Rs[:r, :r])
            G = np.asfortranarray(cupy.asnumpy(X.T @ X))
            with _host_lapack():
                info = _cpu.potrf_upper(G)
            if info == 0:
                break
            r = info - 1        # the leading info-1 columns are independent, the rest not
            if r == 0:
                return empty
        Rc = np.triu(G)
        # The inverse serves the condition estimate (products instead of solves) and, in the
        # usual one-pass case, the multiply below.
        Rc_inv = _inv_upper(Rc) if np.all(np.diagonal(Rc) != 0) else None
        smax, smin = extreme_singular_values_upper(Rc, seed=seed, Rinv=Rc_inv)
        if smin == 0 or (smax / smin) ** 2 > REORTH_UNITS:
            X = _solve_right_upper(X, Rc)
            G2 = np.asfortranarray(cupy.asnumpy(X.T @ X))
            with _host_lapack():
                ok = _cpu.potrf_upper(G2) == 0
            if ok:
                R2 = np.triu(G2)
                X = _solve_right_upper(X, R2)
                Rc = R2 @ Rc
        else:   # Rc is well conditioned: multiplying by its inverse is accurate and fast
            X = X @ cupy.asarray(Rc_inv.astype(dtype))
        R1 = Rc @ Rs[:r, :r]
    R = np.empty((r, n), dtype=np.float64)
    R[:, :r] = R1
    if r < n:
        if Rc is None:
            from scipy.linalg import solve_triangular
            Rc = solve_triangular(Rs[:r, :r].T, R1.T, lower=True, check_finite=False).T
        R[:, r:] = Rc @ Rs[:r, r:]
    return X, cupy.asarray(np.triu(R).astype(dtype)), Jd
