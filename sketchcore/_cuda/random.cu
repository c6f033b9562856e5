// Array fills from the Philox streams: the CUDA twins of sketchcore/_cpu/_random.pyx.
// Grid-stride loops; entry i of `out` is entry (start + i) of the stream.
#include "common.cuh"

extern "C" __global__ void sc_philox4x32(const sc_u32* ctr, const sc_u32* key, sc_u32* out,
                                         sc_i64 n) {
    for (sc_i64 i = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; i < n;
         i += (sc_i64)gridDim.x * blockDim.x) {
        sc_u32 c0 = ctr[4 * i], c1 = ctr[4 * i + 1], c2 = ctr[4 * i + 2], c3 = ctr[4 * i + 3];
        sc_philox10(c0, c1, c2, c3, key[2 * i], key[2 * i + 1]);
        out[4 * i] = c0; out[4 * i + 1] = c1; out[4 * i + 2] = c2; out[4 * i + 3] = c3;
    }
}

extern "C" __global__ void sc_fill_words(sc_u64 seed, sc_u64 stream, sc_u64 start, sc_u32* out,
                                         sc_i64 n) {
    for (sc_i64 i = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; i < n;
         i += (sc_i64)gridDim.x * blockDim.x) {
        out[i] = sc_philox_word(seed, stream, start + (sc_u64)i);
    }
}

template <class T>
__global__ void sc_fill_uniform(sc_u64 seed, sc_u64 stream, sc_u64 start, T* out, sc_i64 n) {
    for (sc_i64 i = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; i < n;
         i += (sc_i64)gridDim.x * blockDim.x) {
        out[i] = sc_from<T>(sc_u32_to_open01(sc_philox_word(seed, stream, start + (sc_u64)i)));
    }
}

template <class T>
__global__ void sc_fill_sign(sc_u64 seed, sc_u64 stream, sc_u64 start, T* out, sc_i64 n,
                             double scale) {
    for (sc_i64 i = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; i < n;
         i += (sc_i64)gridDim.x * blockDim.x) {
        out[i] = sc_from<T>((sc_philox_word(seed, stream, start + (sc_u64)i) >> 31) ? -scale
                                                                                     : scale);
    }
}

template <class T>
__global__ void sc_fill_gaussian(sc_u64 seed, sc_u64 stream, sc_u64 start, T* out, sc_i64 n,
                                 double scale) {
    for (sc_i64 i = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; i < n;
         i += (sc_i64)gridDim.x * blockDim.x) {
        out[i] = sc_from<T>(scale * sc_philox_gaussian(seed, stream, start + (sc_u64)i));
    }
}

// Rows r0..r0+nr, columns j0..j0+nc of a dense operator with m columns:
// out[i, j] = T(scale * raw) in float64, raw = float32 Gaussian (kind 0) or +-1 (kind 1)
// of entry (r0 + i) * m + j0 + j, exactly as sketchcore._cpu._dense.dense_block.
template <class T>
__global__ void sc_dense_block(int kind, sc_u64 seed, sc_u64 stream, sc_i64 m, sc_i64 r0,
                               sc_i64 j0, sc_i64 nr, sc_i64 nc, double scale, T* out) {
    const sc_i64 total = nr * nc;
    for (sc_i64 e = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x; e < total;
         e += (sc_i64)gridDim.x * blockDim.x) {
        const sc_u64 index = (sc_u64)((r0 + e / nc) * m + j0 + e % nc);
        float raw;
        if (kind == 0) raw = sc_philox_gaussian(seed, stream, index);
        else raw = (sc_philox_word(seed, stream, index) >> 31) ? -1.0f : 1.0f;
        out[e] = sc_from<T>(scale * (double)raw);
    }
}
