"""Sketch operators that take torch tensors (``pr.sketch``), differentiable in their input.

The classes are sketchcore's operators (same constructor, seed, entries, ``to_dense``)
whose products also accept ``torch.Tensor``: the result is a tensor on the input's device,
computed by sketchcore's kernels through the zero-copy bridge, with autograd (an operator
is linear, so the gradient of ``S @ A`` is ``S.T @ grad``, applied by the same kernels)::

    import sketchcore_torch as pr
    S = pr.sketch.SparseSignSketch(256, 4096, nnz=8, seed=0)
    Y = S @ A            # A: tensor (4096, n) -> (256, n)
    Z = A @ S.T          # A: tensor (n, 4096) -> (n, 256)
    W = S.apply(X, axis=1)

NumPy/CuPy inputs behave exactly as with ``sketchcore``. Half-precision tensors are
sketched in float32 and returned in their own dtype; otherwise the result dtype follows
``sketchcore`` (``result_type(S.dtype, A.dtype)``).
"""
import numbers

import torch

from sketchcore import operators as _core
from sketchcore.operators import SketchOperator, TransposedSketch
from sketchcore_torch._bridge import to_array, to_tensor

__all__ = ["SketchOperator", "TransposedSketch", "GaussianSketch", "SignSketch",
           "SparseSignSketch", "CountSketch", "SRHT"]

_HALF = (torch.float16, torch.bfloat16)

# The four products on 2-D arrays and, for each, the product that gives its input gradient:
# d(S A) = S^T g, d(A S^T) = g S, d(A S) = g S^T, d(S^T B) = S g.
_ADJOINT_OF = {"left": "adjoint", "adjoint": "left", "right": "rmatmul", "rmatmul": "right"}


def _product(op, mode, a):
    if mode == "left":
        return _core.SketchOperator.__matmul__(op, a)
    if mode == "adjoint":
        return _core.SketchOperator._adjoint_apply(op, a)
    if mode == "right":
        return _core.SketchOperator._right_apply(op, a)
    return _core.SketchOperator.__rmatmul__(op, a)


def _apply_tensor(op, mode, t):
    dtype = t.dtype
    work = t.float() if dtype in _HALF else t
    out = to_tensor(_product(op, mode, to_array(work.contiguous())), like=t)
    return out.to(dtype) if dtype in _HALF else out


class _Product(torch.autograd.Function):
    """One linear product with a sketch operator; its backward is the adjoint product."""

    @staticmethod
    def forward(op, mode, t):
        return _apply_tensor(op, mode, t)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.op, ctx.mode, t = inputs
        ctx.in_dtype = t.dtype

    @staticmethod
    def backward(ctx, grad):
        g = _Product.apply(ctx.op, _ADJOINT_OF[ctx.mode], grad)
        return None, None, g.to(ctx.in_dtype)


class _TensorProducts:
    """Mixin: route torch tensors through ``_Product``; everything else to sketchcore."""

    def __matmul__(self, A):
        if isinstance(A, torch.Tensor):
            if A.dim() > 2:
                return self.apply(A, axis=-2)
            self._check(A, self.m, 0, "A.shape[0]")
            if A.dim() == 1:
                return _Product.apply(self, "left", A[:, None])[:, 0]
            return _Product.apply(self, "left", A)
        return super().__matmul__(A)

    def __rmatmul__(self, A):
        if isinstance(A, torch.Tensor):
            self._check(A, self.d, -1, "A.shape[-1]")
            lead = A.shape[:-1]
            return _Product.apply(self, "rmatmul", A.reshape(-1, self.d)).reshape(*lead, self.m)
        return super().__rmatmul__(A)

    def _right_apply(self, A):
        if isinstance(A, torch.Tensor):
            self._check(A, self.m, -1, "A.shape[-1]")
            lead = A.shape[:-1]
            return _Product.apply(self, "right", A.reshape(-1, self.m)).reshape(*lead, self.d)
        return super()._right_apply(A)

    def _adjoint_apply(self, B):
        if isinstance(B, torch.Tensor):
            self._check(B, self.d, 0 if B.dim() <= 2 else -2, "B.shape[0]")
            if B.dim() == 1:
                return _Product.apply(self, "adjoint", B[:, None])[:, 0]
            if B.dim() == 2:
                return _Product.apply(self, "adjoint", B)
            moved = B.movedim(-2, 0)
            out = _Product.apply(self, "adjoint", moved.reshape(self.d, -1))
            return out.reshape(self.m, *moved.shape[1:]).movedim(0, -2)
        return super()._adjoint_apply(B)

    def apply(self, A, axis=0):
        """Sketch axis ``axis`` (length m) of an array or tensor; it becomes length d.

        Raises
        ------
        TypeError
            ``axis`` not an integer, or an integer/complex tensor.
        ValueError
            ``axis`` out of range or ``A.shape[axis] != m``.
        """
        if not isinstance(A, torch.Tensor):
            return super().apply(A, axis)
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"axis must be an integer, got {type(axis).__name__} {axis!r}")
        if A.dim() == 0 or not -A.dim() <= axis < A.dim():
            raise ValueError(f"axis must be in [-{A.dim()}, {A.dim()}) for A of shape "
                             f"{tuple(A.shape)}, got {axis}")
        axis %= A.dim()
        self._check(A, self.m, axis, f"A.shape[{axis}]")
        if axis == A.dim() - 1 and A.dim() > 1:
            return self._right_apply(A)
        moved = A.movedim(axis, 0)
        out = _Product.apply(self, "left", moved.reshape(self.m, -1))
        return out.reshape(self.d, *moved.shape[1:]).movedim(0, axis)

    def _check(self, t, length, axis, expected):
        if not t.dtype.is_floating_point:
            raise TypeError(f"A must be a floating-point tensor, got {t.dtype}")
        if t.dim() == 0 or t.shape[axis] != length:
            raise ValueError(f"A must have {expected} = {length} to match the operator of shape "
                             f"{self.shape}, got A of shape {tuple(t.shape)}")


class GaussianSketch(_TensorProducts, _core.GaussianSketch):
    __doc__ = _core.GaussianSketch.__doc__


class SignSketch(_TensorProducts, _core.SignSketch):
    __doc__ = _core.SignSketch.__doc__


class SparseSignSketch(_TensorProducts, _core.SparseSignSketch):
    __doc__ = _core.SparseSignSketch.__doc__


class CountSketch(_TensorProducts, _core.CountSketch):
    __doc__ = _core.CountSketch.__doc__


class SRHT(_TensorProducts, _core.SRHT):
    __doc__ = _core.SRHT.__doc__
