// Pivoted Cholesky of a small symmetric matrix in one thread block: G[J, J] = R^T R with
// the greedy pivot order of LAPACK's xPSTRF (at each step the largest remaining diagonal,
// the first on ties), stopping where that diagonal is at most tol = rtol2 * max(diag G).
//
// cqrrpt's Gram route factors A^T A (n x n, n in the hundreds). On the host that was
// LAPACK's spstrf: level-2 work at about 3 GFLOP/s, 1.9 ms for n = 256 on the H200
// machine's host, most of a 2.7 ms cqrrpt, and it moved with the host's speed. Here the
// upper triangle stays in shared memory (packed by columns: (i, j), i <= j, at
// j (j + 1) / 2 + i), and each step is an argmax by one warp, a swap of rows and columns k
// and p (the rows already factored swap their entries too, as xPSTRF's do), the scaling of
// row k and the rank-1 update of the trailing triangle, one barrier apart.
#include "common.cuh"

__device__ __forceinline__ int sc_packed(int i, int j) {      // i <= j
    return j * (j + 1) / 2 + i;
}

__device__ __forceinline__ int sc_packed_sym(int i, int j) {
    return i <= j ? sc_packed(i, j) : sc_packed(j, i);
}

// G row-major (n, n), symmetric (its upper triangle is read). Writes R (n, n) row-major
// (upper triangle of the factored rows; the rest zero), piv (n: J, 0-based) and *status:
// the rank reached (n when complete), or -1 when G has a NaN or an infinity.
// blockDim.x = 1024; dynamic shared memory: n (n + 1) / 2 T, then n T, then n int.
template <class T>
__global__ void __launch_bounds__(1024) sc_pivoted_cholesky(const T* G, int n, double rtol2,
                                                            T* R, int* piv, int* status) {
    extern __shared__ __align__(16) unsigned char sc_smem[];
    T* S = (T*)sc_smem;
    T* rk = S + n * (n + 1) / 2;                           // row k of R, scaled
    int* order = (int*)(rk + n);
    __shared__ int bad, pivot;
    __shared__ T dmax;
    const int tid = threadIdx.x, nt = blockDim.x, lane = tid & 31, warp = tid >> 5;
    if (tid == 0) bad = 0;
    __syncthreads();
    for (int j = warp; j < n; j += nt >> 5) {
        for (int i = lane; i <= j; i += 32) {
            const T g = G[(sc_i64)i * n + j];
            if (!isfinite(g)) bad = 1;
            S[sc_packed(i, j)] = g;
        }
    }
    for (int i = tid; i < n; i += nt) order[i] = i;
    __syncthreads();
    if (warp == 0) {                                       // the largest diagonal entry
        T best = (T)0;
        for (int i = lane; i < n; i += 32) best = max(best, S[sc_packed(i, i)]);
        for (int o = 16; o > 0; o >>= 1) best = max(best, __shfl_xor_sync(0xffffffffu, best, o));
        if (lane == 0) dmax = best;
    }
    __syncthreads();
    if (bad) {
        if (tid == 0) *status = -1;
        return;                                             // uniform: bad is shared
    }
    const T tol = (T)(rtol2 * (double)dmax);
    int rank = n;
    for (int k = 0; k < n; ++k) {
        if (warp == 0) {                                   // argmax of the trailing diagonal
            T best = (T)-1;
            int at = n;
            for (int i = k + lane; i < n; i += 32) {
                const T v = S[sc_packed(i, i)];
                if (v > best) { best = v; at = i; }
            }
            for (int o = 16; o > 0; o >>= 1) {
                const T ob = __shfl_xor_sync(0xffffffffu, best, o);
                const int oa = __shfl_xor_sync(0xffffffffu, at, o);
                if (ob > best || (ob == best && oa < at)) { best = ob; at = oa; }
            }
            if (lane == 0) pivot = best > tol ? at : -1;
        }
        __syncthreads();
        const int p = pivot;
        if (p < 0) {                                       // uniform
            rank = k;
            break;
        }
        if (p != k) {
            for (int x = tid; x < n; x += nt) {
                if (x == k || x == p) continue;
                const int a = sc_packed_sym(x, k), b = sc_packed_sym(x, p);
                const T t = S[a];
                S[a] = S[b];
                S[b] = t;
            }
            if (tid == 0) {
                const T t = S[sc_packed(k, k)];
                S[sc_packed(k, k)] = S[sc_packed(p, p)];
                S[sc_packed(p, p)] = t;
                const int o = order[k];
                order[k] = order[p];
                order[p] = o;
            }
            __syncthreads();
        }
        const T r = sqrt(S[sc_packed(k, k)]);
        for (int j = k + 1 + tid; j < n; j += nt) {
            const T v = S[sc_packed(k, j)] / r;
            S[sc_packed(k, j)] = v;
            rk[j] = v;
        }
        __syncthreads();
        if (tid == 0) S[sc_packed(k, k)] = r;
        // Trailing update, S(i, j) -= R(k, i) R(k, j) for k < i <= j: a warp per column.
        for (int j = k + 1 + warp; j < n; j += nt >> 5) {
            const T rj = rk[j];
            T* col = S + sc_packed(0, j);
            for (int i = k + 1 + lane; i <= j; i += 32) col[i] -= rk[i] * rj;
        }
        __syncthreads();
    }
    for (int e = tid; e < n * n; e += nt) {
        const int i = e / n, j = e % n;
        R[e] = (i <= j && i < rank) ? S[sc_packed(i, j)] : (T)0;
    }
    for (int i = tid; i < n; i += nt) piv[i] = order[i];
    if (tid == 0) *status = rank;
}
