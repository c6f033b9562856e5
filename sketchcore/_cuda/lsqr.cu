// LSQR's vector and scalar work on the GPU (sketchcore/_linalg/_lstsq.py's recurrence), for
// the preconditioned operator M = A[:, J] R^-1 and k right-hand sides at once.
//
// On the host each iteration of that recurrence was some ninety small CuPy launches on
// (r, k) and (k,) arrays, which left lstsq host-bound on an H200 (about 1 ms per iteration
// against 0.2 ms of passes over A). Here an iteration is the four products plus six
// launches, and the LSQR scalars never leave the device.
//
// Per-column state lives in one float64 array st (SC_LSQR_FIELDS rows of k). The Lanczos
// vector u is kept unnormalised, u = st[UCOEF] * U, so that forming beta u = M v - alpha u
// and its norm is one pass over the (m, k) array. Vectors are float64; the products with A
// and R^-1 run in A's dtype T (float32 or float64). A column stops changing once converged.
#include "common.cuh"

#define SC_LSQR_ALPHA 0      // alpha_i
#define SC_LSQR_BETA_PREV 1  // beta_i (the v_{i-1} coefficient of M^T u_i)
#define SC_LSQR_RHOBAR 2
#define SC_LSQR_PHIBAR 3
#define SC_LSQR_RNORM 4      // ||b - M z||, LSQR's recurrence
#define SC_LSQR_ARNORM 5     // ||M^T (b - M z)||
#define SC_LSQR_ERR 6        // bound on ||x - x*|| / ||x||
#define SC_LSQR_CONV 7       // 1 once converged
#define SC_LSQR_UCOEF 8      // u = UCOEF * U
#define SC_LSQR_BNORM 9      // ||b||
#define SC_LSQR_ACC_B 10     // sum of squares of beta u (then beta^2)
#define SC_LSQR_ACC_A 11     // sum of squares of alpha v
#define SC_LSQR_ACC_Z 12     // ||z||^2
#define SC_LSQR_ACC_X 13     // ||R^-1 z||^2
#define SC_LSQR_ZC 14        // z += ZC w
#define SC_LSQR_WC 15        // w = v - WC w
#define SC_LSQR_VSCALE 16    // v = VSCALE p
#define SC_LSQR_ZERO 17      // alpha or beta vanished this iteration
#define SC_LSQR_FIELDS 18

// Sum of v over the block, added to *out by one atomic (blockDim.x a multiple of 32, <= 1024).
__device__ __forceinline__ void sc_block_sum_to(double v, double* out) {
    __shared__ double partial[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < (int)(blockDim.x >> 5) ? partial[lane] : 0.0;
        for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) atomicAdd(out, v);
    }
}

// beta u_{i+1} = M v_i - alpha_i u_i with Q = M v_i (m, k): U <- that (unnormalised), and
// its squared column norms into ACC_B. Grid (blocks, k): blockIdx.y is the column.
template <class T>
__global__ void sc_lsqr_u(const T* Q, double* U, sc_i64 m, int k, double* st) {
    const int c = blockIdx.y;
    if (st[SC_LSQR_CONV * k + c] != 0.0) return;       // uniform over the block
    const double coef = st[SC_LSQR_ALPHA * k + c] * st[SC_LSQR_UCOEF * k + c];
    double s = 0.0;
    for (sc_i64 i = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; i < m;
         i += (sc_i64)gridDim.x * blockDim.x) {
        const sc_i64 e = i * k + c;
        const double t = (double)Q[e] - coef * U[e];
        U[e] = t;
        s += t * t;
    }
    sc_block_sum_to(s, st + SC_LSQR_ACC_B * k + c);
}

// p = (M^T M v_i - alpha_i (alpha_i v_i + beta_i v_{i-1})) / beta_{i+1} - beta_{i+1} v_i,
// i.e. alpha_{i+1} v_{i+1} without a second pass over A (M^T u_i = alpha_i v_i +
// beta_i v_{i-1}); its squared column norms into ACC_A. MtMv (r, k) in T.
template <class T>
__global__ void sc_lsqr_p(const T* MtMv, const double* V, const double* Vp, double* P, int r,
                          int k, double* st) {
    const int c = blockIdx.y;
    if (st[SC_LSQR_CONV * k + c] != 0.0) return;
    const double alpha = st[SC_LSQR_ALPHA * k + c], beta_prev = st[SC_LSQR_BETA_PREV * k + c];
    const double beta = sqrt(st[SC_LSQR_ACC_B * k + c]);
    const double sb = beta > 0.0 ? beta : 1.0;
    double s = 0.0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < r; i += gridDim.x * blockDim.x) {
        const sc_i64 e = (sc_i64)i * k + c;
        const double p = ((double)MtMv[e] - alpha * (alpha * V[e] + beta_prev * Vp[e])) / sb
                         - beta * V[e];
        P[e] = p;
        s += p * p;
    }
    sc_block_sum_to(s, st + SC_LSQR_ACC_A * k + c);
}

// The plane rotation of the iteration, per column (one thread each): coefficients of the
// vector updates and the new scalars. Clears the reduction cells and the count of
// unconverged columns for the rest of the iteration.
extern "C" __global__ void sc_lsqr_scalars(int k, double* st, int* unconverged) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c == 0) *unconverged = 0;
    if (c >= k) return;
    double* f = st + c;
    if (f[SC_LSQR_CONV * k] == 0.0) {
        const double beta = sqrt(f[SC_LSQR_ACC_B * k]), alpha = sqrt(f[SC_LSQR_ACC_A * k]);
        const double sb = beta > 0.0 ? beta : 1.0, sa = alpha > 0.0 ? alpha : 1.0;
        const double rhobar = f[SC_LSQR_RHOBAR * k], phibar = f[SC_LSQR_PHIBAR * k];
        const double rho = sqrt(rhobar * rhobar + beta * beta);
        const double srho = rho > 0.0 ? rho : 1.0;
        const double cs = rhobar / srho, sn = beta / srho;
        const double phi = cs * phibar, phibar_new = sn * phibar;
        f[SC_LSQR_ZC * k] = phi / srho;
        f[SC_LSQR_WC * k] = sn * alpha / srho;            // theta / rho
        f[SC_LSQR_VSCALE * k] = 1.0 / sa;
        f[SC_LSQR_UCOEF * k] = 1.0 / sb;
        f[SC_LSQR_BETA_PREV * k] = beta;
        f[SC_LSQR_ALPHA * k] = alpha;
        f[SC_LSQR_RHOBAR * k] = -cs * alpha;
        f[SC_LSQR_PHIBAR * k] = phibar_new;
        f[SC_LSQR_RNORM * k] = phibar_new;
        f[SC_LSQR_ARNORM * k] = phibar_new * alpha * fabs(cs);
        f[SC_LSQR_ZERO * k] = (alpha == 0.0 || beta == 0.0) ? 1.0 : 0.0;
    }
    f[SC_LSQR_ACC_B * k] = 0.0;
    f[SC_LSQR_ACC_A * k] = 0.0;
}

// v_{i+1} = p / alpha_{i+1}; z += (phi / rho) w; w = v_{i+1} - (theta / rho) w; and Vt, the
// new v in T for the next product (the old one for converged columns). One thread per entry
// of the (r, k) arrays.
template <class T>
__global__ void sc_lsqr_vectors(double* V, double* Vp, double* W, double* z, const double* P,
                                T* Vt, int r, int k, const double* st) {
    const sc_i64 n = (sc_i64)r * k;
    for (sc_i64 e = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; e < n;
         e += (sc_i64)gridDim.x * blockDim.x) {
        const int c = (int)(e % k);
        double v = V[e];
        if (st[SC_LSQR_CONV * k + c] == 0.0) {
            const double vn = P[e] * st[SC_LSQR_VSCALE * k + c], w = W[e];
            z[e] += st[SC_LSQR_ZC * k + c] * w;
            W[e] = vn - st[SC_LSQR_WC * k + c] * w;
            Vp[e] = v;
            V[e] = vn;
            v = vn;
        }
        Vt[e] = sc_from<T>(v);
    }
}

// Squared column norms of z and X = R^-1 z (both (r, k)) into ACC_Z and ACC_X.
extern "C" __global__ void sc_lsqr_norms(const double* z, const double* X, int r, int k,
                                         double* st) {
    const int c = blockIdx.y;
    double sz = 0.0, sx = 0.0;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < r; i += gridDim.x * blockDim.x) {
        const sc_i64 e = (sc_i64)i * k + c;
        sz += z[e] * z[e];
        sx += X[e] * X[e];
    }
    sc_block_sum_to(sz, st + SC_LSQR_ACC_Z * k + c);
    __syncthreads();                                    // partial[] is reused
    sc_block_sum_to(sx, st + SC_LSQR_ACC_X * k + c);
}

// Stopping rule per column (one thread each): ||x - x*|| <= bound_factor ||M^T r|| with
// bound_factor = ||R^-1|| / s_min(M)^2, relative to ||x||, at most tol; or a consistent
// system solved (||r|| <= 10 eps (||b|| + ||z||)); or alpha or beta vanished. Counts the
// columns still running into *unconverged (zeroed by sc_lsqr_scalars).
extern "C" __global__ void sc_lsqr_check(int k, double* st, double bound_factor, double tol,
                                         double eps, int* unconverged) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= k) return;
    double* f = st + c;
    const double znorm = sqrt(f[SC_LSQR_ACC_Z * k]), xnorm = sqrt(f[SC_LSQR_ACC_X * k]);
    f[SC_LSQR_ACC_Z * k] = 0.0;
    f[SC_LSQR_ACC_X * k] = 0.0;
    if (f[SC_LSQR_CONV * k] == 0.0) {
        const double err = bound_factor * f[SC_LSQR_ARNORM * k] / (xnorm > 0.0 ? xnorm : 1.0);
        f[SC_LSQR_ERR * k] = err;
        const bool tiny = f[SC_LSQR_RNORM * k] <= 10.0 * eps * (f[SC_LSQR_BNORM * k] + znorm);
        if (err <= tol || tiny || f[SC_LSQR_ZERO * k] != 0.0) f[SC_LSQR_CONV * k] = 1.0;
    }
    if (f[SC_LSQR_CONV * k] == 0.0) atomicAdd(unconverged, 1);
}

// LSQR's pass over A (m, n) row-major, for one right-hand side: q = A p and w += A^T q
// (w zeroed by the caller) reading A once; two products read it twice. A warp takes ROWS
// rows at a time (grid-stride; their loads all in flight before the first reduction), lane
// l the columns l + 32 c (c < NC): a row's values stay in registers between its dot product
// (a warp reduction) and the update of the lane's part of w. The block's warps then sum
// their parts in shared memory (8 x 32 NC accumulators) and add them to W with one atomic
// per column and block (per warp, thousands of atomics hit each of the n addresses).
// n <= 32 NC, blockDim.x = 256.
template <class T, int NC>
__global__ void __launch_bounds__(256) sc_normal_pass(const T* A, sc_i64 m, int n, sc_i64 lda,
                                                      const T* P, T* Q, T* W) {
    typedef typename sc_acc<T>::type Acc;
    constexpr int ROWS = NC >= 16 ? 1 : (NC >= 8 ? 2 : 4);
    extern __shared__ __align__(16) unsigned char sc_smem[];
    Acc* part = (Acc*)sc_smem;                          // 8 x (32 NC)
    const int lane = threadIdx.x & 31, wib = threadIdx.x >> 5;
    const sc_i64 warp = ((sc_i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const sc_i64 nwarps = ((sc_i64)gridDim.x * blockDim.x) >> 5;
    Acc p[NC], w[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        const int j = lane + 32 * c;
        p[c] = j < n ? (Acc)P[j] : (Acc)0;
        w[c] = (Acc)0;
    }
    for (sc_i64 i0 = warp * ROWS; i0 < m; i0 += nwarps * ROWS) {
        Acc a[ROWS][NC], dot[ROWS];
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            const T* row = A + (i0 + r) * lda;
            const bool ok = i0 + r < m;
            dot[r] = (Acc)0;
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                const int j = lane + 32 * c;
                a[r][c] = ok && j < n ? (Acc)row[j] : (Acc)0;
            }
        }
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
#pragma unroll
            for (int c = 0; c < NC; ++c) dot[r] = fma(a[r][c], p[c], dot[r]);
        }
        for (int o = 16; o > 0; o >>= 1) {
#pragma unroll
            for (int r = 0; r < ROWS; ++r) dot[r] += __shfl_xor_sync(0xffffffffu, dot[r], o);
        }
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            if (lane == r && i0 + r < m) Q[i0 + r] = (T)dot[r];
#pragma unroll
            for (int c = 0; c < NC; ++c) w[c] = fma(dot[r], a[r][c], w[c]);
        }
    }
#pragma unroll
    for (int c = 0; c < NC; ++c) part[wib * 32 * NC + lane + 32 * c] = w[c];
    __syncthreads();
    for (int j = threadIdx.x; j < n; j += blockDim.x) {
        Acc s = (Acc)0;
        for (int q = 0; q < (int)(blockDim.x >> 5); ++q) s += part[q * 32 * NC + j];
        atomicAdd(W + j, (T)s);
    }
}
