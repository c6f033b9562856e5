"""Fast Walsh-Hadamard transform on the GPU (fwht.cu), in place along axis 0."""
import numpy as np

from sketchcore._cuda._loader import launch
from sketchcore._cuda._common import ctype_of, i32, i64

__all__ = ["fwht_rows", "srht_left", "srht_right"]

_SMEM = 32 * 1024


def fwht_rows(X):
    """In-place unnormalised Walsh-Hadamard transform of each column of ``X``.

    Parameters
    ----------
    X : cupy.ndarray of shape (p, n), C-contiguous, float32/float64, p a power of two.

    Returns
    -------
    X (same object), transformed: X <- H_p X (Sylvester ordering).

    Raises
    ------
    TypeError
        Not a C-contiguous float32/float64 CuPy array.
    ValueError
        p is not a power of two.
    """
    import cupy
    if not isinstance(X, cupy.ndarray) or X.ndim != 2 or not X.flags.c_contiguous:
        raise TypeError("fwht_rows needs a C-contiguous 2-D CuPy array")
    ct = ctype_of(X)
    if ct not in ("float", "double"):
        raise TypeError(f"fwht_rows takes float32/float64, got {X.dtype}")
    p, n = X.shape
    if p & (p - 1) or p == 0:
        raise ValueError(f"fwht_rows: number of rows must be a power of two, got {p}")
    if p == 1 or n == 0:
        return X
    size = np.dtype(X.dtype).itemsize
    lmax = int(np.log2(_SMEM // (32 * size)))          # 8 for float32, 7 for float64
    stages = p.bit_length() - 1
    h = 1
    while stages > 0:
        L = min(lmax, stages)
        groups = p >> L
        launch(f"sc_fwht_pass<{ct}>", (-(-n // 32), min(groups, 65535)), (256,),
               (X, i64(p), i64(n), i64(n), i64(h), i32(L)), shared_mem=(1 << L) * 32 * size)
        h <<= L
        stages -= L
    return X


def _padded_signed(A, m, seed, stream):
    """(p, n) array: rows 0..m-1 = D A (signs of words 0..m-1 of ``stream``), rest zero."""
    import cupy
    from sketchcore._cuda._random import fill_sign
    p = 1
    while p < m:
        p *= 2
    signs = cupy.empty(m, dtype=A.dtype)
    fill_sign(seed, stream, 0, signs, 1.0)
    X = cupy.empty((p, A.shape[1]), dtype=A.dtype)
    cupy.multiply(A, signs[:, None], out=X[:m])
    X[m:] = 0
    return X, p


def _check_rows(rows, p, m):
    import cupy
    rows = cupy.asarray(rows, dtype=cupy.int64).ravel()
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= p):
        raise ValueError(f"rows must lie in [0, {p}) for m={m}")
    return rows


def srht_left(A, rows, seed, stream):
    """``S @ A`` for the SRHT S (d, m), A cupy.ndarray (m, n); ``rows`` (d,) selected
    Hadamard rows in [0, p), ``stream`` the sign stream; returns (d, n).

    D P A (one elementwise pass), FWHT in place, then the selected rows scaled by
    dtype(1/sqrt(d)) after the transform, as on the CPU."""
    import cupy
    if not isinstance(A, cupy.ndarray) or A.ndim != 2:
        raise TypeError("srht_left needs a 2-D CuPy array")
    m, n = A.shape
    d = int(cupy.asarray(rows).size)
    if m == 0 or n == 0 or d == 0:
        return cupy.zeros((d, n), dtype=A.dtype)
    X, p = _padded_signed(cupy.ascontiguousarray(A), m, seed, stream)
    rows = _check_rows(rows, p, m)
    fwht_rows(X)
    Y = X[rows]
    Y *= A.dtype.type(1.0 / np.sqrt(d))
    return Y


def srht_right(A, rows, seed, stream):
    """``A @ S.T`` for the SRHT S (d, m), A cupy.ndarray (n, m); returns (n, d)."""
    import cupy
    if not isinstance(A, cupy.ndarray) or A.ndim != 2:
        raise TypeError("srht_right needs a 2-D CuPy array")
    n, m = A.shape
    d = int(cupy.asarray(rows).size)
    if m == 0 or n == 0 or d == 0:
        return cupy.zeros((n, d), dtype=A.dtype)
    return cupy.ascontiguousarray(srht_left(cupy.ascontiguousarray(A.T), rows, seed, stream).T)
