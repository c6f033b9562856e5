# cython: language_level=3
"""LAPACK/BLAS pieces of the randomized factorizations (CQRRPT, sketch-and-precondition).

Layout conventions (checked by the Python callers, not here):

* the input ``A`` may have any strides (it is gathered block by block); the tall outputs
  ``X``/``Q`` are Fortran-ordered ``(m, r)``, because OpenBLAS' right-side triangular
  kernels on column-major data run 1.5-3x faster than the left-side ones a C-ordered
  output would need;
* small square/triangular matrices (``R``, ``G``) are Fortran-ordered ``(n, n)`` arrays, so
  LAPACK reads them as stored.

Every routine releases the GIL around its BLAS/LAPACK calls. The passes over tall matrices
(``precond_gram``, ``gather_times``, ``gram_upper``, ``trsm/trmm_right_upper``,
``normal_matvec``) run their own OpenMP loop over fixed row blocks and call single-threaded
BLAS inside it (the caller wraps them in ``blas_single_thread``): OpenBLAS' worker threads
busy-wait for a while after each threaded call, and any that spin during one of our OpenMP
regions halve its speed on a 2-core machine, so a factorization never mixes the two pools. The rows are cut into a
fixed number of chunks (not one per thread), each with its own partial sum, reduced in chunk
order: results are bit-identical for any thread count.
"""
from cython.parallel cimport prange
from libc.stdlib cimport malloc, free, calloc
import numpy as np

from scipy.linalg.cython_lapack cimport sgeqp3, dgeqp3, spotrf, dpotrf
from sketchcore._cpu._blas cimport floating, gemm_rm, syrk_cm, trsm_cm, trmm_cm
from sketchcore._cpu._threads import blas_single_thread


__all__ = ["geqp3_inplace", "potrf_upper", "precond_gram", "gather_times", "gram_upper",
           "trsm_right_upper", "trmm_right_upper", "normal_matvec"]

cdef enum:
    # Rows of A handled by one gather + trsm + syrk step: the block (<= ROW_BLOCK x n)
    # stays in L2 while it is solved and accumulated.
    ROW_BLOCK = 256
    # Rows per step of the fused A^T (A P) product (kept small: two passes over the block).
    MV_BLOCK = 64
    # Partial sums per call; fixed so the reduction does not depend on the thread count.
    NCHUNK = 8


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


cdef void _gather_rows(const floating[:, :] A, const Py_ssize_t* J, Py_ssize_t i0,
                       Py_ssize_t nb, Py_ssize_t r, floating* out, Py_ssize_t ldo) noexcept nogil:
    """out[i + j * ldo] = A[i0 + i, J[j]] for a block of nb rows (column-major output)."""
    cdef Py_ssize_t i, j
    for j in range(r):
        for i in range(nb):
            out[i + j * ldo] = A[i0 + i, J[j]]


def precond_gram(const floating[:, :] A, const Py_ssize_t[::1] J, const floating[::1, :] R,
                 floating[::1, :] X, floating[::1, :] G):
    """Preconditioning and Gram matrix in one pass over ``A`` (the core of CQRRPT).

    ``X = A[:, J] @ inv(R)`` and ``G = upper(X^T X)``, row block by row block: each block of
    ``A`` is gathered, solved against R (xTRSM, right side) and accumulated into a partial
    Gram matrix (xSYRK) while it is in cache.

    Parameters
    ----------
    A : (m, N) array, any strides
    J : (r,) intp, selected columns of A (each in [0, N))
    R : (r, r) Fortran-ordered, upper triangular, nonsingular
    X : (m, r) Fortran-ordered output
    G : (r, r) Fortran-ordered output; its upper triangle receives X^T X

    Must run under ``blas_single_thread`` (BLAS is called from the OpenMP threads).
    """
    cdef Py_ssize_t m = A.shape[0], r = R.shape[0]
    cdef Py_ssize_t nblocks = (m + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t nchunks = min(<Py_ssize_t>NCHUNK, nblocks)
    cdef Py_ssize_t c, b, i0, nb, i, j
    cdef floating* Gt
    cdef floating one = 1
    G[:, :] = 0
    if m == 0 or r == 0:
        return
    Gt = <floating*>calloc(<size_t>(nchunks * r * r), sizeof(floating))
    if Gt == NULL:
        raise MemoryError()
    with nogil:
        for c in prange(nchunks, schedule="static", chunksize=1):
            for b in range(c * nblocks // nchunks, (c + 1) * nblocks // nchunks):
                i0 = b * ROW_BLOCK
                nb = min(<Py_ssize_t>ROW_BLOCK, m - i0)
                _gather_rows(A, &J[0], i0, nb, r, &X[i0, 0], m)
                trsm_cm(c'R', c'U', c'N', c'N', <int>nb, <int>r, one, &R[0, 0], <int>r,
                        &X[i0, 0], <int>m)
                syrk_cm(c'U', c'T', <int>r, <int>nb, one, &X[i0, 0], <int>m, one,
                        &Gt[c * r * r], <int>r)
        for c in range(nchunks):
            for j in range(r):
                for i in range(j + 1):
                    G[i, j] += Gt[c * r * r + j * r + i]
    free(Gt)


def gather_times(const floating[:, :] A, const Py_ssize_t[::1] J, const floating[::1, :] T,
                 floating[::1, :] X):
    """``X = A[:, J] @ T`` for upper-triangular T, in one pass over ``A`` (gather + xTRMM).

    CQRRPT applies ``inv(R)`` this way when R is well conditioned: a triangular multiply by
    the explicit inverse runs at about three times the speed of a triangular solve, and with
    ``cond(R) <= 32`` the inverse costs no accuracy that matters. Arguments as in
    ``precond_gram`` (X Fortran-ordered). Must run under ``blas_single_thread``.
    """
    cdef Py_ssize_t m = A.shape[0], r = T.shape[0]
    cdef Py_ssize_t nblocks = (m + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t b, i0, nb
    cdef floating one = 1
    if m == 0 or r == 0:
        return
    with nogil:
        for b in prange(nblocks, schedule="static"):
            i0 = b * ROW_BLOCK
            nb = min(<Py_ssize_t>ROW_BLOCK, m - i0)
            _gather_rows(A, &J[0], i0, nb, r, &X[i0, 0], m)
            trmm_cm(c'R', c'U', c'N', c'N', <int>nb, <int>r, one, &T[0, 0], <int>r,
                    &X[i0, 0], <int>m)


def gram_upper(const floating[:, :] X, floating[::1, :] G):
    """``G = upper(X^T X)`` for a C- or Fortran-contiguous ``(m, r)`` X.

    Rows are cut into ``NCHUNK`` chunks, each reduced by one single-threaded xSYRK into its
    own partial sum on an OpenMP thread, then summed in chunk order. Must run under
    ``blas_single_thread``.

    Raises
    ------
    ValueError
        X is neither C- nor Fortran-contiguous.
    """
    cdef Py_ssize_t m = X.shape[0], r = X.shape[1]
    cdef Py_ssize_t nblocks = (m + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t nchunks = min(<Py_ssize_t>NCHUNK, nblocks)
    cdef Py_ssize_t c, i0, i1, i, j
    cdef floating one = 1
    cdef floating* Gt
    cdef bint c_order
    G[:, :] = 0
    if r == 0 or m == 0:
        return
    if X.strides[1] == sizeof(floating) and X.strides[0] == r * sizeof(floating):
        c_order = True
    elif X.strides[0] == sizeof(floating) and X.strides[1] == m * sizeof(floating):
        c_order = False
    else:
        raise ValueError("gram_upper: X must be C- or Fortran-contiguous")
    Gt = <floating*>calloc(<size_t>(nchunks * r * r), sizeof(floating))
    if Gt == NULL:
        raise MemoryError()
    with nogil:
        for c in prange(nchunks, schedule="static", chunksize=1):
            i0 = (c * nblocks // nchunks) * ROW_BLOCK
            i1 = min(((c + 1) * nblocks // nchunks) * ROW_BLOCK, m)
            if c_order:   # rows i0..i1 are the column-major r x (i1-i0) matrix X_c^T
                syrk_cm(c'U', c'N', <int>r, <int>(i1 - i0), one, &X[i0, 0], <int>r, one,
                        &Gt[c * r * r], <int>r)
            else:
                syrk_cm(c'U', c'T', <int>r, <int>(i1 - i0), one, &X[i0, 0], <int>m, one,
                        &Gt[c * r * r], <int>r)
        for c in range(nchunks):
            for j in range(r):
                for i in range(j + 1):
                    G[i, j] += Gt[c * r * r + j * r + i]
    free(Gt)


def trsm_right_upper(floating[::1, :] X, const floating[::1, :] R):
    """``X <- X @ inv(R)`` in place for Fortran-ordered ``(m, r)`` X, upper-triangular R
    (single-threaded xTRSM per row block on OpenMP threads; run under
    ``blas_single_thread``)."""
    cdef Py_ssize_t m = X.shape[0], r = X.shape[1]
    cdef Py_ssize_t nblocks = (m + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t b, i0, nb
    cdef floating one = 1
    if m == 0 or r == 0:
        return
    with nogil:
        for b in prange(nblocks, schedule="static"):
            i0 = b * ROW_BLOCK
            nb = min(<Py_ssize_t>ROW_BLOCK, m - i0)
            trsm_cm(c'R', c'U', c'N', c'N', <int>nb, <int>r, one, &R[0, 0], <int>r,
                    &X[i0, 0], <int>m)


def trmm_right_upper(floating[::1, :] X, const floating[::1, :] T):
    """``X <- X @ T`` in place for Fortran-ordered ``(m, r)`` X, upper-triangular T
    (single-threaded xTRMM per row block on OpenMP threads; run under
    ``blas_single_thread``)."""
    cdef Py_ssize_t m = X.shape[0], r = X.shape[1]
    cdef Py_ssize_t nblocks = (m + ROW_BLOCK - 1) // ROW_BLOCK
    cdef Py_ssize_t b, i0, nb
    cdef floating one = 1
    if m == 0 or r == 0:
        return
    with nogil:
        for b in prange(nblocks, schedule="static"):
            i0 = b * ROW_BLOCK
            nb = min(<Py_ssize_t>ROW_BLOCK, m - i0)
            trmm_cm(c'R', c'U', c'N', c'N', <int>nb, <int>r, one, &T[0, 0], <int>r,
                    &X[i0, 0], <int>m)


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
