"""sketchcore_torch on CUDA: SKLinear, the custom ops, streams and autocast (needs a GPU)."""
import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")
cupy = pytest.importorskip("cupy")
pr = pytest.importorskip("sketchcore_torch")


def _cuda_ok():
    return torch.cuda.is_available()


@pytest.fixture(autouse=True)
def _need_torch_cuda():
    if not _cuda_ok():
        pytest.fail("torch cannot see the GPU that CuPy sees")


def _pair(dtype=torch.float32, **kw):
    torch.manual_seed(0)
    cpu = pr.nn.SKLinear(70, 50, 2, 8, seed=11, dtype=dtype, **kw)
    gpu = pr.nn.SKLinear(70, 50, 2, 8, seed=11, dtype=dtype, device="cuda", **kw)
    with torch.no_grad():
        for p_gpu, p_cpu in zip(gpu.parameters(), cpu.parameters()):
            p_gpu.copy_(p_cpu)
    return cpu, gpu


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sklinear_cuda_matches_cpu(dtype):
    cpu, gpu = _pair(dtype)
    for (name, b_cpu), (_, b_gpu) in zip(cpu.named_buffers(), gpu.named_buffers()):
        assert b_gpu.is_cuda
        torch.testing.assert_close(b_gpu.cpu(), b_cpu, rtol=0, atol=0)   # same signs
    x = torch.randn(33, 70, dtype=dtype)
    xc = x.clone().requires_grad_()
    xg = x.cuda().requires_grad_()
    yc, yg = cpu(xc), gpu(xg)
    assert yg.is_cuda and yg.dtype == dtype
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(yg.cpu(), yc.detach(), **tol)
    g = torch.randn_like(yc)
    yc.backward(g)
    yg.backward(g.cuda())
    torch.testing.assert_close(xg.grad.cpu(), xc.grad, **tol)
    for (n1, p1), (n2, p2) in zip(cpu.named_parameters(), gpu.named_parameters()):
        assert p2.grad is not None and p2.grad.is_cuda, n2
        torch.testing.assert_close(p2.grad.cpu(), p1.grad, **tol)


def test_dot_cuda_moves_layer():
    cpu, _ = _pair()
    moved = cpu.cuda()
    assert all(t.is_cuda for t in list(moved.parameters()) + list(moved.buffers()))
    y = moved(torch.randn(4, 70, device="cuda"))
    assert y.is_cuda and y.shape == (4, 50)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_autocast_half(dtype):
    cpu, gpu = _pair()
    x = torch.randn(64, 70, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        y = gpu(x)
    assert y.is_cuda and torch.isfinite(y.float()).all()
    xc = x.cpu().double()
    ref = cpu.double()(xc).detach()
    # Inputs, factors and output each rounded once to 16 bits (relative u each; the
    # factor products add one more u per factor pair), float32 accumulation (negligible):
    # |y - ref| <= 5 u (|x| |W|) + u |bias| elementwise, |W| = (1/2L) sum |S1||U1| + |U2||S2|.
    u = 2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11
    L = cpu.S1s.shape[0]
    Wabs = sum(cpu.S1s[i].abs() @ cpu.U1s[i].abs() + cpu.U2s[i].abs() @ cpu.S2s[i].abs()
               for i in range(L)) / (2 * L)
    bound = 5 * u * (xc.abs() @ Wabs.double()) + u * cpu.bias.abs().double()
    assert ((y.double().cpu() - ref).abs() <= bound).all()
    y.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in gpu.parameters())


def test_layer_in_16bit_dtype():
    torch.manual_seed(0)
    layer = pr.nn.SKLinear(64, 48, 1, 8, seed=3, dtype=torch.bfloat16, device="cuda")
    x = torch.randn(16, 64, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = layer(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16


def test_side_stream_ordering():
    """Work queued on a side stream before and after the op stays ordered (no device sync
    inside the op, and no use of another stream)."""
    _, gpu = _pair()
    s = torch.cuda.Stream()
    x = torch.randn(4096, 70, device="cuda")
    torch.cuda.synchronize()
    ref = gpu(x).detach()
    with torch.cuda.stream(s):
        xs = torch.empty_like(x)
        for _ in range(3):                  # keep the stream busy before the op
            xs.copy_(x)
            xs.mul_(1.0)
        ys = gpu(xs)
        zs = ys * 2                          # consumer on the same stream
    s.synchronize()
    torch.testing.assert_close(zs, 2 * ref, rtol=1e-5, atol=1e-5)


def test_bridge_roundtrip_zero_copy():
    from sketchcore_torch._bridge import to_array, to_tensor
    t = torch.arange(12.0, device="cuda").reshape(3, 4)
    a = to_array(t)
    assert isinstance(a, cupy.ndarray) and a.data.ptr == t.data_ptr()
    back = to_tensor(a, like=t)
    assert back.data_ptr() == t.data_ptr() and back.is_cuda


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_capture_matches_eager(dtype):
    """SKLinear inside torch.cuda.make_graphed_callables: the kernels' temporaries come
    from torch's allocator (the graph's private pool during capture) and every launch goes
    to torch's capture stream, so replays give the eager results, for new inputs too."""
    torch.manual_seed(3)
    layer = pr.nn.SKLinear(96, 64, 2, 8, device="cuda", dtype=dtype)
    x = torch.randn(40, 96, device="cuda", dtype=dtype, requires_grad=True)
    g = torch.randn(40, 64, device="cuda", dtype=dtype)
    graphed = torch.cuda.make_graphed_callables(layer, (x,))
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    for step in range(3):
        xs = torch.randn(40, 96, device="cuda", dtype=dtype, requires_grad=True)
        results = []
        for fn in (layer, graphed):
            layer.zero_grad(set_to_none=True)
            xs.grad = None
            y = fn(xs)
            y.backward(g)
            results.append([y.detach().clone(), xs.grad.clone()]
                           + [p.grad.clone() for p in layer.parameters()])
        for eager, replay in zip(*results):
            torch.testing.assert_close(replay, eager, **tol)


def test_kernel_temporaries_use_torch_memory():
    """CuPy allocations inside the bridge are torch tensors: CuPy's own pool stays empty."""
    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    used, total = pool.used_bytes(), pool.total_bytes()
    layer = pr.nn.SKLinear(256, 128, 1, 16, device="cuda")
    x = torch.randn(512, 256, device="cuda", requires_grad=True)
    layer(x).sum().backward()
    torch.cuda.synchronize()
    assert (pool.used_bytes(), pool.total_bytes()) == (used, total)


@pytest.mark.parametrize("bias", [True, False])
def test_custom_ops_on_cuda_after_replays(bias):
    """The custom ops on CUDA tensors once launch traces exist for their shapes (their calls
    then replay, hidden inside one block with the workspaces): opcheck passes, and first
    and second derivatives match finite differences in float64."""
    from sketchcore_torch import _ops
    gen = torch.Generator(device="cuda").manual_seed(0)

    def rand(*shape, grad=False):
        return torch.randn(*shape, device="cuda", dtype=torch.float64, generator=gen,
                           requires_grad=grad)

    args = (rand(6, 5, grad=True), rand(2, 5, 3, grad=True), rand(2, 3, 4, grad=True),
            rand(2, 3, 4), rand(2, 5, 3), rand(4, grad=True) if bias else None)
    for _ in range(3):                            # recorded, then replayed
        _ops.sketched_linear(*args).sum().backward()
    assert any(key[0] == args[0].shape and key[1] == torch.float64 and trace is not None
               for key, trace in _ops._fwd_traces.items())
    torch.library.opcheck(torch.ops.sketchcore.sklinear_forward.default, args)
    assert torch.autograd.gradcheck(_ops.sketched_linear, args)
    assert torch.autograd.gradgradcheck(_ops.sketched_linear, args)
