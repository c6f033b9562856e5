"""16-bit SKLinear products on tensor cores through cuBLAS (``cublasGemmEx``).

Used by ``_linear`` for float16/bfloat16 activations when ``HALF_PRODUCTS == "tensor_core"``:
every product takes two 16-bit operands and accumulates in float32 (CUBLAS_COMPUTE_32F), for
any shape. Operands in 16 bits means the float32 factors and the thin float32 intermediates
(hidden = x A, G = grad_y B^T) are rounded to the activation's type before they enter a
product, exactly like a torch bfloat16 layer (autocast included) rounds them; the error
bound this adds (a few 16-bit units of ``|x| |A| |B|``) is what tests/gpu checks.
The bias rides along as an extra row of B against a constant column of hidden, so the
output is written once, by the product itself.
"""
import numpy as np

from sketchcore._cuda import _trace

__all__ = ["Mat", "gemm_rm", "lt_plan", "lt_handle"]

_CUDA_R = {"float": 0, "double": 1, "sc_half": 2, "sc_bf16": 14}
_COMPUTE_32F, _COMPUTE_64F = 68, 70
_OP_N, _OP_T = 0, 1
_GEMM_DEFAULT = -1


class Mat:
    """A row-major matrix in device memory: ``rows x cols`` as used in the product; when
    ``t`` the memory holds its transpose (``cols x rows`` rows of ``ld`` elements)."""

    __slots__ = ("ptr", "ctype", "rows", "cols", "ld", "t")

    def __init__(self, ptr, ctype, rows, cols, ld, t=False):
        self.ptr, self.ctype, self.rows, self.cols, self.ld, self.t = (
            int(ptr), ctype, int(rows), int(cols), int(ld), bool(t))


_WORKSPACE_BYTES = 32 << 20   # cuBLAS's recommendation for Hopper
_handles = {}         # device id -> [cuBLAS handle, bound stream, workspace]
_scalars = {}         # (value, dtype) -> (array, its address): alpha/beta by pointer
_lib = []             # [ctypes cuBLAS functions or None], filled once


def _cublas_ctypes():
    """cuBLAS's create/setStream/setWorkspace/GemmEx through ctypes, from the very library
    CuPy loaded (found in the process's memory map), or None where that is not possible.

    CuPy's own bindings refuse to run while a stream is being captured into a CUDA graph;
    these calls do not, which is what lets torch capture a 16-bit SKLinear
    (``make_graphed_callables``): cuBLAS itself supports capture once the handle has a
    workspace of its own (``cublasSetStream`` resets it, so it is set again each time).
    """
    if _lib:
        return _lib[0]
    import ctypes
    from cupy_backends.cuda.libs import cublas   # noqa: F401  (loads libcublas)
    vp, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
    bound = _bind_loaded("/libcublas.so", {
        "cublasCreate_v2": [ctypes.POINTER(vp)],
        "cublasSetStream_v2": [vp, vp],
        "cublasSetWorkspace_v2": [vp, vp, sz],
        "cublasGemmEx": [vp, i, i, i, i, i, vp, vp, i, i, vp, i, i, vp, vp, i, i, i, i]})
    _lib.append(None if bound is None else bound[1])
    return _lib[0]


def _bind_loaded(fragment, spec):
    """``(library, {name: ctypes function})`` for the one library already in this process
    whose path contains ``fragment`` (read from /proc/self/maps), each function of ``spec``
    ({name: argtypes}) returning a C int; None when there is not exactly one such library
    or it lacks a function."""
    import ctypes
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if fragment in line}
        if len(paths) != 1:
            return None
        lib = ctypes.CDLL(paths.pop())
        funcs = {}
        for name, argtypes in spec.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = argtypes, ctypes.c_int
            funcs[name] = fn
        return lib, funcs
    except (OSError, AttributeError):
        return None


def _check(status, what):
    if status != 0:
        raise RuntimeError(f"{what} failed with cuBLAS status {status}")


def _handle(stream=None):
    """sketchcore's own cuBLAS handle for the current device, bound to ``stream`` (a raw
    handle; default CuPy's current stream, torch's inside the bridge). Own rather than
    CuPy's shared handle, whose stream CuPy rebinds before each of its own calls: this one
    is rebound only when the stream actually changes (setStream and the handle lookup were
    a third of a call's host time)."""
    import cupy
    dev = cupy.cuda.runtime.getDevice()
    funcs = _cublas_ctypes()
    entry = _handles.get(dev)
    if entry is None:
        if funcs is not None:
            import ctypes
            h = ctypes.c_void_p()
            _check(funcs["cublasCreate_v2"](ctypes.byref(h)), "cublasCreate")
            handle = h.value
        else:
            from cupy.cuda import cublas
            handle = cublas.create()
        with _trace.untracked():          # the handle's for good, not the call's
            workspace = cupy.cuda.memory.alloc(_WORKSPACE_BYTES)
        entry = _handles[dev] = [handle, None, workspace]
    if stream is None:
        stream = cupy.cuda.get_current_stream().ptr
    if entry[1] != stream:
        if funcs is not None:
            _check(funcs["cublasSetStream_v2"](entry[0], stream), "cublasSetStream")
            _check(funcs["cublasSetWorkspace_v2"](entry[0], entry[2].ptr, _WORKSPACE_BYTES),
                   "cublasSetWorkspace")
        else:
            from cupy.cuda import cublas
            cublas.setStream(entry[0], stream)
        entry[1] = stream
    return entry[0]


def _scalar(v, dtype=np.float32):
    """Host address of ``v`` as a ``dtype`` scalar (alpha/beta by pointer), kept alive."""
    entry = _scalars.get((v, dtype))
    if entry is None:
        a = np.array(v, dtype=dtype)
        entry = _scalars[(v, dtype)] = (a, a.ctypes.data)
    return entry[1]


def gemm_rm(C, A, B, alpha=1.0, beta=0.0):
    """``C = alpha A B + beta C`` for row-major Mats through cuBLAS (column-major): computed
    as ``C^T = B^T A^T``. Runs on CuPy's current stream. Float32 and 16-bit operands
    accumulate in float32 (plain float32 arithmetic: no TF32), float64 ones in float64."""
    M, K = A.rows, A.cols
    N = B.cols
    if B.rows != K or C.rows != M or C.cols != N:
        raise ValueError(f"shapes: A {M}x{K}, B {B.rows}x{N}, C {C.rows}x{C.cols}")
    if M == 0 or N == 0:
        return
    wide = A.ctype == "double"
    scalar = np.float64 if wide else np.float32
    args = (_handle(), _OP_T if B.t else _OP_N, _OP_T if A.t else _OP_N, N, M, K,
            _scalar(float(alpha), scalar), B.ptr, _CUDA_R[B.ctype], B.ld, A.ptr,
            _CUDA_R[A.ctype], A.ld, _scalar(float(beta), scalar), C.ptr, _CUDA_R[C.ctype],
            C.ld, _COMPUTE_64F if wide else _COMPUTE_32F, _GEMM_DEFAULT)
    _trace.note_gemm(args)
    funcs = _cublas_ctypes()
    if funcs is not None:
        _check(funcs["cublasGemmEx"](*args), "cublasGemmEx")
    else:
        from cupy.cuda import cublas
        cublas.gemmEx(*args)


# ------------------------------------------------- cuBLASLt plans for replayed products
# A replayed product (``_trace``) has fixed shapes, types and transposes, so its algorithm
# can be chosen once: cublasLtMatmul with descriptors and an algorithm found at recording
# time skips what cublasGemmEx redoes on every call (descriptors, heuristic lookup), about
# 30 us of host time per product on the H200 machine's host.
_LT_TRANSA, _LT_TRANSB = 3, 4                   # cublasLtMatmulDescAttributes_t
_LT_PREF_MAX_WORKSPACE = 1                      # cublasLtMatmulPreferenceAttributes_t
_LT_PREF_MIN_ALIGNMENT = (5, 6, 7, 8)           # ... of A, B, C, D in bytes
_LT_WORKSPACE_BYTES = 32 << 20
_lt = []             # [ctypes cuBLASLt functions or None], filled once
_lt_state = {}       # device id -> (Lt handle, workspace allocation)


def _lt_ctypes():
    """cuBLASLt's functions through ctypes, from the libcublasLt that cuBLAS loaded."""
    if _lt:
        return _lt[0]
    import ctypes
    funcs = None
    if _cublas_ctypes() is not None:
        vp, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
        bound = _bind_loaded("/libcublasLt.so", {
            "cublasLtCreate": [ctypes.POINTER(vp)],
            "cublasLtMatmulDescCreate": [ctypes.POINTER(vp), i, i],
            "cublasLtMatmulDescSetAttribute": [vp, i, vp, sz],
            "cublasLtMatrixLayoutCreate": [ctypes.POINTER(vp), i, ctypes.c_uint64,
                                           ctypes.c_uint64, ctypes.c_int64],
            "cublasLtMatmulPreferenceCreate": [ctypes.POINTER(vp)],
            "cublasLtMatmulPreferenceSetAttribute": [vp, i, vp, sz],
            "cublasLtMatmulAlgoGetHeuristic": [vp, vp, vp, vp, vp, vp, vp, i, vp,
                                               ctypes.POINTER(i)],
            "cublasLtMatmulDescDestroy": [vp],
            "cublasLtMatrixLayoutDestroy": [vp],
            "cublasLtMatmulPreferenceDestroy": [vp]})
        if bound is not None:
            lib, funcs = bound
            funcs["matmul_address"] = ctypes.cast(lib.cublasLtMatmul, vp).value
    _lt.append(funcs)
    return funcs


def lt_handle():
    """(cuBLASLt handle, workspace address, workspace bytes) of the current device, or
    None where cuBLASLt is not reachable."""
    import ctypes
    import cupy
    from sketchcore._cuda import _trace
    funcs = _lt_ctypes()
    if funcs is None:
        return None
    dev = cupy.cuda.runtime.getDevice()
    state = _lt_state.get(dev)
    if state is None:
        h = ctypes.c_void_p()
        _check(funcs["cublasLtCreate"](ctypes.byref(h)), "cublasLtCreate")
        with _trace.untracked():
            workspace = cupy.cuda.memory.alloc(_LT_WORKSPACE_BYTES)
        state = _lt_state[dev] = (h.value, workspace)
    return state[0], state[1].ptr, _LT_WORKSPACE_BYTES


class _LtPlan:
    """Descriptors and algorithm of one product; destroys the descriptors with itself."""

    __slots__ = ("desc", "layouts", "algo", "workspace")

    def __del__(self):
        funcs = _lt[0] if _lt else None
        if funcs is None:
            return
        for lay in getattr(self, "layouts", ()):
            funcs["cublasLtMatrixLayoutDestroy"](lay)
        desc = getattr(self, "desc", None)
        if desc is not None:
            funcs["cublasLtMatmulDescDestroy"](desc)


def lt_plan(args, align):
    """A cuBLASLt plan for the product of cublasGemmEx arguments ``args`` (as ``gemm_rm``
    builds them) whose operands are ``align``-byte aligned, or None (no cuBLASLt, or no
    algorithm for it). A replay must check the alignment (algorithms may need it).

    Returns ``(plan, cells)``: ``cells`` are the cublasLtMatmul arguments after the handle,
    in order (desc, alpha, A, Adesc, B, Bdesc, beta, C, Cdesc, D, Ddesc, algo, workspace,
    workspace bytes), device addresses left as ``args`` has them; ``plan`` keeps the
    descriptors alive."""
    import ctypes
    funcs = _lt_ctypes()
    state = lt_handle()
    if funcs is None or state is None:
        return None
    handle, workspace, ws_bytes = state
    (_, ta, tb, m, n, k, alpha, A, atype, lda, B, btype, ldb, beta, C, ctype, ldc, compute,
     _) = args
    vp = ctypes.c_void_p
    plan = _LtPlan()
    desc = vp()
    _check(funcs["cublasLtMatmulDescCreate"](ctypes.byref(desc), compute, _CUDA_R["float"]),
           "cublasLtMatmulDescCreate")
    for attr, value in ((_LT_TRANSA, ta), (_LT_TRANSB, tb)):
        v = ctypes.c_int32(value)
        _check(funcs["cublasLtMatmulDescSetAttribute"](desc, attr, ctypes.byref(v), 4),
               "cublasLtMatmulDescSetAttribute")
    layouts = []
    for typ, rows, cols, ld in ((atype, m if ta == _OP_N else k, k if ta == _OP_N else m, lda),
                                (btype, k if tb == _OP_N else n, n if tb == _OP_N else k, ldb),
                                (ctype, m, n, ldc)):
        lay = vp()
        _check(funcs["cublasLtMatrixLayoutCreate"](ctypes.byref(lay), typ, rows, cols, ld),
               "cublasLtMatrixLayoutCreate")
        layouts.append(lay)
    pref = vp()
    _check(funcs["cublasLtMatmulPreferenceCreate"](ctypes.byref(pref)),
           "cublasLtMatmulPreferenceCreate")
    cap = ctypes.c_uint64(ws_bytes)
    _check(funcs["cublasLtMatmulPreferenceSetAttribute"](pref, _LT_PREF_MAX_WORKSPACE,
                                                          ctypes.byref(cap), 8),
           "cublasLtMatmulPreferenceSetAttribute")
    need_align = ctypes.c_uint32(align)
    for attr in _LT_PREF_MIN_ALIGNMENT:
        _check(funcs["cublasLtMatmulPreferenceSetAttribute"](pref, attr,
                                                              ctypes.byref(need_align), 4),
               "cublasLtMatmulPreferenceSetAttribute")
    result = ctypes.create_string_buffer(96)       # cublasLtMatmulHeuristicResult_t
    count = ctypes.c_int(0)
    status = funcs["cublasLtMatmulAlgoGetHeuristic"](handle, desc, layouts[0], layouts[1],
                                                     layouts[2], layouts[2], pref, 1, result,
                                                     ctypes.byref(count))
    funcs["cublasLtMatmulPreferenceDestroy"](pref)
    plan.desc, plan.layouts = desc, layouts       # destroyed with the plan from here on
    # The result: algo (64 bytes), workspace size (size_t), state (cublasStatus_t), ...
    if status != 0 or count.value < 1 or ctypes.c_int.from_buffer(result, 72).value != 0:
        return None
    need = ctypes.c_size_t.from_buffer(result, 64).value
    plan.algo, plan.workspace = result, need
    cells = [desc.value, alpha, A, layouts[0].value, B, layouts[1].value, beta, C,
             layouts[2].value, C, layouts[2].value, ctypes.addressof(result), workspace, need]
    return plan, cells
