"""sketchcore_torch.linalg: tensor wrappers agree bit for bit with the NumPy core."""
import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_limits

import sketchcore.linalg as core
import sketchcore_torch as pr


@pytest.fixture(autouse=True)
def _one_blas_thread():
    # Shared 2-core CI: multi-threaded OpenBLAS spins under contention (see tests/core).
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def _tensor(shape, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cqrrpt_tensor(dtype):
    A = _tensor((800, 40), dtype)
    Q, R, J = pr.linalg.cqrrpt(A, seed=3)
    assert Q.dtype == R.dtype == dtype and J.dtype == torch.long
    assert Q.shape == (800, 40) and R.shape == (40, 40) and J.shape == (40,)
    assert Q.device == A.device
    Qn, Rn, Jn = core.cqrrpt(A.numpy(), seed=3)
    assert np.array_equal(Q.numpy(), Qn) and np.array_equal(R.numpy(), Rn)
    assert np.array_equal(J.numpy(), Jn)
    tol = 1e-13 if dtype == torch.float64 else 1e-5
    assert torch.linalg.norm(A[:, J] - Q @ R) / torch.linalg.norm(A) < tol


def test_cqrrpt_transposed_view():
    A = _tensor((30, 600)).T  # non-contiguous (600, 30) view
    Q, R, J = pr.linalg.cqrrpt(A, seed=0)
    assert torch.linalg.norm(A[:, J] - Q @ R) / torch.linalg.norm(A) < 1e-13


@pytest.mark.parametrize("shape", [(300, 200), (120, 350)])
def test_rsvd_tensor(shape):
    A = _tensor(shape, seed=1)
    U, s, Vt = pr.linalg.rsvd(A, 10, seed=2)
    assert U.shape == (shape[0], 10) and s.shape == (10,) and Vt.shape == (10, shape[1])
    Un, sn, Vtn = core.rsvd(A.numpy(), 10, seed=2)
    assert np.array_equal(U.numpy(), Un) and np.array_equal(s.numpy(), sn)
    assert np.array_equal(Vt.numpy(), Vtn)
    U, s, Vt = pr.linalg.rsvd(A, tol=0.5, seed=0)
    assert torch.linalg.norm(A - (U * s) @ Vt) / torch.linalg.norm(A) <= 0.5


@pytest.mark.parametrize("cols", [None, 2])
def test_lstsq_tensor(cols):
    A = _tensor((3000, 30), seed=4)
    b = _tensor((3000,) if cols is None else (3000, cols), seed=5)
    x, info = pr.linalg.lstsq(A, b, seed=0, tol=1e-11)
    assert x.dtype == torch.float64 and x.shape == ((30,) if cols is None else (30, cols))
    xr = torch.linalg.lstsq(A, b if cols else b[:, None]).solution
    xr = xr if cols else xr[:, 0]
    assert torch.linalg.norm(x - xr) / torch.linalg.norm(xr) < 1e-10
    assert np.all(info.converged)


def test_sketched_matmul_tensor():
    A, B = _tensor((6, 40), seed=6), _tensor((40, 3), seed=7)
    C = pr.linalg.sketched_matmul(A, B, 20, seed=1)
    assert C.shape == (6, 3)
    assert np.array_equal(C.numpy(), core.sketched_matmul(A.numpy(), B.numpy(), 20, seed=1))


def test_bad_inputs():
    with pytest.raises(TypeError, match="A must be a torch.Tensor"):
        pr.linalg.cqrrpt(np.ones((5, 2)))
    with pytest.raises(TypeError, match="A must have dtype"):
        pr.linalg.rsvd(torch.ones(5, 3, dtype=torch.float16), 1)
    with pytest.raises(TypeError, match="b must have dtype"):
        pr.linalg.lstsq(torch.ones(5, 2, dtype=torch.float64), torch.ones(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="k must be <= min"):
        pr.linalg.rsvd(_tensor((5, 3)), 4)
