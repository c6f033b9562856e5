"""Randomized factorizations for CuPy inputs: the GPU side of ``sketchcore.linalg``.

``sketchcore.linalg.cqrrpt`` hands CuPy matrices to :func:`cqrrpt` here: the same
algorithm as the CPU path (sketch, column-pivoted QR of the small sketch on the host,
Cholesky QR of the preconditioned matrix), with every pass over the tall matrix on the GPU
(sketch kernels, cuBLAS trsm/gemm through CuPy) and only ``n x n`` work on the host.
``lstsq`` runs its iterations on the host for CuPy inputs (:func:`lstsq`): the inputs are
copied once, the result comes back as CuPy arrays on the input's device.
"""
import math

import numpy as np

__all__ = ["cqrrpt", "lstsq"]

#: Second Cholesky QR pass when the first one's orthogonality bound eps * cond(Rc)^2 exceeds
#: this many eps (the CPU path's REORTH_UNITS).
REORTH_UNITS = 1000.0


def _solve_right_upper(Y, R):
    """``Y @ inv(R)`` on the GPU for an upper-triangular host/device R (cuBLAS trsm)."""
    import cupy
    from cupyx.scipy.linalg import solve_triangular
    Rd = cupy.asarray(R, dtype=Y.dtype)
    return cupy.ascontiguousarray(solve_triangular(Rd, Y.T, trans="T", lower=False).T)


def cqrrpt(A, gamma=1.25, seed=None, sketch="sparse_sign", rtol=None):
    """CQRRPT for a CuPy matrix: ``A[:, J] = Q @ R`` with Q, R, J CuPy arrays.

    Parameters and results as ``sketchcore.linalg.cqrrpt`` (which validates and calls this).
    """
    import cupy
    from sketchcore import _cpu
    from sketchcore.random import resolve_seed
    from sketchcore._linalg._common import (check_matrix, check_positive_float, make_sketch,
                                            check_sketch_kind, rank_from_diagonal,
                                            extreme_singular_values_upper)
    A = check_matrix(A, "A")
    gamma = check_positive_float(gamma, "gamma", minimum=1.0, inclusive=True)
    m, n = A.shape
    dtype = A.dtype
    eps = float(np.finfo(dtype).eps)
    d = max(int(math.ceil(gamma * n)), n)
    seed = resolve_seed(seed)
    if d < m:
        SA = make_sketch(sketch, d, m, seed, dtype) @ A
    else:
        check_sketch_kind(sketch)
        SA = A
    rtol = (max(min(d, m), n) * eps if rtol is None
            else check_positive_float(rtol, "rtol", maximum=1.0))
    B = np.asfortranarray(cupy.asnumpy(SA))
    if not np.isfinite(B).all():
        if not bool(cupy.isfinite(A).all()):
            raise ValueError("A must not contain NaN or infinity")
        raise ValueError("the sketch of the input overflowed: scale the input down "
                         "(input A is finite but too large)")
    J = _cpu.geqp3_inplace(B)
    Rs = np.triu(B[:min(B.shape), :])
    r = rank_from_diagonal(Rs, rtol)
    empty = (cupy.zeros((m, 0), dtype), cupy.zeros((0, n), dtype), cupy.asarray(J))
    if r == 0:
        return empty
    Jd = cupy.asarray(J)
    while True:
        # Preconditioned matrix X = A[:, J1] Rs11^-1 (well conditioned: S embeds range(A)).
        X = _solve_right_upper(A[:, Jd[:r]], Rs[:r, :r])
        G = np.asfortranarray(cupy.asnumpy(X.T @ X))
        info = _cpu.potrf_upper(G)
        if info == 0:
            break
        r = info - 1            # the leading info-1 columns are independent, the rest not
        if r == 0:
            return empty
    Rc = np.triu(G)
    X = _solve_right_upper(X, Rc)
    smax, smin = extreme_singular_values_upper(Rc, seed=seed)
    if smin == 0 or (smax / smin) ** 2 > REORTH_UNITS:
        G2 = np.asfortranarray(cupy.asnumpy(X.T @ X))
        if _cpu.potrf_upper(G2) == 0:
            R2 = np.triu(G2)
            X = _solve_right_upper(X, R2)
            Rc = R2 @ Rc
    R = np.triu(Rc @ Rs[:r, :]).astype(dtype, copy=False)
    return X, cupy.asarray(R), Jd


def lstsq(cpu_lstsq, A, b, **kwargs):
    """Least squares for CuPy ``A``, ``b`` through the CPU solver ``cpu_lstsq``: the inputs
    are copied to the host once; ``x`` comes back on the input's device (info unchanged)."""
    import cupy
    device = A.device
    x, info = cpu_lstsq(cupy.asnumpy(A), cupy.asnumpy(b), **kwargs)
    with device:
        return cupy.asarray(x), info
