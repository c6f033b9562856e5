"""sketchcore.layers: the SKLinear kernels against plain NumPy references."""
import numpy as np
import pytest
from hypothesis import given, strategies as st
from threadpoolctl import threadpool_info

from sketchcore import layers
from sketchcore._cpu import _linear

DTYPES = [np.float32, np.float64]


@pytest.fixture(params=["default", "team"], autouse=True)
def parallel_mode(request):
    """Run every test with the default threshold and with the thread team forced on, so
    the block partitioning (including empty blocks when n < threads) is exercised."""
    old = _linear._set_parallel_min_flops(0 if request.param == "team" else 1 << 20)
    yield request.param
    _linear._set_parallel_min_flops(old)


def _factors(rng, n, m, o, L, k, dtype, bias=True):
    x = rng.standard_normal((n, m)).astype(dtype)
    S1s = rng.standard_normal((L, m, k)).astype(dtype)
    S2s = rng.standard_normal((L, k, o)).astype(dtype)
    U1s = (rng.choice([-1.0, 1.0], (L, k, o)) / np.sqrt(k)).astype(dtype)
    U2s = (rng.choice([-1.0, 1.0], (L, m, k)) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype) if bias else None
    return x, S1s, S2s, U1s, U2s, b


def _w_eff(S1s, S2s, U1s, U2s):
    """Dense reference W_eff (m, o) in float64 with a per-term Python loop."""
    L = S1s.shape[0]
    W = np.zeros((S1s.shape[1], S2s.shape[2]))
    for i in range(L):
        W += S1s[i].astype(np.float64) @ U1s[i] + U2s[i].astype(np.float64) @ S2s[i]
    return W / (2 * L)


def _w_eff_abs(S1s, S2s, U1s, U2s):
    L = S1s.shape[0]
    return sum(np.abs(S1s[i]).astype(np.float64) @ np.abs(U1s[i])
               + np.abs(U2s[i]).astype(np.float64) @ np.abs(S2s[i]) for i in range(L)) / (2 * L)


def _bound(dtype, depth, magnitude):
    """Forward error bound of a floating-point dot product of length ``depth``:
    |fl(a.b) - a.b| <= gamma_depth |a|.|b|, gamma_p = p u / (1 - p u), u = eps/2. The kernels
    chain two products (depth m then 2Lk), so the caller passes their sum plus slack for
    the scaling and bias additions."""
    u = np.finfo(dtype).eps / 2
    return (depth * u / (1 - depth * u)) * magnitude + np.finfo(dtype).tiny


shapes = st.tuples(st.integers(0, 9), st.integers(1, 12), st.integers(1, 12),
                   st.integers(1, 3), st.integers(1, 5))


@given(shape=shapes, dtype=st.sampled_from(DTYPES), bias=st.booleans(),
       seed=st.integers(0, 2**32 - 1))
def test_forward_matches_dense_reference(shape, dtype, bias, seed):
    n, m, o, L, k = shape
    x, S1s, S2s, U1s, U2s, b = _factors(np.random.default_rng(seed), n, m, o, L, k, dtype, bias)
    y, hidden = layers.sketched_linear_forward(x, S1s, S2s, U1s, U2s, b, return_hidden=True)
    assert y.dtype == dtype and y.shape == (n, o)
    ref = x.astype(np.float64) @ _w_eff(S1s, S2s, U1s, U2s) + (0 if b is None else b)
    mag = np.abs(x).astype(np.float64) @ _w_eff_abs(S1s, S2s, U1s, U2s) + (0 if b is None else np.abs(b))
    assert np.all(np.abs(y - ref) <= _bound(dtype, m + 2 * L * k + 3, mag))
    A = np.concatenate([S1s, U2s], axis=0).transpose(1, 0, 2).reshape(m, 2 * L * k)
    h_ref = x.astype(np.float64) @ A
    assert np.all(np.abs(hidden - h_ref) <= _bound(dtype, m + 1, np.abs(x) @ np.abs(A)))


@given(shape=shapes, dtype=st.sampled_from(DTYPES), bias=st.booleans(),
       keep_hidden=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_backward_matches_reference(shape, dtype, bias, keep_hidden, seed):
    n, m, o, L, k = shape
    rng = np.random.default_rng(seed)
    x, S1s, S2s, U1s, U2s, b = _factors(rng, n, m, o, L, k, dtype, bias)
    g = rng.standard_normal((n, o)).astype(dtype)
    hidden = (layers.sketched_linear_forward(x, S1s, S2s, U1s, U2s, b, return_hidden=True)[1]
              if keep_hidden else None)
    gx, gS1, gS2, gb = layers.sketched_linear_backward(g, x, S1s, S2s, U1s, U2s, bias,
                                                       hidden=hidden)
    c = 1.0 / (2 * L)
    g64, x64 = g.astype(np.float64), x.astype(np.float64)
    W = _w_eff(S1s, S2s, U1s, U2s)
    depth = m + o + 2 * L * k + n + 3
    assert gx.dtype == dtype and gx.shape == (n, m)
    assert np.all(np.abs(gx - g64 @ W.T)
                  <= _bound(dtype, depth, np.abs(g64) @ _w_eff_abs(S1s, S2s, U1s, U2s).T))
    for i in range(L):
        ref1 = c * x64.T @ (g64 @ U1s[i].T)
        mag1 = c * np.abs(x64).T @ (np.abs(g64) @ np.abs(U1s[i]).T)
        assert np.all(np.abs(gS1[i] - ref1) <= _bound(dtype, depth, mag1))
        ref2 = c * (x64 @ U2s[i]).T @ g64
        mag2 = c * (np.abs(x64) @ np.abs(U2s[i])).T @ np.abs(g64)
        assert np.all(np.abs(gS2[i] - ref2) <= _bound(dtype, depth, mag2))
    if bias:
        assert np.all(np.abs(gb - g64.sum(0)) <= _bound(dtype, n + 1, np.abs(g64).sum(0)))
    else:
        assert gb is None


@pytest.mark.parametrize("need_x,need_weights", [(True, False), (False, True), (False, False)])
def test_backward_skips_unwanted_gradients(need_x, need_weights):
    from sketchcore import _cpu
    rng = np.random.default_rng(1)
    x, S1s, S2s, U1s, U2s, _ = _factors(rng, 40, 30, 20, 2, 4, np.float64)
    g = rng.standard_normal((40, 20))
    full = _cpu.sketched_linear_backward(g, x, None, S1s, S2s, U1s, U2s, True)
    part = _cpu.sketched_linear_backward(g, x, None, S1s, S2s, U1s, U2s, True,
                                         need_x, need_weights)
    assert (part[0] is None) != need_x and (part[1] is None) != need_weights
    assert (part[2] is None) != need_weights
    for got, want in zip(part, full):
        if got is not None:
            np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,m,o,L,k", [
    (97, 130, 111, 3, 8),     # stacked factors, products split by columns
    (9, 130, 111, 3, 8),      # factors read in place (batch < 2k)
    (300, 50, 20, 2, 4),      # batch larger than every width: products split by rows
    (70, 40, 90, 1, 16),      # one term, batch between 2k and 2Lk
])
def test_parallel_and_serial_paths_agree(dtype, n, m, o, L, k):
    """Every way the team splits the products (and the serial path) gives the same numbers."""
    rng = np.random.default_rng(2)
    x, S1s, S2s, U1s, U2s, b = _factors(rng, n, m, o, L, k, dtype)
    g = rng.standard_normal((n, o)).astype(dtype)
    old = _linear._set_parallel_min_flops(1 << 62)
    try:
        y_s, h_s = layers.sketched_linear_forward(x, S1s, S2s, U1s, U2s, b, return_hidden=True)
        grads_s = layers.sketched_linear_backward(g, x, S1s, S2s, U1s, U2s, True, hidden=h_s)
    finally:
        _linear._set_parallel_min_flops(0)
    y_p, h_p = layers.sketched_linear_forward(x, S1s, S2s, U1s, U2s, b, return_hidden=True)
    grads_p = layers.sketched_linear_backward(g, x, S1s, S2s, U1s, U2s, True, hidden=h_p)
    grads_r = layers.sketched_linear_backward(g, x, S1s, S2s, U1s, U2s, True)
    _linear._set_parallel_min_flops(old)
    tol = 50 * np.finfo(dtype).eps
    for a, b_ in zip(grads_r, grads_p):    # recomputed hidden: other blocking, same values
        np.testing.assert_allclose(a, b_, rtol=tol, atol=tol * np.abs(b_).max())
    tol = 50 * np.finfo(dtype).eps
    np.testing.assert_allclose(y_p, y_s, rtol=tol, atol=tol * np.abs(y_s).max())
    for a, b_ in zip(grads_p, grads_s):
        np.testing.assert_allclose(a, b_, rtol=tol, atol=tol * np.abs(b_).max())


def test_blas_thread_count_is_restored():
    """The kernels pin OpenBLAS to one thread only for the duration of a call."""
    if _linear.blas_thread_control() is None:
        pytest.skip("BLAS under SciPy is not OpenBLAS: kernels do not touch its threads")
    rng = np.random.default_rng(3)
    x, S1s, S2s, U1s, U2s, b = _factors(rng, 64, 256, 256, 2, 16, np.float32)

    def scipy_blas_threads():
        return [i["num_threads"] for i in threadpool_info()
                if i["internal_api"] == "openblas" and "scipy.libs" in i["filepath"]]

    before = scipy_blas_threads()
    assert before, "SciPy's OpenBLAS not found by threadpoolctl"
    y, h = layers.sketched_linear_forward(x, S1s, S2s, U1s, U2s, b, return_hidden=True)
    layers.sketched_linear_backward(np.ones_like(y), x, S1s, S2s, U1s, U2s, True, hidden=h)
    assert scipy_blas_threads() == before


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly"])
def test_any_memory_layout_is_accepted(layout):
    rng = np.random.default_rng(4)
    x, S1s, S2s, U1s, U2s, b = _factors(rng, 6, 7, 5, 2, 3, np.float64)
    ref = layers.sketched_linear_forward(x, S1s, S2s, U1s, U2s, b)
    if layout == "fortran":
        args = [np.asfortranarray(a) for a in (x, S1s, S2s, U1s, U2s)]
    elif layout == "strided":
        args = [np.repeat(a, 2, axis=-1)[..., ::2] for a in (x, S1s, S2s, U1s, U2s)]
        assert not args[0].flags.c_contiguous
    else:
        args = [a.copy() for a in (x, S1s, S2s, U1s, U2s)]
        for a in args:
            a.flags.writeable = False
    np.testing.assert_array_equal(layers.sketched_linear_forward(*args, b), ref)


def test_degenerate_shapes():
    rng = np.random.default_rng(5)
    x, S1s, S2s, U1s, U2s, b = _factors(rng, 0, 4, 3, 2, 2, np.float32)
    y = layers.sketched_linear_forward(x, S1s, S2s, U1s, U2s, b)
    assert y.shape == (0, 3)
    gx, gS1, gS2, gb = layers.sketched_linear_backward(np.zeros((0, 3), np.float32), x, S1s,
                                                       S2s, U1s, U2s, True)
    assert gx.shape == (0, 4) and not gS1.any() and not gS2.any() and not gb.any()


def test_errors_name_the_argument():
    rng = np.random.default_rng(6)
    x, S1s, S2s, U1s, U2s, b = _factors(rng, 3, 4, 5, 2, 2, np.float64)
    f = layers.sketched_linear_forward
    with pytest.raises(ValueError, match=r"x must have shape \(batch, in_features\).*got"):
        f(x[:, :3], S1s, S2s, U1s, U2s, b)
    with pytest.raises(ValueError, match="x must be 2-D"):
        f(x[0], S1s, S2s, U1s, U2s, b)
    with pytest.raises(ValueError, match="S2s must have shape"):
        f(x, S1s, S2s[:, :1], U1s, U2s, b)
    with pytest.raises(ValueError, match="U1s must have shape"):
        f(x, S1s, S2s, U1s[:, :, :4], U2s, b)
    with pytest.raises(ValueError, match="U2s must have shape"):
        f(x, S1s, S2s, U1s, U2s[:1], b)
    with pytest.raises(ValueError, match=r"bias must have shape \(out_features,\) = \(5,\)"):
        f(x, S1s, S2s, U1s, U2s, b[:4])
    with pytest.raises(TypeError, match="x=float32"):
        f(x.astype(np.float32), S1s, S2s, U1s, U2s, b)
    with pytest.raises(TypeError, match="S1s must have dtype float32 or float64"):
        f(x, S1s.astype(np.int64), S2s, U1s, U2s, b)
    with pytest.raises(ValueError, match="grad_out must have shape"):
        layers.sketched_linear_backward(np.zeros((3, 4)), x, S1s, S2s, U1s, U2s, True)
    with pytest.raises(ValueError, match="hidden must have shape"):
        layers.sketched_linear_backward(np.zeros((3, 5)), x, S1s, S2s, U1s, U2s, True,
                                        hidden=np.zeros((3, 7)))
