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

__all__ = ["Mat", "gemm_rm"]

_CUDA_R = {"float": 0, "sc_half": 2, "sc_bf16": 14}
_COMPUTE_32F = 68
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
_scalars = {}         # float -> (float32 array, its address): alpha/beta by pointer
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
    funcs = None
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "/libcublas.so" in line}
        if len(paths) == 1:
            lib = ctypes.CDLL(paths.pop())
            vp, i, sz = ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t
            spec = {"cublasCreate_v2": [ctypes.POINTER(vp)],
                    "cublasSetStream_v2": [vp, vp],
                    "cublasSetWorkspace_v2": [vp, vp, sz],
                    "cublasGemmEx": [vp, i, i, i, i, i, vp, vp, i, i, vp, i, i, vp, vp, i, i,
                                     i, i]}
            funcs = {}
            for name, argtypes in spec.items():
                fn = getattr(lib, name)
                fn.argtypes, fn.restype = argtypes, ctypes.c_int
                funcs[name] = fn
    except (OSError, AttributeError):
        funcs = None
    _lib.append(funcs)
    return funcs


def _check(status, what):
    if status != 0:
        raise RuntimeError(f"{what} failed with cuBLAS status {status}")


def _handle():
    """sketchcore's own cuBLAS handle for the current device, bound to CuPy's current
    stream (torch's, inside the bridge). Own rather than CuPy's shared handle, whose stream
    CuPy rebinds before each of its own calls: this one is rebound only when the stream
    actually changes (setStream and the handle lookup were a third of a call's host time)."""
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
        entry = _handles[dev] = [handle, None, cupy.cuda.memory.alloc(_WORKSPACE_BYTES)]
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


def _scalar(v):
    entry = _scalars.get(v)
    if entry is None:
        a = np.array(v, dtype=np.float32)
        entry = _scalars[v] = (a, a.ctypes.data)
    return entry[1]


def gemm_rm(C, A, B, alpha=1.0, beta=0.0):
    """``C = alpha A B + beta C`` for row-major Mats through cuBLAS (column-major): computed
    as ``C^T = B^T A^T``. Runs on CuPy's current stream."""
    M, K = A.rows, A.cols
    N = B.cols
    if B.rows != K or C.rows != M or C.cols != N:
        raise ValueError(f"shapes: A {M}x{K}, B {B.rows}x{N}, C {C.rows}x{C.cols}")
    if M == 0 or N == 0:
        return
    args = (_handle(), _OP_T if B.t else _OP_N, _OP_T if A.t else _OP_N, N, M, K,
            _scalar(float(alpha)), B.ptr, _CUDA_R[B.ctype], B.ld, A.ptr, _CUDA_R[A.ctype],
            A.ld, _scalar(float(beta)), C.ptr, _CUDA_R[C.ctype], C.ld, _COMPUTE_32F,
            _GEMM_DEFAULT)
    funcs = _cublas_ctypes()
    if funcs is not None:
        _check(funcs["cublasGemmEx"](*args), "cublasGemmEx")
    else:
        from cupy.cuda import cublas
        cublas.gemmEx(*args)
