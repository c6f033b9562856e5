// Layout kernels of the sketched linear layer (the products themselves run in gemm.cu or
// cuBLAS).
//
// sc_stack: A = [S1s[0] .. S1s[L-1] | U2s[0] .. U2s[L-1]] (m, 2K) and
// B = [U1s ; S2s ; bias ; 0 ...] (rows_b, o), K = L k, in one launch, converted to the
// products' operand type TOut. rows_b = 2K gives the plain stack; the tensor-core products
// take rows_b > 2K: the bias row (zeros without a bias) and zero rows padding the inner
// dimension.
// sc_unstack_s1: the (m, K) gradient of A's S1 half back to the (L, m, k) layout of S1s.
// sc_hidden16: the 16-bit hidden operand of the tensor-core output product, [hidden | 2L | 0].
#include "common.cuh"

template <class TF, class TOut>
__global__ void sc_stack(const TF* S1s, const TF* S2s, const TF* U1s, const TF* U2s,
                         const TOut* bias, int L, sc_i64 m, int k, sc_i64 o, sc_i64 rows_b,
                         TOut* A, TOut* B) {
    const sc_i64 K = (sc_i64)L * k, K2 = 2 * K;
    const sc_i64 na = m * K2, total = na + rows_b * o;
    for (sc_i64 e = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; e < total;
         e += (sc_i64)gridDim.x * blockDim.x) {
        if (e < na) {
            const sc_i64 r = e / K2, c = e % K2;
            const sc_i64 cc = c < K ? c : c - K;
            const sc_i64 i = cc / k, q = cc % k;
            const TF* src = c < K ? S1s : U2s;
            A[e] = sc_from<TOut>((double)sc_to_float(src[(i * m + r) * k + q]));
        } else {
            const sc_i64 f = e - na;
            const sc_i64 row = f / o, j = f % o;
            if (row == K2 && bias != nullptr) {
                B[f] = bias[j];
            } else {
                const double v = row < K ? (double)sc_to_float(U1s[row * o + j])
                               : row < K2 ? (double)sc_to_float(S2s[(row - K) * o + j]) : 0.0;
                B[f] = sc_from<TOut>(v);
            }
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

// H16 (n, ld) = [hidden | c | 0 ...] for float hidden (n, K2), ld > K2, in 16 bits.
template <class T>
__global__ void sc_hidden16(const float* hidden, sc_i64 n, int K2, int ld, float c, T* H) {
    const sc_i64 total = n * ld;
    for (sc_i64 e = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; e < total;
         e += (sc_i64)gridDim.x * blockDim.x) {
        const sc_i64 i = e / ld;
        const int col = (int)(e % ld);
        const float v = col < K2 ? hidden[i * K2 + col] : (col == K2 ? c : 0.0f);
        H[e] = sc_from_f<T>(v);
    }
}
