# cython: language_level=3
"""Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11).

Inline, nogil building blocks shared by every CPU kernel that draws random entries, so an
operator tile is generated inside the kernel that consumes it. Each random value is a pure
function of (key, stream, index); see ``sketchcore/random.py`` for the layout.
"""
from libc.stdint cimport uint32_t, uint64_t

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
    """Map a word to (0, 1], never 0 (the uniform values of ``sketchcore.random.uniform``)."""
    return (<double>w + 1.0) * 2.3283064365386963e-10   # 2**-32


# The Gaussian formula and the batched (SIMD-friendly) generators live in C so that gcc
# vectorises them over a whole batch of counters (AVX-512 on the CI machine). Every
# multiply-add is an explicit fmaf and no other a*b+c pattern is left, so the result does
# not depend on whether the compiler contracts, and CUDA reproduces it with the same code.
cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #include <math.h>

    /* Blocks (counters) per batch of the batched generators. */
    #define SK_NB 64

    static inline float sk_u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }
    static inline uint32_t sk_f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }

    /* Natural log of u in (0, 1], float32 (Cephes logf polynomial, |rel err| ~ 1 ulp). */
    static inline float sk_logf(float u) {
        uint32_t b = sk_f2u(u);
        int32_t e = (int32_t)(b >> 23) - 127;
        float m = sk_u2f((b & 0x7FFFFFu) | 0x3F800000u);
        int big = m > 1.41421356f;
        m = big ? m * 0.5f : m;
        e = big ? e + 1 : e;
        float x = m - 1.0f;
        float z = x * x;
        float p = 7.0376836292E-2f;
        p = fmaf(p, x, -1.1514610310E-1f);
        p = fmaf(p, x, 1.1676998740E-1f);
        p = fmaf(p, x, -1.2420140846E-1f);
        p = fmaf(p, x, 1.4249322787E-1f);
        p = fmaf(p, x, -1.6668057665E-1f);
        p = fmaf(p, x, 2.0000714765E-1f);
        p = fmaf(p, x, -2.4999993993E-1f);
        p = fmaf(p, x, 3.3333331174E-1f);
        float y = (p * x) * z;
        float fe = (float)e;
        y = fmaf(-0.5f, z, y);
        y = fmaf(fe, -2.12194440E-4f, y);
        y = x + y;
        y = fmaf(fe, 0.693359375f, y);
        return y;
    }

    /* Box-Muller on one pair of words, float32: g0 = r cos(t), g1 = r sin(t) with
       u = float(wu) * 2^-32 + 2^-33 in (0, 1], r = sqrt(-2 ln u), t = 2 pi wa / 2^32.
       The angle is reduced exactly in integers: quadrant q = ((wa + 2^29) >> 30) & 3,
       residual s = (int32)(wa - q * 2^30), x = float(s) * (2 pi / 2^32) in [-pi/4, pi/4),
       sin/cos of x by Cephes polynomials, then rotated by q quarter turns. */
    static inline void sk_gauss_pair(uint32_t wu, uint32_t wa, float* g0, float* g1) {
        float u = fmaf((float)wu, 2.3283064365386963e-10f, 1.16415321826934814e-10f);
        float r = sqrtf(-2.0f * sk_logf(u));
        uint32_t q = (wa + 0x20000000u) >> 30;
        int32_t s = (int32_t)(wa - (q << 30));
        float x = (float)s * 1.46291807926715968e-9f;
        float z = x * x;
        float sp = fmaf(fmaf(-1.9515295891E-4f, z, 8.3321608736E-3f), z, -1.6666654611E-1f);
        float sn = fmaf(sp * z, x, x);
        float cp = fmaf(fmaf(2.443315711809948E-5f, z, -1.388731625493765E-3f), z,
                        4.166664568298827E-2f);
        float cs = fmaf(cp * z, z, fmaf(-0.5f, z, 1.0f));
        float c = (q & 1u) ? -sn : cs;
        float sv = (q & 1u) ? cs : sn;
        c = (q & 2u) ? -c : c;
        sv = (q & 2u) ? -sv : sv;
        *g0 = r * c;
        *g1 = r * sv;
    }

    static inline void sk_philox_rounds(uint32_t* c0, uint32_t* c1, uint32_t* c2, uint32_t* c3,
                                        uint32_t k0, uint32_t k1) {
        uint32_t a0 = *c0, a1 = *c1, a2 = *c2, a3 = *c3;
        #pragma GCC unroll 10
        for (int r = 0; r < 10; r++) {
            uint64_t p0 = (uint64_t)0xD2511F53u * a0, p1 = (uint64_t)0xCD9E8D57u * a2;
            uint32_t n0 = (uint32_t)(p1 >> 32) ^ a1 ^ k0;
            uint32_t n2 = (uint32_t)(p0 >> 32) ^ a3 ^ k1;
            a1 = (uint32_t)p1; a3 = (uint32_t)p0; a0 = n0; a2 = n2;
            k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
        }
        *c0 = a0; *c1 = a1; *c2 = a2; *c3 = a3;
    }

    /* Words of SK_NB consecutive counters blk0 .. blk0 + SK_NB - 1, structure of arrays:
       word k of counter blk0 + b goes to w[k * SK_NB + b] (the loop vectorises). */
    static inline void sk_philox_soa(uint64_t seed, uint64_t stream, uint64_t blk0,
                                     uint32_t* __restrict w) {
        uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
        uint32_t s0 = (uint32_t)stream, s1 = (uint32_t)(stream >> 32);
        for (int b = 0; b < SK_NB; b++) {
            uint64_t blk = blk0 + (uint64_t)b;
            uint32_t c0 = (uint32_t)blk, c1 = (uint32_t)(blk >> 32), c2 = s0, c3 = s1;
            sk_philox_rounds(&c0, &c1, &c2, &c3, k0, k1);
            w[b] = c0; w[SK_NB + b] = c1; w[2 * SK_NB + b] = c2; w[3 * SK_NB + b] = c3;
        }
    }

    /* Gaussian entry `index` of a stream (the definition): counter index >> 2; entries
       4c, 4c+1 are (cos, sin) of words (0, 1), entries 4c+2, 4c+3 of words (2, 3). */
    static inline float sk_gauss_entry(uint64_t seed, uint64_t stream, uint64_t index) {
        uint64_t blk = index >> 2;
        uint32_t c0 = (uint32_t)blk, c1 = (uint32_t)(blk >> 32);
        uint32_t c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
        float g0, g1;
        sk_philox_rounds(&c0, &c1, &c2, &c3, (uint32_t)seed, (uint32_t)(seed >> 32));
        if (index & 2) sk_gauss_pair(c2, c3, &g0, &g1);
        else sk_gauss_pair(c0, c1, &g0, &g1);
        return (index & 1) ? g1 : g0;
    }

    /* One batch: the 4 * SK_NB Gaussian entries of counters blk0 .. blk0 + SK_NB - 1,
       in index order, into out[0 .. 4 * SK_NB). */
    static inline void sk_gauss_batch(uint64_t seed, uint64_t stream, uint64_t blk0,
                                      float* __restrict out) {
        uint32_t w[4 * SK_NB];
        float g[4 * SK_NB];
        sk_philox_soa(seed, stream, blk0, w);
        for (int b = 0; b < SK_NB; b++)
            sk_gauss_pair(w[b], w[SK_NB + b], &g[b], &g[SK_NB + b]);
        for (int b = 0; b < SK_NB; b++)
            sk_gauss_pair(w[2 * SK_NB + b], w[3 * SK_NB + b], &g[2 * SK_NB + b], &g[3 * SK_NB + b]);
        for (int b = 0; b < SK_NB; b++) {
            out[4 * b] = g[b]; out[4 * b + 1] = g[SK_NB + b];
            out[4 * b + 2] = g[2 * SK_NB + b]; out[4 * b + 3] = g[3 * SK_NB + b];
        }
    }

    /* One batch of 4 * SK_NB signs (+1.0f / -1.0f from each word's top bit), index order. */
    static inline void sk_sign_batch(uint64_t seed, uint64_t stream, uint64_t blk0,
                                     float* __restrict out) {
        uint32_t w[4 * SK_NB];
        sk_philox_soa(seed, stream, blk0, w);
        for (int b = 0; b < SK_NB; b++) {
            out[4 * b] = (w[b] >> 31) ? -1.0f : 1.0f;
            out[4 * b + 1] = (w[SK_NB + b] >> 31) ? -1.0f : 1.0f;
            out[4 * b + 2] = (w[2 * SK_NB + b] >> 31) ? -1.0f : 1.0f;
            out[4 * b + 3] = (w[3 * SK_NB + b] >> 31) ? -1.0f : 1.0f;
        }
    }

    /* out[i] = entry (start + i), i < count, for kind 0 = Gaussian, 1 = sign (+-1).
       Whole batches go through the vectorised path; ragged ends are cut from a batch. */
    static inline void sk_fill_run(int kind, uint64_t seed, uint64_t stream, uint64_t start,
                                   int64_t count, float* __restrict out) {
        float buf[4 * SK_NB];
        const int64_t per = 4 * SK_NB;
        while (count > 0) {
            uint64_t off = start % (uint64_t)per;
            int64_t take = per - (int64_t)off;
            if (take > count) take = count;
            uint64_t blk0 = (start - off) >> 2;
            if (off == 0 && take == per) {
                if (kind == 0) sk_gauss_batch(seed, stream, blk0, out);
                else sk_sign_batch(seed, stream, blk0, out);
            } else {
                if (kind == 0) sk_gauss_batch(seed, stream, blk0, buf);
                else sk_sign_batch(seed, stream, blk0, buf);
                memcpy(out, buf + off, (size_t)take * sizeof(float));
            }
            out += take; start += (uint64_t)take; count -= take;
        }
    }
    """
    enum: SK_NB
    void sk_philox_soa(uint64_t seed, uint64_t stream, uint64_t blk0, uint32_t* w) noexcept nogil
    void sk_gauss_pair(uint32_t wu, uint32_t wa, float* g0, float* g1) noexcept nogil
    float sk_gauss_entry(uint64_t seed, uint64_t stream, uint64_t index) noexcept nogil
    void sk_fill_run(int kind, uint64_t seed, uint64_t stream, uint64_t start,
                     long long count, float* out) noexcept nogil


cdef inline double philox_gaussian(uint64_t seed, uint64_t stream, uint64_t index) noexcept nogil:
    """Gaussian entry ``index`` (float32 formula of ``sk_gauss_entry``, widened exactly):
    counter ``index // 4``; entries 4c, 4c+1 are the cos/sin Box-Muller pair of words 0, 1,
    entries 4c+2, 4c+3 the pair of words 2, 3."""
    return <double>sk_gauss_entry(seed, stream, index)
