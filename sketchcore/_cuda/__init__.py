"""CUDA kernels (NVRTC through CuPy). Reached through ``sketchcore._backend``, never imported
by users. Same function names and signatures as ``sketchcore._cpu``, plus ``lsqr_iterations``
(LSQR's loop in fused kernels; on the CPU that loop is NumPy); arrays are CuPy arrays.

Importing this package does not import CuPy or touch a GPU: kernels compile on first use
(``_loader``), so ``import sketchcore`` works with CuPy installed and no GPU present.
"""
from sketchcore._cuda._random import (philox4x32, philox4x32_batch, fill_words, fill_uniform,
                                      fill_sign, fill_gaussian)
from sketchcore._cuda._dense import (gaussian_left, gaussian_right, sign_left, sign_right,
                                     dense_block)
from sketchcore._cuda._sparse import (sparse_sign_left, sparse_sign_right, sparse_sign_dense,
                                      sparse_sign_indices)
from sketchcore._cuda._fwht import fwht_rows, srht_left, srht_right
from sketchcore._cuda._linear import sketched_linear_forward, sketched_linear_backward
from sketchcore._cuda._qr import geqp3_inplace, potrf_upper, normal_matvec, gather_columns_f
from sketchcore._cuda._lsqr import lsqr_iterations

__all__ = ["philox4x32", "philox4x32_batch", "fill_words", "fill_uniform", "fill_sign",
           "fill_gaussian", "gaussian_left", "gaussian_right", "sign_left", "sign_right",
           "dense_block", "sparse_sign_left", "sparse_sign_right", "sparse_sign_dense",
           "sparse_sign_indices", "fwht_rows", "srht_left", "srht_right", "sketched_linear_forward",
           "sketched_linear_backward", "geqp3_inplace", "potrf_upper", "normal_matvec",
           "gather_columns_f", "lsqr_iterations"]
