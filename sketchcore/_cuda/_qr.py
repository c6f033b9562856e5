"""CUDA twins of ``sketchcore._cpu._qr`` (CQRRPT, sketch-and-precondition pieces).

The tall operands (``A``, ``Q``, ``W``) are CuPy arrays and every pass over them runs on the
GPU (cuBLAS through CuPy). The small ``(n, n)`` / ``(d, n)`` matrices (``G``, the sketch
``B``) may be NumPy arrays: their LAPACK factorisations (geqp3,
potrf) run on the host, which costs O(n^3) against the O(m n^2) of the passes over the data,
and the results are copied where the caller keeps them.
"""
import numpy as np

from sketchcore._cuda._common import ctype_of, i32, i64, zero
from sketchcore._cuda._loader import NORMAL_PASS_COLUMNS, grid_size, launch

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
    """``Q = A @ P`` and ``W = A^T @ Q`` for CuPy arrays.

    A (m, n), P (n, k), Q (m, k), W (n, k). One pass over a C-contiguous float32/float64
    ``A`` for a single column (k = 1) and n <= 1024 (``sc_normal_pass`` in lsqr.cu: LSQR's
    pass, memory-bound, so reading A once halves it); two cuBLAS products otherwise."""
    import cupy
    m, n = A.shape
    k = P.shape[1] if P.ndim == 2 else 1
    nc = -(-n // 32)
    cols = next((c for c in NORMAL_PASS_COLUMNS if c >= nc), None)
    if (k == 1 and cols is not None and A.dtype in (np.float32, np.float64) and m
            and A.flags.c_contiguous and all(t.dtype == A.dtype and t.flags.c_contiguous
                                             for t in (P, Q, W))):
        zero(W)
        ct = ctype_of(A)
        launch(f"sc_normal_pass<{ct}, {cols}>", (grid_size(m * 32, 256, 2),), (256,),
               (A, i64(m), i32(n), i64(n), P, Q, W),
               shared_mem=8 * 32 * cols * A.dtype.itemsize)   # 8 warps' parts of w
        return
    cupy.matmul(A, P, out=Q)
    cupy.matmul(A.T, Q, out=W)


def gather_columns_f(A, J, out):
    """``out[:, k] = A[:, J[k]]`` for CuPy arrays (one fancy-indexing copy on the device)."""
    import cupy
    J = cupy.asarray(J)
    if out.shape != (A.shape[0], J.shape[0]):
        raise ValueError(f"out: expected shape ({A.shape[0]}, {J.shape[0]}), got {out.shape}")
    out[...] = cupy.take(A, J, axis=1)
