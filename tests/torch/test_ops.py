"""sketchcore_torch._ops (custom ops, autograd of any order) and _bridge (zero copy)."""
import numpy as np
import pytest
import torch

from sketchcore_torch import _bridge, _ops

torch_ops = torch.ops.sketchcore


def _factors(n=6, m=5, o=4, L=2, k=3, dtype=torch.float64, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, m, dtype=dtype, generator=g, requires_grad=True)
    S1s = torch.randn(L, m, k, dtype=dtype, generator=g, requires_grad=True)
    S2s = torch.randn(L, k, o, dtype=dtype, generator=g, requires_grad=True)
    U1s = torch.randint(0, 2, (L, k, o), generator=g).to(dtype).mul(2).sub(1) / k ** 0.5
    U2s = torch.randint(0, 2, (L, m, k), generator=g).to(dtype).mul(2).sub(1) / k ** 0.5
    b = torch.randn(o, dtype=dtype, generator=g, requires_grad=True) if bias else None
    return x, S1s, S2s, U1s, U2s, b


def _dense(x, S1s, S2s, U1s, U2s, b):
    W = (S1s @ U1s + U2s @ S2s).sum(0) / (2 * S1s.shape[0])
    return x @ W + (0 if b is None else b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_dense(dtype, bias):
    args = _factors(dtype=dtype, bias=bias)
    y = _ops.sketched_linear(*args)
    assert y.dtype == dtype
    torch.testing.assert_close(y, _dense(*args))


@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck_and_gradgradcheck(bias):
    args = _factors(bias=bias)
    assert torch.autograd.gradcheck(_ops.sketched_linear, args)
    assert torch.autograd.gradgradcheck(_ops.sketched_linear, args)


def test_third_order_matches_dense():
    """The backward's derivative is written with the ops themselves: any order works."""
    args = _factors(n=3, m=4, o=3, L=2, k=2)

    def third(f):
        x = args[0]
        y = f(*args)
        (gx,) = torch.autograd.grad((y ** 3).sum(), x, create_graph=True)
        (ggx,) = torch.autograd.grad((gx ** 2).sum(), x, create_graph=True)
        return torch.autograd.grad(ggx.sum(), args[1])[0]

    torch.testing.assert_close(third(_ops.sketched_linear), third(_dense))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_opcheck_forward(bias, dtype):
    torch.library.opcheck(torch_ops.sklinear_forward.default, _factors(dtype=dtype, bias=bias))


@pytest.mark.parametrize("flags", [(True, True, True), (False, True, False), (True, False, True)])
def test_opcheck_backward(flags):
    x, S1s, S2s, U1s, U2s, _ = _factors()
    g = torch.randn(x.shape[0], S2s.shape[2], dtype=x.dtype, requires_grad=True)
    hidden = torch_ops.sklinear_forward(x, S1s, S2s, U1s, U2s, None)[1]
    for h in (hidden, None):
        torch.library.opcheck(torch_ops.sklinear_backward.default,
                              (g, x, h, S1s, S2s, U1s, U2s, *flags))


def test_unwanted_gradients_are_empty_and_skipped():
    x, S1s, S2s, U1s, U2s, _ = _factors()
    g = torch.randn(x.shape[0], S2s.shape[2], dtype=x.dtype)
    gx, g1, g2, gb = torch_ops.sklinear_backward(g, x, None, S1s, S2s, U1s, U2s,
                                                 False, False, True)
    assert gx.numel() == 0 and gb.numel() == 0 and g1.shape == S1s.shape


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("L,m,k,o", [(1, 72, 8, 40), (2, 7, 3, 5)])
@pytest.mark.parametrize("has_bias,need_weights",
                         [(True, True), (False, True), (True, False), (False, False)])
def test_gradient_block_layout(dtype, L, m, k, o, has_bias, need_weights):
    """The eager CUDA backward's parameter gradients share one allocation: grad_S2s at its
    start, grad_bias right after it (one 16-bit product fills both), grad_S1s from an
    aligned offset; contiguous, the parameters' shapes, no overlap. The op's do not share."""
    S1s, S2s = torch.empty(L, m, k, dtype=dtype), torch.empty(L, k, o, dtype=dtype)
    g1, g2, gb = _ops._grad_block(S1s, S2s, has_bias, need_weights)
    assert (g1 is None) == (g2 is None) == (not need_weights)
    assert (gb is None) == (not has_bias)
    item = S1s.element_size()
    if need_weights:
        assert g1.shape == S1s.shape and g2.shape == S2s.shape
        assert g1.is_contiguous() and g2.is_contiguous() and g1.dtype == g2.dtype == dtype
        assert g2.storage_offset() == 0
        assert (g1.data_ptr() - g2.data_ptr()) % _ops._ALIGN == 0
        assert g1.data_ptr() >= g2.data_ptr() + (g2.numel() + (o if has_bias else 0)) * item
        if has_bias:
            assert gb.data_ptr() == g2.data_ptr() + g2.numel() * item
    if has_bias:
        assert gb.shape == (o,) and gb.is_contiguous() and gb.dtype == dtype
    parts = [t for t in (g1, g2, gb) if t is not None]
    for value, t in enumerate(parts, 1):
        t.fill_(value)
    for value, t in enumerate(parts, 1):
        assert bool((t == value).all())
    # For the custom op: the same tensors, none sharing memory with another.
    apart = _ops._grad_block(S1s, S2s, has_bias, need_weights, shared=False)
    assert [None if t is None else (t.shape, t.dtype) for t in apart] == \
        [None if t is None else (t.shape, t.dtype) for t in (g1, g2, gb)]
    storages = [t.untyped_storage().data_ptr() for t in apart if t is not None]
    assert len(set(storages)) == len(storages)


def test_input_without_grad_gets_none():
    x, S1s, S2s, U1s, U2s, b = _factors()
    x = x.detach()
    _ops.sketched_linear(x, S1s, S2s, U1s, U2s, b).sum().backward()
    assert x.grad is None and S1s.grad is not None and b.grad is not None


@pytest.mark.parametrize("half", [torch.bfloat16, torch.float16])
def test_half_precision_computes_in_float32(half):
    args32 = [None if a is None else a.detach().float() for a in _factors(n=8, m=16, o=12)]
    argsh = [None if a is None else a.to(half).requires_grad_(a.is_floating_point() and i in (0, 1, 2, 5))
             for i, a in enumerate(args32)]
    y = _ops.sketched_linear(*argsh)
    assert y.dtype == half
    # Only the inputs were rounded to half; the products are float32, then one rounding.
    ref = _dense(*[None if a is None else a.float() for a in argsh])
    torch.testing.assert_close(y.float(), ref, rtol=2 * torch.finfo(half).eps, atol=1e-3)
    y.float().sum().backward()
    assert argsh[0].grad.dtype == half and argsh[1].grad.dtype == half


def test_wrapper_errors():
    x, S1s, S2s, U1s, U2s, b = _factors()
    with pytest.raises(ValueError, match=r"x of shape \(batch, 5\)"):
        _ops.sketched_linear(x[:, :4], S1s, S2s, U1s, U2s, b)
    with pytest.raises(ValueError, match="inconsistent factor shapes"):
        _ops.sketched_linear(x, S1s, S2s[:, :2], U1s, U2s, b)
    with pytest.raises(TypeError, match="S2s is torch.float32"):
        _ops.sketched_linear(x, S1s, S2s.float(), U1s, U2s, b)


@pytest.mark.slow
def test_compile_fullgraph_matches_eager():
    args = _factors(n=7, m=9, o=5, dtype=torch.float32)
    torch._dynamo.reset()
    f = torch.compile(_ops.sketched_linear, fullgraph=True)
    y = f(*args)
    y.square().sum().backward()
    grads = [a.grad.clone() for a in args if a is not None and a.requires_grad]
    for a in args:
        if a is not None:
            a.grad = None
    y_e = _ops.sketched_linear(*args)
    y_e.square().sum().backward()
    torch.testing.assert_close(y, y_e)
    for g, a in zip(grads, [a for a in args if a is not None and a.requires_grad]):
        torch.testing.assert_close(g, a.grad)


# ------------------------------------------------------------------------------- bridge
def test_to_array_shares_memory_and_strides():
    t = torch.arange(12.0).reshape(3, 4)[:, ::2]
    a = _bridge.to_array(t)
    assert isinstance(a, np.ndarray) and a.shape == (3, 2) and not a.flags.c_contiguous
    t[0, 0] = 42.0
    assert a[0, 0] == 42.0


def test_to_array_detaches_and_refuses_bad_input():
    t = torch.ones(3, requires_grad=True)
    assert _bridge.to_array(t).shape == (3,)
    with pytest.raises(TypeError, match="bfloat16"):
        _bridge.to_array(torch.ones(2, dtype=torch.bfloat16))
    with pytest.raises(TypeError, match="torch.Tensor"):
        _bridge.to_array(np.ones(2))
    with pytest.raises(ValueError, match="CPU and CUDA"):
        _bridge.to_array(torch.ones(2, device="meta"))


def test_to_tensor_is_zero_copy():
    a = np.arange(6.0).reshape(2, 3)
    t = _bridge.to_tensor(a)
    a[1, 2] = -1.0
    assert t[1, 2] == -1.0 and t.dtype == torch.float64
    r = np.arange(3.0)
    r.flags.writeable = False
    assert torch.equal(_bridge.to_tensor(r), torch.arange(3.0, dtype=torch.float64))
    with pytest.raises(TypeError, match="NumPy or CuPy"):
        _bridge.to_tensor([1.0, 2.0])
    with pytest.raises(ValueError, match="expected meta"):
        _bridge.to_tensor(a, like=torch.ones(1, device="meta"))


# ------------------------------------------------------------------------ pr.sketch
import sketchcore_torch as pr  # noqa: E402

SKETCHES = [(pr.sketch.GaussianSketch, {}), (pr.sketch.SignSketch, {}),
            (pr.sketch.SparseSignSketch, {"nnz": 3}), (pr.sketch.CountSketch, {}),
            (pr.sketch.SRHT, {})]


@pytest.mark.parametrize("cls,kw", SKETCHES)
def test_sketch_products_on_tensors_match_dense_and_are_differentiable(cls, kw):
    S = cls(6, 10, seed=1, dtype="float64", **kw)
    D = torch.from_numpy(S.to_dense())
    A = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    B = torch.randn(6, 2, dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(S @ A, D @ A)
    torch.testing.assert_close(A.T @ S.T, A.T @ D.T)
    torch.testing.assert_close(S.T @ B, D.T @ B)
    torch.testing.assert_close(B.T @ S, B.T @ D)
    X = torch.randn(2, 10, 3, dtype=torch.float64)
    torch.testing.assert_close(S.apply(X, axis=1), torch.einsum("dm,amb->adb", D, X))
    assert torch.autograd.gradcheck(lambda a: S @ a, (A,))
    assert torch.autograd.gradcheck(lambda a: a.T @ S.T, (A,))
    assert torch.autograd.gradcheck(lambda b: S.T @ b, (B,))
    assert torch.autograd.gradcheck(lambda b: b.T @ S, (B,))
    assert isinstance(S @ A.detach().numpy(), np.ndarray)       # NumPy stays NumPy


def test_sketch_tensor_errors_and_half_precision():
    S = pr.sketch.SparseSignSketch(4, 8, nnz=2, seed=0)
    with pytest.raises(ValueError, match=r"A.shape\[0\] = 8"):
        S @ torch.randn(7, 2)
    with pytest.raises(TypeError, match="floating-point tensor"):
        S @ torch.ones(8, 2, dtype=torch.int64)
    y = S @ torch.randn(8, 3, dtype=torch.bfloat16)
    assert y.dtype == torch.bfloat16 and y.shape == (4, 3)
    assert isinstance(S, pr.sketch.SketchOperator)
