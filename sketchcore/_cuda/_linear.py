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
from sketchcore._cuda._common import ctype_of, acc_dtype, i32, i64, NULL, zero

__all__ = ["sketched_linear_forward", "sketched_linear_backward", "HALF_PRODUCTS"]

#: Products of 16-bit layers: "tensor_core" (cuBLAS, 16-bit operands, float32 accumulation;
#: see ``_tensorcore``) or "simt" (gemm.cu: the 16-bit activation against float32 factors and
#: float32 intermediates, float32 FMA). Chosen by measurement (bench/sklinear_gpu.py): on an
#: H200, SKLinear(8192, 8192, 1, 16) fwd+bwd on 4096 16-bit tokens takes 0.50 ms of GPU time
#: with "tensor_core" (each product 40-55 us) against 0.82 ms with "simt". Earlier
#: tensor-core timings were slower and erratic for two reasons fixed since: cuBLAS ran on
#: whatever stream CuPy's shared handle last had, and the bias row made the inner
#: dimension odd (2K + 1), which cuBLAS ran 5x slower (now padded to a multiple of 8).
HALF_PRODUCTS = "tensor_core"


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
    launch(f"sc_stack<{fct}, {acc}>", (grid_size(A.size + B.size),), (256,),
           (S1s, S2s, U1s, U2s, NULL, i32(L), i64(m), i32(k), i64(o), i64(2 * K), A, B))
    return A, B


def _new(out, i, shape, dtype):
    """``out[i]`` when the caller supplied it (checked), else a new CuPy array."""
    import cupy
    given = None if out is None else out[i]
    if given is None:
        return cupy.empty(shape, dtype=dtype)
    if tuple(given.shape) != tuple(shape) or given.dtype != np.dtype(dtype) or not (
            given.flags.c_contiguous):
        raise ValueError(f"out[{i}]: expected a C-contiguous {np.dtype(dtype)} array of shape "
                         f"{tuple(shape)}, got {given.dtype} {tuple(given.shape)}")
    return given


def _convert(a_acc, ctype, acc, like_dtype, out=None):
    """Accumulator array -> storage type ``ctype`` (the same array when they agree and no
    ``out`` is given)."""
    if ctype == acc and out is None:
        return a_acc
    out = _new(None if out is None else (out,), 0, a_acc.shape, like_dtype)
    if ctype == acc:
        out[...] = a_acc
        return out
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


def sketched_linear_forward(x, S1s, S2s, U1s, U2s, bias=None, storage=None, out=None,
                            saved=None):
    """``(y, hidden)`` for x (n, m), factors as in ``sketchcore.layers``; CuPy in, CuPy out.

    Parameters
    ----------
    x : cupy.ndarray of shape (n, m), C-contiguous; float32, float64, float16, or bfloat16
        bits in an int16/uint16 array with ``storage="bfloat16"``.
    S1s, U2s : cupy.ndarray of shape (L, m, k)
    S2s, U1s : cupy.ndarray of shape (L, k, o)
        float32/float64, or x's 16-bit type.
    bias : cupy.ndarray of shape (o,) in x's storage type, optional
    out : (y, hidden), optional
        Preallocated C-contiguous results (shapes and dtypes as returned); lets a caller
        hand in memory from its own allocator (the torch adapter does).
    saved : dict, optional
        Filled with intermediates the backward can reuse (the stacked factors; for 16-bit
        layers the rounded hidden state too): pass the same dict to
        ``sketched_linear_backward(..., saved=saved)`` with unchanged factors.

    Returns
    -------
    y : cupy.ndarray of shape (n, o), x's dtype
    hidden : cupy.ndarray of shape (n, 2 L k); x's dtype for float32/float64, float32 for
        16-bit x (the thin intermediate keeps full precision).
    """
    import cupy
    xct, fct, acc, acc_np = _types(x, S1s, storage)
    if xct in ("sc_half", "sc_bf16") and HALF_PRODUCTS == "tensor_core":
        return _tc_forward(cupy.ascontiguousarray(x), *(cupy.ascontiguousarray(a) for a in
                                                        (S1s, S2s, U1s, U2s)),
                           None if bias is None else cupy.ascontiguousarray(bias), xct, fct,
                           out, saved)
    n, m = x.shape
    L, _, k = S1s.shape
    o = S2s.shape[2]
    K = L * k
    A, B = _stacks(S1s, S2s, U1s, U2s, fct, acc, acc_np)
    if saved is not None:
        saved["stacks"] = (A, B)
    hidden = _new(out, 1, (n, 2 * K), acc_np)
    gemm(n, 2 * K, m, Operand(x, xct, m, 1), Operand(A, acc, 2 * K, 1), hidden, acc, acc)
    y = _new(out, 0, (n, o), x.dtype)
    gemm(n, o, 2 * K, Operand(hidden, acc, 2 * K, 1), Operand(B, acc, o, 1), y, xct, acc,
         alpha=1.0 / (2 * L), bias=bias)
    if xct in ("float", "double"):
        hidden = hidden.astype(x.dtype, copy=False)
    return y, hidden


def sketched_linear_backward(g, x, hidden, S1s, S2s, U1s, U2s, has_bias, need_x=True,
                             need_weights=True, storage=None, out=None, saved=None):
    """``(grad_x, grad_S1s, grad_S2s, grad_bias)``; see ``sketchcore.layers``.

    ``hidden`` is the forward's second result or None (then recomputed: one more pass
    over x). Gradients not asked for (``need_x``, ``need_weights``, ``has_bias``) are None
    and cost nothing. grad_x comes back in x's dtype; the parameter gradients (factors and
    bias) in the factors' dtype (float32 factors under 16-bit activations keep float32
    gradients). ``saved`` is the forward's dict (see ``sketched_linear_forward``) or None.
    ``out`` = (grad_x, grad_S1s, grad_S2s, grad_bias) hands in result memory (None entries
    are allocated here); for 16-bit layers a grad_bias placed right after grad_S2s in memory
    is filled by grad_S2s's own product.
    """
    import cupy
    xct, fct, acc, acc_np = _types(x, S1s, storage)
    if xct in ("sc_half", "sc_bf16") and HALF_PRODUCTS == "tensor_core":
        return _tc_backward(cupy.ascontiguousarray(g), cupy.ascontiguousarray(x), hidden,
                            *(cupy.ascontiguousarray(a) for a in (S1s, S2s, U1s, U2s)),
                            has_bias, need_x, need_weights, xct, fct, out, saved)
    n, m = x.shape
    L, _, k = S1s.shape
    o = S2s.shape[2]
    K = L * k
    c = 1.0 / (2 * L)
    if saved is not None and "stacks" in saved:
        A, B = saved["stacks"]
    else:
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
        gx = _new(out, 0, (n, m), x.dtype)
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
        gS1 = cupy.empty((m, K), dtype=acc_np) if not direct else _new(out, 1, (1, m, k), acc_np)
        gemm(m, K, n, Operand(x, xct, 1, m), Operand(G, acc, G.shape[1], 1), gS1, acc, acc,
             alpha=c)
        if not direct:
            out1 = _new(out, 1, S1s.shape, S1s.dtype)
            launch(f"sc_unstack_s1<{fct}, {acc}>", (grid_size(m * K),), (256,),
                   (gS1, i32(L), i64(m), i32(k), out1))
            gS1 = out1
        # grad_S2 = c hidden[:, K:]^T g (K, o), already S2s's (L, k, o) layout.
        gS2 = (_new(out, 2, (L, k, o), acc_np) if fct == acc
               else cupy.empty((L, k, o), dtype=acc_np))
        gemm(K, o, n, Operand(hidden[:, K:], acc, 1, 2 * K), Operand(g, xct, o, 1), gS2, acc,
             acc, alpha=c)
        if fct != acc:
            gS2 = _convert(gS2, fct, acc, S1s.dtype, None if out is None else out[2])
    if has_bias:
        if fct == acc:
            gb_acc = zero(_new(out, 3, (o,), acc_np))
        else:
            gb_acc = zero(cupy.empty(o, dtype=acc_np))
        rows = 256
        launch(f"sc_colsum<{xct}, {acc}>", (-(-o // 256), -(-n // rows)), (256,),
               (i64(n), i64(o), g, i64(o), gb_acc, i64(rows)))
        gb = gb_acc if fct == acc else _convert(   # a parameter's gradient: factor dtype
            gb_acc, fct, acc, S1s.dtype, None if out is None else out[3])
    return gx, gS1, gS2, gb


# ----------------------------------------------------------- 16-bit layers on tensor cores
def _tc_inner(K2):
    """Inner dimension of the output product: 2K columns, the bias column, zero padding to
    a multiple of 8. cuBLAS's tensor-core kernels want it so: with an odd inner dimension
    (2K + 1) the product fell back to a path measured 5x slower on an H200."""
    return -(-(K2 + 1) // 8) * 8


def _tc_stacks(S1s, S2s, U1s, U2s, bias, fct, xct, xdtype):
    """A16 = [S1s | U2s] (m, 2K) and Bext = [U1s ; S2s ; bias ; 0] (_tc_inner(2K), o) in x's
    16-bit type, in one launch (sc_stack)."""
    import cupy
    L, m, k = S1s.shape
    o = S2s.shape[2]
    K2 = 2 * L * k
    KP = _tc_inner(K2)
    A16 = cupy.empty((m, K2), dtype=xdtype)
    B16 = cupy.empty((KP, o), dtype=xdtype)
    launch(f"sc_stack<{fct}, {xct}>", (grid_size(A16.size + B16.size),), (256,),
           (S1s, S2s, U1s, U2s, NULL if bias is None else bias, i32(L), i64(m), i32(k),
            i64(o), i64(KP), A16, B16))
    return A16, B16


def _tc_hidden16(hidden, n, K2, L, xct, xdtype):
    """H16 = [round16(hidden), 2L, 0...] (n, _tc_inner(K2)) in one launch: the constant
    column carries the bias row of Bext (and, in the backward, turns grad_S2's product into
    the bias gradient's too); the zero columns pad the inner dimension (no host-to-device
    copy, hence no synchronisation)."""
    import cupy
    ld = _tc_inner(K2)
    H16 = cupy.empty((n, ld), dtype=xdtype)
    launch(f"sc_hidden16<{xct}>", (grid_size(n * ld),), (256,),
           (hidden, i64(n), i32(K2), i32(ld), np.float32(2 * L), H16))
    return H16


def _tc_forward(x, S1s, S2s, U1s, U2s, bias, xct, fct, out=None, saved=None):
    from sketchcore._cuda._tensorcore import Mat, gemm_rm
    n, m = x.shape
    L, _, k = S1s.shape
    o = S2s.shape[2]
    K2 = 2 * L * k
    A16, B16 = _tc_stacks(S1s, S2s, U1s, U2s, bias, fct, xct, x.dtype)
    hidden = _new(out, 1, (n, K2), np.float32)
    gemm_rm(Mat(hidden.data.ptr, "float", n, K2, K2), Mat(x.data.ptr, xct, n, m, m),
            Mat(A16.data.ptr, xct, m, K2, K2))
    H16 = _tc_hidden16(hidden, n, K2, L, xct, x.dtype)
    ldh = H16.shape[1]
    y = _new(out, 0, (n, o), x.dtype)
    gemm_rm(Mat(y.data.ptr, xct, n, o, o), Mat(H16.data.ptr, xct, n, ldh, ldh),
            Mat(B16.data.ptr, xct, ldh, o, o), alpha=1.0 / (2 * L))
    if saved is not None:
        saved["stacks16"] = (A16, B16)       # B16's bias row is not read by the backward
        saved["hidden16"] = H16
    return y, hidden


def _adjacent(first, second):
    """Whether array ``second`` starts right where C-contiguous ``first`` ends."""
    return (first is not None and second is not None and second.dtype == first.dtype
            and second.data.ptr == first.data.ptr + first.nbytes)


def _tc_backward(g, x, hidden, S1s, S2s, U1s, U2s, has_bias, need_x, need_weights, xct, fct,
                 out=None, saved=None):
    """Gradients of a 16-bit layer: four tensor-core products, each writing its result in
    its final type (cuBLAS rounds the float32 accumulators), so no conversion launches."""
    import cupy
    from sketchcore._cuda._tensorcore import Mat, gemm_rm
    n, m = x.shape
    L, _, k = S1s.shape
    o = S2s.shape[2]
    K = L * k
    K2 = 2 * K
    c = 1.0 / (2 * L)
    saved = {} if saved is None else saved
    gx = gS1 = gS2 = gb = None
    colsum = has_bias            # bias gradient still to compute on its own
    it = np.dtype(x.dtype).itemsize
    if need_x or need_weights:
        A16, B16 = saved.get("stacks16") or _tc_stacks(S1s, S2s, U1s, U2s, None, fct, xct,
                                                        x.dtype)
        G16 = cupy.empty((n, K2), dtype=x.dtype)          # g B^T, rounded by cuBLAS
        gemm_rm(Mat(G16.data.ptr, xct, n, K2, K2), Mat(g.data.ptr, xct, n, o, o),
                Mat(B16.data.ptr, xct, o, K2, o, t=True))
    if need_x:
        gx = _new(out, 0, (n, m), x.dtype)
        gemm_rm(Mat(gx.data.ptr, xct, n, m, m), Mat(G16.data.ptr, xct, n, K2, K2),
                Mat(A16.data.ptr, xct, K2, m, K2, t=True), alpha=c)
    if need_weights:
        H16 = saved.get("hidden16")
        if H16 is None:
            if hidden is None:
                hidden = cupy.empty((n, K2), dtype=np.float32)
                gemm_rm(Mat(hidden.data.ptr, "float", n, K2, K2),
                        Mat(x.data.ptr, xct, n, m, m), Mat(A16.data.ptr, xct, m, K2, K2))
            H16 = _tc_hidden16(cupy.ascontiguousarray(hidden, dtype=np.float32), n, K2, L, xct,
                               x.dtype)
        ldh = H16.shape[1]
        pdt = S1s.dtype                                   # gradients in the factors' type
        # grad_S1 = c x^T G[:, :K] (m, K): for one term already S1s's (1, m, k) layout.
        if L == 1:
            gS1 = _new(out, 1, (1, m, k), pdt)
            gemm_rm(Mat(gS1.data.ptr, fct, m, K, K), Mat(x.data.ptr, xct, m, n, m, t=True),
                    Mat(G16.data.ptr, xct, n, K, K2), alpha=c)
        else:
            g1 = cupy.empty((m, K), dtype=np.float32)
            gemm_rm(Mat(g1.data.ptr, "float", m, K, K), Mat(x.data.ptr, xct, m, n, m, t=True),
                    Mat(G16.data.ptr, xct, n, K, K2), alpha=c)
            gS1 = _new(out, 1, S1s.shape, pdt)
            launch(f"sc_unstack_s1<{fct}, float>", (grid_size(m * K),), (256,),
                   (g1, i32(L), i64(m), i32(k), gS1))
        # grad_S2 = c hidden[:, K:]^T g (K, o), S2s's (L, k, o) layout. With the bias the
        # product takes one more row of H16^T, the constant 2L column: c 2L sum_rows g is
        # the bias gradient, written right after grad_S2 when the caller's memory is so.
        gS2 = _new(out, 2, (L, k, o), pdt)
        gb_given = None if out is None else out[3]
        fused = has_bias and (gb_given is None or _adjacent(gS2, gb_given))
        if fused and gb_given is None:
            both = cupy.empty((K + 1) * o, dtype=pdt)
            gS2 = both[:K * o].reshape(L, k, o)
            gb = both[K * o:]
        elif fused:
            gb = gb_given
        rows = K + 1 if fused else K
        gemm_rm(Mat(gS2.data.ptr, fct, rows, o, o),
                Mat(H16.data.ptr + K * it, xct, rows, n, ldh, t=True),
                Mat(g.data.ptr, xct, n, o, o), alpha=c)
        colsum = has_bias and not fused
    if colsum:
        gb_acc = zero(cupy.empty(o, dtype=np.float32))
        launch(f"sc_colsum<{xct}, float>", (-(-o // 256), -(-n // 256)), (256,),
               (i64(n), i64(o), g, i64(o), gb_acc, i64(256)))
        gb = _convert(gb_acc, fct, "float", S1s.dtype, None if out is None else out[3])
    return gx, gS1, gS2, gb
