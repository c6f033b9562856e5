"""Shared pieces of the randomized factorizations: argument checks, sketch construction,
finiteness checks that ride on the sketch, and small dense helpers.

The helpers for small matrices (``n x n`` triangular factors, the ``d x n`` sketch) work on
the host with NumPy/LAPACK: they cost O(n^3) against the O(m n^2) of the passes over the
data. (For CuPy input the GPU paths keep some small steps on the device where a host round
trip would cost more: the inverse in cqrrpt's Gram route, lstsq's Cholesky QR of the sketch.)
"""
import math
import numbers

import numpy as np

from sketchcore._backend import check_array, xp_of

__all__ = ["SKETCH_KINDS", "check_sketch_kind", "make_sketch", "check_matrix",
           "check_positive_float",
           "check_finite_via", "rank_from_diagonal", "extreme_singular_values_upper",
           "blas_single_thread"]

#: Names accepted by the ``sketch=`` arguments, mapped to operator class names.
SKETCH_KINDS = {
    "gaussian": "GaussianSketch",
    "sign": "SignSketch",
    "sparse_sign": "SparseSignSketch",
    "countsketch": "CountSketch",
    "srht": "SRHT",
}

#: Nonzeros per column used for ``sketch="sparse_sign"`` (capped by the number of rows).
SPARSE_NNZ = 8


def blas_single_thread():
    """Context keeping BLAS on the calling thread (kernels with their own OpenMP loops)."""
    from sketchcore._cpu._threads import blas_single_thread as ctx
    return ctx()


def check_sketch_kind(kind, name="sketch"):
    """Raise ValueError unless ``kind`` is one of ``SKETCH_KINDS``."""
    if not isinstance(kind, str) or kind not in SKETCH_KINDS:
        raise ValueError(f"{name} must be one of {sorted(SKETCH_KINDS)}, got {kind!r}")
    return kind


def make_sketch(kind, d, m, seed, dtype, name="sketch"):
    """Sketch operator of shape ``(d, m)`` of the named kind.

    Raises
    ------
    ValueError
        ``kind`` is not one of ``SKETCH_KINDS``.
    """
    check_sketch_kind(kind, name)
    from sketchcore import operators
    cls = getattr(operators, SKETCH_KINDS[kind])
    if kind == "sparse_sign":
        return cls(d, m, nnz=min(SPARSE_NNZ, d), seed=seed, dtype=dtype)
    return cls(d, m, seed=seed, dtype=dtype)


def check_matrix(A, name):
    """A non-empty 2-D float32/float64 array (any layout); finiteness is checked later."""
    A = check_array(A, name, ndim=2)
    if A.shape[0] == 0 or A.shape[1] == 0:
        raise ValueError(f"{name} must not be empty, got shape {A.shape}")
    return A


def check_positive_float(value, name, minimum=0.0, inclusive=False, maximum=None):
    """``value`` as a finite float ``> minimum`` (``>=`` when inclusive) and ``< maximum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    low_ok = value >= minimum if inclusive else value > minimum
    if not math.isfinite(value) or not low_ok or (maximum is not None and value >= maximum):
        rng = f"{'[' if inclusive else '('}{minimum}, {maximum if maximum is not None else 'inf'})"
        raise ValueError(f"{name} must be in {rng}, got {value}")
    return value


def check_finite_via(small, **arrays):
    """Finiteness of big inputs, checked through a (small) sketch of them.

    Any NaN or infinity in an input reaches its sketch (NaN and inf propagate through the
    sums), so a finite sketch proves finite inputs for O(size of sketch). Only when the sketch
    is not finite are the inputs scanned, to name the culprit or report an overflow.

    Raises
    ------
    ValueError
        An input holds NaN/inf (named), or the inputs are finite but so large that the sketch
        overflowed.
    """
    xp_small = small if isinstance(small, (list, tuple)) else (small,)
    if all(bool(xp_of(s).isfinite(s).all()) for s in xp_small):
        return
    for name, arr in arrays.items():
        check_array(arr, name, finite=True)
    raise ValueError("the sketch of the input overflowed: scale the input down "
                     f"(inputs {', '.join(arrays)} are finite but too large)")


def rank_from_diagonal(R, rtol):
    """Numerical rank from the diagonal of a column-pivoted triangular factor.

    The rank is the number of leading diagonal entries with ``|R[i, i]| > rtol * |R[0, 0]|``
    (a relative, hence scale-invariant, criterion; pivoting makes the diagonal non-increasing
    in magnitude).
    """
    diag = np.abs(np.diagonal(R))
    if diag.size == 0 or not diag[0] > 0:
        return 0
    small = np.flatnonzero(diag <= rtol * diag[0])
    return int(small[0]) if small.size else int(diag.size)


def extreme_singular_values_upper(R, seed=0, max_iter=25, rtol=1e-2, Rinv=None):
    """Estimates of the largest and smallest singular values of a nonsingular triangular R.

    Power iteration on ``R^T R`` and inverse iteration (two triangular solves per step, or two
    products with ``Rinv`` when the caller already has the inverse: ten times cheaper for
    small R, where SciPy's per-call overhead dominates), O(n^2) per step, stopped when both
    estimates change by less than ``rtol`` relatively. Both approach the extremes from
    inside, so ``smax / smin`` never overstates the condition number; it is used only to
    decide whether a refinement step is worth its cost, for which a 1% estimate is plenty.

    Returns
    -------
    (float, float)
        ``(smax, smin)``; ``smin`` is 0 when R has a zero on its diagonal.
    """
    from scipy.linalg import solve_triangular
    from sketchcore.random import gaussian, make_stream
    R = np.asarray(R, dtype=np.float64)
    n = R.shape[0]
    if n == 0:
        return 0.0, 0.0
    if not np.all(np.diagonal(R) != 0):
        return float(np.abs(R).max()), 0.0
    v = gaussian(seed, make_stream("linalg", 0, 7), 0, n)
    w = v / np.linalg.norm(v)
    v = w.copy()
    smax = sinv = 0.0
    for _ in range(max_iter):
        v = R.T @ (R @ v)
        nv = np.linalg.norm(v)
        if Rinv is None:
            w = solve_triangular(R, solve_triangular(R, w, trans="T", check_finite=False),
                                 check_finite=False)
        else:
            w = Rinv @ (Rinv.T @ w)
        nw = np.linalg.norm(w)
        if not (math.isfinite(nv) and math.isfinite(nw)) or nv == 0 or nw == 0:
            return math.sqrt(nv) if math.isfinite(nv) else math.inf, 0.0
        new_max, new_inv = math.sqrt(nv), math.sqrt(nw)
        v /= nv
        w /= nw
        done = (abs(new_max - smax) <= rtol * new_max and abs(new_inv - sinv) <= rtol * new_inv)
        smax, sinv = new_max, new_inv
        if done:
            break
    return smax, 1.0 / sinv
