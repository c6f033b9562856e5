"""SKLinear forward/backward on the GPU: the CUDA twins of ``sketchcore._cpu._linear``.

Same stacked formulation (see that module): A = [S1s | U2s] (m, 2K), B = [U1s ; S2s] (2K, o),
hidden = x A, y = c hidden B + bias with c = 1/(2L). Every product runs in gemm.cu with
float32 accumulation (float64 for float64), split-K where the output is thin, so the big
activations (x, y, grad_out, grad_x) are each read or written once per product, and 16-bit
activations (float16, bfloat16) are used directly: products take the 16-bit operand and a
float32 factor, the thin intermediates (hidden, grad_out B^T) stay float32.

16-bit entry points take ``storage="bfloat16"`` for bfloat16 data carried as int16/uint16
CuPy arrays (CuPy has no bfloat16 dtype); float16 is CuPy's own float16.
"""
import numpy as np

from sketchcore._cuda._gemm import Operand, gemm
from sketchcore._cuda._loader import launch, grid_size
from sketchcore._cuda._common import ctype_of, acc_dtype, i32, i64, NULL

__all__ = ["sketched_linear_forward", "sketched_linear_backward"]


def _stacks(S1s, S2s, U1s, U2s, fct, acc, acc_np):
    """A = [S1s | U2s] (m, 2K) and B = [U1s ; S2s] (2K, o) in the accumulation type (one
    launch; the factors' own dtype, 16-bit included, is widened on the fly)."""
    import cupy
    L, m, k = S1s.shape
    o = S2s.shape[2]
    K = L * k
    A = cupy.empty((m, 2 * K), dtype=acc_np)
    B = cupy.empty((2 * K, o), dtype=acc_np)
    S1s, S2s, U1s, U2s = (cupy.ascontiguousarray(a) for a in (S1s, S2s, U1s, U2s))
    launch(f"sc_stack_factors<{fct}, {acc}>", (grid_size(A.size + B.size),), (256,),
           (S1s, S2s, U1s, U2s, i32(L), i64(m), i32(k), i64(o), A, B))
    return A, B


def _convert(a_acc, ctype, acc, like_dtype):
    """Accumulator array -> storage type ``ctype`` (same array when they agree)."""
    import cupy
    if ctype == acc:
        return a_acc
    out = cupy.empty(a_acc.shape, dtype=like_dtype)
    n = a_acc.size
    launch(f"sc_gemm_finalize<{ctype}, {acc}>", (grid_size(n),), (256,),
           (i64(1), i64(n), a_acc, i64(n), out, i64(n), NULL))
    return out


def _types(x, S1s, storage):
    xct = ctype_of(x, storage)
    fct = ctype_of(S1s, storage if S1s.dtype.itemsize == 2 and S1s.dtype.kind in "iu" else None)
    if (xct == "double") != (fct == "double"):
        raise TypeError("float64 layers need float64 activations and factors")
    acc_np = acc_dtype(xct)
    acc = "double" if xct == "double" else "float"
    return xct, fct, acc, acc_np


def sketched_linear_forward(x, S1s, S2s, U1s, U2s, bias=None, storage=None):
    """``(y, hidden)`` for x (n, m), factors as in ``sketchcore.layers``; CuPy in, CuPy out.

    Parameters
    ----------
    x : cupy.ndarray of shape (n, m), C-contiguous; float32, float64, float16, or bfloat16
        bits in an int16/uint16 array with ``storage="bfloat16"``.
    S1s, U2s : cupy.ndarray of shape (L, m, k)
    S2s, U1s : cupy.ndarray of shape (L, k, o)
        float32/float64, or x's 16-bit type.
    bias : cupy.ndarray of shape (o,) in x's storage type, optional

    Returns
    -------
    y : cupy.ndarray of shape (n, o), x's dtype
    hidden : cupy.ndarray of shape (n, 2 L k); x's dtype for float32/float64, float32 for
        16-bit x (the thin intermediate keeps full precision).
    """
    import cupy
    xct, fct, acc, acc_np = _types(x, S1s, storage)
    n, m = x.shape
    L, _, k = S1s.shape
    o = S2s.shape[2]
    K = L * k
    A, B = _stacks(S1s, S2s, U1s, U2s, fct, acc, acc_np)
    hidden = cupy.empty((n, 2 * K), dtype=acc_np)
    gemm(n, 2 * K, m, Operand(x, xct, m, 1), Operand(A, acc, 2 * K, 1), hidden, acc, acc)
    y = cupy.empty((n, o), dtype=x.dtype)
    gemm(n, o, 2 * K, Operand(hidden, acc, 2 * K, 1), Operand(B, acc, o, 1), y, xct, acc,
         alpha=1.0 / (2 * L), bias=bias)
    if xct in ("float", "double"):
        hidden = hidden.astype(x.dtype, copy=False)
    return y, hidden


def sketched_linear_backward(g, x, hidden, S1s, S2s, U1s, U2s, has_bias, need_x=True,
                             need_weights=True, storage=None):
    """``(grad_x, grad_S1s, grad_S2s, grad_bias)``; see ``sketchcore.layers``.

    ``hidden`` is the forward's second result or None (then recomputed: one more pass
    over x). Gradients not asked for (``need_x``, ``need_weights``, ``has_bias``) are None
    and cost nothing. Factor gradients come back in the factors' dtype, grad_x and
    grad_bias in x's.
    """
    import cupy
    xct, fct, acc, acc_np = _types(x, S1s, storage)
    n, m = x.shape
    L, _, k = S1s.shape
    o = S2s.shape[2]
    K = L * k
    c = 1.0 / (2 * L)
    A, B = _stacks(S1s, S2s, U1s, U2s, fct, acc, acc_np)
    gx = gS1 = gS2 = gb = None
    if need_x or need_weights:
        # G = g B^T (n, 2K): B^T's (k=j, n=r) = B[r, j] at r*o + j. Only the U1 half is
        # needed for the weights alone.
        width = 2 * K if need_x else K
        G = cupy.empty((n, width), dtype=acc_np)
        gemm(n, width, o, Operand(g, xct, o, 1), Operand(B, acc, 1, o), G, acc, acc)
    if need_x:
        # grad_x = c G A^T (n, m): A^T's (k=r, n=i) = A[i, r] at i*2K + r.
        gx = cupy.empty((n, m), dtype=x.dtype)
        gemm(n, m, 2 * K, Operand(G, acc, 2 * K, 1), Operand(A, acc, 1, 2 * K), gx, xct, acc,
             alpha=c)
    if need_weights:
        if hidden is None:
            hidden = cupy.empty((n, 2 * K), dtype=acc_np)
            gemm(n, 2 * K, m, Operand(x, xct, m, 1), Operand(A, acc, 2 * K, 1), hidden, acc,
                 acc)
        else:
            hidden = cupy.ascontiguousarray(hidden, dtype=acc_np)
        # grad_S1 = c x^T G[:, :K] (m, K): x^T's (i, kk) = x[kk*m + i]; for one term in the
        # factors' own precision the (m, K) layout already is S1s's (1, m, k).
        direct = L == 1 and fct == acc
        gS1 = cupy.empty((m, K), dtype=acc_np) if not direct else cupy.empty((1, m, k), acc_np)
        gemm(m, K, n, Operand(x, xct, 1, m), Operand(G, acc, G.shape[1], 1), gS1, acc, acc,
             alpha=c)
        if not direct:
            out1 = cupy.empty(S1s.shape, dtype=S1s.dtype)
            launch(f"sc_unstack_s1<{fct}, {acc}>", (grid_size(m * K),), (256,),
                   (gS1, i32(L), i64(m), i32(k), out1))
            gS1 = out1
        # grad_S2 = c hidden[:, K:]^T g (K, o), already S2s's (L, k, o) layout.
        gS2 = cupy.empty((L, k, o), dtype=acc_np)
        gemm(K, o, n, Operand(hidden[:, K:], acc, 1, 2 * K), Operand(g, xct, o, 1), gS2, acc,
             acc, alpha=c)
        gS2 = _convert(gS2, fct, acc, S1s.dtype)
    if has_bias:
        gb_acc = cupy.zeros(o, dtype=acc_np)
        rows = 256
        launch(f"sc_colsum<{xct}, {acc}>", (-(-o // 256), -(-n // rows)), (256,),
               (i64(n), i64(o), g, i64(o), gb_acc, i64(rows)))
        gb = _convert(gb_acc, xct, acc, x.dtype)
    return gx, gS1, gS2, gb
