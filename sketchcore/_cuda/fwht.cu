// Fast Walsh-Hadamard transform along axis 0 of a (p, n) array, in place, unnormalised
// (Sylvester ordering: y = H x with H[i, k] = (-1)^popcount(i & k)).
//
// A pass does L radix-2 stages: a block loads the 2^L rows base + r*h (r < 2^L) of a tile
// of columns, runs the butterflies, writes them back; the host chains passes with h = 1,
// 2^L1, 2^(L1+L2), ... until all log2(p) stages ran (_fwht.py). sc_fwht_tile does up to
// 10 stages a pass in registers; sc_fwht_pass, a shared-memory round trip and a barrier
// per stage, now serves only p <= 8; sc_fwht_select is the SRHT's last pass for its kept
// rows only.
#include "common.cuh"

template <class T>
__global__ void sc_fwht_pass(T* X, sc_i64 p, sc_i64 n, sc_i64 ldx, sc_i64 h, int L) {
    extern __shared__ __align__(16) unsigned char sc_smem[];
    T* s = (T*)sc_smem;                          // (1 << L) x 32
    const int R = 1 << L;
    const sc_i64 groups = p >> L;
    const int lane = threadIdx.x & 31, rsub = threadIdx.x >> 5, nr = blockDim.x >> 5;
    const sc_i64 c = (sc_i64)blockIdx.x * 32 + lane;
    for (sc_i64 g = blockIdx.y; g < groups; g += gridDim.y) {
        const sc_i64 low = g % h, high = g / h;
        const sc_i64 base = high * h * R + low;
        for (int r = rsub; r < R; r += nr)
            s[r * 32 + lane] = c < n ? X[(base + (sc_i64)r * h) * ldx + c] : (T)0;
        __syncthreads();
        for (int st = 0; st < L; ++st) {
            const int half = 1 << st;
            for (int e = threadIdx.x; e < (R >> 1) * 32; e += blockDim.x) {
                const int bf = e >> 5, cc = e & 31;
                const int lo = ((bf >> st) << (st + 1)) | (bf & (half - 1));
                const int hi = lo + half;
                const T a = s[lo * 32 + cc], b = s[hi * 32 + cc];
                s[lo * 32 + cc] = a + b;
                s[hi * 32 + cc] = a - b;
            }
            __syncthreads();
        }
        if (c < n)
            for (int r = rsub; r < R; r += nr) X[(base + (sc_i64)r * h) * ldx + c] = s[r * 32 + lane];
        __syncthreads();
    }
}

// In-register FWHT of 2^B values (Sylvester order: v[i] <- sum_k (-1)^popcount(i & k) v[k]).
template <class T, int B>
__device__ __forceinline__ void sc_fwht_regs(T (&v)[1 << B]) {
#pragma unroll
    for (int len = 1; len < (1 << B); len <<= 1) {
#pragma unroll
        for (int i = 0; i < (1 << B); ++i) {
            if (i & len) continue;
            const T a = v[i], b = v[i + len];
            v[i] = a + b;
            v[i + len] = a - b;
        }
    }
}

// sc_fwht_tile: one pass of A1 + A2 stages (the row index bits s .. s + A1 + A2 - 1, with
// h = 2^s) over tiles of R = 2^(A1 + A2) rows x TC columns (64-byte row pieces: 16 floats,
// 8 doubles), in registers: H_R = H_(2^A1) (x) H_(2^A2) is applied as two sets of
// in-register transforms with one exchange through shared memory between them, instead of
// a shared-memory round trip and a barrier per stage (the sc_fwht_pass above). Thread
// (c = t % TC, g = t / TC) first loads rows g + 2^A2 q (q < 2^A1) straight from global
// memory and transforms over q; after the exchange it transforms rows 2^A2 hi + q (q < 2^A2)
// for hi = g + 2^A2 j and writes them back. A warp's accesses are 64-byte pieces of
// consecutive rows (coalesced). In shared memory a row's parity is flipped by bit A2 of its
// index, so that the rows a warp touches at once alternate between the two halves of the
// banks in both phases. blockDim.x = 2^A2 TC, a multiple of 32.
// src: where the pass reads (X itself, or for the SRHT's first pass the (m, n) input with
// leading dimension lds, its rows times signs[row] and rows m .. p - 1 taken as zeros: the
// signed, padded copy is never written separately).
// Two blocks per multiprocessor: float tiles of 2^10 rows then fit 64 registers a thread.
template <class T, int A2> struct sc_fwht_threads {
    static constexpr int value = (64 / (int)sizeof(T)) << A2;
};

template <class T, int A1, int A2>
__global__ void __launch_bounds__(sc_fwht_threads<T, A2>::value, 2)
sc_fwht_tile(T* X, sc_i64 p, sc_i64 n, sc_i64 ldx, sc_i64 h, const T* src, sc_i64 lds,
             sc_i64 m, const T* signs) {
    constexpr int TC = 64 / sizeof(T), R = 1 << (A1 + A2), G = 1 << A2;
    extern __shared__ __align__(16) unsigned char sc_smem[];
    T* s = (T*)sc_smem;                                       // R x TC
    const int c = threadIdx.x % TC, g = threadIdx.x / TC;
    const sc_i64 col = (sc_i64)blockIdx.x * TC + c;
    const bool cok = col < n;
    const sc_i64 groups = p / R;
    for (sc_i64 grp = blockIdx.y; grp < groups; grp += gridDim.y) {
        const sc_i64 low = grp % h, high = grp / h;
        const sc_i64 row0 = high * h * R + low;                // the tile's row r: row0 + r h
        T* base = X + row0 * ldx + col;
        const sc_i64 step = h * ldx;                          // one row of the tile
        T v[1 << A1];
        {
            sc_i64 row = row0 + (sc_i64)g * h;
            const T* sp = src + row * lds + col;
#pragma unroll
            for (int q = 0; q < (1 << A1); ++q, row += (sc_i64)G * h, sp += (sc_i64)G * h * lds) {
                v[q] = cok && row < m ? *sp : (T)0;
                if (signs != nullptr && row < m) v[q] *= signs[row];
            }
        }
        sc_fwht_regs<T, A1>(v);
#pragma unroll
        for (int q = 0; q < (1 << A1); ++q) {
            const int row = g + G * q;
            s[(row ^ ((row >> A2) & 1)) * TC + c] = v[q];
        }
        __syncthreads();
#pragma unroll
        for (int j = 0; j < (1 << (A1 - A2)); ++j) {
            const int hi = g + G * j;
            T u[1 << A2];
#pragma unroll
            for (int q = 0; q < G; ++q) {
                const int row = hi * G + q;
                u[q] = s[(row ^ (hi & 1)) * TC + c];
            }
            sc_fwht_regs<T, A2>(u);
            if (cok) {
                T* dst = base + hi * G * step;
#pragma unroll
                for (int q = 0; q < G; ++q, dst += step) *dst = u[q];
            }
        }
        __syncthreads();
    }
}

// The last pass of an SRHT's transform for the kept rows only: Y[i, :] = scale *
// (H_R applied over rows low + r h, r < R = 2^LB, of X)[rsel], for kept row y = rows[i] =
// low + rsel h (h = p / R, so the pass's group is the one of y's low bits). Each kept row
// reads its group, R x n values, and nothing is written but Y: for d R <= p that is less
// than the full pass's read and write of X plus the gather of Y. Sums run in float64:
// 32 rows at a time pairwise (the butterflies' depth), the chunks compensated (Kahan), so
// the result is as accurate as the full transform's. One thread per column; grid (column
// blocks, kept rows). R >= 32.
template <class T>
__global__ void __launch_bounds__(256) sc_fwht_select(const T* X, sc_i64 n, sc_i64 ldx,
                                                      sc_i64 h, int LB, const sc_i64* rows,
                                                      sc_i64 d, double scale, T* Y, sc_i64 ldy) {
    const sc_i64 col = (sc_i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (col >= n) return;
    const int R = 1 << LB;                              // LB >= 5
    const sc_i64 step = h * ldx;
    for (sc_i64 i = blockIdx.y; i < d; i += gridDim.y) {
        const sc_i64 y = rows[i];
        const unsigned rsel = (unsigned)(y / h);
        const T* src = X + (y % h) * ldx + col;
        double sum = 0.0, comp = 0.0;
        for (int ch = 0; ch < R; ch += 32, src += 32 * step) {
            double v[32];
#pragma unroll
            for (int q = 0; q < 32; ++q) {
                const double x = (double)src[q * step];
                v[q] = (__popc(rsel & (unsigned)(ch + q)) & 1) ? -x : x;
            }
#pragma unroll
            for (int lv = 4; lv >= 0; --lv) {
#pragma unroll
                for (int q = 0; q < 16; ++q)
                    if (q < (1 << lv)) v[q] += v[q + (1 << lv)];
            }
            const double t = v[0] - comp, s = sum + t;     // Kahan
            comp = (s - sum) - t;
            sum = s;
        }
        Y[i * ldy + col] = (T)((T)sum * (T)scale);
    }
}
