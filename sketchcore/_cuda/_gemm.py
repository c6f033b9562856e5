"""Host side of the tiled CUDA GEMM (gemm.cu): tile choice, split-K, finalisation.

``gemm(M, N, K, a, b, out, ...)`` computes ``out = alpha * A @ B (+ bias)`` where each operand
is an ``Operand``: strided device memory, or a Gaussian/sign operator generated on the fly.
"""

import numpy as np

from sketchcore._cuda._loader import (launch, gemm_name, wide_name, gemm_combos, GEMM_TILES,
                                     device_properties, grid_size)
from sketchcore._cuda._common import NULL, i32, i64, u64, f64, zero

__all__ = ["Operand", "gemm", "MODE_MEMORY", "MODE_SIGN", "MODE_GAUSSIAN"]

MODE_MEMORY, MODE_SIGN, MODE_GAUSSIAN = 0, 1, 2
_BK = 32
_COMBOS = set(gemm_combos())


class Operand:
    """One GEMM operand: element (r, c) at ``ptr[r * s_r + c * s_c]`` or generated.

    Parameters
    ----------
    array : cupy.ndarray or None
        Device memory (any view; its data pointer is used). None for generated operands.
    ctype : str
        C++ storage type (float, double, sc_half, sc_bf16).
    s_r, s_c : int
        Element strides (memory) or index strides into the row-major operator (generated).
    mode : int
        MODE_MEMORY, MODE_SIGN or MODE_GAUSSIAN.
    seed, stream : int
        Philox key and stream of a generated operator.
    scale : float
        Entry magnitude of a generated operator (1/sqrt(d)).
    """

    def __init__(self, array, ctype, s_r, s_c, mode=MODE_MEMORY, seed=0, stream=0, scale=1.0):
        self.array, self.ctype, self.s_r, self.s_c = array, ctype, int(s_r), int(s_c)
        self.mode, self.seed, self.stream, self.scale = mode, seed, stream, scale

    def args(self):
        ptr = self.array if self.array is not None else NULL
        return (ptr, i64(self.s_r), i64(self.s_c), i32(self.mode), u64(self.seed),
                u64(self.stream), f64(self.scale))


def _tile(N):
    if N <= 16:
        return GEMM_TILES[2]
    if N <= 32:
        return GEMM_TILES[1]
    return GEMM_TILES[0]


def gemm(M, N, K, a, b, out, out_ctype, acc, alpha=1.0, bias=None, ldc=None, ldc_c=1):
    """``out = alpha * A @ B (+ bias)`` with A (M, K), B (K, N) as Operands.

    ``out``'s element (i, j) is at ``out[i * ldc + j * ldc_c]`` (default: C-contiguous
    (M, N)) and has storage type ``out_ctype``; ``acc`` is ``"float"`` or ``"double"``.
    A thin, wide product (M small, N large, no bias) is computed as its transpose
    (B^T A^T) so that the thin side maps onto the thin tiles. When the output grid alone
    cannot fill the device, the K dimension is split across blocks that add into a zeroed
    ``acc`` workspace (or straight into ``out`` when it is that type and there is no
    bias), then ``sc_gemm_finalize`` converts.
    """
    import cupy
    ldc = N if ldc is None else ldc
    if M == 0 or N == 0:
        return out
    if (0 < K <= 64 and a.mode == MODE_MEMORY and b.mode == MODE_MEMORY and a.ctype == acc
            and b.ctype == acc and a.s_c == 1 and ldc_c == 1 and N >= 256):
        return _wide(M, N, K, a, b, out, out_ctype, acc, alpha, bias, ldc)
    if bias is None and M <= 32 and N >= 4 * M:
        at = Operand(b.array, b.ctype, b.s_c, b.s_r, b.mode, b.seed, b.stream, b.scale)
        bt = Operand(a.array, a.ctype, a.s_c, a.s_r, a.mode, a.seed, a.stream, a.scale)
        if (at.ctype, bt.ctype, out_ctype, acc) in _COMBOS:
            M, N, a, b, ldc, ldc_c = N, M, at, bt, ldc_c, ldc
    bm, bn = _tile(N)
    gm, gn = -(-M // bm), -(-N // bn)
    sms, _ = device_properties()
    split = 1
    if K > 4 * _BK:
        want = max(1, (4 * sms) // (gm * gn))
        split = max(1, min(want, K // (4 * _BK), 65535))
    kchunk = -(-K // split)
    kchunk = -(-kchunk // _BK) * _BK if K > 0 else _BK
    split = max(1, -(-K // kchunk)) if K > 0 else 1
    gen = a.mode != MODE_MEMORY or b.mode != MODE_MEMORY
    name = gemm_name(a.ctype, b.ctype, out_ctype, acc, bm, bn, gen)
    acc_np = np.float64 if acc == "double" else np.float32
    if K == 0 or split > 1:
        direct = out_ctype == acc and bias is None
        if direct:
            ws, wr, wc = out, ldc, ldc_c
            zero(ws)              # callers pass whole arrays, so this is exactly the output
        else:
            if ldc_c != 1:
                raise ValueError("a converted split-K output must have unit column stride")
            ws, wr, wc = zero(cupy.empty((M, N), dtype=acc_np)), N, 1
        if K > 0:
            launch(name, (gm, gn, split), (256,),
                   (i32(M), i32(N), i32(K), *a.args(), *b.args(),
                    NULL, i64(wr), i64(wc), ws, f64(alpha), NULL, i32(kchunk)))
        if not direct:
            fin = f"sc_gemm_finalize<{out_ctype}, {acc}>"
            launch(fin, (grid_size(M * N),), (256,),
                   (i64(M), i64(N), ws, i64(N), out, i64(ldc),
                    bias if bias is not None else NULL))
        return out
    launch(name, (gm, gn, 1), (256,),
           (i32(M), i32(N), i32(K), *a.args(), *b.args(),
            out, i64(ldc), i64(ldc_c), NULL, f64(alpha), bias if bias is not None else NULL,
            i32(kchunk)))
    return out


def _wide(M, N, R, a, b, out, out_ctype, acc, alpha, bias, ldc):
    """Short inner dimension (R <= 64): sc_wide keeps B's columns in registers."""
    rmax = 32 if R <= 32 else 64
    cols = 2 if rmax == 32 else 1
    sms, _ = device_properties()
    gx = -(-N // (256 * cols))
    gy = max(1, min(-(-M // 32), (4 * sms + gx - 1) // gx))
    rows = -(-M // gy)
    rows = -(-rows // 32) * 32
    gy = -(-M // rows)
    launch(wide_name(out_ctype, acc, rmax), (gx, gy), (256,),
           (i32(M), i32(N), i32(R), a.array, i64(a.s_r), b.array, i64(b.s_r), i64(b.s_c),
            out, i64(ldc), f64(alpha), bias if bias is not None else NULL, i32(rows)))
    return out
