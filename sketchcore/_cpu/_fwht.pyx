# cython: language_level=3
"""Fast Walsh-Hadamard transform and the subsampled randomized Hadamard transform (SRHT).

SRHT (contracts.md): S = (1/sqrt(d)) R H D P with P zero-padding R^m to R^p (p = next power
of two >= m), D the signs of words 0 .. m-1 of the sign stream, H the unnormalised Sylvester
Hadamard matrix of order p and R the selection of ``rows`` (d of them, chosen on the host).

Only the d selected rows of H D P A are computed, with the Kronecker split H_p = H_a (x) H_b
(p = a * b, b a cache-sized power of two). Writing a row index r = r1 * b + r2 and a column
index k = k1 * b + k2, H[r, k] = (-1)^popcount(r1 & k1) * H_b[r2, k2], so

    (H x)[r] = sum over tiles k1 of (-1)^popcount(r1 & k1) * (H_b x_k1)[r2],

where x_k1 is tile k1 (b consecutive rows). Each tile of D P A is transformed in cache by a
size-b FWHT and its selected rows are added into the output; tiles of pure padding are
skipped. Cost O(m n log b + d n m / b) instead of O(p n log p), one pass over A.

Parallelism is over column stripes of A and of the output (work items, dynamic schedule:
each stripe goes through every tile), so every output element sees the same operations in
the same order for any number of threads.
"""
from cython.parallel cimport prange, parallel
from libc.stdint cimport uint64_t, int64_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
cimport numpy as cnp
cimport openmp
import numpy as np

from sketchcore._cpu._contract import check_kernel_input as _check

from sketchcore._cpu._philox cimport sk_fill_run

cnp.import_array()

ctypedef fused real:
    float
    double

__all__ = ["fwht_rows", "srht_left", "srht_right"]

cdef enum:
    # Bytes of one transformed tile (b rows x stripe columns): L2-resident.
    TILE_BYTES = 1 << 20
    MAX_TILE_ROWS = 4096
    MIN_STRIPE = 16
    MAX_STRIPE = 64
    # Below this many entries of A (about a millisecond of transforms) one thread does
    # everything: waking the workers can cost more than that on a loaded machine.
    PARALLEL_MIN_WORK = 1 << 20


cdef inline void _fwht_block(real* x, Py_ssize_t b, Py_ssize_t n, Py_ssize_t ld,
                             Py_ssize_t h0) noexcept nogil:
    """Unnormalised FWHT stages h0, 2 h0, ... < b along axis 0 of a (b x n) block with row
    stride ld, in place. Two stages are fused per pass (radix 4); the arithmetic is exactly
    that of the radix-2 stages, so the result does not depend on the fusion."""
    cdef Py_ssize_t h = h0, i0, i, c
    cdef real *r0
    cdef real *r1
    cdef real *r2
    cdef real *r3
    cdef real u0, u1, u2, u3, s0, s1, s2, s3
    while 4 * h <= b:
        i0 = 0
        while i0 < b:
            for i in range(i0, i0 + h):
                r0 = x + i * ld
                r1 = x + (i + h) * ld
                r2 = x + (i + 2 * h) * ld
                r3 = x + (i + 3 * h) * ld
                for c in range(n):
                    u0 = r0[c]
                    u1 = r1[c]
                    u2 = r2[c]
                    u3 = r3[c]
                    s0 = u0 + u1
                    s1 = u0 - u1
                    s2 = u2 + u3
                    s3 = u2 - u3
                    r0[c] = s0 + s2
                    r2[c] = s0 - s2
                    r1[c] = s1 + s3
                    r3[c] = s1 - s3
            i0 += 4 * h
        h *= 4
    if 2 * h <= b:
        i0 = 0
        while i0 < b:
            for i in range(i0, i0 + h):
                r0 = x + i * ld
                r1 = x + (i + h) * ld
                for c in range(n):
                    u0 = r0[c]
                    u1 = r1[c]
                    r0[c] = u0 + u1
                    r1[c] = u0 - u1
            i0 += 2 * h


cdef void _fwht_rows(real* x, Py_ssize_t p, Py_ssize_t n, Py_ssize_t blk,
                     Py_ssize_t stripe) noexcept nogil:
    """In-place FWHT along axis 0 of a C-contiguous (p x n) array: stages below ``blk``
    inside cache-sized row blocks, then the long-range stages pairwise; column stripes in
    parallel (per-element arithmetic is independent of the split)."""
    cdef Py_ssize_t nstripes = (n + stripe - 1) // stripe, s, c0, w, k, h, i0, i, c
    cdef real *r0
    cdef real *r1
    cdef real u0, u1
    for s in prange(nstripes, schedule="static", use_threads_if=p * n >= PARALLEL_MIN_WORK):
        c0 = s * stripe
        w = min(stripe, n - c0)
        k = 0
        while k < p:
            _fwht_block(x + k * n + c0, blk, w, n, 1)
            k = k + blk
        h = blk
        while h < p:
            i0 = 0
            while i0 < p:
                for i in range(i0, i0 + h):
                    r0 = x + i * n + c0
                    r1 = x + (i + h) * n + c0
                    for c in range(w):
                        u0 = r0[c]
                        u1 = r1[c]
                        r0[c] = u0 + u1
                        r1[c] = u0 - u1
                i0 = i0 + 2 * h
            h = h * 2


cdef inline int _parity(uint64_t v) noexcept nogil:
    return __builtin_popcountll(v) & 1


cdef extern from *:
    int __builtin_popcountll(unsigned long long) nogil


cdef void _srht(uint64_t seed, uint64_t stream, const real[:, ::1] a, const int64_t* rows,
                Py_ssize_t d, real[:, ::1] y, Py_ssize_t b, int logb,
                Py_ssize_t stripe) noexcept nogil:
    """y (d x n) = H[rows] D P a (unscaled), tiles of b rows, column stripes in parallel."""
    cdef Py_ssize_t m = a.shape[0], n = a.shape[1]
    cdef Py_ssize_t ntiles = (m + b - 1) // b, nstripes = (n + stripe - 1) // stripe
    cdef Py_ssize_t s, c0, w, k1, k2, cnt, i, c, r2
    cdef real* tile
    cdef float* sg
    cdef real* yrow
    cdef real* trow
    cdef const real* arow
    cdef real sv
    cdef int nthreads = <int>min(nstripes, <Py_ssize_t>openmp.omp_get_max_threads())
    if m * n < PARALLEL_MIN_WORK:
        nthreads = 1
    with parallel(num_threads=nthreads):
        tile = <real*>malloc(b * stripe * sizeof(real))
        sg = <float*>malloc(b * sizeof(float))
        for s in prange(nstripes, schedule="dynamic"):
            c0 = s * stripe
            w = min(stripe, n - c0)
            for k1 in range(ntiles):
                cnt = min(b, m - k1 * b)
                sk_fill_run(1, seed, stream, <uint64_t>(k1 * b), cnt, sg)
                for k2 in range(cnt):
                    arow = &a[k1 * b + k2, c0]
                    trow = tile + k2 * w
                    sv = sg[k2]
                    for c in range(w):
                        trow[c] = sv * arow[c]
                if cnt < b:
                    memset(tile + cnt * w, 0, (b - cnt) * w * sizeof(real))
                _fwht_block(tile, b, w, w, 1)
                for i in range(d):
                    r2 = rows[i] & (b - 1)
                    trow = tile + r2 * w
                    yrow = &y[i, c0]
                    if _parity(<uint64_t>((rows[i] >> logb) & k1)):
                        for c in range(w):
                            yrow[c] -= trow[c]
                    else:
                        for c in range(w):
                            yrow[c] += trow[c]
        free(tile)
        free(sg)


def _stripe(Py_ssize_t n):
    """Columns per parallel work item: one per thread, at least MIN_STRIPE, at most
    MAX_STRIPE (the stripe width never changes a result, only the load balance)."""
    cdef int nthreads = openmp.omp_get_max_threads()
    return min(<Py_ssize_t>MAX_STRIPE, max(<Py_ssize_t>MIN_STRIPE, (n + nthreads - 1) // nthreads))


def fwht_rows(X):
    """In-place unnormalised fast Walsh-Hadamard transform along axis 0 of X, a C-contiguous
    float32/float64 ndarray of shape (p, n) with p a power of two; returns X."""
    _check(X, "fwht_rows")
    cdef Py_ssize_t p = X.shape[0], n = X.shape[1]
    if p & (p - 1):
        raise ValueError(f"fwht_rows needs a power-of-two number of rows, got {p}")
    if not X.flags.writeable:
        raise ValueError("fwht_rows works in place and needs a writeable X")
    if p <= 1 or n == 0:
        return X
    cdef Py_ssize_t stripe = _stripe(n)
    cdef Py_ssize_t blk = _tile_rows(p, min(stripe, n), X.itemsize)
    cdef float[:, ::1] x32
    cdef double[:, ::1] x64
    if X.dtype == np.float32:
        x32 = X
        with nogil:
            _fwht_rows[float](&x32[0, 0], p, n, blk, stripe)
    else:
        x64 = X
        with nogil:
            _fwht_rows[double](&x64[0, 0], p, n, blk, stripe)
    return X


def _tile_rows(Py_ssize_t p, Py_ssize_t width, Py_ssize_t itemsize):
    """Power of two <= p: rows per cache tile for a stripe of ``width`` columns."""
    cdef Py_ssize_t b = 1
    while b * 2 <= p and b * 2 <= MAX_TILE_ROWS and b * 2 * width * itemsize <= TILE_BYTES:
        b *= 2
    return b


def srht_left(A, rows, uint64_t seed, uint64_t stream):
    """``S @ A`` for the SRHT S (d x m), A of shape (m, n); ``rows`` int64 (d,) are the
    selected Hadamard rows in [0, p), ``stream`` the sign stream; returns (d, n)."""
    _check(A, "srht_left")
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    cdef Py_ssize_t m = A.shape[0], n = A.shape[1], d = rows.shape[0]
    cdef Py_ssize_t p = 1
    while p < m:
        p *= 2
    if d and (rows.min() < 0 or rows.max() >= p):
        raise ValueError(f"rows must lie in [0, {p}) for m={m}")
    out = np.zeros((d, n), dtype=A.dtype)
    if m == 0 or n == 0 or d == 0:
        return out
    cdef Py_ssize_t stripe = _stripe(n)
    # The tile height changes the rounding of the sum over tiles, so it depends only on the
    # problem (never on the thread count).
    cdef Py_ssize_t b = _tile_rows(p, min(n, <Py_ssize_t>MAX_STRIPE), A.itemsize)
    cdef int logb = 0
    while (1 << logb) < b:
        logb += 1
    cdef const int64_t[::1] rv = rows
    cdef const float[:, ::1] a32
    cdef const double[:, ::1] a64
    cdef float[:, ::1] o32
    cdef double[:, ::1] o64
    if A.dtype == np.float32:
        a32, o32 = A, out
        with nogil:
            _srht[float](seed, stream, a32, &rv[0], d, o32, b, logb, stripe)
    else:
        a64, o64 = A, out
        with nogil:
            _srht[double](seed, stream, a64, &rv[0], d, o64, b, logb, stripe)
    out *= out.dtype.type(1.0 / np.sqrt(d))
    return out


def srht_right(A, rows, uint64_t seed, uint64_t stream):
    """``A @ S.T`` for the SRHT S (d x m), A of shape (n, m); returns (n, d)."""
    _check(A, "srht_right")
    return np.ascontiguousarray(srht_left(np.ascontiguousarray(A.T), rows, seed, stream).T)
