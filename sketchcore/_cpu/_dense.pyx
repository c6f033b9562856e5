# cython: language_level=3
"""Dense random sketches (Gaussian, sign) applied without ever storing the operator.

S (d x m) is generated tile by tile inside the product. The m columns of S (rows of A) are
cut into K parts, the d rows of S into row blocks and, when that gives too few pieces, the
n data columns into column blocks; each (part, row block, column block) is an OpenMP work
item (dynamic schedule). An item walks the tiles of t columns of its part in order, draws
its rows of the tile with the batched Philox generators of ``_philox.pxd`` into a private
buffer and multiplies them into its output block with one single-threaded BLAS gemm; part
k accumulates into its own partial output and the partials are added in the order k = 0,
1, ... at the end. Memory O(threads * rows * t + K * output), never O(d * m); A is read once
when S has a single row block.

Thread-count invariance: every piece (K, block sizes, tile boundaries) is a function of the
problem's sizes only, and an item's result comes from the same gemm calls with the same
shapes and data in the same order whichever thread runs it, so 1 and N threads give
bit-identical results. (OpenBLAS's rounding depends on the call shape, hence fixed pieces
rather than one slab per thread.)
"""
from cython.parallel cimport prange
from libc.stdint cimport uint64_t
from libc.stdlib cimport malloc, free
cimport numpy as cnp
cimport openmp
import numpy as np

from sketchcore._cpu._contract import check_kernel_input as _check

from sketchcore._cpu._philox cimport sk_fill_run
from sketchcore._cpu._blas cimport gemm_rm
from sketchcore._cpu._threads import blas_single_thread

cnp.import_array()

ctypedef fused real:
    float
    double

__all__ = ["gaussian_left", "gaussian_right", "sign_left", "sign_right", "dense_block",
           "default_tile"]

cdef enum:
    # Rows of S per work item (gemm efficiency grows with it; the tile buffer is
    # ITEM_ROWS x t per thread).
    ITEM_ROWS = 512
    # Parts of the m dimension: at most MAX_PARTS, each at least PART_MIN columns of S,
    # partial outputs within PARTIAL_BUDGET bytes together.
    MAX_PARTS = 8
    PART_MIN = 4096
    # Below MIN_ITEMS (part, row block) pieces, the n dimension is cut too, into blocks of
    # at least MIN_ITEM_COLS (the tile is then drawn once per column block).
    MIN_ITEMS = 4
    MIN_ITEM_COLS = 64
    # Columns of S per generated tile.
    DEFAULT_TILE = 512
    # Below this many multiply-adds (about half a millisecond) one thread does everything:
    # waking the workers can cost more than that on a loaded machine.
    PARALLEL_MIN_WORK = 1 << 25

PARTIAL_BUDGET = 1 << 26

KIND_GAUSSIAN = 0
KIND_SIGN = 1


def default_tile(Py_ssize_t d):
    """Columns of S generated per step when ``tile=0``."""
    return DEFAULT_TILE


cdef inline void _fill_rows(int kind, uint64_t seed, uint64_t stream, Py_ssize_t m,
                            Py_ssize_t r0, Py_ssize_t nr, Py_ssize_t j0, Py_ssize_t t,
                            float* gf, real* g) noexcept nogil:
    """g[0:nr, 0:t] (row stride t) = unscaled entries S[r0:r0+nr, j0:j0+t]. For double the
    rows are drawn into the float staging ``gf`` and widened (exact)."""
    cdef Py_ssize_t i, k
    for i in range(nr):
        if real is float:
            sk_fill_run(kind, seed, stream, <uint64_t>((r0 + i) * m + j0), t, &g[i * t])
        else:
            sk_fill_run(kind, seed, stream, <uint64_t>((r0 + i) * m + j0), t, gf)
            for k in range(t):
                g[i * t + k] = gf[k]


cdef void _run(int kind, uint64_t seed, uint64_t stream, const real* a, Py_ssize_t lda,
               real* out, real* partial, Py_ssize_t d, Py_ssize_t m, Py_ssize_t n,
               bint right, real scale, Py_ssize_t tile, Py_ssize_t parts, Py_ssize_t ncb,
               int nthreads) noexcept nogil:
    """left:  out (d x n) = scale * S @ a, a (m x n);
    right: out (n x d) = scale * a @ S.T, a (n x m).
    ``out`` and the ``parts - 1`` partial outputs (same layout, in ``partial``) are zero."""
    cdef Py_ssize_t nrb = (d + ITEM_ROWS - 1) // ITEM_ROWS
    cdef Py_ssize_t cb = (n + ncb - 1) // ncb
    cdef Py_ssize_t nitems = parts * nrb * ncb
    cdef Py_ssize_t item, k, j0, j1, t, r0, nr, c0, nc, i, c
    cdef Py_ssize_t size = d * n
    cdef real* acc
    cdef real* row
    cdef real* g
    cdef float* gf
    for item in prange(nitems, schedule="dynamic", num_threads=nthreads):
        k = item // (nrb * ncb)
        r0 = ((item // ncb) % nrb) * ITEM_ROWS
        nr = min(<Py_ssize_t>ITEM_ROWS, d - r0)
        c0 = (item % ncb) * cb
        nc = min(cb, n - c0)
        acc = out if k == 0 else partial + (k - 1) * size
        g = <real*>malloc(ITEM_ROWS * tile * sizeof(real))
        gf = <float*>malloc(tile * sizeof(float))
        j0 = (m * k) // parts
        j1 = (m * (k + 1)) // parts
        while nc > 0 and j0 < j1:
            t = min(tile, j1 - j0)
            _fill_rows(kind, seed, stream, m, r0, nr, j0, t, gf, g)
            if right:
                gemm_rm(False, True, <int>nc, <int>nr, <int>t, scale,
                        a + c0 * lda + j0, <int>lda, g, <int>t, <real>1,
                        acc + c0 * d + r0, <int>d)
            else:
                gemm_rm(False, False, <int>nr, <int>nc, <int>t, scale,
                        g, <int>t, a + j0 * lda + c0, <int>lda, <real>1,
                        acc + r0 * n + c0, <int>n)
            j0 = j0 + t
        free(g)
        free(gf)
    # Partials added in the order k, serially: a second parallel region would cost another
    # wake-up of the workers for a pass that is tiny next to the products.
    for k in range(1, parts):
        acc = partial + (k - 1) * size
        for i in range(size):
            out[i] = out[i] + acc[i]


def _apply(int kind, a, Py_ssize_t d, uint64_t seed, uint64_t stream, bint right,
           Py_ssize_t tile, double scale):
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    if tile <= 0:
        tile = DEFAULT_TILE
    cdef Py_ssize_t m = a.shape[1] if right else a.shape[0]
    cdef Py_ssize_t n = a.shape[0] if right else a.shape[1]
    out = np.zeros((n, d) if right else (d, n), dtype=a.dtype)
    if m == 0 or n == 0:
        return out
    tile = min(tile, m)
    # Every piece depends on the sizes only, never on the thread count.
    cdef Py_ssize_t nrb = (d + ITEM_ROWS - 1) // ITEM_ROWS
    cdef Py_ssize_t parts = max(1, min(<Py_ssize_t>MAX_PARTS, m // PART_MIN,
                                       PARTIAL_BUDGET // max(1, d * n * a.itemsize)))
    cdef Py_ssize_t ncb = 1
    if parts * nrb < MIN_ITEMS:
        ncb = max(1, min((MIN_ITEMS + parts * nrb - 1) // (parts * nrb), n // MIN_ITEM_COLS))
    cdef int nthreads = openmp.omp_get_max_threads()
    if d * m * n < PARALLEL_MIN_WORK:
        nthreads = 1
    nthreads = <int>min(<Py_ssize_t>nthreads, parts * nrb * ncb)
    partial = np.zeros(max(1, (parts - 1) * d * n), dtype=a.dtype)
    cdef const float[:, ::1] a32
    cdef const double[:, ::1] a64
    cdef float[:, ::1] o32
    cdef double[:, ::1] o64
    cdef float[::1] p32
    cdef double[::1] p64
    with blas_single_thread():
        if a.dtype == np.float32:
            a32, o32, p32 = a, out, partial
            with nogil:
                _run[float](kind, seed, stream, &a32[0, 0], a32.shape[1], &o32[0, 0],
                            &p32[0], d, m, n, right, <float>scale, tile, parts, ncb, nthreads)
        else:
            a64, o64, p64 = a, out, partial
            with nogil:
                _run[double](kind, seed, stream, &a64[0, 0], a64.shape[1], &o64[0, 0],
                             &p64[0], d, m, n, right, scale, tile, parts, ncb, nthreads)
    return out


def gaussian_left(A, Py_ssize_t d, uint64_t seed, uint64_t stream, Py_ssize_t tile=0):
    """``S @ A`` for the Gaussian operator S (d x m), A of shape (m, n); returns (d, n).

    S[i, j] = gaussian(seed, stream, i*m + j) / sqrt(d); ``tile`` = columns of S generated
    per step (0 = automatic)."""
    _check(A, "gaussian_left")
    return _apply(KIND_GAUSSIAN, A, d, seed, stream, False, tile, 1.0 / np.sqrt(d))


def gaussian_right(A, Py_ssize_t d, uint64_t seed, uint64_t stream, Py_ssize_t tile=0):
    """``A @ S.T`` for the Gaussian operator S (d x m), A of shape (n, m); returns (n, d)."""
    _check(A, "gaussian_right")
    return _apply(KIND_GAUSSIAN, A, d, seed, stream, True, tile, 1.0 / np.sqrt(d))


def sign_left(A, Py_ssize_t d, uint64_t seed, uint64_t stream, Py_ssize_t tile=0):
    """``S @ A`` for the sign operator S (d x m): S[i, j] = -+1/sqrt(d) from the top bit of
    word i*m + j; A of shape (m, n); returns (d, n)."""
    _check(A, "sign_left")
    return _apply(KIND_SIGN, A, d, seed, stream, False, tile, 1.0 / np.sqrt(d))


def sign_right(A, Py_ssize_t d, uint64_t seed, uint64_t stream, Py_ssize_t tile=0):
    """``A @ S.T`` for the sign operator S (d x m), A of shape (n, m); returns (n, d)."""
    _check(A, "sign_right")
    return _apply(KIND_SIGN, A, d, seed, stream, True, tile, 1.0 / np.sqrt(d))


def dense_block(int kind, uint64_t seed, uint64_t stream, Py_ssize_t m, Py_ssize_t r0,
                Py_ssize_t r1, Py_ssize_t j0, Py_ssize_t j1, double scale, dtype):
    """Rows r0:r1, columns j0:j1 of a dense operator with m columns (kind 0 Gaussian, 1 sign),
    entries ``dtype(scale * value)`` with the product in float64; ndarray (r1-r0, j1-j0)."""
    cdef Py_ssize_t nr = max(r1 - r0, 0), nc = max(j1 - j0, 0), i, k
    raw = np.empty((nr, nc), dtype=np.float32)
    cdef float[:, ::1] rv = raw
    if nr and nc:
        with nogil:
            for i in prange(nr, schedule="static", use_threads_if=nr * nc > (1 << 20)):
                sk_fill_run(kind, seed, stream, <uint64_t>((r0 + i) * m + j0), nc, &rv[i, 0])
    out = raw.astype(np.float64)
    out *= scale
    return out.astype(dtype, copy=False)
