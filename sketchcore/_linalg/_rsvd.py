"""Randomized SVD: fixed rank (Halko, Martinsson, Tropp 2011, with power iterations) and
fixed accuracy (blocked randQB_EI of Yu, Gu, Li 2018).

The products with ``A`` run on all BLAS threads; the factorizations of the thin blocks (LU,
QR, the small SVD) run on one: they are latency-bound, and a threaded OpenBLAS spinning on a
shared machine makes them 10-100x slower than one thread does.
"""
import contextlib
import math
import warnings

import numpy as np

from sketchcore._backend import check_size, xp_of
from sketchcore.random import resolve_seed, gaussian, make_stream
from sketchcore._linalg._common import (check_matrix, check_positive_float, make_sketch,
                                        check_sketch_kind, check_finite_via,
                                        blas_single_thread, extreme_singular_values_upper)
from sketchcore._linalg._split import thin_product, gram, inner, cast, split_session

__all__ = ["rsvd", "range_finder", "RankWarning"]

#: Gaussian probes of the posterior error estimate used once the exact energy bookkeeping
#: of randQB_EI is swamped by rounding.
N_PROBES = 10
#: Smallest A (elements) whose rsvd on the GPU orthonormalises with mixed-precision Cholesky
#: QR and takes the small SVD through the host (``_cholesky_basis``, ``_svd_small``) rather
#: than cuSOLVER's QR and SVD. Each Cholesky pass waits once for the device. Measured on an
#: H200 against torch.svd_lowrank (k = 50 or 20, oversample 10, 2 power iterations; speed-up
#: through cuSOLVER -> through Cholesky QR): 20000 x 2000 float32 / float64, 0.81 -> 1.31 /
#: 0.80 -> 1.50; with an earlier version that estimated cond(R) on the host, 100000 x 1000
#: float32 0.94-0.98 -> 1.44-1.89, and 4000 x 3000 float32 (short products: the host's
#: round trips dominate) 0.62-0.66 -> 0.42-0.56.
GPU_CHOLESKY_MIN_SIZE = 20_000_000


class RankWarning(UserWarning):
    """The adaptive range finder reached ``max_rank`` before meeting ``tol``."""


def _orth_qr(Y):
    """Orthonormal basis of the columns of Y (Householder QR, reduced)."""
    xp = xp_of(Y)
    if xp is np:
        with blas_single_thread():
            return np.linalg.qr(Y, mode="reduced")[0]
    return xp.linalg.qr(Y, mode="reduced")[0]


def _cholesky_route(A):
    """Whether rsvd of A orthonormalises by Cholesky QR (always on the host; on the GPU
    from ``GPU_CHOLESKY_MIN_SIZE`` elements of A on)."""
    return xp_of(A) is np or A.size >= GPU_CHOLESKY_MIN_SIZE


def _orth_lu(Y, cholesky=True):
    """Well-conditioned basis of range(Y) between power steps, where only the subspace
    matters: a Cholesky QR pass (with ``cholesky``) when the Gram matrix allows it (two thin
    BLAS-3 products, about 3 ms at 20000 x 60 on 2 cores), else partial-pivoting LU
    (``P L``, 12 ms there; Householder QR on the GPU)."""
    Q = _cholesky_basis(Y, passes=1) if cholesky else None
    if Q is not None:
        return Q
    if xp_of(Y) is np:
        from scipy.linalg import lu
        with blas_single_thread():
            return lu(Y, permute_l=True, check_finite=False)[0]
    return _orth_qr(Y)


def _cholesky_basis(Y, passes):
    """``Y R^-1`` with ``R`` from ``passes`` Cholesky QR passes, or None when ``Y`` is too
    ill-conditioned for them.

    One pass leaves ``||Q^T Q - I|| ~ eps cond(Y)^2``; we require ``eps cond(R_1)^2 <= 1e-6``
    of the first factor, so one pass gives a basis as well conditioned as an orthonormal one
    for the power steps and two passes (CholeskyQR2) orthonormal to working precision.
    ``R^-1`` is applied as an explicit inverse through the split product: for ``cond(R)``
    within that bound its rounding, ``~ eps cond(R)``, is far below the Gram matrix's, and it
    is 5x faster than a single-threaded right-side triangular solve with 20000 rows.

    On the GPU (CuPy ``Y``) the Gram matrix is formed in float64 whatever Y's type (a
    mixed-precision Cholesky QR), so eps is float64's: a float32 Y then passes up to
    ``cond ~ 7e4`` where a float32 Gram matrix would refuse anything above 3. The
    ``r x r`` factorization runs on the host; the tall products stay on the device in Y's
    type (``Q`` orthonormal to ``~ eps_Y cond(R)`` after one pass, to eps_Y after two).
    cuSOLVER's Householder QR of a tall thin block costs far more than these two products.
    """
    # Everything on one BLAS thread: threaded workers of SciPy's OpenBLAS left busy-waiting
    # after even a small threaded call would slow the split products that follow on the same
    # cores (measured: 75 instead of 42 ms per product with A).
    with split_session():
        return _cholesky_passes(Y, passes)


def _cholesky_passes(Y, passes):
    from scipy.linalg import cholesky, solve_triangular, LinAlgError
    xp = xp_of(Y)
    host = xp is np
    eps = float(np.finfo(Y.dtype if host else np.float64).eps)
    Q = Y
    for step in range(passes):
        G = gram(Q) if host else xp.asnumpy(gram(Q.astype(np.float64, copy=False)))
        try:
            R = cholesky(G, lower=False, check_finite=False)
        except LinAlgError:
            return None
        d = np.abs(np.diagonal(R))
        if not np.isfinite(R).all() or d.min() <= 0:
            return None
        Rinv = np.triu(solve_triangular(R, np.eye(R.shape[0], dtype=R.dtype),
                                        check_finite=False))
        if step == 0:
            if host:
                smax, smin = extreme_singular_values_upper(R, Rinv=Rinv.astype(np.float64))
                cond = smax / smin if smin > 0 else math.inf
            else:
                # ||R||_F ||R^-1||_F >= cond_2(R): a bound that never admits a worse R,
                # for none of the estimate's host time (each pass here already waits for
                # the device once).
                cond = float(np.linalg.norm(R) * np.linalg.norm(Rinv))
            if not math.isfinite(cond) or cond ** 2 * eps > 1e-6:
                return None
        Q = thin_product(Q, Rinv if host else xp.asarray(Rinv, dtype=Y.dtype))
    return Q


def range_finder(A, size, n_iter=2, seed=None, sketch="gaussian", *, power_dtype=None):
    """Orthonormal ``Q`` whose range approximates the dominant column space of ``A``.

    ``Q = orth((A A^T)^q A S^T)`` with ``S`` a ``(size, n)`` sketch, built by alternating
    products with ``A^T`` and ``A``; the blocks are re-normalised (LU) between products so
    that the small singular directions are not lost to rounding.

    Parameters
    ----------
    A : array_like of shape (m, n)
    size : int
        Number of columns of Q, ``1 <= size <= min(m, n)``.
    n_iter : int, default 2
        Power iterations ``q``.
    seed : int or None
    sketch : str, default "gaussian"
    power_dtype : {None, "float32", "float64"} or numpy dtype, optional
        Precision of the sketch and of every power-iteration product except the last
        ``A @ Z``, which always runs in ``A``'s precision (see `rsvd`). ``None``: ``A``'s.

    Returns
    -------
    ndarray of shape (m, size)

    Raises
    ------
    TypeError, ValueError
        Bad dtype, shape, non-finite entries, ``size`` out of range.
    """
    A = check_matrix(A, "A")
    m, n = A.shape
    size = check_size(size, "size")
    if size > min(m, n):
        raise ValueError(f"size must be <= min(m, n) = {min(m, n)}, got {size}")
    n_iter = check_size(n_iter, "n_iter", minimum=0)
    check_sketch_kind(sketch)
    power_dtype = _check_power_dtype(power_dtype)
    with _session(A):
        Q = _range(A, size, n_iter, resolve_seed(seed), sketch, power_dtype)
    return xp_of(Q).ascontiguousarray(Q)


def _session(A):
    """``split_session`` for NumPy input (see ``_split``); nothing for CuPy."""
    return split_session() if xp_of(A) is np else contextlib.nullcontext()


def _check_power_dtype(power_dtype):
    """None, or float32/float64 as a numpy dtype; ValueError naming the argument otherwise."""
    if power_dtype is None:
        return None
    try:
        dt = np.dtype(power_dtype)
    except TypeError:
        dt = None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"power_dtype must be None, float32 or float64, got {power_dtype!r}")
    return dt


def _range(A, size, n_iter, seed, sketch, power_dtype=None):
    # Early power steps in `power_dtype` (lower precision): they only steer the subspace.
    # The last product Y = A Z runs in A's precision, so range(Y) is exactly in range(A)
    # up to A's own rounding (see rsvd's docstring for the error argument).
    low = (power_dtype is not None and n_iter >= 1
           and np.dtype(power_dtype).itemsize < A.dtype.itemsize)
    Aw = cast(A, power_dtype) if low else A
    S = make_sketch(sketch, size, A.shape[1], seed, Aw.dtype)
    if sketch in ("gaussian", "sign") and xp_of(A) is np:
        # A dense test matrix of `size` rows is no bigger than Y: materialise it and let one
        # threaded gemm do the product (same entries as S @ ..., by the operator contract).
        Y = thin_product(Aw, S.to_dense().astype(Aw.dtype, copy=False).T)
    else:
        Y = Aw @ S.T
    check_finite_via(Y, A=A)
    chol = _cholesky_route(A)
    for i in range(n_iter):
        Z = _orth_lu(thin_product(Aw.T, _orth_lu(Y, chol)), chol)
        Y = (thin_product(A, Z.astype(A.dtype, copy=False)) if i == n_iter - 1
             else thin_product(Aw, Z))
    return _orth_final(Y, chol)


def _orth_final(Y, cholesky=True):
    """Orthonormal basis of range(Y): CholeskyQR2 (see ``_cholesky_basis``) when the Gram
    matrix is safely positive definite, Householder QR otherwise (rank-deficient or
    ill-conditioned Y, or not ``cholesky``)."""
    Q = _cholesky_basis(Y, passes=2) if cholesky else None
    return _orth_qr(Y) if Q is None else Q


def rsvd(A, k=None, oversample=10, n_iter=2, seed=None, sketch="gaussian", *, tol=None,
         max_rank=None, block_size=None, power_dtype=None):
    """Randomized truncated SVD ``A ~ U @ diag(s) @ Vt``.

    Fixed rank (``k`` given): ``Q = range_finder(A, k + oversample)``, ``B = Q^T A``,
    ``B = U_b diag(s) Vt`` (LAPACK), ``U = Q U_b``, truncated to ``k``. Wide matrices are
    handled through ``A^T`` (the sketch always has ``min(m, n)`` columns to embed).

    Fixed accuracy (``k`` omitted, ``tol`` given): the basis grows by ``block_size`` columns at
    a time (randQB_EI: each block is a sketch of the current residual ``A - Q Q^T A``, with the
    same power iterations, re-orthogonalised twice against the basis) until the relative
    Frobenius error ``||A - Q Q^T A||_F / ||A||_F <= tol`` or the basis has ``max_rank``
    columns. The error is tracked exactly as ``||A||_F^2 - ||Q^T A||_F^2`` (orthonormal Q);
    once that difference falls below ``1000 eps ||A||_F^2`` it is dominated by rounding and
    is replaced by an unbiased estimate of the same squared norm from ``N_PROBES`` Gaussian
    probes, ``mean_i ||(A - Q Q^T A) w_i||^2``. The returned rank is the smallest ``k``
    whose truncation still meets ``tol`` (the last block usually overshoots).

    Parameters
    ----------
    A : array_like of shape (m, n)
        float32 or float64, any layout.
    k : int, optional
        Target rank, ``1 <= k <= min(m, n)``.
    oversample : int, default 10
        Extra sketch columns (capped so that ``k + oversample <= min(m, n)``).
    n_iter : int, default 2
        Power iterations.
    seed : int or None
    sketch : str, default "gaussian"
        Test-matrix kind of the fixed-rank mode. The adaptive mode always draws Gaussian blocks
        from the ``"linalg"`` random stream (block ``j`` from ``make_stream("linalg", j)``).
    tol : float, optional
        Relative Frobenius error target in (0, 1) for the adaptive mode.
    max_rank : int, optional
        Largest basis of the adaptive mode (default ``min(m, n)``).
    block_size : int, optional
        Columns added per step of the adaptive mode (default ``max(8, min(m, n) // 64)``,
        at most 64).
    power_dtype : {None, "float32", "float64"} or numpy dtype, optional
        Fixed-rank mode only. Precision of the sketch product and of the power iterations
        except their last product ``Y = A Z``; that product, the projection ``B = Q^T A``
        and the small SVD always run in ``A``'s precision. ``None`` (default): ``A``'s
        precision throughout. ``"float32"`` on float64 input (with ``n_iter >= 1``; with
        ``n_iter = 0`` there is no power step and the option has no effect) casts ``A``
        once and runs those products at float32 speed (measured 30 ms against 52 ms per
        product at 20000 x 2000, k + oversample = 60; the cast costs about one such product).
        Why the accuracy is kept: the early products only choose the subspace ``Z``; the
        error of the result is ``||A - Q Q^T A||`` with ``Q = orth(A Z)`` and ``B = Q^T A``
        computed in float64, so for *any* ``Z`` the factorisation is a float64-accurate
        projection of ``A`` onto ``range(A Z)`` (an exactly rank-``r`` ``A`` with
        ``r <= k + oversample`` is recovered to float64 accuracy, as ``range(A Z)`` is
        ``range(A)`` exactly). Rounding in float32 perturbs ``Z`` only by about
        ``eps_32 sigma_1 / sigma_j`` in the direction of the ``j``-th singular vector
        (``eps_32 ~ 6e-8``), which is negligible against the randomness of the sketch
        as long as ``sigma_(k + oversample) / sigma_1 >> 1e-7``; below that the float32
        steps cannot resolve the trailing directions and the default is the safer choice.

    Returns
    -------
    U : ndarray of shape (m, k)
    s : ndarray of shape (k,)
        Non-increasing.
    Vt : ndarray of shape (k, n)

    Raises
    ------
    TypeError
        ``A`` not float32/float64, or ``k`` and ``tol`` both missing.
    ValueError
        ``A`` not 2-D, empty or not finite; ``k > min(m, n)``; ``k`` and ``tol`` both given;
        ``tol`` outside (0, 1); unknown ``sketch``; ``power_dtype`` not float32/float64,
        or given in the adaptive mode.

    Warns
    -----
    RankWarning
        The adaptive mode stopped at ``max_rank`` above ``tol``.
    """
    A = check_matrix(A, "A")
    m, n = A.shape
    if k is None and tol is None:
        raise TypeError("rsvd needs either k (fixed rank) or tol (fixed accuracy)")
    if k is not None and tol is not None:
        raise ValueError("give either k (fixed rank) or tol (fixed accuracy), not both")
    n_iter = check_size(n_iter, "n_iter", minimum=0)
    seed = resolve_seed(seed)
    if k is not None:
        k = check_size(k, "k")
        if k > min(m, n):
            raise ValueError(f"k must be <= min(m, n) = {min(m, n)} for A of shape "
                             f"{A.shape}, got {k}")
        oversample = check_size(oversample, "oversample", minimum=0)
        check_sketch_kind(sketch)
        power_dtype = _check_power_dtype(power_dtype)
        with _session(A):
            return _rsvd_fixed(A, k, oversample, n_iter, seed, sketch, power_dtype)
    if power_dtype is not None:
        raise ValueError("power_dtype applies to the fixed-rank mode (k given) only")
    tol = check_positive_float(tol, "tol", maximum=1.0)
    max_rank = min(m, n) if max_rank is None else check_size(max_rank, "max_rank")
    if max_rank > min(m, n):
        raise ValueError(f"max_rank must be <= min(m, n) = {min(m, n)}, got {max_rank}")
    block_size = (min(64, max(8, min(m, n) // 64)) if block_size is None
                  else check_size(block_size, "block_size"))
    return _rsvd_adaptive(A, tol, max_rank, block_size, n_iter, seed)


def _svd_small(B, cholesky=True):
    """Thin SVD ``B = U diag(s) Vt`` of the short, wide ``(ell, n)`` projection.

    When ``n >= 4 ell`` and ``B^T`` takes CholeskyQR2 (``_cholesky_basis``, well
    conditioned), ``B^T = Q_b R_b`` and the SVD of the ``ell x ell`` ``R_b^T = U_1 S V_1^T``
    give ``B = U_1 S (Q_b V_1)^T``: split BLAS-3 products instead of LAPACK's one-threaded
    bidiagonalisation of the whole block (measured 8 ms for 60 x 3000, against about 3 ms),
    or on the GPU instead of cuSOLVER's SVD of it (the ``ell x ell`` SVD on the host, in
    float64). ``Q_b`` is orthonormal to working precision, so the singular values are B's to
    rounding. Otherwise (ill-conditioned B, or not ``cholesky``) the library's SVD."""
    xp = xp_of(B)
    from scipy.linalg import svd
    ell, n = B.shape
    Qb = _cholesky_basis(B.T, passes=2) if cholesky and n >= 4 * ell else None
    if Qb is None:
        if xp is not np:
            return xp.linalg.svd(B, full_matrices=False)
        with blas_single_thread():
            return svd(B, full_matrices=False, check_finite=False)
    Rb = inner(Qb, B.T)                        # Q_b^T B^T, (ell, ell)
    if xp is np:
        with blas_single_thread():
            U1, s, V1t = svd(Rb.T, check_finite=False)
    else:
        U1, s, V1t = (xp.asarray(f, dtype=B.dtype) for f in
                      svd(xp.asnumpy(Rb.T).astype(np.float64), check_finite=False))
    return U1, s, thin_product(Qb, xp.ascontiguousarray(V1t.T)).T


def _rsvd_fixed(A, k, oversample, n_iter, seed, sketch, power_dtype=None):
    m, n = A.shape
    M = A.T if m < n else A  # tall view: the sketch embeds the smaller dimension
    ell = min(k + oversample, min(m, n))
    Q = _range(M, ell, n_iter, seed, sketch, power_dtype)
    Ub, s, Vt = _svd_small(thin_product(M.T, Q).T, _cholesky_route(A))
    U = thin_product(Q, Ub[:, :k], rowmajor=True)
    s, Vt = s[:k], Vt[:k]
    if m < n:
        U, Vt = Vt.T, U.T
    xp = xp_of(U)
    return xp.ascontiguousarray(U), s, xp.ascontiguousarray(Vt)


def _rsvd_adaptive(A, tol, max_rank, block_size, n_iter, seed):
    m, n = A.shape
    dtype = A.dtype
    xp = xp_of(A)
    eps = float(np.finfo(dtype).eps)
    normA2 = float(xp.linalg.norm(A)) ** 2
    if not math.isfinite(normA2):
        check_finite_via(np.array([normA2]), A=A)
    Q = xp.zeros((m, 0), dtype=dtype)
    B = xp.zeros((0, n), dtype=dtype)
    energy = normA2  # ||A - Q Q^T A||_F^2, exact in exact arithmetic
    target = tol * tol * normA2
    j = 0
    err2 = energy
    while Q.shape[1] < max_rank and err2 > target:
        b = min(block_size, max_rank - Q.shape[1])
        Om = xp.asarray(gaussian(seed, make_stream("linalg", j, 0), 0, n * b, dtype)
                        .reshape(n, b))
        Qj = _orth_qr(A @ Om - Q @ (B @ Om))
        for _ in range(n_iter):
            Zj = _orth_qr(A.T @ Qj - B.T @ (Q.T @ Qj))
            Qj = _orth_qr(A @ Zj - Q @ (B @ Zj))
        for _ in range(2):  # twice is enough (Kahan-Parlett)
            Qj = _orth_qr(Qj - Q @ (Q.T @ Qj))
        Bj = Qj.T @ A
        Q = xp.concatenate([Q, Qj], axis=1)
        B = xp.concatenate([B, Bj], axis=0)
        energy -= float(xp.linalg.norm(Bj.astype(np.float64)) ** 2)
        err2 = energy
        if energy < 1000 * eps * normA2:
            err2 = _probe_error2(A, Q, B, seed, j)
        j += 1
    if err2 > target:
        warnings.warn(f"rsvd: max_rank={max_rank} reached with relative error estimate "
                      f"{math.sqrt(max(err2, 0) / normA2):.3g} > tol={tol:.3g}",
                      RankWarning, stacklevel=3)
    Ub, s, Vt = _svd_small(B, _cholesky_route(A))
    # Smallest rank whose discarded tail (plus the basis' own error) still meets tol.
    tail = np.cumsum((np.asarray(s, dtype=np.float64) ** 2)[::-1])[::-1]  # tail[i] = sum s[i:]^2
    tail = np.append(tail, 0.0)
    base = max(err2, 0.0)
    ok = np.flatnonzero(tail + base <= target)
    k = int(ok[0]) if ok.size and err2 <= target else len(s)
    k = max(k, 1)
    U = Q @ Ub[:, :k]
    return xp.ascontiguousarray(U), s[:k], xp.ascontiguousarray(Vt[:k])


def _probe_error2(A, Q, B, seed, j):
    """Unbiased estimate of ``||A - Q B||_F^2`` from Gaussian probes (E||M w||^2 = ||M||_F^2)."""
    n = A.shape[1]
    xp = xp_of(A)
    W = xp.asarray(gaussian(seed, make_stream("linalg", j, 1), 0, n * N_PROBES, A.dtype)
                   .reshape(n, N_PROBES))
    E = A @ W - Q @ (B @ W)
    return float(xp.linalg.norm(E.astype(np.float64)) ** 2) / N_PROBES
