# cython: language_level=3
"""Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).

Inline, nogil building blocks shared by every CPU kernel that draws random entries, so an
operator tile is generated inside the kernel that consumes it. Each random value is a pure
function of (key, stream, index); see ``sketchcore/random.py`` for the layout.
"""
from libc.stdint cimport uint32_t, uint64_t
from libc.math cimport log, sqrt, sin, cos, M_PI

cdef enum:
    PHILOX_M0 = 0xD2511F53
    PHILOX_M1 = 0xCD9E8D57
    PHILOX_W0 = 0x9E3779B9
    PHILOX_W1 = 0xBB67AE85


cdef inline void philox4x32_10(uint32_t* ctr, uint32_t k0, uint32_t k1) noexcept nogil:
    """Ten Philox rounds on ``ctr[0:4]`` in place with key (k0, k1)."""
    cdef uint64_t p0, p1
    cdef uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3]
    cdef int r
    for r in range(10):
        p0 = <uint64_t>PHILOX_M0 * c0
        p1 = <uint64_t>PHILOX_M1 * c2
        c0, c1, c2, c3 = (<uint32_t>(p1 >> 32)) ^ c1 ^ k0, <uint32_t>p1, \
                         (<uint32_t>(p0 >> 32)) ^ c3 ^ k1, <uint32_t>p0
        k0 = k0 + <uint32_t>PHILOX_W0
        k1 = k1 + <uint32_t>PHILOX_W1
    ctr[0] = c0
    ctr[1] = c1
    ctr[2] = c2
    ctr[3] = c3


cdef inline void philox_block(uint64_t seed, uint64_t stream, uint64_t block,
                              uint32_t* out) noexcept nogil:
    """The four words of counter ``block`` of ``stream`` under ``seed``."""
    out[0] = <uint32_t>block
    out[1] = <uint32_t>(block >> 32)
    out[2] = <uint32_t>stream
    out[3] = <uint32_t>(stream >> 32)
    philox4x32_10(out, <uint32_t>seed, <uint32_t>(seed >> 32))


cdef inline uint32_t philox_word(uint64_t seed, uint64_t stream, uint64_t index) noexcept nogil:
    """Word ``index`` of the stream: word ``index % 4`` of counter ``index // 4``."""
    cdef uint32_t w[4]
    philox_block(seed, stream, index >> 2, w)
    return w[index & 3]


cdef inline double u32_to_open01(uint32_t w) noexcept nogil:
    """Map a word to (0, 1], never 0, so log() in Box-Muller stays finite."""
    return (<double>w + 1.0) * 2.3283064365386963e-10   # 2**-32


cdef inline double gaussian_from_words(uint32_t w0, uint32_t w1, int second) noexcept nogil:
    """Box-Muller on one pair of words; ``second`` picks the sine branch."""
    cdef double r = sqrt(-2.0 * log(u32_to_open01(w0)))
    cdef double t = 2.0 * M_PI * (<double>w1 * 2.3283064365386963e-10)
    return r * sin(t) if second else r * cos(t)


cdef inline double philox_gaussian(uint64_t seed, uint64_t stream, uint64_t index) noexcept nogil:
    """Gaussian entry ``index``: counter ``index // 2``; even entries use words (0, 1)
    with cos, odd entries words (2, 3) with sin."""
    cdef uint32_t w[4]
    philox_block(seed, stream, index >> 1, w)
    if index & 1:
        return gaussian_from_words(w[2], w[3], 1)
    return gaussian_from_words(w[0], w[1], 0)
