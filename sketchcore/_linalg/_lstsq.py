"""Overdetermined least squares by sketch-and-precondition (Blendenpik / LSRN style)."""
import contextlib
import dataclasses
import math

import numpy as np

from sketchcore._backend import check_array, check_size, check_same_dtype, get_backend, xp_of
from sketchcore.random import resolve_seed
from sketchcore._linalg._common import (check_matrix, check_positive_float, make_sketch,
                                        check_sketch_kind, check_finite_via,
                                        rank_from_diagonal, extreme_singular_values_upper,
                                        blas_single_thread)

__all__ = ["lstsq", "LstsqInfo", "SKETCH_FACTOR"]

#: Default sketch rows per column. For a Gaussian-like embedding of an n-dimensional space
#: with d rows the preconditioned singular values lie in about [1/(1+sqrt(n/d)),
#: 1/(1-sqrt(n/d))]: d = 4n gives condition ~3, and LSQR's error then shrinks by
#: sqrt(n/d) = 1/2 (at least) per iteration. The sparse sketch costs the same for any d;
#: d only enters the O(d n^2) pivoted QR, so 4n is the usual balance (Blendenpik uses 4n).
SKETCH_FACTOR = 4


@dataclasses.dataclass
class LstsqInfo:
    """Diagnostics of :func:`lstsq`; per-column arrays when ``b`` is 2-D.

    Attributes
    ----------
    iterations : int
        LSQR iterations run (all columns advance together).
    converged : bool or ndarray of bool
        Whether the stopping rule was met.
    error_estimate : float or ndarray
        Bound on ``||x - x_ls|| / ||x||`` when LSQR stopped (see :func:`lstsq`).
    residual_norm : float or ndarray
        ``||b - A x||`` (LSQR's recurrence).
    normal_residual : float or ndarray
        ``||M^T (b - A x)||`` with ``M = A[:, J] R^-1`` the preconditioned matrix.
    rank : int
        Numerical rank kept by the pivoted QR of the sketch.
    sketch_rows : int
        Rows ``d`` of the sketch (``m`` when no sketch was needed).
    tol : float
        Tolerance actually used (``tol`` raised to the attainable floor).
    seed : int
        Seed of the sketch.
    """
    iterations: int
    converged: object
    error_estimate: object
    residual_norm: object
    normal_residual: object
    rank: int
    sketch_rows: int
    tol: float
    seed: int


def lstsq(A, b, tol=1e-10, seed=None, *, sketch="sparse_sign", sketch_size=None,
          max_iter=None, rtol=None):
    """Least-squares solution of ``min ||A x - b||`` for tall ``A`` (sketch-and-precondition).

    1. sketch ``S A`` and ``S b`` (``S`` of shape ``(d, m)``, default ``d = 4 n``; no sketch
       when ``d >= m``);
    2. pivoted QR ``S A[:, J] = Q_s R`` (LAPACK ``geqp3``); the numerical rank ``r`` is read
       off ``R``'s diagonal as in :func:`cqrrpt` (for CuPy input a Cholesky QR of the
       sketch on the GPU is used instead when it is accurate enough, which implies full
       rank);
    3. warm start from the sketched solution ``z0 = Q_s^T S b`` when it beats ``z = 0``
       (compared by the true residual: ``||b - M z||^2 = ||r*||^2 + ||M (z - z*)||^2``, so
       the smaller residual is the smaller error);
    4. LSQR on ``M z = b`` with ``M = A[:, J[:r]] R^-1``, whose condition number is that of
       the embedding (about 3) whatever ``cond(A)``. Each iteration makes one pass over ``A``
       computing ``A p`` and ``A^T A p`` together (for C-contiguous ``A``); the Golub-Kahan
       vector ``M^T u`` is then recovered from the recurrence instead of a second pass;
    5. ``x[J[:r]] = R^-1 z``, other entries 0.

    Stopping rule (on the preconditioned normal residual): with ``r_k = b - M z_k``,
    ``M^T r_k = M^T M (z* - z_k)``, so ``||z_k - z*|| <= ||M^T r_k|| / s_min(M)^2`` and
    ``||x_k - x*|| <= ||R^-1|| ||M^T r_k|| / s_min(M)^2``. LSQR stops when that bound is at most
    ``tol * ||x_k||``, with ``s_min(M)^2`` taken as ``1 / (1 + sqrt(r/d))^2 / 2``
    (the embedding bound with a safety factor 2), or when ``r_k = 0`` to working precision.
    ``tol`` is raised to the attainable floor ``10 eps cond(R)``.

    Rank deficiency is handled, not refused: columns that the pivoted QR of the sketch finds
    dependent are dropped and get ``x = 0`` (a *basic* solution: the residual is minimal,
    but ``x`` is not the minimum-norm solution that ``scipy.linalg.lstsq`` returns).
    Several right-hand sides (``b`` 2-D) are solved together: one shared preconditioner and
    one pass over ``A`` per iteration for all columns, each column with its own LSQR scalars
    and stopping test (a column that has converged is frozen).

    Parameters
    ----------
    A : array_like of shape (m, n)
        ``m >= n``; float32 or float64, any layout (C-contiguous is fastest).
    b : array_like of shape (m,) or (m, k)
        Same dtype as ``A``.
    tol : float, default 1e-10
        Target relative error of ``x``, in (0, 1).
    seed : int or None
    sketch : str, default "sparse_sign"
    sketch_size : int, optional
        Sketch rows ``d >= n`` (default ``4 n``).
    max_iter : int, optional
        LSQR iteration cap (default ``100 + 10 * ceil(log10(1 / tol))``).
    rtol : float, optional
        Rank threshold relative to ``|R[0, 0]|`` (default ``max(d, n) eps``).

    Returns
    -------
    x : ndarray of shape (n,) or (n, k)
    info : LstsqInfo

    Raises
    ------
    TypeError
        Non-float dtypes, or ``A`` and ``b`` of different dtypes.
    ValueError
        Wrong dimensions, ``m < n`` (underdetermined), empty or non-finite input, ``tol``
        outside (0, 1), ``sketch_size < n``, unknown ``sketch``.
    """
    A = check_matrix(A, "A")
    b = check_array(b, "b", min_ndim=1, max_ndim=2)
    check_same_dtype(A=A, b=b)
    m, n = A.shape
    if m < n:
        raise ValueError(f"lstsq solves overdetermined problems: A must have m >= n rows, "
                         f"got shape {A.shape}")
    if b.shape[0] != m:
        raise ValueError(f"b must have {m} rows to match A of shape {A.shape}, "
                         f"got shape {b.shape}")
    tol = check_positive_float(tol, "tol", maximum=1.0)
    check_sketch_kind(sketch)
    d = SKETCH_FACTOR * n if sketch_size is None else check_size(sketch_size, "sketch_size")
    if d < n:
        raise ValueError(f"sketch_size must be >= n = {n}, got {d}")
    if max_iter is None:
        max_iter = 100 + 10 * int(math.ceil(math.log10(1.0 / tol)))
    max_iter = check_size(max_iter, "max_iter", minimum=0)
    seed = resolve_seed(seed)
    dtype = A.dtype
    eps = float(np.finfo(dtype).eps)
    vector = b.ndim == 1
    B2 = b.reshape(m, 1) if vector else b
    kcols = B2.shape[1]
    backend = get_backend(A, b)

    if d < m:
        S = make_sketch(sketch, d, m, seed, dtype)
        SA, Sb = S @ A, S @ B2
    else:
        d = m
        SA, Sb = A, B2
    check_finite_via((SA, Sb), A=A, b=b)
    rtol = max(d, n) * eps if rtol is None else check_positive_float(rtol, "rtol", maximum=1.0)
    xp = xp_of(A)
    # A CuPy sketch is factored on the device by Cholesky QR when that is accurate enough
    # (_device_cholesky_r); otherwise the (d, n) sketch goes to the host for the pivoted QR
    # (O(d n^2) LAPACK). Every pass over A, and LSQR's vectors, stay where A is.
    dev = _device_cholesky_r(SA) if xp is not np else None
    Rinv = None
    if dev is not None:
        R, Rinv, smax, smin = dev
        r, J = n, np.arange(n)
    else:
        F = np.array(_to_host(SA), dtype=dtype, order="F", copy=True)
        with blas_single_thread():
            J = backend.geqp3_inplace(F)
        r = rank_from_diagonal(np.triu(F[:n, :]), rtol)
        if r == 0 or kcols == 0:
            x = xp.zeros((n, kcols), dtype=dtype)
            info = LstsqInfo(0, _shape(np.ones(kcols, bool), vector),
                             _shape(np.zeros(kcols), vector), _shape(_colnorm(B2), vector),
                             _shape(np.zeros(kcols), vector), r, d, tol, seed)
            return (x[:, 0] if vector else x), info
        R = np.triu(F[:r, :r])
        smax, smin = extreme_singular_values_upper(R, seed=seed)
        R = xp.asarray(R)
    Jr = J[:r]
    Jx = xp.asarray(Jr)
    tol_used = max(tol, 10 * eps * smax / smin)
    # Warm start: sketched solution in the preconditioned variable, z0 = R^-T (S A_J)^T S b.
    solve_triangular = _solver(xp)
    z0 = solve_triangular(R, SA[:, Jx].T @ Sb, trans="T")

    ops = _Normal(A, Jr, n)
    # With the fused kernel every pass over A is an OpenMP loop: keep OpenBLAS on one thread
    # for the whole solve so that its busy-waiting workers never compete with it.
    with (blas_single_thread() if ops.fused and ops.cpu else contextlib.nullcontext()):
        z, stats = _lsqr_preconditioned(ops, B2, R, z0, tol_used, max_iter, d, eps,
                                        1.0 / smin, Rinv)
    x = xp.zeros((n, kcols), dtype=dtype)
    x[Jx, :] = (solve_triangular(R, z) if Rinv is None else Rinv @ z).astype(dtype, copy=False)
    it, conv, err, rnorm, arnorm = stats
    info = LstsqInfo(it, _shape(conv, vector), _shape(err, vector), _shape(rnorm, vector),
                     _shape(arnorm, vector), r, d, tol_used, seed)
    return (x[:, 0] if vector else x), info


def _solver(xp):
    """Triangular solve ``op(R)^-1 Y`` on R's backend (SciPy, or CuPy's cuBLAS trsm)."""
    if xp is np:
        from scipy.linalg import solve_triangular

        def solve(R, Y, trans="N"):
            return solve_triangular(R, Y, trans=trans, check_finite=False)
    else:
        from cupyx.scipy.linalg import solve_triangular

        def solve(R, Y, trans="N"):
            return solve_triangular(R, Y, trans=trans)
    return solve


#: Cholesky QR of a CuPy sketch is accepted when ``eps cond(R)^2`` stays below this: the
#: preconditioned sketch ``S A R^-1`` then has singular values within about 1 +- this, as
#: good a preconditioner as the Householder R.
CHOLESKY_SKETCH_BUDGET = 0.1


def _device_cholesky_r(SA, power_steps=30):
    """``(R, inv(R), smax, smin)`` for a CuPy sketch by Cholesky QR on the GPU
    (``SA^T SA = R^T R``), or None when that is not accurate enough
    (``CHOLESKY_SKETCH_BUDGET``) or R is singular: the caller then pivots on the host.
    ``smax``, ``smin``: estimates of R's extreme singular values by at least ``power_steps``
    power-iteration steps on ``R^T R`` and its inverse (one synchronisation), from inside
    like ``extreme_singular_values_upper``.

    Any R with ``S A = Q R`` preconditions as well as the pivoted one (``A R^-1`` is well
    conditioned because S embeds range(A)); pivoting is needed only to find and drop
    dependent columns, which the condition test rules out. It spares the host ``geqp3`` of
    the sketch: 54 ms at 2000 x 500 on one core, and 9 ms for CuPy's unpivoted QR on an
    H200, against two small GEMMs and a 500 x 500 Cholesky here."""
    import cupy
    from cupyx.scipy.linalg import solve_triangular
    n = SA.shape[1]
    eps = float(np.finfo(SA.dtype).eps)
    try:
        L = cupy.linalg.cholesky(SA.T @ SA)
    except np.linalg.LinAlgError:
        return None
    R = cupy.ascontiguousarray(L.T)
    Rinv = solve_triangular(R, cupy.eye(n, dtype=R.dtype), lower=False)
    # Both power iterations at once, by repeated squaring of (R^T R, R^-1 R^-T) in float64,
    # each scaled to unit Frobenius norm: 2^s steps in s batched products. Small launches,
    # not flops, are the cost here (a step at a time was about 360 launches, 2-3 ms).
    R64, Rinv64 = R.astype(np.float64), Rinv.astype(np.float64)
    C = cupy.stack([R64.T @ R64, Rinv64 @ Rinv64.T])
    for _ in range(max(1, math.ceil(math.log2(power_steps)))):
        C /= cupy.sqrt((C * C).sum(axis=(1, 2), keepdims=True))
        C = C @ C
    vw = C.sum(axis=2, keepdims=True)                    # C @ ones
    vw /= cupy.sqrt((vw * vw).sum(axis=1, keepdims=True))
    ends = cupy.stack([R64 @ vw[0], Rinv64.T @ vw[1]])
    smax, sinv = (float(x) for x in cupy.sqrt((ends * ends).sum(axis=(1, 2))).get())
    if not (np.isfinite(smax) and np.isfinite(sinv) and smax > 0 and sinv > 0):
        return None
    smin = 1.0 / sinv
    if eps * (smax / smin) ** 2 > CHOLESKY_SKETCH_BUDGET:
        return None
    return R, Rinv, smax, smin


def _shape(v, vector):
    v = np.asarray(v)
    return v.item() if vector else v


def _to_host(X):
    """NumPy copy of a (small) CuPy array; NumPy arrays pass through."""
    return X if isinstance(X, np.ndarray) else X.get()


def _colnorm(X):
    """Column norms of an (m, k) array of either backend, as a host float64 array."""
    return np.asarray(_to_host(xp_of(X).linalg.norm(X, axis=0)), dtype=np.float64)


class _Normal:
    """Products with ``A`` restricted to the kept columns: ``A P`` and ``A^T A P``, on A's
    backend (a CuPy ``A`` takes one cuBLAS GEMM each way per pass)."""

    def __init__(self, A, J, n):
        self.A, self.n = A, n
        self.xp = xp_of(A)
        self.J = self.xp.asarray(J)
        # Every column in order (full rank, no pivoting): no scatter and gather, which on a
        # GPU are three launches per pass.
        self.whole = len(J) == n and bool(np.array_equal(np.asarray(J), np.arange(n)))
        # Both products in one pass over a C-contiguous A: the Cython kernel on the CPU,
        # sc_normal_pass on the GPU (which falls back to two products where it does not apply).
        self.fused = A.flags.c_contiguous
        self.cpu = isinstance(A, np.ndarray)

    def scatter(self, Y):
        if self.whole:
            return self.xp.ascontiguousarray(Y, dtype=self.A.dtype)
        P = self.xp.zeros((self.n, Y.shape[1]), dtype=self.A.dtype)
        P[self.J, :] = Y
        return P

    def gather(self, W):
        return W if self.whole else W[self.J, :]

    def both(self, Y):
        """(A P, (A^T A P)[J]) for P = scatter(Y)."""
        P = self.scatter(Y)
        if self.fused:
            Q = self.xp.empty((self.A.shape[0], P.shape[1]), dtype=self.A.dtype)
            W = self.xp.empty_like(P)
            with blas_single_thread() if self.cpu else contextlib.nullcontext():
                get_backend(self.A).normal_matvec(self.A, P, Q, W)
        else:
            Q = self.A @ P
            W = self.A.T @ Q
        return Q, self.gather(W)

    def rmatvec(self, U):
        return self.gather(self.A.T @ U)


def _lsqr_preconditioned(ops, Bm, R, z0, tol, max_iter, d, eps, rinv_norm, Rinv=None):
    """LSQR (Paige & Saunders 1982) on ``M = A[:, J] R^-1``, all columns of Bm at once.

    Runs on A's backend (``ops.xp``): on a GPU every vector stays there, and after the start
    the iterations run in ``sketchcore._cuda._lsqr`` (fused kernels, scalars on the device,
    no synchronisation per iteration). ``rinv_norm`` is ``||R^-1||_2``, which
    turns the bound on ``z`` into one on ``x``. ``Rinv``: an explicit inverse to multiply by
    instead of the triangular solves (a GEMM launch is cheaper than a solve on the GPU; any
    invertible right preconditioner gives the same least-squares solution ``x = Rinv z``,
    its accuracy only sets LSQR's convergence rate). Returns ``z`` and host statistics."""
    xp = ops.xp
    solve_triangular = _solver(xp)
    r = R.shape[0]
    dtype = ops.A.dtype

    def apply_Rinv(Y):
        out = solve_triangular(R, Y) if Rinv is None else Rinv @ Y
        return out.astype(dtype, copy=False)

    def apply_RinvT(Y):
        out = solve_triangular(R, Y, trans="T") if Rinv is None else Rinv.T @ Y
        return out.astype(dtype, copy=False)

    def colnorm(X):
        return xp.linalg.norm(X.astype(np.float64, copy=False), axis=0)

    # Start: residual of the warm start and of zero; keep the better per column.
    AX0, AtAX0 = ops.both(apply_Rinv(z0))
    AtB = ops.rmatvec(Bm)
    r0 = Bm - AX0
    bnorm = colnorm(Bm)
    use_warm = colnorm(r0) < bnorm
    z = xp.where(use_warm, z0, 0).astype(dtype)
    U = xp.where(use_warm, r0, Bm).astype(dtype)
    MtU = apply_RinvT(xp.where(use_warm, AtB - AtAX0, AtB))  # M^T u1 before normalisation

    beta = colnorm(U)
    safe_beta = xp.where(beta > 0, beta, 1)
    U = (U / safe_beta).astype(dtype, copy=False)
    MtU = MtU / safe_beta
    alpha = colnorm(MtU)
    safe_alpha = xp.where(alpha > 0, alpha, 1)
    V = MtU / safe_alpha
    V_prev = xp.zeros_like(V)
    # beta_i of the recurrence M^T u_i = alpha_i v_i + beta_i v_{i-1}
    beta_prev = xp.zeros_like(beta)
    W = V.copy()
    phibar = beta.copy()
    rhobar = alpha.copy()
    done = (beta == 0) | (alpha == 0)
    snorm_lo = 1.0 / (1.0 + math.sqrt(r / d)) ** 2 / 2.0  # s_min(M)^2 lower bound
    rnorm = phibar.copy()
    arnorm = alpha * beta
    err = xp.where(done, 0.0, np.inf)
    conv = done.copy()
    if xp is not np and Bm.shape[1] <= 65535:
        # The same recurrence with its vector updates fused and its scalars on the device
        # (sketchcore/_cuda/lsqr.cu): as CuPy operations it was host-bound. Its reductions
        # take a grid row per right-hand side (CUDA allows 65535); more columns than that
        # run the loop below on CuPy arrays.
        Rinv64 = None if Rinv is None else Rinv.astype(np.float64)

        def products(Vt):
            Q, G = ops.both(apply_Rinv(Vt))
            return xp.ascontiguousarray(Q), xp.ascontiguousarray(apply_RinvT(G))

        def solve(Z):
            return solve_triangular(R, Z) if Rinv64 is None else Rinv64 @ Z

        scalars = dict(alpha=alpha, rhobar=rhobar, phibar=phibar, rnorm=rnorm, arnorm=arnorm,
                       err=err, conv=conv, bnorm=bnorm)
        return get_backend(ops.A).lsqr_iterations(products, solve, dtype, U, V, W, z, scalars,
                                                  tol, max_iter, rinv_norm / snorm_lo, eps)
    znorm = colnorm(z)
    it = 0
    while it < max_iter and not bool(conv.all()):
        it += 1
        Q, G = ops.both(apply_Rinv(V))           # A P = M v_i,  (A^T A P)[J]
        MtMv = apply_RinvT(G)                    # M^T M v_i
        T = Q - alpha * U                        # beta_{i+1} u_{i+1}
        beta_new = colnorm(T)
        sb = xp.where(beta_new > 0, beta_new, 1)
        U_new = T / sb
        # M^T u_{i+1} = (M^T M v_i - alpha_i M^T u_i) / beta_{i+1}, where
        # M^T u_i = alpha_i v_i + beta_i v_{i-1}: no second pass over A.
        P = (MtMv - alpha * (alpha * V + beta_prev * V_prev)) / sb - beta_new * V
        alpha_new = colnorm(P)
        sa = xp.where(alpha_new > 0, alpha_new, 1)
        V_new = P / sa
        rho = xp.sqrt(rhobar ** 2 + beta_new ** 2)
        srho = xp.where(rho > 0, rho, 1)
        c, s = rhobar / srho, beta_new / srho
        theta = s * alpha_new
        rhobar_new = -c * alpha_new
        phi = c * phibar
        phibar_new = s * phibar
        active = ~conv
        z = xp.where(active, z + (phi / srho) * W, z)
        W = xp.where(active, V_new - (theta / srho) * W, W)
        U = xp.where(active, U_new, U)
        V_prev, V = xp.where(active, V, V_prev), xp.where(active, V_new, V)
        beta_prev = xp.where(active, beta_new, beta_prev)
        alpha = xp.where(active, alpha_new, alpha)
        rhobar = xp.where(active, rhobar_new, rhobar)
        phibar = xp.where(active, phibar_new, phibar)
        rnorm = xp.where(active, phibar, rnorm)
        arnorm = xp.where(active, phibar * alpha_new * xp.abs(c), arnorm)
        znorm = colnorm(z)
        xnorm = colnorm(apply_Rinv(z))
        bound = rinv_norm * arnorm / snorm_lo
        err = xp.where(active, bound / xp.where(xnorm > 0, xnorm, 1), err)
        tiny = rnorm <= 10 * eps * (bnorm + znorm)   # consistent system solved
        conv = conv | (active & ((err <= tol) | tiny | (alpha_new == 0) | (beta_new == 0)))
    return z, (it, _to_host(conv), _to_host(err), _to_host(rnorm), _to_host(arnorm))
