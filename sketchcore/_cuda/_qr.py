"""CUDA twins of ``sketchcore._cpu._qr`` (CQRRPT, sketch-and-precondition pieces).

The tall operands (``A``, ``X``, ``Q``, ``W``) are CuPy arrays and every pass over them runs
on the GPU (cuBLAS gemm/trsm through CuPy). The small ``(r, r)`` / ``(d, n)`` matrices
(``R``, ``G``, the sketch ``B``) may be NumPy arrays: their LAPACK factorisations (geqp3,
potrf) run on the host, which costs O(n^3) against the O(m n^2) of the passes over the data,
and the results are copied where the caller keeps them.
"""
import numpy as np

__all__ = ["geqp3_inplace", "potrf_upper", "precond_gram", "gather_solve", "gather_times",
           "gram_upper", "trsm_right_upper", "trmm_right_upper", "normal_matvec"]


def _host_inplace(fn, M):
    """Run a host LAPACK kernel on ``M`` in place; CuPy inputs round-trip through the host."""
    from sketchcore import _cpu
    if isinstance(M, np.ndarray):
        return getattr(_cpu, fn)(M)
    import cupy
    H = np.asfortranarray(M.get())
    out = getattr(_cpu, fn)(H)
    M[...] = cupy.asarray(H)
    return out


def geqp3_inplace(B):
    """Column-pivoted QR of a small Fortran ``(d, n)`` array in place (host LAPACK).

    Returns the pivot order ``J`` (ndarray of shape (n,), intp)."""
    return _host_inplace("geqp3_inplace", B)


def potrf_upper(G):
    """Upper Cholesky factor of a small Fortran ``(n, n)`` array in place (host LAPACK);
    returns LAPACK's ``info``."""
    return _host_inplace("potrf_upper", G)


def _solve_right_upper(Y, R):
    """``Y @ inv(R)`` for a CuPy (m, r) Y and upper-triangular (r, r) R (cuBLAS trsm)."""
    import cupy
    from cupyx.scipy.linalg import solve_triangular
    Rd = cupy.asarray(R, dtype=Y.dtype)
    # X R = Y  <=>  R^T X^T = Y^T: one triangular solve with m right-hand sides.
    return solve_triangular(Rd, Y.T, trans="T", lower=False).T


def _store(dst, value):
    """Write a (small) CuPy result into ``dst``, NumPy (host) or CuPy."""
    if isinstance(dst, np.ndarray):
        dst[...] = value.get()
    else:
        dst[...] = value


def gather_solve(A, J, R, X):
    """``X = A[:, J] @ inv(R)``: CuPy ``A`` (m, N) and ``X`` (m, r); ``J`` (r,) indices."""
    import cupy
    Ag = A[:, cupy.asarray(J)]
    X[...] = _solve_right_upper(Ag, R)


def gather_times(A, J, T, X):
    """``X = A[:, J] @ T`` for upper-triangular (r, r) T (host or device); CuPy A, X."""
    import cupy
    Td = cupy.asarray(T, dtype=X.dtype)
    X[...] = cupy.matmul(A[:, cupy.asarray(J)], cupy.triu(Td))


def trmm_right_upper(X, T):
    """``X <- X @ T`` in place for a CuPy (m, r) X and upper-triangular T."""
    import cupy
    X[...] = cupy.matmul(X, cupy.triu(cupy.asarray(T, dtype=X.dtype)))


def precond_gram(A, J, R, X, G):
    """``X = A[:, J] @ inv(R)`` and ``G = upper(X^T X)`` (G may live on the host)."""
    gather_solve(A, J, R, X)
    gram_upper(X, G)


def gram_upper(X, G):
    """``G = X^T X`` (the full symmetric product; callers read the upper triangle)."""
    import cupy
    _store(G, cupy.matmul(X.T, X))


def trsm_right_upper(X, R):
    """``X <- X @ inv(R)`` in place for a CuPy (m, r) X and upper-triangular R."""
    X[...] = _solve_right_upper(X, R)


def normal_matvec(A, P, Q, W):
    """``Q = A @ P`` and ``W = A^T @ Q`` for CuPy arrays (two cuBLAS products)."""
    import cupy
    cupy.matmul(A, P, out=Q)
    cupy.matmul(A.T, Q, out=W)
