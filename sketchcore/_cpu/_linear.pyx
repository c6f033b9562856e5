# cython: language_level=3
"""Sketched linear layer (SKLinear) forward and backward as stacked GEMMs (CPU).

Notation: x (n, m), S1s/U2s (L, m, k), U1s/S2s (L, k, o), K = L*k, c = 1/(2L).
The 2L factors are stacked once per call so every product is one GEMM over all terms:

    A = [S1s[0] .. S1s[L-1] | U2s[0] .. U2s[L-1]]   (m, 2K), gathered (the only copy)
    B = [U1s ; S2s]                                 (2K, o), already contiguous per half
    T = x A                                         (n, 2K), "hidden"; x is read once
    y = c (T[:, :K] U1s + T[:, K:] S2s) + bias

Backward with G = g B^T (n, 2K):
    grad_x = c G A^T,   grad_S1s[i] = c x^T G[:, S1 block i],   grad_S2s = c T[:, K:]^T g.

Gathering A costs ~4Lmk of memory traffic; when the batch is small (n < 2k) that is more
than re-reading x once per factor, so the factors are then read in place instead, one GEMM
per (m, k) block of A writing its column block of T (and likewise for grad_x, grad_S1s).
Which way each product is split across threads (batch rows, or output columns) is chosen
so that the larger operand is streamed once, not once per thread.

Threading. The products are split across an OpenMP team, each thread calling
*single-threaded* BLAS on its block (batch rows for the row-separable products, columns /
input rows for the two reductions over the batch). This is deliberate: under PyTorch the
team is torch's own intra-op pool (one libgomp per process), so the layer never wakes a
second, spinning BLAS thread pool that competes with torch's threads for the same cores
(on a small machine that contention cost 10-50x on mixed torch/BLAS workloads). For the
duration of a call the calling thread sets OpenBLAS's (process-global) thread count to 1
and restores it afterwards; BLAS calls made concurrently from other Python threads run
single-threaded during that window. When the BLAS under SciPy is not OpenBLAS, the kernels
run on the calling thread and let that BLAS thread as it likes.
"""
from cython.parallel cimport parallel, threadid
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy, memset
from posix.dlfcn cimport dlopen, dlsym, RTLD_NOW, RTLD_LOCAL
cimport openmp
cimport numpy as cnp
import numpy as np

from sketchcore._cpu._blas cimport gemm_rm, floating

cnp.import_array()

__all__ = ["sketched_linear_forward", "sketched_linear_backward", "blas_thread_control"]

ctypedef void (*set_threads_t)(int) noexcept nogil
ctypedef int (*get_threads_t)() noexcept nogil
cdef set_threads_t _set_blas_threads = NULL
cdef get_threads_t _get_blas_threads = NULL

# Below this many multiply-adds per call a second thread costs more than it saves.
cdef Py_ssize_t PARALLEL_MIN_FLOPS = 1 << 20


def _find_blas_thread_control():
    """Locate OpenBLAS's thread-count setter/getter in the BLAS under scipy's cython_blas."""
    global _set_blas_threads, _get_blas_threads
    import scipy.linalg.cython_blas as cb
    path = cb.__file__.encode()
    cdef void* handle = dlopen(path, RTLD_NOW | RTLD_LOCAL)
    cdef void* set_sym = NULL
    cdef void* get_sym = NULL
    if handle == NULL:
        return None
    # dlsym on a library handle also searches that library's dependencies, i.e. the
    # OpenBLAS it was linked against (SciPy's wheels prefix the names with "scipy_").
    for prefix in (b"scipy_", b""):
        set_sym = dlsym(handle, prefix + b"openblas_set_num_threads")
        get_sym = dlsym(handle, prefix + b"openblas_get_num_threads")
        if set_sym != NULL and get_sym != NULL:
            _set_blas_threads = <set_threads_t>set_sym
            _get_blas_threads = <get_threads_t>get_sym
            return (prefix + b"openblas_set_num_threads").decode()
    return None


_BLAS_CONTROL = _find_blas_thread_control()


def blas_thread_control():
    """Name of the BLAS thread-count setter in use, or None (kernels then run serially)."""
    return _BLAS_CONTROL


cdef inline int _team_size(Py_ssize_t flops) noexcept nogil:
    if _set_blas_threads == NULL or flops < PARALLEL_MIN_FLOPS:
        return 1
    return openmp.omp_get_max_threads()


cdef inline int _blas_single(int nt) noexcept nogil:
    """BLAS to one thread for the call; returns what to restore (0: nothing).

    Also when the team has one thread (small problems, or torch limited to one thread):
    the caller asked for that parallelism, and OpenBLAS's own pool would otherwise wake.
    """
    cdef int prev
    if _set_blas_threads == NULL:
        return 0
    prev = _get_blas_threads()
    if prev == 1:
        return 0
    _set_blas_threads(1)
    return prev


cdef inline void _blas_restore(int prev) noexcept nogil:
    if prev > 0:
        _set_blas_threads(prev)


cdef inline Py_ssize_t _lo(Py_ssize_t total, int part, int parts) noexcept nogil:
    return (total * part) // parts


cdef void _gather_a(const floating* S1s, const floating* U2s, floating* A,
                    Py_ssize_t L, Py_ssize_t m, Py_ssize_t k,
                    Py_ssize_t r0, Py_ssize_t r1) noexcept nogil:
    """Rows r0..r1 of A: A[r, i*k + c] = S1s[i, r, c];  A[r, K + i*k + c] = U2s[i, r, c]."""
    cdef Py_ssize_t K = L * k, r, i
    cdef size_t row = k * sizeof(floating)
    for i in range(L):
        for r in range(r0, r1):
            memcpy(A + r * 2 * K + i * k, S1s + (i * m + r) * k, row)
            memcpy(A + r * 2 * K + K + i * k, U2s + (i * m + r) * k, row)


cdef inline const floating* _block(const floating* S1s, const floating* U2s, Py_ssize_t j,
                                   Py_ssize_t L, Py_ssize_t m, Py_ssize_t k) noexcept nogil:
    """Factor j of A = [S1s[0] .. S1s[L-1] | U2s[0] .. U2s[L-1]], an (m, k) matrix."""
    return S1s + j * m * k if j < L else U2s + (j - L) * m * k


cdef inline bint _stacked(Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Gather A once (extra traffic ~ 4Lmk) or read the factors in place with one GEMM per
    term (x re-read 2L times, ~ 2L n m)? Gathering wins once the batch exceeds ~2k rows."""
    return n >= 2 * k


cdef int _forward(const floating* x, const floating* S1s, const floating* S2s,
                  const floating* U1s, const floating* U2s, const floating* bias,
                  floating* y, floating* T, Py_ssize_t n, Py_ssize_t m, Py_ssize_t o,
                  Py_ssize_t L, Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t K = L * k, r = 0, j = 0, r0 = 0, r1 = 0
    cdef floating c = 1.0 / (2.0 * L)
    cdef floating beta = 1.0 if bias != NULL else 0.0
    cdef int nt = _team_size(n * (m + o) * 2 * K), tid = 0, prev = 0
    cdef bint stacked = _stacked(n, k)
    cdef bint by_rows
    cdef floating* A = NULL
    if stacked:
        A = <floating*>malloc(m * 2 * K * sizeof(floating))
        if A == NULL:
            return -1
    prev = _blas_single(nt)
    # T = x A. Stacked: gather A (rows split), then one GEMM split by batch rows when the
    # batch outweighs A's width, else by A's columns (each thread streams half of A).
    # In place: the 2L factor blocks are shared out, each written to its column block of T.
    if stacked:
        with parallel(num_threads=nt):
            tid = threadid()
            _gather_a(S1s, U2s, A, L, m, k, _lo(m, tid, nt), _lo(m, tid + 1, nt))
        by_rows = n >= 2 * K
        with parallel(num_threads=nt):
            tid = threadid()
            if by_rows:
                r0 = _lo(n, tid, nt)
                r1 = _lo(n, tid + 1, nt)
                if r1 > r0:
                    gemm_rm(False, False, r1 - r0, 2 * K, m, 1.0, x + r0 * m, m, A, 2 * K,
                            0.0, T + r0 * 2 * K, 2 * K)
            else:
                r0 = _lo(2 * K, tid, nt)
                r1 = _lo(2 * K, tid + 1, nt)
                if r1 > r0:
                    gemm_rm(False, False, n, r1 - r0, m, 1.0, x, m, A + r0, 2 * K,
                            0.0, T + r0, 2 * K)
        free(A)
    else:
        with parallel(num_threads=nt):
            tid = threadid()
            for j in range(_lo(2 * L, tid, nt), _lo(2 * L, tid + 1, nt)):
                gemm_rm(False, False, n, k, m, 1.0, x, m, _block(S1s, U2s, j, L, m, k), k,
                        0.0, T + j * k, 2 * K)
    # y = c (T[:, :K] U1s + T[:, K:] S2s) + bias, split by batch rows when the batch
    # outweighs the output width, else by output columns (each thread streams half of B).
    by_rows = n >= o
    with parallel(num_threads=nt):
        tid = threadid()
        if by_rows:
            r0 = _lo(n, tid, nt)
            r1 = _lo(n, tid + 1, nt)
            if r1 > r0:
                if bias != NULL:
                    for r in range(r0, r1):
                        memcpy(y + r * o, bias, o * sizeof(floating))
                gemm_rm(False, False, r1 - r0, o, K, c, T + r0 * 2 * K, 2 * K, U1s, o, beta,
                        y + r0 * o, o)
                gemm_rm(False, False, r1 - r0, o, K, c, T + r0 * 2 * K + K, 2 * K, S2s, o,
                        1.0, y + r0 * o, o)
        else:
            r0 = _lo(o, tid, nt)
            r1 = _lo(o, tid + 1, nt)
            if r1 > r0:
                if bias != NULL:
                    for r in range(n):
                        memcpy(y + r * o + r0, bias + r0, (r1 - r0) * sizeof(floating))
                gemm_rm(False, False, n, r1 - r0, K, c, T, 2 * K, U1s + r0, o, beta,
                        y + r0, o)
                gemm_rm(False, False, n, r1 - r0, K, c, T + K, 2 * K, S2s + r0, o, 1.0,
                        y + r0, o)
    _blas_restore(prev)
    return 0


cdef int _backward(const floating* g, const floating* x, floating* T, bint have_t,
                   const floating* S1s, const floating* S2s, const floating* U1s,
                   const floating* U2s, floating* gx, floating* gS1, floating* gS2,
                   floating* gb, Py_ssize_t n, Py_ssize_t m, Py_ssize_t o,
                   Py_ssize_t L, Py_ssize_t k) noexcept nogil:
    """gx/gS1/gS2/gb may be NULL: that gradient is not wanted and its GEMMs are skipped."""
    cdef Py_ssize_t K = L * k, r = 0, i = 0, j = 0, r0 = 0, r1 = 0, c0 = 0, c1 = 0
    cdef Py_ssize_t a0 = 0, a1 = 0
    cdef floating c = 1.0 / (2.0 * L)
    cdef int nt = _team_size(n * (m + o) * 2 * K), tid = 0, prev = 0
    cdef bint stacked = _stacked(n, k)
    cdef bint recompute = gS2 != NULL and not have_t
    cdef bint g_by_rows = n >= 2 * K
    cdef bint x_by_rows = n > m
    cdef floating* A = NULL
    cdef floating* land = NULL
    cdef Py_ssize_t ld_land = 2 * K
    # With several terms, x^T G[:, :K] is computed for all of them at once and lands in a
    # buffer before the scatter to (L, m, k). The landing rows of a thread are its own rows
    # of A, free once its block of grad_x is done, unless grad_x is split by batch rows
    # (every thread then reads all of A): only that case needs a separate buffer.
    cdef bint own_landing = gx != NULL and x_by_rows
    cdef floating* G = <floating*>malloc(n * 2 * K * sizeof(floating))
    if G == NULL:
        return -1
    if stacked:
        A = <floating*>malloc(m * 2 * K * sizeof(floating))
        land = A
        if L > 1 and gS1 != NULL and own_landing:
            land = <floating*>malloc(m * K * sizeof(floating))
            ld_land = K
        if A == NULL or land == NULL:
            free(A)
            if land != A:
                free(land)
            free(G)
            return -1
    prev = _blas_single(nt)

    # Phase 1: G = g B^T = [g U1s^T | g S2s^T] (the S2 half only feeds grad_x), by batch rows
    # when the batch outweighs G's width, else by G's columns; the gather of A (by rows);
    # the recomputed hidden half T[:, K:] = x U2s when the forward's was not kept.
    with parallel(num_threads=nt):
        tid = threadid()
        if stacked:
            _gather_a(S1s, U2s, A, L, m, k, _lo(m, tid, nt), _lo(m, tid + 1, nt))
        if g_by_rows:
            r0 = _lo(n, tid, nt)
            r1 = _lo(n, tid + 1, nt)
            if r1 > r0:
                gemm_rm(False, True, r1 - r0, K, o, 1.0, g + r0 * o, o, U1s, o, 0.0,
                        G + r0 * 2 * K, 2 * K)
                if gx != NULL:
                    gemm_rm(False, True, r1 - r0, K, o, 1.0, g + r0 * o, o, S2s, o, 0.0,
                            G + r0 * 2 * K + K, 2 * K)
        else:
            c0 = _lo(2 * K if gx != NULL else K, tid, nt)
            c1 = _lo(2 * K if gx != NULL else K, tid + 1, nt)
            a0 = c0 if c0 < K else K
            a1 = c1 if c1 < K else K
            if a1 > a0:
                gemm_rm(False, True, n, a1 - a0, o, 1.0, g, o, U1s + a0 * o, o, 0.0, G + a0, 2 * K)
            a0 = c0 if c0 > K else K
            a1 = c1 if c1 > K else K
            if a1 > a0:
                gemm_rm(False, True, n, a1 - a0, o, 1.0, g, o, S2s + (a0 - K) * o, o, 0.0,
                        G + a0, 2 * K)
        if recompute:
            for j in range(L + _lo(L, tid, nt), L + _lo(L, tid + 1, nt)):
                gemm_rm(False, False, n, k, m, 1.0, x, m, U2s + (j - L) * m * k, k, 0.0,
                        T + j * k, 2 * K)

    # Phase 2, every block independent: grad_x = c G A^T (by input columns when in_features
    # outweighs the batch, else by rows), grad_S1s = c x^T G[:, :K] (by input rows),
    # grad_S2s = c T[:, K:]^T g and grad_bias (by output columns).
    with parallel(num_threads=nt):
        tid = threadid()
        if gx != NULL:
            if x_by_rows:
                r0 = _lo(n, tid, nt)
                r1 = _lo(n, tid + 1, nt)
                if r1 > r0:
                    if stacked:
                        gemm_rm(False, True, r1 - r0, m, 2 * K, c, G + r0 * 2 * K, 2 * K, A,
                                2 * K, 0.0, gx + r0 * m, m)
                    else:
                        for j in range(2 * L):
                            gemm_rm(False, True, r1 - r0, m, k, c, G + r0 * 2 * K + j * k,
                                    2 * K, _block(S1s, U2s, j, L, m, k), k,
                                    0.0 if j == 0 else 1.0, gx + r0 * m, m)
            else:
                r0 = _lo(m, tid, nt)
                r1 = _lo(m, tid + 1, nt)
                if r1 > r0:
                    if stacked:
                        gemm_rm(False, True, n, r1 - r0, 2 * K, c, G, 2 * K, A + r0 * 2 * K,
                                2 * K, 0.0, gx + r0, m)
                    else:
                        for j in range(2 * L):
                            gemm_rm(False, True, n, r1 - r0, k, c, G + j * k, 2 * K,
                                    _block(S1s, U2s, j, L, m, k) + r0 * k, k,
                                    0.0 if j == 0 else 1.0, gx + r0, m)
        if gS1 != NULL:
            r0 = _lo(m, tid, nt)
            r1 = _lo(m, tid + 1, nt)
            if r1 > r0:
                if stacked and L > 1:
                    gemm_rm(True, False, r1 - r0, K, n, c, x + r0, m, G, 2 * K, 0.0,
                            land + r0 * ld_land, ld_land)
                    for i in range(L):
                        for r in range(r0, r1):
                            memcpy(gS1 + (i * m + r) * k, land + r * ld_land + i * k,
                                   k * sizeof(floating))
                else:
                    for i in range(L):
                        gemm_rm(True, False, r1 - r0, k, n, c, x + r0, m, G + i * k, 2 * K,
                                0.0, gS1 + (i * m + r0) * k, k)
        r0 = _lo(o, tid, nt)
        r1 = _lo(o, tid + 1, nt)
        if r1 > r0:
            if gS2 != NULL:
                gemm_rm(True, False, K, r1 - r0, n, c, T + K, 2 * K, g + r0, o, 0.0,
                        gS2 + r0, o)
            if gb != NULL:
                for j in range(r0, r1):
                    gb[j] = 0
                for r in range(n):
                    for j in range(r0, r1):
                        gb[j] += g[r * o + j]
    _blas_restore(prev)
    if land != A:
        free(land)
    free(A)
    free(G)
    return 0


def sketched_linear_forward(x, S1s, S2s, U1s, U2s, bias):
    """Forward kernel on validated arrays.

    Parameters
    ----------
    x : ndarray of shape (n, m)
    S1s, U2s : ndarray of shape (L, m, k)
    S2s, U1s : ndarray of shape (L, k, o)
    bias : ndarray of shape (o,) or None
        All C-contiguous, one dtype (float32 or float64); checked by the caller
        (``sketchcore.layers``), not here.

    Returns
    -------
    y : ndarray of shape (n, o)
    hidden : ndarray of shape (n, 2 L k)
        ``x @ [S1s | U2s]`` stacked; pass it to the backward kernel to skip recomputing it.

    Raises
    ------
    MemoryError
        A work buffer could not be allocated.
    """
    if x.dtype == np.float32:
        return _forward_t[float](x, S1s, S2s, U1s, U2s, bias)
    return _forward_t[double](x, S1s, S2s, U1s, U2s, bias)


cdef _forward_t(const floating[:, ::1] x, const floating[:, :, ::1] S1s,
                const floating[:, :, ::1] S2s, const floating[:, :, ::1] U1s,
                const floating[:, :, ::1] U2s, object bias):
    cdef Py_ssize_t n = x.shape[0], m = x.shape[1], L = S1s.shape[0], k = S1s.shape[2]
    cdef Py_ssize_t o = S2s.shape[2]
    dtype = np.float32 if floating is float else np.float64
    if n == 0 or m == 0 or o == 0:
        # Degenerate shapes never reach BLAS (leading dimensions of 0 are illegal there):
        # an empty sum over in_features is zero, so y is just the bias.
        y_arr = np.zeros((n, o), dtype=dtype)
        if bias is not None:
            y_arr += bias
        return y_arr, np.zeros((n, 2 * L * k), dtype=dtype)
    y_arr = np.empty((n, o), dtype=dtype)
    t_arr = np.empty((n, 2 * L * k), dtype=dtype)
    cdef floating[:, ::1] y = y_arr
    cdef floating[:, ::1] T = t_arr
    cdef const floating[::1] b
    cdef const floating* bp = NULL
    cdef int status
    if bias is not None:
        b = bias
        bp = &b[0]
    with nogil:
        status = _forward(&x[0, 0], &S1s[0, 0, 0], &S2s[0, 0, 0], &U1s[0, 0, 0],
                          &U2s[0, 0, 0], bp, &y[0, 0], &T[0, 0], n, m, o, L, k)
    if status != 0:
        raise MemoryError("sketched_linear_forward: could not allocate the stacked factors")
    return y_arr, t_arr


def sketched_linear_backward(grad_out, x, hidden, S1s, S2s, U1s, U2s, has_bias,
                             need_x=True, need_weights=True):
    """Backward kernel on validated arrays.

    Parameters
    ----------
    grad_out : ndarray of shape (n, o)
    x : ndarray of shape (n, m)
    hidden : ndarray of shape (n, 2 L k) or None
        The forward kernel's second result; None recomputes the half that is needed.
    S1s, U2s : ndarray of shape (L, m, k)
    S2s, U1s : ndarray of shape (L, k, o)
    has_bias : bool
    need_x, need_weights : bool, default True
        Whether grad_x / (grad_S1s, grad_S2s) are wanted; unwanted ones are not computed
        and come back as None. All arrays C-contiguous, one dtype; checked by the caller.

    Returns
    -------
    grad_x : ndarray of shape (n, m) or None
    grad_S1s : ndarray of shape (L, m, k) or None
    grad_S2s : ndarray of shape (L, k, o) or None
    grad_bias : ndarray of shape (o,) or None (when ``has_bias`` is false)
    """
    if x.dtype == np.float32:
        return _backward_t[float](grad_out, x, hidden, S1s, S2s, U1s, U2s, bool(has_bias),
                                  bool(need_x), bool(need_weights))
    return _backward_t[double](grad_out, x, hidden, S1s, S2s, U1s, U2s, bool(has_bias),
                               bool(need_x), bool(need_weights))


cdef _backward_t(const floating[:, ::1] g, const floating[:, ::1] x, object hidden,
                 const floating[:, :, ::1] S1s, const floating[:, :, ::1] S2s,
                 const floating[:, :, ::1] U1s, const floating[:, :, ::1] U2s, bint has_bias,
                 bint need_x, bint need_weights):
    cdef Py_ssize_t n = x.shape[0], m = x.shape[1], L = S1s.shape[0], k = S1s.shape[2]
    cdef Py_ssize_t o = S2s.shape[2]
    dtype = np.float32 if floating is float else np.float64
    if n == 0 or m == 0 or o == 0:
        # Empty batch or zero-width layer: every gradient is an empty sum, i.e. zero, and
        # BLAS must not see leading dimensions of 0.
        return (np.zeros((n, m), dtype=dtype) if need_x else None,
                np.zeros((L, m, k), dtype=dtype) if need_weights else None,
                np.zeros((L, k, o), dtype=dtype) if need_weights else None,
                np.zeros(o, dtype=dtype) if has_bias else None)
    # Unwanted gradients get a 1-element dummy so the memoryviews below stay valid;
    # the kernel receives NULL for them.
    gx_arr = np.empty((n, m), dtype=dtype) if need_x else np.empty((1, 1), dtype=dtype)
    gs1_arr = np.empty((L, m, k), dtype=dtype) if need_weights else np.empty((1, 1, 1), dtype=dtype)
    gs2_arr = np.empty((L, k, o), dtype=dtype) if need_weights else np.empty((1, 1, 1), dtype=dtype)
    gb_arr = np.empty(o, dtype=dtype) if has_bias else None
    cdef bint have_t = hidden is not None
    # The kernel writes (never reads) T's U2 half when recomputing; the caller's hidden
    # is only read. const memoryview for the caller's, a scratch one otherwise.
    if have_t:
        t_arr = hidden
    elif need_weights:
        t_arr = np.empty((n, 2 * L * k), dtype=dtype)
    else:
        t_arr = np.empty((1, 1), dtype=dtype)
    cdef const floating[:, ::1] T = t_arr
    cdef floating[:, ::1] gx = gx_arr
    cdef floating[:, :, ::1] gS1 = gs1_arr
    cdef floating[:, :, ::1] gS2 = gs2_arr
    cdef floating[::1] gb
    cdef floating* gbp = NULL
    cdef int status
    if has_bias:
        gb = gb_arr
        gbp = &gb[0]
    cdef floating* gxp = &gx[0, 0] if need_x else NULL
    cdef floating* gs1p = &gS1[0, 0, 0] if need_weights else NULL
    cdef floating* gs2p = &gS2[0, 0, 0] if need_weights else NULL
    with nogil:
        status = _backward(&g[0, 0], &x[0, 0], <floating*>&T[0, 0], have_t, &S1s[0, 0, 0],
                           &S2s[0, 0, 0], &U1s[0, 0, 0], &U2s[0, 0, 0], gxp, gs1p, gs2p, gbp,
                           n, m, o, L, k)
    if status != 0:
        raise MemoryError("sketched_linear_backward: could not allocate work buffers")
    return (gx_arr if need_x else None, gs1_arr if need_weights else None,
            gs2_arr if need_weights else None, gb_arr)


def _set_parallel_min_flops(Py_ssize_t value):
    """Tuning hook (benchmarks/tests): smallest multiply-add count that uses the team."""
    global PARALLEL_MIN_FLOPS
    old = PARALLEL_MIN_FLOPS
    PARALLEL_MIN_FLOPS = value
    return old
