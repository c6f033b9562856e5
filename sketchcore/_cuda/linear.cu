// Layout kernels of the sketched linear layer (the products themselves run in gemm.cu).
//
// sc_stack_factors: A = [S1s[0] .. S1s[L-1] | U2s[0] .. U2s[L-1]] (m, 2K) and
// B = [U1s ; S2s] (2K, o), K = L k, in the accumulation type, in one launch.
// sc_unstack_s1: the (m, K) gradient of A's S1 half back to the (L, m, k) layout of S1s.
#include "common.cuh"

template <class TF, class Acc>
__global__ void sc_stack_factors(const TF* S1s, const TF* S2s, const TF* U1s, const TF* U2s,
                                 int L, sc_i64 m, int k, sc_i64 o, Acc* A, Acc* B) {
    const sc_i64 K = (sc_i64)L * k, K2 = 2 * K;
    const sc_i64 na = m * K2, total = na + K2 * o;
    for (sc_i64 e = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; e < total;
         e += (sc_i64)gridDim.x * blockDim.x) {
        if (e < na) {
            const sc_i64 r = e / K2, c = e % K2;
            const sc_i64 cc = c < K ? c : c - K;
            const sc_i64 i = cc / k, q = cc % k;
            const TF* src = c < K ? S1s : U2s;
            A[e] = (Acc)sc_to_float(src[(i * m + r) * k + q]);
        } else {
            const sc_i64 f = e - na;
            const sc_i64 row = f / o, j = f % o;
            B[f] = (Acc)sc_to_float(row < K ? U1s[row * o + j] : S2s[(row - K) * o + j]);
        }
    }
}

template <class TF, class Acc>
__global__ void sc_unstack_s1(const Acc* G, int L, sc_i64 m, int k, TF* out) {
    const sc_i64 K = (sc_i64)L * k, total = m * K;
    for (sc_i64 e = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; e < total;
         e += (sc_i64)gridDim.x * blockDim.x) {
        const sc_i64 r = e / K, c = e % K;
        const sc_i64 i = c / k, q = c % k;
        sc_store(out + (i * m + r) * k + q, G[e]);
    }
}
