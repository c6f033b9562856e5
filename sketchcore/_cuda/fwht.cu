// Fast Walsh-Hadamard transform along axis 0 of a (p, n) array, in place, unnormalised
// (Sylvester ordering: y = H x with H[i, k] = (-1)^popcount(i & k)).
//
// One pass does L radix-2 stages in shared memory: a block loads the 2^L rows
// base + r*h (r < 2^L) of a 32-column tile, runs the butterflies, writes them back.
// The host chains passes with h = 1, 2^L1, 2^(L1+L2), ... until all log2(p) stages ran.
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
