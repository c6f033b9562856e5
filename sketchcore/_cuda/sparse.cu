// Sparse-sign / CountSketch apply: Y += S @ A for S of shape (d, m) with nnz nonzeros per
// column (sketchcore contracts: block t of column j from philox_block(seed, stream, j*nnz + t)).
//
// Operands are addressed through (row, column) strides, so the same kernels serve S @ A
// (A of shape (m, n)) and A @ S.T (pass A.T's strides and Y.T's strides).
//
// sc_sparse_apply_smem: a block owns `tn` columns of Y for all d rows in shared memory and
// streams a range of A's rows through it (shared-memory atomics, cheap), then adds its tile
// to Y with one global atomic per nonzero entry. Row hashes are computed once per chunk of
// rows and shared by the block's threads.
// sc_sparse_apply_atomic: for d too large for shared memory; one warp per row of A, global
// atomics.
#include "common.cuh"

__device__ __forceinline__ int sc_sparse_hash(sc_u64 seed, sc_u64 stream, sc_i64 j, int t, int d,
                                              int nnz) {
    const sc_words w = sc_philox_block(seed, stream, (sc_u64)j * (sc_u64)nnz + (sc_u64)t);
    const int lo = (int)(((sc_i64)t * d) / nnz);
    const int hi = (int)(((sc_i64)(t + 1) * d) / nnz);
    const int row = lo + (int)(((sc_u64)w.w[0] * (sc_u64)(hi - lo)) >> 32);
    return row | (int)(w.w[1] & 0x80000000u);   // sign in the top bit
}

#define SC_SPARSE_CHUNK 128

template <class T>
__global__ void sc_sparse_apply_smem(const T* A, sc_i64 m, sc_i64 n, sc_i64 saj, sc_i64 sac,
                                     int d, int nnz, sc_u64 seed, sc_u64 stream, double scale,
                                     T* Y, sc_i64 syr, sc_i64 syc, int tn,
                                     sc_i64 rows_per_block) {
    extern __shared__ __align__(16) unsigned char sc_smem[];
    T* acc = (T*)sc_smem;                                  // d x tn, row-major
    int* hrow = (int*)(acc + (sc_i64)d * tn);              // SC_SPARSE_CHUNK x nnz
    const sc_i64 c0 = (sc_i64)blockIdx.x * tn;
    const int ncols = (int)min((sc_i64)tn, n - c0);
    const int nthreads = blockDim.x, tid = threadIdx.x;
    const T sv = (T)scale;
    for (int e = tid; e < d * tn; e += nthreads) acc[e] = (T)0;
    const sc_i64 rbeg = (sc_i64)blockIdx.y * rows_per_block;
    const sc_i64 rend = min(m, rbeg + rows_per_block);
    const bool cfast = (sac == 1) || (saj != 1);
    for (sc_i64 r0 = rbeg; r0 < rend; r0 += SC_SPARSE_CHUNK) {
        const int cnt = (int)min((sc_i64)SC_SPARSE_CHUNK, rend - r0);
        __syncthreads();
        for (int e = tid; e < cnt * nnz; e += nthreads)
            hrow[e] = sc_sparse_hash(seed, stream, r0 + e / nnz, e % nnz, d, nnz);
        __syncthreads();
        for (int e = tid; e < cnt * tn; e += nthreads) {
            int rr, cc;
            if (cfast) { rr = e / tn; cc = e % tn; } else { cc = e / cnt; rr = e % cnt; }
            if (cc >= ncols) continue;
            const T a = A[(r0 + rr) * saj + (c0 + cc) * sac];
            const T va = sv * a;
            for (int t = 0; t < nnz; ++t) {
                const int h = hrow[rr * nnz + t];
                atomicAdd(&acc[(h & 0x7fffffff) * tn + cc], h < 0 ? -va : va);
            }
        }
    }
    __syncthreads();
    const bool yc = (syc == 1) || (syr != 1);
    for (int e = tid; e < d * ncols; e += nthreads) {
        int row, cc;
        if (yc) { row = e / ncols; cc = e % ncols; } else { cc = e / d; row = e % d; }
        const T v = acc[row * tn + cc];
        if (v != (T)0) atomicAdd(&Y[row * syr + (c0 + cc) * syc], v);
    }
}

template <class T>
__global__ void sc_sparse_apply_atomic(const T* A, sc_i64 m, sc_i64 n, sc_i64 saj, sc_i64 sac,
                                       int d, int nnz, sc_u64 seed, sc_u64 stream, double scale,
                                       T* Y, sc_i64 syr, sc_i64 syc) {
    const int lane = threadIdx.x & 31;
    const sc_i64 warp = ((sc_i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const sc_i64 nwarps = ((sc_i64)gridDim.x * blockDim.x) >> 5;
    const T sv = (T)scale;
    for (sc_i64 j = warp; j < m; j += nwarps) {
        for (int t0 = 0; t0 < nnz; t0 += 32) {
            const int cnt = min(32, nnz - t0);
            const int mine = lane < cnt ? sc_sparse_hash(seed, stream, j, t0 + lane, d, nnz) : 0;
            for (sc_i64 c0 = 0; c0 < n; c0 += 32) {   // whole warp per iteration (shuffles)
                const sc_i64 c = c0 + lane;
                const bool on = c < n;
                const T va = on ? sv * A[j * saj + c * sac] : (T)0;
                for (int tt = 0; tt < cnt; ++tt) {
                    const int h = __shfl_sync(0xffffffffu, mine, tt);
                    if (on)
                        atomicAdd(&Y[(sc_i64)(h & 0x7fffffff) * syr + c * syc], h < 0 ? -va : va);
                }
            }
        }
    }
}

// Row-major A (m, n) and Y (d, n), n % 4 == 0, 16-byte aligned rows: one warp per row of A
// reads it as float4 and adds it into its nnz rows of Y with vector reductions
// (red.global.add.v4.f32 on sm_90, four scalar atomics elsewhere). Y stays in L2 for the
// usual sketch sizes, so the reductions never go to DRAM; A is read exactly once.
__device__ __forceinline__ void sc_red4(float* p, float a, float b, float c, float d) {
#if __CUDA_ARCH__ >= 900
    asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};"
                 :: "l"(p), "f"(a), "f"(b), "f"(c), "f"(d) : "memory");
#else
    atomicAdd(p, a); atomicAdd(p + 1, b); atomicAdd(p + 2, c); atomicAdd(p + 3, d);
#endif
}

extern "C" __global__ void sc_sparse_apply_red(const float* A, sc_i64 m, sc_i64 n, sc_i64 lda,
                                               int d, int nnz, sc_u64 seed, sc_u64 stream,
                                               double scale, float* Y, sc_i64 ldy) {
    const int lane = threadIdx.x & 31;
    const sc_i64 warp = ((sc_i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const sc_i64 nwarps = ((sc_i64)gridDim.x * blockDim.x) >> 5;
    const float sv = (float)scale;
    for (sc_i64 j = warp; j < m; j += nwarps) {
        for (int t0 = 0; t0 < nnz; t0 += 32) {
            const int cnt = min(32, nnz - t0);
            const int mine = lane < cnt ? sc_sparse_hash(seed, stream, j, t0 + lane, d, nnz) : 0;
            // Every lane runs every iteration (the shuffles need the whole warp).
            for (sc_i64 c0 = 0; c0 < n; c0 += 128) {
                const sc_i64 c = c0 + 4 * lane;
                const bool on = c < n;
                float4 a = make_float4(0.f, 0.f, 0.f, 0.f);
                if (on) a = *reinterpret_cast<const float4*>(A + j * lda + c);
                const float x = sv * a.x, y = sv * a.y, z = sv * a.z, w = sv * a.w;
                for (int tt = 0; tt < cnt; ++tt) {
                    const int h = __shfl_sync(0xffffffffu, mine, tt);
                    float* dst = Y + (sc_i64)(h & 0x7fffffff) * ldy + c;
                    if (!on) continue;
                    if (h < 0) sc_red4(dst, -x, -y, -z, -w);
                    else sc_red4(dst, x, y, z, w);
                }
            }
        }
    }
}

// float64 twin of sc_sparse_apply_red (row-major A and Y, n even, 16-byte aligned rows):
// one warp per row of A read as double2, two native double atomics per nonzero and element
// pair (sm_60+). Replaces the shared-memory kernel, whose double atomics are CAS loops.
extern "C" __global__ void sc_sparse_apply_red64(const double* A, sc_i64 m, sc_i64 n,
                                                 sc_i64 lda, int d, int nnz, sc_u64 seed,
                                                 sc_u64 stream, double scale, double* Y,
                                                 sc_i64 ldy) {
    const int lane = threadIdx.x & 31;
    const sc_i64 warp = ((sc_i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const sc_i64 nwarps = ((sc_i64)gridDim.x * blockDim.x) >> 5;
    for (sc_i64 j = warp; j < m; j += nwarps) {
        for (int t0 = 0; t0 < nnz; t0 += 32) {
            const int cnt = min(32, nnz - t0);
            const int mine = lane < cnt ? sc_sparse_hash(seed, stream, j, t0 + lane, d, nnz) : 0;
            for (sc_i64 c0 = 0; c0 < n; c0 += 64) {   // whole warp per iteration (shuffles)
                const sc_i64 c = c0 + 2 * lane;
                const bool on = c < n;
                double2 a = make_double2(0.0, 0.0);
                if (on) a = *reinterpret_cast<const double2*>(A + j * lda + c);
                const double x = scale * a.x, y = scale * a.y;
                for (int tt = 0; tt < cnt; ++tt) {
                    const int h = __shfl_sync(0xffffffffu, mine, tt);
                    double* dst = Y + (sc_i64)(h & 0x7fffffff) * ldy + c;
                    if (!on) continue;
                    atomicAdd(dst, h < 0 ? -x : x);
                    atomicAdd(dst + 1, h < 0 ? -y : y);
                }
            }
        }
    }
}

// Dense S (d, m) of a sparse-sign operator, written into a zeroed row-major array.
template <class T>
__global__ void sc_sparse_dense(int d, sc_i64 m, int nnz, sc_u64 seed, sc_u64 stream,
                                double scale, T* S) {
    const sc_i64 total = m * nnz;
    for (sc_i64 e = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; e < total;
         e += (sc_i64)gridDim.x * blockDim.x) {
        const sc_i64 j = e / nnz;
        const int t = (int)(e % nnz);
        const int h = sc_sparse_hash(seed, stream, j, t, d, nnz);
        S[(sc_i64)(h & 0x7fffffff) * m + j] = sc_from<T>(h < 0 ? -scale : scale);
    }
}

// Rows and signs (+-1.0) of the nonzeros of columns j0 .. j0+nj-1: entry e = (j - j0)*nnz + t.
extern "C" __global__ void sc_sparse_indices(sc_i64 j0, sc_i64 nj, int d, int nnz, sc_u64 seed,
                                             sc_u64 stream, int* rows, double* signs) {
    const sc_i64 total = nj * nnz;
    for (sc_i64 e = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; e < total;
         e += (sc_i64)gridDim.x * blockDim.x) {
        const int h = sc_sparse_hash(seed, stream, j0 + e / nnz, (int)(e % nnz), d, nnz);
        rows[e] = h & 0x7fffffff;
        signs[e] = h < 0 ? -1.0 : 1.0;
    }
}
