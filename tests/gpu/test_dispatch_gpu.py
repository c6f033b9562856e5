"""Public API on CuPy arrays: CuPy in -> CuPy out, same results as NumPy (needs a GPU)."""
import numpy as np
import pytest

import sketchcore as sc
from _gpu_helpers import gamma, assert_within

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")

KINDS = [("gaussian", lambda d, m, dt: sc.GaussianSketch(d, m, seed=3, dtype=dt)),
         ("sign", lambda d, m, dt: sc.SignSketch(d, m, seed=3, dtype=dt)),
         ("sparse", lambda d, m, dt: sc.SparseSignSketch(d, m, nnz=4, seed=3, dtype=dt)),
         ("count", lambda d, m, dt: sc.CountSketch(d, m, seed=3, dtype=dt)),
         ("srht", lambda d, m, dt: sc.SRHT(d, m, seed=3, dtype=dt))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,make", KINDS)
@pytest.mark.parametrize("d,m,n", [(8, 100, 5), (40, 1000, 33)])
def test_operator_on_cupy(dtype, name, make, d, m, n):
    S = make(d, m, dtype)
    rng = np.random.default_rng(d + m)
    A = rng.standard_normal((m, n)).astype(dtype)
    Sd = S.to_dense().astype(np.float64)
    bound = 2 * gamma(m + 2 * m.bit_length() + 4, dtype) * (np.abs(Sd) @ np.abs(A.astype(np.float64)))
    ref = Sd @ A.astype(np.float64)
    Yg = S @ cupy.asarray(A)
    assert isinstance(Yg, cupy.ndarray) and Yg.dtype == dtype and Yg.shape == (d, n)
    assert_within(cupy.asnumpy(Yg), ref, bound + 1e-300, f"{name} S @ A")
    assert_within(cupy.asnumpy(Yg), S @ A, 2 * bound + 1e-300, f"{name} GPU vs CPU")
    Zg = cupy.asarray(np.ascontiguousarray(A.T)) @ S.T
    assert isinstance(Zg, cupy.ndarray) and Zg.shape == (n, d)
    assert_within(cupy.asnumpy(Zg), ref.T, bound.T + 1e-300, f"{name} A @ S.T")
    v = cupy.asarray(A[:, 0])
    yv = S @ v
    assert isinstance(yv, cupy.ndarray) and yv.shape == (d,)
    # Adjoint S.T @ B on the device.
    B = rng.standard_normal((d, 3)).astype(dtype)
    adj = S.T @ cupy.asarray(B)
    assert isinstance(adj, cupy.ndarray) and adj.shape == (m, 3)
    badj = 2 * gamma(d + 2 * m.bit_length() + 4, dtype) * (np.abs(Sd).T @ np.abs(B)) + 1e-300
    assert_within(cupy.asnumpy(adj), Sd.T @ B.astype(np.float64), badj, f"{name} S.T @ B")
    # apply along another axis of a 3-D array.
    X = rng.standard_normal((2, m, 3)).astype(dtype)
    W = S.apply(cupy.asarray(X), axis=1)
    assert isinstance(W, cupy.ndarray) and W.shape == (2, d, 3)
    np.testing.assert_allclose(cupy.asnumpy(W), S.apply(X, axis=1),
                               rtol=0, atol=float(np.max(2 * gamma(m + 40, dtype) *
                                                         np.abs(Sd).sum(1)) * np.abs(X).max()))


def test_mixing_numpy_and_cupy_is_refused():
    with pytest.raises(TypeError, match="mix"):
        sc._backend.get_backend(np.zeros(3), cupy.zeros(3))
