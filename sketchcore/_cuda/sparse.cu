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

// Nonzero t of column j lies in band t of S's rows: rows sc_band_start(t) ..
// sc_band_start(t + 1) - 1; sc_sparse_band(row) is the band a row is in.
__device__ __forceinline__ int sc_band_start(int t, int d, int nnz) {
    return (int)(((sc_i64)t * d) / nnz);
}

__device__ __forceinline__ int sc_sparse_band(sc_i64 row, int d, int nnz) {
    return (int)(((row + 1) * nnz - 1) / d);
}

// Row of nonzero t of column j, with its sign in the top bit, given its band's first row
// and width (callers that hash many columns of one band compute those once: two 64-bit
// divisions cost more than the Philox block).
__device__ __forceinline__ int sc_sparse_hash_in_band(sc_u64 seed, sc_u64 stream, sc_i64 j,
                                                      int t, int nnz, int lo, sc_u64 width) {
    const sc_words w = sc_philox_block(seed, stream, (sc_u64)j * (sc_u64)nnz + (sc_u64)t);
    const int row = lo + (int)(((sc_u64)w.w[0] * width) >> 32);
    return row | (int)(w.w[1] & 0x80000000u);
}

__device__ __forceinline__ int sc_sparse_hash(sc_u64 seed, sc_u64 stream, sc_i64 j, int t, int d,
                                              int nnz) {
    const int lo = sc_band_start(t, d, nnz);
    return sc_sparse_hash_in_band(seed, stream, j, t, nnz, lo,
                                  (sc_u64)(sc_band_start(t + 1, d, nnz) - lo));
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

// Row-major A (m, n) and Y (d, n), 16-byte aligned rows, n a multiple of the 16-byte vector
// (4 floats, 2 doubles): one warp per row of A reads it in 16-byte vectors and adds it into
// its nnz rows of Y with reductions (float: red.global.add.v4.f32 on sm_90, four scalar
// atomics elsewhere; double: two native double atomics, sm_60+). Y stays in L2 for the
// usual sketch sizes, so the reductions never go to DRAM; A is read exactly once.
__device__ __forceinline__ void sc_red4(float* p, float a, float b, float c, float d) {
#if __CUDA_ARCH__ >= 900
    asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};"
                 :: "l"(p), "f"(a), "f"(b), "f"(c), "f"(d) : "memory");
#else
    atomicAdd(p, a); atomicAdd(p + 1, b); atomicAdd(p + 2, c); atomicAdd(p + 3, d);
#endif
}

template <class T> struct sc_red_vec;
template <> struct sc_red_vec<float> {
    static constexpr int W = 4;
    typedef float4 vec;
    static __device__ __forceinline__ vec scaled(vec a, float s) {
        return make_float4(s * a.x, s * a.y, s * a.z, s * a.w);
    }
    static __device__ __forceinline__ void add(float* p, vec v, bool negative) {
        if (negative) sc_red4(p, -v.x, -v.y, -v.z, -v.w);
        else sc_red4(p, v.x, v.y, v.z, v.w);
    }
};
template <> struct sc_red_vec<double> {
    static constexpr int W = 2;
    typedef double2 vec;
    static __device__ __forceinline__ vec scaled(vec a, double s) {
        return make_double2(s * a.x, s * a.y);
    }
    static __device__ __forceinline__ void add(double* p, vec v, bool negative) {
        atomicAdd(p, negative ? -v.x : v.x);
        atomicAdd(p + 1, negative ? -v.y : v.y);
    }
};

template <class T>
__global__ void sc_sparse_apply_red(const T* A, sc_i64 m, sc_i64 n, sc_i64 lda, int d, int nnz,
                                    sc_u64 seed, sc_u64 stream, double scale, T* Y,
                                    sc_i64 ldy) {
    typedef sc_red_vec<T> R;
    typedef typename R::vec vec;
    constexpr int W = R::W;
    const int lane = threadIdx.x & 31;
    const sc_i64 warp = ((sc_i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const sc_i64 nwarps = ((sc_i64)gridDim.x * blockDim.x) >> 5;
    const T sv = (T)scale;
    for (sc_i64 j = warp; j < m; j += nwarps) {
        for (int t0 = 0; t0 < nnz; t0 += 32) {
            const int cnt = min(32, nnz - t0);
            const int mine = lane < cnt ? sc_sparse_hash(seed, stream, j, t0 + lane, d, nnz) : 0;
            // Every lane runs every iteration (the shuffles need the whole warp).
            for (sc_i64 c0 = 0; c0 < n; c0 += 32 * W) {
                const sc_i64 c = c0 + W * lane;
                const bool on = c < n;
                vec a = {};
                if (on) a = R::scaled(*reinterpret_cast<const vec*>(A + j * lda + c), sv);
                for (int tt = 0; tt < cnt; ++tt) {
                    const int h = __shfl_sync(0xffffffffu, mine, tt);
                    if (on) R::add(Y + (sc_i64)(h & 0x7fffffff) * ldy + c, a, h < 0);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// sc_sparse_apply_owned: Y (zeroed, row-major d x n) += S @ A for row-major float32 A (m, n),
// n % 4 == 0, 16-byte aligned rows, nnz >= 2.
//
// The nonzeros are stratified: nonzero t of every column of S lies in the row band
// [t d / nnz, (t+1) d / nnz) of Y. A thread that owns one t and a few columns therefore owns
// those columns of a whole band of Y, and adds into it with plain shared-memory loads and
// stores: no atomics until the block's single flush. (The "red" kernel above sends nnz
// vector reductions per row of A to L2 instead, which caps it at about 2.2e11 of them per
// second on an H200: 2.3 ms for nnz = 8 on 1e6 x 256.)
//
// Block: SC_OWN_C columns of Y, all d rows, in shared memory. Threads = TG x (C / V): TG
// lanes of t (t = tl, tl + TG, ...) times C / V slots of V columns. Within a warp the slot
// is swizzled by t so that the 32 lanes' addresses fall in 32 distinct banks (lanes of one
// t hit different rows of its band, lanes of different t different bands). Rows of A and
// their precomputed hashes (sc_sparse_hashes) stream through a double-buffered shared stage
// filled by cp.async. Each thread keeps SC_OWN_G row updates in flight; rows of one group
// that hit the same row of Y are chained through registers (nearest earlier duplicate),
// so the last store of an address carries every contribution.
#define SC_OWN_C 32
#define SC_OWN_R 64
#define SC_OWN_G 4
// Staged hashes of one t are SC_OWN_R + 4 ints apart: with a stride of SC_OWN_R (a multiple
// of 32 words) the eight t lanes of a warp read the same four banks (an 8-way conflict).
#define SC_OWN_HS (SC_OWN_R + 4)

template <int V> struct sc_fvec;
template <> struct sc_fvec<1> {
    typedef float type;
    static __device__ __forceinline__ float flip(float a, sc_u32 s) {
        return __uint_as_float(__float_as_uint(a) ^ s);
    }
    static __device__ __forceinline__ float add(float a, float b) { return a + b; }
    static __device__ __forceinline__ float zero() { return 0.f; }
    static __device__ __forceinline__ float at(float a, int) { return a; }
};
template <> struct sc_fvec<2> {
    typedef float2 type;
    static __device__ __forceinline__ float2 flip(float2 a, sc_u32 s) {
        return make_float2(__uint_as_float(__float_as_uint(a.x) ^ s),
                           __uint_as_float(__float_as_uint(a.y) ^ s));
    }
    static __device__ __forceinline__ float2 add(float2 a, float2 b) {
        return make_float2(a.x + b.x, a.y + b.y);
    }
    static __device__ __forceinline__ float2 zero() { return make_float2(0.f, 0.f); }
    static __device__ __forceinline__ float at(float2 a, int i) { return i ? a.y : a.x; }
    // acc + x or acc - x (sign bit 31 of s): an exact multiply by +-1 fused with the add,
    // so the sign costs no instruction on x.
    static __device__ __forceinline__ float2 signed_add(float2 acc, float2 x, sc_u32 s) {
        const float one = __uint_as_float(0x3f800000u + s);
        return make_float2(fmaf(one, x.x, acc.x), fmaf(one, x.y, acc.y));
    }
};

// One double per lane (the "slots" kernel in float64), with sc_fvec's interface; a sign
// in bit 31 of s moves to the double's sign bit.
struct sc_dvec1 {
    typedef double type;
    static __device__ __forceinline__ double flip(double a, sc_u32 s) {
        return __longlong_as_double(__double_as_longlong(a)
                                    ^ ((long long)(s & 0x80000000u) << 32));
    }
    static __device__ __forceinline__ double add(double a, double b) { return a + b; }
    static __device__ __forceinline__ double zero() { return 0.0; }
    static __device__ __forceinline__ double at(double a, int) { return a; }
    static __device__ __forceinline__ double signed_add(double acc, double x, sc_u32 s) {
        return fma(__longlong_as_double(0x3ff0000000000000ll | ((long long)s << 32)), x, acc);
    }
};

// Lane type of the "slots" kernel: 8 bytes, two floats or one double.
template <class T> struct sc_slot_lane;
template <> struct sc_slot_lane<float> { typedef sc_fvec<2> F; };
template <> struct sc_slot_lane<double> { typedef sc_dvec1 F; };

__device__ __forceinline__ void sc_cp_async16(void* smem, const void* gmem, bool valid) {
#if __CUDA_ARCH__ >= 800
    const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
    const int n = valid ? 16 : 0;          // 0: fill the 16 bytes with zeros
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(dst), "l"(gmem), "r"(n)
                 : "memory");
#else
    *reinterpret_cast<float4*>(smem) =
        valid ? *reinterpret_cast<const float4*>(gmem) : make_float4(0.f, 0.f, 0.f, 0.f);
#endif
}

__device__ __forceinline__ void sc_cp_async_commit() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}

__device__ __forceinline__ void sc_cp_async_wait_prev() {   // all but the newest group
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group 1;" ::: "memory");
#endif
}

// Hashes (row | sign bit, as sc_sparse_hash) of columns j0 .. j0 + nchunks SC_OWN_R - 1,
// chunk by chunk with t major: column j0 + c SC_OWN_R + r, nonzero t at
// H[(c nnz + t) SC_OWN_R + r], so a thread reads four rows' hashes of its t in one load.
extern "C" __global__ void sc_sparse_hashes(sc_i64 j0, sc_i64 nchunks, int d, int nnz,
                                            sc_u64 seed, sc_u64 stream, int* H) {
    const sc_i64 total = nchunks * nnz * SC_OWN_R;
    for (sc_i64 e = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; e < total;
         e += (sc_i64)gridDim.x * blockDim.x) {
        const int r = (int)(e % SC_OWN_R);
        const sc_i64 ct = e / SC_OWN_R;
        const int t = (int)(ct % nnz);
        const sc_i64 c = ct / nnz;
        H[e] = sc_sparse_hash(seed, stream, j0 + c * SC_OWN_R + r, t, d, nnz);
    }
}

// Stage rows [r0, r0 + SC_OWN_R) of A's column tile and their hashes (H holds whole chunks:
// rows past m have valid hashes and zero-filled values).
__device__ __forceinline__ void sc_own_stage(const float* A, sc_i64 m, sc_i64 n, sc_i64 lda,
                                             sc_i64 c0, const int* H, int nnz, sc_i64 r0,
                                             float* stage, int* hs) {
    const int tid = threadIdx.x, nthreads = blockDim.x;
    constexpr int q4 = SC_OWN_C / 4;                     // float4s per staged row
    for (int e = tid; e < SC_OWN_R * q4; e += nthreads) {
        const int rr = e / q4, cq = e % q4;
        const sc_i64 r = r0 + rr, c = c0 + 4 * cq;
        const bool valid = r < m && c < n;
        sc_cp_async16(stage + rr * SC_OWN_C + 4 * cq, valid ? A + r * lda + c : A, valid);
    }
    constexpr int q = SC_OWN_R / 4;                      // 16-byte pieces per t
    for (int e = tid; e < q * nnz; e += nthreads)   // r0 is a whole number of chunks in
        sc_cp_async16(hs + (e / q) * SC_OWN_HS + 4 * (e % q), H + r0 * nnz + 4 * e, true);
}

template <int V>
__global__ void __launch_bounds__(256)
sc_sparse_apply_owned(const float* A, sc_i64 m, sc_i64 n, sc_i64 lda, int d, int nnz,
                      const int* H, double scale, float* Y, sc_i64 ldy, int TG,
                      sc_i64 rows_per_block) {
    typedef sc_fvec<V> F;
    typedef typename F::type vec;
    constexpr int C = SC_OWN_C, R = SC_OWN_R, G = SC_OWN_G;
    extern __shared__ __align__(16) unsigned char sc_smem[];
    float* acc = (float*)sc_smem;                              // d x C, swizzled slots
    float* stage0 = acc + (sc_i64)d * C;                       // 2 x (R x C)
    int* hs0 = (int*)(stage0 + 2 * R * C);                     // 2 x (nnz x SC_OWN_HS)
    const int tid = threadIdx.x, nthreads = blockDim.x;
    const int nslots = C / V, wc = 32 / TG;
    const int lane = tid & 31;
    const int tl = lane / wc;                                  // t = tl, tl + TG, ...
    const int cg = (tid >> 5) * wc + lane % wc;                // columns cg*V .. cg*V+V-1
    const int myslot = (cg + wc * tl) % nslots;
    const sc_i64 c0 = (sc_i64)blockIdx.x * C;
    for (int e = tid; e < d * C; e += nthreads) acc[e] = 0.f;
    const sc_i64 rbeg = (sc_i64)blockIdx.y * rows_per_block;
    const sc_i64 rend = min(m, rbeg + rows_per_block);
    if (rbeg >= rend) return;                                  // uniform: the whole block
    sc_own_stage(A, m, n, lda, c0, H, nnz, rbeg, stage0, hs0);
    sc_cp_async_commit();
    int buf = 0;
    for (sc_i64 r0 = rbeg; r0 < rend; r0 += R, buf ^= 1) {
        // Prefetch the next chunk into the other buffer while this one is consumed.
        if (r0 + R < rend)
            sc_own_stage(A, m, n, lda, c0, H, nnz, r0 + R, stage0 + (buf ^ 1) * R * C,
                         hs0 + (buf ^ 1) * SC_OWN_HS * nnz);
        sc_cp_async_commit();
        sc_cp_async_wait_prev();
        __syncthreads();
        const float* stage = stage0 + buf * R * C;
        const int* hs = hs0 + buf * SC_OWN_HS * nnz;
        for (int t = tl; t < nnz; t += TG) {
            static_assert(G == 4, "hashes are read four rows at a time");
            const int* ht = hs + t * SC_OWN_HS;
            // Software pipeline: the next group's hashes and values are loaded before this
            // group's stores (the compiler cannot hoist loads above stores to acc itself).
            int4 hv = *reinterpret_cast<const int4*>(ht);
            vec av[G];
#pragma unroll
            for (int g = 0; g < G; ++g)
                av[g] = *reinterpret_cast<const vec*>(stage + g * C + cg * V);
            for (int rr = 0; rr < R; rr += G) {
                int4 hn = hv;
                vec an[G];
                const int nx = rr + G < R ? rr + G : rr;
                hn = *reinterpret_cast<const int4*>(ht + nx);
#pragma unroll
                for (int g = 0; g < G; ++g)
                    an[g] = *reinterpret_cast<const vec*>(stage + (nx + g) * C + cg * V);
                const int hh[G] = {hv.x, hv.y, hv.z, hv.w};
                int off[G];
                vec v[G], y[G];
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    off[g] = (hh[g] & 0x7fffffff) * C + myslot * V;
                    v[g] = F::flip(av[g], (sc_u32)hh[g] & 0x80000000u);
                }
#pragma unroll
                for (int g = 0; g < G; ++g) y[g] = *reinterpret_cast<const vec*>(acc + off[g]);
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    vec base = y[g];
#pragma unroll
                    for (int p = 0; p < g; ++p)
                        if (off[g] == off[p]) base = y[p];   // nearest earlier duplicate wins
                    y[g] = F::add(base, v[g]);
                }
#pragma unroll
                for (int g = 0; g < G; ++g) *reinterpret_cast<vec*>(acc + off[g]) = y[g];
                hv = hn;
#pragma unroll
                for (int g = 0; g < G; ++g) av[g] = an[g];
            }
        }
        __syncthreads();   // the buffer is refilled by the next iteration's prefetch
    }
    // Flush: four consecutive columns of one row per thread, one vector reduction each.
    const float sv = (float)scale;
    constexpr int q4 = C / 4;
    for (int e = tid; e < d * q4; e += nthreads) {
        const int row = e / q4, col = 4 * (e % q4);
        if (c0 + col >= n) continue;
        const int band = sc_sparse_band(row, d, nnz);
        const int shift = wc * (band % TG);
        float s[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int cc = col + i;
            const int slot = (cc / V + shift) % nslots;
            s[i] = sv * acc[row * C + slot * V + cc % V];
        }
        sc_red4(Y + (sc_i64)row * ldy + c0 + col, s[0], s[1], s[2], s[3]);
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

// Nonzeros of columns j0 .. j0 + nj - 1 of S as sc_sparse_hash gives them (row | sign bit):
// H[(j - j0) nnz + t], for sc_sparse_apply_right.
extern "C" __global__ void sc_sparse_col_hashes(sc_i64 j0, sc_i64 nj, int d, int nnz,
                                                sc_u64 seed, sc_u64 stream, int* H) {
    const sc_i64 total = nj * nnz;
    for (sc_i64 e = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; e < total;
         e += (sc_i64)gridDim.x * blockDim.x)
        H[e] = sc_sparse_hash(seed, stream, j0 + e / nnz, (int)(e % nnz), d, nnz);
}

#define SC_RIGHT_ROWS 8         // rows of A (and of Y) per block of sc_sparse_apply_right

// Y (zeroed, n x d) += A S^T for A (n x m) with unit column stride (row stride lda) and Y
// likewise (ldy): the CountSketch / sparse-sign right apply without transposing A. Block
// (x, y) takes rows y rt .. y rt + rt - 1 (rt <= SC_RIGHT_ROWS) and columns x cw ..
// x cw + cw - 1 of A; its rt rows of Y sit in shared memory (rt x d). A thread takes a
// column j at a time: its nnz hashes (H, from sc_sparse_col_hashes) and its rt values
// (each row's read coalesced over the block's threads), then rt x nnz shared-memory
// atomics; the tile is added to Y with one global atomic per nonzero entry, scaled then.
template <class T>
__global__ void sc_sparse_apply_right(const T* A, sc_i64 n, sc_i64 m, sc_i64 lda, int d,
                                      int nnz, const int* H, double scale, T* Y, sc_i64 ldy,
                                      int rt, sc_i64 cw) {
    extern __shared__ __align__(16) unsigned char sc_smem[];
    T* acc = (T*)sc_smem;                                      // rt x d
    const int tid = threadIdx.x, nt = blockDim.x;
    const sc_i64 r0 = (sc_i64)blockIdx.y * rt;
    const int nr = (int)min((sc_i64)rt, n - r0);
    const sc_i64 c0 = (sc_i64)blockIdx.x * cw, c1 = min(m, c0 + cw);
    for (int e = tid; e < nr * d; e += nt) acc[e] = (T)0;
    __syncthreads();
    for (sc_i64 j = c0 + tid; j < c1; j += nt) {
        T a[SC_RIGHT_ROWS];
#pragma unroll
        for (int r = 0; r < SC_RIGHT_ROWS; ++r)
            a[r] = r < nr ? A[(r0 + r) * lda + j] : (T)0;
        for (int t = 0; t < nnz; ++t) {
            const int h = H[j * nnz + t];
            T* row = acc + (h & 0x7fffffff);
#pragma unroll
            for (int r = 0; r < SC_RIGHT_ROWS; ++r)
                if (r < nr) atomicAdd(row + r * d, h < 0 ? -a[r] : a[r]);
        }
    }
    __syncthreads();
    const T sv = (T)scale;
    for (int e = tid; e < nr * d; e += nt) {
        const T v = acc[e];
        if (v != (T)0) atomicAdd(&Y[(r0 + e / d) * ldy + e % d], sv * v);
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


// ---------------------------------------------------------------------------------------
// sc_sparse_apply_slots: Y (zeroed, row-major d x n) += S @ A for row-major float32 or
// float64 A (m, n), rows of whole 16-byte pieces, 16-byte aligned; Y accumulated in
// registers.
//
// Rows of A stream through the block in chunks of R. For every chunk a slot table, built
// once per chunk by sc_sparse_slots and shared by all column tiles, gives each row of Y H
// words of two places each: the chunk's rows of A that add into it or subtract from it,
// each place with its own sign (further entries go to an overflow list, added with global
// reductions from the staged tile). A lane holds 8 bytes of a row of Y (two float columns
// or one double) for K = 16 rows, 32 registers; G lane groups per warp each take their own
// K rows (G = 1: a warp covers 64 float or 32 double columns; G = 4, float: each
// quarter-warp covers 16 columns, so that a block of 1024 threads holds 2048 rows of Y and
// stages 64-byte rows, in chunks four times as long as with G = 1). Per row of Y and chunk
// a thread makes one load of the slot (shared by its group) and, word by word while its
// slot has entries, two loads of staged values and two fused multiply-adds by +-1: no
// atomics; lanes whose slot has run out sit the rest out (no shared-memory wavefront for
// them), a word no lane needs is skipped by the whole warp.
// History, measured on an H200 (nnz = 8, 1e6 x 256 float32, ratios to a device copy):
// with one float a lane, offsets in rows and four places per sign, d = 1024 took 1.26 ms
// (0.39x), issue-bound at 8 instructions per place; byte offsets (a place's address one or
// two instructions from the slot word: an OR or a shift-and-add with the lane's offset, the
// tile's base in a uniform register), one slab of tables, a 32-bit staging loop and
// (tile, chunk) work spread over every multiprocessor, 1.00 ms; skipping empty words 4%
// less; a fixed pair per sign and two flexible pairs (three times fewer overflow entries,
// each a global reduction per column) 0.76 ms (0.66x). A second zero row, so that a zero
// place in one lane group never shares banks with the entry its partner group reads
// alongside (sc_sparse_slots), cut bank conflicts at d = 4096 from 40M to 17M. Two groups
// of one float a lane took d = 4096 from 1.53 to 1.33 ms; four groups of two floats
// (the load of a place serving four entries, a slot load four slots), kernel alone, ncu:
// d = 4096 1.06 -> 0.97 ms (821M -> 629M instructions, 216M -> 191M shared-memory
// wavefronts), d = 2048 0.80 -> 0.73, d = 8192 1.79 -> 1.51. Signed places (in place of
// the fixed pairs per sign, whose empty places were loaded by every lane), kernel alone:
// d = 4096 0.97 -> 0.91 ms (191M -> 165M wavefronts, 629M -> 713M instructions), d = 2048
// 0.73 -> 0.70, d = 8192 1.51 -> 1.40, d = 512 (one group) 0.56 -> 0.51, float64 at d =
// 1024 0.65 -> 0.60; d = 1024 with one group of two floats 0.62 against 0.65 ms for the
// fixed pairs with one float a lane, which the signed places had slowed to 0.74 (an
// instruction-bound lane of one float pays the signs' instructions; that lane is gone).
// At d = 4096 the warps mostly wait on shared-memory loads (issue 75% of cycles,
// wavefronts 70% of one a cycle). The high place's sign in two instructions instead of
// three (sc_slot_add): 713M -> 683M instructions, 0.912 -> 0.905 ms by events.
// Tried and dropped: overflow entries added into the owning warp's registers 12% slower;
// a switch over the exact entry count (indirect branches) 1.3 ms at d = 1024; the "owned"
// kernel above (a load and a store per update into a shared-memory Y) 1.7 ms; staged tiles
// at 64 KiB boundaries (a place's address one instruction) no faster; every place
// predicated on not being a zero row (with four groups: 167M wavefronts but 849M
// instructions, 1.10 against 0.97 ms); the next slot loaded a row index ahead (0.98);
// eight groups of four floats with predicated places (149M wavefronts, 700M instructions:
// a float4 lane quadruples the adds of a place, 1.02 ms); the slots and the overflow head
// staged by one bulk copy each on sm_90 (mbarrier) and the rows' copy loop unrolled (702M
// against 713M instructions, 0.911 against 0.913 ms); the builder pairing the entries of
// partner rows (read in one load) by the parity of their staged rows, so that as few as
// the parities allow share a bank half (wavefronts 165M -> 152M, but the apply kernel only
// 1.3% faster and the builder 79 -> 93 us).
#define SC_SLOT_THREADS 1024    // threads per block at most: 64 registers each
#define SC_SLOT_OVS 256         // staged head of a chunk's overflow list (u32: count, entries)

template <int H> struct sc_slot_word;             // the 2 H u16 places of one slot
template <> struct sc_slot_word<2> { typedef uint2 type; };
template <> struct sc_slot_word<4> { typedef uint4 type; };

// A slot word: places at rows lo and hi of a staged tile of row_bytes-byte rows, as
// sc_slot_add<F, shift> reads them, and their signs (neg: bit 0 lo's, bit 1 hi's; both
// below the lowest set bit of any offset). The builder and the apply kernel both take
// `empty` (both places on zero row R) from here.
__device__ __forceinline__ unsigned sc_slot_encode(unsigned lo, unsigned hi, unsigned neg,
                                                   int row_bytes, int shift) {
    return ((lo * row_bytes) >> (2 * shift)) | (((hi * row_bytes) >> shift) << 16) | neg;
}

__device__ __forceinline__ void sc_cp_async_wait_all() {
#if __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group 0;" ::: "memory");
#endif
}

__device__ __forceinline__ void sc_cp_async8(void* smem, const void* gmem) {
#if __CUDA_ARCH__ >= 800
    const unsigned dst = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 8;" :: "r"(dst), "l"(gmem) : "memory");
#else
    *reinterpret_cast<uint2*>(smem) = *reinterpret_cast<const uint2*>(gmem);
#endif
}

// Slot tables of chunks 0 .. gridDim.x - 1 of rows j0 .. j0 + m - 1 of A, one block per
// (chunk c, block tb of tbw rows of Y). Slot of row i of the block: H words of two u16
// places, the first 2 H entries of the row in the order they came, each the chunk's row r
// (0 .. R - 1) of an entry with its sign, then a zero row (R, or R + 1 to spare a bank
// conflict with lane groups), encoded from its byte offset r x row_bytes in the staged
// tile as sc_slot_add reads it (sc_slot_encode). Further entries of (c, tb) go to OV[(c
// ntb + tb) ovstride]: their count, then (r << 12 | minus << 11 | row of Y in the block);
// ovstride >= 1 + R nb, a multiple of 4. With lane groups (groups = 4, see
// sc_sparse_apply_slots) row i's slot is stored at the position the apply kernel reads it
// from: the groups' slots of one row index k side by side.
// Dynamic shared memory: tbw (4 + 4 H) bytes, a count and 2 H entries (r | minus << 15)
// per row. 32 registers (launch bounds: 8 blocks a multiprocessor) keep the hashing's
// occupancy. Blocks of 512 threads (twice the warps a multiprocessor where shared memory
// allows 4 blocks) were no faster at d = 2048 and 4096 (0.089 against 0.090 ms) and slower
// at d = 512 and 1024 (0.095 -> 0.125, 0.077 -> 0.095 ms): the builder is a tenth of a
// call there. Counts in 16 bits (36 KiB at tbw = 2048: six blocks a multiprocessor, two
// waves of blocks at d = 4096 instead of three) with a row's entries read in one load, at
// 40 registers: 0.092 against 0.091 ms at d = 4096, no faster at any d.
template <int H>
__global__ void __launch_bounds__(256, 8)
sc_sparse_slots(sc_i64 j0, sc_i64 m, int R, int d, int nnz, sc_u64 seed, sc_u64 stream,
                int tbw, int ntb, int ovstride, int row_bytes, int shift, int groups,
                typename sc_slot_word<H>::type* SL, unsigned* OV) {
    constexpr int CAP = 2 * H;                     // entries kept for a slot
    extern __shared__ __align__(16) unsigned char sc_smem[];
    unsigned* cnt = reinterpret_cast<unsigned*>(sc_smem);   // entries of a row of Y
    unsigned short* ent = reinterpret_cast<unsigned short*>(cnt + tbw);   // tbw x CAP
    __shared__ unsigned ocount;
    const int tid = threadIdx.x, nt = blockDim.x;
    const sc_i64 c = blockIdx.x;
    const int tb = blockIdx.y;
    const int T0 = tb * tbw, T1 = min(d, T0 + tbw);
    for (int i = tid; i < tbw; i += nt) cnt[i] = 0u;
    if (tid == 0) ocount = 0u;
    __syncthreads();
    // Only the bands of nonzeros that can land in rows T0 .. T1 - 1.
    const int tlo = sc_sparse_band(T0, d, nnz), nb = sc_sparse_band(T1 - 1, d, nnz) - tlo + 1;
    unsigned* ov = OV + (c * ntb + tb) * (sc_i64)ovstride;
    const int rows = (int)min((sc_i64)R, m - c * R);
    for (int t = tlo; t < tlo + nb; ++t) {
        const int lo = sc_band_start(t, d, nnz);
        const sc_u64 width = (sc_u64)(sc_band_start(t + 1, d, nnz) - lo);
        // Two rows per pass: both Philox blocks before either shared-memory atomic, whose
        // latency would otherwise stall each row's hash.
        for (int r0 = tid; r0 < rows; r0 += 2 * nt) {
            int row[2];
            unsigned neg[2];
#pragma unroll
            for (int q = 0; q < 2; ++q) {
                const int r = r0 + q * nt;
                // (No hash past the chunk: at R = 768 and 256 threads that was a quarter.)
                const int h = r < rows ? sc_sparse_hash_in_band(seed, stream, j0 + c * R + r,
                                                                t, nnz, lo, width) : -1;
                row[q] = r < rows ? h & 0x7fffffff : -1;
                neg[q] = (unsigned)h >> 31;
            }
#pragma unroll
            for (int q = 0; q < 2; ++q) {
                if (row[q] < T0 || row[q] >= T1) continue;
                const unsigned r = (unsigned)(r0 + q * nt);
                const unsigned rank = atomicAdd(&cnt[row[q] - T0], 1u);
                if (rank < CAP) {           // the sign in bit 15 (r < 2^11)
                    ent[(row[q] - T0) * CAP + rank] = (unsigned short)(r | neg[q] << 15);
                } else {
                    const unsigned o = atomicAdd(&ocount, 1u);
                    ov[1 + o] = (r << 12) | (neg[q] << 11) | (unsigned)(row[q] - T0);
                }
            }
        }
    }
    __syncthreads();
    // A word's low half (sc_slot_add: its byte offset >> 2 shift; the signs in bits 0, 1).
    const unsigned lo_mask = shift ? 0x7ffcu : 0xfffcu;
    const unsigned empty = sc_slot_encode(R, R, 0u, row_bytes, shift);
    // Row i's slot: entries in the order they came, the zero row past them, places 2 k and
    // 2 k + 1 in word k.
    auto slot = [&](int i, unsigned (&wd)[H]) {
        const int n = min((int)cnt[i], CAP);
#pragma unroll
        for (int k = 0; k < H; ++k) {
            const unsigned e0 = 2 * k < n ? ent[i * CAP + 2 * k] : (unsigned)R;
            const unsigned e1 = 2 * k + 1 < n ? ent[i * CAP + 2 * k + 1] : (unsigned)R;
            wd[k] = sc_slot_encode(e0 & 0x7fffu, e1 & 0x7fffu, (e0 >> 15) | (e1 >> 15) << 1,
                                   row_bytes, shift);
        }
    };
    // With lane groups, the slots of rows i and i + K of groups 2 p and 2 p + 1 are read in
    // the same load instructions (a half-warp's), and staged rows of the same parity share
    // banks. A zero place (row R) read in the same load as an entry of the other row moves
    // to the second zero row, R + 1, where that entry's row has R's parity: it never adds a
    // conflict. A word equal to `empty` is not read (its lanes sit it out) and stays as is.
    const int row_shift = __ffs(row_bytes) - 1;
    auto spread = [&](unsigned (&mine)[H], const unsigned (&other)[H]) {
#pragma unroll
        for (int k = 0; k < H; ++k) {
            if (mine[k] == empty || other[k] == empty) continue;
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int fs = half ? 16 : 0, os = half ? shift : 2 * shift;   // field, scale
                const unsigned fm = half ? mine[k] >> 16 : mine[k] & lo_mask;
                const unsigned fo = half ? other[k] >> 16 : other[k] & lo_mask;
                const unsigned z0 = (unsigned)(R * row_bytes) >> os;
                const unsigned ro = (fo << os) >> row_shift;     // the other's row
                if (fm == z0 && ro < (unsigned)R && ((ro ^ (unsigned)R) & 1u) == 0u)
                    mine[k] += ((unsigned)row_bytes >> os) << fs;
            }
        }
    };
    unsigned* sl = reinterpret_cast<unsigned*>(SL + (c * ntb + tb) * (sc_i64)tbw);
    auto store = [&](int at, const unsigned (&wd)[H]) {
        if constexpr (H == 2)   // one vector store per slot: one contiguous run a warp
            reinterpret_cast<uint2*>(sl)[at] = make_uint2(wd[0], wd[1]);
        else
            reinterpret_cast<uint4*>(sl)[at] = make_uint4(wd[0], wd[1], wd[2], wd[3]);
    };
    if (groups == 1) {
        for (int i = tid; i < tbw; i += nt) {
            unsigned wd[H];
            slot(i, wd);
            store(i, wd);
        }
    } else {
        // A warp holds 64 rows of Y, K = 64 / groups a lane group: row i = 64 w + K g + k
        // of the block is stored at 64 w + groups k + g. Groups 2 p and 2 p + 1 share load
        // instructions: one thread takes both their slots of one k, stored side by side.
        const int K = 64 / groups;
        for (int u = tid; u < tbw / 2; u += nt) {
            const int at = 2 * u, k = (at & 63) / groups, g0 = at % groups;
            const int i = (at & ~63) + K * g0 + k;
            unsigned wd[2][H], first[H];
            slot(i, wd[0]);
            slot(i + K, wd[1]);
#pragma unroll
            for (int h = 0; h < H; ++h) first[h] = wd[0][h];
            spread(wd[0], wd[1]);
            spread(wd[1], first);
            store(at, wd[0]);
            store(at + 1, wd[1]);
        }
    }
    __syncthreads();
    if (tid == 0) ov[0] = ocount;
}

// Stage chunk c (rows c R .. c R + R - 1 of A's TILE-column tile Ab, columns past ncols
// left as they are), its tbw slots (SLb + c slstride) and the head of its overflow list
// (OVb + c ovstride). Rows past m are not staged: slots and overflow entries name rows
// below m only, and empty places read the separate zero row; columns past ncols feed only
// accumulators that are never flushed. The copy loop steps two pointers (its 64-bit index
// arithmetic had been a tenth of the kernel's instructions).
template <int H, int TILE, class T>
__device__ __forceinline__ void sc_slot_stage(const T* Ab, int m, int ncols, sc_i64 lda,
                                              int R, const typename sc_slot_word<H>::type* SLb,
                                              int slstride, int tbw, const unsigned* OVb,
                                              int ovstride, int c, T* stage,
                                              typename sc_slot_word<H>::type* slots,
                                              unsigned* ovs) {
    constexpr int E = 16 / sizeof(T);             // elements per 16-byte piece
    constexpr int Q = TILE / E;                   // pieces per staged row
    const int tid = threadIdx.x, nt = blockDim.x;
    // Each thread copies the same piece cq of every (nt / Q)-th row.
    const int cq = tid & (Q - 1), step = nt / Q;
    const int rows = min(R, m - c * R);
    if (E * cq < ncols) {
        const T* src = Ab + (sc_i64)(c * R + tid / Q) * lda + E * cq;
        const sc_i64 src_step = (sc_i64)step * lda;
        T* dst = stage + (tid / Q) * TILE + E * cq;
        for (int rr = tid / Q; rr < rows; rr += step, src += src_step, dst += step * TILE)
            sc_cp_async16(dst, src, true);
    }
    const typename sc_slot_word<H>::type* src = SLb + c * slstride;
    for (int i = tid; i < tbw; i += nt) {
        if (H == 4) sc_cp_async16(slots + i, src + i, true);
        else sc_cp_async8(slots + i, src + i);
    }
    const unsigned* ovsrc = OVb + c * ovstride;
    for (int i = tid; i < SC_SLOT_OVS / 4; i += nt)
        sc_cp_async16(ovs + 4 * i, ovsrc + 4 * i, true);
}

// Adds the staged values at the two places of slot word s, each with its sign, from this
// thread's columns to acc. Places are byte offsets in the staged tile: S = 0, the low and
// high 16 bits, for chunks up to 2^16 bytes; S = 1, the low half's offset >> 2 (bits
// 2 .. 14) and the high half's >> 1, for chunks up to twice as long; the signs in bits 0
// and 1. `tile` is the staged tile (the same for the whole block) and `lane` the thread's
// byte offset within a staged row, below the row's size: row offsets are multiples of it,
// so the low half's address is one OR (S = 0) and the high half's one shift-and-add, each
// then addressed from the block's tile in a uniform register (offsets in rows cost a
// shift, a mask and two adds per place: 8 instructions per place, which left the kernel
// issue-bound).
template <class F, int S>
__device__ __forceinline__ void sc_slot_add(typename F::type& acc, const char* tile,
                                            unsigned lane, unsigned s) {
    typedef typename F::type vec;
    const unsigned lo = (S ? (s & 0x7ffcu) << 2 : s & 0xfffcu) | lane, hi = (s >> (16 - S)) + lane;
    acc = F::signed_add(acc, *reinterpret_cast<const vec*>(tile + lo), s << 31);
    unsigned hs;   // the high place's sign bit (an opaque AND: folded into shifts it costs three)
    asm("and.b32 %0, %1, 2;" : "=r"(hs) : "r"(s));
    acc = F::signed_add(acc, *reinterpret_cast<const vec*>(tile + hi), hs << 30);
}

// Adds a slot's entries to acc, word by word in order; a word equal to `empty` (both places
// the zero row) ends them. The branches are per lane: lane groups whose slot has no more
// entries sit out the loads of the others (no shared-memory wavefront for them).
template <int H, class F, int S>
__device__ __forceinline__ void sc_slot_sum(typename F::type& acc,
                                            typename sc_slot_word<H>::type s,
                                            const char* tile, unsigned lane, unsigned empty) {
    const unsigned* words = reinterpret_cast<const unsigned*>(&s);
#pragma unroll
    for (int k = 0; k < H; ++k) {
        if (words[k] == empty) break;
        sc_slot_add<F, S>(acc, tile, lane, words[k]);
    }
}

// Work is (column tile, chunk) pairs in tile-major order, handed out to the blocks in equal
// contiguous ranges (per_block pairs each), so that every multiprocessor gets the same
// work: a range may end one tile and start the next, flushing Y in between.
// G lane groups per warp, each of 32 / G lanes with V = 8 / sizeof(T) columns a lane (two
// floats or one double) of its own K = 16 rows of Y: G = 1, 64 float or 32 double columns
// a tile; G = 4 (float), 16 columns, so that a block of 1024 threads holds 2048 rows of Y
// and a staged row is 64 bytes: for large d a quarter of the blocks of rows, each staging
// chunks four times as long, and one load instruction serves four entries (a half-warp's
// two groups share banks half the time). blockDim.x = 2 tbw / G threads.
template <int H, int S, int G, class T>
__global__ void __launch_bounds__(SC_SLOT_THREADS, 1)
sc_sparse_apply_slots(const T* A, int m, sc_i64 n, sc_i64 lda, int d, int R,
                      const typename sc_slot_word<H>::type* SL, const unsigned* OV,
                      int ovstride, int tbw, int ntb, int ntiles, int nchunks, int per_block,
                      double scale, T* Y, sc_i64 ldy) {
    static_assert(G == 1 || (sizeof(T) == 4 && G == 4),
                  "four lane groups of two floats (64-byte staged rows), or one group");
    typedef typename sc_slot_word<H>::type word;
    typedef typename sc_slot_lane<T>::F F;
    typedef typename F::type vec;
    constexpr int V = 8 / (int)sizeof(T);                // columns a lane
    constexpr int LB = 8;                                // bytes of a lane's columns
    constexpr int K = 128 / LB;                          // rows of Y per thread
    constexpr int TILE = 32 * V / G;                     // columns per tile
    constexpr int GL = 32 / G;                           // lanes per group
    extern __shared__ __align__(16) unsigned char sc_smem[];
    const int sstride = (R + 2) * TILE;                  // a staged tile, its two zero rows
    T* stage0 = (T*)sc_smem;                             // 2 x ((R + 2) x TILE)
    word* slots0 = (word*)(stage0 + 2 * sstride);        // 2 x tbw
    unsigned* ovs0 = (unsigned*)(slots0 + 2 * tbw);      // 2 x SC_SLOT_OVS
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int g = lane / GL, cl = lane % GL;             // lane group, its column lane
    const int nwarps = blockDim.x >> 5;
    const int tb = blockIdx.z;
    const int f0 = blockIdx.x * per_block, f1 = min(ntiles * nchunks, f0 + per_block);
    if (f0 >= f1) return;                                // uniform: the whole block
    const word* SLb = SL + (sc_i64)tb * tbw;
    const int slstride = ntb * tbw;
    const unsigned* OVb = OV + (sc_i64)tb * ovstride;
    const int ovs_stride = ntb * ovstride;
    const T sv = (T)scale;
    vec acc[K];
#pragma unroll
    for (int k = 0; k < K; ++k) acc[k] = F::zero();
    for (int e = tid; e < 4 * TILE; e += blockDim.x)     // both buffers' zero rows
        stage0[(e / (2 * TILE)) * sstride + R * TILE + e % (2 * TILE)] = (T)0;
    int tile = f0 / nchunks, c = f0 - tile * nchunks;
    int ncols = min(TILE, (int)(n - tile * TILE));
    sc_slot_stage<H, TILE, T>(A + tile * TILE, m, ncols, lda, R, SLb, slstride, tbw, OVb,
                           ovs_stride, c, stage0, slots0, ovs0);
    sc_cp_async_commit();
    int buf = 0;
    for (int f = f0; f < f1; ++f, buf ^= 1) {
        const bool last_of_tile = c + 1 == nchunks;
        sc_cp_async_wait_all();
        // Chunk c has landed for every thread, and chunk c - 1 (the other buffer) is done.
        __syncthreads();
        if (f + 1 < f1) {
            const int tn = last_of_tile ? tile + 1 : tile;
            sc_slot_stage<H, TILE, T>(A + tn * TILE, m, min(TILE, (int)(n - tn * TILE)), lda, R,
                                   SLb, slstride, tbw, OVb, ovs_stride,
                                   last_of_tile ? 0 : c + 1, stage0 + (buf ^ 1) * sstride,
                                   slots0 + (buf ^ 1) * tbw, ovs0 + (buf ^ 1) * SC_SLOT_OVS);
        }
        sc_cp_async_commit();
        // This thread's slot of row index k: the groups' slots of one k sit side by side.
        const word* sl = slots0 + buf * tbw + w * K * G + g;
        const T* col = stage0 + buf * sstride + V * cl;
        const char* tileb = reinterpret_cast<const char*>(stage0 + buf * sstride);
        // Two zero-row places (sc_slot_add's halves).
        const unsigned empty = sc_slot_encode(R, R, 0u, TILE * (int)sizeof(T), S);
#pragma unroll
        for (int k = 0; k < K; ++k)
            sc_slot_sum<H, F, S>(acc[k], sl[k * G], tileb, LB * cl, empty);
        // Entries beyond the slots' places: one coalesced reduction per entry and column
        // into Y, from the staged tile (the list's head is staged; a longer list reads on
        // from L2), an entry per lane group.
        T* Yc = Y + tile * TILE + V * cl;
        const unsigned* ovs = ovs0 + buf * SC_SLOT_OVS;
        const unsigned* ovg = OVb + c * ovs_stride;
        const unsigned count = ovs[0];
        for (unsigned o = w * G + g; o < count; o += nwarps * G) {
            const unsigned u = 1 + o < SC_SLOT_OVS ? ovs[1 + o] : ovg[1 + o];
            // The entry's sign (bit 11) moved to the values' sign bits.
            const vec a = F::flip(*reinterpret_cast<const vec*>(col + (u >> 12) * TILE),
                                  (u << 20) & 0x80000000u);
            const sc_i64 row = (sc_i64)tb * tbw + (u & 0x7ffu);
#pragma unroll
            for (int i = 0; i < V; ++i)
                if (V * cl + i < ncols)
                    atomicAdd(Yc + row * ldy + i, sv * F::at(a, i));
        }
        if (f + 1 == f1 || last_of_tile) {               // the tile's last chunk here
#pragma unroll
            for (int k = 0; k < K; ++k) {
                const int row = tb * tbw + (w * G + g) * K + k;
#pragma unroll
                for (int i = 0; i < V; ++i)
                    if (V * cl + i < ncols && row < d)
                        atomicAdd(Yc + row * ldy + i, sv * F::at(acc[k], i));
                acc[k] = F::zero();
            }
        }
        if (last_of_tile) {
            ++tile;
            c = 0;
            ncols = min(TILE, (int)(n - tile * TILE));
        } else {
            ++c;
        }
    }
}
