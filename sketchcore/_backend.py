"""Where an array lives and which kernels serve it; shared input validation.

This is the one dispatch point of the library: public functions call ``get_backend(*arrays)``
and receive the kernel package for those arrays (``sketchcore._cpu`` for NumPy,
``sketchcore._cuda`` for CuPy). CuPy is recognised by the array's type, without importing
CuPy, so ``import sketchcore`` needs only NumPy and SciPy.
"""
import numbers

import numpy as np

__all__ = ["array_namespace", "get_backend", "xp_of", "check_array", "check_size",
           "check_real_dtype", "check_same_dtype", "REAL_DTYPES"]

REAL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _is_cupy(x):
    return type(x).__module__.split(".", 1)[0] == "cupy"


def array_namespace(*arrays):
    """Name of the array library the arrays belong to: ``"numpy"`` or ``"cupy"``.

    Raises
    ------
    TypeError
        NumPy and CuPy arrays are mixed (no silent host/device copies).
    """
    kinds = {"cupy" if _is_cupy(a) else "numpy" for a in arrays if a is not None}
    if len(kinds) > 1:
        raise TypeError("cannot mix NumPy and CuPy arrays in one call; move them to the "
                        "same device first (cupy.asarray / cupy.asnumpy)")
    return kinds.pop() if kinds else "numpy"


def xp_of(*arrays):
    """The array module (``numpy`` or ``cupy``) for the arrays."""
    if array_namespace(*arrays) == "cupy":
        import cupy
        return cupy
    return np


def get_backend(*arrays):
    """Kernel package for the arrays: ``sketchcore._cpu`` or ``sketchcore._cuda``.

    Raises
    ------
    TypeError
        NumPy and CuPy arrays mixed in one call.
    """
    if array_namespace(*arrays) == "numpy":
        from sketchcore import _cpu
        return _cpu
    # CuPy arrays: the CUDA kernels (NVRTC, compiled on first use for the current device).
    from sketchcore import _cuda
    return _cuda


def check_size(value, name, minimum=1):
    """Return ``value`` as int after checking it is an integer ``>= minimum``.

    Raises
    ------
    TypeError
        Not an integer (bools and floats are refused rather than truncated).
    ValueError
        Smaller than ``minimum``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_real_dtype(dtype, name="dtype"):
    """Return ``numpy.dtype(dtype)`` when it is float32 or float64.

    Raises
    ------
    TypeError
        Any other dtype (integer, complex, half, object) or something that is not a dtype.
    """
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be float32 or float64, got {dtype!r}") from None
    if dt not in REAL_DTYPES:
        raise TypeError(f"{name} must be float32 or float64, got {dt}")
    return dt


def check_array(x, name, ndim=None, min_ndim=None, max_ndim=None, allow_empty=True,
                finite=False):
    """Validate an input array and return it as a NumPy or CuPy array (no copy if possible).

    Array-likes that are not CuPy arrays go through ``numpy.asarray``. Any memory layout is
    accepted (C, Fortran, strided, read-only); kernels copy only when they must.

    Parameters
    ----------
    x : array_like
    name : str
        Argument name used in error messages.
    ndim, min_ndim, max_ndim : int, optional
        Exact, lowest and highest accepted number of dimensions.
    allow_empty : bool, default True
        Whether arrays with a zero-length axis are accepted.
    finite : bool, default False
        Refuse NaN and infinity.

    Raises
    ------
    TypeError
        Not a float32/float64 array (integer, bool, complex and object dtypes are refused).
    ValueError
        Wrong number of dimensions, empty when not allowed, or not finite when required.
    """
    if not _is_cupy(x):
        if not isinstance(x, np.ndarray):
            try:
                x = np.asarray(x)
            except Exception as exc:  # ragged lists and the like
                raise TypeError(f"{name} must be an array, got {type(x).__name__}") from exc
    if x.dtype not in REAL_DTYPES:
        raise TypeError(f"{name} must have dtype float32 or float64, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got {x.ndim}-D array of shape {x.shape}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), "
                         f"got shape {x.shape}")
    if max_ndim is not None and x.ndim > max_ndim:
        raise ValueError(f"{name} must have at most {max_ndim} dimension(s), "
                         f"got shape {x.shape}")
    if not allow_empty and x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {x.shape}")
    if finite and not bool(xp_of(x).isfinite(x).all()):
        raise ValueError(f"{name} must not contain NaN or infinity")
    return x


def check_same_dtype(**arrays):
    """Raise TypeError naming the arguments when the arrays' dtypes differ; return the dtype."""
    named = [(k, v) for k, v in arrays.items() if v is not None]
    dtypes = {v.dtype for _, v in named}
    if len(dtypes) > 1:
        listing = ", ".join(f"{k}={v.dtype}" for k, v in named)
        raise TypeError(f"arguments must share one dtype, got {listing}")
    return dtypes.pop() if dtypes else None
