"""Gaussian and sign sketches on the GPU, applied tile by tile (gemm.cu generates S inside
the product; the operator is never stored). Mirrors ``sketchcore._cpu._dense``."""
import math

import numpy as np

from sketchcore._cuda._gemm import Operand, gemm, MODE_SIGN, MODE_GAUSSIAN
from sketchcore._cuda._loader import launch, grid_size
from sketchcore._cuda._common import ctype_of, require_cupy_2d, i32, i64, u64, f64

__all__ = ["gaussian_left", "gaussian_right", "sign_left", "sign_right", "dense_block"]

KIND_GAUSSIAN, KIND_SIGN = 0, 1


def _apply(mode, A, d, seed, stream, right):
    import cupy
    A = require_cupy_2d(A, "A")
    ct = ctype_of(A)
    if ct not in ("float", "double"):
        raise TypeError(f"A must be float32 or float64, got {A.dtype}")
    d = int(d)
    scale = 1.0 / math.sqrt(d) if d > 0 else 1.0
    if right:                                  # (n, m) @ S.T -> (n, d)
        n, m = A.shape
        out = cupy.zeros((n, d), dtype=A.dtype)
        if n == 0 or d == 0 or m == 0:
            return out
        a = Operand(A, ct, m, 1)
        b = Operand(None, ct, 1, m, mode, seed, stream, scale)   # B[k, j] = S[j, k]
        return gemm(n, d, m, a, b, out, ct, ct)
    m, n = A.shape                             # S (d, m) @ (m, n) -> (d, n)
    out = cupy.zeros((d, n), dtype=A.dtype)
    if n == 0 or d == 0 or m == 0:
        return out
    a = Operand(None, ct, m, 1, mode, seed, stream, scale)
    b = Operand(A, ct, n, 1)
    return gemm(d, n, m, a, b, out, ct, ct)


def gaussian_left(A, d, seed, stream, tile=0):
    """``S @ A`` for the Gaussian operator S (d, m); A cupy.ndarray of shape (m, n) -> (d, n).

    ``tile`` is accepted for signature parity with the CPU kernel and ignored (the GPU
    tiles are fixed by the kernel)."""
    return _apply(MODE_GAUSSIAN, A, d, seed, stream, False)


def gaussian_right(A, d, seed, stream, tile=0):
    """``A @ S.T`` for the Gaussian operator S (d, m); A of shape (n, m) -> (n, d)."""
    return _apply(MODE_GAUSSIAN, A, d, seed, stream, True)


def sign_left(A, d, seed, stream, tile=0):
    """``S @ A`` for the sign operator S (d, m) (entries +-1/sqrt(d)) -> (d, n)."""
    return _apply(MODE_SIGN, A, d, seed, stream, False)


def sign_right(A, d, seed, stream, tile=0):
    """``A @ S.T`` for the sign operator S (d, m); A of shape (n, m) -> (n, d)."""
    return _apply(MODE_SIGN, A, d, seed, stream, True)


def dense_block(kind, seed, stream, m, r0, r1, j0, j1, scale, dtype):
    """Rows r0:r1, columns j0:j1 of a dense operator with m columns (kind 0 Gaussian, 1 sign),
    entries ``dtype(scale * value)`` with the product in float64; cupy.ndarray (r1-r0, j1-j0).
    Bit-identical to the CPU's ``dense_block``."""
    import cupy
    nr, nc = max(int(r1) - int(r0), 0), max(int(j1) - int(j0), 0)
    out = cupy.empty((nr, nc), dtype=np.dtype(dtype))
    ct = ctype_of(out)
    if nr and nc:
        launch(f"sc_dense_block<{ct}>", (grid_size(nr * nc),), (256,),
               (i32(kind), u64(seed), u64(stream), i64(m), i64(r0), i64(j0), i64(nr), i64(nc),
                f64(scale), out))
    return out
