"""Gaussian and sign sketches on the GPU, never stored whole. Mirrors
``sketchcore._cpu._dense``.

Two ways to apply them (``method``):

- ``"slabs"``: S is generated a slab of columns at a time into a bounded workspace
  (``SLAB_BYTES``; one Philox block gives four entries, ``sc_dense_block``) and each slab's
  product is accumulated by cuBLAS. Generation costs one pass over the slab; the products
  run at cuBLAS's rate whatever the width of A.
- ``"fused"``: gemm.cu's tiled product generates each tile of S inside the product (no
  workspace at all), four entries per Philox block where the operator's rows are a
  multiple of 4 long (else entry by entry), but again for every tile of 64 columns of A
  (rows of A for ``A @ S.T``).

The default (None) takes "fused" for narrow A (at most ``FUSED_MAX_N`` columns, rows for
the right apply) when m % 4 == 0, else "slabs". Measured on an H200 (Gaussian, d = 256,
m = 65536, ms, slabs of 32 MiB / fused / cuBLAS on a stored S): float32, n = 4: 0.28 / 0.11 / 0.20;
n = 64: 0.21 / 0.17 / 0.12; n = 128: 0.20 / 0.29 / 0.12; n = 256: 0.28 / 0.55 / 0.19;
float64, n = 16: 0.22 / 0.13 / 0.06; n = 128: 0.28 / 0.51 / 0.11. m = 1e6, d = 128,
float32, n = 16: 1.50 / 0.73 / 0.51. m = 65537 (entry by entry), float32, n = 16: 0.23 /
0.29 / 0.10. Before either (a Philox block per entry, inside the product): 0.89 ms at
n = 256, 1.44 at m = 1e6, n = 16.
"""
import math

import numpy as np

from sketchcore._cuda._gemm import Operand, gemm, MODE_SIGN, MODE_GAUSSIAN
from sketchcore._cuda._loader import launch, device_properties
from sketchcore._cuda._common import ctype_of, require_cupy_2d, i32, i64, u64, f64
from sketchcore._cuda._tensorcore import Mat, gemm_rm

__all__ = ["gaussian_left", "gaussian_right", "sign_left", "sign_right", "dense_block",
           "METHODS", "FUSED_MAX_N", "SLAB_BYTES"]

KIND_GAUSSIAN, KIND_SIGN = 0, 1
METHODS = ("slabs", "fused")
#: Widest A (columns; rows for the right apply) the default sends to the fused kernel.
FUSED_MAX_N = 64
#: Workspace of the "slabs" method: d x (slab columns) entries of S at most (at least 128
#: columns whatever d).
SLAB_BYTES = 64 << 20


def _apply(mode, A, d, seed, stream, right, method=None):
    import cupy
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS} or None, got {method!r}")
    A = require_cupy_2d(A, "A")
    ct = ctype_of(A)
    if ct not in ("float", "double"):
        raise TypeError(f"A must be float32 or float64, got {A.dtype}")
    d = int(d)
    scale = 1.0 / math.sqrt(d) if d > 0 else 1.0
    if right:                                  # (n, m) @ S.T -> (n, d)
        n, m = A.shape
        shape = (n, d)
    else:                                      # S (d, m) @ (m, n) -> (d, n)
        m, n = A.shape
        shape = (d, n)
    if n == 0 or d == 0 or m == 0:
        return cupy.zeros(shape, dtype=A.dtype)
    if method is None:
        method = "fused" if n <= FUSED_MAX_N and m % 4 == 0 else "slabs"
    if method == "slabs":
        return _apply_slabs(mode, A, d, m, n, seed, stream, scale, right)
    out = cupy.zeros(shape, dtype=A.dtype)
    if right:
        a = Operand(A, ct, m, 1)
        b = Operand(None, ct, 1, m, mode, seed, stream, scale)   # B[k, j] = S[j, k]
        return gemm(n, d, m, a, b, out, ct, ct)
    a = Operand(None, ct, m, 1, mode, seed, stream, scale)
    b = Operand(A, ct, n, 1)
    return gemm(d, n, m, a, b, out, ct, ct)


def _apply_slabs(mode, A, d, m, n, seed, stream, scale, right):
    """S @ A (or A @ S.T with ``right``) for C-contiguous A, slab by slab of S's columns:
    out = sum over slabs of S[:, j0:j1] @ A[j0:j1] (A[:, j0:j1] @ S[:, j0:j1].T)."""
    import cupy
    ct = ctype_of(A)
    size = A.itemsize
    kind = KIND_GAUSSIAN if mode == MODE_GAUSSIAN else KIND_SIGN
    width = min(m, max(128, SLAB_BYTES // (d * size)))
    work = cupy.empty(d * width, dtype=A.dtype)
    out = cupy.empty((d, n) if not right else (n, d), dtype=A.dtype)
    C = Mat(out.data.ptr, ct, out.shape[0], out.shape[1], out.shape[1])
    for j0 in range(0, m, width):
        w = min(width, m - j0)
        G = work[:d * w].reshape(d, w)
        _fill_block(kind, seed, stream, m, 0, j0, d, w, scale, G)
        beta = 0.0 if j0 == 0 else 1.0          # the first slab writes out (uninitialised)
        if right:                               # out (n, d) += A[:, j0:j1] @ G.T
            a = Mat(A.data.ptr + j0 * size, ct, n, w, m)
            gemm_rm(C, a, Mat(G.data.ptr, ct, w, d, w, t=True), beta=beta)
        else:                                   # out (d, n) += G @ A[j0:j1]
            b = Mat(A.data.ptr + j0 * n * size, ct, w, n, n)
            gemm_rm(C, Mat(G.data.ptr, ct, d, w, w), b, beta=beta)
    return out


def _fill_block(kind, seed, stream, m, r0, j0, nr, nc, scale, out):
    """``out`` (C-contiguous cupy (nr, nc)) = rows r0:r0+nr, columns j0:j0+nc of the
    operator (see ``dense_block``)."""
    per_row = (nc + 3) // 4 + 1                  # Philox blocks a row's entries touch
    sms = device_properties()[0]
    gx = -(-per_row // 256)
    gy = max(1, min(nr, 65535, -(-sms * 8 // gx)))
    launch(f"sc_dense_block<{ctype_of(out)}>", (gx, gy), (256,),
           (i32(kind), u64(seed), u64(stream), i64(m), i64(r0), i64(j0), i64(nr), i64(nc),
            f64(scale), out))


def gaussian_left(A, d, seed, stream, tile=0, method=None):
    """``S @ A`` for the Gaussian operator S (d, m); A cupy.ndarray of shape (m, n) -> (d, n).

    ``tile`` is accepted for signature parity with the CPU kernel and ignored (the GPU
    tiles are fixed by the kernels); ``method`` is "slabs", "fused" or None (the faster
    for the shape; module docstring).

    Raises
    ------
    TypeError
        A is not a float32/float64 CuPy array.
    ValueError
        A is not 2-D, or ``method`` is unknown.
    """
    return _apply(MODE_GAUSSIAN, A, d, seed, stream, False, method)


def gaussian_right(A, d, seed, stream, tile=0, method=None):
    """``A @ S.T`` for the Gaussian operator S (d, m); A of shape (n, m) -> (n, d).
    Arguments and errors as ``gaussian_left``."""
    return _apply(MODE_GAUSSIAN, A, d, seed, stream, True, method)


def sign_left(A, d, seed, stream, tile=0, method=None):
    """``S @ A`` for the sign operator S (d, m) (entries +-1/sqrt(d)) -> (d, n).
    Arguments and errors as ``gaussian_left``."""
    return _apply(MODE_SIGN, A, d, seed, stream, False, method)


def sign_right(A, d, seed, stream, tile=0, method=None):
    """``A @ S.T`` for the sign operator S (d, m); A of shape (n, m) -> (n, d).
    Arguments and errors as ``gaussian_left``."""
    return _apply(MODE_SIGN, A, d, seed, stream, True, method)


def dense_block(kind, seed, stream, m, r0, r1, j0, j1, scale, dtype):
    """Rows r0:r1, columns j0:j1 of a dense operator with m columns (kind 0 Gaussian, 1 sign),
    entries ``dtype(scale * value)`` with the product in float64; cupy.ndarray (r1-r0, j1-j0).
    Bit-identical to the CPU's ``dense_block``."""
    import cupy
    nr, nc = max(int(r1) - int(r0), 0), max(int(j1) - int(j0), 0)
    out = cupy.empty((nr, nc), dtype=np.dtype(dtype))
    if nr and nc:
        _fill_block(kind, seed, stream, m, r0, j0, nr, nc, scale, out)
    return out
