"""CPU kernels (Cython). Reached through ``sketchcore._backend``, never imported by users.

Sketch-operator kernel contract (``sketchcore._cuda`` exposes the same names and signatures)
-----------------------------------------------------------------------------------------
Arrays are the backend's own type, 2-D, C-contiguous, float32 or float64; results come back
new, in the input's dtype and backend. ``seed`` and ``stream`` are Python ints in [0, 2**64)
(``stream`` from ``sketchcore.random.make_stream(kind, 0, role)``); the operator S has shape
(d, m) with entries exactly as in contracts.md / ``sketchcore/random.py``, scaling included.

gaussian_left(A, d, seed, stream, tile=0) -> (d, n)       S @ A, A of shape (m, n)
gaussian_right(A, d, seed, stream, tile=0) -> (n, d)      A @ S.T, A of shape (n, m)
sign_left(A, d, seed, stream, tile=0) -> (d, n)           (same layout, sign entries)
sign_right(A, d, seed, stream, tile=0) -> (n, d)
    ``tile``: columns of S generated per step (0 = automatic); changes rounding only.
sparse_sign_left(A, d, nnz, seed, stream) -> (d, n)       nnz nonzeros per column (1 = CountSketch)
sparse_sign_right(A, d, nnz, seed, stream) -> (n, d)
srht_left(A, rows, seed, stream) -> (d, n)                ``rows``: int64 (d,) array (same backend
srht_right(A, rows, seed, stream) -> (n, d)                 as A): the kept rows of H, in [0, p),
                                                            p = next pow2 >= m, in output order;
                                                            ``stream``: the sign stream (role 0)
fwht_rows(X) -> X                                         in place, unnormalised, axis 0 of (p, n),
                                                            p a power of two
dense_block(kind, seed, stream, m, r0, r1, j0, j1, scale, dtype) -> (r1-r0, j1-j0)
    rows r0:r1, columns j0:j1 of a dense operator with m columns (kind 0 Gaussian, 1 sign),
    entries dtype(scale * value) with the product in float64 (used by ``to_dense``).
sparse_sign_indices(d, nnz, seed, stream, j0, j1) -> (rows int32, signs float64), each
    of shape (j1 - j0, nnz): nonzero rows and +-1 signs of columns j0 .. j1-1.
(dense_block / sparse_sign_indices take no array: they return the backend's own arrays.)

CPU results are bit-identical for any OpenMP thread count (work is cut by problem size only);
``tile`` and the problem's sizes may change the rounding of products, never the operator.
"""
from sketchcore._cpu._random import (philox4x32, fill_words, fill_uniform, fill_sign,
                                     fill_gaussian)
# SKLinear kernels: forward(x, S1s, S2s, U1s, U2s, bias) -> (y, hidden) and
# backward(grad_out, x, hidden|None, S1s, S2s, U1s, U2s, has_bias, need_x=True,
# need_weights=True) -> (gx|None, gS1s|None, gS2s|None, gbias|None); see _linear.pyx.
from sketchcore._cpu._linear import sketched_linear_forward, sketched_linear_backward

__all__ = ["philox4x32", "fill_words", "fill_uniform", "fill_sign", "fill_gaussian"]
__all__ += ["sketched_linear_forward", "sketched_linear_backward"]  # SKLinear
# Sketch operators (operators engineer): contract in the docstring above.
from sketchcore._cpu._dense import (gaussian_left, gaussian_right, sign_left, sign_right,
                                    dense_block)
from sketchcore._cpu._sparse import sparse_sign_left, sparse_sign_right, sparse_sign_indices
from sketchcore._cpu._fwht import fwht_rows, srht_left, srht_right
__all__ += ["gaussian_left", "gaussian_right", "sign_left", "sign_right", "dense_block",  # operators
            "sparse_sign_left", "sparse_sign_right", "sparse_sign_indices",  # operators
            "fwht_rows", "srht_left", "srht_right"]  # operators
# Randomized QR / least-squares pieces (linalg): see _qr.pyx for layouts.
from sketchcore._cpu._qr import geqp3_inplace, potrf_upper, normal_matvec, gather_columns_f
__all__ += ["geqp3_inplace", "potrf_upper", "normal_matvec", "gather_columns_f"]  # linalg
