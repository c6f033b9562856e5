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
// A thread takes one Philox block of a row (entries 4b .. 4b + 3 of the stream) and writes
// those of its entries that fall in the requested columns: one Philox block and at most two
// Box-Muller pairs for four entries (a thread per entry had computed a block and a pair for
// each; the GPU's slab products generate all of S this way). Grid: x over the Philox blocks
// a row touches (nc / 4 + 2 at most), y over rows (a stride loop).
template <class T>
__global__ void sc_dense_block(int kind, sc_u64 seed, sc_u64 stream, sc_i64 m, sc_i64 r0,
                               sc_i64 j0, sc_i64 nr, sc_i64 nc, double scale, T* out) {
    const sc_i64 q = blockIdx.x * (sc_i64)blockDim.x + threadIdx.x;
    for (sc_i64 i = blockIdx.y; i < nr; i += gridDim.y) {
        const sc_u64 first = (sc_u64)((r0 + i) * m + j0);     // the row's first entry
        const sc_u64 b = (first >> 2) + (sc_u64)q;            // this thread's Philox block
        if (4 * b >= first + (sc_u64)nc) continue;            // past the row's entries
        const sc_words w = sc_philox_block(seed, stream, b);
        T* row = out + i * nc;
        float raw[4] = {0.0f, 0.0f, 0.0f, 0.0f};
        if (kind == 0) {
            // A pair is computed only where one of its entries is wanted.
            if (4 * b + 1 >= first) sc_gauss_pair(w.w[0], w.w[1], raw[0], raw[1]);
            if (4 * b + 2 < first + (sc_u64)nc) sc_gauss_pair(w.w[2], w.w[3], raw[2], raw[3]);
        } else {
#pragma unroll
            for (int k = 0; k < 4; ++k) raw[k] = (w.w[k] >> 31) ? -1.0f : 1.0f;
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) {
            const sc_u64 e = 4 * b + k;
            if (e >= first && e < first + (sc_u64)nc)
                row[e - first] = sc_from<T>(scale * (double)raw[k]);
        }
    }
}
