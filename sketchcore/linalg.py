"""Randomized linear algebra on NumPy arrays (CuPy once the CUDA branches land).

* :func:`cqrrpt` -- column-pivoted QR of tall matrices (CholeskyQR + sketch pivoting);
* :func:`rsvd` / :func:`range_finder` -- randomized SVD, fixed rank or fixed accuracy;
* :func:`lstsq` -- overdetermined least squares by sketch-and-precondition + LSQR;
* :func:`sketched_matmul` -- ``A @ B`` approximated through a sketch of the inner dimension.

Every function takes ``seed`` (an int, or None for OS entropy) and gives identical results
for identical seeds. Heavy kernels: ``sketchcore/_cpu/_qr.pyx``.
"""
from sketchcore._linalg._cqrrpt import cqrrpt
from sketchcore._linalg._rsvd import rsvd, range_finder, RankWarning
from sketchcore._linalg._lstsq import lstsq, LstsqInfo
from sketchcore._linalg._matmul import sketched_matmul

__all__ = ["cqrrpt", "rsvd", "range_finder", "lstsq", "LstsqInfo", "sketched_matmul",
           "RankWarning"]
