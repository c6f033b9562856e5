# cython: language_level=3
"""LAPACK/BLAS pieces of the randomized factorizations (CQRRPT, sketch-and-precondition).

Layout conventions (checked by the Python callers, not here): the small matrices LAPACK
factorises (the sketch ``B``, the Gram matrix ``G``) are Fortran-ordered, so LAPACK reads them
as stored; ``normal_matvec`` takes C-ordered operands.

Every routine releases the GIL around its BLAS/LAPACK calls. ``normal_matvec`` (LSQR's pass
over A) runs its own OpenMP loop over fixed row blocks and calls single-threaded BLAS inside it
(the caller wraps it in ``blas_single_thread``): OpenBLAS' worker threads busy-wait for a while
after each threaded call, and any that spin during one of our OpenMP regions halve its speed on
a 2-core machine. The rows are cut into a fixed number of chunks (not one per thread), each with
its own partial sum, reduced in chunk order: results are bit-identical for any thread count.
(CQRRPT's passes over A are threaded BLAS calls on OpenBLAS' own pool instead: see
``sketchcore/_linalg/_cqrrpt.py``.)
"""
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free, calloc
import numpy as np

from scipy.linalg.cython_lapack cimport sgeqp3, dgeqp3, spotrf, dpotrf
from sketchcore._cpu._blas cimport floating, gemm_rm


__all__ = ["geqp3_inplace", "potrf_upper", "normal_matvec", "gather_columns_f"]

cdef enum:
    # Rows per step of the fused A^T (A P) product (kept small: two passes over the block).
    MV_BLOCK = 64
    # Partial sums per call; fixed so the reduction does not depend on the thread count.
    NCHUNK = 8
    # Rows per step of the transposing column gather: one block of A's rows (n values each)
    # stays in L2 while its r output column segments are written.
    GATHER_ROWS = 128


def geqp3_inplace(floating[::1, :] B):
    """Column-pivoted Householder QR of a Fortran-ordered ``(d, n)`` array, in place (xGEQP3).

    On return the upper triangle of ``B`` holds R (``min(d, n) x n``).

    Returns
    -------
    ndarray of shape (n,), intp
        Zero-based pivot order ``J``: ``B_in[:, J] = Q R``.

    Raises
    ------
    RuntimeError
        LAPACK reports an illegal argument (a bug, not a data problem).
    """
    cdef int d = B.shape[0], n = B.shape[1], lda = max(1, B.shape[0])
    cdef int info = 0, lwork = -1, k = min(B.shape[0], B.shape[1])
    cdef int[::1] jpvt = np.zeros(max(n, 1), dtype=np.intc)
    cdef floating wq = 0
    cdef floating* work
    cdef floating* tau
    if n == 0:
        return np.zeros(0, dtype=np.intp)
    tau = <floating*>malloc(max(k, 1) * sizeof(floating))
    if tau == NULL:
        raise MemoryError()
    try:
        with nogil:
            if floating is float:
                sgeqp3(&d, &n, &B[0, 0], &lda, &jpvt[0], tau, &wq, &lwork, &info)
            else:
                dgeqp3(&d, &n, &B[0, 0], &lda, &jpvt[0], tau, &wq, &lwork, &info)
        lwork = max(<int>wq, 3 * n + 1)
        work = <floating*>malloc(lwork * sizeof(floating))
        if work == NULL:
            raise MemoryError()
        with nogil:
            if floating is float:
                sgeqp3(&d, &n, &B[0, 0], &lda, &jpvt[0], tau, work, &lwork, &info)
            else:
                dgeqp3(&d, &n, &B[0, 0], &lda, &jpvt[0], tau, work, &lwork, &info)
        free(work)
    finally:
        free(tau)
    if info < 0:
        raise RuntimeError(f"xGEQP3: illegal argument {-info}")
    return np.asarray(jpvt, dtype=np.intp) - 1


def potrf_upper(floating[::1, :] G):
    """Upper Cholesky factor of a Fortran-ordered SPD ``(n, n)`` array, in place (xPOTRF).

    Only the upper triangle of ``G`` is read; on success it holds R with ``G = R^T R``.

    Returns
    -------
    int
        LAPACK ``info``: 0 on success, ``k > 0`` when the leading ``k x k`` minor is not
        positive definite (numerically).
    """
    cdef int n = G.shape[0], lda = max(1, G.shape[0]), info = 0
    cdef char uplo = c'U'
    if n == 0:
        return 0
    with nogil:
        if floating is float:
            spotrf(&uplo, &n, &G[0, 0], &lda, &info)
        else:
            dpotrf(&uplo, &n, &G[0, 0], &lda, &info)
    if info < 0:
        raise RuntimeError(f"xPOTRF: illegal argument {-info}")
    return int(info)


def normal_matvec(const floating[:, ::1] A, const floating[:, ::1] P, floating[:, ::1] Q,
                  floating[:, ::1] W):
    """``Q = A @ P`` and ``W = A^T @ Q`` with a single pass over ``A``.

    Each row block of A is used twice while it is in cache, which halves the memory traffic of
    an iteration of a normal-equations Krylov method on a large tall matrix.

    Parameters
    ----------
    A : (m, n) C-contiguous
    P : (n, k) C-contiguous
    Q : (m, k) C-contiguous output
    W : (n, k) C-contiguous output

    Must run under ``blas_single_thread``.
    """
    cdef Py_ssize_t m = A.shape[0], n = A.shape[1], k = P.shape[1]
    cdef Py_ssize_t nblocks = (m + MV_BLOCK - 1) // MV_BLOCK
    cdef Py_ssize_t nchunks = min(<Py_ssize_t>NCHUNK, nblocks)
    cdef Py_ssize_t c, b, i0, nb, i
    cdef floating* Wt
    cdef floating* w
    cdef floating one = 1
    cdef floating zero = 0
    W[:, :] = 0
    if m == 0 or n == 0 or k == 0:
        if m and k:
            Q[:, :] = 0
        return
    Wt = <floating*>calloc(<size_t>(nchunks * n * k), sizeof(floating))
    if Wt == NULL:
        raise MemoryError()
    w = &W[0, 0]
    with nogil:
        for c in prange(nchunks, schedule="static", chunksize=1):
            for b in range(c * nblocks // nchunks, (c + 1) * nblocks // nchunks):
                i0 = b * MV_BLOCK
                nb = min(<Py_ssize_t>MV_BLOCK, m - i0)
                gemm_rm(False, False, <int>nb, <int>k, <int>n, one, &A[i0, 0], <int>n,
                        &P[0, 0], <int>k, zero, &Q[i0, 0], <int>k)
                gemm_rm(True, False, <int>n, <int>k, <int>nb, one, &A[i0, 0], <int>n,
                        &Q[i0, 0], <int>k, one, &Wt[c * n * k], <int>k)
        for c in range(nchunks):
            for i in range(n * k):
                w[i] += Wt[c * n * k + i]
    free(Wt)


def gather_columns_f(const floating[:, ::1] A, const Py_ssize_t[::1] J, floating[::1, :] out):
    """``out[:, k] = A[:, J[k]]``: a column gather from row-major into column-major storage.

    CQRRPT's passes over the gathered columns are right-side triangular solves/products and
    a Gram matrix, which OpenBLAS runs 1.5-2x faster on column-major data than on row-major;
    NumPy's ``take`` followed by ``asfortranarray`` costs four times this cache-blocked copy.

    Parameters
    ----------
    A : (m, n) C-contiguous
    J : (r,) intp, entries in [0, n) (checked)
    out : (m, r) Fortran-contiguous output
    """
    cdef Py_ssize_t m = A.shape[0], n = A.shape[1], r = J.shape[0]
    cdef Py_ssize_t b, i0, i1, i, k, src
    cdef Py_ssize_t nblocks = (m + GATHER_ROWS - 1) // GATHER_ROWS
    if out.shape[0] != m or out.shape[1] != r:
        raise ValueError(f"out: expected shape ({m}, {r}), got ({out.shape[0]}, {out.shape[1]})")
    for k in range(r):
        if J[k] < 0 or J[k] >= n:
            raise IndexError(f"J[{k}] = {J[k]} is outside [0, {n})")
    with nogil:
        for b in range(nblocks):
            i0 = b * GATHER_ROWS
            i1 = min(m, i0 + GATHER_ROWS)
            for k in range(r):
                src = J[k]
                for i in range(i0, i1):
                    out[i, k] = A[i, src]
