// Tiled matrix product C = alpha * A @ B (+ bias) accumulating in float (double for double).
//
// Each operand is either strided memory or an operator generated on the fly from Philox
// (SC_MODE_SIGN / SC_MODE_GAUSSIAN): a generated entry (i, k) is entry i*s_i + k*s_k of the
// row-major operator, so Gaussian and sign sketches are applied tile by tile and the dense
// operator never exists in memory. Strides make transposes free (no copies of A.T).
//
// Bounds are checked element by element: exact for every shape (no multiple-of-16 rule).
// Split-K (gridDim.z > 1) adds partial products atomically into a float/double workspace W;
// sc_gemm_finalize then adds the bias and converts to the output type.
#include "common.cuh"

#define SC_GEMM_THREADS 256

template <class T, class Acc>
__device__ __forceinline__ Acc sc_fetch(const T* p, sc_i64 off, int mode, sc_u64 seed,
                                        sc_u64 stream, double scale) {
    if (mode == SC_MODE_MEMORY) return (Acc)sc_to_float(p[off]);
    return sc_generated<Acc>(mode, seed, stream, (sc_u64)off, scale);
}

// Entries 4 block .. 4 block + 3 of a generated operator, each exactly as sc_fetch gives
// it: one Philox block (and two Box-Muller pairs) for four entries, where sc_fetch
// computes the block, and a pair, for each entry.
template <class Acc>
__device__ __forceinline__ void sc_generated4(int mode, sc_u64 seed, sc_u64 stream,
                                              sc_u64 block, double scale, Acc* v) {
    const sc_words w = sc_philox_block(seed, stream, block);
    if (mode == SC_MODE_SIGN) {
#pragma unroll
        for (int q = 0; q < 4; ++q) v[q] = (Acc)((w.w[q] >> 31) ? -scale : scale);
    } else {
        float g[4];
        sc_gauss_pair(w.w[0], w.w[1], g[0], g[1]);
        sc_gauss_pair(w.w[2], w.w[3], g[2], g[3]);
#pragma unroll
        for (int q = 0; q < 4; ++q) v[q] = (Acc)(scale * (double)g[q]);
    }
}

// Four consecutive elements from a 4-element-aligned address, widened to Acc.
__device__ __forceinline__ void sc_load4(const float* p, float* v) {
    const float4 q = *reinterpret_cast<const float4*>(p);
    v[0] = q.x; v[1] = q.y; v[2] = q.z; v[3] = q.w;
}
__device__ __forceinline__ void sc_load4(const double* p, double* v) {
    const double2 a = reinterpret_cast<const double2*>(p)[0];
    const double2 b = reinterpret_cast<const double2*>(p)[1];
    v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
}
template <class T>
__device__ __forceinline__ void sc_load4_16(const T* p, float* v) {
    const uint2 q = *reinterpret_cast<const uint2*>(p);
    T h;
    h.x = (unsigned short)(q.x & 0xffffu); v[0] = sc_to_float(h);
    h.x = (unsigned short)(q.x >> 16);     v[1] = sc_to_float(h);
    h.x = (unsigned short)(q.y & 0xffffu); v[2] = sc_to_float(h);
    h.x = (unsigned short)(q.y >> 16);     v[3] = sc_to_float(h);
}
__device__ __forceinline__ void sc_load4(const sc_half* p, float* v) { sc_load4_16(p, v); }
__device__ __forceinline__ void sc_load4(const sc_bf16* p, float* v) { sc_load4_16(p, v); }

template <class T>
__device__ __forceinline__ bool sc_aligned4(const T* p) {
    return (reinterpret_cast<sc_u64>(p) & (4 * sizeof(T) - 1)) == 0;
}

// Rows r0 .. r0 + R - 1 (those below rmax) of an operand tile with unit stride along k into
// shared memory, transposed to S[k * P + r]: four consecutive entries a thread, from memory
// (16 bytes a load where aligned and in bounds, else element by element) or, GENERATED, from
// a generated operator along its rows (both sketch applies: one Philox block for four
// entries where they fill one, the operator's row length a multiple of 4, else entry by
// entry).
template <class T, class Acc, int R, int BK, bool GENERATED>
__device__ __forceinline__ void sc_load_rows4(Acc* S, const T* ptr, sc_i64 s_r, sc_i64 r0,
                                              sc_i64 rmax, int k0, int kend, int mode,
                                              sc_u64 seed, sc_u64 stream, double scale) {
    constexpr int P = R + 4, KV = BK / 4;
    for (int e = threadIdx.x; e < R * KV; e += SC_GEMM_THREADS) {
        const int r = e / KV, k = (e % KV) * 4;
        const sc_i64 gr = r0 + r;
        const int gk = k0 + k;
        Acc v[4] = {(Acc)0, (Acc)0, (Acc)0, (Acc)0};
        if (gr < rmax) {
            if constexpr (GENERATED) {
                const sc_u64 index = (sc_u64)(gr * s_r + gk);
                if ((index & 3) == 0 && gk + 4 <= kend) {
                    sc_generated4<Acc>(mode, seed, stream, index >> 2, scale, v);
                } else {
#pragma unroll
                    for (int q = 0; q < 4; ++q)
                        if (gk + q < kend)
                            v[q] = sc_generated<Acc>(mode, seed, stream, index + q, scale);
                }
            } else {
                const T* p = ptr + gr * s_r + gk;
                if (gk + 4 <= kend && sc_aligned4(p)) {
                    sc_load4(p, v);
                } else {
#pragma unroll
                    for (int q = 0; q < 4; ++q)
                        if (gk + q < kend) v[q] = (Acc)sc_to_float(p[q]);
                }
            }
        }
#pragma unroll
        for (int q = 0; q < 4; ++q) S[(k + q) * P + r] = v[q];
    }
}

// Operand tile into shared memory, transposed to S[k * P + r] (r < R, k < BK): element
// (r, k) of the operand is ptr[r * s_r + k * s_k] (or a generated entry of that index).
// Contiguous operands load 4 elements per access (16 bytes for float32) when aligned and in
// bounds; ragged edges and generated operands go element by element.
template <class T, class Acc, int R, int BK, bool GEN>
__device__ __forceinline__ void sc_load_tile(Acc* S, const T* ptr, sc_i64 s_r, sc_i64 s_k,
                                             sc_i64 r0, sc_i64 rmax, int k0, int kend, int mode,
                                             sc_u64 seed, sc_u64 stream, double scale) {
    constexpr int P = R + 4;
    if (mode == SC_MODE_MEMORY && s_k == 1) {
        sc_load_rows4<T, Acc, R, BK, false>(S, ptr, s_r, r0, rmax, k0, kend, mode, seed,
                                            stream, scale);
    } else if (mode == SC_MODE_MEMORY && s_r == 1) {
        constexpr int RV = R / 4;
        for (int e = threadIdx.x; e < RV * BK; e += SC_GEMM_THREADS) {
            const int k = e / RV, r = (e % RV) * 4;
            const sc_i64 gr = r0 + r;
            const int gk = k0 + k;
            Acc v[4] = {(Acc)0, (Acc)0, (Acc)0, (Acc)0};
            if (gk < kend) {
                const T* p = ptr + gr + (sc_i64)gk * s_k;
                if (gr + 4 <= rmax && sc_aligned4(p)) {
                    sc_load4(p, v);
                } else {
#pragma unroll
                    for (int q = 0; q < 4; ++q)
                        if (gr + q < rmax) v[q] = (Acc)sc_to_float(p[q]);
                }
            }
#pragma unroll
            for (int q = 0; q < 4; ++q) S[k * P + r + q] = v[q];
        }
    } else if (GEN && mode != SC_MODE_MEMORY && s_k == 1) {
        if constexpr (GEN)
            sc_load_rows4<T, Acc, R, BK, true>(S, ptr, s_r, r0, rmax, k0, kend, mode, seed,
                                               stream, scale);
    } else {
        for (int e = threadIdx.x; e < R * BK; e += SC_GEMM_THREADS) {
            const int r = e / BK, k = e % BK;
            const sc_i64 gr = r0 + r;
            const int gk = k0 + k;
            Acc v = (Acc)0;
            if (gr < rmax && gk < kend) {
                if constexpr (GEN)
                    v = sc_fetch<T, Acc>(ptr, gr * s_r + (sc_i64)gk * s_k, mode, seed, stream,
                                         scale);
                else
                    v = (Acc)sc_to_float(ptr[gr * s_r + (sc_i64)gk * s_k]);
            }
            S[k * P + r] = v;
        }
    }
}

// N consecutive shared-memory values into registers with the widest aligned accesses.
template <int N>
__device__ __forceinline__ void sc_lds(const float* p, float* v) {
    if constexpr (N % 4 == 0) {
#pragma unroll
        for (int q = 0; q < N; q += 4) {
            const float4 t = *reinterpret_cast<const float4*>(p + q);
            v[q] = t.x; v[q + 1] = t.y; v[q + 2] = t.z; v[q + 3] = t.w;
        }
    } else if constexpr (N % 2 == 0) {
#pragma unroll
        for (int q = 0; q < N; q += 2) {
            const float2 t = *reinterpret_cast<const float2*>(p + q);
            v[q] = t.x; v[q + 1] = t.y;
        }
    } else {
#pragma unroll
        for (int q = 0; q < N; ++q) v[q] = p[q];
    }
}
template <int N>
__device__ __forceinline__ void sc_lds(const double* p, double* v) {
    if constexpr (N % 2 == 0) {
#pragma unroll
        for (int q = 0; q < N; q += 2) {
            const double2 t = *reinterpret_cast<const double2*>(p + q);
            v[q] = t.x; v[q + 1] = t.y;
        }
    } else {
#pragma unroll
        for (int q = 0; q < N; ++q) v[q] = p[q];
    }
}

// GEN: whether an operand may be generated (operators); false keeps the Philox code, and its
// registers, out of the plain products.
// Tiles: BM x BN outputs per block of 256 threads (16 x 16), TM x TN per thread; K in steps
// of BK (32 for float accumulation, 16 for double to stay within 48 KiB of shared memory).
// C's element (i, j) is at C[i * ldc_r + j * ldc_c] (the same for W), so transposed outputs
// cost nothing.
template <class TA, class TB, class TC, class Acc, int BM, int BN, bool GEN>
__global__ void __launch_bounds__(SC_GEMM_THREADS) sc_gemm(
    int M, int N, int K,
    const TA* A, sc_i64 sam, sc_i64 sak, int amode, sc_u64 aseed, sc_u64 astream, double ascale,
    const TB* B, sc_i64 sbk, sc_i64 sbn, int bmode, sc_u64 bseed, sc_u64 bstream, double bscale,
    TC* C, sc_i64 ldc_r, sc_i64 ldc_c, Acc* W, double alpha, const TC* bias, int kchunk) {
    constexpr int TM = BM / 16, TN = BN / 16;
    constexpr int BK = sizeof(Acc) == 8 ? 16 : 32;
    constexpr int PA = BM + 4, PB = BN + 4;
    __shared__ __align__(16) Acc As[BK * PA];
    __shared__ __align__(16) Acc Bs[BK * PB];
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    const sc_i64 m0 = (sc_i64)blockIdx.x * BM;
    const sc_i64 n0 = (sc_i64)blockIdx.y * BN;
    const int kbeg = blockIdx.z * kchunk;
    const int kend = min(K, kbeg + kchunk);
    Acc acc[TM][TN];
#pragma unroll
    for (int r = 0; r < TM; ++r)
#pragma unroll
        for (int c = 0; c < TN; ++c) acc[r][c] = (Acc)0;

    for (int k0 = kbeg; k0 < kend; k0 += BK) {
        sc_load_tile<TA, Acc, BM, BK, GEN>(As, A, sam, sak, m0, M, k0, kend, amode, aseed,
                                           astream, ascale);
        sc_load_tile<TB, Acc, BN, BK, GEN>(Bs, B, sbn, sbk, n0, N, k0, kend, bmode, bseed,
                                           bstream, bscale);
        __syncthreads();
#pragma unroll 8
        for (int k = 0; k < BK; ++k) {
            Acc a[TM], b[TN];
            sc_lds<TM>(As + k * PA + ty * TM, a);
            sc_lds<TN>(Bs + k * PB + tx * TN, b);
#pragma unroll
            for (int r = 0; r < TM; ++r)
#pragma unroll
                for (int c = 0; c < TN; ++c) acc[r][c] = fma(a[r], b[c], acc[r][c]);
        }
        __syncthreads();
    }

    const Acc al = (Acc)alpha;
#pragma unroll
    for (int r = 0; r < TM; ++r) {
        const sc_i64 gi = m0 + ty * TM + r;
        if (gi >= M) continue;
#pragma unroll
        for (int c = 0; c < TN; ++c) {
            const sc_i64 gj = n0 + tx * TN + c;
            if (gj >= N) continue;
            Acc v = acc[r][c] * al;
            const sc_i64 off = gi * ldc_r + gj * ldc_c;
            if (W != nullptr) {
                atomicAdd(W + off, v);
            } else {
                if (bias != nullptr) v += (Acc)sc_to_float(bias[gj]);
                sc_store(C + off, v);
            }
        }
    }
}

// C[i, j] = W[i, j] (+ bias[j]) converted to the output type; W is the split-K workspace.
template <class TC, class Acc>
__global__ void sc_gemm_finalize(sc_i64 M, sc_i64 N, const Acc* W, sc_i64 ldw, TC* C,
                                 sc_i64 ldc, const TC* bias) {
    const sc_i64 total = M * N;
    for (sc_i64 e = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; e < total;
         e += (sc_i64)gridDim.x * blockDim.x) {
        const sc_i64 i = e / N, j = e % N;
        Acc v = W[i * ldw + j];
        if (bias != nullptr) v += (Acc)sc_to_float(bias[j]);
        sc_store(C + i * ldc + j, v);
    }
}

// Column sums of a (M, N) matrix into a float/double workspace (bias gradients).
template <class T, class Acc>
__global__ void sc_colsum(sc_i64 M, sc_i64 N, const T* X, sc_i64 ldx, Acc* out, sc_i64 rows_per_block) {
    const sc_i64 j = (sc_i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    const sc_i64 rbeg = (sc_i64)blockIdx.y * rows_per_block;
    const sc_i64 rend = min(M, rbeg + rows_per_block);
    Acc s = (Acc)0;
    for (sc_i64 i = rbeg; i < rend; ++i) s += (Acc)sc_to_float(X[i * ldx + j]);
    atomicAdd(out + j, s);
}

// Wide product with a short inner dimension: C (M, N) = alpha * P (M, R) @ B (R, N) (+ bias),
// R <= RMAX (32 or 64). Each thread owns COLS columns of C and keeps its columns of B in
// registers for the whole block; rows of P are staged in shared memory 32 at a time and
// read as broadcasts. Every row of C is written by consecutive threads (coalesced), and C,
// the big operand, is written exactly once.
template <class TC, class Acc, int RMAX, int COLS>
__global__ void __launch_bounds__(256) sc_wide(int M, int N, int R, const Acc* P, sc_i64 ldp,
                                              const Acc* B, sc_i64 sbk, sc_i64 sbn, TC* C,
                                              sc_i64 ldc, double alpha, const TC* bias,
                                              int rows_per_block) {
    __shared__ __align__(16) Acc Ps[32 * RMAX];
    Acc b[COLS][RMAX];
    sc_i64 col[COLS];
    TC bv[COLS];
#pragma unroll
    for (int c = 0; c < COLS; ++c) {
        col[c] = (sc_i64)blockIdx.x * (256 * COLS) + c * 256 + threadIdx.x;
#pragma unroll
        for (int k = 0; k < RMAX; ++k)
            b[c][k] = (col[c] < N && k < R) ? B[k * sbk + col[c] * sbn] : (Acc)0;
        bv[c] = (bias != nullptr && col[c] < N) ? bias[col[c]] : sc_from_f<TC>(0.0f);
    }
    const Acc al = (Acc)alpha;
    const sc_i64 rbeg = (sc_i64)blockIdx.y * rows_per_block;
    const sc_i64 rend = min((sc_i64)M, rbeg + rows_per_block);
    for (sc_i64 r0 = rbeg; r0 < rend; r0 += 32) {
        const int nrows = (int)min((sc_i64)32, rend - r0);
        __syncthreads();
        for (int e = threadIdx.x; e < 32 * RMAX; e += 256) {
            const int rr = e / RMAX, k = e % RMAX;
            Ps[e] = (rr < nrows && k < R) ? P[(r0 + rr) * ldp + k] : (Acc)0;
        }
        __syncthreads();
        for (int rr = 0; rr < nrows; rr += 4) {
            Acc acc[4][COLS];
#pragma unroll
            for (int q = 0; q < 4; ++q)
#pragma unroll
                for (int c = 0; c < COLS; ++c) acc[q][c] = (Acc)0;
#pragma unroll
            for (int k = 0; k < RMAX; k += 2) {
#pragma unroll
                for (int q = 0; q < 4; ++q) {
                    const Acc p0 = Ps[(rr + q) * RMAX + k], p1 = Ps[(rr + q) * RMAX + k + 1];
#pragma unroll
                    for (int c = 0; c < COLS; ++c) {
                        acc[q][c] = fma(p0, b[c][k], acc[q][c]);
                        acc[q][c] = fma(p1, b[c][k + 1], acc[q][c]);
                    }
                }
            }
#pragma unroll
            for (int q = 0; q < 4; ++q) {
                if (rr + q >= nrows) break;
#pragma unroll
                for (int c = 0; c < COLS; ++c) {
                    if (col[c] >= N) continue;
                    Acc v = acc[q][c] * al;
                    if (bias != nullptr) v += (Acc)sc_to_float(bv[c]);
                    sc_store(C + (r0 + rr + q) * ldc + col[c], v);
                }
            }
        }
    }
}
