// Shared device helpers for every sketchcore kernel: fixed-width types, float16/bfloat16
// storage with conversions, and Philox4x32-10 identical to sketchcore/_cpu/_philox.pxd.
//
// No CUDA headers are included on purpose: NVRTC then needs nothing but itself, so the
// kernels compile on machines without a CUDA toolkit (CI compiles them with no GPU).
#pragma once

typedef unsigned int sc_u32;
typedef unsigned long long sc_u64;
typedef long long sc_i64;

// float16 and bfloat16 travel as raw 16-bit storage; arithmetic happens in float.
struct sc_half { unsigned short x; };
struct sc_bf16 { unsigned short x; };

template <class T> struct sc_acc { typedef float type; };
template <> struct sc_acc<double> { typedef double type; };

__device__ __forceinline__ float sc_to_float(float v) { return v; }
__device__ __forceinline__ double sc_to_float(double v) { return v; }
__device__ __forceinline__ float sc_to_float(sc_half v) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.x));
    return f;
}
__device__ __forceinline__ float sc_to_float(sc_bf16 v) {
    return __uint_as_float(((sc_u32)v.x) << 16);
}

template <class T> __device__ __forceinline__ T sc_from(double v);
template <> __device__ __forceinline__ float sc_from<float>(double v) { return (float)v; }
template <> __device__ __forceinline__ double sc_from<double>(double v) { return v; }
template <class T> __device__ __forceinline__ T sc_from_f(float v);
template <> __device__ __forceinline__ float sc_from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ double sc_from_f<double>(float v) { return v; }
template <> __device__ __forceinline__ sc_half sc_from_f<sc_half>(float v) {
    sc_half h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h.x) : "f"(v));
    return h;
}
template <> __device__ __forceinline__ sc_bf16 sc_from_f<sc_bf16>(float v) {
    // Round to nearest even, like torch's float -> bfloat16; NaN stays a (quiet) NaN.
    sc_u32 u = __float_as_uint(v);
    sc_bf16 b;
    if ((u & 0x7fffffffu) > 0x7f800000u) {
        b.x = (unsigned short)((u >> 16) | 0x40u);
    } else {
        u += 0x7fffu + ((u >> 16) & 1u);
        b.x = (unsigned short)(u >> 16);
    }
    return b;
}
template <> __device__ __forceinline__ sc_half sc_from<sc_half>(double v) { return sc_from_f<sc_half>((float)v); }
template <> __device__ __forceinline__ sc_bf16 sc_from<sc_bf16>(double v) { return sc_from_f<sc_bf16>((float)v); }

// Store an accumulator value (float or double) into any storage type.
__device__ __forceinline__ void sc_store(float* p, float v) { *p = v; }
__device__ __forceinline__ void sc_store(float* p, double v) { *p = (float)v; }
__device__ __forceinline__ void sc_store(double* p, double v) { *p = v; }
__device__ __forceinline__ void sc_store(double* p, float v) { *p = (double)v; }
__device__ __forceinline__ void sc_store(sc_half* p, float v) { *p = sc_from_f<sc_half>(v); }
__device__ __forceinline__ void sc_store(sc_bf16* p, float v) { *p = sc_from_f<sc_bf16>(v); }

// ---------------------------------------------------------------------------------------
// Philox4x32-10 (Salmon et al., SC'11). counter = (block lo, block hi, stream lo, stream hi),
// key = (seed lo, seed hi). Same rounds, same word order as the CPU's _philox.pxd.
#define SC_PHILOX_M0 0xD2511F53u
#define SC_PHILOX_M1 0xCD9E8D57u
#define SC_PHILOX_W0 0x9E3779B9u
#define SC_PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ void sc_philox10(sc_u32& c0, sc_u32& c1, sc_u32& c2, sc_u32& c3,
                                            sc_u32 k0, sc_u32 k1) {
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        const sc_u32 hi0 = __umulhi(SC_PHILOX_M0, c0), lo0 = SC_PHILOX_M0 * c0;
        const sc_u32 hi1 = __umulhi(SC_PHILOX_M1, c2), lo1 = SC_PHILOX_M1 * c2;
        const sc_u32 n0 = hi1 ^ c1 ^ k0;
        const sc_u32 n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
        k0 += SC_PHILOX_W0;
        k1 += SC_PHILOX_W1;
    }
}

struct sc_words { sc_u32 w[4]; };

__device__ __forceinline__ sc_words sc_philox_block(sc_u64 seed, sc_u64 stream, sc_u64 block) {
    sc_u32 c0 = (sc_u32)block, c1 = (sc_u32)(block >> 32);
    sc_u32 c2 = (sc_u32)stream, c3 = (sc_u32)(stream >> 32);
    sc_philox10(c0, c1, c2, c3, (sc_u32)seed, (sc_u32)(seed >> 32));
    sc_words r;
    r.w[0] = c0; r.w[1] = c1; r.w[2] = c2; r.w[3] = c3;
    return r;
}

__device__ __forceinline__ sc_u32 sc_pick(const sc_words& b, sc_u32 i) {
    // Select without a run-time indexed register array (which would go to local memory).
    return i == 0 ? b.w[0] : (i == 1 ? b.w[1] : (i == 2 ? b.w[2] : b.w[3]));
}

__device__ __forceinline__ sc_u32 sc_philox_word(sc_u64 seed, sc_u64 stream, sc_u64 index) {
    return sc_pick(sc_philox_block(seed, stream, index >> 2), (sc_u32)(index & 3));
}

__device__ __forceinline__ double sc_u32_to_open01(sc_u32 w) {
    return ((double)w + 1.0) * 2.3283064365386963e-10;   // 2**-32, never 0
}

// Gaussian entries: the float32 Box-Muller of sketchcore/_cpu/_philox.pxd (sk_logf,
// sk_gauss_pair) operation for operation. Every multiply-add there is an explicit fmaf and the
// module is compiled with --fmad=false, so no other contraction happens and the values are
// the CPU's bit for bit (sqrtf is correctly rounded on both sides).
__device__ __forceinline__ float sc_logf(float u) {
    const sc_u32 b = __float_as_uint(u);
    int e = (int)(b >> 23) - 127;
    float m = __uint_as_float((b & 0x7FFFFFu) | 0x3F800000u);
    const bool big = m > 1.41421356f;
    m = big ? m * 0.5f : m;
    e = big ? e + 1 : e;
    const float x = m - 1.0f;
    const float z = x * x;
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
    const float fe = (float)e;
    y = fmaf(-0.5f, z, y);
    y = fmaf(fe, -2.12194440E-4f, y);
    y = x + y;
    y = fmaf(fe, 0.693359375f, y);
    return y;
}

__device__ __forceinline__ void sc_gauss_pair(sc_u32 wu, sc_u32 wa, float& g0, float& g1) {
    const float u = fmaf((float)wu, 2.3283064365386963e-10f, 1.16415321826934814e-10f);
    const float r = sqrtf(-2.0f * sc_logf(u));
    const sc_u32 q = (wa + 0x20000000u) >> 30;
    const int s = (int)(wa - (q << 30));
    const float x = (float)s * 1.46291807926715968e-9f;
    const float z = x * x;
    const float sp = fmaf(fmaf(-1.9515295891E-4f, z, 8.3321608736E-3f), z, -1.6666654611E-1f);
    const float sn = fmaf(sp * z, x, x);
    const float cp = fmaf(fmaf(2.443315711809948E-5f, z, -1.388731625493765E-3f), z,
                          4.166664568298827E-2f);
    const float cs = fmaf(cp * z, z, fmaf(-0.5f, z, 1.0f));
    float c = (q & 1u) ? -sn : cs;
    float sv = (q & 1u) ? cs : sn;
    c = (q & 2u) ? -c : c;
    sv = (q & 2u) ? -sv : sv;
    g0 = r * c;
    g1 = r * sv;
}

// Gaussian entry `index`: counter index >> 2; entries 4c, 4c+1 are (cos, sin) of words
// (0, 1), entries 4c+2, 4c+3 of words (2, 3). Returned as the exact float32 value.
__device__ __forceinline__ float sc_philox_gaussian(sc_u64 seed, sc_u64 stream, sc_u64 index) {
    const sc_words b = sc_philox_block(seed, stream, index >> 2);
    float g0, g1;
    if (index & 2) sc_gauss_pair(b.w[2], b.w[3], g0, g1);
    else sc_gauss_pair(b.w[0], b.w[1], g0, g1);
    return (index & 1) ? g1 : g0;
}

// Operand modes of the tiled kernels: read memory, or generate an operator entry on the fly.
#define SC_MODE_MEMORY 0
#define SC_MODE_SIGN 1
#define SC_MODE_GAUSSIAN 2

template <class Acc>
__device__ __forceinline__ Acc sc_generated(int mode, sc_u64 seed, sc_u64 stream, sc_u64 index,
                                            double scale) {
    if (mode == SC_MODE_SIGN) {
        return (Acc)((sc_philox_word(seed, stream, index) >> 31) ? -scale : scale);
    }
    return (Acc)(scale * (double)sc_philox_gaussian(seed, stream, index));
}
