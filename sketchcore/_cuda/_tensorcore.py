"""16-bit SKLinear products on tensor cores through cuBLAS (``cublasGemmEx`` via CuPy).

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


def gemm_rm(C, A, B, alpha=1.0, beta=0.0):
    """``C = alpha A B + beta C`` for row-major Mats through cuBLAS (column-major): computed
    as ``C^T = B^T A^T``. Runs on CuPy's current stream."""
    import cupy
    from cupy.cuda import cublas
    M, K = A.rows, A.cols
    N = B.cols
    if B.rows != K or C.rows != M or C.cols != N:
        raise ValueError(f"shapes: A {M}x{K}, B {B.rows}x{N}, C {C.rows}x{C.cols}")
    if M == 0 or N == 0:
        return
    a = np.array(alpha, dtype=np.float32)
    b = np.array(beta, dtype=np.float32)
    handle = cupy.cuda.device.get_cublas_handle()
    # CuPy's shared handle keeps whatever stream its last user set: bind it to the current
    # one (torch's, inside the bridge), as CuPy's own matmul does before each call.
    cublas.setStream(handle, cupy.cuda.get_current_stream().ptr)
    cublas.gemmEx(handle, _OP_T if B.t else _OP_N, _OP_T if A.t else _OP_N, N, M, K,
                  a.ctypes.data, B.ptr, _CUDA_R[B.ctype], B.ld, A.ptr, _CUDA_R[A.ctype], A.ld,
                  b.ctypes.data, C.ptr, _CUDA_R[C.ctype], C.ld, _COMPUTE_32F, _GEMM_DEFAULT)
