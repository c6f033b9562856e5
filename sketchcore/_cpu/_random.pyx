# cython: language_level=3
"""Array fills from the Philox streams (CPU). Thin: the arithmetic lives in _philox.pxd."""
from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t
cimport numpy as cnp
import numpy as np

from libc.stdlib cimport malloc, free
from sketchcore._cpu._philox cimport (philox4x32_10, philox_word, philox_gaussian, sk_fill_run,
                                      u32_to_open01)

cnp.import_array()

ctypedef fused real:
    float
    double

__all__ = ["philox4x32", "fill_words", "fill_uniform", "fill_sign", "fill_gaussian"]

# Below this many entries, thread start-up costs more than the work.
cdef Py_ssize_t PARALLEL_MIN = 1 << 15
# Entries per work piece of fill_gaussian (a multiple of the batch generator's 256).
cdef Py_ssize_t FILL_CHUNK = 1 << 14


def philox4x32(counter, key):
    """One Philox4x32-10 evaluation: four 32-bit counter words and two key words -> four words."""
    cdef uint32_t c[4]
    cdef int i
    for i in range(4):
        c[i] = <uint32_t>int(counter[i])
    philox4x32_10(c, <uint32_t>int(key[0]), <uint32_t>int(key[1]))
    return np.array([c[0], c[1], c[2], c[3]], dtype=np.uint32)


def fill_words(uint64_t seed, uint64_t stream, uint64_t start, uint32_t[::1] out):
    """out[i] = word (start + i) of the stream."""
    cdef Py_ssize_t n = out.shape[0], i
    with nogil:
        for i in prange(n, schedule="static", use_threads_if=n >= PARALLEL_MIN):
            out[i] = philox_word(seed, stream, start + <uint64_t>i)


def fill_uniform(uint64_t seed, uint64_t stream, uint64_t start, real[::1] out):
    """out[i] = uniform in (0, 1] from word (start + i)."""
    cdef Py_ssize_t n = out.shape[0], i
    with nogil:
        for i in prange(n, schedule="static", use_threads_if=n >= PARALLEL_MIN):
            out[i] = <real>u32_to_open01(philox_word(seed, stream, start + <uint64_t>i))


def fill_sign(uint64_t seed, uint64_t stream, uint64_t start, real[::1] out, double scale):
    """out[i] = +scale or -scale from the top bit of word (start + i)."""
    cdef Py_ssize_t n = out.shape[0], i
    with nogil:
        for i in prange(n, schedule="static", use_threads_if=n >= PARALLEL_MIN):
            out[i] = <real>(-scale if (philox_word(seed, stream, start + <uint64_t>i) >> 31)
                            else scale)


def fill_gaussian(uint64_t seed, uint64_t stream, uint64_t start, real[::1] out, double scale):
    """out[i] = scale * N(0, 1) entry (start + i) of the stream (the float32 formula, widened)."""
    cdef Py_ssize_t n = out.shape[0], c, k, i0, cnt
    cdef Py_ssize_t nchunks = (n + FILL_CHUNK - 1) // FILL_CHUNK
    cdef float* buf
    with nogil:
        # Chunks go through the vectorised batch generator; each chunk's buffer is allocated
        # inside the loop body, so it is private to the thread that fills it.
        for c in prange(nchunks, schedule="static", use_threads_if=n >= PARALLEL_MIN):
            i0 = c * FILL_CHUNK
            cnt = min(<Py_ssize_t>FILL_CHUNK, n - i0)
            buf = <float*>malloc(cnt * sizeof(float))
            if buf == NULL:
                with gil:
                    raise MemoryError("fill_gaussian: no memory for a work buffer")
            sk_fill_run(0, seed, stream, start + <uint64_t>i0, cnt, buf)
            for k in range(cnt):
                out[i0 + k] = <real>(scale * <double>buf[k])
            free(buf)
            buf = NULL


def gaussian_at(uint64_t seed, uint64_t stream, const uint64_t[::1] index):
    """float32 N(0, 1) entries at arbitrary indices, one scalar evaluation each.

    The per-entry path the batched generator must agree with bit for bit (tests use it).

    Returns
    -------
    ndarray of shape (len(index),), float32
    """
    cdef Py_ssize_t n = index.shape[0], i
    out = np.empty(n, dtype=np.float32)
    cdef float[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = <float>philox_gaussian(seed, stream, index[i])
    return out
