"""Randomized linear algebra on torch tensors: thin wrappers over :mod:`sketchcore.linalg`.

Tensor in, tensor out, on the input's device and in its dtype (float32/float64); inputs are
shared with the kernels without copies through ``sketchcore_torch._bridge``. These functions
are not differentiable: results carry no autograd history.
"""
import torch

from sketchcore import linalg as _core
from sketchcore_torch._bridge import to_array, to_tensor

__all__ = ["cqrrpt", "rsvd", "lstsq", "sketched_matmul"]


def _as_array(t, name):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must have dtype torch.float32 or torch.float64, got {t.dtype}")
    return to_array(t)


def cqrrpt(A, gamma=1.25, seed=None, sketch="sparse_sign", *, rtol=None):
    """Randomized column-pivoted QR ``A[:, J] = Q @ R`` (see :func:`sketchcore.linalg.cqrrpt`).

    Parameters
    ----------
    A : torch.Tensor of shape (m, n)

    Returns
    -------
    Q : torch.Tensor of shape (m, r)
    R : torch.Tensor of shape (r, n)
    J : torch.Tensor of shape (n,), torch.long

    Raises
    ------
    TypeError
        ``A`` is not a float32/float64 tensor (and the core's errors).
    """
    Q, R, J = _core.cqrrpt(_as_array(A, "A"), gamma=gamma, seed=seed, sketch=sketch, rtol=rtol)
    return (to_tensor(Q, like=A), to_tensor(R, like=A),
            torch.as_tensor(J, dtype=torch.long, device=A.device))


def rsvd(A, k=None, oversample=10, n_iter=2, seed=None, sketch="gaussian", *, tol=None,
         max_rank=None, block_size=None):
    """Randomized truncated SVD ``A ~ U diag(s) Vt`` (see :func:`sketchcore.linalg.rsvd`).

    Returns
    -------
    U : torch.Tensor of shape (m, k)
    s : torch.Tensor of shape (k,)
    Vt : torch.Tensor of shape (k, n)
    """
    U, s, Vt = _core.rsvd(_as_array(A, "A"), k, oversample=oversample, n_iter=n_iter, seed=seed,
                          sketch=sketch, tol=tol, max_rank=max_rank, block_size=block_size)
    return to_tensor(U, like=A), to_tensor(s, like=A), to_tensor(Vt, like=A)


def lstsq(A, b, tol=1e-10, seed=None, **kwargs):
    """Least squares by sketch-and-precondition (see :func:`sketchcore.linalg.lstsq`).

    Parameters
    ----------
    A : torch.Tensor of shape (m, n)
    b : torch.Tensor of shape (m,) or (m, k)
    **kwargs
        ``sketch``, ``sketch_size``, ``max_iter``, ``rtol`` of the core function.

    Returns
    -------
    x : torch.Tensor of shape (n,) or (n, k)
    info : sketchcore.linalg.LstsqInfo
        Plain Python/NumPy diagnostics.
    """
    x, info = _core.lstsq(_as_array(A, "A"), _as_array(b, "b"), tol=tol, seed=seed, **kwargs)
    return to_tensor(x, like=A), info


def sketched_matmul(A, B, d, kind="sparse_sign", seed=None):
    """``A @ B`` approximated by ``(A S^T)(S B)`` (see :func:`sketchcore.sketched_matmul`).

    Returns
    -------
    torch.Tensor of shape (m, q) or (m,)
    """
    out = _core.sketched_matmul(_as_array(A, "A"), _as_array(B, "B"), d, kind=kind, seed=seed)
    return to_tensor(out, like=A)
