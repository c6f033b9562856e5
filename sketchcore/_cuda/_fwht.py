"""Fast Walsh-Hadamard transform on the GPU (fwht.cu), in place along axis 0."""
import numpy as np

from sketchcore._cuda._loader import launch
from sketchcore._cuda._common import NULL, ctype_of, f64, i32, i64

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


def _pass_stages(stages):
    """Stages of each sc_fwht_tile pass: as few passes over X as tiles of 2^TILE_MAX_STAGES
    rows allow (each reads and writes all of X), the stages split evenly between them."""
    passes = -(-stages // TILE_MAX_STAGES)
    return [stages // passes + (i < stages % passes) for i in range(passes)]


def _fwht_passes(X, ct, src=None, signs=None, plan=None):
    """The passes of ``fwht_rows`` (``plan``: the stages of each pass to run, by default
    all of ``_pass_stages``); ``src``, ``signs``: the first pass reads ``src`` (m, n),
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
    tc = 64 // size                                     # columns per tile (sc_fwht_tile)
    h = 1
    for i, L in enumerate(_pass_stages(stages) if plan is None else plan):
        a2 = L // 2
        first = i == 0 and src is not None
        launch(f"sc_fwht_tile<{ct}, {L - a2}, {a2}>", (-(-n // tc), min(p >> L, 65535)),
               ((1 << a2) * tc,),
               (X, i64(p), i64(n), i64(n), i64(h), src if first else X, i64(n),
                i64(src.shape[0] if first else p), signs if first else NULL),
               shared_mem=(1 << L) * 64)
        h <<= L


def _kept_rows_of_transform(A, rows, seed, stream, scale):
    """``scale * (H_p D P A)[rows]`` (d, n), p = m rounded up to a power of two: rows of A
    times the signs of words 0..m-1 of ``stream``, zero rows to p, transformed. The signs
    and the padding are applied as the first pass reads A; where the kept rows' groups are
    smaller than X (d 2^L <= p for a last pass of L stages), that pass runs for them only
    (sc_fwht_select) instead of over all of X."""
    import cupy
    from sketchcore._cuda._random import fill_sign
    m, n = A.shape
    p = 1
    while p < m:
        p *= 2
    signs = cupy.empty(m, dtype=A.dtype)
    fill_sign(seed, stream, 0, signs, 1.0)
    X = cupy.empty((p, n), dtype=A.dtype)
    rows = _check_rows(rows, p, m)
    d = rows.size
    ct = ctype_of(X)
    stages = p.bit_length() - 1
    plan = _pass_stages(stages) if stages >= TILE_MIN_STAGES else []
    if len(plan) < 2 or d << plan[-1] > p:
        _fwht_passes(X, ct, src=A, signs=signs)
        Y = X[rows]
        Y *= scale
        return Y
    _fwht_passes(X, ct, src=A, signs=signs, plan=plan[:-1])
    Y = cupy.empty((d, n), dtype=A.dtype)
    launch(f"sc_fwht_select<{ct}>", (-(-n // 256), min(d, 65535)), (256,),
           (X, i64(n), i64(n), i64(p >> plan[-1]), i32(plan[-1]), rows, i64(d), f64(scale),
            Y, i64(n)))
    return Y


def _check_rows(rows, p, m):
    import cupy
    rows = cupy.asarray(rows, dtype=cupy.int64).ravel()
    if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= p):
        raise ValueError(f"rows must lie in [0, {p}) for m={m}")
    return rows


def srht_left(A, rows, seed, stream):
    """``S @ A`` for the SRHT S (d, m), A cupy.ndarray (m, n); ``rows`` (d,) selected
    Hadamard rows in [0, p), ``stream`` the sign stream; returns (d, n).

    D P A (applied by the transform's first pass as it reads A), the FWHT (its last pass for
    the kept rows only, when that reads less), then the kept rows scaled by dtype(1/sqrt(d))
    after the transform, as on the CPU."""
    import cupy
    if not isinstance(A, cupy.ndarray) or A.ndim != 2:
        raise TypeError("srht_left needs a 2-D CuPy array")
    m, n = A.shape
    d = int(cupy.asarray(rows).size)
    if m == 0 or n == 0 or d == 0:
        return cupy.zeros((d, n), dtype=A.dtype)
    return _kept_rows_of_transform(cupy.ascontiguousarray(A), rows, seed, stream,
                                   A.dtype.type(1.0 / np.sqrt(d)))


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
