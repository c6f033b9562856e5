"""Fast Walsh-Hadamard transform on the GPU (fwht.cu), in place along axis 0."""
import numpy as np

from sketchcore._cuda._loader import launch
from sketchcore._cuda._common import NULL, ctype_of, i32, i64

__all__ = ["fwht_rows", "srht_left", "srht_right"]

#: Stages of one pass of sc_fwht_tile at most (tiles of 2^10 rows x 64 bytes: 64 KiB of
#: shared memory) and at least (its second phase needs 2^(L // 2) row groups that fill
#: whole warps: L >= 4 for float64). Below that, one sc_fwht_pass does every stage.
TILE_MAX_STAGES = 10
TILE_MIN_STAGES = 4


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
    _fwht_passes(X, ct)
    return X


def _fwht_passes(X, ct, src=None, signs=None):
    """The passes of ``fwht_rows``; ``src``, ``signs``: the first pass reads ``src`` (m, n),
    m <= p, times ``signs`` (m,) per row, with zero rows past m, instead of X."""
    p, n = X.shape
    size = np.dtype(X.dtype).itemsize
    stages = p.bit_length() - 1
    if src is not None and stages < TILE_MIN_STAGES:    # tiny: sign and pad separately
        X[:src.shape[0]] = src * signs[:, None]
        X[src.shape[0]:] = 0
        src = None
    if stages < TILE_MIN_STAGES:
        if stages:
            launch(f"sc_fwht_pass<{ct}>", (-(-n // 32), 1), (256,),
                   (X, i64(p), i64(n), i64(n), i64(1), i32(stages)),
                   shared_mem=p * 32 * size)
        return
    # As few passes over X as tiles of 2^TILE_MAX_STAGES rows allow, the stages split
    # evenly between them (each pass reads and writes all of X).
    passes = -(-stages // TILE_MAX_STAGES)
    tc = 64 // size                                     # columns per tile (sc_fwht_tile)
    h = 1
    for i in range(passes):
        L = stages // passes + (i < stages % passes)
        a2 = L // 2
        first = i == 0 and src is not None
        launch(f"sc_fwht_tile<{ct}, {L - a2}, {a2}>", (-(-n // tc), min(p >> L, 65535)),
               ((1 << a2) * tc,),
               (X, i64(p), i64(n), i64(n), i64(h), src if first else X, i64(n),
                i64(src.shape[0] if first else p), signs if first else NULL),
               shared_mem=(1 << L) * 64)
        h <<= L


def _transformed_padded_signed(A, m, seed, stream):
    """H_p D P A as a (p, n) array (p = m rounded up to a power of two): rows of A times the
    signs of words 0..m-1 of ``stream``, zero rows to p, transformed; the signs and the
    padding are applied as the first pass reads A."""
    import cupy
    from sketchcore._cuda._random import fill_sign
    p = 1
    while p < m:
        p *= 2
    signs = cupy.empty(m, dtype=A.dtype)
    fill_sign(seed, stream, 0, signs, 1.0)
    X = cupy.empty((p, A.shape[1]), dtype=A.dtype)
    _fwht_passes(X, ctype_of(X), src=A, signs=signs)
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

    D P A (applied by the transform's first pass as it reads A), the FWHT, then the
    selected rows scaled by dtype(1/sqrt(d)) after the transform, as on the CPU."""
    import cupy
    if not isinstance(A, cupy.ndarray) or A.ndim != 2:
        raise TypeError("srht_left needs a 2-D CuPy array")
    m, n = A.shape
    d = int(cupy.asarray(rows).size)
    if m == 0 or n == 0 or d == 0:
        return cupy.zeros((d, n), dtype=A.dtype)
    X, p = _transformed_padded_signed(cupy.ascontiguousarray(A), m, seed, stream)
    rows = _check_rows(rows, p, m)
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
