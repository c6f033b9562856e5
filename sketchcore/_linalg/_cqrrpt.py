"""CQRRPT: Cholesky QR with randomization and pivoting for tall matrices.

Melnichenko, Balabanov, Murray, Demmel, Mahoney, Luszczek (2023). The pivots and the
preconditioner come from a column-pivoted QR of a small sketch ``S A``; the orthogonal factor
comes from a Cholesky QR of the (well-conditioned) preconditioned matrix, which costs three
BLAS-3 passes over ``A`` instead of LAPACK's Householder sweep -- or two passes when ``A`` is
well conditioned up to column scaling, which the sketch reveals for free.
"""
import math

import numpy as np

from sketchcore._backend import get_backend
from sketchcore._backend import array_namespace  # GPU dispatch
from sketchcore.random import resolve_seed
from sketchcore._linalg._common import (check_matrix, check_sketch_kind, check_positive_float,
                                        make_sketch, check_finite_via, rank_from_diagonal,
                                        extreme_singular_values_upper, blas_single_thread)

__all__ = ["cqrrpt"]

#: A second Cholesky QR pass runs when the first one's orthogonality bound ``eps * kappa^2``
#: (kappa = cond of the preconditioned matrix) exceeds ``REORTH_UNITS * eps``. With the
#: sketch's preconditioner kappa is typically 5-25 and one pass suffices; the observed loss
#: is about ``eps * kappa^2 / 15``, so this keeps ``||Q^T Q - I||`` near 100 eps or below.
REORTH_UNITS = 1000.0

#: The direct Cholesky QR of A (no preconditioning) is tried when the sketch's triangular
#: factor, columns scaled to unit norm, has condition <= this. For an embedding of distortion
#: e, cond(S A D^-1) <= cond(A D^-1) (1 + e) / (1 - e), and the direct path needs
#: cond(A D^-1)^2 <= REORTH_UNITS; with the default sketch (1 + e) / (1 - e) stays below ~30,
#: so larger values mean the direct path would fail and its Gram pass would be wasted.
DIRECT_SKETCH_COND = 1000.0

#: Columns per step of the blocked triangular solve on the tall matrix (``_Pool``).
TRSM_BLOCK = 50


def cqrrpt(A, gamma=1.25, seed=None, sketch="sparse_sign", *, rtol=None):
    """Randomized column-pivoted QR of a tall matrix: ``A[:, J] = Q @ R``.

    1. sketch: ``S A`` with ``S`` of shape ``(d, m)``, ``d = ceil(gamma * n)`` (no sketch when
       ``d >= m``: ``A`` itself is then the exact "embedding");
    2. ``S A[:, J] = Q_s R_s`` by LAPACK ``geqp3`` (column pivoting) on the small sketch;
    3. numerical rank ``r``: leading diagonal entries with ``|R_s[i,i]| > rtol |R_s[0,0]|``;
    4. direct attempt, when ``cond(R_s[:r,:r])`` (columns equilibrated) allows it
       (``DIRECT_SKETCH_COND``): Cholesky QR of ``A[:, J[:r]]`` from the Gram matrix of ``A``
       (syrk, then gather + triangular multiply: two passes), with the columns equilibrated
       (both the Gram matrix's rounding and Cholesky are column-scaling invariant). Its
       orthogonality loss ``eps cond(A D^-1)^2`` is known from its R factor; it is kept only
       when within ``REORTH_UNITS eps``, i.e. for A well conditioned up to column scaling;
    5. otherwise CQRRPT's preconditioned path: ``A_p = A[:, J[:r]] R_s[:r,:r]^-1``
       (gather, trsm) and ``G = A_p^T A_p`` (syrk); because ``S``
       embeds the column space of ``A``, ``A_p`` is well conditioned whatever ``cond(A)`` is,
       so the Gram matrix is safe to factor: ``G = R_c^T R_c`` (potrf), ``Q = A_p R_c^-1``
       (trsm), and a second Cholesky QR pass when ``cond(R_c)`` says one pass may leave ``Q``
       visibly non-orthogonal (``REORTH_UNITS``). ``R[:, :r] = R_c R_s[:r, :r]``;
    6. trailing columns ``R[:, r:] = R_c R_s[:r, r:]``: the sketch's trailing block carried
       through the same transformation (exact when ``r = n``; for rank-deficient A the error
       is that of the truncation, ``~ |R_s[r:, r:]|``).

    Parameters
    ----------
    A : array_like of shape (m, n)
        float32 or float64, any memory layout. Wide inputs (``m < n``) are accepted: the sketch
        is skipped and the rank is at most ``m``.
    gamma : float, default 1.25
        Sketch size factor, ``>= 1``. Larger values give a better preconditioner (fewer second
        passes) at the price of a larger ``geqp3``.
    seed : int or None
        Seed of the sketch (None draws one from the OS).
    sketch : str, default "sparse_sign"
        One of "sparse_sign", "gaussian", "sign", "countsketch", "srht".
    rtol : float, optional
        Relative rank threshold on the sketch's diagonal. Default ``max(d, n) * eps(dtype)``:
        scale invariant, and well below the diagonal of any full-rank matrix whose condition
        number is below ``1 / (max(d, n) eps)`` (so full-rank Gaussian matrices, float32
        included, are never truncated).

    Returns
    -------
    Q : ndarray of shape (m, r)
        Orthonormal columns, ``r`` the numerical rank.
    R : ndarray of shape (r, n)
        Upper trapezoidal.
    J : ndarray of shape (n,), intp
        Column permutation.

    Raises
    ------
    TypeError
        ``A`` not float32/float64; ``gamma``/``rtol`` not real numbers.
    ValueError
        ``A`` not 2-D, empty or not finite; ``gamma < 1``; ``rtol`` outside (0, 1); unknown
        ``sketch``.
    """
    A = check_matrix(A, "A")
    gamma = check_positive_float(gamma, "gamma", minimum=1.0, inclusive=True)
    check_sketch_kind(sketch)
    m, n = A.shape
    dtype = A.dtype
    eps = float(np.finfo(dtype).eps)
    d = max(int(math.ceil(gamma * n)), n)
    seed = resolve_seed(seed)
    rtol = (max(min(d, m), n) * eps if rtol is None
            else check_positive_float(rtol, "rtol", maximum=1.0))
    if array_namespace(A) == "cupy":   # same algorithm, passes over A on the GPU
        from sketchcore._cuda import _linalg as _gpu
        return _gpu.cqrrpt(A, d, seed, sketch, rtol)
    backend = get_backend(A)
    if d < m:
        # One OpenMP thread: measured 9-12 ms at (20000, 200) whether or not OpenBLAS workers
        # are still busy-waiting from an earlier threaded call (ours or the caller's), against
        # 4 ms standalone but 15-18 ms in that (common) setting with two threads.
        from sketchcore._cpu._threads import _get_controller
        with _get_controller().limit(limits=1, user_api="openmp"):
            SA = make_sketch(sketch, d, m, seed, dtype) @ A
    else:
        SA = A
    check_finite_via(SA, A=A)

    # The small LAPACK calls below run single-threaded (latency-bound); the passes over A
    # run as threaded BLAS-3 calls on OpenBLAS's own pool (`_Pool`), see there.
    pool = _Pool(backend)
    with blas_single_thread():
        return _factor(backend, A, SA, rtol, seed, pool)


class _Pool:
    """The passes over ``A`` (Gram matrix, triangular solve/multiply) as threaded calls of the
    BLAS that ``scipy.linalg`` uses, on its full thread pool.

    Why not our OpenMP kernels: after a threaded SciPy/NumPy call (typical in user code, and in
    the interleaved benchmark) OpenBLAS's workers keep busy-waiting for a while; OpenMP loops
    started then share the cores with them and ran 2-4x slower (measured: Gram pass 16 ms
    standalone, 35 ms right after ``scipy.linalg.qr``), whereas the same BLAS's own workers
    pick the work up at once (dsyrk 13 ms in both settings).

    The gathered columns ``A[:, J]`` are kept column-major ``(m, r)``: OpenBLAS's right-side
    trsm/trmm on them ran 1.8x / 2x faster (20000 x 200 float64, 2 threads: 14 / 5.5 ms)
    than the same products on row-major storage, and our cache-blocked transposing gather
    (``gather_columns_f``, 5.7 ms) costs no more than NumPy's row-major ``take``.
    """

    def __init__(self, backend):
        from sketchcore._cpu._threads import _get_controller
        ctrl = _get_controller()
        self.backend = backend
        self.nthreads = max((lc.num_threads for lc in ctrl.select(user_api="blas")
                             .lib_controllers), default=1)

    def threads(self):
        from sketchcore._cpu._threads import _get_controller
        return _get_controller().limit(limits=self.nthreads, user_api="blas")

    @staticmethod
    def _f(name, dtype):
        from scipy.linalg.blas import get_blas_funcs
        return get_blas_funcs(name, dtype=dtype)

    def gram_upper(self, X):
        """Upper triangle of ``X^T X`` (Fortran ``(r, r)``) for an ``(m, r)`` array X."""
        syrk = self._f("syrk", X.dtype)
        with self.threads():
            if X.flags.f_contiguous:
                return syrk(1.0, X, trans=1)
            return syrk(1.0, np.ascontiguousarray(X).T, trans=0)

    def gather(self, A, J):
        """``A[:, J]`` as a new Fortran-contiguous ``(m, len(J))`` array."""
        J = np.ascontiguousarray(J, dtype=np.intp)
        if A.flags.f_contiguous and not A.flags.c_contiguous:
            return np.asfortranarray(np.take(A, J, axis=1))
        out = np.empty((A.shape[0], len(J)), dtype=A.dtype, order="F")
        self.backend.gather_columns_f(np.ascontiguousarray(A), J, out)
        return out

    def _tri(self, name, X, T):
        f = self._f(name, X.dtype)
        with self.threads():
            return f(1.0, T, np.asfortranarray(X), side=1, lower=0, trans_a=0, overwrite_b=1)

    def trmm_right_upper(self, X, T):
        """``X @ T`` for upper-triangular T, in place when X is Fortran-ordered; returns it."""
        return self._tri("trmm", X, T)

    def trsm_right_upper(self, X, R):
        """``X @ inv(R)`` for upper-triangular R, in place when X is Fortran-ordered; returns it.

        Blocked by ``TRSM_BLOCK`` columns: ``X[:, b] <- (X[:, b] - Y[:, :b] R[:b, b]) R[b, b]^-1``
        (right-looking, the order a BLAS trsm uses internally, same rounding analysis), so most
        of the work runs as GEMM: measured 11.3 against 14.8 ms for one OpenBLAS trsm on
        20000 x 200 float64 with 2 threads. Column slabs of a Fortran-ordered X are contiguous,
        so every call works in place."""
        X = np.asfortranarray(X)
        r = X.shape[1]
        if r <= TRSM_BLOCK:
            return self._tri("trsm", X, R)
        gemm, trsm = self._f("gemm", X.dtype), self._f("trsm", X.dtype)
        with self.threads():
            for j0 in range(0, r, TRSM_BLOCK):
                j1 = min(r, j0 + TRSM_BLOCK)
                Xj = X[:, j0:j1]
                if j0:
                    gemm(-1.0, X[:, :j0], np.asfortranarray(R[:j0, j0:j1]), 1.0, Xj,
                         overwrite_c=1)
                trsm(1.0, np.asfortranarray(R[j0:j1, j0:j1]), Xj, side=1, lower=0,
                     overwrite_b=1)
        return X


def _factor(backend, A, SA, rtol, seed, pool):
    """Steps 2-6 of :func:`cqrrpt` on the sketch ``SA``."""
    m, n = A.shape
    dtype = A.dtype
    B = np.array(SA, dtype=dtype, order="F", copy=True)
    J = backend.geqp3_inplace(B)
    Rs = np.triu(B[:min(B.shape), :])
    r = rank_from_diagonal(Rs, rtol)
    if r == 0:
        return np.zeros((m, 0), dtype), np.zeros((0, n), dtype), J

    Rs11 = Rs[:r, :r]
    cn = np.linalg.norm(Rs11, axis=0)  # column norms of the sketch = |S A[:, J1]|
    smax, smin = extreme_singular_values_upper(Rs11 / cn, seed=seed)
    out = None
    if smin > 0 and smax <= DIRECT_SKETCH_COND * smin:
        out = _direct(backend, A, J[:r], seed, pool)
    if out is None:
        out = _preconditioned(backend, A, J, Rs, r, seed, pool)
    X, R1, Rc, r = out
    if r == 0:
        return np.zeros((m, 0), dtype), np.zeros((0, n), dtype), J
    # Columns beyond the rank: A[:, J2] ~ A[:, J1] Rs11^-1 Rs12 (exact in the sketch), i.e.
    # R[:, r:] = R1 Rs11^-1 Rs12 = Rc Rs12 with R1 = Rc Rs11 the R factor of A[:, J1].
    R = np.empty((r, n), dtype=dtype)
    R[:, :r] = R1
    if r < n:
        if Rc is None:
            from scipy.linalg import solve_triangular
            Rc = solve_triangular(Rs[:r, :r].T, R1.T, lower=True, check_finite=False).T
        R[:, r:] = Rc @ Rs[:r, r:]
    return X, R, J


def _direct(backend, A, J1, seed, pool):
    """Cholesky QR of ``A[:, J1]`` straight from ``A^T A`` when that is accurate enough.

    Costs two passes (syrk, gather + triangular multiply) instead of three. Its orthogonality loss is
    ``eps cond(A[:, J1])^2``, known exactly afterwards from R; returns None (and the caller
    preconditions) when that exceeds the ``REORTH_UNITS`` budget or the Cholesky fails.
    """
    r = len(J1)
    contiguous = A.flags.c_contiguous or A.flags.f_contiguous
    Ac = A if contiguous else np.ascontiguousarray(A)
    G = np.triu(pool.gram_upper(Ac))
    G = G + np.triu(G, 1).T
    GJ = G[np.ix_(J1, J1)]
    # Column equilibration (van der Sluis): Cholesky and the Gram matrix's rounding errors are
    # both column-scaling invariant, so the relevant condition number is that of A D^-1.
    D = np.sqrt(np.diagonal(GJ))
    if not (np.all(D > 0) and np.isfinite(D).all()):
        return None
    Gs = np.asfortranarray(GJ / D[:, None] / D[None, :])
    if backend.potrf_upper(Gs) != 0:
        return None
    Rs_ = np.asfortranarray(np.triu(Gs))
    if not np.isfinite(Rs_).all():
        return None
    if not np.all(np.diagonal(Rs_) != 0):
        return None
    Rs_inv = _inv_upper(Rs_)
    smax, smin = extreme_singular_values_upper(Rs_, seed=seed,
                                               Rinv=Rs_inv.astype(np.float64))
    if smin == 0 or (smax / smin) ** 2 > REORTH_UNITS:
        return None
    T = np.asfortranarray(Rs_inv / D[:, None])   # inv(Rs_ D) = D^-1 inv(Rs_)
    X = pool.trmm_right_upper(pool.gather(A, J1), T)
    return X, np.triu(Rs_ * D[None, :]), None, r


def _inv_upper(R):
    """Explicit inverse of a well-conditioned upper-triangular matrix (Fortran-ordered).

    Only used for ``cond(R)^2 <= REORTH_UNITS``: multiplying by it (xTRMM) is ~3x faster
    than xTRSM and its rounding error, ``~ n eps cond(R)``, is far inside the budget."""
    from scipy.linalg import solve_triangular
    eye = np.eye(R.shape[0], dtype=R.dtype)
    return np.asfortranarray(np.triu(solve_triangular(R, eye, check_finite=False)))


def _preconditioned(backend, A, J, Rs, r, seed, pool):
    """CQRRPT proper: Cholesky QR of ``A[:, J[:r]] Rs11^-1`` (well conditioned by the sketch),
    with a second pass when needed. Returns ``(Q, R1, Rc, r)`` with ``A[:, J[:r]] = Q R1`` and
    ``R1 = Rc Rs11``."""
    while True:
        R11 = np.asfortranarray(Rs[:r, :r])
        X = pool.trsm_right_upper(pool.gather(A, J[:r]), R11)
        G = np.asfortranarray(pool.gram_upper(X))
        info = backend.potrf_upper(G)
        if info == 0:
            break
        # The leading info-1 preconditioned columns are numerically independent, the rest
        # is not: the sketch's threshold was too permissive for this input. Keep those.
        r = info - 1
        if r == 0:
            return None, None, None, 0
    Rc = np.asfortranarray(np.triu(G))
    smax, smin = extreme_singular_values_upper(Rc, seed=seed)
    reorth = smin == 0 or (smax / smin) ** 2 > REORTH_UNITS
    if reorth:
        X = pool.trsm_right_upper(X, Rc)
    else:
        X = pool.trmm_right_upper(X, _inv_upper(Rc))
    if reorth:
        G2 = np.asfortranarray(pool.gram_upper(X))
        if backend.potrf_upper(G2) == 0:
            R2 = np.asfortranarray(np.triu(G2))
            X = pool.trsm_right_upper(X, R2)
            Rc = R2 @ Rc
    return X, np.triu(Rc @ Rs[:r, :r]), Rc, r
