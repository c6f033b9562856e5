"""Helpers shared by the CUDA kernel wrappers: dtype names, typed scalars, validation."""
import numpy as np

__all__ = ["ctype_of", "acc_dtype", "NULL", "i32", "i64", "u64", "f64", "require_cupy_2d",
           "BF16", "zero"]

#: Marker for bfloat16 data carried in a uint16/int16 CuPy array (CuPy has no bfloat16).
BF16 = "bfloat16"

NULL = np.uint64(0)          # a null device pointer as a kernel argument


def i32(v):
    return np.int32(v)


def i64(v):
    return np.int64(v)


def u64(v):
    return np.uint64(int(v) & 0xFFFFFFFFFFFFFFFF)


def f64(v):
    return np.float64(v)


def ctype_of(arr, storage=None):
    """C++ storage type of a CuPy array: float, double, sc_half or sc_bf16.

    Raises
    ------
    TypeError
        A dtype the kernels do not take (bfloat16 must be a 16-bit integer view with
        ``storage="bfloat16"``).
    """
    dt = np.dtype(arr.dtype)
    if storage == BF16:
        if dt.itemsize != 2 or dt.kind not in "iu":
            raise TypeError(f"bfloat16 data must travel as a 16-bit integer view, got {dt}")
        return "sc_bf16"
    if dt == np.float32:
        return "float"
    if dt == np.float64:
        return "double"
    if dt == np.float16:
        return "sc_half"
    raise TypeError(f"CUDA kernels take float32, float64, float16 or bfloat16, got {dt}")


def acc_dtype(ctype):
    """Accumulator dtype for a storage type: float64 for double, float32 otherwise."""
    return np.float64 if ctype == "double" else np.float32


def require_cupy_2d(a, name):
    """Return ``a`` as a C-contiguous 2-D CuPy array; raise TypeError/ValueError otherwise."""
    import cupy
    if not isinstance(a, cupy.ndarray):
        raise TypeError(f"{name} must be a CuPy array, got {type(a).__name__}")
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D, got shape {a.shape}")
    return cupy.ascontiguousarray(a)


def zero(a):
    """Fill CuPy array ``a`` with zeros on CuPy's current stream; returns ``a``. For a
    C-contiguous array this is a memset a launch trace can replay (``_trace``)."""
    import cupy
    from sketchcore._cuda import _trace
    if not a.flags.c_contiguous:          # a strided view: CuPy's fill, not replayable
        rec = _trace.recording()
        if rec is not None:
            rec.fail("zero fill of a strided view")
        a.fill(0)
    elif a.nbytes:
        _trace.note_memset(a.data.ptr, a.nbytes)
        cupy.cuda.runtime.memsetAsync(a.data.ptr, 0, a.nbytes,
                                      cupy.cuda.get_current_stream().ptr)
    return a
