"""sketchcore_torch.nn.SKLinear: Panther's API, init, numerics, and torch integration."""
import copy
import io
import math
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import sketchcore_torch as pr
from sketchcore import random as sc_random
from sketchcore_torch.nn import SKLinear

# Small test layers are larger than their dense twins on purpose; the warning itself is
# checked by test_warns_only_when_bigger_than_dense (pytest.warns sees it despite this filter).
pytestmark = pytest.mark.filterwarnings("ignore:SKLinear.*more than:UserWarning")


def _dense_ref(layer, x):
    y = x @ layer.effective_weight()
    return y if layer.bias is None else y + layer.bias


# --------------------------------------------------------------------- names and shapes
def test_panther_names_shapes_and_positional_order():
    layer = pr.nn.SKLinear(20, 12, 3, 4, seed=0)
    params = dict(layer.named_parameters())
    buffers = dict(layer.named_buffers())
    assert set(params) == {"S1s", "S2s", "bias"}
    assert set(buffers) == {"U1s", "U2s"}
    assert params["S1s"].shape == (3, 20, 4) and params["S2s"].shape == (3, 4, 12)
    assert buffers["U1s"].shape == (3, 4, 12) and buffers["U2s"].shape == (3, 20, 4)
    assert params["bias"].shape == (12,)
    assert (layer.in_features, layer.out_features, layer.num_terms, layer.low_rank) == (20, 12, 3, 4)
    assert pr.nn.SKLinear(20, 12, 3, 4, bias=False).bias is None


def test_signs_come_from_the_sklinear_streams():
    L, k, n_in, n_out, seed = 2, 4, 9, 7, 1234
    layer = SKLinear(n_in, n_out, L, k, seed=seed, dtype=torch.float64)
    assert layer.seed == seed
    for i in range(L):
        u1 = sc_random.signs(seed, sc_random.make_stream("sklinear", i, 0), 0, k * n_out,
                             np.float64, 1 / math.sqrt(k)).reshape(k, n_out)
        u2 = sc_random.signs(seed, sc_random.make_stream("sklinear", i, 1), 0, n_in * k,
                             np.float64, 1 / math.sqrt(k)).reshape(n_in, k)
        np.testing.assert_array_equal(layer.U1s[i].numpy(), u1)
        np.testing.assert_array_equal(layer.U2s[i].numpy(), u2)


def test_default_init_is_kaiming_uniform_like_nn_linear():
    n_in, n_out, L, k, seed = 30, 8, 2, 3, 5
    layer = SKLinear(n_in, n_out, L, k, seed=seed, dtype=torch.float64)
    bound = 1 / math.sqrt(n_in)
    u = sc_random.uniform(seed, sc_random.make_stream("sklinear", 0, 2), 0, n_out * n_in)
    W = torch.from_numpy(((2 * u - 1) * bound).reshape(n_out, n_in).T)   # (in, out)
    assert W.abs().max() <= bound
    torch.testing.assert_close(layer.S1s, W @ layer.U1s.transpose(1, 2))
    torch.testing.assert_close(layer.S2s, layer.U2s.transpose(1, 2) @ W)
    assert layer.bias.abs().max() <= bound


def test_w_init_is_used_in_nn_linear_layout():
    lin = nn.Linear(6, 4).double()
    layer = SKLinear(6, 4, 2, 3, W_init=lin.weight, seed=3, dtype=torch.float64)
    W = lin.weight.detach().T
    torch.testing.assert_close(layer.S1s, W @ layer.U1s.transpose(1, 2))
    torch.testing.assert_close(layer.S2s, layer.U2s.transpose(1, 2) @ W)


# ------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_equals_dense_reference(dtype, bias):
    layer = SKLinear(33, 17, 3, 5, bias=bias, dtype=dtype, seed=7)
    x = torch.randn(11, 33, dtype=dtype)
    torch.testing.assert_close(layer(x), _dense_ref(layer, x))


@pytest.mark.parametrize("shape", [(33,), (2, 3, 33), (0, 33), (4, 1, 2, 33)])
def test_any_leading_shape(shape):
    layer = SKLinear(33, 5, 2, 4, seed=1)
    x = torch.randn(*shape)
    y = layer(x)
    assert y.shape == shape[:-1] + (5,)
    torch.testing.assert_close(y, _dense_ref(layer, x))


def test_gradcheck_and_gradgradcheck_through_the_module():
    layer = SKLinear(6, 5, 2, 3, dtype=torch.float64, seed=2)
    x = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    params = (layer.S1s, layer.S2s, layer.bias)

    def f(x, S1s, S2s, bias):
        return torch.func.functional_call(layer, {"S1s": S1s, "S2s": S2s, "bias": bias}, (x,))

    assert torch.autograd.gradcheck(f, (x, *params))
    assert torch.autograd.gradgradcheck(f, (x, *params))


def test_gradients_match_dense_autograd():
    layer = SKLinear(16, 9, 2, 4, dtype=torch.float64, seed=4)
    x = torch.randn(5, 16, dtype=torch.float64, requires_grad=True)
    layer(x).pow(2).sum().backward()
    got = [x.grad, layer.S1s.grad, layer.S2s.grad, layer.bias.grad]
    for t in (x, layer.S1s, layer.S2s, layer.bias):
        t.grad = None
    _dense_ref(layer, x).pow(2).sum().backward()
    for g, t in zip(got, (x, layer.S1s, layer.S2s, layer.bias)):
        torch.testing.assert_close(g, t.grad)
    assert layer.U1s.grad is None and not layer.U1s.requires_grad


# ------------------------------------------------------------------- reproducibility
def test_seeded_reproducibility():
    a, b = SKLinear(12, 7, 2, 3, seed=99), SKLinear(12, 7, 2, 3, seed=99)
    for (na, ta), (nb, tb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(ta, tb)
    c = SKLinear(12, 7, 2, 3, seed=100)
    assert not torch.equal(a.U1s, c.U1s) and not torch.equal(a.S1s, c.S1s)


def test_seed_none_follows_torch_manual_seed_and_is_recorded():
    torch.manual_seed(123)
    a = SKLinear(12, 7, 2, 3)
    torch.manual_seed(123)
    b = SKLinear(12, 7, 2, 3)
    assert isinstance(a.seed, int) and a.seed == b.seed
    assert torch.equal(a.U2s, b.U2s) and torch.equal(a.S2s, b.S2s)
    again = SKLinear(12, 7, 2, 3, seed=a.seed)
    assert torch.equal(again.S1s, a.S1s)


def test_unbiased_at_initialisation():
    """mean over seeds of W_eff -> W, with the variance the sign matrices imply.

    One term's entries: (W U1^T U1)[a, b] = W[a, b] + sum_{c != b} W[a, c] z_cb with
    uncorrelated z of variance 1/k, so Var = (|W[a, :]|^2 - W[a, b]^2) / k; likewise the U2
    term with the column norm. W_eff averages 2L independent terms with weight 1/(2L):
    Var(W_eff) = (v1 + v2) / (4 L).
    """
    n_in, n_out, L, k, seeds = 7, 5, 2, 3, 400
    W_init = torch.randn(n_out, n_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    W = W_init.T
    mean = torch.zeros_like(W)
    for s in range(seeds):
        mean += SKLinear(n_in, n_out, L, k, W_init=W_init, seed=s,
                         dtype=torch.float64).effective_weight().detach()
    mean /= seeds
    v1 = ((W ** 2).sum(1, keepdim=True) - W ** 2) / k
    v2 = ((W ** 2).sum(0, keepdim=True) - W ** 2) / k
    z = (mean - W) / torch.sqrt((v1 + v2) / (4 * L) / seeds)
    # 35 standardised entries: |z| < 4.5 fails with probability < 1e-3 under the CLT;
    # the mean square checks the variance formula itself (chi^2_35 / 35 in [0.4, 1.9] w.p. > 0.999).
    assert z.abs().max() < 4.5
    assert 0.4 < z.pow(2).mean() < 1.9


# ------------------------------------------------------------------------ from_linear
def test_from_linear_keeps_bias_dtype_and_device():
    lin = nn.Linear(6, 4).double()
    layer = SKLinear.from_linear(lin, num_terms=2, low_rank=3, seed=11)
    assert layer.S1s.dtype == torch.float64 and layer.seed == 11
    assert layer.S1s.device == lin.weight.device
    torch.testing.assert_close(layer.bias, lin.bias, rtol=0, atol=0)
    # The factors are exactly those of W_init=linear.weight (unbiasedness is tested above).
    ref = SKLinear(6, 4, 2, 3, W_init=lin.weight, seed=11, dtype=torch.float64)
    assert torch.equal(layer.S1s, ref.S1s) and torch.equal(layer.S2s, ref.S2s)
    no_bias = SKLinear.from_linear(nn.Linear(6, 4, bias=False), 1, 2)
    assert no_bias.bias is None
    with pytest.raises(TypeError, match="nn.Linear"):
        SKLinear.from_linear(nn.Conv1d(1, 1, 1), 1, 2)


# ---------------------------------------------------------------------------- warnings
def test_warns_only_when_bigger_than_dense():
    with pytest.warns(UserWarning, match="more than the .* of nn.Linear"):
        SKLinear(128, 10, 4, 16)       # the tutorial's 10-class head: legal, warns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SKLinear(512, 256, 2, 32)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(in_features=0), ValueError, "in_features must be >= 1, got 0"),
    (dict(out_features=-3), ValueError, "out_features must be >= 1, got -3"),
    (dict(num_terms=2.5), TypeError, "num_terms must be an integer"),
    (dict(low_rank="8"), TypeError, "low_rank must be an integer"),
    (dict(low_rank=True), TypeError, "low_rank must be an integer"),
    (dict(dtype=torch.int32), TypeError, "dtype must be a floating-point"),
    (dict(W_init=torch.zeros(4, 6)), ValueError, r"W_init must have shape .* \(5, 4\).*got \(4, 6\)"),
    (dict(W_init=np.zeros((5, 4))), TypeError, "W_init must be a torch.Tensor"),
    (dict(W_init=torch.full((5, 4), float("nan"))), ValueError, "NaN"),
    (dict(seed=-1), ValueError, "seed must be in"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    args = dict(in_features=4, out_features=5, num_terms=2, low_rank=2)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        SKLinear(**args)


def test_bad_inputs():
    layer = SKLinear(8, 3, 2, 2, seed=0)
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 8\).*got shape \(4, 7\)"):
        layer(torch.randn(4, 7))
    with pytest.raises(ValueError, match="got shape ()"):
        layer(torch.tensor(1.0))
    with pytest.raises(TypeError, match="input dtype torch.float64 does not match"):
        layer(torch.randn(4, 8, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor input"):
        layer(np.zeros((4, 8), np.float32))


def test_extra_repr():
    text = repr(SKLinear(8, 3, 2, 4, bias=False, seed=17))
    for part in ("in_features=8", "out_features=3", "num_terms=2", "low_rank=4",
                 "bias=False", "seed=17"):
        assert part in text


# ---------------------------------------------------------------- torch integration
def test_state_dict_round_trip_deepcopy_and_pickle():
    layer = SKLinear(10, 6, 2, 3, seed=5)
    x = torch.randn(3, 10)
    other = SKLinear(10, 6, 2, 3, seed=6)
    other.load_state_dict(layer.state_dict())
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    third = SKLinear(10, 6, 2, 3, seed=7)
    third.load_state_dict(torch.load(buf))
    for clone in (other, third, copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert torch.equal(clone(x), layer(x))
    assert set(layer.state_dict()) == {"S1s", "S2s", "U1s", "U2s", "bias"}


def test_dtype_conversion_moves_buffers_too():
    layer = SKLinear(10, 6, 2, 3, seed=5).double()
    assert layer.U1s.dtype == torch.float64
    x = torch.randn(3, 10, dtype=torch.float64)
    torch.testing.assert_close(layer(x), _dense_ref(layer, x))


def test_half_precision_parameters():
    layer = SKLinear(16, 8, 2, 4, dtype=torch.bfloat16, seed=1)
    x = torch.randn(5, 16, dtype=torch.bfloat16)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    # Same bfloat16 parameters, float32 products: the only difference is the final rounding
    # to bfloat16 (relative 2^-8) plus float32 reordering (far below the atol).
    f64 = [t.detach().double() for t in (layer.S1s, layer.S2s, layer.U1s, layer.U2s)]
    W = (f64[0] @ f64[2] + f64[3] @ f64[1]).sum(0) / 4
    ref = x.double() @ W + layer.bias.double()
    torch.testing.assert_close(y.double(), ref, rtol=2.0 ** -8, atol=1e-4)
    y.float().sum().backward()
    assert layer.S1s.grad.dtype == torch.bfloat16


def _train(model, steps=25, lr=0.05, batch=64, in_dim=20, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, in_dim, generator=g) * 2
    y = torch.randint(0, classes, (batch,), generator=g)
    x = centers[y] + 0.3 * torch.randn(batch, in_dim, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_sequential_with_batchnorm_dropout_trains():
    torch.manual_seed(0)
    model = nn.Sequential(SKLinear(20, 32, 2, 8), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.1),
                          SKLinear(32, 3, 2, 2))
    losses = _train(model)
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    assert model(torch.randn(4, 20)).shape == (4, 3)


@pytest.mark.parametrize("reentrant", [False, True])
def test_checkpoint_gives_the_same_gradients(reentrant):
    from torch.utils.checkpoint import checkpoint
    layer = SKLinear(12, 6, 2, 3, seed=8)
    x = torch.randn(5, 12, requires_grad=True)
    checkpoint(lambda t: torch.relu(layer(t)), x, use_reentrant=reentrant).sum().backward()
    got = (x.grad.clone(), layer.S1s.grad.clone(), layer.S2s.grad.clone())
    x.grad = layer.S1s.grad = layer.S2s.grad = None
    torch.relu(layer(x)).sum().backward()
    for g, t in zip(got, (x, layer.S1s, layer.S2s)):
        torch.testing.assert_close(g, t.grad)


def test_autocast_bf16_on_cpu_like_nn_linear():
    layer = SKLinear(16, 8, 2, 4, seed=3)
    lin = nn.Linear(16, 8)
    x = torch.randn(6, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)
        y_chain = layer.__class__(8, 4, 1, 2, seed=0)(y)      # bf16 activations in
        assert lin(x).dtype == y.dtype == y_chain.dtype == torch.bfloat16
    # Computed in float32 from float32 parameters, then rounded once to bfloat16.
    torch.testing.assert_close(y.float(), layer(x), rtol=2.0 ** -8, atol=1e-6)
    y.float().sum().backward()
    assert layer.S1s.grad.dtype == torch.float32


def test_grad_scaler_style_loop():
    torch.manual_seed(1)
    model = nn.Sequential(SKLinear(20, 16, 2, 4), nn.ReLU(), SKLinear(16, 3, 1, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    x, y = torch.randn(32, 20), torch.randint(0, 3, (32,))
    losses = []
    for _ in range(10):
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


def test_optimizer_groups_by_name():
    """The tutorial's SketchedLayerWithScheduling selects parameters with 'S' in the name."""
    layer = SKLinear(12, 6, 2, 3)
    s_params = [p for n, p in layer.named_parameters() if "S" in n]
    other = [p for n, p in layer.named_parameters() if "S" not in n]
    assert len(s_params) == 2 and len(other) == 1 and other[0] is layer.bias
    opt = torch.optim.SGD([{"params": s_params, "lr": 0.1}, {"params": other, "lr": 0.0}])
    before = layer.bias.detach().clone(), layer.S1s.detach().clone()
    layer(torch.randn(4, 12)).sum().backward()
    opt.step()
    assert torch.equal(layer.bias, before[0]) and not torch.equal(layer.S1s, before[1])


def test_submodules_import():
    import importlib
    for name in pr.__all__:
        assert importlib.import_module(f"sketchcore_torch.{name}") is getattr(pr, name)


@pytest.mark.slow
def test_compile_fullgraph_module():
    torch._dynamo.reset()
    model = nn.Sequential(SKLinear(20, 16, 2, 4, seed=0), nn.ReLU(), SKLinear(16, 3, 1, 2, seed=1))
    compiled = torch.compile(model, fullgraph=True)
    x = torch.randn(8, 20)
    y = compiled(x)
    y.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).sum().backward()
    torch.testing.assert_close(y, model(x))
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert compiled(x).dtype == torch.bfloat16


def test_meta_device_shape_inference():
    """On the meta device the op's fake kernels give shapes without computing."""
    layer = SKLinear(8, 4, 1, 2, device="meta", seed=0)
    x = torch.empty(3, 5, 8, device="meta", requires_grad=True)
    y = layer(x)
    assert y.shape == (3, 5, 4) and y.device.type == "meta"
    y.sum().backward()
    assert layer.S1s.grad.shape == (1, 8, 2) and x.grad.shape == x.shape
