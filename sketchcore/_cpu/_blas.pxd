# cython: language_level=3
"""Row-major, dtype-generic BLAS wrappers over ``scipy.linalg.cython_blas``.

SciPy's BLAS is Fortran (column-major). A row-major product C = op(A) op(B) is the
column-major product C^T = op(B)^T op(A)^T, so each wrapper swaps operands instead of
transposing data. All are ``nogil`` so kernels can call them with the GIL released.
"""
from scipy.linalg.cython_blas cimport sgemm, dgemm, ssyrk, dsyrk, strsm, dtrsm, saxpy, daxpy

ctypedef fused floating:
    float
    double


cdef inline void gemm_rm(bint trans_a, bint trans_b, int m, int n, int k,
                         floating alpha, const floating* a, int lda,
                         const floating* b, int ldb,
                         floating beta, floating* c, int ldc) noexcept nogil:
    """Row-major C (m x n) = alpha * op(A) @ op(B) + beta * C; op(A) is m x k, op(B) k x n.

    lda/ldb/ldc are row strides (elements) of A, B, C as stored."""
    cdef char ta = b'T' if trans_b else b'N'
    cdef char tb = b'T' if trans_a else b'N'
    if m == 0 or n == 0:
        return
    if floating is float:
        sgemm(&ta, &tb, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)
    else:
        dgemm(&ta, &tb, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


cdef inline void axpy(int n, floating alpha, const floating* x, floating* y) noexcept nogil:
    """y += alpha * x (contiguous)."""
    cdef int one = 1
    if floating is float:
        saxpy(&n, &alpha, <float*>x, &one, y, &one)
    else:
        daxpy(&n, &alpha, <double*>x, &one, y, &one)


cdef inline void syrk_cm(char uplo, char trans, int n, int k, floating alpha,
                         const floating* a, int lda, floating beta,
                         floating* c, int ldc) noexcept nogil:
    """Column-major SYRK, as LAPACK-style code expects: C = alpha op(A) op(A)^T + beta C."""
    if floating is float:
        ssyrk(&uplo, &trans, &n, &k, &alpha, <float*>a, &lda, &beta, c, &ldc)
    else:
        dsyrk(&uplo, &trans, &n, &k, &alpha, <double*>a, &lda, &beta, c, &ldc)


cdef inline void trsm_cm(char side, char uplo, char transa, char diag, int m, int n,
                         floating alpha, const floating* a, int lda,
                         floating* b, int ldb) noexcept nogil:
    """Column-major TRSM: B = alpha op(A)^-1 B (side 'L') or alpha B op(A)^-1 (side 'R')."""
    if floating is float:
        strsm(&side, &uplo, &transa, &diag, &m, &n, &alpha, <float*>a, &lda, b, &ldb)
    else:
        dtrsm(&side, &uplo, &transa, &diag, &m, &n, &alpha, <double*>a, &lda, b, &ldb)


# linalg: triangular multiply (added for the CQRRPT kernels of _qr.pyx).
from scipy.linalg.cython_blas cimport strmm, dtrmm


cdef inline void trmm_cm(char side, char uplo, char transa, char diag, int m, int n,
                         floating alpha, const floating* a, int lda,
                         floating* b, int ldb) noexcept nogil:
    """Column-major TRMM: B = alpha op(A) B (side 'L') or alpha B op(A) (side 'R')."""
    if floating is float:
        strmm(&side, &uplo, &transa, &diag, &m, &n, &alpha, <float*>a, &lda, b, &ldb)
    else:
        dtrmm(&side, &uplo, &transa, &diag, &m, &n, &alpha, <double*>a, &lda, b, &ldb)
