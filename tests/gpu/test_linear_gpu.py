"""SKLinear CUDA kernels vs the CPU kernels and a float64 reference (needs a GPU)."""
import numpy as np
import pytest

from sketchcore import _cpu
from _gpu_helpers import gamma, assert_within

pytestmark = pytest.mark.gpu
cupy = pytest.importorskip("cupy")
from sketchcore import _cuda  # noqa: E402

SHAPES = [(1, 1, 1, 1, 1), (5, 3, 7, 2, 3), (33, 70, 65, 1, 16), (300, 257, 130, 3, 5),
          (2048, 64, 48, 2, 8)]   # (n, m, o, L, k)


def _problem(n, m, o, L, k, rng):
    x = rng.standard_normal((n, m))
    S1s = rng.standard_normal((L, m, k)) / np.sqrt(m)
    S2s = rng.standard_normal((L, k, o)) / np.sqrt(k)
    U1s = np.sign(rng.standard_normal((L, k, o))) / np.sqrt(k)
    U2s = np.sign(rng.standard_normal((L, m, k))) / np.sqrt(k)
    bias = rng.standard_normal(o)
    g = rng.standard_normal((n, o))
    return x, S1s, S2s, U1s, U2s, bias, g


def _reference(x, S1s, S2s, U1s, U2s, bias, g):
    """float64 forward/backward plus the absolute-value versions for error bounds."""
    L, m, k = S1s.shape
    c = 1 / (2 * L)
    W = c * sum(S1s[i] @ U1s[i] + U2s[i] @ S2s[i] for i in range(L))
    Wa = c * sum(abs(S1s[i]) @ abs(U1s[i]) + abs(U2s[i]) @ abs(S2s[i]) for i in range(L))
    y = x @ W + bias
    ya = abs(x) @ Wa + abs(bias)
    gx = g @ W.T
    gxa = abs(g) @ Wa.T
    gS1 = np.stack([c * x.T @ (g @ U1s[i].T) for i in range(L)])
    gS1a = np.stack([c * abs(x).T @ (abs(g) @ abs(U1s[i]).T) for i in range(L)])
    gS2 = np.stack([c * (x @ U2s[i]).T @ g for i in range(L)])
    gS2a = np.stack([c * (abs(x) @ abs(U2s[i])).T @ abs(g) for i in range(L)])
    gb = g.sum(axis=0)
    gba = abs(g).sum(axis=0)
    return (y, ya), (gx, gxa), (gS1, gS1a), (gS2, gS2a), (gb, gba)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("with_hidden", [True, False])
def test_linear_fp32_fp64(dtype, shape, with_hidden):
    n, m, o, L, k = shape
    rng = np.random.default_rng(sum(shape))
    prob = [a.astype(dtype) for a in _problem(n, m, o, L, k, rng)]
    x, S1s, S2s, U1s, U2s, bias, g = prob
    dev = [cupy.asarray(a) for a in prob]
    y, hidden = _cuda.sketched_linear_forward(*dev[:6])
    assert y.dtype == dtype and y.shape == (n, o) and hidden.shape == (n, 2 * L * k)
    refs = _reference(*[a.astype(np.float64) for a in prob])
    depth = m + o + 2 * L * k + n + 4      # longest chain of roundings in any result
    (yr, ya) = refs[0]
    assert_within(cupy.asnumpy(y), yr, gamma(depth, dtype) * ya + 1e-300, "forward y")
    y_cpu, h_cpu = _cpu.sketched_linear_forward(x, S1s, S2s, U1s, U2s, bias)
    assert_within(cupy.asnumpy(hidden), h_cpu,
                  2 * gamma(m + 1, dtype) * (np.abs(x) @ np.abs(np.concatenate(
                      [np.concatenate(list(S1s), 1), np.concatenate(list(U2s), 1)], 1))) + 1e-300,
                  "hidden vs CPU")
    out = _cuda.sketched_linear_backward(dev[6], dev[0], hidden if with_hidden else None,
                                         *dev[1:5], True)
    names = ["grad_x", "grad_S1s", "grad_S2s", "grad_bias"]
    for got, (r, ra), name in zip(out, refs[1:], names):
        assert got.dtype == dtype and got.shape == r.shape, name
        assert_within(cupy.asnumpy(got), r, gamma(depth, dtype) * ra + 1e-300, name)
    none_bias = _cuda.sketched_linear_backward(dev[6], dev[0], None, *dev[1:5], False)
    assert none_bias[3] is None


def _to_bf16_bits(a):
    """float32 -> bfloat16 bits by truncation (exactly representable test values)."""
    return (np.asarray(a, np.float32).view(np.uint32) >> 16).astype(np.uint16)


def _bf16_value(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def _bf16_to_f64(bits_dev):
    return _bf16_value(cupy.asnumpy(bits_dev).view(np.uint16))


@pytest.mark.parametrize("method", ["simt", "tensor_core"])
@pytest.mark.parametrize("kind", ["float16", "bfloat16"])
@pytest.mark.parametrize("shape", SHAPES[1:])
@pytest.mark.parametrize("factors16", [False, True])
def test_linear_16bit(kind, shape, factors16, method, monkeypatch):
    """16-bit activations, float32 accumulation, against float64 on the same 16-bit inputs.

    simt: float32 factors and intermediates, so the error is one 16-bit rounding of each
    16-bit output plus float32 accumulation. tensor_core: the factors and the thin
    intermediates are also rounded to 16 bits before their products (as torch's own 16-bit
    chain does): at most 4 more roundings along any path, 4 u |x| |A| |B| elementwise."""
    from sketchcore._cuda import _linear
    monkeypatch.setattr(_linear, "HALF_PRODUCTS", method)
    n, m, o, L, k = shape
    rng = np.random.default_rng(sum(shape) + 1)
    x, S1s, S2s, U1s, U2s, bias, g = _problem(n, m, o, L, k, rng)
    if kind == "float16":
        enc = lambda a: a.astype(np.float16)                       # noqa: E731
        dec = lambda a: np.asarray(a, np.float64)                  # noqa: E731
        dec_dev = lambda a: cupy.asnumpy(a).astype(np.float64)     # noqa: E731
        u16, storage = 2.0 ** -11, None
    else:
        enc = _to_bf16_bits
        dec = _bf16_value
        dec_dev = _bf16_to_f64
        u16, storage = 2.0 ** -8, "bfloat16"
    xe, ge, be = enc(x), enc(g), enc(bias)
    if factors16:
        fac = [enc(a) for a in (S1s, S2s, U1s, U2s)]
        fac64 = [dec(a) for a in fac]
    else:
        fac = [a.astype(np.float32) for a in (S1s, S2s, U1s, U2s)]
        fac64 = [a.astype(np.float64) for a in fac]
    refs = _reference(dec(xe), *fac64, dec(be), dec(ge))
    depth = m + o + 2 * L * k + n + 4
    y, hidden = _cuda.sketched_linear_forward(cupy.asarray(xe), *[cupy.asarray(a) for a in fac],
                                              cupy.asarray(be), storage=storage)
    assert hidden.dtype == np.float32
    extra = 4 * u16 if method == "tensor_core" else 0.0
    fp32 = lambda ra: (gamma(depth, np.float32) + extra) * ra        # noqa: E731
    yr, ya = refs[0]
    assert_within(dec_dev(y), yr, u16 * np.abs(yr) + fp32(ya) + 1e-30, f"{kind} y")
    out = _cuda.sketched_linear_backward(cupy.asarray(ge), cupy.asarray(xe), hidden,
                                         *[cupy.asarray(a) for a in fac], True, storage=storage)
    for i, (got, (r, ra)) in enumerate(zip(out, refs[1:])):
        is16 = i == 0 or factors16          # grad_x in x's dtype, the rest in the factors'
        val = dec_dev(got) if is16 else cupy.asnumpy(got).astype(np.float64)
        tol = (u16 * np.abs(r) if is16 else 0) + fp32(ra) + 1e-30
        assert_within(val, r, tol, f"{kind} grad {i}")


@pytest.mark.parametrize("need_x,need_w", [(True, False), (False, True), (False, False)])
def test_linear_backward_partial(need_x, need_w):
    n, m, o, L, k = 40, 30, 20, 2, 3
    rng = np.random.default_rng(5)
    prob = [cupy.asarray(a.astype(np.float32)) for a in _problem(n, m, o, L, k, rng)]
    x, S1s, S2s, U1s, U2s, bias, g = prob
    full = _cuda.sketched_linear_backward(g, x, None, S1s, S2s, U1s, U2s, True)
    part = _cuda.sketched_linear_backward(g, x, None, S1s, S2s, U1s, U2s, False, need_x, need_w)
    assert (part[0] is not None) == need_x and (part[1] is not None) == need_w
    assert (part[2] is not None) == need_w and part[3] is None
    for a, b in zip(full[:3], part[:3]):
        if b is not None:
            np.testing.assert_allclose(cupy.asnumpy(b), cupy.asnumpy(a), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["float32", "bfloat16"])
@pytest.mark.parametrize("L", [1, 2])
def test_saved_intermediates_and_fused_bias_gradient(kind, L):
    """The forward's ``saved`` dict gives the backward the same gradients (bit for bit on
    tensor cores; float32's split-K sums atomically, so up to summation order); a grad_bias
    placed right after grad_S2s (one product fills both, 16-bit layers) agrees with the
    separate column sum."""
    n, m, o, k = 70, 48, 40, 4
    rng = np.random.default_rng(L)
    x, S1s, S2s, U1s, U2s, bias, g = _problem(n, m, o, L, k, rng)
    if kind == "float32":
        enc, storage = (lambda a: a.astype(np.float32)), None
    else:
        enc, storage = _to_bf16_bits, "bfloat16"
    dev = [cupy.asarray(enc(a)) for a in (x, S1s, S2s, U1s, U2s, bias, g)]
    x_d, S1_d, S2_d, U1_d, U2_d, b_d, g_d = dev
    saved = {}
    y, hidden = _cuda.sketched_linear_forward(x_d, S1_d, S2_d, U1_d, U2_d, b_d,
                                              storage=storage, saved=saved)
    assert saved, "the forward saved nothing for the backward"
    plain = _cuda.sketched_linear_backward(g_d, x_d, hidden, S1_d, S2_d, U1_d, U2_d, True,
                                           storage=storage)
    reused = _cuda.sketched_linear_backward(g_d, x_d, hidden, S1_d, S2_d, U1_d, U2_d, True,
                                            storage=storage, saved=saved)

    def same(a, b):
        a, b = cupy.asnumpy(a), cupy.asnumpy(b)
        if kind == "float32":
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(a).max())
        else:
            np.testing.assert_array_equal(a, b)

    for a, b in zip(plain, reused):
        same(a, b)
    K = L * k
    both = cupy.empty((K + 1) * o, dtype=S1_d.dtype)
    gS2_out, gb_out = both[:K * o].reshape(L, k, o), both[K * o:]
    fused = _cuda.sketched_linear_backward(g_d, x_d, hidden, S1_d, S2_d, U1_d, U2_d, True,
                                           storage=storage, out=(None, None, gS2_out, gb_out))
    assert fused[2].data.ptr == gS2_out.data.ptr and fused[3].data.ptr == gb_out.data.ptr
    dec = ((lambda a: cupy.asnumpy(a).astype(np.float64)) if kind == "float32"
           else _bf16_to_f64)
    u = 2.0 ** -24 if kind == "float32" else 2.0 ** -8
    g_used = g.astype(np.float32) if kind == "float32" else _bf16_value(_to_bf16_bits(g))
    bound = (u + gamma(n + 2, np.float32)) * np.abs(g_used).sum(axis=0) + 1e-30
    for got in (fused[3], plain[3]):
        assert_within(dec(got), g_used.astype(np.float64).sum(axis=0), bound, "grad_bias")
    same(fused[2], plain[2])
