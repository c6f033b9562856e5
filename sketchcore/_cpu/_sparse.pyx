# cython: language_level=3
"""Sparse sign sketches (SJLT / OSNAP, CountSketch = one nonzero per column) by scatter-add.

The operator is never built: nonzero rows and signs are drawn with the batched Philox
generator into a small packed index buffer (row | sign << 31) right before they are used.

* left, Y = S @ A: the columns j of S are cut into K fixed parts (K from the problem size
  only); part k accumulates Y_k[row(j, t), :] += v(j, t) * A[j, :] over its j in order,
  streaming whole rows of A into a private dense Y_k, and Y = ((Y_0 + Y_1) + Y_2) + ...
  The parts are OpenMP work items (dynamic schedule, so a thread the OS pre-empts does not
  hold up the others); the result depends on K, never on the thread count.
* right, Z = A @ S^T: Z[i, row(j, t)] += v(j, t) * A[i, j]; work items are blocks of 16
  rows i, accumulated transposed (16-wide vector updates) and each element receiving its
  terms in the order (j, t).

Entry definition (contracts.md): column j has one nonzero in each of nnz
row blocks; block t covers rows [t*d//nnz, (t+1)*d//nnz) of size b_t; the words w of counter
j*nnz + t give row t*d//nnz + ((uint64)w[0] * b_t >> 32) and sign -1 when w[1]'s top bit is
set; values are +-1/sqrt(nnz).
"""
from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t, int32_t
from libc.stdlib cimport malloc, free
from libc.string cimport memset
cimport numpy as cnp
cimport openmp
import numpy as np

from sketchcore._cpu._contract import check_kernel_input as _check

from sketchcore._cpu._philox cimport sk_philox_soa, SK_NB

cnp.import_array()

ctypedef fused real:
    float
    double

__all__ = ["sparse_sign_left", "sparse_sign_right", "sparse_sign_indices"]

cdef enum:
    # Left: columns of S whose indices are drawn at once by one work item.
    J_CHUNK = 1024
    # Left: at most this many parts, each at least PART_MIN columns of S, and the partial
    # outputs together within PARTIAL_BUDGET bytes.
    MAX_PARTS = 4
    PART_MIN = 4096
    # Right: columns of S whose indices are drawn once and shared by all row blocks.
    J_CHUNK_RIGHT = 1 << 16
    # Right: rows of A per work item (one short vector per column of S).
    ROW_BLOCK = 16
    # Spacing of the blocks' column vectors (>= 4 cache lines apart: no false sharing).
    X_STRIDE = 64
    # Below this many multiply-adds (about a millisecond) one thread does everything:
    # waking the workers can cost more than that on a loaded machine.
    PARALLEL_MIN_WORK = 1 << 22

PARTIAL_BUDGET = 1 << 26

cdef uint32_t SIGN_BIT = 0x80000000u


cdef void _indices(uint64_t seed, uint64_t stream, Py_ssize_t d, Py_ssize_t nnz,
                   Py_ssize_t j0, Py_ssize_t nj, uint32_t* code) noexcept nogil:
    """code[(j - j0) * nnz + t] = row | sign << 31 for columns j0 .. j0 + nj - 1 (serial).
    Divisions stay out of the inner loop: block t's first row and size come from a table."""
    cdef Py_ssize_t total = nj * nnz, bt, b, e, nb, t
    cdef uint64_t first = <uint64_t>(j0 * nnz)
    cdef uint32_t w[4 * SK_NB]
    cdef uint32_t* lo = <uint32_t*>malloc(2 * nnz * sizeof(uint32_t))
    cdef uint32_t* size = lo + nnz
    for t in range(nnz):
        lo[t] = <uint32_t>(t * d // nnz)
        size[t] = <uint32_t>((t + 1) * d // nnz) - lo[t]
    t = 0
    bt = 0
    while bt * SK_NB < total:
        sk_philox_soa(seed, stream, first + <uint64_t>(bt * SK_NB), w)
        nb = min(<Py_ssize_t>SK_NB, total - bt * SK_NB)
        for b in range(nb):
            e = bt * SK_NB + b
            code[e] = (lo[t] + <uint32_t>((<uint64_t>w[b] * size[t]) >> 32)) \
                | (w[SK_NB + b] & SIGN_BIT)
            t += 1
            if t == nnz:
                t = 0
        bt += 1
    free(lo)


cdef inline void _scatter_chunk(const uint32_t* code, Py_ssize_t nj, Py_ssize_t nnz,
                                const real* a, Py_ssize_t lda, real* acc, Py_ssize_t n,
                                real scale) noexcept nogil:
    """acc[row, :] += v * a[jj, :] for the nj rows of a chunk, (jj, t) ascending. Whole
    rows: column stripes (to keep a stripe of acc in L1) measured slower, as they cut the
    contiguous streaming of A into strided pieces."""
    cdef Py_ssize_t jj, e, c
    cdef uint32_t key
    cdef const real* arow
    cdef real* orow
    cdef real v
    for jj in range(nj):
        arow = a + jj * lda
        for e in range(jj * nnz, (jj + 1) * nnz):
            key = code[e]
            orow = acc + <Py_ssize_t>(key & ~SIGN_BIT) * n
            v = -scale if (key & SIGN_BIT) else scale
            for c in range(n):
                orow[c] += v * arow[c]


cdef void _left(uint64_t seed, uint64_t stream, Py_ssize_t d, Py_ssize_t nnz, const real* a,
                Py_ssize_t lda, real* out, Py_ssize_t n, real scale, Py_ssize_t m,
                Py_ssize_t parts, real* partial, int nthreads) noexcept nogil:
    """out (d x n, contiguous, zero) = S @ a; part 0 accumulates in ``out``, part k >= 1 in
    partial[(k-1) * d * n ...] (uninitialised on entry), then the parts are added in order."""
    cdef Py_ssize_t k, j0, j1, nj, c, i
    cdef uint32_t* code
    cdef real* acc
    cdef real* orow
    for k in prange(parts, schedule="dynamic", num_threads=nthreads):
        code = <uint32_t*>malloc(J_CHUNK * nnz * sizeof(uint32_t))
        acc = out if k == 0 else partial + (k - 1) * d * n
        if k > 0:
            # Zeroed here, by the thread that fills it (first touch, in parallel).
            memset(acc, 0, d * n * sizeof(real))
        j0 = (m * k) // parts
        j1 = (m * (k + 1)) // parts
        while j0 < j1:
            nj = min(<Py_ssize_t>J_CHUNK, j1 - j0)
            _indices(seed, stream, d, nnz, j0, nj, code)
            _scatter_chunk(code, nj, nnz, a + j0 * lda, lda, acc, n, scale)
            j0 = j0 + nj
        free(code)
    # Serial on purpose: a second parallel region would cost another wake-up of the
    # workers (milliseconds on a loaded machine) for well under a millisecond of adds.
    for k in range(1, parts):
        acc = partial + (k - 1) * d * n
        for i in range(d * n):
            out[i] = out[i] + acc[i]


cdef void _right(uint64_t seed, uint64_t stream, Py_ssize_t d, Py_ssize_t nnz, const real* a,
                 Py_ssize_t lda, real* out, Py_ssize_t n, real scale, Py_ssize_t m,
                 uint32_t* code, real* zb, int nthreads) noexcept nogil:
    """out (n x d, contiguous) = a @ S.T. The rows of a go in blocks of ROW_BLOCK: for each
    column j the block's ROW_BLOCK values a[i, j] form one short vector, scattered into the
    block's transposed accumulator zb[blk] (d x ROW_BLOCK, L1/L2-resident) as
    zb[blk][row(j, t), :] += v(j, t) * a[block, j] -- the left kernel's vector update on a
    transposed block, so nothing strided is written. Indices of a chunk of columns are drawn
    once (in parallel pieces) and shared by all blocks; the (j, t) order per element holds."""
    cdef Py_ssize_t nblocks = (n + ROW_BLOCK - 1) // ROW_BLOCK, npieces, piece, blk
    cdef Py_ssize_t i0, nr, r, jj, e, j0 = 0, nj, p0, row
    cdef const real* ablk
    cdef real* z
    cdef real* zr
    cdef real* x
    cdef real v
    cdef uint32_t key
    while j0 < m:
        nj = min(<Py_ssize_t>J_CHUNK_RIGHT, m - j0)
        npieces = (nj + J_CHUNK - 1) // J_CHUNK
        for piece in prange(npieces, schedule="static", num_threads=nthreads):
            p0 = piece * J_CHUNK
            _indices(seed, stream, d, nnz, j0 + p0, min(<Py_ssize_t>J_CHUNK, nj - p0),
                     code + p0 * nnz)
        for blk in prange(nblocks, schedule="dynamic", num_threads=nthreads):
            i0 = blk * ROW_BLOCK
            nr = min(<Py_ssize_t>ROW_BLOCK, n - i0)
            ablk = a + i0 * lda + j0
            z = zb + blk * d * ROW_BLOCK
            # The block's column vector lives after all accumulators (a C array declared
            # here would be shared by the threads).
            x = zb + nblocks * d * ROW_BLOCK + blk * X_STRIDE
            for r in range(nr, ROW_BLOCK):
                x[r] = 0
            for jj in range(nj):
                for r in range(nr):
                    x[r] = ablk[r * lda + jj]
                for e in range(jj * nnz, (jj + 1) * nnz):
                    key = code[e]
                    zr = z + <Py_ssize_t>(key & ~SIGN_BIT) * ROW_BLOCK
                    v = -scale if (key & SIGN_BIT) else scale
                    for r in range(ROW_BLOCK):
                        zr[r] += v * x[r]
        j0 += nj
    # Serial copy-out (output-sized, small): no third wake-up of the workers.
    for blk in range(nblocks):
        i0 = blk * ROW_BLOCK
        z = zb + blk * d * ROW_BLOCK
        for r in range(min(<Py_ssize_t>ROW_BLOCK, n - i0)):
            for row in range(d):
                out[(i0 + r) * d + row] = z[row * ROW_BLOCK + r]


def _apply(a, Py_ssize_t d, Py_ssize_t nnz, uint64_t seed, uint64_t stream, bint right):
    if not 1 <= nnz <= d or d >= 2 ** 31:
        raise ValueError(f"need 1 <= nnz <= d < 2**31, got nnz={nnz}, d={d}")
    cdef Py_ssize_t m = a.shape[1] if right else a.shape[0]
    cdef Py_ssize_t n = a.shape[0] if right else a.shape[1]
    out = np.zeros((n, d) if right else (d, n), dtype=a.dtype)
    if m == 0 or n == 0:
        return out
    cdef int nthreads = openmp.omp_get_max_threads()
    if m * nnz * n < PARALLEL_MIN_WORK:
        nthreads = 1
    # The number of parts fixes the summation order, so it depends on the sizes only.
    cdef Py_ssize_t parts = max(1, min(<Py_ssize_t>MAX_PARTS, m // PART_MIN,
                                       PARTIAL_BUDGET // max(1, d * n * a.itemsize)))
    partial = np.empty(max(1, (parts - 1) * d * n) if not right else 1, dtype=a.dtype)
    codes = np.empty(min(m, <Py_ssize_t>J_CHUNK_RIGHT) * nnz if right else 1, dtype=np.uint32)
    zblocks = np.zeros(((n + ROW_BLOCK - 1) // ROW_BLOCK) * (ROW_BLOCK * d + X_STRIDE)
                       if right else 1, dtype=a.dtype)
    cdef uint32_t[::1] cv = codes
    cdef double scale = 1.0 / np.sqrt(nnz)
    cdef const float[:, ::1] a32
    cdef const double[:, ::1] a64
    cdef float[:, ::1] o32
    cdef double[:, ::1] o64
    cdef float[::1] p32, z32
    cdef double[::1] p64, z64
    if a.dtype == np.float32:
        a32, o32, p32, z32 = a, out, partial, zblocks
        with nogil:
            if right:
                _right[float](seed, stream, d, nnz, &a32[0, 0], a32.shape[1], &o32[0, 0], n,
                              <float>scale, m, &cv[0], &z32[0], nthreads)
            else:
                _left[float](seed, stream, d, nnz, &a32[0, 0], a32.shape[1], &o32[0, 0], n,
                             <float>scale, m, parts, &p32[0], nthreads)
    else:
        a64, o64, p64, z64 = a, out, partial, zblocks
        with nogil:
            if right:
                _right[double](seed, stream, d, nnz, &a64[0, 0], a64.shape[1], &o64[0, 0], n,
                               scale, m, &cv[0], &z64[0], nthreads)
            else:
                _left[double](seed, stream, d, nnz, &a64[0, 0], a64.shape[1], &o64[0, 0], n,
                              scale, m, parts, &p64[0], nthreads)
    return out


def sparse_sign_left(A, Py_ssize_t d, Py_ssize_t nnz, uint64_t seed, uint64_t stream):
    """``S @ A`` for the sparse sign operator S (d x m) with ``nnz`` nonzeros per column;
    A of shape (m, n); returns (d, n)."""
    _check(A, "sparse_sign_left")
    return _apply(A, d, nnz, seed, stream, False)


def sparse_sign_right(A, Py_ssize_t d, Py_ssize_t nnz, uint64_t seed, uint64_t stream):
    """``A @ S.T`` for the sparse sign operator S (d x m); A of shape (n, m); returns (n, d)."""
    _check(A, "sparse_sign_right")
    return _apply(A, d, nnz, seed, stream, True)


def sparse_sign_indices(Py_ssize_t d, Py_ssize_t nnz, uint64_t seed, uint64_t stream,
                        Py_ssize_t j0, Py_ssize_t j1):
    """Nonzero rows and signs of columns j0 .. j1-1: (rows int32, signs float64 of +-1),
    both of shape (j1 - j0, nnz)."""
    if not 1 <= nnz <= d or d >= 2 ** 31:
        raise ValueError(f"need 1 <= nnz <= d < 2**31, got nnz={nnz}, d={d}")
    cdef Py_ssize_t nj = max(j1 - j0, 0)
    codes = np.empty(max(nj * nnz, 1), dtype=np.uint32)
    cdef uint32_t[::1] cv = codes
    if nj:
        with nogil:
            _indices(seed, stream, d, nnz, j0, nj, &cv[0])
    codes = codes[:nj * nnz].reshape(nj, nnz)
    rows = (codes & np.uint32(0x7FFFFFFF)).astype(np.int32)
    signs = np.where(codes >> np.uint32(31), -1.0, 1.0)
    return rows, signs
