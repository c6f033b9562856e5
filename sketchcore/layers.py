"""Array-level math of sketched layers (NumPy on the CPU, CuPy on CUDA).

The sketched linear layer (Panther's SKLinear) represents a weight ``W_eff`` of shape
``(m, o)`` (in_features x out_features) by ``L`` pairs of rank-``k`` factors::

    W_eff = 1/(2L) * sum_i (S1s[i] @ U1s[i] + U2s[i] @ S2s[i])

with ``S1s, U2s`` of shape ``(L, m, k)`` and ``S2s, U1s`` of shape ``(L, k, o)``. The kernels
never form ``W_eff``: they stack the ``2L`` factors and evaluate the layer as a handful of
GEMMs whose largest temporary is ``batch x 2Lk`` (plus one ``m x 2Lk`` gather of the factors).
"""
from sketchcore._backend import check_array, check_same_dtype, get_backend, xp_of

__all__ = ["sketched_linear_forward", "sketched_linear_backward"]


def _check_factors(x, S1s, S2s, U1s, U2s, x_name="x"):
    """Validate shapes/dtypes of x and the four factor stacks; return them C-contiguous."""
    x = check_array(x, x_name, ndim=2)
    S1s = check_array(S1s, "S1s", ndim=3)
    S2s = check_array(S2s, "S2s", ndim=3)
    U1s = check_array(U1s, "U1s", ndim=3)
    U2s = check_array(U2s, "U2s", ndim=3)
    L, m, k = S1s.shape
    o = S2s.shape[2]
    if x.shape[1] != m:
        raise ValueError(f"{x_name} must have shape (batch, in_features) with in_features = "
                         f"S1s.shape[1] = {m}, got {x_name}.shape = {x.shape}")
    if S2s.shape[:2] != (L, k):
        raise ValueError(f"S2s must have shape (num_terms, low_rank, out_features) = "
                         f"({L}, {k}, out_features) to match S1s {S1s.shape}, got {S2s.shape}")
    if U1s.shape != (L, k, o):
        raise ValueError(f"U1s must have shape (num_terms, low_rank, out_features) = "
                         f"{(L, k, o)}, got {U1s.shape}")
    if U2s.shape != (L, m, k):
        raise ValueError(f"U2s must have shape (num_terms, in_features, low_rank) = "
                         f"{(L, m, k)}, got {U2s.shape}")
    if L == 0 or k == 0:
        raise ValueError(f"num_terms and low_rank must be >= 1, got S1s.shape = {S1s.shape}")
    return x, S1s, S2s, U1s, U2s


def sketched_linear_forward(x, S1s, S2s, U1s, U2s, bias=None, return_hidden=False):
    """``y = x @ W_eff + bias`` without forming ``W_eff``.

    Parameters
    ----------
    x : ndarray of shape (n, m)
    S1s : ndarray of shape (L, m, k)
    S2s : ndarray of shape (L, k, o)
    U1s : ndarray of shape (L, k, o)
    U2s : ndarray of shape (L, m, k)
    bias : ndarray of shape (o,), optional
        All NumPy or all CuPy, one dtype (float32 or float64); any memory layout.
    return_hidden : bool, default False
        Also return ``hidden = x @ [S1s[0] .. S1s[L-1] | U2s[0] .. U2s[L-1]]`` of shape
        ``(n, 2 L k)``, which ``sketched_linear_backward`` reuses.

    Returns
    -------
    y : ndarray of shape (n, o)
    hidden : ndarray of shape (n, 2 L k)
        Only when ``return_hidden``.

    Raises
    ------
    TypeError
        Non-float32/float64 dtypes, mixed dtypes, or NumPy mixed with CuPy.
    ValueError
        Inconsistent shapes (the message names the argument, expected and actual shape).
    """
    x, S1s, S2s, U1s, U2s = _check_factors(x, S1s, S2s, U1s, U2s)
    if bias is not None:
        bias = check_array(bias, "bias", ndim=1)
        if bias.shape[0] != S2s.shape[2]:
            raise ValueError(f"bias must have shape (out_features,) = ({S2s.shape[2]},), "
                             f"got {bias.shape}")
    check_same_dtype(x=x, S1s=S1s, S2s=S2s, U1s=U1s, U2s=U2s, bias=bias)
    backend = get_backend(x, S1s, S2s, U1s, U2s, bias)
    xp = xp_of(x)
    args = [xp.ascontiguousarray(a) for a in (x, S1s, S2s, U1s, U2s)]
    bias = None if bias is None else xp.ascontiguousarray(bias)
    y, hidden = backend.sketched_linear_forward(*args, bias)
    return (y, hidden) if return_hidden else y


def sketched_linear_backward(grad_out, x, S1s, S2s, U1s, U2s, has_bias, hidden=None):
    """Gradients of ``sum(grad_out * sketched_linear_forward(x, ...))``.

    Parameters
    ----------
    grad_out : ndarray of shape (n, o)
    x : ndarray of shape (n, m)
    S1s, U2s : ndarray of shape (L, m, k)
    S2s, U1s : ndarray of shape (L, k, o)
    has_bias : bool
        Whether to return the bias gradient (``grad_out`` summed over the batch).
    hidden : ndarray of shape (n, 2 L k), optional
        ``sketched_linear_forward(..., return_hidden=True)``'s second result for the same
        ``x`` and factors; without it the needed half is recomputed (one more GEMM).

    Returns
    -------
    grad_x : ndarray of shape (n, m)
    grad_S1s : ndarray of shape (L, m, k)
    grad_S2s : ndarray of shape (L, k, o)
    grad_bias : ndarray of shape (o,) or None
        None when ``has_bias`` is false.

    Raises
    ------
    TypeError
        Non-float32/float64 dtypes, mixed dtypes, or NumPy mixed with CuPy.
    ValueError
        Inconsistent shapes.
    """
    x, S1s, S2s, U1s, U2s = _check_factors(x, S1s, S2s, U1s, U2s)
    grad_out = check_array(grad_out, "grad_out", ndim=2)
    n, o = x.shape[0], S2s.shape[2]
    if grad_out.shape != (n, o):
        raise ValueError(f"grad_out must have shape (batch, out_features) = {(n, o)}, "
                         f"got {grad_out.shape}")
    if hidden is not None:
        hidden = check_array(hidden, "hidden", ndim=2)
        expected = (n, 2 * S1s.shape[0] * S1s.shape[2])
        if hidden.shape != expected:
            raise ValueError(f"hidden must have shape (batch, 2 * num_terms * low_rank) = "
                             f"{expected}, got {hidden.shape}")
    check_same_dtype(grad_out=grad_out, x=x, S1s=S1s, S2s=S2s, U1s=U1s, U2s=U2s, hidden=hidden)
    backend = get_backend(grad_out, x, S1s, S2s, U1s, U2s, hidden)
    xp = xp_of(x)
    g, x, S1s, S2s, U1s, U2s = (xp.ascontiguousarray(a) for a in (grad_out, x, S1s, S2s, U1s, U2s))
    hidden = None if hidden is None else xp.ascontiguousarray(hidden)
    return backend.sketched_linear_backward(g, x, hidden, S1s, S2s, U1s, U2s, bool(has_bias))
