"""CUDA twins of ``sketchcore._cpu._qr`` (CQRRPT, sketch-and-precondition pieces).

The tall operands (``A``, ``Q``, ``W``) are CuPy arrays and every pass over them runs on the
GPU (cuBLAS through CuPy). The small ``(n, n)`` / ``(d, n)`` matrices (``G``, the sketch
``B``) may be NumPy arrays: their LAPACK factorisations (geqp3,
potrf) run on the host, which costs O(n^3) against the O(m n^2) of the passes over the data,
and the results are copied where the caller keeps them.
"""
import numpy as np

__all__ = ["geqp3_inplace", "potrf_upper", "normal_matvec", "gather_columns_f"]


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


def normal_matvec(A, P, Q, W):
    """``Q = A @ P`` and ``W = A^T @ Q`` for CuPy arrays (two cuBLAS products)."""
    import cupy
    cupy.matmul(A, P, out=Q)
    cupy.matmul(A.T, Q, out=W)


def gather_columns_f(A, J, out):
    """``out[:, k] = A[:, J[k]]`` for CuPy arrays (one fancy-indexing copy on the device)."""
    import cupy
    J = cupy.asarray(J)
    if out.shape != (A.shape[0], J.shape[0]):
        raise ValueError(f"out: expected shape ({A.shape[0]}, {J.shape[0]}), got {out.shape}")
    out[...] = cupy.take(A, J, axis=1)
