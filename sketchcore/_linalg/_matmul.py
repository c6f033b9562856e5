"""Approximate matrix products through a shared sketch of the inner dimension."""
from sketchcore._backend import check_array, check_size, check_same_dtype
from sketchcore.random import resolve_seed
from sketchcore._linalg._common import make_sketch, check_sketch_kind, check_finite_via

__all__ = ["sketched_matmul"]


def sketched_matmul(A, B, d, kind="sparse_sign", seed=None):
    """Approximate ``A @ B`` by ``(A S^T) (S B)`` with a ``(d, k)`` sketch ``S``.

    Since ``E[S^T S] = I``, the estimate is unbiased. Its mean squared error is, for the
    Gaussian sketch (entries N(0, 1/d)), exactly

        E ||A B - A S^T S B||_F^2 = (||A||_F^2 ||B||_F^2 + ||A B||_F^2) / d,

    for the sign sketch (entries +-1/sqrt(d)) the same minus ``2 sum_j ||A[:, j]||^2
    ||B[j, :]||^2 / d``, and for the sparse sign / CountSketch kinds of the same order,
    at most ``(||A||_F^2 ||B||_F^2 + ||A B||_F^2) / d`` up to the block structure. The error
    therefore decays like ``||A||_F ||B||_F / sqrt(d)``: sketching pays when the product is
    large (``m q`` big) and the inner dimension ``k`` much larger than ``d``.

    Parameters
    ----------
    A : array_like of shape (m, k)
    B : array_like of shape (k,) or (k, q)
        Same dtype as ``A``.
    d : int
        Sketch size, ``>= 1``.
    kind : str, default "sparse_sign"
        "sparse_sign", "gaussian", "sign", "countsketch" or "srht".
    seed : int or None

    Returns
    -------
    ndarray of shape (m, q) (or (m,) for 1-D B)

    Raises
    ------
    TypeError
        Non-float or mixed dtypes; ``d`` not an integer.
    ValueError
        Wrong dimensions, inner dimensions that differ, empty or non-finite input,
        ``d < 1``, unknown ``kind``.
    """
    A = check_array(A, "A", ndim=2, allow_empty=False)
    B = check_array(B, "B", min_ndim=1, max_ndim=2, allow_empty=False)
    check_same_dtype(A=A, B=B)
    if A.shape[1] != B.shape[0]:
        raise ValueError(f"inner dimensions differ: A has shape {A.shape}, B has shape "
                         f"{B.shape} (A.shape[1] must equal B.shape[0])")
    d = check_size(d, "d")
    check_sketch_kind(kind, "kind")
    S = make_sketch(kind, d, A.shape[1], resolve_seed(seed), A.dtype, name="kind")
    AS = A @ S.T
    SB = S @ B
    check_finite_via((AS, SB), A=A, B=B)
    return AS @ SB
