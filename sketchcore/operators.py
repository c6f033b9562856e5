"""Seeded random sketching operators: Gaussian, sign, sparse sign (SJLT/OSNAP), CountSketch, SRHT.

An operator ``S`` of shape (d, m) maps R^m -> R^d with ``E[S.T @ S] = I``. Its entries are
pure functions of ``(seed, entry index)`` (see ``sketchcore.random`` and contracts.md), so an
operator is only a few integers: it is never stored densely, and the kernels generate what
they need while they apply it.

Usage::

    S = GaussianSketch(d, m, seed=0)
    Y = S @ A            # A of shape (m,) or (m, n) [or (..., m, n), like numpy.matmul]
    Z = A @ S.T          # A of shape (n, m) [or (..., m)]: the right sketch
    W = S.apply(X, axis=k)   # sketch axis k (length m) of an n-d array; it becomes length d
    B = S.T @ Y          # the adjoint, S^T Y

Result dtype: ``numpy.result_type(S.dtype, A.dtype)`` (float32 operator on float32 data gives
float32; anything involving float64 gives float64), the same dtype as ``S.to_dense() @ A``.
The operator is applied in that dtype: its entries are generated in that precision.

Arrays are dispatched by ``sketchcore._backend.get_backend``: NumPy arrays to the Cython
kernels, CuPy arrays to the CUDA kernels; the result lives where the input lives.
"""
import numbers

import numpy as np

from sketchcore import random as _random
from sketchcore._backend import (check_array, check_real_dtype, check_size, get_backend,
                                 xp_of)

__all__ = ["SketchOperator", "GaussianSketch", "SignSketch", "SparseSignSketch", "CountSketch",
           "SRHT"]

# Columns of S materialised at once by the generic adjoint of the dense kinds.
_ADJOINT_TILE = 2048


def _next_pow2(m):
    return 1 << (int(m) - 1).bit_length()


def _fortran_only(A):
    """True for a 2-D array that is Fortran- but not C-contiguous (its transpose is C)."""
    return A.ndim == 2 and A.flags.f_contiguous and not A.flags.c_contiguous


def _parity(v):
    """Parity of the set bits of each non-negative int64 (H[r, k] = (-1)^parity(r & k))."""
    v = v.copy()
    for shift in (32, 16, 8, 4, 2, 1):
        v ^= v >> shift
    return v & 1


class SketchOperator:
    """Base class of the sketching operators: shape (d, m), seed, dtype and the products.

    Subclasses implement ``_left(backend, A)`` (S @ A for a C-contiguous (m, n) array),
    ``_right(backend, A)`` (A @ S.T for a C-contiguous (n, m) array), ``_adjoint(backend, B)``
    (S.T @ B for a C-contiguous (d, k) array) and ``_dense()`` (NumPy (d, m)).

    Parameters
    ----------
    d : int
        Sketch size (rows), >= 1.
    m : int
        Input dimension (columns), >= 1.
    seed : int or None
        64-bit seed; None draws one from the OS and records it in ``.seed``.
    dtype : {"float32", "float64"} or numpy dtype
        Dtype of ``to_dense()`` and the computation dtype for float32 inputs.

    Raises
    ------
    TypeError
        ``d``, ``m`` or ``seed`` not integers; ``dtype`` not float32/float64.
    ValueError
        ``d`` or ``m`` < 1; ``seed`` outside [0, 2**64).
    """

    #: Stream kind of ``sketchcore.random.make_stream``.
    kind = None

    # NumPy must defer ``ndarray @ operator`` to ``__rmatmul__``.
    __array_ufunc__ = None

    def __init__(self, d, m, seed=None, dtype="float32"):
        self._d = check_size(d, "d")
        self._m = check_size(m, "m")
        self._seed = _random.resolve_seed(seed)
        self._dtype = check_real_dtype(dtype)

    # -- attributes -------------------------------------------------------------------------
    @property
    def shape(self):
        """tuple (d, m)."""
        return (self._d, self._m)

    @property
    def d(self):
        """int: sketch size (rows)."""
        return self._d

    @property
    def m(self):
        """int: input dimension (columns)."""
        return self._m

    @property
    def seed(self):
        """int: the seed (drawn from the OS and recorded when None was passed)."""
        return self._seed

    @property
    def dtype(self):
        """numpy.dtype: float32 or float64."""
        return self._dtype

    @property
    def T(self):
        """TransposedSketch: the (m, d) adjoint view; ``A @ S.T`` is the right sketch."""
        return TransposedSketch(self)

    @property
    def stream(self):
        """int: Philox stream id of the operator's entries (``make_stream(kind, 0, 0)``)."""
        return _random.make_stream(self.kind, 0, 0)

    def _params(self):
        return f"d={self._d}, m={self._m}"

    def __repr__(self):
        return (f"{type(self).__name__}({self._params()}, seed={self._seed}, "
                f"dtype='{self._dtype.name}')")

    # -- products ---------------------------------------------------------------------------
    def _prepare(self, A, name, axis_len, axis, expected):
        """Validate A, check the length of ``axis``, cast to the computation dtype."""
        A = check_array(A, name, min_ndim=1)
        if A.shape[axis] != axis_len:
            raise ValueError(f"{name} must have {expected} = {axis_len} to match the operator of "
                             f"shape {self.shape}, got {name} of shape {A.shape}")
        return A.astype(np.result_type(self._dtype, A.dtype), copy=False)

    def __matmul__(self, A):
        """``S @ A`` for A of shape (m,), (m, n) or (..., m, n); returns (d,), (d, n), (..., d, n).

        Raises
        ------
        TypeError
            A is not a float32/float64 array.
        ValueError
            ``A.shape[0]`` (``A.shape[-2]`` for n-d A) is not m.
        """
        if isinstance(A, (SketchOperator, TransposedSketch)):
            return NotImplemented
        A = check_array(A, "A", min_ndim=1)
        if A.ndim > 2:
            return self.apply(A, axis=-2)
        A = self._prepare(A, "A", self._m, 0, "A.shape[0]")
        xp = xp_of(A)
        if A.ndim == 1:
            return self._left(get_backend(A), xp.ascontiguousarray(A[:, None]))[:, 0]
        if _fortran_only(A):
            # A.T is C-contiguous: the right kernel on it avoids copying A.
            return xp.ascontiguousarray(self._right(get_backend(A), A.T).T)
        return self._left(get_backend(A), xp.ascontiguousarray(A))

    def __rmatmul__(self, A):
        """``A @ S`` for A of shape (d,), (n, d) or (..., d): the adjoint on the right,
        returns (m,), (n, m) or (..., m)."""
        if isinstance(A, (SketchOperator, TransposedSketch)):
            return NotImplemented
        A = self._prepare(A, "A", self._d, -1, "A.shape[-1]")
        xp = xp_of(A)
        lead = A.shape[:-1]
        B = xp.ascontiguousarray(A.reshape(-1, self._d).T)
        return xp.ascontiguousarray(self._adjoint(get_backend(A), B).T).reshape(*lead, self._m)

    def _right_apply(self, A):
        """``A @ S.T`` for A of shape (..., m); returns (..., d)."""
        A = self._prepare(A, "A", self._m, -1, "A.shape[-1]")
        xp = xp_of(A)
        if A.ndim == 2 and _fortran_only(A):
            # A.T is C-contiguous: the left kernel on it avoids copying A.
            return xp.ascontiguousarray(self._left(get_backend(A), A.T).T)
        lead = A.shape[:-1]
        A2 = xp.ascontiguousarray(A.reshape(-1, self._m))
        return self._right(get_backend(A), A2).reshape(*lead, self._d)

    def _adjoint_apply(self, B):
        """``S.T @ B`` for B of shape (d,), (d, k) or (..., d, k); returns (m,), (m, k), ...."""
        B = check_array(B, "B", min_ndim=1)
        if B.ndim > 2:
            B = self._prepare(B, "B", self._d, -2, "B.shape[-2]")
            xp = xp_of(B)
            moved = xp.moveaxis(B, -2, 0)
            out = self._adjoint(get_backend(B), xp.ascontiguousarray(moved.reshape(self._d, -1)))
            return xp.moveaxis(out.reshape(self._m, *moved.shape[1:]), 0, -2)
        B = self._prepare(B, "B", self._d, 0, "B.shape[0]")
        xp = xp_of(B)
        if B.ndim == 1:
            return self._adjoint(get_backend(B), xp.ascontiguousarray(B[:, None]))[:, 0]
        return self._adjoint(get_backend(B), xp.ascontiguousarray(B))

    def apply(self, A, axis=0):
        """Sketch axis ``axis`` of an n-d array: that axis (length m) becomes length d.

        Parameters
        ----------
        A : ndarray of shape (..., m, ...)
            float32 or float64, any layout; NumPy or CuPy.
        axis : int, default 0
            The axis of length m (negative values count from the end).

        Returns
        -------
        ndarray of shape (..., d, ...)
            Same shape as A except ``axis``; dtype ``result_type(S.dtype, A.dtype)``.

        Raises
        ------
        TypeError
            A is not a float32/float64 array, or ``axis`` is not an integer.
        ValueError
            ``axis`` out of range or ``A.shape[axis] != m``.
        """
        A = check_array(A, "A", min_ndim=1)
        if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
            raise TypeError(f"axis must be an integer, got {type(axis).__name__} {axis!r}")
        axis = int(axis)
        if not -A.ndim <= axis < A.ndim:
            raise ValueError(f"axis must be in [-{A.ndim}, {A.ndim}) for A of shape {A.shape}, "
                             f"got {axis}")
        axis %= A.ndim
        A = self._prepare(A, "A", self._m, axis, f"A.shape[{axis}]")
        xp = xp_of(A)
        if A.ndim == 1:
            return self._left(get_backend(A), xp.ascontiguousarray(A[:, None]))[:, 0]
        if axis == A.ndim - 1:
            return self._right_apply(A)
        moved = xp.moveaxis(A, axis, 0)
        rest = moved.shape[1:]
        Y = self._left(get_backend(A), xp.ascontiguousarray(moved.reshape(self._m, -1)))
        return xp.moveaxis(Y.reshape(self._d, *rest), 0, axis)

    def to_dense(self):
        """The operator as a dense NumPy array.

        Returns
        -------
        ndarray of shape (d, m), dtype ``self.dtype``
            Memory O(d m): meant for tests and small problems.
        """
        return self._dense()

    # -- to be provided by the kinds -------------------------------------------------------
    def _left(self, backend, A):  # pragma: no cover - abstract
        raise NotImplementedError

    def _right(self, backend, A):  # pragma: no cover - abstract
        raise NotImplementedError

    def _adjoint(self, backend, B):  # pragma: no cover - abstract
        raise NotImplementedError

    def _dense(self):  # pragma: no cover - abstract
        raise NotImplementedError


class TransposedSketch:
    """``S.T``: the (m, d) adjoint of a sketch operator, a view (no data).

    ``A @ S.T`` sketches the rows of A (shape (n, m) or (..., m) -> (n, d) or (..., d));
    ``S.T @ B`` applies the adjoint to B of shape (d,), (d, k) or (..., d, k).
    """

    __array_ufunc__ = None

    def __init__(self, op):
        self._op = op

    @property
    def T(self):
        """SketchOperator: the operator itself."""
        return self._op

    @property
    def shape(self):
        """tuple (m, d)."""
        return (self._op.m, self._op.d)

    @property
    def seed(self):
        """int: the operator's seed."""
        return self._op.seed

    @property
    def dtype(self):
        """numpy.dtype: the operator's dtype."""
        return self._op.dtype

    def __repr__(self):
        return f"{self._op!r}.T"

    def to_dense(self):
        """ndarray of shape (m, d): ``S.to_dense().T``."""
        return self._op.to_dense().T

    def __rmatmul__(self, A):
        """``A @ S.T`` for A of shape (m,), (n, m) or (..., m); returns (d,), (n, d), (..., d)."""
        if isinstance(A, (SketchOperator, TransposedSketch)):
            return NotImplemented
        return self._op._right_apply(A)

    def __matmul__(self, B):
        """``S.T @ B`` for B of shape (d,), (d, k) or (..., d, k); returns (m,), (m, k), ...."""
        if isinstance(B, (SketchOperator, TransposedSketch)):
            return NotImplemented
        return self._op._adjoint_apply(B)


class _DenseKind(SketchOperator):
    """Shared machinery of the dense kinds (entries generated tile by tile in the kernels)."""

    _kernel_kind = None   # 0 Gaussian, 1 sign (``dense_block``)
    _left_name = None
    _right_name = None

    def _scale(self):
        return 1.0 / np.sqrt(self._d)

    def _left(self, backend, A):
        return getattr(backend, self._left_name)(A, self._d, self._seed, self.stream)

    def _right(self, backend, A):
        return getattr(backend, self._right_name)(A, self._d, self._seed, self.stream)

    def _adjoint(self, backend, B):
        xp = xp_of(B)
        out = xp.empty((self._m, B.shape[1]), dtype=B.dtype)
        for j0 in range(0, self._m, _ADJOINT_TILE):
            j1 = min(j0 + _ADJOINT_TILE, self._m)
            blk = backend.dense_block(self._kernel_kind, self._seed, self.stream, self._m,
                                      0, self._d, j0, j1, self._scale(), B.dtype)
            out[j0:j1] = blk.T @ B
        return out

    def _dense(self):
        from sketchcore import _cpu
        return _cpu.dense_block(self._kernel_kind, self._seed, self.stream, self._m,
                                0, self._d, 0, self._m, self._scale(), self._dtype)


class GaussianSketch(_DenseKind):
    """Gaussian sketch: S[i, j] = N(0, 1) entry ``i*m + j`` of the seed's "gaussian" stream,
    divided by sqrt(d); E[S.T @ S] = I.

    Applied with tiles of S generated inside the product (memory O(d * tile + output)).
    Parameters and errors as in ``SketchOperator``.
    """

    kind = "gaussian"
    _kernel_kind = 0
    _left_name = "gaussian_left"
    _right_name = "gaussian_right"


class SignSketch(_DenseKind):
    """Random sign sketch: S[i, j] = -1/sqrt(d) when the top bit of word ``i*m + j`` of the
    seed's "sign" stream is set, else +1/sqrt(d); E[S.T @ S] = I.

    Parameters and errors as in ``SketchOperator``.
    """

    kind = "sign"
    _kernel_kind = 1
    _left_name = "sign_left"
    _right_name = "sign_right"


class SparseSignSketch(SketchOperator):
    """Sparse sign sketch (SJLT / OSNAP): ``nnz`` nonzeros +-1/sqrt(nnz) per column.

    Column j has one nonzero in each of nnz row blocks (block t covers rows
    [t*d//nnz, (t+1)*d//nnz)), at a row and with a sign drawn from counter ``j*nnz + t`` of
    the seed's "sparse_sign" stream; the rows of a column are distinct by construction.
    Applied by scatter-add; never stored densely.

    Parameters
    ----------
    d, m, seed, dtype
        As in ``SketchOperator``.
    nnz : int, default 8
        Nonzeros per column, 1 <= nnz <= d.

    Raises
    ------
    TypeError
        ``nnz`` is not an integer (and the errors of ``SketchOperator``).
    ValueError
        ``nnz`` < 1 or ``nnz`` > d.
    """

    kind = "sparse_sign"

    def __init__(self, d, m, nnz=8, seed=None, dtype="float32"):
        super().__init__(d, m, seed=seed, dtype=dtype)
        self._nnz = check_size(nnz, "nnz")
        if self._nnz > self._d:
            raise ValueError(f"nnz must be <= d (one nonzero per row block), got nnz={self._nnz}"
                             f" > d={self._d}")

    @property
    def nnz(self):
        """int: nonzeros per column."""
        return self._nnz

    def _params(self):
        return f"d={self._d}, m={self._m}, nnz={self._nnz}"

    def _left(self, backend, A):
        return backend.sparse_sign_left(A, self._d, self._nnz, self._seed, self.stream)

    def _right(self, backend, A):
        return backend.sparse_sign_right(A, self._d, self._nnz, self._seed, self.stream)

    def _adjoint(self, backend, B):
        xp = xp_of(B)
        out = xp.empty((self._m, B.shape[1]), dtype=B.dtype)
        scale = B.dtype.type(1.0 / np.sqrt(self._nnz))
        step = max(1, (1 << 22) // max(1, self._nnz * B.shape[1]))
        for j0 in range(0, self._m, step):
            j1 = min(j0 + step, self._m)
            rows, signs = backend.sparse_sign_indices(self._d, self._nnz, self._seed,
                                                      self.stream, j0, j1)
            signs = signs.astype(B.dtype) * scale
            acc = signs[:, 0, None] * B[rows[:, 0]]
            for t in range(1, self._nnz):
                acc += signs[:, t, None] * B[rows[:, t]]
            out[j0:j1] = acc
        return out

    def _dense(self):
        from sketchcore import _cpu
        rows, signs = _cpu.sparse_sign_indices(self._d, self._nnz, self._seed, self.stream,
                                               0, self._m)
        out = np.zeros((self._d, self._m), dtype=self._dtype)
        cols = np.arange(self._m)
        scale = 1.0 / np.sqrt(self._nnz)
        for t in range(self._nnz):
            out[rows[:, t], cols] = signs[:, t] * scale
        return out


class CountSketch(SparseSignSketch):
    """CountSketch: one +-1 per column (``SparseSignSketch`` with nnz = 1, same stream).

    Parameters and errors as in ``SketchOperator``.
    """

    def __init__(self, d, m, seed=None, dtype="float32"):
        super().__init__(d, m, nnz=1, seed=seed, dtype=dtype)

    def _params(self):
        return f"d={self._d}, m={self._m}"


class SRHT(SketchOperator):
    """Subsampled randomized Hadamard transform: S = (1/sqrt(d)) R H D P.

    P zero-pads R^m to R^p (p = next power of two >= m, so any m works), D holds the signs
    of words 0 .. m-1 of the "srht" stream (role 0), H is the unnormalised Sylvester
    Hadamard matrix of order p and R keeps the d rows with the smallest (key, index) pairs,
    in that order, key[r] = word r of the "srht" stream with role 1 (drawn on the host).
    Applied by a blocked fast Walsh-Hadamard transform that computes only the kept rows.

    Parameters and errors as in ``SketchOperator``, plus

    Raises
    ------
    ValueError
        d > m.
    """

    kind = "srht"

    def __init__(self, d, m, seed=None, dtype="float32"):
        super().__init__(d, m, seed=seed, dtype=dtype)
        if self._d > self._m:
            raise ValueError(f"SRHT needs d <= m (it subsamples the m-dimensional transform), "
                             f"got d={self._d} > m={self._m}")
        self._rows = None

    @property
    def p(self):
        """int: padded length, the next power of two >= m."""
        return _next_pow2(self._m)

    @property
    def rows(self):
        """ndarray of shape (d,), int64: the kept rows of H, in output order."""
        if self._rows is None:
            keys = _random.random_words(self._seed, _random.make_stream("srht", 0, 1), 0, self.p)
            # The d smallest (key, index) pairs without sorting all p keys.
            if self._d < keys.size:
                kth = np.partition(keys, self._d - 1)[self._d - 1]
                cand = np.flatnonzero(keys <= kth)
            else:
                cand = np.arange(keys.size)
            order = np.lexsort((cand, keys[cand]))[:self._d]
            self._rows = cand[order].astype(np.int64)
            self._rows.setflags(write=False)
        return self._rows

    def _rows_on(self, xp):
        return self.rows if xp is np else xp.asarray(self.rows)

    def _left(self, backend, A):
        return backend.srht_left(A, self._rows_on(xp_of(A)), self._seed, self.stream)

    def _right(self, backend, A):
        return backend.srht_right(A, self._rows_on(xp_of(A)), self._seed, self.stream)

    def _signs(self, backend, dtype):
        # Word j of the sign stream is entry (0, j) of a sign operator with m columns.
        return backend.dense_block(1, self._seed, self.stream, self._m, 0, 1, 0, self._m,
                                   1.0, dtype)[0]

    def _adjoint(self, backend, B):
        xp = xp_of(B)
        X = xp.zeros((self.p, B.shape[1]), dtype=B.dtype)
        X[self._rows_on(xp)] = B
        backend.fwht_rows(X)
        out = X[:self._m]
        out *= (self._signs(backend, B.dtype) * B.dtype.type(1.0 / np.sqrt(self._d)))[:, None]
        return xp.ascontiguousarray(out)

    def _dense(self):
        from sketchcore import _cpu
        cols = np.arange(self._m, dtype=np.int64)
        parity = _parity(self.rows[:, None] & cols[None, :])
        signs = self._signs(_cpu, np.float64)
        dense = (1.0 - 2.0 * parity) * signs[None, :] * (1.0 / np.sqrt(self._d))
        return dense.astype(self._dtype)
